"""Colour images only: stain (colour) shift and air bubbles under the cover slip."""

from __future__ import annotations

from typing import Any

import numpy as np

from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = ["bubbles", "stain_shift"]

# Ruifrok & Johnston (2001) stain vectors for haematoxylin, eosin and DAB (rows), as in
# scikit-image's rgb_from_hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def stain_shift(x: Any, sigma: float, rng: ImageRandom) -> Any:
    """Stain variation: each stain's concentration scaled by ``1 + a`` and shifted by ``b``.

    The image is unmixed into haematoxylin, eosin and DAB optical densities (colour
    deconvolution, Ruifrok & Johnston 2001), each scaled by ``1 + a`` and shifted by
    ``b`` with ``a, b`` uniform in ``[-sigma, sigma]`` per image and stain, and mixed back
    (Tellez et al. 2019's HED augmentation). Severity parameter: ``sigma`` = 0.03, 0.06,
    0.1, 0.15, 0.2 (Tellez's "HED-light" is 0.05, "HED-strong" 0.2).
    """
    import torch

    to_hed = torch.as_tensor(_HED_FROM_RGB, dtype=x.dtype, device=x.device)
    to_rgb = torch.as_tensor(_RGB_FROM_HED, dtype=x.dtype, device=x.device)
    od = -torch.log(x.clamp(min=1.0 / 255.0))
    hed = torch.einsum("bchw,cs->bshw", od, to_hed)
    a = rng.uniform(3, low=-1.0, high=1.0).to(x.dtype) * sigma
    b = rng.uniform(3, low=-1.0, high=1.0).to(x.dtype) * sigma
    hed = hed * (1.0 + a[:, :, None, None]) + b[:, :, None, None]
    return torch.exp(-torch.einsum("bshw,sc->bchw", hed, to_rgb))


_MAX_BUBBLES = 25


def bubbles(x: Any, param: tuple[float, int], rng: ImageRandom) -> Any:
    """Air bubbles: translucent white discs with a brighter rim.

    7 to ``count`` bubbles of radius 3/224 to ``radius`` of the image side, blended with
    white at opacity 100/255 inside and 130/255 on a rim 2/224 of the side wide
    (MedMNIST-C's ``bubble`` for pathology, whose sizes are for 224-pixel images).
    Severity parameter: ``(radius, count)`` = (7/224, 15), (10/224, 15), (12/224, 15),
    (15/224, 20), (17/224, 25).
    """
    import torch

    radius, count = float(param[0]), int(param[1])
    _, _, h, w = x.shape
    side = float(min(h, w))
    r_min = 3.0 / 224.0 * side
    u_count = rng.uniform(1)[:, 0].to(x.device)
    centres = rng.uniform(_MAX_BUBBLES, 2).to(x.device)
    u_radius = rng.uniform(_MAX_BUBBLES).to(x.device)
    n = 7 + torch.floor(u_count * (count - 6)).clamp(max=count - 7)
    r = r_min + u_radius * max(radius * side - r_min, 0.0)
    rim = 2.0 / 224.0 * side
    yy = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None]
    xx = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :]
    alpha = torch.zeros((x.shape[0], h, w), dtype=x.dtype, device=x.device)
    for k in range(_MAX_BUBBLES):
        rk = r[:, k, None, None]
        cy = rk + centres[:, k, 0, None, None] * (h - 2 * rk).clamp(min=0)
        cx = rk + centres[:, k, 1, None, None] * (w - 2 * rk).clamp(min=0)
        d = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        a = torch.where(d <= rk, 100 / 255, torch.where(d <= rk + rim, 130 / 255, 0.0))
        alpha = torch.maximum(alpha, a * (k < n)[:, None, None].to(x.dtype))
    alpha = alpha[:, None]
    return x * (1.0 - alpha) + alpha


register_corruption(
    "stain_shift",
    stain_shift,
    (0.03, 0.06, 0.1, 0.15, 0.2),
    family="colour",
    rgb_only=True,
    source="Tellez et al. 2019 (HED augmentation)",
)
register_corruption(
    "bubbles",
    bubbles,
    ((7 / 224, 15), (10 / 224, 15), (12 / 224, 15), (15 / 224, 20), (17 / 224, 25)),
    family="colour",
    rgb_only=True,
    source="MedMNIST-C (Di Salvo et al. 2024)",
)
