"""Disentanglement: train the shortcut out with adversaries behind a gradient reversal.

For each attribute (``site``, ``sex``, ...) an adversary head reads the penultimate
features through a gradient-reversal layer and predicts the attribute; the reversed
gradient pushes the feature extractor to make that prediction fail, so the features keep
the disease and lose the attribute (domain-adversarial training, Ganin et al.). The head
is a linear read-out re-fitted in closed form on recent features at every step
(:class:`LeastSquaresAdversary`), so it cannot be fooled by features that merely move
away from a stale adversary (Ravfogel et al.). The reversal strength lambda rises from 0
to ``weight`` along DANN's schedule ``weight * (2 / (1 + exp(-10 p)) - 1)``, ``p`` the
share of training done, so the task is learned before the adversaries bite.

Everything plugs into the one training loop through :class:`~medaudit.models.TrainHooks`:
``extra_losses`` adds the adversaries' loss, ``on_step`` updates the adversaries, and
``want_features`` gives the features of zoo models; any other ``nn.Module`` is read by a
forward hook on its penultimate layer (or ``feature_layer="..."``).

References
----------
.. [1] Ganin Y, Ustinova E, Ajakan H, et al. Domain-adversarial training of neural
       networks. JMLR 17(59):1-35, 2016.
.. [2] Ravfogel S, Twiton M, Goldberg Y, Cotterell R. Linear adversarial concept erasure.
       ICML 2022.
.. [3] Müller C, et al. Disentanglement and assessment of shortcuts in ophthalmological
       retinal imaging exams. arXiv:2308.01163, 2023.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models import Step, TrainHooks, TrainResult, make_sampler, train_model
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


class LeastSquaresAdversary:
    """A linear read-out of one attribute, re-fitted in closed form at every step.

    The adversary keeps the (detached) features of the last ``memory`` training images
    and their attribute, standardises them, and solves ridge regression onto the one-hot
    attribute: the best linear read-out of the attribute from features as they are *now*.
    Its squared error on the current batch, seen through the gradient-reversal layer,
    pushes the feature extractor to leave nothing for it to read. An adversary trained by
    gradient steps lags behind the features it chases, and the features learn to fool
    it without losing the attribute (a probe fitted afterwards still reads it); one that
    always plays its best response cannot be fooled that way.

    Parameters
    ----------
    n_levels : int
    memory : int, default 512
        Recent training images the read-out is fitted on.
    alpha : float, default 1.0
        Ridge penalty.
    """

    def __init__(self, n_levels: int, *, memory: int = 512, alpha: float = 1.0) -> None:
        self.n_levels = int(n_levels)
        self.memory = int(memory)
        self.alpha = float(alpha)
        self._f: torch.Tensor | None = None
        self._t: torch.Tensor | None = None

    def _remember(self, f: torch.Tensor, t: torch.Tensor) -> None:
        f, t = f.detach(), t.detach()
        self._f = f if self._f is None else torch.cat([self._f, f])[-self.memory :]
        self._t = t if self._t is None else torch.cat([self._t, t])[-self.memory :]

    def loss(
        self, f: torch.Tensor, reversed_f: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """Squared error of the best read-out on this batch, and its accuracy.

        ``f`` are this batch's features (remembered, detached), ``reversed_f`` the same
        behind the gradient-reversal layer (what the loss is computed on).
        """
        onehot = nn.functional.one_hot(codes, self.n_levels).to(f.dtype)
        self._remember(f, onehot)
        assert self._f is not None and self._t is not None
        mu, sd = self._f.mean(0), self._f.std(0).clamp_min(1e-6)
        z_mem = (self._f - mu) / sd
        t_mean = self._t.mean(0)
        gram = z_mem.T @ z_mem + self.alpha * torch.eye(z_mem.shape[1], device=f.device)
        w = torch.linalg.solve(gram, z_mem.T @ (self._t - t_mean))
        pred = ((reversed_f - mu) / sd) @ w + t_mean
        loss = ((pred - onehot) ** 2).sum(dim=1).mean()
        acc = (pred.detach().argmax(1) == codes).float().mean()
        return loss, float(acc)


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


@dataclass
class Disentangler:
    """The adversaries of one training run and the hooks that attach them.

    Use :attr:`hooks` as ``train_model(..., hooks=d.hooks)``; call :meth:`close` after
    training when a forward hook reads the features (non-zoo models).

    Attributes
    ----------
    attributes : tuple of str
    levels : dict of str to tuple of str
        Levels of each attribute (the adversary's classes).
    codes : dict of str to Tensor
        Level code of every training row (-1: missing).
    weight : float
        Final reversal strength.
    total_steps : int
        Steps over which lambda rises.
    memory : int
        Recent training images each adversary is fitted on.
    tap : FeatureTap or None
        Reads the features of a model without ``features``/``head``.
    history : list of dict
        Per step: ``step``, ``lambda``, and each attribute's adversary loss and accuracy.
    """

    attributes: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]
    codes: dict[str, torch.Tensor]
    weight: float
    total_steps: int
    memory: int = 512
    tap: FeatureTap | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    adversaries: dict[str, LeastSquaresAdversary] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.adversaries:
            self.adversaries = {
                name: LeastSquaresAdversary(len(self.levels[name]), memory=self.memory)
                for name in self.attributes
            }

    @property
    def hooks(self) -> TrainHooks:
        """The training-loop hooks: one extra loss, one step hook, features wanted."""
        return TrainHooks(
            extra_losses=(self.adversary_loss,),
            on_step=(self.record,),
            want_features=self.tap is None,
        )

    def _features(self, step: Step) -> torch.Tensor:
        if step.features is not None:
            return step.features
        if self.tap is None or self.tap.features is None:
            raise InvalidInputError(
                "Disentanglement needs the penultimate features: use a zoo model, or pass "
                'feature_layer="..." for another nn.Module.'
            )
        return self.tap.features

    def adversary_loss(self, step: Step) -> torch.Tensor:
        """Sum over attributes of each adversary's squared error on reversed features."""
        f = self._features(step)
        f = f.flatten(1) if f.ndim > 2 else f
        lam = dann_lambda(step.step / max(1, self.total_steps), weight=self.weight)
        idx = torch.as_tensor(np.asarray(step.idx), dtype=torch.int64)
        rev = grad_reverse(f, lam)
        total = f.new_zeros(())
        self._last = {"step": float(step.step), "lambda": lam}
        for name in self.attributes:
            known = idx >= 0
            y = torch.full_like(idx, -1)
            y[known] = self.codes[name][idx[known]]
            keep = (y >= 0).to(f.device)
            if int(keep.sum()) < 2:
                continue
            loss, acc = self.adversaries[name].loss(f[keep], rev[keep], y.to(f.device)[keep])
            total = total + loss
            self._last[f"{name}_loss"] = float(loss.detach())
            self._last[f"{name}_accuracy"] = acc
        return total

    def record(self, step: Step) -> None:
        """Keep this step's lambda and adversary losses in :attr:`history`."""
        if self._last:
            self.history.append(dict(self._last))

    def close(self) -> None:
        """Detach the forward hook (if any)."""
        if self.tap is not None:
            self.tap.__exit__(None, None, None)


def disentangle_hooks(
    model: nn.Module,
    train: Any,
    attributes: Sequence[str] | str,
    *,
    weight: float = 1.0,
    total_steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    memory: int = 512,
    feature_layer: str | None = None,
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
    weight : float, default 1.0
        Final strength of the gradient reversal (lambda).
    total_steps : int, optional
        Steps over which lambda rises; default ``epochs`` times the steps per epoch.
    epochs : int, optional
    batch_size : int, default 64
    memory : int, default 512
        Recent training images each adversary is re-fitted on at every step.
    feature_layer : str, optional
        Layer whose output are the features (non-zoo models).

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
    >>> d = disentangle_hooks(build_model("small_cnn"), c, "site", epochs=1, batch_size=8)
    >>> res = train_model(build_model("small_cnn"), c, epochs=1, batch_size=8, hooks=d.hooks)
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
    if total_steps is None:
        if epochs is None:
            raise param_error("total_steps", func, "an int (or give epochs)", total_steps)
        total_steps = epochs * make_sampler("shuffle", batch_size, len(train)).steps_per_epoch(
            len(train)
        )
    levels, codes = {}, {}
    for name in names:
        coded = code_attribute(train.meta, name)
        if np.count_nonzero(coded.counts()) < 2:
            raise InvalidInputError(MSG_SINGLE_LEVEL.format(name=name))
        levels[name] = coded.levels
        codes[name] = torch.as_tensor(coded.codes, dtype=torch.int64)
    zoo = callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))
    tap = None
    if feature_layer is not None or not zoo:
        tap = FeatureTap(model, feature_layer, n_outputs=train.num_classes, detach=False)
        tap.__enter__()
    return Disentangler(
        attributes=tuple(names),
        levels=levels,
        codes=codes,
        weight=float(weight),
        total_steps=int(total_steps),
        memory=int(memory),
        tap=tap,
    )


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
    weight: float = 1.0,
    memory: int = 512,
    feature_layer: str | None = None,
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
    memory : int
        Recent training images each adversary is re-fitted on.
    feature_layer : str, optional
    **train_kwargs
        Passed to :func:`~medaudit.models.train_model` (``epochs``, ``batch_size``,
        ``seed``, ``mean``, ``std``, ``max_steps``, ...); ``hooks`` is not accepted.

    Returns
    -------
    DisentangleResult
    """
    if "hooks" in train_kwargs:
        raise param_error("hooks", "train_disentangled", "not given (it sets its own)", "hooks")
    epochs = int(train_kwargs.get("epochs", 10))
    batch_size = int(train_kwargs.get("batch_size", 64))
    steps = train_kwargs.get("max_steps")
    d = disentangle_hooks(
        model,
        train,
        attributes,
        weight=weight,
        total_steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        memory=memory,
        feature_layer=feature_layer,
    )
    try:
        res = train_model(model, train, val, hooks=d.hooks, **train_kwargs)
    finally:
        d.close()
    return DisentangleResult(result=res, disentangler=d)
