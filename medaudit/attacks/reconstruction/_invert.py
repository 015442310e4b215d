"""Inverting Gradients: recover a client's images from the gradient it shared.

Geiping et al. (2020): start from random images and move them so that the gradient
they would produce points the same way as the observed one (cosine distance summed over
all parameters), with a total-variation prior, signed Adam steps and a step-wise
decaying learning rate; pixels stay in [0, 1]. The labels are read off the last layer's
gradient first (Zhao et al. 2020, iDLG; counts for a batch as in Geng et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.attacks.reconstruction._gradients import (
    ObservedUpdate,
    _normalise,
    attack_copy,
    batch_gradient,
    trainable_parameters,
)

__all__ = ["InversionSettings", "Reconstruction", "infer_labels", "invert_gradients"]

MSG_NO_LINEAR_HEAD = (
    "Label inference reads the gradient of the model's last linear layer, but the model "
    "has no torch.nn.Linear layer; pass the labels explicitly."
)


@dataclass(frozen=True)
class InversionSettings:
    """How long and how hard the attacker optimises.

    Attributes
    ----------
    steps : int, default 300
        Signed-Adam iterations.
    lr : float, default 0.1
        Initial step size (divided by 10 at 3/8, 5/8 and 7/8 of the steps).
    tv : float, default 1e-2
        Weight of the total-variation prior.
    seed : int, default 0
        Seeds the random starting images.
    restarts : int, default 1
        Independent starts; the attacker keeps the one whose final objective (gradient
        distance plus prior) is lowest, as Geiping et al. do. It needs no knowledge of
        the images, and makes the attack less dependent on a lucky start.
    """

    steps: int = 300
    lr: float = 0.1
    tv: float = 1e-2
    seed: int = 0
    restarts: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise param_error(name, "InversionSettings", "an int >= 1", v)
        if not self.lr > 0:
            raise param_error("lr", "InversionSettings", "a positive float", self.lr)
        if not self.tv >= 0:
            raise param_error("tv", "InversionSettings", "a float >= 0", self.tv)


@dataclass(frozen=True)
class Reconstruction:
    """What :func:`invert_gradients` returns.

    Attributes
    ----------
    images : ndarray of shape (n, C, H, W)
        Reconstructed images in [0, 1] (in no particular order).
    labels : ndarray of shape (n,)
        The labels the attacker inferred (or was given).
    gradient_similarity : float
        Cosine similarity of the reconstructions' gradient and the observed one at the end.
    """

    images: np.ndarray
    labels: np.ndarray
    gradient_similarity: float


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InvalidInputError(MSG_NO_LINEAR_HEAD)
    return linears[-1]


def infer_labels(model: nn.Module, observed: ObservedUpdate) -> np.ndarray:
    """Labels of the client's images from the gradient of the last linear layer.

    With softmax cross-entropy the bias gradient of class ``c`` is
    ``mean_i (p_ic - [y_i = c])``: negative for a batch of one exactly at the true
    label (iDLG). For a batch of ``n`` the counts are estimated as
    ``n * (1/C - g_c)`` (predictions taken as uniform), rounded so that they sum to ``n``.
    Without a bias, the row sums of the weight gradient take its place (their sign is
    that of the bias gradient for non-negative features, as after a ReLU).

    Examples
    --------
    >>> import torch
    >>> from medaudit.attacks.reconstruction import Defence, ObservedUpdate
    >>> head = torch.nn.Linear(3, 2)
    >>> obs = ObservedUpdate((torch.zeros(2, 3), torch.tensor([0.4, -0.4])), 1, Defence("none"))
    >>> infer_labels(head, obs).tolist()
    [1]
    """
    head = _last_linear(model)
    params = trainable_parameters(model)
    index = {id(p): i for i, p in enumerate(params)}
    if head.bias is not None and id(head.bias) in index:
        g = observed.gradients[index[id(head.bias)]].detach().double()
    else:
        g = observed.gradients[index[id(head.weight)]].detach().double().sum(dim=1)
    n, c = observed.n_images, len(g)
    if n == 1:
        return np.array([int(torch.argmin(g))])
    raw = n * (1.0 / c - g.numpy())
    counts = np.floor(np.clip(raw, 0, None)).astype(int)
    while counts.sum() < n:  # hand out the remainder by the largest fractional parts
        counts[int(np.argmax(raw - counts))] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    return np.repeat(np.arange(c), counts)


def _cosine_distance(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    dot = torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()
    na = torch.stack([(x * x).sum() for x in a]).sum().sqrt()
    nb = torch.stack([(y * y).sum() for y in b]).sum().sqrt()
    return 1.0 - dot / (na * nb + 1e-12)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def invert_gradients(
    model: nn.Module,
    observed: ObservedUpdate,
    *,
    image_shape: tuple[int, int, int],
    mean: list[float],
    std: list[float],
    labels: np.ndarray | None = None,
    settings: InversionSettings | None = None,
) -> Reconstruction:
    """Reconstruct the images behind an observed gradient (Inverting Gradients).

    Parameters
    ----------
    model : torch.nn.Module
        The model the client started from (left unchanged).
    observed : ObservedUpdate
        From :func:`observe_update` (or built from a real client's update).
    image_shape : (C, H, W)
    mean, std : list of float
        The model's input normalisation (known to the server that trains it).
    labels : ndarray of shape (n,), optional
        Known labels; inferred from the last layer's gradient when None.
    settings : InversionSettings, optional

    Returns
    -------
    Reconstruction

    References
    ----------
    .. [1] Geiping J, Bauermeister H, Dröge H, Moeller M. Inverting gradients — how easy
           is it to break privacy in federated learning? NeurIPS 2020.
    .. [2] Zhao B, Mopuri KR, Bilen H. iDLG: improved deep leakage from gradients.
           arXiv:2001.02610, 2020.
    .. [3] Geng J, et al. Towards general deep leakage in federated learning.
           arXiv:2110.09074, 2021.
    """
    s = settings or InversionSettings()
    trainable_parameters(model)
    y_np = infer_labels(model, observed) if labels is None else np.asarray(labels)
    if len(y_np) != observed.n_images:
        raise InvalidInputError(
            f"{len(y_np)} labels given for a gradient of {observed.n_images} images."
        )
    net = attack_copy(model)
    y = torch.as_tensor(y_np, dtype=torch.int64)
    gen = torch.Generator().manual_seed(s.seed)
    target = tuple(g.detach() for g in observed.gradients)
    best: tuple[float, torch.Tensor, float] | None = None
    for _ in range(s.restarts):
        start = torch.rand((observed.n_images, *image_shape), generator=gen)
        found = _optimise(net, start, y, target, mean, std, s)
        if best is None or found[0] < best[0]:
            best = found
    assert best is not None
    _, images, similarity = best
    return Reconstruction(
        images=images.numpy().astype(np.float32), labels=y_np, gradient_similarity=similarity
    )


def _optimise(
    net: nn.Module,
    start: torch.Tensor,
    y: torch.Tensor,
    target: tuple[torch.Tensor, ...],
    mean: list[float],
    std: list[float],
    s: InversionSettings,
) -> tuple[float, torch.Tensor, float]:
    """One start of the signed-Adam search: (final objective, images, gradient similarity)."""
    dummy = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([dummy], lr=s.lr)
    marks = [int(s.steps * f) for f in (0.375, 0.625, 0.875)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=marks, gamma=0.1)
    for _ in range(s.steps):
        opt.zero_grad(set_to_none=True)
        dist, loss = _objective(net, dummy, y, target, mean, std, s.tv)
        (grad,) = torch.autograd.grad(loss, [dummy])
        dummy.grad = grad.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            dummy.clamp_(0.0, 1.0)
    dist, loss = _objective(net, dummy, y, target, mean, std, s.tv)  # at the images returned
    return float(loss.detach()), dummy.detach(), 1.0 - float(dist.detach())


def _objective(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: tuple[torch.Tensor, ...],
    mean: list[float],
    std: list[float],
    tv: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    g = batch_gradient(net, _normalise(x, mean, std), y, create_graph=True)
    dist = _cosine_distance(g, target)
    return dist, dist + tv * _total_variation(x)
