"""Linear filters on (N, C, H, W) batches, fast on a CPU: border-folded matrices and FFTs.

A separable filter with a border rule is one (H × H) and one (W × W) matrix with the
border folded in, applied as two matrix products; a non-separable kernel symmetric in
both axes (a defocus disk) with mirrored borders is a product in the DCT-I domain (four
matrix products), and any other kernel is applied by FFT on the border-padded image.
All reproduce OpenCV's and SciPy's border rules exactly (``reflect`` = OpenCV's
BORDER_REFLECT_101 / NumPy's ``reflect``; ``nearest`` = replicate), for any kernel size,
even one wider than the image.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "border_index",
    "fft_length",
    "filter2d",
    "gaussian_kernel1d",
    "separable_filter",
    "smoothing_matrix",
]


def border_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every position of a length-``n`` axis padded by ``before``/``after``.

    ``mode="reflect"`` mirrors without repeating the edge (``dcb|abcd|cba``),
    ``"nearest"`` repeats the edge (``aaa|abcd|ddd``); both for any pad width.

    Examples
    --------
    >>> border_index(4, 3, 3, "reflect").tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    >>> border_index(4, 2, 2, "nearest").tolist()
    [0, 0, 0, 1, 2, 3, 3, 3]
    """
    idx = np.arange(-before, n + after)
    if mode == "nearest" or n == 1:
        return np.clip(idx, 0, n - 1)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m >= n, period - m, m)


@lru_cache(maxsize=256)
def _matrix(n: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float64)
    half = len(k) // 2
    src = border_index(n, half, len(k) - 1 - half, mode)
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.repeat(np.arange(n), len(k))
    cols = src[np.arange(n)[:, None] + np.arange(len(k))[None, :]].ravel()
    np.add.at(m, (rows, cols), np.tile(k, n))
    return m


def smoothing_matrix(n: int, kernel: np.ndarray, mode: str, *, like: Any) -> Any:
    """The (n × n) matrix of correlating a length-``n`` axis with ``kernel`` under ``mode``.

    ``like`` is a tensor whose dtype and device the matrix takes.
    """
    import torch

    m = _matrix(int(n), tuple(float(v) for v in np.ravel(kernel)), mode)
    return torch.as_tensor(m, dtype=like.dtype, device=like.device)


def separable_filter(x: Any, kernel_h: np.ndarray, kernel_w: np.ndarray, mode: str) -> Any:
    """Correlate every image with ``kernel_h`` down its columns and ``kernel_w`` along rows."""
    mh = smoothing_matrix(x.shape[-2], kernel_h, mode, like=x)
    mw = smoothing_matrix(x.shape[-1], kernel_w, mode, like=x)
    return mh @ x @ mw.T


def gaussian_kernel1d(sigma: float, radius: int) -> np.ndarray:
    """Normalised Gaussian weights at ``-radius..radius``.

    Examples
    --------
    >>> gaussian_kernel1d(1.0, 1).round(4).tolist()
    [0.2741, 0.4519, 0.2741]
    """
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=64)
def _kernel_spectrum(
    kernel: tuple[tuple[float, ...], ...], h: int, w: int, dtype: str, device: str
) -> Any:
    import torch

    k = torch.tensor(kernel, dtype=getattr(torch, dtype), device=device)
    # Flipped, so that the product of spectra correlates (as OpenCV's filter2D does).
    return torch.fft.rfft2(torch.flip(k, dims=(0, 1)), s=(h, w))


def fft_length(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3 and 5 (fast FFT sizes).

    Examples
    --------
    >>> fft_length(124), fft_length(97), fft_length(64)
    (125, 100, 64)
    """
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _pad(x: Any, ph: int, pw: int, mode: str) -> Any:
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if mode == "nearest" or (ph < h and pw < w):
        # torch's own padding is one pass; gathering along the last axis (index_select)
        # is several times slower on a CPU. Same indices as border_index.
        return F.pad(x, (pw, pw, ph, ph), mode="replicate" if mode == "nearest" else "reflect")
    rows = torch.as_tensor(border_index(h, ph, ph, mode), device=x.device)
    cols = torch.as_tensor(border_index(w, pw, pw, mode), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


@lru_cache(maxsize=16)
def _dct1(n: int) -> tuple[np.ndarray, np.ndarray]:
    """DCT-I of length ``n`` (``C[f, m]``) and its inverse (``A[i, f]``), unnormalised.

    They diagonalise circular filtering of the mirrored (BORDER_REFLECT_101) extension,
    whose period is ``2 (n - 1)``.
    """
    m = np.arange(n)
    cos = np.cos(np.pi * np.outer(m, m) / (n - 1))
    wts = np.where((m == 0) | (m == n - 1), 1.0, 2.0)
    return cos * wts[None, :], cos * wts[None, :] / (2 * (n - 1))


@lru_cache(maxsize=64)
def _dct1_gain(kernel: tuple[tuple[float, ...], ...], h: int, w: int) -> np.ndarray:
    """What a symmetric kernel multiplies each DCT-I coefficient by (its real spectrum)."""
    k = np.asarray(kernel, dtype=np.float64)
    cols = [
        np.cos(2 * np.pi * np.outer(np.arange(n), np.arange(-(s // 2), s // 2 + 1)) / (2 * (n - 1)))
        for n, s in ((h, k.shape[0]), (w, k.shape[1]))
    ]
    gain: np.ndarray = cols[0] @ k @ cols[1].T
    return gain


def _filter2d_dct(x: Any, kernel: np.ndarray) -> Any:
    """Mirrored-border correlation with a kernel symmetric in both axes, by DCT-I.

    The mirrored image is periodic and even, and so is the kernel: filtering is then a
    product with the kernel's real spectrum between a DCT-I and its inverse, i.e. four
    (H x H) / (W x W) matrix products per image, no padding and no complex numbers.
    """
    import torch

    h, w = x.shape[-2:]
    (ch, ah), (cw, aw) = _dct1(int(h)), _dct1(int(w))
    gain = _dct1_gain(tuple(tuple(float(v) for v in r) for r in kernel), int(h), int(w))

    def t(a: np.ndarray) -> Any:
        return torch.as_tensor(a, dtype=x.dtype, device=x.device)

    y = (t(ch) @ x @ t(cw).T).mul_(t(gain))
    return t(ah) @ y @ t(aw).T


def filter2d(x: Any, kernel: np.ndarray, mode: str = "reflect") -> Any:
    """Correlate every channel of every image with the 2-D ``kernel`` (odd sides).

    The result equals OpenCV's ``filter2D`` (``reflect``: BORDER_REFLECT_101) to float
    precision. With ``reflect`` borders and a kernel symmetric in both axes (a defocus
    disk) it is computed by DCT-I (:func:`_filter2d_dct`); otherwise the image is padded
    by the kernel's half-widths under ``mode`` and filtered by FFT.
    """
    import torch

    kh, kw = kernel.shape
    h, w = x.shape[-2:]
    tol = 1e-12 * float(np.abs(kernel).max(initial=0.0))  # rounding in the kernel's making
    symmetric = bool(
        np.allclose(kernel, kernel[::-1], rtol=0, atol=tol)
        and np.allclose(kernel, kernel[:, ::-1], rtol=0, atol=tol)
    )
    if mode == "reflect" and symmetric and min(h, w) > 1:
        return _filter2d_dct(x, kernel)
    xp = _pad(x, kh // 2, kw // 2, mode)
    hh, ww = fft_length(xp.shape[-2]), fft_length(xp.shape[-1])
    dtype = str(x.dtype).replace("torch.", "")
    spec = _kernel_spectrum(
        tuple(tuple(float(v) for v in r) for r in kernel), hh, ww, dtype, str(x.device)
    )
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=(hh, ww)) * spec, s=(hh, ww))
    # Circular correlation: output (i, j) lands at (i + kh - 1, j + kw - 1).
    return y[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]
