"""Unlearning methods behind one registry, all trained by the one training loop.

- ``retrain``: a fresh model trained on the retained data — exact, the gold reference;
- ``finetune``: the trained model fine-tuned on the retained data (catastrophic forgetting);
- ``gradient_ascent``: a few steps *up* the cross-entropy of the forget set
  (``TrainHooks.loss``);
- ``random_labels``: training on all data with the forget set's labels replaced by a
  random other class (``TrainHooks.batch``);
- ``scrub``: SCRUB's student-teacher objective in one pass: on retained images follow the
  original model (cross-entropy + KL to it), on forgotten images move away from it
  (negative KL) (``TrainHooks.loss``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models import TrainHooks, build_model, train_model

__all__ = [
    "MSG_UNKNOWN_METHOD",
    "UnlearnSettings",
    "UnlearningMethod",
    "get_method",
    "list_methods",
    "register_method",
]

MSG_UNKNOWN_METHOD = "Unknown unlearning method {name!r}; available: {known}."
MSG_DUPLICATE_METHOD = "An unlearning method named {name!r} is already registered."


@dataclass(frozen=True)
class UnlearnSettings:
    """Budgets of the unlearning methods (and of the retrained reference).

    Attributes
    ----------
    arch : str, default "small_cnn"
        Architecture of a retrained model.
    epochs : int, default 10
        Epochs of retraining from scratch.
    finetune_epochs : int, default 2
        Epochs of ``finetune``, ``random_labels`` and ``scrub``.
    ascent_steps : int, default 10
        Steps of ``gradient_ascent``.
    batch_size : int, default 32
    lr : float, default 1e-3
        AdamW learning rate of retraining and fine-tuning.
    ascent_lr : float, default 1e-4
        Learning rate of gradient ascent (small: ascent diverges).
    scrub_alpha, scrub_gamma : float, default 1.0, 1.0
        Weights of the retained KL term and of the forget-set KL term of SCRUB.
    seed : int, default 0
    """

    arch: str = "small_cnn"
    epochs: int = 10
    finetune_epochs: int = 2
    ascent_steps: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    ascent_lr: float = 1e-4
    scrub_alpha: float = 1.0
    scrub_gamma: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("epochs", "finetune_epochs", "ascent_steps", "batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise param_error(key, "UnlearnSettings", "an int >= 1", v)
        for key in ("lr", "ascent_lr"):
            if not getattr(self, key) > 0:
                raise param_error(key, "UnlearnSettings", "a positive float", getattr(self, key))


@dataclass(frozen=True)
class UnlearningJob:
    """What a method sees: the trained model, the data and which rows to forget."""

    model: nn.Module
    train: Any
    forget_mask: np.ndarray
    settings: UnlearnSettings
    mean: list[float]
    std: list[float]
    image_size: int | None
    in_channels: int
    num_classes: int

    def fit(self, net: nn.Module, cohort: Any, **kwargs: Any) -> nn.Module:
        """The one training loop with this job's normalisation, no validation."""
        s = self.settings
        opts: dict[str, Any] = {
            "epochs": s.finetune_epochs,
            "batch_size": min(s.batch_size, len(cohort)),
            "lr": s.lr,
            "seed": s.seed,
            "patience": None,
            "mean": self.mean,
            "std": self.std,
            "image_size": self.image_size,
            "in_channels": self.in_channels,
        }
        opts.update(kwargs)
        return train_model(net, cohort, None, **opts).model.eval()

    @property
    def retain(self) -> Any:
        """The retained rows."""
        return self.train.subset(~self.forget_mask, name=f"{self.train.name}:retain")

    @property
    def forget(self) -> Any:
        """The rows to forget."""
        return self.train.subset(self.forget_mask, name=f"{self.train.name}:forget")


MethodFn = Callable[[UnlearningJob], nn.Module]


@dataclass(frozen=True)
class UnlearningMethod:
    """One registered method: ``run(job) -> model``.

    Attributes
    ----------
    name : str
    exact : bool
        True for retraining from scratch (the result *is* a model that never saw the
        forget set).
    run : callable
    help : str
    """

    name: str
    exact: bool
    run: MethodFn
    help: str


_REGISTRY: dict[str, UnlearningMethod] = {}


def register_method(method: UnlearningMethod, *, force: bool = False) -> UnlearningMethod:
    """Register ``method`` under its name; a duplicate raises unless ``force``."""
    if method.name in _REGISTRY and not force:
        raise InvalidInputError(MSG_DUPLICATE_METHOD.format(name=method.name))
    _REGISTRY[method.name] = method
    return method


def list_methods() -> list[str]:
    """Names of the registered methods, in registration order.

    Examples
    --------
    >>> list_methods()
    ['retrain', 'finetune', 'gradient_ascent', 'random_labels', 'scrub']
    """
    return list(_REGISTRY)


def get_method(name: str) -> UnlearningMethod:
    """The registered method ``name``."""
    if name not in _REGISTRY:
        raise InvalidInputError(MSG_UNKNOWN_METHOD.format(name=name, known=", ".join(_REGISTRY)))
    return _REGISTRY[name]


def _retrain(job: UnlearningJob) -> nn.Module:
    torch.manual_seed(job.settings.seed)
    net = build_model(job.settings.arch, in_channels=job.in_channels, num_classes=job.num_classes)
    return job.fit(net, job.retain, epochs=job.settings.epochs)


def _finetune(job: UnlearningJob) -> nn.Module:
    return job.fit(copy.deepcopy(job.model), job.retain)


def _gradient_ascent(job: UnlearningJob) -> nn.Module:
    def ascent(step: Any) -> torch.Tensor:
        return -nn.functional.cross_entropy(step.logits, step.y)

    s = job.settings
    forget = job.forget
    steps_per_epoch = max(1, -(-len(forget) // min(s.batch_size, len(forget))))
    return job.fit(
        copy.deepcopy(job.model),
        forget,
        epochs=-(-s.ascent_steps // steps_per_epoch),
        max_steps=s.ascent_steps,
        lr=s.ascent_lr,
        hooks=TrainHooks(loss=ascent),
        # The BatchNorm statistics stay those of the training data, not the forget set's.
        precise_bn=False,
    )


def _random_labels(job: UnlearningJob) -> nn.Module:
    forget = torch.from_numpy(job.forget_mask)
    gen = torch.Generator().manual_seed(job.settings.seed)
    k = job.num_classes

    def relabel(
        x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        f = forget[torch.from_numpy(idx)]
        shift = torch.randint(1, k, (len(y),), generator=gen)
        return x, torch.where(f, (y + shift) % k, y), idx

    return job.fit(copy.deepcopy(job.model), job.train, hooks=TrainHooks(batch=relabel))


def _scrub(job: UnlearningJob) -> nn.Module:
    teacher = copy.deepcopy(job.model).eval()
    forget = torch.from_numpy(job.forget_mask)
    s = job.settings

    def objective(step: Any) -> torch.Tensor:
        with torch.no_grad():
            t = nn.functional.log_softmax(teacher(step.x), dim=1)
        logp = nn.functional.log_softmax(step.logits, dim=1)
        kl = (t.exp() * (t - logp)).sum(dim=1)
        f = forget[torch.from_numpy(step.idx)].to(kl.device)
        ce = nn.functional.cross_entropy(step.logits, step.y, reduction="none")
        per_row = torch.where(f, -s.scrub_gamma * kl, ce + s.scrub_alpha * kl)
        return per_row.mean()

    return job.fit(copy.deepcopy(job.model), job.train, hooks=TrainHooks(loss=objective))


for _m in (
    UnlearningMethod("retrain", True, _retrain, "Retrain from scratch on the retained data."),
    UnlearningMethod("finetune", False, _finetune, "Fine-tune on the retained data."),
    UnlearningMethod("gradient_ascent", False, _gradient_ascent, "Ascend the forget set's loss."),
    UnlearningMethod(
        "random_labels", False, _random_labels, "Train with random labels on the forget set."
    ),
    UnlearningMethod(
        "scrub", False, _scrub, "SCRUB: follow the original on retained data, not on forgotten."
    ),
):
    register_method(_m)
