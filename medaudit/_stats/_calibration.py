"""A debiased calibration error with a valid interval, and a test of calibration.

The usual binned ECE, ``sum_b |mean(p - y in bin b)| n_b / n``, is biased upwards: for
a perfectly calibrated model each bin's mean residual is noise around 0 and its absolute
value is positive, so the ECE of a calibrated model is about 0.03 with 1,000 images and
0.1 with 100, and a bootstrap percentile interval of it almost never contains the true 0.
No estimator of the absolute values is unbiased near 0, which is why Kumar et al.
(2019) debias the squared (root-mean-square) calibration error instead:

``CE^2 = sum_b w_b (E[p - y | bin b])^2``, estimated without bias by
``sum_b (c_b^2 - var(c_b)) / w_b`` with ``c_b = sum over bin b of (p - y) / n`` (the
bin's share of the mean residual) and ``w_b = n_b / n``. The variance of ``c_b`` is
robust to patients contributing several images. medaudit's ECE is
``sqrt(max(CE^2, 0))``: in probability units like the ECE, equal to it when every bin
is off by the same amount and larger when the error is concentrated.

Its interval is the basic bootstrap interval of ``CE^2`` (the plug-in ``sum c_b^2 /
w_b`` is the bootstrap world's truth, which the debiased estimator estimates without
bias in both worlds), clipped at 0 and square-rooted: a calibrated model gets an
interval from 0, a miscalibrated one its nominal coverage. The test dual to that
interval has the null "calibrated" (CE = 0); Spiegelhalter's z, the classical test of
the same null, is reported beside it.

References
----------
.. [1] Kumar A, Liang P, Ma T. Verified uncertainty calibration. NeurIPS 2019.
.. [2] Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural networks.
       ICML 2017.
.. [3] Spiegelhalter DJ. Probabilistic prediction in patient management and clinical
       trials. Stat Med 5(5):421-433, 1986.
.. [4] Davison AC, Hinkley DV. Bootstrap Methods and their Application. Cambridge
       University Press, 1997 (the basic bootstrap interval, eq. 5.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "CalibrationTerms",
    "CalibrationTest",
    "calibration_error",
    "calibration_error_interval",
    "calibration_p_values",
    "calibration_terms",
    "ece_from_contributions",
    "ece_pseudo_replicates",
    "squared_ece_from_contributions",
    "spiegelhalter_test",
]


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.arange(1, n_bins) / n_bins
    return np.searchsorted(edges, p, side="right")


def _codes(a: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(a), return_inverse=True)[1].ravel().astype(np.int64)


@dataclass(frozen=True)
class CalibrationTerms:
    """Per group and calibration bin: the ECE contribution and its variance.

    Attributes
    ----------
    contribution : ndarray of shape (n_groups, n_bins)
        ``c_b = sum over bin b of (p - y) / n_group``; Guo's binned ECE is
        ``abs(c).sum(axis=1)``.
    share : ndarray of shape (n_groups, n_bins)
        ``w_b = n_b / n_group``.
    variance : ndarray of shape (n_groups, n_bins)
        Cluster-robust variance of ``contribution``.
    jackknife_sd : ndarray of shape (n_groups,)
        Delete-one-patient jackknife standard error of the debiased squared error
        (the bootstrap's is some 8% too small at 300 images; the jackknife's errs on
        the large side, Efron & Stein 1981).
    z, p_value : ndarray of shape (n_groups,)
        Spiegelhalter's z and its two-sided p-value (NaN for an empty group).
    """

    contribution: np.ndarray
    share: np.ndarray
    variance: np.ndarray
    jackknife_sd: np.ndarray
    z: np.ndarray
    p_value: np.ndarray

    @property
    def plugin_squared(self) -> np.ndarray:
        """The plug-in squared calibration error ``sum_b c_b^2 / w_b`` of each group."""
        return squared_ece_from_contributions(self.contribution, self.share, 0.0)

    @property
    def debiased_squared(self) -> np.ndarray:
        """The debiased squared calibration error (may be negative) of each group."""
        return squared_ece_from_contributions(self.contribution, self.share, self.variance)

    @property
    def debiased(self) -> np.ndarray:
        """The debiased ECE ``sqrt(max(CE^2, 0))`` of each group."""
        return np.sqrt(np.maximum(self.debiased_squared, 0.0))


def calibration_terms(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    n_bins: int = 10,
    groups: np.ndarray | None = None,
    n_groups: int | None = None,
    clusters: np.ndarray | None = None,
) -> CalibrationTerms:
    """ECE contributions, their variances and Spiegelhalter's test, per group, in O(n log n).

    Parameters
    ----------
    y_true, y_prob : ndarray of shape (n_samples,)
    n_bins : int
    groups : ndarray of shape (n_samples,), int in [0, n_groups), optional
    n_groups : int, optional
    clusters : ndarray of shape (n_samples,), optional
        Patient of each image; the variances then allow for images of one patient
        being alike. A patient in two groups counts as two clusters.

    Returns
    -------
    CalibrationTerms
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    n = len(y)
    g = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    n_g = int(n_groups if n_groups is not None else (g.max() + 1 if n else 1))
    b = _bins(p, n_bins)
    r = p - y  # residual whose bin means make the ECE
    size = np.bincount(g, minlength=n_g).astype(np.float64)
    cell = g * n_bins + b
    s1 = np.bincount(cell, weights=r, minlength=n_g * n_bins).reshape(n_g, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = s1 / size[:, None]
    # c_b is the ratio sum_u S_ub / sum_u n_u over clusters u; its linearised variance is
    # U / (U - 1) * sum_u (S_ub - c_b n_u)^2 / N^2.
    if clusters is None:  # every image its own patient: one (patient, bin) cell each
        n_u = np.ones(n)
        unit_group = g
        pairs = _Pairs(unit=np.arange(n), cell=cell, s=r, n=n_u)
    else:
        uid = _codes(np.stack([g, _codes(np.asarray(clusters))]).T @ np.array([1, n + 1]))
        n_u = np.bincount(uid).astype(np.float64)
        unit_group = np.zeros(len(n_u), np.int64)
        unit_group[uid] = g
        ub, inv = np.unique(uid * n_bins + b, return_inverse=True)
        pairs = _Pairs(
            unit=ub // n_bins,
            cell=unit_group[ub // n_bins] * n_bins + ub % n_bins,
            s=np.bincount(inv.ravel(), weights=r),
            n=np.bincount(inv.ravel()).astype(np.float64),
        )
    s2 = np.bincount(pairs.cell, weights=pairs.s**2, minlength=n_g * n_bins).reshape(n_g, n_bins)
    sn = np.bincount(pairs.cell, weights=pairs.s * n_u[pairs.unit], minlength=n_g * n_bins).reshape(
        n_g, n_bins
    )
    nn = np.bincount(unit_group, weights=n_u**2, minlength=n_g).astype(np.float64)[:, None]
    units = np.bincount(unit_group, minlength=n_g).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss = s2 - 2 * c * sn + c * c * nn
        var = np.maximum(ss, 0.0) * (units / np.maximum(units - 1, 1))[:, None] / size[:, None] ** 2
    var = np.where(np.isfinite(var), var, 0.0)
    cnt = np.bincount(cell, minlength=n_g * n_bins).reshape(n_g, n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = cnt / size[:, None]
    jack = _jackknife_sd(pairs, s1, cnt, var, size, n_u, unit_group, n_bins)
    z, pv = _spiegelhalter(y, p, g, n_g, clusters)
    ok = size[:, None] > 0
    return CalibrationTerms(np.where(ok, c, np.nan), np.where(ok, share, np.nan), var, jack, z, pv)


@dataclass(frozen=True)
class _Pairs:
    """The (patient, bin) cells that hold images: residual sum and image count."""

    unit: np.ndarray
    cell: np.ndarray  # group * n_bins + bin
    s: np.ndarray
    n: np.ndarray


def _jackknife_sd(
    pairs: _Pairs,
    s1: np.ndarray,
    cnt: np.ndarray,
    var: np.ndarray,
    size: np.ndarray,
    n_u: np.ndarray,
    unit_group: np.ndarray,
    n_bins: int,
) -> np.ndarray:
    """Delete-one-patient jackknife SE of ``sum_b (c_b^2 - v_b) / w_b``, in O(n).

    With ``N`` images, bin sums ``S_b`` and counts ``n_b``, a bin's term is
    ``S_b^2 / (N n_b) - v_b N / n_b``. Removing patient ``u`` (``n_u`` images) changes
    ``N`` for every bin and ``S_b, n_b`` for the bins it has images in only.
    """
    n_g = len(size)
    with np.errstate(invalid="ignore", divide="ignore"):
        a_b = np.where(cnt > 0, s1**2 / cnt, 0.0)
        v_b = np.where(cnt > 0, var / cnt, 0.0)
    a_g, vn_g = a_b.sum(axis=1), v_b.sum(axis=1)
    if len(n_u) == len(pairs.s) and len(unit_group) == len(pairs.s) and np.all(pairs.n == 1):
        return _jackknife_sd_images(pairs, s1, cnt, var, size, a_b, v_b, a_g, vn_g)
    g_u = unit_group
    big_n = size[g_u] - n_u  # N without the patient
    flat_a, flat_v = a_b.ravel()[pairs.cell], v_b.ravel()[pairs.cell]
    s_left = s1.ravel()[pairs.cell] - pairs.s
    n_left = cnt.ravel()[pairs.cell] - pairs.n
    nl = big_n[pairs.unit]
    with np.errstate(invalid="ignore", divide="ignore"):
        touched_new = np.where(
            n_left > 0,
            s_left**2 / (nl * n_left) - var.ravel()[pairs.cell] * nl / n_left,
            0.0,
        )
    n_units = len(n_u)
    minus_a = np.bincount(pairs.unit, weights=flat_a, minlength=n_units)
    minus_v = np.bincount(pairs.unit, weights=flat_v, minlength=n_units)
    new = np.bincount(pairs.unit, weights=touched_new, minlength=n_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (a_g[g_u] - minus_a) / big_n - big_n * (vn_g[g_u] - minus_v) + new
    t = np.where(big_n > 0, t, np.nan)
    ok = np.isfinite(t)
    k = np.bincount(g_u[ok], minlength=n_g).astype(np.float64)
    mean = np.bincount(g_u[ok], weights=t[ok], minlength=n_g) / np.maximum(k, 1)
    dev = np.bincount(g_u[ok], weights=(t[ok] - mean[g_u[ok]]) ** 2, minlength=n_g)
    out: np.ndarray = np.where(k > 1, np.sqrt((k - 1) / np.maximum(k, 1) * dev), np.nan)
    del n_bins
    return out


def _jackknife_sd_images(
    pairs: _Pairs,
    s1: np.ndarray,
    cnt: np.ndarray,
    var: np.ndarray,
    size: np.ndarray,
    a_b: np.ndarray,
    v_b: np.ndarray,
    a_g: np.ndarray,
    vn_g: np.ndarray,
) -> np.ndarray:
    """:func:`_jackknife_sd` when every image is its own patient, from per-cell moments.

    Leaving out image ``i`` of bin ``b`` gives ``C_b + D_b (S_b - r_i)^2``, so the
    jackknife variance needs only the sums of ``(S_b - r_i)^2`` and its square per cell.
    """
    n_g, n_b = s1.shape
    big = size[:, None] - 1.0  # N - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        left = cnt - 1.0
        d = np.where(left > 0, 1.0 / (big * left), 0.0)
        c = (
            (a_g[:, None] - a_b) / big
            - big * (vn_g[:, None] - v_b)
            - np.where(left > 0, var * big / left, 0.0)
        )
    e = (s1.ravel()[pairs.cell] - pairs.s) ** 2
    m1 = np.bincount(pairs.cell, weights=e, minlength=n_g * n_b).reshape(n_g, n_b)
    m2 = np.bincount(pairs.cell, weights=e * e, minlength=n_g * n_b).reshape(n_g, n_b)
    c = np.where(cnt > 0, c, 0.0)
    # sum_i t_i and sum_i t_i^2 per group, t_i = c + d e_i over the images of each cell.
    s_t = (cnt * c + d * m1).sum(axis=1)
    s_t2 = (cnt * c * c + 2 * c * d * m1 + d * d * m2).sum(axis=1)
    k = size
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.maximum(s_t2 - s_t**2 / k, 0.0)
        out: np.ndarray = np.where(k > 2, np.sqrt((k - 1) / k * dev), np.nan)
    return out


def squared_ece_from_contributions(
    contribution: np.ndarray, share: np.ndarray, variance: np.ndarray | float
) -> np.ndarray:
    """``sum_b (c_b^2 - var_b) / w_b`` over the last axis (empty bins count 0), vectorised.

    Parameters
    ----------
    contribution, share : ndarray of shape (..., n_bins)
    variance : ndarray broadcastable to ``contribution``, or 0 for the plug-in
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = (contribution**2 - variance) / share
    out: np.ndarray = np.where(share > 0, terms, 0.0).sum(axis=-1)
    return out


def ece_from_contributions(
    contribution: np.ndarray, share: np.ndarray, variance: np.ndarray | float
) -> np.ndarray:
    """Debiased ECE ``sqrt(max(sum_b (c_b^2 - var_b) / w_b, 0))`` over the last axis."""
    return np.sqrt(np.maximum(squared_ece_from_contributions(contribution, share, variance), 0))


def ece_pseudo_replicates(
    contribution_reps: np.ndarray, share_reps: np.ndarray, terms: CalibrationTerms
) -> tuple[np.ndarray, np.ndarray]:
    """Replicates whose percentiles give the basic bootstrap interval of the ECE.

    With ``T`` the debiased squared error, ``P`` the plug-in (the bootstrap world's
    truth) and ``T*`` the debiased squared error of a resample, ``Q* = T + (P - T*)``
    has the distribution the basic interval of ``CE^2`` reads its bounds from (the
    deviations widened to the jackknife's standard error where the bootstrap's is
    smaller); the ECE's replicates are ``sqrt(max(Q*, 0))``.

    Parameters
    ----------
    contribution_reps, share_reps : ndarray of shape (n_replicates, n_groups, n_bins)
    terms : CalibrationTerms
        Of the same groups.

    Returns
    -------
    (ece, squared) : tuple of ndarray of shape (n_replicates, n_groups)
        Replicates of the ECE, and ``Q*`` on the squared scale (for the dual test).
    """
    t_star = squared_ece_from_contributions(contribution_reps, share_reps, terms.variance[None])
    dev = terms.plugin_squared - t_star
    # Widen to the jackknife's standard error where the bootstrap's is smaller.
    sd = _column_sd(t_star)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(sd > 0, np.fmax(terms.jackknife_sd / sd, 1.0), 1.0)
    q = terms.debiased_squared + dev * scale
    return np.sqrt(np.maximum(q, 0.0)), q


def _column_sd(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    k = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, x, 0.0).sum(axis=0) / k
        ss = (np.where(ok, x - m, 0.0) ** 2).sum(axis=0)
        out: np.ndarray = np.where(k > 1, np.sqrt(ss / np.maximum(k - 1, 1)), np.nan)
    return out


def calibration_p_values(squared_reps: np.ndarray) -> np.ndarray:
    """Per column, the p-value of "calibrated" (CE = 0) dual to the ECE's interval.

    Two-sided convention: the ``confidence`` interval's lower bound is 0 exactly when
    ``p > 1 - confidence`` (up to the order statistics' resolution).

    Parameters
    ----------
    squared_reps : ndarray of shape (n_replicates, n_groups)
        ``Q*`` from :func:`ece_pseudo_replicates`.
    """
    q = np.asarray(squared_reps, dtype=np.float64)
    n = np.isfinite(q).sum(axis=0)
    at_or_below = (q <= 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2.0 * (at_or_below + 1) / (n + 1))
    out: np.ndarray = np.where(n > 0, p, np.nan)
    return out


def calibration_error(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    n_bins: int = 10,
    clusters: np.ndarray | None = None,
) -> float:
    """Debiased (root-mean-square) expected calibration error of positive-class probabilities.

    ``sqrt(max(sum_b w_b (d_b^2 - var(d_b)), 0))`` over equal-width bins, ``d_b`` the
    bin's mean residual ``p - y`` and ``w_b`` its share of the images: the debiased
    estimator of Kumar et al. (2019), with a variance robust to patients contributing
    several images. About 0 for a calibrated model whatever the sample size, where
    Guo's plug-in ECE (:func:`medaudit.stats.expected_calibration_error`) is about 0.03
    at 1,000 images and 0.1 at 100; equal to Guo's ECE when every bin is off by the same
    amount, larger when the error sits in a few bins.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels.
    y_prob : array-like of shape (n_samples,)
        Predicted probabilities of the positive class.
    n_bins : int
        Equal-width bins, as :func:`medaudit.stats.calibration_bins`.
    clusters : array-like of shape (n_samples,), optional
        Patient ids: the bias correction then allows for a patient's images being alike.

    Returns
    -------
    float

    References
    ----------
    .. [1] Kumar A, Liang P, Ma T. Verified uncertainty calibration. NeurIPS 2019.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 1, 5000)
    >>> y = rng.random(5000) < p                  # calibrated by construction
    >>> calibration_error(y, p) < 0.01
    True
    >>> round(calibration_error(y, np.clip(p + 0.1, 0, 1)), 2)  # 0.1 too high (clipped at 1)
    0.1
    """
    y, p = _check(y_true, y_prob, n_bins, "calibration_error")
    cl = None if clusters is None else np.asarray(clusters)
    if cl is not None and len(cl) != len(y):
        raise InvalidInputError("calibration_error: clusters must have one entry per sample.")
    return float(calibration_terms(y, p, n_bins=n_bins, clusters=cl).debiased[0])


def calibration_error_interval(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    weights: np.ndarray,
    *,
    n_bins: int = 10,
    clusters: np.ndarray | None = None,
    confidence: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """Debiased ECE and its basic bootstrap interval from resampling counts.

    Parameters
    ----------
    y_true, y_prob : array-like of shape (n_samples,)
    weights : ndarray of shape (n_boot, n_samples)
        Bootstrap counts, e.g. from :func:`medaudit.stats.bootstrap_counts` with strata
        that do not fix the classes (the ECE depends on the prevalence).
    n_bins : int
    clusters : array-like of shape (n_samples,), optional
        The patients the resampling drew.
    confidence : float

    Returns
    -------
    (value, (low, high))

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 1, 2000)
    >>> y = rng.random(2000) < p
    >>> from medaudit.stats import bootstrap_counts
    >>> W = bootstrap_counts(np.zeros(2000), n_boot=300, random_state=0)
    >>> value, (lo, hi) = calibration_error_interval(y, p, W)
    >>> lo == 0.0 and hi < 0.05
    True
    """
    from medaudit._stats._simultaneous import percentile_intervals

    y, p = _check(y_true, y_prob, n_bins, "calibration_error_interval")
    terms = calibration_terms(y, p, n_bins=n_bins, clusters=clusters)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    resid = np.zeros((len(y), n_bins))
    resid[np.arange(len(y)), _bins(p, n_bins)] = p - y
    with np.errstate(invalid="ignore", divide="ignore"):
        c_star = (w @ resid) / w.sum(axis=1, keepdims=True)
    counts = np.zeros((len(y), n_bins))
    counts[np.arange(len(y)), _bins(p, n_bins)] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (w @ counts) / w.sum(axis=1, keepdims=True)
    reps, _ = ece_pseudo_replicates(c_star[:, None, :], share[:, None, :], terms)
    lo, hi = percentile_intervals(reps, confidence)[0]
    return float(terms.debiased[0]), (float(lo), float(hi))


@dataclass(frozen=True)
class CalibrationTest:
    """Spiegelhalter's test of "the probabilities are calibrated".

    Attributes
    ----------
    z : float
        Standardised statistic (positive: more events than predicted where ``p`` is
        small, or fewer where it is large).
    p_value : float
        Two-sided.
    """

    z: float
    p_value: float


def spiegelhalter_test(
    y_true: np.ndarray, y_prob: np.ndarray, *, clusters: np.ndarray | None = None
) -> CalibrationTest:
    """Spiegelhalter's z test whose null hypothesis is "calibrated".

    ``z = sum (y - p)(1 - 2p) / sqrt(V)`` with ``V = sum (1 - 2p)^2 p (1 - p)`` under the
    null; with ``clusters`` the within-patient covariances of the terms are added
    (estimated from the residuals), so a patient's alike images do not inflate the level.

    Parameters
    ----------
    y_true, y_prob : array-like of shape (n_samples,)
    clusters : array-like of shape (n_samples,), optional

    Returns
    -------
    CalibrationTest

    References
    ----------
    .. [1] Spiegelhalter DJ. Probabilistic prediction in patient management and clinical
           trials. Stat Med 5(5):421-433, 1986.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.05, 0.95, 4000)
    >>> spiegelhalter_test(rng.random(4000) < p, p).p_value > 0.05
    True
    >>> spiegelhalter_test(rng.random(4000) < 0.7 * p, p).p_value < 0.001  # overestimates
    True
    """
    y, p = _check(y_true, y_prob, 1, "spiegelhalter_test")
    cl = None if clusters is None else np.asarray(clusters)
    z, pv = _spiegelhalter(y, p, np.zeros(len(y), np.int64), 1, cl)
    return CalibrationTest(float(z[0]), float(pv[0]))


def _spiegelhalter(
    y: np.ndarray, p: np.ndarray, g: np.ndarray, n_g: int, clusters: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    a = 1.0 - 2.0 * p
    t = a * (y - p)
    num = np.bincount(g, weights=t, minlength=n_g)
    var = np.bincount(g, weights=a * a * p * (1 - p), minlength=n_g)
    if clusters is not None:
        # Add the within-patient cross terms: sum_u [(sum_i t_i)^2 - sum_i t_i^2].
        uid = _codes(np.stack([g, _codes(clusters)]).T @ np.array([1, len(y) + 1]))
        s_u = np.bincount(uid, weights=t)
        q_u = np.bincount(uid, weights=t * t)
        ug = np.zeros(len(s_u), np.int64)
        ug[uid] = g
        var = var + np.bincount(ug, weights=s_u**2 - q_u, minlength=n_g)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)
    nd = NormalDist()
    pv = np.array([2 * (1 - nd.cdf(abs(v))) if np.isfinite(v) else np.nan for v in z])
    return z, pv


def _check(
    y_true: np.ndarray, y_prob: np.ndarray, n_bins: int, func: str
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise param_error("n_bins", func, "a positive integer", n_bins)
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise InvalidInputError(
            f"{func}: y_true and y_prob must be non-empty, 1-d and of the same length; "
            f"got shapes {y.shape} and {p.shape}."
        )
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise InvalidInputError(f"{func}: y_prob must be probabilities in [0, 1].")
    return y, p
