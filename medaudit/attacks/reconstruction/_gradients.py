"""What a gradient-inversion attacker observes: one client's gradient or weight update.

A client's update is simulated as the federated apps make it — :func:`medaudit.models.
local_update` (the one training loop) with plain SGD — and turned back into the average
gradient it implies, ``-update / (lr * steps)``, which is exact for one local step.
DP-SGD's defence clips each image's gradient and adds Gaussian noise to their sum, with
the noise multiplier :func:`medaudit.privacy.find_noise_multiplier` calibrates for the
claimed epsilon.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "MSG_NO_GRADIENT_ACCESS",
    "Defence",
    "ObservedUpdate",
    "attack_copy",
    "batch_gradient",
    "dp_defence",
    "observe_update",
    "trainable_parameters",
]

MSG_NO_GRADIENT_ACCESS = (
    "Gradient inversion needs gradient access to the model, but {what} has no trainable "
    "parameters (a frozen TorchScript archive or a predictions-only model); pass the "
    "checkpoint the clients train (.safetensors or a state-dict .pt)."
)
MSG_DP_LOCAL_STEPS = (
    "The DP defence clips and noises one step's gradient; use local_steps=1 with clip "
    "and noise (got local_steps={steps})."
)


@dataclass(frozen=True)
class Defence:
    """How the client's update is made: the defences gradient inversion meets.

    Attributes
    ----------
    name : str
        Row label in the results table.
    batch_size : int, default 1
        Images in the client's batch (all of them in every local step).
    local_steps : int, default 1
        SGD steps before the update is shared.
    clip : float or None
        Per-image gradient norm bound (DP-SGD); None for no clipping.
    noise_multiplier : float, default 0
        Gaussian noise standard deviation on the clipped sum, in units of ``clip``.
    epsilon : float or None
        The privacy budget the noise was calibrated for (shown in the table).
    """

    name: str
    batch_size: int = 1
    local_steps: int = 1
    clip: float | None = None
    noise_multiplier: float = 0.0
    epsilon: float | None = None

    def __post_init__(self) -> None:
        for key in ("batch_size", "local_steps"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise param_error(key, "Defence", "an int >= 1", v)
        if self.clip is not None and not self.clip > 0:
            raise param_error("clip", "Defence", "a positive float or None", self.clip)
        if not self.noise_multiplier >= 0:
            raise param_error("noise_multiplier", "Defence", "a float >= 0", self.noise_multiplier)
        if self.noise_multiplier > 0 and self.clip is None:
            raise param_error("clip", "Defence", "a positive float when noise is added", None)
        if self.clip is not None and self.local_steps != 1:
            raise InvalidInputError(MSG_DP_LOCAL_STEPS.format(steps=self.local_steps))

    def row(self) -> dict[str, Any]:
        """The defence's settings as a table row."""
        return {
            "defence": self.name,
            "batch_size": self.batch_size,
            "local_steps": self.local_steps,
            "clip": np.nan if self.clip is None else self.clip,
            "noise_multiplier": self.noise_multiplier,
            "epsilon": np.nan if self.epsilon is None else self.epsilon,
        }


def dp_defence(
    epsilon: float,
    *,
    dataset_size: int,
    batch_size: int = 1,
    epochs: int = 1,
    delta: float | None = None,
    clip: float = 1.0,
    accountant: str = "prv",
) -> Defence:
    """The DP-SGD defence for a claimed epsilon: the noise its training run would add.

    The client trains ``epochs`` passes over ``dataset_size`` images with Poisson
    batches of expected size ``batch_size``; the noise multiplier is the smallest that
    keeps epsilon at or below the target after all those steps
    (:func:`medaudit.privacy.find_noise_multiplier`).

    Examples
    --------
    >>> d = dp_defence(8.0, dataset_size=1000, batch_size=1)
    >>> d.name, d.clip, 0.3 < d.noise_multiplier < 1.5
    ('DP eps=8', 1.0, True)
    """
    from medaudit.privacy import find_noise_multiplier

    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 2:
        raise param_error("dataset_size", "dp_defence", "an int >= 2", dataset_size)
    delta = 1.0 / dataset_size**1.1 if delta is None else delta
    rate = batch_size / dataset_size
    steps = max(1, math.ceil(epochs * dataset_size / batch_size))
    sigma = find_noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=rate, steps=steps, accountant=accountant
    )
    return Defence(
        name=f"DP eps={epsilon:g}",
        batch_size=batch_size,
        clip=clip,
        noise_multiplier=float(sigma),
        epsilon=float(epsilon),
    )


@dataclass(frozen=True)
class ObservedUpdate:
    """The gradient the attacker recovers from one client's shared update.

    Attributes
    ----------
    gradients : tuple of Tensor
        One per trainable parameter (in ``model.parameters()`` order): the average
        gradient the update implies.
    n_images : int
        Images behind it (what the attacker is told, as in FedAvg's ``num-examples``).
    defence : Defence
    """

    gradients: tuple[torch.Tensor, ...]
    n_images: int
    defence: Defence


def trainable_parameters(model: nn.Module, what: str = "the model") -> list[nn.Parameter]:
    """The parameters a gradient flows into; a clear error when there are none."""
    if not isinstance(model, nn.Module):
        raise param_error("model", "gradient inversion", "a torch.nn.Module", type(model).__name__)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError(MSG_NO_GRADIENT_ACCESS.format(what=what))
    return params


def attack_copy(model: nn.Module) -> nn.Module:
    """An evaluation-mode copy: BatchNorm normalises by its running statistics.

    The clients compute their gradients with the global model's BatchNorm statistics
    (as in Geiping et al.'s experiments, where they are known to the server); with
    per-batch statistics a batch of one loses each channel's mean and scale.
    """
    return copy.deepcopy(model).eval()


class _RunningNorm(nn.Module):
    """Wraps a model so that ``train()`` leaves its normalisation layers in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> _RunningNorm:
        super().train(mode)
        for mod in self.inner.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()
        return self


def batch_gradient(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool = False
) -> tuple[torch.Tensor, ...]:
    """Gradient of the mean cross-entropy of ``net(x)`` with respect to its parameters."""
    logits = net(x)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    loss = nn.functional.cross_entropy(logits, y)
    return torch.autograd.grad(loss, trainable_parameters(net), create_graph=create_graph)


def _normalise(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _dp_gradient(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, d: Defence, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Per-image clipping, summed, Gaussian noise of std ``sigma * clip``, averaged."""
    assert d.clip is not None  # guaranteed by Defence.__post_init__
    total: list[torch.Tensor] | None = None
    for i in range(len(x)):
        g = batch_gradient(net, x[i : i + 1], y[i : i + 1])
        norm = torch.stack([(t * t).sum() for t in g]).sum().sqrt()
        scale = min(1.0, d.clip / (float(norm) + 1e-12))
        clipped = [t * scale for t in g]
        total = clipped if total is None else [a + b for a, b in zip(total, clipped, strict=True)]
    assert total is not None
    noisy = [
        t + d.noise_multiplier * d.clip * torch.randn(t.shape, generator=gen, dtype=t.dtype)
        for t in total
    ]
    return tuple(t / len(x) for t in noisy)


def observe_update(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    defence: Defence,
    mean: list[float],
    std: list[float],
    lr: float = 0.01,
    seed: int = 0,
) -> ObservedUpdate:
    """Simulate one client's update on ``images`` under ``defence``, as the server sees it.

    One undefended step is the batch gradient itself (BatchNorm at its running
    statistics, see :func:`attack_copy`); several local steps go through
    :func:`medaudit.models.local_update` with SGD at ``lr`` (full batch each step) and
    are read back as ``-update / (lr * steps)``; the DP defence clips and noises each
    image's gradient.

    Parameters
    ----------
    model : torch.nn.Module
        The global model the client starts from (left unchanged).
    images : Tensor of shape (B, C, H, W)
        The client's images in [0, 1]; ``B`` must equal ``defence.batch_size``.
    labels : Tensor of shape (B,)
    defence : Defence
    mean, std : list of float
        The model's input normalisation.
    lr : float, default 0.01
    seed : int, default 0
        Seeds the DP noise.

    Returns
    -------
    ObservedUpdate
    """
    trainable_parameters(model)
    if len(images) != defence.batch_size:
        raise InvalidInputError(
            f"The {defence.name!r} defence uses batches of {defence.batch_size} images; "
            f"got {len(images)}."
        )
    net = attack_copy(model)
    x = _normalise(images.float(), mean, std)
    y = labels.long()
    if defence.clip is not None:
        grads = _dp_gradient(net, x, y, defence, torch.Generator().manual_seed(seed))
    elif defence.local_steps == 1:
        grads = tuple(g.detach() for g in batch_gradient(net, x, y))
    else:
        grads = _local_steps_gradient(model, images, labels, defence, mean, std, lr, seed)
    return ObservedUpdate(
        gradients=tuple(g.detach() for g in grads), n_images=len(images), defence=defence
    )


def _local_steps_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    d: Defence,
    mean: list[float],
    std: list[float],
    lr: float,
    seed: int,
) -> tuple[torch.Tensor, ...]:
    from medaudit.data import Cohort
    from medaudit.models import TrainHooks, local_update

    client = Cohort(
        pd.DataFrame({"label": labels.numpy().astype(np.int64)}),
        images=images.numpy().astype(np.float32),
        name="client",
    )
    net = copy.deepcopy(model)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    up = local_update(
        net,
        client,
        steps=d.local_steps,
        batch_size=d.batch_size,
        mean=mean,
        std=std,
        seed=seed,
        precise_bn=False,
        optimizer_factory=lambda params: torch.optim.SGD(params, lr=lr),
        hooks=TrainHooks(wrap=lambda m, opt: (_RunningNorm(m), opt)),
    )
    return tuple(-up.update[n] / (lr * d.local_steps) for n in names)
