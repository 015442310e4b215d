"""Matching reconstructions to the originals; PSNR and SSIM come from ``medaudit._stats``.

A gradient of a batch does not say in which order its images came, so each
reconstruction is matched to one original by the assignment that maximises the total
SSIM (Hungarian algorithm) before PSNR and SSIM are reported per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from medaudit._stats._image import _pair, psnr, ssim

__all__ = ["MatchedImages", "match_images", "psnr", "ssim"]


@dataclass(frozen=True)
class MatchedImages:
    """Reconstructions paired with the originals they resemble most.

    Attributes
    ----------
    order : ndarray of shape (n,)
        ``order[i]`` is the reconstruction matched to original ``i``.
    ssim, psnr : ndarray of shape (n,)
        Per original image, against its matched reconstruction.
    """

    order: np.ndarray
    ssim: np.ndarray
    psnr: np.ndarray

    @property
    def mean_ssim(self) -> float:
        """Mean SSIM over the originals."""
        return float(np.mean(self.ssim))

    @property
    def mean_psnr(self) -> float:
        """Mean PSNR over the originals (dB)."""
        return float(np.mean(self.psnr))


def match_images(reconstructed: Any, original: Any) -> MatchedImages:
    """Pair each original with one reconstruction, maximising the total SSIM.

    Parameters
    ----------
    reconstructed, original : array-like or torch.Tensor of shape (n, C, H, W)

    Returns
    -------
    MatchedImages

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((2, 1, 16, 16))
    >>> match_images(x[::-1], x).order.tolist()
    [1, 0]
    """
    a, b = _pair(reconstructed, original, "match_images")
    n = a.shape[0]
    # (n_rec, n_orig) SSIM of every pair, computed as one batch.
    table = ssim(np.repeat(a, n, axis=0), np.tile(b, (n, 1, 1, 1))).reshape(n, n)
    rec, orig = linear_sum_assignment(-table)
    order = np.empty(n, dtype=np.int64)
    order[orig] = rec
    return MatchedImages(order=order, ssim=table[order, np.arange(n)], psnr=psnr(a[order], b))
