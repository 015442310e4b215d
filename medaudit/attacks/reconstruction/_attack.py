"""Gradient inversion against a model under a list of defences: the results table.

For every defence, ``trials`` clients each hold ``batch_size`` images drawn (seeded)
from the cohort; each client's update is simulated, inverted, and the reconstructions
matched to the originals. A defence *holds* when the mean SSIM of its reconstructions
lies below the policy threshold (0.2 by default) with its whole bootstrap CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.attacks.reconstruction._gradients import (
    Defence,
    observe_update,
    trainable_parameters,
)
from medaudit.attacks.reconstruction._invert import InversionSettings, invert_gradients
from medaudit.attacks.reconstruction._metrics import match_images, ssim

#: Other cohort images each reconstruction is compared with for re-identification.
REID_DECOYS = 255

__all__ = ["ReconstructionResult", "reconstruction_attack"]

MSG_TOO_FEW_IMAGES = (
    "The {name!r} defence needs {need} images ({trials} client(s) of {batch}); the cohort "
    "has {have}."
)


@dataclass(frozen=True)
class ReconstructionResult:
    """What :func:`reconstruction_attack` returns.

    Attributes
    ----------
    table : DataFrame
        One row per defence: its settings, ``n_images``, ``mean_ssim`` with
        ``ssim_low``/``ssim_high`` (95% bootstrap CI over clients), ``mean_psnr``,
        ``label_accuracy``, ``gradient_similarity``, ``baseline_ssim`` (the cohort's
        mean image against the same originals: what SSIM an attacker reaches knowing only
        what these images have in common), ``reidentified`` (share of the attacked images
        whose reconstruction is more similar, by SSIM, to that image than to every one of
        ``reid_candidates - 1`` other cohort images) and ``reid_chance`` (the same share
        for a guess: ``1 / reid_candidates``).
    per_image : DataFrame
        ``defence``, ``client``, ``row`` (cohort row), ``ssim``, ``psnr``.
    images : dict of str to (originals, reconstructions)
        Per defence, the first client's originals and matched reconstructions, each of
        shape (B, C, H, W) in [0, 1] — patients' images: shown only on request.
    """

    table: pd.DataFrame
    per_image: pd.DataFrame
    images: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)


def _bootstrap_mean(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(lo), float(hi)


def reconstruction_attack(
    model: nn.Module,
    cohort: Any,
    *,
    defences: Sequence[Defence],
    mean: list[float],
    std: list[float],
    image_size: int | None = None,
    trials: int = 4,
    settings: InversionSettings | None = None,
    lr: float = 0.01,
    seed: int = 0,
    n_boot: int = 1000,
) -> ReconstructionResult:
    """Invert simulated client updates of ``model`` under each defence.

    Parameters
    ----------
    model : torch.nn.Module
        The global model; needs trainable parameters (gradient access).
    cohort : Cohort
        Where the clients' images come from.
    defences : sequence of Defence
    mean, std : list of float
        The model's input normalisation.
    image_size : int, optional
        Resize images to this side (the model's input size).
    trials : int, default 4
        Clients attacked per defence; the SSIM CI resamples them.
    settings : InversionSettings, optional
    lr : float, default 0.01
        The clients' SGD learning rate (matters only for several local steps).
    seed : int, default 0
    n_boot : int, default 1000

    Returns
    -------
    ReconstructionResult
    """
    func = "reconstruction_attack"
    trainable_parameters(model)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise param_error("trials", func, "an int >= 1", trials)
    if not defences or not all(isinstance(d, Defence) for d in defences):
        raise param_error("defences", func, "a non-empty sequence of Defence", defences)
    model = model.eval()
    in_channels = len(mean)
    mean_image = _mean_image(cohort, image_size, in_channels)
    decoy_rows = np.random.default_rng([seed, 7]).permutation(len(cohort))
    rows, per_image, images = [], [], {}
    for k, d in enumerate(defences):
        need = trials * d.batch_size
        if need > len(cohort):
            raise InvalidInputError(
                MSG_TOO_FEW_IMAGES.format(
                    name=d.name, need=need, trials=trials, batch=d.batch_size, have=len(cohort)
                )
            )
        pick = np.random.default_rng([seed, k]).choice(len(cohort), size=need, replace=False)
        sub = cohort.subset(np.sort(pick))
        x_all = torch.from_numpy(sub.load_all(image_size=image_size, channels=in_channels))
        y_all = torch.tensor(np.array(sub.labels), dtype=torch.int64)
        decoys = _decoys(cohort, decoy_rows, set(pick.tolist()), image_size, in_channels)
        ssims, psnrs, label_acc, sims, base, reid = [], [], [], [], [], []
        for t in range(trials):
            sl = slice(t * d.batch_size, (t + 1) * d.batch_size)
            x, y = x_all[sl], y_all[sl]
            obs = observe_update(model, x, y, defence=d, mean=mean, std=std, lr=lr, seed=seed + t)
            rec = invert_gradients(
                model,
                obs,
                image_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
                mean=mean,
                std=std,
                settings=settings,
            )
            m = match_images(rec.images, x.numpy())
            ssims.append(m.mean_ssim)
            reid += _reidentified(rec.images[m.order], m.ssim, decoys).tolist()
            base.append(float(ssim(np.repeat(mean_image, len(x), axis=0), x.numpy()).mean()))
            psnrs.append(m.mean_psnr)
            label_acc.append(_label_accuracy(rec.labels, y.numpy()))
            sims.append(rec.gradient_similarity)
            rows_t = np.sort(pick)[sl]
            per_image += [
                {"defence": d.name, "client": t, "row": int(r), "ssim": s, "psnr": p}
                for r, s, p in zip(rows_t, m.ssim, m.psnr, strict=True)
            ]
            if t == 0:
                images[d.name] = (x.numpy(), rec.images[m.order])
        lo, hi = _bootstrap_mean(np.asarray(ssims), n_boot, seed)
        rows.append(
            {
                **d.row(),
                "n_images": need,
                "mean_ssim": float(np.mean(ssims)),
                "ssim_low": lo,
                "ssim_high": hi,
                "mean_psnr": float(np.mean(psnrs)),
                "baseline_ssim": float(np.mean(base)),
                "label_accuracy": float(np.mean(label_acc)),
                "gradient_similarity": float(np.mean(sims)),
                "reidentified": float(np.mean(reid)),
                "reid_candidates": len(decoys) + 1,
                "reid_chance": 1.0 / (len(decoys) + 1),
            }
        )
    return ReconstructionResult(
        table=pd.DataFrame(rows), per_image=pd.DataFrame(per_image), images=images
    )


def _mean_image(cohort: Any, image_size: int | None, channels: int) -> np.ndarray:
    """The cohort's mean image, shape (1, C, H, W): what an attacker knows without an update."""
    total, n = None, 0
    for _, x in cohort.batches(256, image_size=image_size, channels=channels):
        s = x.double().sum(dim=0, keepdim=True)
        total = s if total is None else total + s
        n += len(x)
    assert total is not None
    return (total / max(n, 1)).numpy()


def _decoys(
    cohort: Any, order: np.ndarray, attacked: set[int], image_size: int | None, channels: int
) -> np.ndarray:
    """Up to :data:`REID_DECOYS` cohort images none of the attacked clients holds."""
    rows = [int(r) for r in order if int(r) not in attacked][:REID_DECOYS]
    if not rows:
        return np.zeros((0, channels, 1, 1), dtype=np.float32)
    return cohort.subset(np.sort(rows)).load_all(image_size=image_size, channels=channels)


def _reidentified(recs: np.ndarray, own_ssim: np.ndarray, decoys: np.ndarray) -> np.ndarray:
    """Per reconstruction, whether it is more similar to its original than to every decoy."""
    if len(decoys) == 0:
        return np.ones(len(recs), dtype=bool)
    best = np.array([ssim(np.repeat(r[None], len(decoys), axis=0), decoys).max() for r in recs])
    return own_ssim > best


def _label_accuracy(inferred: np.ndarray, true: np.ndarray) -> float:
    """Share of the batch's labels recovered (as a multiset: order is unknown)."""
    c = int(max(inferred.max(initial=0), true.max(initial=0))) + 1
    hit = np.minimum(np.bincount(inferred, minlength=c), np.bincount(true, minlength=c)).sum()
    return float(hit / len(true))
