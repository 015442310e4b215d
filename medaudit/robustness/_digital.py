"""Digital: pixelation, JPEG compression and downsample-upsample.

Pixelation reproduces Pillow's BOX-then-NEAREST resize that ImageNet-C uses, as two
small matrix products; JPEG runs the lossy part of baseline JPEG (8 × 8 DCT and the
IJG quality-scaled quantisation tables of ITU-T T.81 Annex K) batched in torch, so no
image is encoded one at a time.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from medaudit.robustness._random import ImageRandom
from medaudit.robustness._registry import register_corruption

__all__ = ["downsample", "jpeg_compression", "jpeg_tables", "pixelate"]

SOURCE_IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance).
_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
_CHROMA = np.full((8, 8), 99)
_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def jpeg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and chrominance quantisation tables at IJG ``quality`` (1-100), baseline.

    Examples
    --------
    >>> luma, chroma = jpeg_tables(50)
    >>> int(luma[0, 0]), int(chroma[7, 7])
    (16, 99)
    >>> int(jpeg_tables(10)[0][0, 0])
    80
    """
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return tuple(
        np.clip((base * scale + 50) // 100, 1, 255).astype(np.float64) for base in (_LUMA, _CHROMA)
    )


@lru_cache(maxsize=1)
def _dct2_matrix() -> np.ndarray:
    """Kronecker product of the orthonormal 8-point DCT-II with itself (64 × 64)."""
    u = np.arange(8)[:, None]
    t = np.arange(8)[None, :]
    d = np.cos((2 * t + 1) * u * np.pi / 16) * np.where(u == 0, math.sqrt(1 / 8), 0.5)
    return np.kron(d, d)


def _jpeg_planes(v: Any, tables: list[np.ndarray]) -> Any:
    """Quantise and reconstruct the 8 × 8 DCT of every plane of ``v``: 0-255 samples out.

    ``v`` holds level-shifted 8-bit samples with sides multiples of 8. Intermediates are
    updated in place, so the image makes a few passes through memory, not one per step.
    """
    import torch

    b, c, h, w = v.shape
    k = torch.as_tensor(_dct2_matrix(), dtype=v.dtype, device=v.device)
    t = torch.as_tensor(np.stack([tb.ravel() for tb in tables]), dtype=v.dtype, device=v.device)
    t = t[None, :, None, :]
    blocks = v.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = blocks.reshape(b, c, -1, 64) @ k.T
    recon = coef.div_(t).round_().mul_(t) @ k
    recon = recon.reshape(b, c, h // 8, w // 8, 8, 8).permute(0, 1, 2, 4, 3, 5)
    return recon.reshape(b, c, h, w).add_(128.0).round_().clamp_(0.0, 255.0)


_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def jpeg_compression(x: Any, quality: int, rng: ImageRandom) -> Any:
    """Baseline JPEG at IJG ``quality``: 8-bit samples, 8 × 8 DCT, quantise, reconstruct.

    Grayscale images are coded as one luminance plane, exactly as a grayscale JPEG (and
    as an RGB JPEG of a gray image, whose chroma is constant). RGB images go through
    JFIF's YCbCr with the chrominance table, without chroma subsampling (encoders
    usually subsample 4:2:0, which loses a little more colour). Edges are padded to
    whole blocks by repeating the last row and column, as libjpeg does. Entropy coding is
    lossless and left out. Severity parameter: ``quality`` = 25, 18, 15, 10, 7
    (ImageNet-C).
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    v = x.float().mul(255.0).round_().clamp_(0.0, 255.0)  # 8-bit samples
    luma, chroma = jpeg_tables(int(quality))
    m = torch.as_tensor(_RGB_TO_YCC, dtype=v.dtype, device=v.device)
    chroma_shift = torch.tensor([0.0, 128.0, 128.0], dtype=v.dtype, device=v.device)
    if c == 3:
        v = torch.einsum("ij,bjhw->bihw", m, v).add_(chroma_shift.view(1, 3, 1, 1))
        tables = [luma, chroma, chroma]
    else:
        tables = [luma] * c
    v.sub_(128.0)  # JPEG's level shift
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        v = F.pad(v, (0, pw, 0, ph), mode="replicate")
    out = _jpeg_planes(v, tables)[..., :h, :w]
    if c == 3:
        shifted = out - chroma_shift.view(1, 3, 1, 1)
        out = torch.round(torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), shifted))
    return out.div_(255.0).to(x.dtype)


@lru_cache(maxsize=64)
def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX downscaling of a length-``n_in`` axis to ``n_out`` as a matrix."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        t = (np.arange(lo, hi) - centre + 0.5) / max(scale, 1.0)
        wts = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        m[j, lo:hi] = wts / wts.sum() if wts.sum() > 0 else 0.0
    return m


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's NEAREST source index for each of ``n_out`` positions."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def pixelate(x: Any, factor: float, rng: ImageRandom) -> Any:
    """Shrink by ``factor`` with a box filter, then enlarge back with nearest neighbours.

    Reproduces Pillow's ``resize(BOX)`` then ``resize(NEAREST)`` that ImageNet-C uses.
    Severity parameter: ``factor`` = 0.6, 0.5, 0.4, 0.3, 0.25 (ImageNet-C; MedMNIST-C's
    chest preset uses 0.3-0.1).
    """
    import torch

    h, w = x.shape[-2:]
    sh, sw = max(int(h * factor), 1), max(int(w * factor), 1)
    ah = torch.as_tensor(_box_matrix(h, sh), dtype=x.dtype, device=x.device)
    # Along the rows, shrink and enlarge are one (w x w) matrix (gathering along the last
    # axis is slow on a CPU); down the columns, whole rows are copied.
    aw = _box_matrix(w, sw)[_nearest_index(sw, w)]
    small = ah @ x @ torch.as_tensor(aw.T, dtype=x.dtype, device=x.device)
    rows = torch.as_tensor(_nearest_index(sh, h), device=x.device)
    return small.index_select(-2, rows)


def downsample(x: Any, factor: float, rng: ImageRandom) -> Any:
    """Acquire at lower resolution: shrink by ``factor`` (antialiased), enlarge back.

    Both steps are bilinear; the shrink is antialiased (a detector with larger pixels).
    Severity parameter: ``factor`` = 0.8, 0.6, 0.5, 0.4, 0.3 (medaudit).
    """
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    size = (max(round(h * factor), 1), max(round(w * factor), 1))
    small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


register_corruption(
    "pixelate", pixelate, (0.6, 0.5, 0.4, 0.3, 0.25), family="digital", source=SOURCE_IMAGENET_C
)
register_corruption(
    "jpeg_compression",
    jpeg_compression,
    (25, 18, 15, 10, 7),
    family="digital",
    source=SOURCE_IMAGENET_C,
)
register_corruption(
    "downsample", downsample, (0.8, 0.6, 0.5, 0.4, 0.3), family="digital", source="medaudit"
)
