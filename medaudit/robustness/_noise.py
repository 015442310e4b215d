"""Noise: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle.

Severities follow ImageNet-C (Hendrycks & Dietterich 2019); the modality presets use
MedMNIST-C's per-data-set values (Di Salvo et al. 2024). Every channel gets its own
draws, as in both; a grayscale image gets one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]

SOURCE_IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"
# Impulse noise draws hits in blocks of (mean + 6 sd + 16) per image; another block only
# when an image's block ends before the image does (about one image in a billion).
IMPULSE_BLOCK_MARGIN = (6.0, 16)


def gaussian_noise(x: Any, sigma: float, rng: ImageRandom) -> Any:
    """Additive Gaussian noise: ``x + sigma * z``, ``z ~ N(0, 1)`` per pixel.

    Severity parameter: ``sigma`` = 0.08, 0.12, 0.18, 0.26, 0.38 (ImageNet-C); MedMNIST-C
    uses 0.04-0.26 for chest X-rays.
    """
    return rng.normal(*x.shape[1:]).to(x.dtype).mul_(sigma).add_(x)


def shot_noise(x: Any, photons: float, rng: ImageRandom) -> Any:
    """Photon (Poisson) noise: ``Poisson(x * photons) / photons``.

    Severity parameter: ``photons`` = 60, 25, 12, 5, 3 (ImageNet-C; fewer photons, more
    noise). Low-dose acquisitions have fewer photons per pixel. The draws are exact
    inversions of each image's uniforms, tabulated at the rates of the 256 gray levels
    of an 8-bit image (other values take a second uniform for the rest of their rate).
    """
    return rng.poisson(x * photons, unit=photons / 255.0).div_(photons)  # rates clamped at 0


def impulse_noise(x: Any, amount: float, rng: ImageRandom) -> Any:
    """Salt-and-pepper noise: a fraction ``amount`` of pixels set to 0 or 1, half each.

    Severity parameter: ``amount`` = 0.03, 0.06, 0.09, 0.17, 0.27 (ImageNet-C, which
    calls scikit-image's ``random_noise(mode="s&p")``). Dead or hot detector pixels.

    Every pixel (of every channel) is hit independently with probability ``amount``:
    the hits are drawn as a Bernoulli process, by the geometric gaps between them
    (``floor(log(U) / log(1 - amount))``), so an image takes about ``amount`` draws
    per pixel instead of one, plus one coin per hit for salt or pepper.
    """
    import torch

    b = x.shape[0]
    n = int(np.prod(x.shape[1:]))
    out = x.clone()
    if amount <= 0 or n == 0:
        return out
    if amount >= 1:
        return (rng.uniform(*x.shape[1:]) >= 0.5).to(x.dtype)
    mean = amount * n
    sds, extra = IMPULSE_BLOCK_MARGIN
    block = int(mean + sds * math.sqrt(mean * (1 - amount)) + extra)  # rarely too few
    log_keep = math.log1p(-amount)
    pos = torch.full((b, 1), -1, dtype=torch.int64, device=x.device)
    flat, salt = [], []
    rows = torch.arange(b, device=x.device)[:, None] * n
    while True:  # drawn again only when an image's block ends before the image does
        draws = rng.uniform(2, block)  # per hit: its gap, then its coin
        gaps = torch.floor(torch.log1p(-draws[:, 0].double()) / log_keep)
        pos = pos[:, -1:] + torch.cumsum(gaps.long() + 1, dim=1)
        hit = (pos < n).view(-1).nonzero().view(-1)
        flat.append((pos + rows).view(-1).index_select(0, hit))
        salt.append(draws[:, 1].reshape(-1).index_select(0, hit) >= 0.5)
        if bool((pos[:, -1] >= n).all()):
            break
    out.view(-1).index_put_((torch.cat(flat),), torch.cat(salt).to(x.dtype))
    return out


def speckle_noise(x: Any, sigma: float, rng: ImageRandom) -> Any:
    """Multiplicative (speckle) noise: ``x + x * sigma * z``, ``z ~ N(0, 1)``.

    Severity parameter: ``sigma`` = 0.15, 0.2, 0.35, 0.45, 0.6 (ImageNet-C's validation
    set). Coherent imaging (ultrasound, OCT) is dominated by speckle.
    """
    return rng.normal(*x.shape[1:]).to(x.dtype).mul_(sigma).add_(1.0).mul_(x)


register_corruption(
    "gaussian_noise",
    gaussian_noise,
    (0.08, 0.12, 0.18, 0.26, 0.38),
    family="noise",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "shot_noise", shot_noise, (60, 25, 12, 5, 3), family="noise", source=SOURCE_IMAGENET_C
)
register_corruption(
    "impulse_noise",
    impulse_noise,
    (0.03, 0.06, 0.09, 0.17, 0.27),
    family="noise",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "speckle_noise",
    speckle_noise,
    (0.15, 0.2, 0.35, 0.45, 0.6),
    family="noise",
    source=SOURCE_IMAGENET_C,
)
