"""Image fidelity: PSNR and SSIM of image pairs, for whole batches at once.

One implementation below the audit packages: the watermark's data protection reports the
fidelity of protected images with it, the reconstruction attack the similarity of what it
recovered. SSIM follows Wang et al. (2004) with scikit-image's Gaussian-window convention
(``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, window truncated at
3.5 sigma, the border of half a window left out, channels averaged), so the numbers agree
with ``skimage.metrics.structural_similarity``; computed with one separable convolution.

References
----------
.. [1] Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error
       visibility to structural similarity. IEEE Trans Image Process 13(4):600-612, 2004.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError

__all__ = ["psnr", "ssim"]

MSG_SHAPES = (
    "{func}: both image batches must have the same shape (n, H, W) or (n, C, H, W) (or one "
    "image (H, W)); got {a} and {b}."
)


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(a: Any, b: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as float64 arrays of shape (n, C, H, W)."""
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape or a.ndim not in (2, 3, 4):
        raise InvalidInputError(MSG_SHAPES.format(func=func, a=a.shape, b=b.shape))
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim == 3:
        a, b = a[:, None], b[:, None]
    return a, b


def psnr(a: Any, b: Any, *, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each image pair, in dB (inf for identical images).

    Parameters
    ----------
    a, b : array-like or torch.Tensor of shape (n, H, W), (n, C, H, W) or (H, W)
    data_range : float, default 1.0
        255 for uint8 values.

    Returns
    -------
    ndarray of shape (n,)
        ``10 log10(data_range**2 / MSE)``.

    Examples
    --------
    >>> psnr(np.full((4, 4), 0.5), np.full((4, 4), 0.6)).round(6).tolist()
    [20.0]
    """
    x, y = _pair(a, b, "psnr")
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(
    a: Any,
    b: Any,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean structural similarity of each image pair (Gaussian window).

    Parameters
    ----------
    a, b : array-like or torch.Tensor of shape (n, H, W), (n, C, H, W) or (H, W)
        Each side at least one window (``2 * int(3.5 * sigma + 0.5) + 1`` pixels: 11 for
        the default sigma).
    data_range : float, default 1.0
    sigma, k1, k2 : float
        Wang et al.'s constants.

    Returns
    -------
    ndarray of shape (n,)
        1 for identical images; near 0 for unrelated ones.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((2, 16, 16))
    >>> ssim(x, x).round(6).tolist()
    [1.0, 1.0]
    """
    import torch
    import torch.nn.functional as F

    x, y = _pair(a, b, "ssim")
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise InvalidInputError(
            f"ssim: images must be at least {2 * radius + 1} pixels on each side."
        )
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    n, c, h, w = x.shape
    tx = torch.from_numpy(x.reshape(n * c, 1, h, w))
    ty = torch.from_numpy(y.reshape(n * c, 1, h, w))
    kv = torch.from_numpy(g).view(1, 1, -1, 1)
    kh = kv.view(1, 1, 1, -1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, kv), kh)

    mx, my = blur(tx), blur(ty)
    vx = blur(tx * tx) - mx * mx
    vy = blur(ty * ty) - my * my
    cxy = blur(tx * ty) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=2).mean(dim=1).numpy()
