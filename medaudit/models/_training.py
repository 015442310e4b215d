"""The one training loop, reused by plain, DP, federated, unlearning and reference training.

Seeded and deterministic on the CPU: the same model initialisation, data and seed give
bit-identical weights. After every epoch the BatchNorm statistics are re-estimated at the
epoch's weights (:mod:`medaudit.models._batchnorm`); early stopping watches the
validation loss (or AUROC: binary, positive class; multiclass, macro one-vs-rest) and
the weights of the best epoch are restored. ``experiments/calibration`` shows why: with
PyTorch's moving-average statistics and AUROC-only selection, a model with validation
AUROC 0.80 scored every test image of a small manifest above 0.5.
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
from medaudit.models._batchnorm import batchnorm_layers, precise_batchnorm
from medaudit.models._hooks import Step, TrainHooks
from medaudit.models._samplers import BatchSampler, make_sampler
from medaudit.stats import auroc, expected_calibration_error

__all__ = [
    "LocalUpdate",
    "TrainResult",
    "auroc_and_ece",
    "compute_normalization",
    "local_update",
    "macro_ovr_auroc",
    "train_model",
]

# Above this many bytes of (resized) training images, batches are streamed from the cohort
# every epoch instead of being held in memory. Both paths give identical results.
_PRELOAD_BYTES = 2 * 1024**3
# At most this many training images re-estimate the BatchNorm statistics after an epoch
# (PreciseBN saturates at about 10^4 samples: Wu & Johnson 2021, figure 3).
_PRECISE_BN_IMAGES = 8192
#: What early stopping and the choice of the kept epoch watch.
MONITORS = ("val_loss", "val_auroc")

EpochCallback = Callable[[int, dict[str, float]], Any]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

VAL_SINGLE_CLASS = (
    "The validation cohort {name!r} contains only one class; early stopping needs "
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
        One row per epoch run: ``epoch`` (1-based), ``steps`` (optimizer steps so far),
        ``train_loss`` (mean training loss), ``val_auroc``, ``val_loss`` (mean
        cross-entropy) and ``val_ece`` (expected calibration error of the positive class,
        or of the top class for multiclass models; all NaN without validation data),
        ``seconds``.
    best_epoch : int
        Epoch whose weights were kept: the best by ``monitor`` (the last one without
        validation data).
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
    steps : int
        Optimizer steps taken in all, including those of epochs whose weights were not
        kept (what a privacy accountant must count).
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
    steps: int = 0


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
    sampler: str | BatchSampler = "shuffle",
    hooks: TrainHooks | None = None,
    max_steps: int | None = None,
    monitor: str = "val_loss",
    precise_bn: bool = True,
) -> TrainResult:
    """Train a classifier with cross-entropy, early stopping on the validation loss.

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
        Rows per batch (the expected batch size for ``sampler="poisson"``).
    lr, weight_decay : float
        AdamW settings (ignored when ``optimizer_factory`` is given).
    patience : int or None, default 3
        Stop after this many epochs without a strictly better ``monitor``; None never
        stops early (the best epoch's weights are still restored).
    seed : int, default 0
        Seeds the sampling, the augmentation and torch's global RNG (dropout) inside the
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
        Torch device, or ``"auto"`` (CUDA when present).
    progress : bool, default False
        Show a rich progress bar.
    optimizer_factory : callable, optional
        ``optimizer_factory(params) -> torch.optim.Optimizer`` replaces the default
        ``AdamW(params, lr=lr, weight_decay=weight_decay)``.
    callbacks : sequence of callables
        Each is called as ``callback(epoch, metrics)`` after every epoch, ``metrics``
        being that epoch's history row as a dict. A callback returning ``True`` stops
        training after that epoch.
    sampler : {"shuffle", "poisson", "balanced"} or BatchSampler, default "shuffle"
        Which rows make up each batch (:mod:`medaudit.models._samplers`); ``"poisson"``
        includes each row with probability ``batch_size / len(train)``, as DP-SGD's
        accounting assumes.
    hooks : TrainHooks, optional
        Wrapping, batch, loss and step hooks (how DP, federated clients, watermarks and
        disentanglement use this loop).
    max_steps : int, optional
        Stop after this many optimizer steps (a federated client's local steps).
    monitor : {"val_loss", "val_auroc"}, default "val_loss"
        What picks the kept epoch and drives early stopping: the validation
        cross-entropy (lower is better; a proper scoring rule, so the kept epoch is
        calibrated as well as discriminative) or the validation AUROC (higher is
        better; blind to how scores are scaled).
    precise_bn : bool, default True
        After every epoch (or once at the end, without validation data), replace the
        BatchNorm running statistics by those of the training images at the epoch's
        weights (at most 8,192 images, no augmentation) before validating: see
        :func:`~medaudit.models._batchnorm.precise_batchnorm`. Models without
        BatchNorm are unaffected; the weights' trajectory never is.

    Returns
    -------
    TrainResult

    Notes
    -----
    Bit-identical results for the same seed are guaranteed on the CPU with the same
    number of torch threads; GPU kernels may not be deterministic.

    References
    ----------
    .. [1] Wu Y, Johnson J. Rethinking "Batch" in BatchNorm. arXiv:2105.07576, 2021.
    .. [2] Rajpurkar P, et al. CheXNet: radiologist-level pneumonia detection on chest
           X-rays with deep learning. arXiv:1711.05225, 2017 (the model with the lowest
           validation loss is kept).
    .. [3] Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural
           networks. ICML 2017.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.random((40, 8, 8), dtype=np.float32)
    >>> cohort = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 40)}), images=imgs)
    >>> res = train_model(build_model("small_cnn"), cohort, epochs=2, batch_size=16)
    >>> res.history.columns.tolist(), res.best_epoch, res.image_size, res.steps
    (['epoch', 'steps', 'train_loss', 'val_auroc', 'val_loss', 'val_ece', 'seconds'], 2, 8, 6)
    """
    func = "train_model"
    callbacks = tuple(callbacks)
    _validate(
        model,
        train,
        val,
        epochs,
        batch_size,
        seed,
        patience,
        lr,
        weight_decay,
        image_size,
        in_channels,
        optimizer_factory,
        callbacks,
        max_steps,
        hooks,
        func,
    )
    if monitor not in MONITORS:
        raise param_error("monitor", func, f"one of {MONITORS}", monitor)
    if not isinstance(precise_bn, bool):
        raise param_error("precise_bn", func, "a bool", precise_bn)
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

    from medaudit._device import resolve_device

    dev = torch.device(resolve_device(device))
    model = model.to(dev)
    run = _Run(
        model=model,
        train=train,
        val=val,
        dev=dev,
        m_t=torch.tensor(mean_l, dtype=torch.float32, device=dev).view(1, -1, 1, 1),
        s_t=torch.tensor(std_l, dtype=torch.float32, device=dev).view(1, -1, 1, 1),
        train_src=_Source(train, image_size, in_channels),
        val_src=_Source(val, image_size, in_channels) if val is not None else None,
        sampler=make_sampler(sampler, batch_size, len(train)),
        hooks=hooks or TrainHooks(),
        augment=augment,
        batch_size=batch_size,
        max_steps=max_steps,
        monitor=monitor,
        precise_bn=precise_bn,
        seed=seed,
    )
    rows, best, stopped_early = run.fit(
        epochs=epochs,
        seed=seed,
        patience=patience,
        callbacks=callbacks,
        progress=progress,
        optimizer_factory=optimizer_factory
        or (lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)),
    )
    history = pd.DataFrame(rows, columns=list(_HISTORY_COLUMNS))
    history["epoch"] = history["epoch"].astype(np.int64)
    history["steps"] = history["steps"].astype(np.int64)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=int(best[0]),
        best_val_auroc=float(best[1]),
        seed=int(seed),
        image_size=recorded_size,
        in_channels=int(in_channels),
        mean=mean_l,
        std=std_l,
        stopped_early=stopped_early,
        steps=run.steps,
    )


_HISTORY_COLUMNS = ("epoch", "steps", "train_loss", "val_auroc", "val_loss", "val_ece", "seconds")


@dataclass
class _Run:
    """The state of one call of :func:`train_model`: the loop, split into short methods."""

    model: nn.Module
    train: Any
    val: Any
    dev: torch.device
    m_t: torch.Tensor
    s_t: torch.Tensor
    train_src: _Source
    val_src: _Source | None
    sampler: BatchSampler
    hooks: TrainHooks
    augment: bool
    batch_size: int
    max_steps: int | None
    monitor: str
    precise_bn: bool
    seed: int
    steps: int = 0
    labels_checked: bool = False

    def fit(
        self,
        *,
        epochs: int,
        seed: int,
        patience: int | None,
        callbacks: tuple[EpochCallback, ...],
        progress: bool,
        optimizer_factory: OptimizerFactory,
    ) -> tuple[list[dict[str, float]], tuple[int, float], bool]:
        from medaudit._progress import progress_bar

        n_per_epoch = self.sampler.steps_per_epoch(len(self.train))
        total = (
            epochs * n_per_epoch
            if self.max_steps is None
            else min(epochs * n_per_epoch, self.max_steps)
        )
        rows: list[dict[str, float]] = []
        best_value, best_epoch = float("nan"), 0
        best_state: dict[str, torch.Tensor] | None = None
        stopped_early = False
        labels = np.asarray(self.train.labels)
        train_labels = torch.tensor(labels, dtype=torch.int64)  # a copy: may be read-only
        rng_devices = [self.dev.index or 0] if self.dev.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=rng_devices),
            progress_bar("Training", total=total, enabled=progress) as advance,
        ):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            params = [p for p in self.model.parameters() if p.requires_grad]
            optimizer = optimizer_factory(params)
            net = self.model
            if self.hooks.wrap is not None:
                net, optimizer = self.hooks.wrap(self.model, optimizer)
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                loss_sum, seen = self._epoch(
                    net, optimizer, epoch, labels, train_labels, gen, advance
                )
                row = self._row(epoch, loss_sum, seen, time.perf_counter() - t0)
                rows.append(row)
                value = row[self.monitor]
                if self.val_src is None or self._improves(value, best_value):
                    best_value, best_epoch = value, epoch
                    if self.val_src is not None:
                        best_state = copy.deepcopy(self.model.state_dict())
                # Every callback sees every epoch, even when an earlier one asks to stop.
                stop_requested = False
                for cb in callbacks:
                    stop_requested = (cb(epoch, dict(row)) is True) or stop_requested
                if stop_requested or self._out_of_steps():
                    break
                if (
                    patience is not None
                    and self.val_src is not None
                    and epoch - best_epoch >= patience
                ):
                    stopped_early = epoch < epochs
                    break
            if self.val_src is None and self.precise_bn:
                self._precise_bn()
        if best_state is not None:
            self.model.load_state_dict(best_state)
        elif self.val_src is not None:
            best_epoch = len(rows)  # monitor never finite: keep the last weights
        self.model.eval()
        best_auroc = rows[best_epoch - 1]["val_auroc"] if rows else float("nan")
        return rows, (best_epoch, best_auroc), stopped_early

    def _improves(self, value: float, best: float) -> bool:
        # Strictly better only: a plateau (e.g. at AUROC 1.0) counts towards patience.
        if not np.isfinite(value):
            return False
        if np.isnan(best):
            return True
        return value < best if self.monitor == "val_loss" else value > best

    def _precise_bn(self) -> None:
        """Re-estimate the BatchNorm statistics at the current weights (no-op without BN)."""
        if not batchnorm_layers(self.model):
            return
        n = len(self.train)
        # A fixed random subset and order (batches mix sites and classes as in training),
        # from its own generator so that the training's random streams are untouched.
        order = np.random.default_rng([self.seed, 7]).permutation(n)[:_PRECISE_BN_IMAGES]
        chunks = np.array_split(order, -(-len(order) // self.batch_size))
        batches = (
            ((x.to(self.dev) - self.m_t) / self.s_t).contiguous()
            for chunk in chunks
            for _, x in self.train_src.batches(chunk, len(chunk))
        )
        precise_batchnorm(self.model, batches)

    def _out_of_steps(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def _epoch(
        self,
        net: nn.Module,
        optimizer: Any,
        epoch: int,
        labels: np.ndarray,
        train_labels: torch.Tensor,
        gen: torch.Generator,
        advance: Callable[[int], None],
    ) -> tuple[float, int]:
        net.train()
        loss_sum, seen = 0.0, 0
        for order in self.sampler.epoch(labels, gen):
            if self._out_of_steps():
                break
            if len(order) == 0:
                if self.hooks.on_empty is not None:
                    empty = torch.zeros((0, 1, 1, 1))
                    self.hooks.on_empty(
                        Step(
                            net,
                            empty,
                            train_labels[:0],
                            order,
                            epoch,
                            self.steps,
                            optimizer=optimizer,
                        )
                    )
                self.steps += 1
                advance(1)
                continue
            chunk = self.hooks.max_physical_batch_size or len(order)
            n_chunks = -(-len(order) // chunk)
            for k, (idx, x) in enumerate(self.train_src.batches(np.asarray(order), chunk)):
                part = (k, n_chunks, len(idx) / len(order))
                loss = self._step(net, optimizer, epoch, idx, x, train_labels, gen, part)
                loss_sum += loss * len(idx)
                seen += len(idx)
            advance(1)
        return loss_sum, seen

    def _step(
        self,
        net: nn.Module,
        optimizer: Any,
        epoch: int,
        idx: np.ndarray,
        x: torch.Tensor,
        train_labels: torch.Tensor,
        gen: torch.Generator,
        part: tuple[int, int, float] = (0, 1, 1.0),
    ) -> float:
        """Forward and backward one chunk ``part = (k, n_chunks, share of the batch)``."""
        y = train_labels[torch.from_numpy(np.asarray(idx))]
        if self.augment:
            x = _augment(x, gen)
        if self.hooks.batch is not None:
            x, y, idx = self.hooks.batch(x, y, np.asarray(idx), self.steps)
        x = ((x.to(self.dev) - self.m_t) / self.s_t).contiguous()
        y = y.to(self.dev)
        step = Step(net, x, y, np.asarray(idx), epoch, self.steps, optimizer=optimizer)
        if (
            self.hooks.want_features
            and net is self.model
            and callable(getattr(net, "features", None))
            and callable(getattr(net, "head", None))
        ):
            step.features = net.features(x)  # type: ignore[operator]
            step.logits = _two_column(net.head(step.features))  # type: ignore[operator]
        else:
            step.logits = _two_column(net(x))
        if not self.labels_checked:
            _check_labels(self.train, step.logits.shape[1])
            self.labels_checked = True
        loss = (
            self.hooks.loss(step)
            if self.hooks.loss is not None
            else nn.functional.cross_entropy(step.logits, y)
        )
        for extra in self.hooks.extra_losses:
            loss = loss + extra(step)
        k, n_chunks, share = part
        last = k == n_chunks - 1
        skip = getattr(optimizer, "signal_skip_step", None)
        if callable(skip):
            # Opacus's DPOptimizer: each chunk's per-sample gradients are clipped and summed
            # by step(); the skip signal defers noise and update to the batch's last chunk.
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            skip(do_skip=not last)
            optimizer.step()
        else:
            if k == 0:
                optimizer.zero_grad(set_to_none=True)
            (loss if n_chunks == 1 else loss * share).backward()
            if last:
                optimizer.step()
        if not last:
            return float(loss.detach())
        self.steps += 1
        for hook in self.hooks.on_step:
            hook(step)
        return float(loss.detach())

    def _row(self, epoch: int, loss_sum: float, seen: int, seconds: float) -> dict[str, float]:
        val_auroc = val_loss = val_ece = float("nan")
        if self.val_src is not None:
            if self.precise_bn:
                self._precise_bn()
            val_auroc, val_loss, val_ece = _evaluate(
                self.model,
                self.val_src,
                self.val.labels,
                self.m_t,
                self.s_t,
                self.batch_size,
                self.dev,
            )
        return {
            "epoch": epoch,
            "steps": self.steps,
            "train_loss": loss_sum / max(seen, 1),
            "val_auroc": val_auroc,
            "val_loss": val_loss,
            "val_ece": val_ece,
            "seconds": seconds,
        }


@dataclass(frozen=True)
class LocalUpdate:
    """What :func:`local_update` returns: the change of the weights and how it was made.

    Attributes
    ----------
    update : dict of str to Tensor
        ``trained - initial`` for every floating-point entry of the state dict (integer
        buffers such as BatchNorm's ``num_batches_tracked`` are left out).
    state : dict of str to Tensor
        The trained state dict.
    n_examples : int
        Rows of the local cohort (FedAvg's weight).
    steps : int
        Optimizer steps taken.
    train_loss : float
        Mean training loss of the last epoch run.
    """

    update: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    n_examples: int
    steps: int
    train_loss: float


def local_update(
    model: nn.Module,
    cohort: Any,
    *,
    steps: int | None = None,
    epochs: int = 1,
    initial_state: dict[str, torch.Tensor] | None = None,
    **train_kwargs: Any,
) -> LocalUpdate:
    """Train from given weights for a number of steps (or epochs) and return the update.

    What a federated client runs each round: load ``initial_state`` (default: the
    model's current weights), train on ``cohort`` with :func:`train_model` (no
    validation, no early stopping) for ``steps`` optimizer steps or ``epochs`` passes,
    and return the difference.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place.
    cohort : Cohort
    steps : int, optional
        Local optimizer steps; training stops after them (epochs are repeated if needed).
    epochs : int, default 1
        Passes over ``cohort`` when ``steps`` is None.
    initial_state : dict, optional
        Weights to start from (e.g. the global model of this round).
    **train_kwargs
        Passed to :func:`train_model` (``batch_size``, ``lr``, ``mean``, ``std``, ``seed``,
        ``sampler``, ``hooks``, ``optimizer_factory``, ...).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> c = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 32)}),
    ...            images=rng.random((32, 8, 8), dtype=np.float32))
    >>> up = local_update(build_model("small_cnn_gn"), c, steps=3, batch_size=8)
    >>> up.steps, up.n_examples
    (3, 32)
    """
    if steps is not None:
        _check_int(steps, "steps", "local_update", 1)
        epochs = max(epochs, -(-steps // max(1, len(cohort) // train_kwargs.get("batch_size", 64))))
    if initial_state is not None:
        model.load_state_dict(initial_state)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res = train_model(
        model, cohort, None, epochs=epochs, patience=None, max_steps=steps, **train_kwargs
    )
    after = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
    update = {k: after[k] - before[k] for k in after if after[k].is_floating_point()}
    return LocalUpdate(
        update=update,
        state=after,
        n_examples=len(cohort),
        steps=res.steps,
        train_loss=float(res.history["train_loss"].iloc[-1]),
    )


def _validate(
    model: Any,
    train: Any,
    val: Any,
    epochs: Any,
    batch_size: Any,
    seed: Any,
    patience: Any,
    lr: Any,
    weight_decay: Any,
    image_size: Any,
    in_channels: Any,
    optimizer_factory: Any,
    callbacks: Any,
    max_steps: Any,
    hooks: Any,
    func: str,
) -> None:
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    _check_cohort(train, "train", func)
    if val is not None:
        _check_cohort(val, "val", func)
    _check_int(epochs, "epochs", func, 1)
    _check_int(batch_size, "batch_size", func, 1)
    _check_int(seed, "seed", func, 0)
    for name, v, lo in (
        ("patience", patience, 1),
        ("image_size", image_size, 1),
        ("in_channels", in_channels, 1),
        ("max_steps", max_steps, 1),
    ):
        if v is not None:
            _check_int(v, name, func, lo)
    for name, v in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise param_error(name, func, "a finite float >= 0", v)
    if optimizer_factory is not None and not callable(optimizer_factory):
        raise param_error("optimizer_factory", func, "a callable or None", optimizer_factory)
    if not all(callable(c) for c in tuple(callbacks)):
        raise param_error("callbacks", func, "a sequence of callables", callbacks)
    if hooks is not None and not isinstance(hooks, TrainHooks):
        raise param_error("hooks", func, "a TrainHooks or None", type(hooks).__name__)
    if len(train) == 0:
        raise InvalidInputError(f"The training cohort {train.name!r} has no images.")
    if val is not None and len(np.unique(val.labels)) < 2:
        raise InvalidInputError(VAL_SINGLE_CLASS.format(name=val.name))


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
) -> tuple[float, float, float]:
    """Validation AUROC, mean cross-entropy and ECE (positive class; top class if multiclass)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for _, x in src.batches(np.arange(len(labels)), max(batch_size, 256)):
            logits = _two_column(model((x.to(dev) - m_t) / s_t))
            parts.append(torch.log_softmax(logits.float(), dim=1).cpu().numpy())
    logp = np.concatenate(parts).astype(np.float64)
    if not np.all(np.isfinite(logp)):
        return float("nan"), float("nan"), float("nan")
    y = np.asarray(labels, dtype=np.int64)
    loss = float(-np.mean(logp[np.arange(len(y)), y]))
    auroc, ece = auroc_and_ece(y, np.exp(logp))
    return auroc, loss, ece


def auroc_and_ece(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Validation AUROC and ECE as the training loop reports them.

    AUROC: :func:`macro_ovr_auroc`; ECE of the positive class (binary) or of the top class
    (multiclass). ``scores``: class probabilities of shape (n, n_classes).
    """
    y = np.asarray(labels, dtype=np.int64)
    if scores.shape[1] == 2:
        ece = expected_calibration_error(y == 1, scores[:, 1])
    else:
        top = scores.argmax(axis=1)
        ece = expected_calibration_error(top == y, scores.max(axis=1))
    return macro_ovr_auroc(y, scores), float(ece)


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
