"""Hooks of the one training loop: how DP, federation, watermarks and disentanglement wrap it.

Nothing in medaudit trains with a loop of its own; each capability plugs into
:func:`medaudit.models.train_model` through a :class:`TrainHooks`:

- ``wrap(model, optimizer) -> (model, optimizer)`` once before the first step — what
  the DP wrapper uses to swap in Opacus's ``GradSampleModule`` and ``DPOptimizer``;
- ``batch(x, y, idx, step) -> (x, y, idx)`` before normalisation — add trigger images
  (watermarks), replace labels (unlearning by random labels);
- ``loss(step) -> tensor`` replaces the mean cross-entropy (gradient ascent, distillation);
- ``extra_losses`` add terms (the adversarial head of disentanglement, FedProx's
  proximal term);
- ``on_step(step)`` after each optimizer step, ``on_empty(step)`` for an empty Poisson
  batch (the DP accountant still counts that step);
- ``max_physical_batch_size`` splits each batch into chunks for the forward/backward
  pass, so memory no longer grows with the (logical) batch size: one optimizer step per
  batch all the same (Opacus's ``BatchMemoryManager``, inside the loop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit._errors import param_error

__all__ = ["Step", "TrainHooks"]


@dataclass
class Step:
    """What the loss and step hooks see at one training step.

    Attributes
    ----------
    model : torch.nn.Module
        The model being trained (the wrapped one when a ``wrap`` hook replaced it).
    x : Tensor of shape (B, C, H, W)
        The normalised input batch, on the training device.
    y : Tensor of shape (B,)
        Class indices.
    idx : ndarray of shape (B,)
        Training-cohort rows of the batch (a ``batch`` hook may add rows with index -1).
    epoch : int
        1-based epoch.
    step : int
        Optimizer steps taken before this one (0-based), counting every epoch.
    logits : Tensor of shape (B, n_classes) or None
        Filled before the loss hooks run.
    features : Tensor of shape (B, d) or None
        Penultimate features, when ``TrainHooks.want_features`` and the model exposes
        ``features``/``head``.
    optimizer : torch.optim.Optimizer or None
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    idx: np.ndarray
    epoch: int
    step: int
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    optimizer: Any = None


BatchHook = Callable[
    [torch.Tensor, torch.Tensor, np.ndarray, int], tuple[torch.Tensor, torch.Tensor, np.ndarray]
]
WrapHook = Callable[[nn.Module, Any], tuple[nn.Module, Any]]
LossHook = Callable[[Step], torch.Tensor]
StepHook = Callable[[Step], Any]


@dataclass(frozen=True)
class TrainHooks:
    """The seams of :func:`~medaudit.models.train_model` (all optional).

    Attributes
    ----------
    wrap : callable, optional
        ``wrap(model, optimizer) -> (model, optimizer)``, called once before training.
    batch : callable, optional
        ``batch(x, y, idx, step) -> (x, y, idx)`` with ``x`` in [0, 1] before
        normalisation (on the CPU).
    loss : callable, optional
        ``loss(step) -> scalar tensor`` replacing the mean cross-entropy.
    extra_losses : sequence of callables
        Each ``f(step) -> scalar tensor`` is added to the loss.
    on_step : sequence of callables
        Called as ``f(step)`` after each optimizer step.
    on_empty : callable, optional
        Called as ``f(step)`` for an empty batch (Poisson sampling), instead of a step.
    want_features : bool, default False
        Run the model as ``head(features(x))`` so that ``Step.features`` is filled
        (zoo models; ignored for a wrapped or feature-less model).
    max_physical_batch_size : int, optional
        Run each batch through the model in chunks of at most this many rows and take
        one optimizer step per batch. A plain optimizer accumulates the chunks'
        gradients, each chunk's loss weighted by its share of the batch; an optimizer
        with Opacus's ``signal_skip_step`` (``DPOptimizer``) clips and sums each chunk's
        per-sample gradients itself and steps (adds noise) after the last chunk, as
        Opacus's ``BatchMemoryManager`` arranges. The ``batch`` and loss hooks run per
        chunk; ``on_step`` once per batch, with the last chunk.
    """

    wrap: WrapHook | None = None
    batch: BatchHook | None = None
    loss: LossHook | None = None
    extra_losses: Sequence[LossHook] = field(default_factory=tuple)
    on_step: Sequence[StepHook] = field(default_factory=tuple)
    on_empty: StepHook | None = None
    want_features: bool = False
    max_physical_batch_size: int | None = None

    def __post_init__(self) -> None:
        m = self.max_physical_batch_size
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise param_error("max_physical_batch_size", "TrainHooks", "an int >= 1 or None", m)
