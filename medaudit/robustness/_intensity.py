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

    Severity parameter: ``shift`` = 0.1, 0.2, 0.3, 0.4, 0.5 for ``brightness_up``
    (ImageNet-C's brightness, which for a grayscale image adds to the HSV value, i.e. to
    the gray level); the same shifts subtracted for ``brightness_down``.
    """
    return x + shift


def contrast(x: Any, factor: float, rng: ImageRandom) -> Any:
    """Scale every channel's deviation from its mean: ``(x - mean) * factor + mean``.

    Severity parameter: ``factor`` = 0.4, 0.3, 0.2, 0.1, 0.05 for ``contrast_down``
    (ImageNet-C; MedMNIST-C's chest preset uses 0.9-0.4) and 1.1, 1.2, 1.3, 1.4, 1.6 for
    ``contrast_up`` (MedMNIST-C).
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * factor + mean


def gamma(x: Any, exponent: float, rng: ImageRandom) -> Any:
    """Gamma curve ``x ** exponent`` (torchvision's ``adjust_gamma`` with gain 1).

    Severity parameter: ``exponent`` = 1.1, 1.2, 1.3, 1.4, 1.6 for ``gamma_up`` (darker
    mid-tones) and 0.9, 0.8, 0.7, 0.6, 0.4 for ``gamma_down`` (brighter); both MedMNIST-C.
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
