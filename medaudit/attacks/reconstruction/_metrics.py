"""Image similarity of reconstructions: PSNR, SSIM, and matching to the originals.

A gradient of a batch does not say in which order its images came, so each
reconstruction is matched to one original by the assignment that maximises the total
SSIM (Hungarian algorithm) before PSNR and SSIM are reported per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from medaudit._errors import InvalidInputError

__all__ = ["MatchedImages", "match_images", "psnr", "ssim"]

MSG_SHAPES = "Images to compare must have the same shape (n, C, H, W); got {a} and {b}."

# Wang et al. (2004): an 11 x 11 Gaussian window of standard deviation 1.5, K1 = 0.01,
# K2 = 0.03, for images on a [0, 1] scale.
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _as_batch(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach().to("cpu", torch.float64)
    else:
        t = torch.as_tensor(np.array(a, dtype=np.float64))
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None]
    return t


def _pair(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
    ta, tb = _as_batch(a), _as_batch(b)
    if ta.shape != tb.shape or ta.ndim != 4:
        raise InvalidInputError(MSG_SHAPES.format(a=tuple(ta.shape), b=tuple(tb.shape)))
    return ta, tb


def psnr(
    reconstructed: np.ndarray | torch.Tensor, original: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Peak signal-to-noise ratio per image, for images scaled to [0, 1].

    Parameters
    ----------
    reconstructed, original : array-like of shape (n, C, H, W), (n, H, W) or (H, W)

    Returns
    -------
    ndarray of shape (n,)
        ``10 log10(1 / MSE)`` in dB (inf for identical images).

    Examples
    --------
    >>> psnr(np.full((4, 4), 0.5), np.full((4, 4), 0.6)).round(6).tolist()
    [20.0]
    """
    a, b = _pair(reconstructed, original)
    mse = ((a - b) ** 2).flatten(1).mean(1).numpy()
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def _window(channels: int) -> torch.Tensor:
    r = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    k = torch.exp(-(r**2) / (2 * _SIGMA**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :]).expand(channels, 1, _WINDOW, _WINDOW).contiguous()


def ssim(
    reconstructed: np.ndarray | torch.Tensor, original: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004), for images scaled to [0, 1].

    Gaussian-weighted local statistics (11 x 11 window, sigma 1.5, population
    covariances, data range 1), averaged over the valid positions and the channels —
    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` up to its border handling.

    Parameters
    ----------
    reconstructed, original : array-like of shape (n, C, H, W), (n, H, W) or (H, W)
        At least 11 x 11 pixels.

    Returns
    -------
    ndarray of shape (n,)
        1 for identical images; near 0 for unrelated ones.

    References
    ----------
    .. [1] Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from
           error visibility to structural similarity. IEEE TIP 13(4), 2004.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> float(ssim(x, x)[0])
    1.0
    """
    a, b = _pair(reconstructed, original)
    if min(a.shape[-2:]) < _WINDOW:
        raise InvalidInputError(f"SSIM needs images of at least {_WINDOW} x {_WINDOW} pixels.")
    w = _window(a.shape[1])

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = _K1**2, _K2**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.flatten(1).mean(1).numpy()


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


def match_images(
    reconstructed: np.ndarray | torch.Tensor, original: np.ndarray | torch.Tensor
) -> MatchedImages:
    """Pair each original with one reconstruction, maximising the total SSIM.

    Parameters
    ----------
    reconstructed, original : array-like of shape (n, C, H, W)

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
    a, b = _pair(reconstructed, original)
    n = a.shape[0]
    # (n_rec, n_orig) SSIM of every pair, computed as one batch.
    rep_a = a.repeat_interleave(n, dim=0)
    rep_b = b.repeat(n, 1, 1, 1)
    table = ssim(rep_a, rep_b).reshape(n, n)
    rec, orig = linear_sum_assignment(-table)
    order = np.empty(n, dtype=np.int64)
    order[orig] = rec
    return MatchedImages(
        order=order,
        ssim=table[order, np.arange(n)],
        psnr=psnr(a[torch.as_tensor(order)], b),
    )
