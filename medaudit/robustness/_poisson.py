"""Exact Poisson draws by table inversion, batched: one uniform per pixel does the work.

torch's Poisson sampler draws element by element (a product of uniforms below rate 10,
rejection above), which made shot noise the slowest corruption on a CPU. Here the rates
are read on a grid of step ``unit`` (shot noise uses one 8-bit gray level's worth of
photons, so an 8-bit image's rates lie on the grid): a rate ``r = j * unit + d`` with
``0 <= d < unit`` is drawn as ``Poisson(j * unit) + Poisson(d)``, two independent terms
(a sum of independent Poisson variables is Poisson):

* ``Poisson(j * unit)`` is the inverse CDF at a uniform ``u``: a guide table (Chen &
  Asau 1974; Devroye 1986, section III.2.4) gives the smallest candidate count for
  ``u``'s bin and a comparison with the tabulated CDF (rarely two) finishes it;
* ``Poisson(d)`` is the inverse CDF at a second uniform, searched from 0. It is only
  drawn where ``d > 0``: a rate within ``1e-4 * unit`` of a grid point is read as that
  grid point.

Both are exact inversions; the approximations are the resolution of the float32 uniforms
(2**-24), the tail beyond the table (probability below 1e-15) and the ``1e-4 * unit``
snap of a rate. A remainder of 1 or more (a rate beyond the table, see :func:`max_rows`,
or a grid step above 1) is drawn by torch's sampler instead. Every step is elementwise
given an image's uniforms, so an image's draws depend only on its own generator, never
on the rest of its batch.

References
----------
Chen, H.-C. & Asau, Y. (1974). On generating random variates from an empirical
distribution. AIIE Transactions 6(2), 163-166.
Devroye, L. (1986). Non-Uniform Random Variate Generation. Springer, chapters III and X.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "GUIDE",
    "LIMIT_ROWS",
    "MAX_ENTRIES",
    "SNAP",
    "max_rows",
    "poisson_from_uniforms",
    "poisson_tables",
]

GUIDE = 1 << 20  # guide-table bins of a table, over all its grid points (4 MB)
LIMIT_ROWS = 4096  # grid points tabulated at most; above, torch's sampler adds the rest
MAX_ENTRIES = 1 << 21  # CDF values in one table at most (8 MB)
SNAP = 1e-4  # a rate this close (in units) to a grid point is read as the grid point


def _n_counts(top: float) -> int:
    return int(top + 12 * math.sqrt(top) + 40)


def max_rows(unit: float) -> int:
    """Grid points a table of step ``unit`` may hold (at most ``MAX_ENTRIES`` CDF values).

    Examples
    --------
    >>> max_rows(12 / 255), max_rows(3.0)
    (4096, 512)
    """
    rows = LIMIT_ROWS
    while rows > 2 and rows * _n_counts((rows - 1) * unit) > MAX_ENTRIES:
        rows //= 2
    return rows


@lru_cache(maxsize=8)
def poisson_tables(unit: float, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CDF and guide tables of ``Poisson(j * unit)`` for ``j = 0 .. rows - 1``.

    Returns
    -------
    cdf : ndarray of float32, shape (rows, n_counts)
        ``cdf[j, k] = P(Poisson(j * unit) <= k)``; the last column is 2 (a sentinel: the
        probability beyond it is below 1e-15).
    guide : ndarray of float32, shape (rows, bins)
        The smallest ``k`` with ``cdf[j, k] > m / bins``, as ``k`` where it is the
        answer for every ``u`` in ``[m / bins, (m + 1) / bins)`` and as ``-1 - k``
        (a lower bound, to be checked against the CDF) where it is not; ``bins`` is
        ``GUIDE / rows`` within 256-4096.

    Examples
    --------
    >>> cdf, guide = poisson_tables(0.5, 4)
    >>> round(float(cdf[2, 0]), 6) == round(math.exp(-1.0), 6)  # P(Poisson(1) = 0)
    True
    >>> guide.shape, int(guide[0, -1]), int(guide[2, 0]), int(guide[2, 1600])  # P(0) = 0.368
    ((4, 4096), 0, 0, 1)
    """
    from scipy.special import gammaln

    lam = np.arange(rows, dtype=np.float64) * unit
    k = np.arange(_n_counts(float(lam[-1])), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # row 0: 0 * log(0), set below
        log_pmf = k[None, :] * np.log(lam[:, None]) - lam[:, None] - gammaln(k + 1)[None, :]
    log_pmf[0] = np.where(k == 0, 0.0, -np.inf)  # Poisson(0) is 0
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf[:, -1] = 2.0
    cdf32 = cdf.astype(np.float32)
    bins = min(max(GUIDE // rows, 256), 4096)  # finer bins: fewer CDF steps inside one
    edges = (np.arange(bins + 1, dtype=np.float64) / bins).astype(np.float32)
    guide = np.stack([np.searchsorted(row, edges[:-1], side="right") for row in cdf32])
    # A bin that no CDF value falls inside has one answer for every u in it: the guide's.
    pure = np.take_along_axis(cdf32, guide, axis=1) >= edges[None, 1:]
    return cdf32, np.where(pure, guide, -1 - guide).astype(np.float32)


def _invert_grid(j: Any, u: Any, unit: float) -> Any:
    """``Poisson(j * unit)`` at the uniforms ``u`` (1-D float tensors; ``j`` whole)."""
    import torch

    rows = int(j.max()) + 1 if j.numel() else 1
    cdf_np, guide_np = poisson_tables(float(unit), 1 << max(rows - 1, 1).bit_length())
    cdf = torch.as_tensor(cdf_np, device=j.device).view(-1)
    guide = torch.as_tensor(guide_np, device=j.device).view(-1)
    # Whole numbers below 2**24 in float32 are exact; int32 indices are the cheapest.
    bins = guide_np.shape[1]
    k = guide.index_select(0, (u * bins).floor_().add_(j, alpha=bins).int())
    idx = (k < 0).nonzero().view(-1)  # bins with a CDF step inside: search from the bound
    at_i = (j[idx] * cdf_np.shape[1]).sub_(k[idx]).sub_(1).int()
    u_i = u[idx]
    pos = torch.arange(len(idx), device=j.device)
    while len(pos):
        pos = pos[cdf.index_select(0, at_i[pos]) <= u_i[pos]]
        at_i[pos] += 1
    k[idx] = at_i.float() - j[idx] * cdf_np.shape[1]
    return k


def _invert_small(d: Any, v: Any) -> Any:
    """``Poisson(d)`` for small ``d`` at the uniforms ``v``: inversion searched from 0."""
    import torch

    d, v = d.double(), v.double()
    p = torch.exp(-d)
    c = p.clone()
    out = torch.zeros_like(d)
    pos = (v >= c).nonzero().view(-1)
    k = 0
    while len(pos):  # P(count >= k) falls like d**k / k!: a few rounds
        k += 1
        out[pos] = k
        p[pos] = p[pos] * d[pos] / k
        c[pos] += p[pos]
        pos = pos[v[pos] >= c[pos]]
    return out.float()


def poisson_from_uniforms(
    rates: Any,
    u: Any,
    second: Callable[[], Any],
    *,
    unit: float = 0.125,
    large: Callable[[Any], Any] | None = None,
) -> Any:
    """Exact ``Poisson(rates)`` draws from uniforms, by inversion.

    Parameters
    ----------
    rates : torch.Tensor
        Non-negative float rates.
    u : torch.Tensor
        Uniforms on [0, 1), same shape (float32).
    second : callable
        Returns a second, independent set of uniforms of the same shape; called only
        when a rate lies off the grid.
    unit : float, default 1/8
        The grid step (see the module's notes).
    large : callable, optional
        ``large(excess)`` draws ``Poisson(excess)`` elementwise (same shape as
        ``rates``) where a rate exceeds the table; torch's sampler when not given.

    Returns
    -------
    torch.Tensor
        The counts, same shape as ``rates``, float32.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> r = torch.full((200_000,), 3.3)
    >>> x = poisson_from_uniforms(r, torch.rand(r.shape, generator=g),
    ...                           lambda: torch.rand(r.shape, generator=g))
    >>> round(float(x.mean()), 1), round(float(x.var()), 1)
    (3.3, 3.3)
    """
    import torch

    shape = rates.shape
    t = rates.float().reshape(-1).clamp(min=0.0).div_(unit)
    j = t.add(SNAP).floor_().clamp_(max=max_rows(float(unit)) - 1)
    frac = t.sub_(j)  # in (-SNAP, 1) below the limit
    counts = _invert_grid(j, u.float().reshape(-1), unit)
    off = (frac > SNAP).nonzero().view(-1)
    if len(off):
        v = second().float().reshape(-1)[off]
        d = frac[off] * unit
        beyond = d >= 1.0
        small = torch.where(beyond, torch.zeros_like(d), d)
        extra = _invert_small(small, v)
        if bool(beyond.any()):
            excess = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
            excess[off[beyond]] = d[beyond]
            drawn = (large or torch.poisson)(excess.view(shape)).reshape(-1)
            extra = torch.where(beyond, drawn[off].float(), extra)
        counts[off] += extra
    return counts.view(shape)
