"""Blur: defocus, Gaussian, motion and zoom.

Definitions and severities follow ImageNet-C (Hendrycks & Dietterich 2019) as the
``imagecorruptions`` package implements it, including its border rules, so that the same
grayscale image at the same severity gives the same result (see the agreement test).
Spatial parameters are in pixels of the model's input, as in both peers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from medaudit.robustness._filters import (
    fft_length,
    filter2d,
    gaussian_kernel1d,
    separable_filter,
)
from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = ["defocus_blur", "defocus_kernel", "gaussian_blur", "motion_blur", "zoom_blur"]

SOURCE_IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"


@lru_cache(maxsize=32)
def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C's defocus kernel: a normalised disk, anti-aliased by a small Gaussian.

    The disk lives on a 17 × 17 grid up to radius 8 (wider beyond) and is smoothed with a
    3 × 3 (5 × 5 beyond radius 8) Gaussian of ``alias_blur``, mirrored at its border.

    Examples
    --------
    >>> k = defocus_kernel(3, 0.1)
    >>> k.shape, round(float(k.sum()), 6)
    ((17, 17), 1.0)
    """
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1, dtype=np.float64), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1, dtype=np.float64), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    pad = ksize // 2
    padded = np.pad(disk, pad, mode="reflect")  # OpenCV's BORDER_REFLECT_101
    rows = sum(g[i] * padded[i : i + disk.shape[0], :] for i in range(ksize))
    out: np.ndarray = sum(g[j] * rows[:, j : j + disk.shape[1]] for j in range(ksize))
    return out


def defocus_blur(x: Any, param: tuple[float, float], rng: ImageRandom) -> Any:
    """Out-of-focus blur: correlation with an anti-aliased disk, mirrored borders.

    Severity parameter: ``(radius, alias_blur)`` = (3, 0.1), (4, 0.5), (6, 0.5),
    (8, 0.5), (10, 0.5) (ImageNet-C).
    """
    radius, alias = param
    return filter2d(x, defocus_kernel(float(radius), float(alias)), "reflect")


def gaussian_blur(x: Any, sigma: float, rng: ImageRandom) -> Any:
    """Gaussian blur with standard deviation ``sigma`` pixels, truncated at 4 sigma.

    Severity parameter: ``sigma`` = 1, 2, 3, 4, 6 (ImageNet-C's validation set, with
    scikit-image's edge-replicating border). MedMNIST-C's chest preset uses kernel sizes
    3-11, i.e. sigma 0.8-2.0 in torchvision's convention.
    """
    k = gaussian_kernel1d(float(sigma), int(4.0 * float(sigma) + 0.5))
    return separable_filter(x, k, k, "nearest")


def _motion_kernel(radius: int, sigma: float) -> np.ndarray:
    taps = np.arange(2 * radius + 1, dtype=np.float64)
    k = np.exp(-(taps**2) / (2 * sigma**2))
    return k / k.sum()


def motion_blur(x: Any, param: tuple[int, float], rng: ImageRandom) -> Any:
    """Linear motion blur at a random angle in [-45, 45] degrees, one per image.

    The image is averaged with ``2 * radius + 1`` copies of itself shifted along the
    direction of motion (weights a one-sided Gaussian of ``sigma`` taps; edges repeated),
    as in ImageNet-C's ``_motion_blur``. Severity parameter: ``(radius, sigma)`` =
    (10, 3), (15, 5), (15, 8), (15, 12), (20, 15) (ImageNet-C).
    """
    import torch

    radius, sigma = int(param[0]), float(param[1])
    kernel = _motion_kernel(radius, sigma)
    angle = torch.deg2rad(rng.uniform(1, low=-45.0, high=45.0)[:, 0].double()).cpu()
    return motion_blur_at(x, kernel, angle)


def motion_blur_at(x: Any, kernel: np.ndarray, angle_rad: Any) -> Any:
    """Motion blur of image ``b`` along ``angle_rad[b]`` with the tap weights ``kernel``.

    Tap ``i`` shifts the image by ``(-ceil(i sin a - 1/2), -ceil(i cos a - 1/2))`` pixels
    with the edges repeated; a tap whose shift leaves the image ends the kernel there (as
    in the peer). All taps of an image form one sparse 2-D kernel, applied by FFT; its
    spectrum is a sum of one complex exponential per tap, built as one batched matrix
    product (no kernel image is transformed).
    """
    import torch

    b, _, h, w = x.shape
    taps = torch.arange(len(kernel), dtype=torch.float64)
    a = torch.as_tensor(angle_rad, dtype=torch.float64).reshape(-1, 1).cpu()
    dy = -torch.ceil(taps * torch.sin(a) - 0.5).long()  # (b, taps)
    dx = -torch.ceil(taps * torch.cos(a) - 0.5).long()
    inside = (dy.abs() < h) & (dx.abs() < w)
    alive = torch.cumprod(inside.long(), dim=1).bool()  # the peer stops at the first exit
    weights = torch.as_tensor(kernel, dtype=torch.float64)[None, :] * alive
    return shifted_sum(x, torch.where(alive, dy, 0), torch.where(alive, dx, 0), weights)


def _phase_rows(r: int, n: int, m: int, dtype: Any) -> tuple[Any, Any]:
    """Cosines and sines of ``2 pi d f / n``: shifts ``d = -r..r`` (rows), ``f = 0..m-1``."""
    import torch

    d = torch.arange(-r, r + 1)[:, None]
    f = torch.arange(m)[None, :]
    t = (d * f).remainder(n).to(torch.float64) * (2 * math.pi / n)  # whole numbers mod n
    return torch.cos(t).to(dtype), torch.sin(t).to(dtype)


def _tap_spectra(dy: Any, dx: Any, weights: Any, lh: int, lw: int, dtype: Any) -> Any:
    """``sum_t w_t exp(-2 pi i (f dy_t / lh + g dx_t / lw))`` per image: (b, lh, lw//2 + 1).

    Each tap's spectrum is the outer product of a column phase (its row shift) and a
    row phase (its column shift), so all taps together are one batched real matrix
    product of their cosines and sines, looked up per shift.
    """
    import torch

    b, taps = dy.shape
    nx = lw // 2 + 1
    ry, rx = int(dy.abs().max()), int(dx.abs().max())
    cos_y, sin_y = _phase_rows(ry, lh, lh, dtype)
    cos_x, sin_x = _phase_rows(rx, lw, nx, dtype)
    iy, ix = (dy + ry).view(-1), (dx + rx).view(-1)
    w = weights.to(dtype).reshape(-1, 1)
    cy = (cos_y.index_select(0, iy) * w).view(b, taps, lh)
    sy = (sin_y.index_select(0, iy) * w).view(b, taps, lh)
    cx = cos_x.index_select(0, ix).view(b, taps, nx)
    sx = sin_x.index_select(0, ix).view(b, taps, nx)
    left = torch.cat([cy, sy], dim=1).transpose(1, 2)  # (b, lh, 2 taps)
    # columns interleaved (real, imaginary) per frequency, so the product is complex as is
    sx = sx.neg_()
    right = torch.stack([torch.cat([cx, sx], dim=1), torch.cat([sx, cx.neg_()], dim=1)], dim=-1)
    out = left @ right.view(b, 2 * taps, 2 * nx)
    return torch.view_as_complex(out.view(b, lh, nx, 2))


def shifted_sum(x: Any, dy: Any, dx: Any, weights: Any) -> Any:
    """``y_b = sum_t weights[b, t] * x_b[i - dy[b, t], j - dx[b, t]]``, edges repeated.

    By FFT on the edge-padded image: padded on each side by the farthest shift that
    reads from there (a motion blur at angles within 45 degrees of the horizontal reads
    only to its right), to fast FFT lengths; past what is needed, padding only adds
    outputs that are cut off (no kept output wraps around). The taps' spectra come from
    :func:`_tap_spectra`, not from transforming a kernel image.
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    live = weights != 0
    top, bottom = (max(int(torch.where(live, s * dy, 0).max()), 0) for s in (1, -1))
    left, right = (max(int(torch.where(live, s * dx, 0).max()), 0) for s in (1, -1))
    lh, lw = fft_length(h + top + bottom), fft_length(w + left + right)
    zp = F.pad(x, (left, lw - w - left, top, lh - h - top), mode="replicate")
    spec = _tap_spectra(dy, dx, weights, lh, lw, x.dtype).to(device=x.device)
    y = torch.fft.irfft2(torch.fft.rfft2(zp).mul_(spec[:, None]), s=(lh, lw))
    return y[..., top : top + h, left : left + w]


def zoom_blur(x: Any, factors: tuple[float, ...], rng: ImageRandom) -> Any:
    """Zoom (radial) blur: the mean of the image and centre crops zoomed back up.

    Each factor ``z`` takes the central ``ceil(H / z)`` × ``ceil(W / z)`` crop, zooms it
    by ``z`` (bilinear, corners aligned, as SciPy's ``zoom(order=1)``) and keeps the
    top-left ``H`` × ``W``. Severity parameter: the factors ``arange(1, 1.11, 0.01)``,
    ``arange(1, 1.16, 0.01)``, ``arange(1, 1.21, 0.02)``, ``arange(1, 1.26, 0.02)``,
    ``arange(1, 1.31, 0.03)`` (ImageNet-C).
    """
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    out = x.clone()
    for z in factors:
        ch, cw = math.ceil(h / z), math.ceil(w / z)
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = x[..., top : top + ch, left : left + cw]
        size = (int(round(ch * z)), int(round(cw * z)))
        zoomed = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
        out += zoomed[..., :h, :w]
    return out / (len(factors) + 1)


_ZOOM_FACTORS = tuple(
    tuple(float(v) for v in np.arange(1, stop, step))
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
)

register_corruption(
    "defocus_blur",
    defocus_blur,
    ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    family="blur",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "gaussian_blur", gaussian_blur, (1, 2, 3, 4, 6), family="blur", source=SOURCE_IMAGENET_C
)
register_corruption(
    "motion_blur",
    motion_blur,
    ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    family="blur",
    source=SOURCE_IMAGENET_C,
)
register_corruption("zoom_blur", zoom_blur, _ZOOM_FACTORS, family="blur", source=SOURCE_IMAGENET_C)
