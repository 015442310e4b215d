"""Bootstrap intervals that hold jointly, and the gaps between groups that follow.

A gap between the best and the worst of several groups picks its two groups from the
data, so the interval of that one difference is too narrow: with 8 groups and no real
difference, a 95% interval of "max - min" excludes 0 about half the time. Intervals
that hold *simultaneously* for every pairwise difference do not have this problem:
whichever pair turns out to be extreme, its interval was already valid. The range
(max - min) then lies between the largest distance from 0 of any pairwise interval and
the largest absolute bound.

The simultaneous intervals are max-t intervals: ``estimate +- c * se`` for every
quantity, ``se`` its bootstrap standard error and ``c`` the ``confidence`` quantile of
the largest standardised deviation ``max_k |T*_k - t_k| / se_k`` over the replicates
(Westfall & Young 1993; Hothorn et al. 2008). Each family comes with the p-value of the
test dual to its intervals: ``p <= 1 - confidence`` exactly when some interval
excludes zero, so an interval and its p-value never disagree.

References
----------
.. [1] Westfall PH, Young SS. Resampling-Based Multiple Testing. Wiley, 1993.
.. [2] Hothorn T, Bretz F, Westfall P. Simultaneous inference in general parametric
       models. Biom J 50(3):346-363, 2008.
.. [3] Romano JP, Wolf M. Exact and approximate stepdown methods for multiple
       hypothesis testing. J Am Stat Assoc 100(469):94-108, 2005.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "GapInterval",
    "SimultaneousIntervals",
    "extreme_interval",
    "percentile_intervals",
    "range_interval",
    "simultaneous_intervals",
]

#: Fewest valid replicates a family needs before an interval is reported.
MIN_REPLICATES = 20


def _alpha(confidence: float, func: str) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    if not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    return 1.0 - float(confidence)


@dataclass(frozen=True)
class SimultaneousIntervals:
    """Joint max-t intervals of ``K`` quantities from ``B`` bootstrap replicates.

    Attributes
    ----------
    low, high : ndarray of shape (n_quantities,)
        Bounds ``estimate -+ critical * se``; NaN when fewer than ``MIN_REPLICATES``
        replicates are finite in every column.
    n_valid : int
        Replicates finite in every column (the others are dropped).
    critical : float
        The critical value ``c`` (NaN when not computed).
    confidence : float
    """

    low: np.ndarray
    high: np.ndarray
    n_valid: int
    critical: float
    confidence: float
    _estimate: np.ndarray
    _se: np.ndarray
    _max_stats: np.ndarray

    def p_value(self, null: float | np.ndarray = 0.0) -> float:
        """P-value of "every quantity equals ``null``", dual to these intervals.

        ``p <= 1 - confidence`` exactly when at least one interval excludes its null
        value. The "+1" counts the observed sample among the replicates, so ``p`` is
        never 0 (its smallest value is ``1 / (n_valid + 1)``).
        """
        b = self.n_valid
        if b == 0 or not self._se.size:
            return math.nan
        null_arr = np.broadcast_to(np.asarray(null, dtype=np.float64), self._se.shape)
        dev = np.abs(self._estimate - null_arr)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(self._se > 0, dev / np.where(self._se > 0, self._se, 1), 0.0)
        t = np.where((self._se == 0) & (dev > 0), np.inf, t)
        t_obs = float(t.max())
        ge = b - int(np.searchsorted(self._max_stats, t_obs, side="left"))
        return (ge + 1) / (b + 1)


def simultaneous_intervals(
    replicates: np.ndarray, estimate: np.ndarray, confidence: float = 0.95
) -> SimultaneousIntervals:
    """Max-t intervals that hold jointly for every column, and their dual test.

    Parameters
    ----------
    replicates : array-like of shape (n_replicates, n_quantities)
        Bootstrap replicates; a row with a non-finite value is dropped.
    estimate : array-like of shape (n_quantities,)
        Point estimates (the centres of the intervals).
    confidence : float
        Joint coverage.

    Returns
    -------
    SimultaneousIntervals

    References
    ----------
    .. [1] Hothorn T, Bretz F, Westfall P. Biom J 50(3):346-363, 2008.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> r = rng.normal(size=(2000, 3))
    >>> one = simultaneous_intervals(r[:, :1], np.zeros(1))
    >>> three = simultaneous_intervals(r, np.zeros(3))
    >>> round(float(one.critical), 1), round(float(three.critical), 1)  # z, then wider
    (2.0, 2.4)
    >>> three.p_value(0.0) > 0.05
    True
    """
    alpha = _alpha(confidence, "simultaneous_intervals")
    x = np.asarray(replicates, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if x.ndim != 2 or est.shape != (x.shape[1],):
        raise InvalidInputError(
            "simultaneous_intervals: replicates must be 2-d (replicates x quantities) with "
            f"one estimate per column; got shapes {x.shape} and {est.shape}."
        )
    k = x.shape[1]
    x = x[np.isfinite(x).all(axis=1)] if x.size else x
    b = x.shape[0]
    nan = np.full(k, np.nan)
    if b < 2 or k == 0:
        return SimultaneousIntervals(
            nan, nan.copy(), b, math.nan, confidence, est, nan, np.zeros(0)
        )
    se = x.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.abs(x - est) / np.where(se > 0, se, 1.0)
    dev[:, se == 0] = 0.0
    max_stats = np.sort(dev.max(axis=1))
    # The j-th largest with j = floor(alpha (B + 1)) makes "some interval excludes the
    # null" coincide with p <= alpha for p = (1 + #{max stat >= observed}) / (B + 1).
    j = int(math.floor(alpha * (b + 1) + 1e-9))
    if b < MIN_REPLICATES or j < 1:
        return SimultaneousIntervals(nan, nan.copy(), b, math.nan, confidence, est, se, max_stats)
    c = float(max_stats[b - j])
    return SimultaneousIntervals(est - c * se, est + c * se, b, c, confidence, est, se, max_stats)


def percentile_intervals(replicates: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """Marginal percentile interval of each column (NaNs ignored column by column).

    The order statistics ``x(t)`` and ``x(n + 1 - t)`` with ``t = ceil(floor(alpha (n +
    1)) / 2)``, so the interval excludes a value exactly when a two-sided percentile test
    at level ``alpha`` rejects it.

    Returns
    -------
    ndarray of shape (n_quantities, 2)

    Examples
    --------
    >>> percentile_intervals(np.arange(1.0, 100.0)[:, None], 0.9).tolist()
    [[5.0, 95.0]]
    """
    alpha = _alpha(confidence, "percentile_intervals")
    x = np.sort(np.asarray(replicates, dtype=np.float64), axis=0)  # NaN sort last
    if x.ndim != 2:
        raise InvalidInputError("percentile_intervals: replicates must be 2-d.")
    n = np.isfinite(x).sum(axis=0)
    kk = np.floor(alpha * (n + 1) + 1e-9).astype(np.int64)
    # Depth t of a single column: the kk-th smallest of min(r, n + 1 - r), r = 1..n.
    t = (kk + 1) // 2
    ok = (n >= MIN_REPLICATES) & (t >= 1)
    cols = np.arange(x.shape[1])
    lo_i = np.clip(t - 1, 0, max(x.shape[0] - 1, 0))
    hi_i = np.clip(n - t, 0, max(x.shape[0] - 1, 0))
    out = np.full((x.shape[1], 2), np.nan)
    if x.shape[0]:
        out[ok, 0] = x[lo_i, cols][ok]
        out[ok, 1] = x[hi_i, cols][ok]
    return out


@dataclass(frozen=True)
class GapInterval:
    """A gap between groups chosen from the data, with an interval that allows for it.

    Attributes
    ----------
    value : float
        The gap on the data.
    ci : tuple of (float, float)
        Simultaneous interval of the gap.
    p_value : float
        P-value of "no gap" dual to ``ci`` (NaN where no such test is defined).
    high, low : int
        Columns of the groups behind the gap (highest, lowest).
    """

    value: float
    ci: tuple[float, float]
    p_value: float
    high: int
    low: int


def _pairs(g: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(g, k=1)
    return i, j


def range_interval(
    points: Sequence[np.ndarray] | np.ndarray,
    replicates: Sequence[np.ndarray] | np.ndarray,
    confidence: float = 0.95,
    *,
    bounds: tuple[float, float] | None = None,
) -> GapInterval:
    """Interval of ``max - min`` over groups, simultaneous over every pair of groups.

    Several families (e.g. TPR and FPR for the equalized-odds difference) may be given;
    the gap is then the largest of their ranges and every pairwise difference of every
    family is covered jointly.

    Parameters
    ----------
    points : ndarray of shape (n_groups,) or a sequence of them
        Point estimates per group (NaN groups are left out).
    replicates : ndarray of shape (n_replicates, n_groups) or a sequence of them
        Bootstrap replicates aligned with ``points``.
    confidence : float
    bounds : (float, float), optional
        Where the quantity itself lies (e.g. ``(0, 1)`` for a rate or an AUROC): the
        interval is then cut to ``[0, hi - lo]``, where every range lies. Cutting an
        interval to the parameter space keeps its coverage; without it a max-t interval
        whose critical value is driven by a near-degenerate group can run past 1.

    Returns
    -------
    GapInterval
        ``value`` is ``max - min`` of the points (of the family with the largest range);
        the interval runs from the largest distance between 0 and a pairwise interval to
        the largest absolute pairwise bound; ``p_value`` tests "all groups are equal".

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reps = rng.normal([0.80, 0.80, 0.80, 0.80], 0.02, size=(1000, 4))
    >>> gap = range_interval(np.array([0.81, 0.80, 0.79, 0.80]), reps)
    >>> round(gap.value, 2), gap.ci[0] == 0.0, gap.p_value > 0.05
    (0.02, True, True)
    """
    pts = [np.asarray(points, np.float64)] if isinstance(points, np.ndarray) else list(points)
    reps = (
        [np.asarray(replicates, np.float64)]
        if isinstance(replicates, np.ndarray)
        else [np.asarray(r, np.float64) for r in replicates]
    )
    cols, diff_pts, fam_of = [], [], []
    best = (-math.inf, 0, 0)
    for f, (p, r) in enumerate(zip(pts, reps, strict=True)):
        ok = np.flatnonzero(np.isfinite(p))
        if len(ok) < 2:
            continue
        hi, lo = ok[int(np.argmax(p[ok]))], ok[int(np.argmin(p[ok]))]
        if p[hi] - p[lo] > best[0]:
            best = (float(p[hi] - p[lo]), int(hi), int(lo))
        i, j = _pairs(len(ok))
        cols.append(r[:, ok[i]] - r[:, ok[j]])
        diff_pts.append(p[ok[i]] - p[ok[j]])
        fam_of.append(np.full(len(i), f))
    if not cols:
        return GapInterval(math.nan, (math.nan, math.nan), math.nan, -1, -1)
    sim = simultaneous_intervals(np.concatenate(cols, axis=1), np.concatenate(diff_pts), confidence)
    lo_b, hi_b = sim.low, sim.high
    dist0 = np.where((lo_b <= 0) & (hi_b >= 0), 0.0, np.minimum(np.abs(lo_b), np.abs(hi_b)))
    far = np.maximum(np.abs(lo_b), np.abs(hi_b))
    fam = np.concatenate(fam_of)
    # Each family's range lies in [max dist0, max far] over its pairs; the largest range
    # of several families in [max of lows, max of highs].
    lows = [dist0[fam == f].max() for f in np.unique(fam)]
    highs = [far[fam == f].max() for f in np.unique(fam)]
    done = math.isfinite(sim.critical)
    ci = (float(max(lows)), float(max(highs))) if done else (math.nan, math.nan)
    if bounds is not None and done:
        span = float(bounds[1] - bounds[0])
        ci = (min(ci[0], span), min(ci[1], span))
    return GapInterval(best[0], ci, sim.p_value(0.0), best[1], best[2])


def extreme_interval(
    points: np.ndarray,
    replicates: np.ndarray,
    confidence: float = 0.95,
    *,
    which: str = "min",
    bounds: tuple[float, float] | None = None,
) -> GapInterval:
    """Interval of the smallest (or largest) group value, simultaneous over the groups.

    If every group's interval holds, the minimum over groups lies between the smallest
    lower bound and the smallest upper bound. Used for the worst group's value and the
    worst group's shortfall from the overall value.

    Parameters
    ----------
    points : ndarray of shape (n_groups,)
    replicates : ndarray of shape (n_replicates, n_groups)
    which : {"min", "max"}
    bounds : (float, float), optional
        Where the quantity lies (e.g. ``(0, 1)`` for a rate): the interval is cut to it.

    Returns
    -------
    GapInterval
        ``high`` and ``low`` both name the extreme group; ``p_value`` is NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> reps = rng.normal([0.7, 0.9], 0.02, size=(1000, 2))
    >>> r = extreme_interval(np.array([0.7, 0.9]), reps)
    >>> r.value, r.low, bool(r.ci[0] < 0.7 < r.ci[1])
    (0.7, 0, True)
    """
    if which not in ("min", "max"):
        raise param_error("which", "extreme_interval", "'min' or 'max'", which)
    p = np.asarray(points, np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return GapInterval(math.nan, (math.nan, math.nan), math.nan, -1, -1)
    pick = np.argmin if which == "min" else np.argmax
    red = np.min if which == "min" else np.max
    g = int(ok[int(pick(p[ok]))])
    sim = simultaneous_intervals(np.asarray(replicates, np.float64)[:, ok], p[ok], confidence)
    ci = (
        (float(red(sim.low)), float(red(sim.high)))
        if math.isfinite(sim.critical)
        else (math.nan, math.nan)
    )
    if bounds is not None and math.isfinite(sim.critical):
        lo_b, hi_b = float(bounds[0]), float(bounds[1])
        ci = (min(max(ci[0], lo_b), hi_b), min(max(ci[1], lo_b), hi_b))
    return GapInterval(float(p[g]), ci, math.nan, g, g)
