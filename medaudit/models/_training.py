"""The one training loop, reused by plain, DP, federated, unlearning and reference training.

Seeded and deterministic on the CPU: the same model initialisation, data and seed give
bit-identical weights. Early stopping watches the validation AUROC (binary: positive
class; multiclass: macro one-vs-rest) and the weights of the best epoch are restored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.stats import auroc

__all__ = ["TrainResult", "compute_normalization", "macro_ovr_auroc", "train_model"]

# Above this many bytes of (resized) training images, batches are streamed from the cohort
# every epoch instead of being held in memory. Both paths give identical results.
_PRELOAD_BYTES = 2 * 1024**3

EpochCallback = Callable[[int, dict[str, float]], Any]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

VAL_SINGLE_CLASS = (
    "The validation cohort {name!r} contains only one class; early stopping on AUROC needs "
    "both positives and negatives. Pass val=None to train for a fixed number of epochs."
)
LABEL_OUT_OF_RANGE = (
    "The cohort {name!r} has label {label} but the model outputs {n} classes; build the model "
    "with num_classes={need}."
)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model (the object passed in, trained in place) with the best epoch's
        weights, in eval mode.
    history : DataFrame
        One row per epoch run: ``epoch`` (1-based), ``train_loss`` (mean cross-entropy),
        ``val_auroc`` (NaN without validation data), ``seconds``.
    best_epoch : int
        Epoch whose weights were kept (the last one without validation data).
    best_val_auroc : float
        Its validation AUROC (NaN without validation data).
    seed : int
    image_size : int or None
        Side of the square images the model was trained on (None: non-square, native size).
    in_channels : int
    mean, std : list of float
        The normalisation applied to [0, 1] images; save them with the checkpoint.
    stopped_early : bool
        True when early stopping ended training before ``epochs``.
    """

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_auroc: float
    seed: int
    image_size: int | None
    in_channels: int
    mean: list[float]
    std: list[float]
    stopped_early: bool = False


def compute_normalization(
    cohort: Any,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 256,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of a cohort's images (scaled to [0, 1]).

    Streams the images once, accumulating in float64. The standard deviation is the
    population one (``ddof=0``); a channel with zero spread gets 1.0 so that normalising
    by it stays finite.

    Parameters
    ----------
    cohort : Cohort
    image_size, channels : int, optional
        Resize / channel-match first, as training will.
    batch_size : int, default 256

    Returns
    -------
    mean, std : list of float
        One value per channel.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> imgs = np.array([np.zeros((4, 4)), np.ones((4, 4))], dtype=np.float32)
    >>> compute_normalization(Cohort(pd.DataFrame({"label": [0, 1]}), images=imgs))
    ([0.5], [0.5])
    """
    _check_cohort(cohort, "cohort", "compute_normalization")
    if len(cohort) == 0:
        raise InvalidInputError(f"Cohort {cohort.name!r} has no images to compute statistics on.")
    total = torch.zeros((), dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    count = 0
    for _, x in cohort.batches(batch_size, image_size=image_size, channels=channels):
        xd = x.to(torch.float64)
        total = total + xd.sum(dim=(0, 2, 3))
        total_sq = total_sq + (xd * xd).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [float(v) for v in mean], [float(v) for v in std]


def macro_ovr_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Validation AUROC: the positive-class AUROC, or the macro one-vs-rest AUROC.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Class index.
    scores : ndarray of shape (n_samples, n_classes)
        Class probabilities.

    Returns
    -------
    float
        For two classes, AUROC of ``scores[:, 1]``; otherwise the unweighted mean of each
        class's one-vs-rest AUROC over the classes present with both positives and
        negatives (scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``
        when every class is present). NaN when no class qualifies.

    Examples
    --------
    >>> scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    >>> macro_ovr_auroc(np.array([0, 0, 1, 1]), scores)
    0.75
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] == 2:
        return auroc(labels == 1, scores[:, 1])
    per_class = [
        auroc(labels == k, scores[:, k])
        for k in range(scores.shape[1])
        if 0 < np.count_nonzero(labels == k) < len(labels)
    ]
    return float(np.mean(per_class)) if per_class else float("nan")


def train_model(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int | None = 3,
    seed: int = 0,
    image_size: int | None = None,
    in_channels: int | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    augment: bool = False,
    device: str = "cpu",
    progress: bool = False,
    optimizer_factory: OptimizerFactory | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> TrainResult:
    """Train a classifier with cross-entropy, early stopping on validation AUROC.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits of shape (B, n_classes) (or (B, 1) for a single-logit binary
        head). Trained in place.
    train : Cohort
        Training images; ``label`` is the target.
    val : Cohort, optional
        Validation images. Without them, training runs all ``epochs`` and keeps the last
        weights.
    epochs : int, default 10
        Maximum number of passes over ``train``.
    batch_size : int, default 64
        A final batch of a single image is dropped (BatchNorm cannot train on it).
    lr, weight_decay : float
        AdamW settings (ignored when ``optimizer_factory`` is given).
    patience : int or None, default 3
        Stop after this many epochs without a strictly better validation AUROC; None
        never stops early (the best epoch's weights are still restored).
    seed : int, default 0
        Seeds the shuffling, the augmentation and torch's global RNG (dropout) inside the
        call; the caller's global RNG state is restored afterwards.
    image_size : int, optional
        Resize images to ``image_size`` x ``image_size`` (default: their own size).
    in_channels : int, optional
        Channels the model expects (default: those of its first convolution).
    mean, std : float or sequence of float, optional
        Normalisation after scaling to [0, 1]; computed from ``train`` with
        :func:`compute_normalization` when not given. Pass ``mean=0.0, std=1.0`` for none.
    augment : bool, default False
        Random translation by up to 1/16 of the side (reflect-padded) and intensity
        jitter (gain 0.9–1.1, offset ±0.05). No flips: laterality is meaningful in
        radiographs.
    device : str, default "cpu"
    progress : bool, default False
        Show a rich progress bar.
    optimizer_factory : callable, optional
        ``optimizer_factory(params) -> torch.optim.Optimizer`` replaces the default
        ``AdamW(params, lr=lr, weight_decay=weight_decay)`` (e.g. a DP optimizer).
    callbacks : sequence of callables
        Each is called as ``callback(epoch, metrics)`` after every epoch, ``metrics``
        being that epoch's history row as a dict. A callback returning ``True`` stops
        training after that epoch.

    Returns
    -------
    TrainResult

    Notes
    -----
    Bit-identical results for the same seed are guaranteed on the CPU with the same
    number of torch threads; GPU kernels may not be deterministic.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.random((40, 8, 8), dtype=np.float32)
    >>> cohort = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 40)}), images=imgs)
    >>> res = train_model(build_model("small_cnn"), cohort, epochs=2, batch_size=16)
    >>> res.history.columns.tolist(), res.best_epoch, res.image_size
    (['epoch', 'train_loss', 'val_auroc', 'seconds'], 2, 8)
    """
    func = "train_model"
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    _check_cohort(train, "train", func)
    if val is not None:
        _check_cohort(val, "val", func)
    _check_int(epochs, "epochs", func, 1)
    _check_int(batch_size, "batch_size", func, 1)
    _check_int(seed, "seed", func, 0)
    if patience is not None:
        _check_int(patience, "patience", func, 1)
    for name, v in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise param_error(name, func, "a finite float >= 0", v)
    if image_size is not None:
        _check_int(image_size, "image_size", func, 1)
    if in_channels is not None:
        _check_int(in_channels, "in_channels", func, 1)
    if optimizer_factory is not None and not callable(optimizer_factory):
        raise param_error("optimizer_factory", func, "a callable or None", optimizer_factory)
    callbacks = tuple(callbacks)
    if not all(callable(c) for c in callbacks):
        raise param_error("callbacks", func, "a sequence of callables", callbacks)
    if len(train) == 0:
        raise InvalidInputError(f"The training cohort {train.name!r} has no images.")
    if val is not None and len(np.unique(val.labels)) < 2:
        raise InvalidInputError(VAL_SINGLE_CLASS.format(name=val.name))

    if in_channels is None:
        in_channels = _first_conv_channels(model) or train.image_shape[0]
    if mean is None or std is None:
        auto_mean, auto_std = compute_normalization(
            train, image_size=image_size, channels=in_channels
        )
        mean = auto_mean if mean is None else mean
        std = auto_std if std is None else std
    mean_l = _as_list(mean, "mean", func)
    std_l = _as_list(std, "std", func)
    if any(v <= 0 for v in std_l):
        raise param_error("std", func, "positive floats", std)
    for name, vals in (("mean", mean_l), ("std", std_l)):
        if len(vals) not in (1, in_channels):
            raise param_error(name, func, f"one or {in_channels} (in_channels) values", vals)
    if image_size is None:
        _, h, w = train.image_shape
        recorded_size: int | None = h if h == w else None
    else:
        recorded_size = image_size

    dev = torch.device(device)
    model = model.to(dev)
    m_t = torch.tensor(mean_l, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s_t = torch.tensor(std_l, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    train_src = _Source(train, image_size, in_channels)
    val_src = _Source(val, image_size, in_channels) if val is not None else None
    n = len(train)
    train_labels = torch.tensor(train.labels, dtype=torch.int64)  # a copy: may be read-only
    n_batches = n // batch_size + (1 if n % batch_size > 1 else 0) or 1

    rows: list[dict[str, float]] = []
    best_auroc = float("nan")
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early = False
    from medaudit._progress import progress_bar

    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=rng_devices),
        progress_bar("Training", total=epochs * n_batches, enabled=progress) as advance,
    ):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = (
            optimizer_factory(params)
            if optimizer_factory is not None
            else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        )
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            loss_sum = 0.0
            seen = 0
            perm = torch.randperm(n, generator=gen).numpy()
            if n % batch_size == 1 and n > 1:
                perm = perm[:-1]
            for idx, x in train_src.batches(perm, batch_size):
                y = train_labels[torch.from_numpy(idx)].to(dev)
                if augment:
                    x = _augment(x, gen)
                x = ((x.to(dev) - m_t) / s_t).contiguous()
                logits = _two_column(model(x))
                if epoch == 1 and seen == 0:
                    _check_labels(train, logits.shape[1])
                loss = nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                advance(1)
            val_auroc = float("nan")
            if val_src is not None:
                val_auroc = _evaluate(model, val_src, val.labels, m_t, s_t, batch_size, dev)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                "val_auroc": val_auroc,
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            # Strictly better only: a plateau (e.g. at AUROC 1.0) counts towards patience.
            improved = val_src is None or (
                np.isfinite(val_auroc) and (np.isnan(best_auroc) or val_auroc > best_auroc)
            )
            if improved:
                best_auroc, best_epoch = val_auroc, epoch
                if val_src is not None:
                    best_state = copy.deepcopy(model.state_dict())
            # Every callback sees every epoch, even when an earlier one asks to stop.
            stop_requested = False
            for cb in callbacks:
                stop_requested = (cb(epoch, dict(row)) is True) or stop_requested
            if stop_requested:
                break
            if patience is not None and val_src is not None and epoch - best_epoch >= patience:
                stopped_early = epoch < epochs
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif val_src is not None:
        best_epoch = len(rows)  # validation AUROC never finite: keep the last weights
    model.eval()
    history = pd.DataFrame(rows, columns=["epoch", "train_loss", "val_auroc", "seconds"])
    history["epoch"] = history["epoch"].astype(np.int64)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=int(best_epoch),
        best_val_auroc=float(best_auroc),
        seed=int(seed),
        image_size=recorded_size,
        in_channels=int(in_channels),
        mean=mean_l,
        std=std_l,
        stopped_early=stopped_early,
    )


# -- helpers ---------------------------------------------------------------------------------
class _Source:
    """A cohort's images at the training size: held in memory when small, else streamed."""

    def __init__(self, cohort: Any, image_size: int | None, channels: int) -> None:
        self.cohort = cohort
        self.image_size = image_size
        self.channels = channels
        c = channels
        if image_size is not None:
            h = w = image_size
        else:
            _, h, w = cohort.image_shape
        self.data: torch.Tensor | None = None
        if len(cohort) * c * h * w * 4 <= _PRELOAD_BYTES:
            self.data = torch.from_numpy(
                cohort.load_all(image_size=image_size, channels=channels)
            ).contiguous()

    def batches(
        self, order: np.ndarray, batch_size: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        if self.data is not None:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                yield idx, self.data[torch.from_numpy(idx)]
        else:
            yield from self.cohort.batches(
                batch_size, indices=order, image_size=self.image_size, channels=self.channels
            )


def _evaluate(
    model: nn.Module,
    src: _Source,
    labels: np.ndarray,
    m_t: torch.Tensor,
    s_t: torch.Tensor,
    batch_size: int,
    dev: torch.device,
) -> float:
    model.eval()
    parts = []
    with torch.no_grad():
        for _, x in src.batches(np.arange(len(labels)), max(batch_size, 256)):
            logits = _two_column(model((x.to(dev) - m_t) / s_t))
            parts.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    scores = np.concatenate(parts).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        return float("nan")
    return macro_ovr_auroc(labels, scores)


def _two_column(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2:
        raise InvalidInputError(
            f"The model returned logits of shape {tuple(logits.shape)}; "
            "expected (batch, n_classes)."
        )
    if logits.shape[1] == 1:  # single-logit binary head: softmax([0, z]) == sigmoid(z)
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    pad = max(1, round(min(h, w) / 16))
    if min(h, w) > pad:  # reflect padding needs pad < side
        xp = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]  # (B, 1, W)
        x = xp[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    gain = 0.9 + 0.2 * torch.rand(b, 1, 1, 1, generator=gen)
    offset = 0.1 * torch.rand(b, 1, 1, 1, generator=gen) - 0.05
    return (x * gain + offset).clamp(0.0, 1.0).contiguous()


def _check_cohort(c: Any, name: str, func: str) -> None:
    from medaudit.data import Cohort

    if not isinstance(c, Cohort):
        raise param_error(name, func, "a medaudit.data.Cohort", type(c).__name__)


def _check_labels(cohort: Any, n_out: int) -> None:
    labels = cohort.labels
    if len(labels) and (labels.min() < 0 or labels.max() >= n_out):
        bad = int(labels.max() if labels.max() >= n_out else labels.min())
        raise InvalidInputError(
            LABEL_OUT_OF_RANGE.format(
                name=cohort.name, label=bad, n=n_out, need=max(int(labels.max()) + 1, 2)
            )
        )


def _check_int(v: Any, name: str, func: str, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise param_error(name, func, f"an int >= {minimum}", v)


def _as_list(v: Any, name: str, func: str) -> list[float]:
    vals = [v] if isinstance(v, (int, float)) else list(v)
    try:
        out = [float(x) for x in vals]
    except (TypeError, ValueError) as exc:
        raise param_error(name, func, "a float or a sequence of floats", v) from exc
    if not out or not all(np.isfinite(out)):
        raise param_error(name, func, "finite floats", v)
    return out


def _first_conv_channels(model: nn.Module) -> int | None:
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            return int(mod.in_channels)
    return None
