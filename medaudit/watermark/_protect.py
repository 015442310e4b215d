"""Data protection: unlearnable examples confined to each image's significant pixels.

Error-minimising noise (Huang et al. 2021) makes a data set "unlearnable": each image gets
a small perturbation that already explains its label, so a model trained on the
protected images learns the perturbations instead of the anatomy and fails on clean
images. SALM (Sun et al. 2024) observed that medical images are sparse and confines the
perturbation to their significant pixels; here those are the pixels with the largest
input-gradient magnitude under the noise model after a warm-up on the clean images
(``density`` of each image), and every perturbation stays within an L-infinity budget
``epsilon`` on them.

The bi-level min-min problem is solved as Huang et al. do: alternate a few training steps
of the noise model on the currently protected images (the one training loop) with
projected sign-gradient steps that *lower* its loss on each image, for ``rounds`` rounds
(or until the noise model fits the protected images to ``stop_accuracy``). One departure:
by default every round starts from a freshly initialised noise model (``fresh_model``).
On an easy task (the synthetic hospitals' lesions) a noise model that keeps training
learns the anatomy within its warm-up, and error-minimising steps against it then sharpen
what it already reads instead of adding a shortcut; optimising against models in their
first training steps makes the perturbations what a new model learns *first*. Measured on
the synthetic hospitals (240 patients, 32 px, seeds 0-5): the test AUROC that protection
takes from a model trained on the images rose from 0.07-0.08 (one continuing noise model,
8 rounds, density 0.25) to 0.05-0.27, mean 0.17 (see ``tests/test_watermark_slow.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit._stats._image import psnr, ssim
from medaudit.data._folder import write_image_folder

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ProtectedImages",
    "ProtectionEvidence",
    "protect_images",
    "protection_evidence",
    "write_protected",
]


@dataclass(frozen=True)
class ProtectedImages:
    """What :func:`protect_images` returns.

    Attributes
    ----------
    images : ndarray of shape (n, C, H, W), uint8
        The protected images, as they will be written (8-bit).
    original : ndarray of shape (n, C, H, W), uint8
        The originals at the same bit depth.
    mask : ndarray of shape (n, 1, H, W), bool
        The significant pixels each perturbation was confined to.
    psnr, ssim : ndarray of shape (n,)
        Fidelity of each protected image against its original (8-bit values).
    epsilon : float
        L-infinity budget on [0, 1] intensities.
    density : float
        Share of each image's pixels allowed to change.
    rounds : int
        Min-min rounds run.
    noise_model_accuracy : float
        The noise model's training accuracy on the protected images at the end (how well
        the perturbations explain the labels).
    """

    images: np.ndarray
    original: np.ndarray
    mask: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    epsilon: float
    density: float
    rounds: int
    noise_model_accuracy: float

    def subset(self, rows: np.ndarray) -> ProtectedImages:
        """The protected images of the given rows (positional indices)."""
        rows = np.asarray(rows)
        return dataclasses.replace(
            self,
            images=self.images[rows],
            original=self.original[rows],
            mask=self.mask[rows],
            psnr=self.psnr[rows],
            ssim=self.ssim[rows],
        )

    def summary(self) -> dict[str, Any]:
        """Headline numbers (JSON-ready)."""
        finite = self.psnr[np.isfinite(self.psnr)]
        return {
            "n_images": len(self.images),
            "epsilon": self.epsilon,
            "density": self.density,
            "rounds": self.rounds,
            "noise_model_accuracy": self.noise_model_accuracy,
            "psnr_min": float(finite.min()) if finite.size else None,
            "psnr_mean": float(finite.mean()) if finite.size else None,
            "ssim_min": float(self.ssim.min()),
            "ssim_mean": float(self.ssim.mean()),
        }


def protect_images(
    cohort: Any,
    *,
    epsilon: float = 8 / 255,
    density: float = 0.3,
    rounds: int = 20,
    train_steps: int = 10,
    pgd_steps: int = 10,
    warmup_steps: int = 30,
    stop_accuracy: float | None = None,
    mode: str = "sample",
    patch: int = 1,
    fresh_model: bool = True,
    arch: str = "small_cnn",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> ProtectedImages:
    """Compute SALM-style unlearnable versions of a cohort's images.

    Parameters
    ----------
    cohort : Cohort
        Images at their native size (all the same size) with labels.
    epsilon : float, default 8/255
        L-infinity budget of the perturbation on [0, 1] intensities.
    density : float in (0, 1], default 0.3
        Share of each image's pixels (the most significant ones) that may change. With
        ``epsilon = 8/255`` and ``density = 0.3`` the PSNR cannot fall below 35.3 dB
        (``20 log10(255 / (8 sqrt(0.3)))``).
    rounds : int, default 20
        At most this many alternations of training and noise steps.
    train_steps : int, default 10
        Optimizer steps of the noise model per round.
    pgd_steps : int, default 10
        Sign-gradient steps on the perturbations per round (step ``epsilon / 4``).
    warmup_steps : int, default 30
        Training steps on the clean images before the significant pixels are chosen.
    stop_accuracy : float or None, default None
        Stop once the noise model fits the protected images this well after a round
        (None: run every round). With ``fresh_model`` that is a model trained for only
        ``train_steps`` steps: a stop says the perturbations are learned that fast.
    mode : {"sample", "class"}, default "sample"
        ``"sample"``: one perturbation per image; ``"class"``: one pattern per class,
        each image showing it on its own significant pixels (Huang et al.'s class-wise
        noise, a stronger shortcut).
    patch : int, default 1
        Side of the square regions the significant pixels are chosen in: 1 picks single
        pixels; larger values pick whole ``patch x patch`` regions ranked by their mean
        significance (local masking).
    fresh_model : bool, default True
        Start every round from a newly initialised noise model (seeded ``seed + 1 +
        round``) instead of training one model throughout (Huang et al.'s loop, False).
    arch : str, default "small_cnn"
        The noise model.
    batch_size, seed : int
    progress : bool, default False

    Returns
    -------
    ProtectedImages

    References
    ----------
    .. [1] Huang H, Ma X, Erfani SM, Bailey J, Wang Y. Unlearnable examples: making
           personal data unexploitable. ICLR 2021.
    .. [2] Sun W, Liu Y, Yan Z, Xu K, Sun L. Medical unlearnable examples: securing
           medical data from unauthorized training via sparsity-aware local masking.
           arXiv:2403.10573, 2024.

    Examples
    --------
    >>> import pandas as pd
    >>> from medaudit.data import Cohort
    >>> rng = np.random.default_rng(0)
    >>> c = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 32)}),
    ...            images=rng.integers(0, 256, (32, 16, 16), dtype=np.uint8))
    >>> p = protect_images(c, rounds=1, train_steps=2, pgd_steps=2, warmup_steps=2)
    >>> bool(p.psnr.min() > 35.0), p.images.dtype
    (True, dtype('uint8'))
    """
    import torch

    from medaudit.models import build_model, compute_normalization

    _validate(
        cohort, epsilon, density, rounds, train_steps, pgd_steps, warmup_steps, stop_accuracy, mode
    )
    if not isinstance(fresh_model, bool):
        raise param_error("fresh_model", "protect_images", "True or False", fresh_model)
    x = torch.from_numpy(cohort.load_all()).double()
    x8 = torch.round(x * 255.0)
    x = (x8 / 255.0).float()  # work on the 8-bit grid the images are written on
    y = torch.tensor(cohort.labels, dtype=torch.int64)
    mean, std = compute_normalization(cohort)
    norm = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))

    def new_model(random_state: int) -> nn.Module:
        return build_model(
            arch, in_channels=x.shape[1], num_classes=cohort.num_classes, random_state=random_state
        )

    model = new_model(seed)
    _fit(model, x, y, cohort, warmup_steps, batch_size, seed, mean, std)
    mask = _significant_pixels(model, x, y, norm, density, batch_size, patch)
    delta = torch.zeros_like(x)
    patterns = torch.zeros((cohort.num_classes, *x.shape[1:]), dtype=x.dtype)
    acc, done = 0.0, 0
    for r in range(rounds):
        if fresh_model:
            model = new_model(seed + 1 + r)
        _fit(model, x + delta, y, cohort, train_steps, batch_size, seed + 1 + r, mean, std)
        if mode == "class":
            patterns = _minimise_patterns(model, x, y, patterns, mask, norm, epsilon,
                                          pgd_steps, batch_size)  # fmt: skip
            delta = (x + patterns[y] * mask).clamp(0, 1) - x
        else:
            delta = _minimise(model, x, y, delta, mask, norm, epsilon, pgd_steps, batch_size)
        done = r + 1
        acc = _accuracy(model, x + delta, y, norm, batch_size)
        if stop_accuracy is not None and acc >= stop_accuracy:
            break
    out8 = torch.round((x + delta).clamp(0, 1).double() * 255.0)
    # Rounding to 8 bits must not break the budget: clip back onto it on the 8-bit grid.
    lim = np.floor(epsilon * 255.0 + 1e-9)
    out8 = torch.minimum(torch.maximum(out8, x8 - lim), x8 + lim).clamp(0, 255)
    out8 = torch.where(mask.expand_as(out8), out8, x8)
    orig = x8.numpy().astype(np.uint8)
    prot = out8.numpy().astype(np.uint8)
    return ProtectedImages(
        images=prot,
        original=orig,
        mask=mask.numpy(),
        psnr=psnr(orig, prot, data_range=255.0),
        ssim=ssim(orig, prot, data_range=255.0),
        epsilon=float(epsilon),
        density=float(density),
        rounds=done,
        noise_model_accuracy=float(acc),
    )


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cohort: Any,
    steps: int,
    batch_size: int,
    seed: int,
    mean: list[float],
    std: list[float],
) -> None:
    """``steps`` optimizer steps of the one training loop on images ``x``."""
    from medaudit.data import Cohort
    from medaudit.models import train_model

    c = Cohort(
        pd.DataFrame({"label": y.numpy()}),
        images=x.detach().numpy(),
        class_names=cohort.class_names,
    )
    epochs = -(-steps * batch_size // len(c))
    train_model(
        model,
        c,
        None,
        epochs=max(1, epochs),
        max_steps=steps,
        batch_size=batch_size,
        seed=seed,
        mean=mean,
        std=std,
        patience=None,
    )


def _loss_grad(
    model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    import torch

    xb = xb.clone().requires_grad_(True)
    logits = model((xb - norm[0]) / norm[1])
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    loss = torch.nn.functional.cross_entropy(logits, yb, reduction="sum")
    (g,) = torch.autograd.grad(loss, xb)
    return g


def _significant_pixels(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    density: float,
    batch_size: int,
    patch: int = 1,
) -> torch.Tensor:
    """Per image, the ``density`` share of pixels with the largest |d loss / d pixel|.

    With ``patch > 1`` whole ``patch x patch`` regions (on a grid) are ranked by their
    mean significance and the top ones taken.
    """
    import torch

    model.eval()
    n, _, h, w = x.shape
    gh, gw = -(-h // patch), -(-w // patch)
    k = max(1, int(round(density * h * w / patch**2)))
    mask = torch.zeros((n, 1, h, w), dtype=torch.bool)
    for s in range(0, n, batch_size):
        g = _loss_grad(model, x[s : s + batch_size], y[s : s + batch_size], norm)
        sal = g.abs().sum(dim=1, keepdim=True)
        if patch > 1:
            sal = torch.nn.functional.avg_pool2d(sal, patch, ceil_mode=True)
        sal = sal.flatten(1)
        top = sal.topk(min(k, sal.shape[1]), dim=1).indices
        flat = torch.zeros_like(sal, dtype=torch.bool)
        flat.scatter_(1, top, True)
        cells = flat.view(-1, 1, gh, gw)
        if patch > 1:
            cells = cells.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        mask[s : s + batch_size] = cells[..., :h, :w]
    return mask


def _minimise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    delta: torch.Tensor,
    mask: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    epsilon: float,
    steps: int,
    batch_size: int,
) -> torch.Tensor:
    """Projected sign-gradient *descent* of each image's loss over its perturbation."""
    model.eval()
    m = mask.to(x.dtype)
    delta = delta.clone()
    alpha = epsilon / 4
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        d = delta[sl]
        for _ in range(steps):
            g = _loss_grad(model, x[sl] + d, y[sl], norm)
            d = (d - alpha * g.sign() * m[sl]).clamp(-epsilon, epsilon)
            d = (x[sl] + d).clamp(0, 1) - x[sl]
        delta[sl] = d
    return delta


def _minimise_patterns(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    patterns: torch.Tensor,
    mask: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    epsilon: float,
    steps: int,
    batch_size: int,
) -> torch.Tensor:
    """Class-wise: sign-gradient descent of the summed loss of each class over its pattern."""
    import torch

    model.eval()
    m = mask.to(x.dtype)
    p = patterns.clone()
    alpha = epsilon / 4
    for _ in range(steps):
        grad = torch.zeros_like(p)
        for s in range(0, len(x), batch_size):
            sl = slice(s, s + batch_size)
            d = (x[sl] + p[y[sl]] * m[sl]).clamp(0, 1) - x[sl]
            g = _loss_grad(model, x[sl] + d, y[sl], norm) * m[sl]
            grad.index_add_(0, y[sl], g)
        p = (p - alpha * grad.sign()).clamp(-epsilon, epsilon)
    return p


def _accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
) -> float:
    import torch

    model.eval()
    hits = 0
    with torch.no_grad():
        for s in range(0, len(x), 4 * batch_size):
            logits = model((x[s : s + 4 * batch_size] - norm[0]) / norm[1])
            if logits.shape[1] == 1:
                logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
            hits += int((logits.argmax(1) == y[s : s + 4 * batch_size]).sum())
    return hits / len(x)


def _validate(cohort: Any, epsilon: Any, density: Any, *ints_and_acc: Any) -> None:
    from medaudit.data import Cohort

    func = "protect_images"
    if not isinstance(cohort, Cohort):
        raise param_error("cohort", func, "a medaudit.data.Cohort", type(cohort).__name__)
    if len(cohort) == 0:
        raise InvalidInputError("protect_images: the cohort has no images.")
    if not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
        raise param_error("epsilon", func, "a float in (0, 1)", epsilon)
    if not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise param_error("density", func, "a float in (0, 1]", density)
    rounds, train_steps, pgd_steps, warmup_steps, stop_accuracy, mode = ints_and_acc
    if mode not in ("sample", "class"):
        raise param_error("mode", func, "'sample' or 'class'", mode)
    for name, v in (
        ("rounds", rounds),
        ("train_steps", train_steps),
        ("pgd_steps", pgd_steps),
        ("warmup_steps", warmup_steps),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise param_error(name, func, "a positive int", v)
    if stop_accuracy is not None and (
        not isinstance(stop_accuracy, (int, float)) or not 0 < stop_accuracy <= 1
    ):
        raise param_error("stop_accuracy", func, "a float in (0, 1]", stop_accuracy)


# -- the evidence ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProtectionEvidence:
    """A model trained on the protected images against one trained on the originals.

    Attributes
    ----------
    auroc_clean_trained, auroc_protected_trained : float
        Test AUROC (on clean test images) of the model trained on the original images and
        of the one trained on the protected images.
    auroc_clean_ci, auroc_protected_ci : tuple of float
        Their patient-bootstrap CIs.
    auroc_drop : float
        ``auroc_clean_trained - auroc_protected_trained``: what protection took away.
    auroc_drop_ci : tuple of float
        Paired patient-bootstrap CI of the drop.
    n_test : int
    epochs : int
    """

    auroc_clean_trained: float
    auroc_protected_trained: float
    auroc_clean_ci: tuple[float, float]
    auroc_protected_ci: tuple[float, float]
    auroc_drop: float
    auroc_drop_ci: tuple[float, float]
    n_test: int
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "auroc_clean_trained": self.auroc_clean_trained,
            "auroc_clean_ci": list(self.auroc_clean_ci),
            "auroc_protected_trained": self.auroc_protected_trained,
            "auroc_protected_ci": list(self.auroc_protected_ci),
            "auroc_drop": self.auroc_drop,
            "auroc_drop_ci": list(self.auroc_drop_ci),
            "n_test": self.n_test,
            "epochs": self.epochs,
        }


def protection_evidence(
    train: Any,
    protected: ProtectedImages,
    test: Any,
    *,
    arch: str = "small_cnn",
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> ProtectionEvidence:
    """Train the same model on the original and on the protected images; test on clean.

    Parameters
    ----------
    train : Cohort
        The original training images (the rows ``protected`` was made from, same order).
    protected : ProtectedImages
    test : Cohort
        Clean held-out images: what an unauthorised model would be used on.
    arch : str, default "small_cnn"
    epochs, batch_size, seed : training settings (same for both models).
    n_boot : int, default 1000
    confidence : float, default 0.95

    Returns
    -------
    ProtectionEvidence
    """
    from medaudit.data import Cohort
    from medaudit.inference import predict
    from medaudit.models import build_model, compute_normalization, train_model
    from medaudit.stats import bootstrap_counts, percentile_ci
    from medaudit.watermark._utility import utility_change

    if len(protected.images) != len(train):
        raise InvalidInputError(
            f"protection_evidence: {len(protected.images)} protected images for a training "
            f"cohort of {len(train)}."
        )
    prot = Cohort(
        train.meta.drop(columns=["path"], errors="ignore"),
        images=protected.images,
        class_names=train.class_names,
    )
    c, h, _ = train.image_shape
    scores = []
    for cohort in (train, prot):
        mean, std = compute_normalization(cohort)
        model = build_model(arch, in_channels=c, num_classes=train.num_classes, random_state=seed)
        train_model(
            model,
            cohort,
            None,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            image_size=h,
            in_channels=c,
            mean=mean,
            std=std,
            patience=None,
        )
        scores.append(
            predict(
                model, test, image_size=h, in_channels=c, mean=mean, std=std, features=False
            ).scores
        )
    y = test.labels
    pid = test.meta["patient_id"].to_numpy() if "patient_id" in test.meta else None
    change = utility_change(
        y,
        scores[0],
        scores[1],
        patient_ids=pid,
        n_boot=n_boot,
        confidence=confidence,
        random_state=seed,
    )
    w = bootstrap_counts(
        y, n_boot=n_boot, random_state=seed, clusters=np.arange(len(y)) if pid is None else pid
    )
    cis = [percentile_ci(_auroc_rows(y, s, w), confidence) for s in scores]
    lo, hi = change.auroc_change_ci
    return ProtectionEvidence(
        auroc_clean_trained=change.auroc_before,
        auroc_protected_trained=change.auroc_after,
        auroc_clean_ci=cis[0],
        auroc_protected_ci=cis[1],
        auroc_drop=-change.auroc_change,
        auroc_drop_ci=(-hi, -lo),
        n_test=len(y),
        epochs=epochs,
    )


def _auroc_rows(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    from medaudit.watermark._utility import _auroc

    return _auroc(y, scores, w)


# -- writing --------------------------------------------------------------------------------
def _label_column(cohort: Any) -> list[Any]:
    """Labels as the manifest gave them: class names, or indices for default names."""
    n = cohort.num_classes
    default = ["negative", "positive"] if n <= 2 else [f"class_{i}" for i in range(n)]
    if list(cohort.class_names) == default:
        return [int(v) for v in cohort.labels]
    return [cohort.class_names[int(v)] for v in cohort.labels]


def write_protected(
    out_dir: str | os.PathLike[str],
    cohort: Any,
    protected: ProtectedImages,
    *,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the protected images as PNG files plus a manifest, atomically.

    ``out_dir/images/img_000000.png`` ... (8-bit, grayscale or RGB as the input) and
    ``out_dir/manifest.csv`` with every metadata column of ``cohort`` and ``path``
    pointing at the protected files; ``out_dir/protection.json`` holds the PSNR/SSIM
    summary and ``report`` (the evidence). Everything is written into a temporary folder
    first and moved into place manifest last, so a failure never leaves a manifest
    pointing at missing or stale images.

    Returns
    -------
    Path
        The manifest's path.
    """
    if len(protected.images) != len(cohort):
        raise InvalidInputError(
            f"write_protected: {len(protected.images)} images for {len(cohort)} manifest rows."
        )
    manifest = cohort.meta.drop(columns=["path"], errors="ignore").copy()
    manifest["label"] = _label_column(cohort)
    doc = {"schema": "medaudit.protection/1", **protected.summary(), **(report or {})}
    return write_image_folder(
        out_dir,
        (img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1) for img in protected.images),
        manifest.reset_index(drop=True),
        extra_files={"protection.json": json.dumps(doc, indent=2) + "\n"},
        prefix=".protect-",
        func="write_protected",
    )
