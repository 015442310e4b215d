"""Image fidelity of protected images: PSNR and SSIM against the originals.

SSIM follows Wang et al. (2004) with scikit-image's Gaussian-window convention
(``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, window truncated at
3.5 sigma, the border of half a window left out, channels averaged), so the numbers agree
with ``skimage.metrics.structural_similarity``; computed here for whole batches with one
separable convolution.

References
----------
.. [1] Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error
       visibility to structural similarity. IEEE Trans Image Process 13(4):600-612, 2004.
"""

from __future__ import annotations

import numpy as np

from medaudit._errors import InvalidInputError

__all__ = ["psnr", "ssim"]


def _pair(a: np.ndarray, b: np.ndarray, func: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise InvalidInputError(
            f"{func}: both image batches must have the same shape (n, H, W) or (n, C, H, W); "
            f"got {a.shape} and {b.shape}."
        )
    if a.ndim == 3:
        a, b = a[:, None], b[:, None]
    return a, b


def psnr(original: np.ndarray, protected: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each image, in dB (inf for identical images).

    Parameters
    ----------
    original, protected : ndarray of shape (n, H, W) or (n, C, H, W)
    data_range : float, default 1.0
        255 for uint8 values.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> a = np.zeros((1, 4, 4)); b = a.copy(); b[0, 0, 0] = 0.1
    >>> round(float(psnr(a, b)[0]), 4)
    32.0412
    """
    a, b = _pair(original, protected, "psnr")
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(
    original: np.ndarray,
    protected: np.ndarray,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean structural similarity of each image pair (Gaussian window).

    Parameters
    ----------
    original, protected : ndarray of shape (n, H, W) or (n, C, H, W)
        Each side must be at least one window (``2 * int(3.5 * sigma + 0.5) + 1`` pixels).
    data_range : float, default 1.0
    sigma, k1, k2 : float
        Wang et al.'s constants.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((2, 16, 16))
    >>> ssim(a, a).round(6).tolist()
    [1.0, 1.0]
    """
    import torch

    a, b = _pair(original, protected, "ssim")
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape[-2:]) < 2 * radius + 1:
        raise InvalidInputError(
            f"ssim: images must be at least {2 * radius + 1} pixels on each side."
        )
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    n, c, h, w = a.shape
    x = torch.from_numpy(a.reshape(n * c, 1, h, w))
    y = torch.from_numpy(b.reshape(n * c, 1, h, w))
    kv = torch.from_numpy(g).view(1, 1, -1, 1)
    kh = kv.view(1, 1, 1, -1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(z, kv), kh)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=2).mean(dim=1).numpy()
