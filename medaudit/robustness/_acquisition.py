"""Medical acquisition artefacts: bias field, ghosting, streaks, shutters, text.

MRI intensity non-uniformity and motion ghosting, CT metal streaks, X-ray collimation, a
circular field of view (black corners) and burned-in annotations.
Sizes are fractions of the image, so a corruption means the same at any resolution.
Random choices (a field's coefficients, a streak's angle, where text lands) are drawn
once per image and shared by its five severities, which only scale them.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = [
    "bias_field",
    "black_corners",
    "burned_in_text",
    "collimation",
    "ct_streaks",
    "ghosting",
]

SOURCE_TORCHIO = "after TorchIO's artefact transforms (Pérez-García et al. 2021)"
SOURCE_MEDMNIST_C = "MedMNIST-C (Di Salvo et al. 2024)"


@lru_cache(maxsize=16)
def _polynomial_basis(h: int, w: int, order: int = 3) -> np.ndarray:
    """Monomials ``x**i * y**j`` with ``1 <= i + j <= order`` on [-1, 1]², shape (T, h, w)."""
    y = np.linspace(-1.0, 1.0, h)[:, None]
    x = np.linspace(-1.0, 1.0, w)[None, :]
    terms = [
        (x**i) * (y**j)
        for total in range(1, order + 1)
        for i in range(total + 1)
        for j in (total - i,)
    ]
    return np.stack([np.broadcast_to(t, (h, w)) for t in terms]).astype(np.float32)


def bias_field(x: Any, strength: float, rng: ImageRandom) -> Any:
    """MRI intensity non-uniformity: ``x * exp(sum_k c_k * monomial_k(x, y))``.

    The field is a smooth cubic polynomial in the image coordinates whose coefficients
    are uniform in ``[-strength, strength]`` (TorchIO's ``RandomBiasField``, order 3).
    Severity parameter: ``strength`` = 0.1, 0.2, 0.3, 0.4, 0.5 (TorchIO's default range
    is 0.5).
    """
    import torch

    basis = torch.as_tensor(_polynomial_basis(*x.shape[-2:]), dtype=x.dtype, device=x.device)
    coef = rng.uniform(basis.shape[0], low=-1.0, high=1.0).to(x.dtype) * strength
    field = torch.exp(torch.einsum("bt,thw->bhw", coef, basis))
    return x * field[:, None]


def ghosting(x: Any, intensity: float, rng: ImageRandom) -> Any:
    """MRI motion ghosting: every n-th phase-encoding line of k-space attenuated.

    Scaling every ``n``-th line of k-space (along the image's rows) by
    ``1 - intensity`` superimposes ``n - 1`` faint copies of the image shifted by
    ``H / n``, as periodic motion does; the central 2% of k-space is kept, as TorchIO's
    ``RandomGhosting`` does. ``n`` is 2-4, drawn per image. Severity parameter:
    ``intensity`` = 0.2, 0.35, 0.5, 0.7, 0.9.
    """
    import torch

    h = x.shape[-2]
    n = rng.integers(2, 5, 1)[:, 0].to(x.device)
    freq = torch.fft.fftfreq(h, d=1.0 / h, device=x.device).round().abs().long()
    keep = max(1, round(0.02 * h))
    lines = (freq[None, :] % n[:, None] == 0) & (freq[None, :] > keep)
    scale = 1.0 - intensity * lines.to(x.dtype)
    spectrum = torch.fft.fft(x, dim=-2) * scale[:, None, :, None]
    return torch.fft.ifft(spectrum, dim=-2).real.to(x.dtype)


def ct_streaks(x: Any, amplitude: float, rng: ImageRandom) -> Any:
    """CT metal streaks: bright and dark lines through a small dense object.

    Six thin lines (width about 1% of the image) through a point in the central part of
    the image, at random angles, alternately brighter and darker by ``amplitude``, plus
    the saturated object itself. Severity parameter: ``amplitude`` = 0.05, 0.1, 0.15,
    0.2, 0.3.
    """
    import torch

    b, _, h, w = x.shape
    size = float(max(h, w))
    centre = rng.uniform(2, low=0.3, high=0.7).to(x.dtype)
    theta = rng.uniform(6, low=0.0, high=math.pi).to(x.dtype)
    sign = torch.where(rng.uniform(6) < 0.5, -1.0, 1.0).to(x.dtype)
    yy = ((torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h)[None, :, None]
    xx = ((torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w)[None, None, :]
    dy = yy - centre[:, 0, None, None]
    dx = xx - centre[:, 1, None, None]
    width = (0.75 + 0.01 * size) / size
    streaks = torch.zeros((b, h, w), dtype=x.dtype, device=x.device)
    for k in range(theta.shape[1]):
        s, c = torch.sin(theta[:, k, None, None]), torch.cos(theta[:, k, None, None])
        d = dx * s - dy * c
        streaks += sign[:, k, None, None] * torch.exp(-0.5 * (d / width) ** 2)
    metal = (dx**2 + dy**2) <= (0.025 + 1.0 / size) ** 2
    out = x + amplitude * streaks[:, None]
    return torch.where(metal[:, None], torch.ones_like(out), out)


def collimation(x: Any, fraction: float, rng: ImageRandom) -> Any:
    """X-ray collimator shutters: black bands closing in from the four edges.

    Each side closes by ``fraction`` of the image times a per-image factor in
    [0.5, 1.5] (at least one pixel). Severity parameter: ``fraction`` = 0.03, 0.06, 0.1,
    0.15, 0.2.
    """
    import torch

    _, _, h, w = x.shape
    u = rng.uniform(4, low=0.5, high=1.5).to(x.device)
    top, bottom = torch.ceil(fraction * u[:, 0] * h), torch.ceil(fraction * u[:, 1] * h)
    left, right = torch.ceil(fraction * u[:, 2] * w), torch.ceil(fraction * u[:, 3] * w)
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    keep_r = (r >= top[:, None]) & (r < h - bottom[:, None])
    keep_c = (c >= left[:, None]) & (c < w - right[:, None])
    keep = keep_r[:, :, None] & keep_c[:, None, :]
    return x * keep[:, None].to(x.dtype)


def black_corners(x: Any, radius: float, rng: ImageRandom) -> Any:
    """Circular field of view: black beyond ``radius`` half-widths from the centre.

    A round detector or endoscope (MedMNIST-C's ``black_corner``). Severity parameter:
    ``radius`` = 1.35, 1.25, 1.15, 1.05, 0.95 of half the shorter
    side (MedMNIST-C uses 1.10-0.90 for skin images).
    """
    import torch

    h, w = x.shape[-2:]
    yy = torch.arange(h, device=x.device, dtype=x.dtype)[:, None] - (h - 1) / 2
    xx = torch.arange(w, device=x.device, dtype=x.dtype)[None, :] - (w - 1) / 2
    inside = (yy**2 + xx**2) <= (radius * min(h, w) / 2) ** 2
    return x * inside.to(x.dtype)


# A 3 x 5 bitmap font: enough letter shapes for text-like annotations.
_GLYPHS = np.array(
    [
        [[int(ch) for ch in row] for row in g.split()]
        for g in (
            "111 101 111 101 101",  # A
            "110 101 110 101 110",  # B
            "111 100 100 100 111",  # C
            "110 101 101 101 110",  # D
            "111 100 110 100 111",  # E
            "111 100 101 101 111",  # G
            "101 101 111 101 101",  # H
            "100 100 100 100 111",  # L
            "101 111 111 101 101",  # M
            "111 101 101 101 111",  # O
            "111 101 111 100 100",  # P
            "111 100 111 001 111",  # S
            "111 010 010 010 010",  # T
            "101 101 101 101 111",  # U
            "101 101 010 101 101",  # X
            "111 001 111 100 111",  # 2
            "101 101 111 001 001",  # 4
            "111 101 111 101 111",  # 8
        )
    ],
    dtype=bool,
)
_MAX_WORDS, _MAX_LETTERS = 6, 6


def burned_in_text(x: Any, param: tuple[int, float], rng: ImageRandom) -> Any:
    """Burned-in annotations: words of white block letters written into the pixels.

    Severity parameter: ``(words, height)`` = (1, 0.08), (2, 0.09), (3, 0.10),
    (4, 0.11), (6, 0.12), the letter height a fraction of the image height; each word has
    3-6 letters at a random place (after MedMNIST-C's ``characters``, 1-6 words).
    """
    import torch

    n_words, height = int(param[0]), float(param[1])
    b, _, h, w = x.shape
    where = rng.uniform(_MAX_WORDS, 2).cpu().numpy()
    lengths = rng.integers(3, _MAX_LETTERS + 1, _MAX_WORDS).cpu().numpy()
    letters = rng.integers(0, len(_GLYPHS), _MAX_WORDS, _MAX_LETTERS).cpu().numpy()
    px = max(1, round(height * h / 5))
    glyphs = [np.kron(g, np.ones((px, px), dtype=bool)) for g in _GLYPHS]
    mask = np.zeros((b, h, w), dtype=bool)
    for i in range(b):
        for k in range(min(n_words, _MAX_WORDS)):
            word_w = (4 * lengths[i, k] - 1) * px
            top = int(where[i, k, 0] * max(h - 5 * px, 0))
            left = int(where[i, k, 1] * max(w - word_w, 0))
            for j in range(lengths[i, k]):
                g = glyphs[letters[i, k, j]]
                x0 = left + 4 * px * j
                gh, gw = min(g.shape[0], h - top), min(g.shape[1], w - x0)
                if gh > 0 and gw > 0:
                    mask[i, top : top + gh, x0 : x0 + gw] |= g[:gh, :gw]
    m = torch.as_tensor(mask, device=x.device)[:, None]
    return torch.where(m, torch.ones_like(x), x)


register_corruption(
    "bias_field", bias_field, (0.1, 0.2, 0.3, 0.4, 0.5), family="acquisition", source=SOURCE_TORCHIO
)
register_corruption(
    "ghosting", ghosting, (0.2, 0.35, 0.5, 0.7, 0.9), family="acquisition", source=SOURCE_TORCHIO
)
register_corruption(
    "ct_streaks", ct_streaks, (0.05, 0.1, 0.15, 0.2, 0.3), family="acquisition", source="medaudit"
)
register_corruption(
    "collimation",
    collimation,
    (0.03, 0.06, 0.1, 0.15, 0.2),
    family="acquisition",
    source="medaudit",
)
register_corruption(
    "black_corners",
    black_corners,
    (1.35, 1.25, 1.15, 1.05, 0.95),
    family="acquisition",
    source=SOURCE_MEDMNIST_C,
)
register_corruption(
    "burned_in_text",
    burned_in_text,
    ((1, 0.08), (2, 0.09), (3, 0.10), (4, 0.11), (6, 0.12)),
    family="acquisition",
    source=f"{SOURCE_MEDMNIST_C} (characters)",
)
