"""A debiased expected calibration error with a valid interval, and a calibration test.

The usual binned ECE, ``sum_b |mean(p - y in bin b)| n_b / n``, is biased upwards: for
a perfectly calibrated model each bin's mean residual is noise around 0 and its absolute
value is positive, so the ECE of a calibrated model is about 0.03 with 1,000 images and
0.1 with 100, and a bootstrap percentile interval of it almost never contains the true 0.

Here the ECE is written as ``sum_b |c_b|`` with ``c_b = E[(p - y) 1{p in bin b}]``, a
plain mean. Its square is estimated without bias by ``c_b^2 - var(c_b)`` (the correction
Kumar et al. 2019 apply per bin), with a variance that is robust to patients
contributing several images; the debiased ECE is ``sum_b sqrt(max(c_b^2 - var_b, 0))``.
Its interval is the basic bootstrap interval with the plug-in ECE as the bootstrap
world's truth, which stays valid at the boundary (a calibrated model gets an interval
from 0) and has its nominal coverage away from it.

Whether a model is calibrated at all is tested with Spiegelhalter's z, whose null is
"the probabilities are calibrated", with a cluster-robust variance when patient ids are
given.

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
    "calibration_terms",
    "ece_from_contributions",
    "ece_pseudo_replicates",
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
        ``c_b = sum over bin b of (p - y) / n_group``; the plug-in ECE is
        ``abs(c).sum(axis=1)``.
    variance : ndarray of shape (n_groups, n_bins)
        Cluster-robust variance of ``contribution``.
    z, p_value : ndarray of shape (n_groups,)
        Spiegelhalter's z and its two-sided p-value (NaN for an empty group).
    """

    contribution: np.ndarray
    variance: np.ndarray
    z: np.ndarray
    p_value: np.ndarray

    @property
    def plugin(self) -> np.ndarray:
        """The usual binned ECE of each group."""
        return np.abs(self.contribution).sum(axis=1)

    @property
    def debiased(self) -> np.ndarray:
        """The debiased ECE of each group."""
        return ece_from_contributions(self.contribution[None], self.variance)[0]


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
    if clusters is None:
        s2 = np.bincount(cell, weights=r * r, minlength=n_g * n_bins).reshape(n_g, n_bins)
        sn = s1
        nn: np.ndarray = size[:, None]
        units = size
    else:
        uid = _codes(np.stack([g, _codes(np.asarray(clusters))]).T @ np.array([1, n + 1]))
        n_u = np.bincount(uid).astype(np.float64)
        unit_group = np.zeros(len(n_u), np.int64)
        unit_group[uid] = g
        ub, inv = np.unique(uid * n_bins + b, return_inverse=True)
        s_ub = np.bincount(inv.ravel(), weights=r)
        u_of, b_of = ub // n_bins, ub % n_bins
        gb = unit_group[u_of] * n_bins + b_of
        s2 = np.bincount(gb, weights=s_ub**2, minlength=n_g * n_bins).reshape(n_g, n_bins)
        sn = np.bincount(gb, weights=s_ub * n_u[u_of], minlength=n_g * n_bins).reshape(n_g, n_bins)
        nn = np.bincount(unit_group, weights=n_u**2, minlength=n_g).astype(np.float64)[:, None]
        units = np.bincount(unit_group, minlength=n_g).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss = s2 - 2 * c * sn + c * c * nn
        var = np.maximum(ss, 0.0) * (units / np.maximum(units - 1, 1))[:, None] / size[:, None] ** 2
    var = np.where(np.isfinite(var), var, 0.0)
    z, pv = _spiegelhalter(y, p, g, n_g, clusters)
    return CalibrationTerms(np.where(size[:, None] > 0, c, np.nan), var, z, pv)


def ece_from_contributions(contribution: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Debiased ECE ``sum_b sqrt(max(c_b^2 - var_b, 0))`` over the last axis, vectorised.

    Parameters
    ----------
    contribution : ndarray of shape (..., n_groups, n_bins)
    variance : ndarray broadcastable to ``contribution``
    """
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.sqrt(np.maximum(contribution**2 - variance, 0.0)).sum(axis=-1)
    return out


def ece_pseudo_replicates(contribution_reps: np.ndarray, terms: CalibrationTerms) -> np.ndarray:
    """Replicates whose percentiles give the basic bootstrap interval of the debiased ECE.

    With ``T`` the debiased ECE, ``P`` the plug-in ECE (the bootstrap world's truth) and
    ``T*`` the debiased ECE of a resample, ``T - (T* - P)`` has the distribution the
    basic interval reads its bounds from; values below 0 are clipped (the ECE is >= 0).

    Parameters
    ----------
    contribution_reps : ndarray of shape (n_replicates, n_groups, n_bins)
    terms : CalibrationTerms
        Of the same groups.

    Returns
    -------
    ndarray of shape (n_replicates, n_groups)
    """
    t_star = ece_from_contributions(contribution_reps, terms.variance[None])
    out: np.ndarray = np.maximum(terms.debiased + terms.plugin - t_star, 0.0)
    return out


def calibration_error(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    n_bins: int = 10,
    clusters: np.ndarray | None = None,
) -> float:
    """Debiased expected calibration error of positive-class probabilities.

    The binned ECE of Guo et al. with each bin's bias removed: ``sum_b sqrt(max(c_b^2 -
    var(c_b), 0))`` with ``c_b`` the bin's share of the mean residual ``p - y`` (see the
    module notes). About 0 for a calibrated model whatever the sample size, where the
    plug-in ECE (:func:`medaudit.stats.expected_calibration_error`) is about 0.03 at
    1,000 images and 0.1 at 100.

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
    reps = ece_pseudo_replicates(c_star[:, None, :], terms)
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
