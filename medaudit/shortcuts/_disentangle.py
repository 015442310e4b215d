"""Disentanglement: train the shortcut out with adversaries behind a gradient reversal.

For each attribute (``site``, ``sex``, ...) an adversary head reads the penultimate
features through a gradient-reversal layer and predicts the attribute; the reversed
gradient pushes the feature extractor to make that prediction fail, so the features keep
the disease and lose the attribute (domain-adversarial training, Ganin et al.). The
reversal strength lambda rises from 0 to ``weight`` along DANN's schedule
``weight * (2 / (1 + exp(-10 p)) - 1)``, ``p`` the share of training done, so the task is
learned before the adversaries bite.

Four choices make the adversary hard to fool (measured on the synthetic hospitals, where
a small CNN otherwise keeps the site fully readable, probe AUROC 0.99):

- **It always plays its best response.** The head is a linear read-out re-fitted in
  closed form (ridge) at every step on the features of a fresh *reference batch* drawn
  from the training images, computed with the current weights. An adversary trained by
  gradient steps, or fitted on remembered features, lags behind the features it chases:
  they learn to move away from it (its accuracy falls to chance) while a probe fitted
  afterwards still reads the attribute perfectly.
- **It is class-conditional.** It reads the attribute *within each class* (features and
  attribute centred per label), so the features may keep the disease even where its
  prevalence differs between sites, and lose everything else that tells the sites apart.
- **Its ridge penalty is light** (``alpha=3`` on standardised features; the probe of
  :func:`~medaudit.shortcuts.attribute_probe` uses 1). A read-out shrunk harder discounts
  the directions in which the features vary little, and the features keep the attribute
  there. (The extreme case, measured: a penalty on each feature's site means separately
  brought every feature to chance, 0.5% of its variance explained by the site against a
  0.4% floor, and a probe still read the site at AUROC 0.74 from their combinations.)
- **The weights are averaged.** The game does not settle: late in training the site
  probe of the current weights swings from epoch to epoch (0.64-0.79 over the last five
  epochs of one run), so the last weights land anywhere in the swing (0.58-0.78 over five
  initialisations with the old penalty, 0.56-0.66 with 1). The model
  :func:`train_disentangled` returns holds the exponential average of the weights over
  the second half of training (Polyak averaging, which steadies GAN training too [5]_):
  site probe 0.52-0.58 over the same five initialisations (0.54 on a sixth), task AUROC
  unchanged or better, held-out-site AUROC -0.034 to +0.023.

Everything plugs into the one training loop through :class:`~medaudit.models.TrainHooks`:
``extra_losses`` adds the adversaries' loss, ``on_step`` records them, and
``want_features`` gives the features of zoo models; any other ``nn.Module`` is read by a
forward hook on its penultimate layer (or ``feature_layer="..."``).

References
----------
.. [1] Ganin Y, Ustinova E, Ajakan H, et al. Domain-adversarial training of neural
       networks. JMLR 17(59):1-35, 2016.
.. [2] Long M, Cao Z, Wang J, Jordan MI. Conditional adversarial domain adaptation.
       NeurIPS 2018.
.. [3] Ravfogel S, Twiton M, Goldberg Y, Cotterell R. Linear adversarial concept erasure.
       ICML 2022.
.. [4] Müller C, et al. Disentanglement and assessment of shortcuts in ophthalmological
       retinal imaging exams. arXiv:2308.01163, 2023.
.. [5] Yazici Y, Foo CS, Winkler S, Yap KH, Piliouras G, Chandrasekhar V. The unusual
       effectiveness of averaging in GAN training. ICLR 2019.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models import (
    Step,
    TrainHooks,
    TrainResult,
    WeightAverage,
    make_sampler,
    train_model,
)
from medaudit.shortcuts._attributes import code_attribute
from medaudit.shortcuts._features import FeatureTap

__all__ = [
    "MSG_SINGLE_LEVEL",
    "DisentangleResult",
    "Disentangler",
    "LeastSquaresAdversary",
    "dann_lambda",
    "disentangle_hooks",
    "grad_reverse",
    "train_disentangled",
]

MSG_SINGLE_LEVEL = (
    "The attribute {name!r} takes a single value in the training data; there is nothing to "
    "disentangle."
)
MSG_NO_FEATURES = (
    'Disentanglement needs the penultimate features: use a zoo model, or pass feature_layer="..."'
    " for another nn.Module."
)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-lam`` backward.

    Examples
    --------
    >>> x = torch.ones(3, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5, -0.5]
    """
    return _GradientReversal.apply(x, float(lam))


def dann_lambda(progress: float, *, weight: float = 1.0, gamma: float = 10.0) -> float:
    """DANN's schedule: ``weight * (2 / (1 + exp(-gamma * progress)) - 1)``.

    Examples
    --------
    >>> dann_lambda(0.0), round(dann_lambda(1.0), 4)
    (0.0, 0.9999)
    """
    p = min(max(float(progress), 0.0), 1.0)
    return float(weight * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0))


def _centre(
    x: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` minus its group means, and the (n_groups, ...) means (zero for empty groups)."""
    onehot = nn.functional.one_hot(groups, n_groups).to(x.dtype)
    means = (onehot.T @ x) / onehot.sum(0).clamp_min(1.0)[:, None]
    return x - means[groups], means


class LeastSquaresAdversary:
    """A linear, class-conditional read-out of one attribute, re-fitted at every step.

    Fitted by ridge regression of the one-hot attribute on standardised features, within
    each class (both centred per label), on the reference batch and the current batch;
    its squared error on the current batch is the adversary's loss.

    Parameters
    ----------
    n_levels : int
    alpha : float, default 3.0
        Ridge penalty (on standardised features). Until 2026-12 it was 10.0, which let
        the features hide the attribute where a probe still reads it (see the module's
        notes).
    """

    def __init__(self, n_levels: int, *, alpha: float = 3.0) -> None:
        self.n_levels = int(n_levels)
        self.alpha = float(alpha)

    def loss(
        self,
        reversed_f: torch.Tensor,
        codes: torch.Tensor,
        labels: torch.Tensor,
        ref_f: torch.Tensor,
        ref_codes: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, float]:
        """Squared error of the best read-out on this batch, and its accuracy.

        Parameters
        ----------
        reversed_f : Tensor of shape (B, d)
            This batch's features behind the gradient-reversal layer.
        codes, labels : Tensor of shape (B,)
            Attribute level and class of each image of the batch.
        ref_f : Tensor of shape (R, d)
            Features of the reference batch (current weights, no gradient).
        ref_codes, ref_labels : Tensor of shape (R,)
        """
        n_cls = int(max(labels.max(), ref_labels.max())) + 1
        f_all = torch.cat([ref_f, reversed_f.detach()])
        t_all = nn.functional.one_hot(torch.cat([ref_codes, codes]), self.n_levels)
        t_all = t_all.to(f_all.dtype)
        g_all = torch.cat([ref_labels, labels])
        mu, sd = f_all.mean(0), f_all.std(0).clamp_min(1e-6)
        z, z_means = _centre((f_all - mu) / sd, g_all, n_cls)
        t, t_means = _centre(t_all, g_all, n_cls)
        eye = self.alpha * torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
        w = torch.linalg.solve(z.T @ z + eye, z.T @ t)
        pred = ((reversed_f - mu) / sd - z_means[labels]) @ w + t_means[labels]
        target = nn.functional.one_hot(codes, self.n_levels).to(pred.dtype)
        loss = ((pred - target) ** 2).sum(dim=1).mean()
        acc = (pred.detach().argmax(1) == codes).float().mean()
        return loss, float(acc)


@contextmanager
def _frozen_batch_norm(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave BatchNorm's running statistics unchanged."""
    tracked = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None
    ]
    saved = [(m.momentum, torch.clone(m.num_batches_tracked)) for m in tracked]  # type: ignore[arg-type]
    for m in tracked:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(tracked, saved, strict=True):
            m.momentum = mom
            m.num_batches_tracked = nbt


@dataclass
class Disentangler:
    """The adversaries of one training run and the hooks that attach them.

    Use :attr:`hooks` as ``train_model(..., hooks=d.hooks)`` with the same ``mean`` and
    ``std`` the reference images were normalised with; call :meth:`close` after training
    when a forward hook reads the features (non-zoo models).

    Attributes
    ----------
    attributes : tuple of str
    levels : dict of str to tuple of str
        Levels of each attribute.
    codes : dict of str to Tensor
        Level code of every training row (-1: missing).
    labels : Tensor
        Class of every training row.
    weight : float
        Final reversal strength.
    total_steps : int
        Steps over which lambda rises.
    pool : Tensor of shape (P, C, H, W)
        Normalised training images the reference batches are drawn from.
    pool_rows : Tensor of shape (P,)
        Their training rows.
    reference : int
        Images per reference batch.
    model : torch.nn.Module
    tap : FeatureTap or None
        Reads the features of a model without ``features``/``head``.
    average : float or None
        Decay of the running (exponential) average of the weights kept from
        ``average_from`` on; None keeps none.
    average_from : float
        Share of ``total_steps`` after which the weights are averaged.
    history : list of dict
        Per step: ``step``, ``lambda``, and each attribute's adversary loss and accuracy.
    averaged : dict of str to Tensor
        The averaged parameters (empty until averaging starts); :meth:`load_average`
        puts them into the model.
    """

    attributes: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]
    codes: dict[str, torch.Tensor]
    labels: torch.Tensor
    weight: float
    total_steps: int
    pool: torch.Tensor
    pool_rows: torch.Tensor
    model: nn.Module
    reference: int = 96
    alpha: float = 3.0
    tap: FeatureTap | None = None
    seed: int = 0
    average: float | None = None
    average_from: float = 0.5
    history: list[dict[str, float]] = field(default_factory=list)
    adversaries: dict[str, LeastSquaresAdversary] = field(default_factory=dict)
    _average: WeightAverage | None = None
    _last: dict[str, float] = field(default_factory=dict)
    _gen: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.adversaries = {
            name: LeastSquaresAdversary(len(self.levels[name]), alpha=self.alpha)
            for name in self.attributes
        }
        self._gen = torch.Generator().manual_seed(self.seed)
        if self.average is not None:
            start = math.ceil(self.average_from * self.total_steps)
            self._average = WeightAverage(self.model, decay=self.average, start=start)

    @property
    def hooks(self) -> TrainHooks:
        """The training-loop hooks: one extra loss, one step hook, features wanted."""
        return TrainHooks(
            extra_losses=(self.adversary_loss,),
            on_step=(self.record,),
            want_features=self.tap is None,
        )

    def _read(self, x: torch.Tensor) -> torch.Tensor:
        if self.tap is None:
            return self.model.features(x)  # type: ignore[operator]
        self.model(x)
        if self.tap.features is None:
            raise InvalidInputError(MSG_NO_FEATURES)
        return self.tap.features.flatten(1)

    def _batch_features(self, step: Step) -> torch.Tensor:
        if step.features is not None:
            return step.features.flatten(1)
        if self.tap is None or self.tap.features is None:
            raise InvalidInputError(MSG_NO_FEATURES)
        return self.tap.features.flatten(1)

    def _reference(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, len(self.pool), (self.reference,), generator=self._gen)
        with torch.no_grad(), _frozen_batch_norm(self.model):
            f = self._read(self.pool[pick].to(device))
        return f.detach(), self.pool_rows[pick]

    def adversary_loss(self, step: Step) -> torch.Tensor:
        """Sum over attributes of each adversary's squared error on reversed features."""
        f = self._batch_features(step)
        lam = dann_lambda(step.step / max(1, self.total_steps), weight=self.weight)
        self._last = {"step": float(step.step), "lambda": lam}
        idx = torch.as_tensor(np.asarray(step.idx), dtype=torch.int64)
        known = idx >= 0
        if int(known.sum()) < 2:
            return f.new_zeros(())
        ref_f, ref_rows = self._reference(f.device)
        rev = grad_reverse(f, lam)
        y = step.y.to(f.device)
        total = f.new_zeros(())
        for name in self.attributes:
            code = torch.full_like(idx, -1)
            code[known] = self.codes[name][idx[known]]
            keep = code >= 0
            ref_code = self.codes[name][ref_rows]
            ref_keep = ref_code >= 0
            if int(keep.sum()) < 2:
                continue
            loss, acc = self.adversaries[name].loss(
                rev[keep.to(f.device)],
                code[keep].to(f.device),
                y[keep.to(f.device)],
                ref_f[ref_keep.to(f.device)],
                ref_code[ref_keep].to(f.device),
                self.labels[ref_rows][ref_keep].to(f.device),
            )
            total = total + loss
            self._last[f"{name}_loss"] = float(loss.detach())
            self._last[f"{name}_accuracy"] = acc
        return total

    def record(self, step: Step) -> None:
        """Keep this step's lambda and adversary losses in :attr:`history`; average weights."""
        if self._last:
            self.history.append(dict(self._last))
        if self._average is not None:
            self._average(step)

    @property
    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged parameters (empty until averaging starts or without ``average``)."""
        return {} if self._average is None else self._average.averaged

    def load_average(self) -> bool:
        """Put the averaged weights into the model; BatchNorm statistics are re-estimated.

        The running statistics of the averaged weights are those of the reference pool
        (training images), as :func:`~medaudit.models.train_model`'s ``precise_bn`` sets
        them. Returns False (and changes nothing) when no average was kept.
        """
        if self._average is None:
            return False
        device = next(self.model.parameters()).device
        chunks = (self.pool[i : i + 256].to(device) for i in range(0, len(self.pool), 256))
        return self._average.load(chunks)

    def close(self) -> None:
        """Detach the forward hook (if any)."""
        if self.tap is not None:
            self.tap.__exit__(None, None, None)


def disentangle_hooks(
    model: nn.Module,
    train: Any,
    attributes: Sequence[str] | str,
    *,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    weight: float = 0.1,
    total_steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    image_size: int | None = None,
    reference: int = 96,
    pool: int = 1024,
    feature_layer: str | None = None,
    seed: int = 0,
    alpha: float = 3.0,
    average: float | None = None,
) -> Disentangler:
    """Adversaries for ``attributes`` of the training cohort, ready for ``train_model``.

    Parameters
    ----------
    model : torch.nn.Module
        Any classifier: a zoo model gives its features through ``features``/``head``;
        another module is read by a forward hook (its final linear layer's input, or
        ``feature_layer``).
    train : Cohort
        The training cohort (the attributes are read from its metadata, by row).
    attributes : sequence of str or comma-separated str
        Columns to remove from the features (``"site,sex"``); numeric columns with many
        values are split at their median.
    mean, std : float or sequence of float
        The normalisation ``train_model`` applies (pass the same values to it).
    weight : float, default 0.1
        Final strength of the gradient reversal (lambda). The adversary's loss is a
        squared error on standardised features, so its scale differs from DANN's
        cross-entropy: on the synthetic hospitals 0.1 removed the site (probe AUROC 0.99
        to 0.52-0.58 over five initialisations, with ``train_disentangled``'s defaults)
        at no cost in task AUROC; 0.2 and 0.4 removed no more (measured on the last
        weights: AdamW's steps do not grow with the loss).
    total_steps : int, optional
        Steps over which lambda rises; default ``epochs`` times the steps per epoch.
    epochs : int, optional
    batch_size : int, default 64
    image_size : int, optional
        The training image size (default: the images' own).
    reference : int, default 96
        Training images whose features the adversaries are re-fitted on at every step
        (one extra forward pass of this many images per step, without gradients).
    pool : int, default 1024
        Training images (drawn once, kept in memory) the reference batches come from.
    feature_layer : str, optional
        Layer whose output are the features (non-zoo models).
    seed : int
        Seeds the pool and the reference batches.
    alpha : float, default 3.0
        Ridge penalty of the adversaries' read-out, on standardised features. A heavier
        penalty discounts directions in which the features vary little, and the features
        learn to keep the attribute there. Site probe over five initialisations of the
        synthetic hospitals, averaged weights: 0.53-0.61 with 10.0 (the value before
        2026-12), 0.52-0.58 with 3.0, 0.45-0.57 with 1.0, which cost one of them 0.055 in
        held-out-site AUROC (3.0: at most 0.034).
    average : float, optional
        Keep an exponential average of the weights over the second half of the steps,
        with this decay per step (:func:`train_disentangled` uses 0.99 and loads it
        after training; here, call :meth:`Disentangler.load_average`). None: no average.

    Returns
    -------
    Disentangler

    Examples
    --------
    >>> import pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> c = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 32), "site": ["a", "b"] * 16}),
    ...            images=rng.random((32, 8, 8), dtype=np.float32))
    >>> m = build_model("small_cnn")
    >>> d = disentangle_hooks(m, c, "site", mean=0.5, std=0.3, epochs=1, batch_size=8)
    >>> res = train_model(m, c, epochs=1, batch_size=8, mean=0.5, std=0.3, hooks=d.hooks)
    >>> len(d.history), d.levels["site"]
    (4, ('a', 'b'))
    """
    from medaudit.data import Cohort, resolve_sensitive

    func = "disentangle_hooks"
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    if not isinstance(train, Cohort):
        raise param_error("train", func, "a medaudit.data.Cohort", type(train).__name__)
    names = resolve_sensitive(train.meta.columns, attributes, source="the training data")
    if not names:
        raise param_error("attributes", func, "at least one column", attributes)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise param_error("weight", func, "a float >= 0", weight)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise param_error("alpha", func, "a float > 0", alpha)
    if average is not None and (
        isinstance(average, bool) or not isinstance(average, (int, float)) or not 0 < average < 1
    ):
        raise param_error("average", func, "a float in (0, 1) or None", average)
    for name, v in (("reference", reference), ("pool", pool)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise param_error(name, func, "an int >= 2", v)
    if total_steps is None:
        if epochs is None:
            raise param_error("total_steps", func, "an int (or give epochs)", total_steps)
        n = len(train)
        total_steps = epochs * make_sampler("shuffle", batch_size, n).steps_per_epoch(n)
    levels, codes = {}, {}
    for name in names:
        coded = code_attribute(train.meta, name)
        if np.count_nonzero(coded.counts()) < 2:
            raise InvalidInputError(MSG_SINGLE_LEVEL.format(name=name))
        levels[name] = coded.levels
        codes[name] = torch.as_tensor(coded.codes, dtype=torch.int64)
    images, rows = _reference_pool(model, train, mean, std, image_size, pool, seed)
    zoo = callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))
    tap = None
    if feature_layer is not None or not zoo:
        tap = FeatureTap(model, feature_layer, n_outputs=train.num_classes, detach=False)
        tap.__enter__()
    return Disentangler(
        attributes=tuple(names),
        levels=levels,
        codes=codes,
        labels=torch.tensor(train.labels, dtype=torch.int64),  # a copy: may be read-only
        weight=float(weight),
        total_steps=int(total_steps),
        pool=images,
        pool_rows=rows,
        model=model,
        reference=int(reference),
        alpha=float(alpha),
        tap=tap,
        seed=int(seed),
        average=None if average is None else float(average),
    )


def _reference_pool(
    model: nn.Module,
    train: Any,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    image_size: int | None,
    pool: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``pool`` training images, normalised as the training loop normalises them."""
    channels = next((int(m.in_channels) for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    rng = np.random.default_rng([seed, 12])
    rows = np.sort(rng.permutation(len(train))[: min(pool, len(train))])
    x = torch.from_numpy(train.subset(rows).load_all(image_size=image_size, channels=channels))
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).contiguous(), torch.as_tensor(rows, dtype=torch.int64)


@dataclass(frozen=True)
class DisentangleResult:
    """What :func:`train_disentangled` returns: the training result and the adversaries."""

    result: TrainResult
    disentangler: Disentangler


def train_disentangled(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    attributes: Sequence[str] | str = ("site",),
    weight: float = 0.1,
    reference: int = 96,
    feature_layer: str | None = None,
    alpha: float = 3.0,
    average: float | None = 0.99,
    **train_kwargs: Any,
) -> DisentangleResult:
    """:func:`~medaudit.models.train_model` with adversaries removing ``attributes``.

    Parameters
    ----------
    model : torch.nn.Module
    train, val : Cohort
    attributes : sequence of str or str
    weight : float
        Final gradient-reversal strength.
    reference : int
        Images per reference batch the adversaries are re-fitted on at every step.
    feature_layer : str, optional
    alpha : float, default 3.0
        Ridge penalty of the adversaries' read-out (see :func:`disentangle_hooks`; 10.0
        before 2026-12).
    average : float or None, default 0.99
        The returned model holds the exponential average of the weights over the second
        half of the steps (this decay per step; BatchNorm statistics re-estimated on the
        training images), not the last weights, nor a validation-selected epoch: the
        features and the adversaries keep trading moves, the last weights land anywhere
        in the swing, and the average does not (see the module's notes; Polyak averaging
        as for GANs [1]_). None (the behaviour before 2026-12) keeps the loop's weights.
    **train_kwargs
        Passed to :func:`~medaudit.models.train_model` (``epochs``, ``batch_size``,
        ``seed``, ``mean``, ``std``, ``image_size``, ``max_steps``, ...); ``hooks`` is not
        accepted. ``mean``/``std`` are computed from ``train`` when not given.

    Returns
    -------
    DisentangleResult

    References
    ----------
    .. [1] Yazici Y, Foo CS, Winkler S, Yap KH, Piliouras G, Chandrasekhar V. The unusual
           effectiveness of averaging in GAN training. ICLR 2019.
    """
    from medaudit.models import compute_normalization

    if "hooks" in train_kwargs:
        raise param_error("hooks", "train_disentangled", "not given (it sets its own)", "hooks")
    kw = dict(train_kwargs)
    if kw.get("mean") is None or kw.get("std") is None:
        m, s = compute_normalization(train, image_size=kw.get("image_size"))
        kw["mean"] = m if kw.get("mean") is None else kw["mean"]
        kw["std"] = s if kw.get("std") is None else kw["std"]
    d = disentangle_hooks(
        model,
        train,
        attributes,
        mean=kw["mean"],
        std=kw["std"],
        weight=weight,
        total_steps=kw.get("max_steps"),
        epochs=int(kw.get("epochs", 10)),
        batch_size=int(kw.get("batch_size", 64)),
        image_size=kw.get("image_size"),
        reference=reference,
        feature_layer=feature_layer,
        seed=int(kw.get("seed", 0)),
        alpha=alpha,
        average=average,
    )
    try:
        res = train_model(model, train, val, hooks=d.hooks, **kw)
    finally:
        d.close()
    if d.load_average():
        res.model.eval()
    return DisentangleResult(result=res, disentangler=d)
