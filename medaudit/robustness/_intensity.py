"""Intensity: brightness, contrast and gamma, each both ways.

An exposure or window/level setting that differs from the training data's. Brightness
and lowered contrast follow ImageNet-C; raised contrast and gamma follow MedMNIST-C's
``contrast_up`` and ``gamma_corr_up/down``.
"""

from __future__ import annotations

from typing import Any

from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = ["brightness", "contrast", "gamma"]

SOURCE_IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"
SOURCE_MEDMNIST_C = "MedMNIST-C (Di Salvo et al. 2024)"


def brightness(x: Any, shift: float, rng: ImageRandom) -> Any:
    """Add ``shift`` to every pixel (clipped to [0, 1]).

    ``brightness_up``: shift = 0.1, 0.2, 0.3, 0.4, 0.5 (ImageNet-C's brightness, which
    for a grayscale image adds to the HSV value, i.e. to the gray level).
    ``brightness_down``: the same shifts subtracted.
    """
    return x + shift


def contrast(x: Any, factor: float, rng: ImageRandom) -> Any:
    """Scale every channel's deviation from its mean: ``(x - mean) * factor + mean``.

    ``contrast_down``: factor = 0.4, 0.3, 0.2, 0.1, 0.05 (ImageNet-C; MedMNIST-C's chest
    preset uses 0.9-0.4). ``contrast_up``: factor = 1.1, 1.2, 1.3, 1.4, 1.6 (MedMNIST-C).
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * factor + mean


def gamma(x: Any, exponent: float, rng: ImageRandom) -> Any:
    """Gamma curve ``x ** exponent`` (torchvision's ``adjust_gamma`` with gain 1).

    ``gamma_up``: exponent = 1.1, 1.2, 1.3, 1.4, 1.6 (darker mid-tones);
    ``gamma_down``: exponent = 0.9, 0.8, 0.7, 0.6, 0.4 (brighter); both MedMNIST-C.
    """
    return x.clamp(min=0.0) ** exponent


register_corruption(
    "brightness_up",
    brightness,
    (0.1, 0.2, 0.3, 0.4, 0.5),
    family="intensity",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "brightness_down",
    brightness,
    (-0.1, -0.2, -0.3, -0.4, -0.5),
    family="intensity",
    source=f"{SOURCE_IMAGENET_C}, negated",
)
register_corruption(
    "contrast_down",
    contrast,
    (0.4, 0.3, 0.2, 0.1, 0.05),
    family="intensity",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "contrast_up",
    contrast,
    (1.1, 1.2, 1.3, 1.4, 1.6),
    family="intensity",
    source=SOURCE_MEDMNIST_C,
)
register_corruption(
    "gamma_up", gamma, (1.1, 1.2, 1.3, 1.4, 1.6), family="intensity", source=SOURCE_MEDMNIST_C
)
register_corruption(
    "gamma_down", gamma, (0.9, 0.8, 0.7, 0.6, 0.4), family="intensity", source=SOURCE_MEDMNIST_C
)
