"""Estimates with patient-clustered standard errors from their influence functions.

Every statistic of the shortcut audit (an AUROC on a subset, a macro one-vs-rest AUROC,
an AUROC within strata, a balanced accuracy, a mean score change, and any difference of
these) is, to first order, a sum of per-patient contributions. An
:class:`ClusteredEstimate` keeps that contribution for every patient of the audited
cohort, so differences and averages of estimates computed on the same patients carry their
correlation exactly, and a standard error is one sum of squares: no resampling loop.

The AUROC's contributions are DeLong's placement values summed within each patient, which
is Obuchowski's estimator for clustered ROC data; with one image per patient it is
DeLong's variance.

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach.
       Biometrics 44(3):837-845, 1988.
.. [2] Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics
       53(2):567-578, 1997.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from medaudit._errors import InvalidInputError, param_error
from medaudit.stats import wilson_interval

__all__ = [
    "ClusteredEstimate",
    "auroc_estimate",
    "balanced_accuracy_estimate",
    "cluster_codes",
    "macro_auroc_estimate",
    "mean_estimate",
    "stratified_auroc_estimate",
]


def cluster_codes(clusters: np.ndarray | None, n: int) -> np.ndarray:
    """Integer code 0..K-1 of each sample's cluster (each sample its own without ids)."""
    if clusters is None:
        return np.arange(n)
    c = np.asarray(clusters)
    if len(c) != n:
        raise InvalidInputError("clusters must have one entry per sample.")
    return np.unique(c.astype(str), return_inverse=True)[1].ravel()


@dataclass(frozen=True, eq=False)
class ClusteredEstimate:
    """A point estimate and each cluster's first-order contribution to its error.

    Attributes
    ----------
    value : float
        The estimate (NaN when it cannot be computed, e.g. a class is missing).
    influence : ndarray of shape (n_clusters,)
        ``value - truth ≈ influence.sum()``; zero for clusters that do not contribute.
    support : ndarray of bool, shape (n_clusters,)
        Clusters that contributed (their number sets the small-sample correction).
    bounded : bool
        True for a quantity in [0, 1] (an AUROC, a proportion): its interval is built on
        the logit scale, so it stays inside [0, 1].

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    >>> a = auroc_estimate(y, s, np.arange(6))
    >>> round(a.value, 4)
    0.8889
    >>> lo, hi = a.ci(0.95)
    >>> 0 < lo < a.value < hi < 1
    True
    """

    value: float
    influence: np.ndarray
    support: np.ndarray
    bounded: bool = False

    def __sub__(self, other: ClusteredEstimate) -> ClusteredEstimate:
        return ClusteredEstimate(
            self.value - other.value,
            self.influence - other.influence,
            self.support | other.support,
        )

    @property
    def n_clusters(self) -> int:
        """Number of contributing clusters."""
        return int(np.count_nonzero(self.support))

    @property
    def se(self) -> float:
        """Standard error ``sqrt(K / (K - 1) * sum(influence**2))`` (NaN for K < 2)."""
        k = self.n_clusters
        if k < 2 or not np.isfinite(self.value):
            return float("nan")
        return float(np.sqrt(k / (k - 1) * np.sum(self.influence**2)))

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wald interval; on the logit scale for a bounded estimate (NaN when undefined)."""
        if not 0 < confidence < 1:
            raise param_error("confidence", "ClusteredEstimate.ci", "a float in (0, 1)", confidence)
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        v, se = self.value, self.se
        if not np.isfinite(v) or (not np.isfinite(se) and not self.bounded):
            return (float("nan"), float("nan"))
        if not self.bounded:
            return (v - z * se, v + z * se)
        if v <= 0.0 or v >= 1.0:
            # Every pair (or item) agrees: the logit is infinite and the Wald interval
            # degenerate. Wilson's interval with one trial per cluster stays honest.
            lo_w, hi_w = wilson_interval(round(v * self.n_clusters), self.n_clusters, confidence)
            return (float(lo_w), float(hi_w))
        logit = np.log(v / (1 - v))
        half = z * se / (v * (1 - v))
        lo, hi = logit - half, logit + half
        return (float(1 / (1 + np.exp(-lo))), float(1 / (1 + np.exp(-hi))))


def _nan_estimate(k: int, bounded: bool) -> ClusteredEstimate:
    return ClusteredEstimate(float("nan"), np.zeros(k), np.zeros(k, bool), bounded)


def _weighted_placements(
    pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values: V10 per positive, V01 per negative (ties count 1/2)."""
    order = np.argsort(neg, kind="mergesort")
    neg_s, cw = neg[order], np.r_[0.0, np.cumsum(w_neg[order])]
    lo = np.searchsorted(neg_s, pos, side="left")
    hi = np.searchsorted(neg_s, pos, side="right")
    v10 = (cw[lo] + 0.5 * (cw[hi] - cw[lo])) / cw[-1]
    order = np.argsort(pos, kind="mergesort")
    pos_s, cp = pos[order], np.r_[0.0, np.cumsum(w_pos[order])]
    lo = np.searchsorted(pos_s, neg, side="left")
    hi = np.searchsorted(pos_s, neg, side="right")
    v01 = ((cp[-1] - cp[hi]) + 0.5 * (cp[hi] - cp[lo])) / cp[-1]
    return v10, v01


def auroc_estimate(
    y_true: np.ndarray,
    y_score: np.ndarray,
    clusters: np.ndarray,
    *,
    n_clusters: int | None = None,
    weights: np.ndarray | None = None,
) -> ClusteredEstimate:
    """AUROC with its per-cluster influence (Obuchowski's clustered DeLong).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels (nonzero = positive).
    y_score : array-like of shape (n_samples,)
    clusters : array-like of int of shape (n_samples,)
        Cluster code of each sample, in ``0..n_clusters-1`` (see :func:`cluster_codes`).
    n_clusters : int, optional
        Length of the influence vector (default ``clusters.max() + 1``), so estimates on
        subsets of one cohort can be subtracted.
    weights : array-like of shape (n_samples,), optional
        Non-negative sample weights (e.g. resampling weights that match a reference
        composition); the weighted AUROC equals scikit-learn's
        ``roc_auc_score(sample_weight=...)``. Weights are treated as fixed.

    Returns
    -------
    ClusteredEstimate
        NaN when there is no positive or no negative (weight).

    Examples
    --------
    >>> est = auroc_estimate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], np.array([0, 0, 1, 2]))
    >>> est.value, est.n_clusters
    (0.75, 3)
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    c = np.asarray(clusters, dtype=np.int64)
    k = int(n_clusters if n_clusters is not None else (c.max() + 1 if c.size else 0))
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (len(s) == len(y) == len(c) == len(w)):
        raise InvalidInputError("auroc_estimate: inputs must have the same length.")
    keep = w > 0
    y, s, c, w = y[keep], s[keep], c[keep], w[keep]
    if not y.any() or y.all():
        return _nan_estimate(k, True)
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("auroc_estimate: y_score contains NaN or infinite values.")
    wp, wn = w[y], w[~y]
    v10, v01 = _weighted_placements(s[y], s[~y], wp, wn)
    theta = float(np.sum(wp * v10) / wp.sum())
    contrib = np.empty(len(y))
    contrib[y] = wp * (v10 - theta) / wp.sum()
    contrib[~y] = wn * (v01 - theta) / wn.sum()
    phi = np.bincount(c, weights=contrib, minlength=k)
    support = np.bincount(c, minlength=k) > 0
    return ClusteredEstimate(theta, phi, support, bounded=True)


def macro_auroc_estimate(
    levels: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    *,
    n_clusters: int | None = None,
) -> ClusteredEstimate:
    """One-vs-rest AUROC of each level (``scores[:, j]`` for level ``j``), averaged.

    With two levels this is the AUROC of ``scores[:, 1]`` for level 1. Equals
    scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` on the same
    scores when every level is present.

    Parameters
    ----------
    levels : ndarray of int of shape (n_samples,)
        Level code 0..L-1 of each sample.
    scores : ndarray of shape (n_samples, L) or (n_samples,) for L = 2
    clusters : ndarray of int of shape (n_samples,)
    n_clusters : int, optional

    Examples
    --------
    >>> lv = np.array([0, 1, 2, 0, 1, 2])
    >>> macro_auroc_estimate(lv, np.eye(3)[lv], np.arange(6)).value
    1.0
    """
    lv = np.asarray(levels)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.ndim == 1:
        return auroc_estimate(lv == 1, sc, clusters, n_clusters=n_clusters)
    if sc.shape[1] == 2:
        return auroc_estimate(lv == 1, sc[:, 1], clusters, n_clusters=n_clusters)
    parts = [
        auroc_estimate(lv == j, sc[:, j], clusters, n_clusters=n_clusters)
        for j in range(sc.shape[1])
    ]
    return _average(parts, np.ones(len(parts)))


def _average(parts: Sequence[ClusteredEstimate], weights: np.ndarray) -> ClusteredEstimate:
    ok = [i for i, p in enumerate(parts) if np.isfinite(p.value)]
    if not ok:
        return parts[0] if parts else _nan_estimate(0, True)
    w = np.asarray(weights, dtype=np.float64)[ok]
    w = w / w.sum()
    value = float(sum(wi * parts[i].value for wi, i in zip(w, ok, strict=True)))
    phi = sum(wi * parts[i].influence for wi, i in zip(w, ok, strict=True))
    support = np.logical_or.reduce([parts[i].support for i in ok])
    return ClusteredEstimate(value, np.asarray(phi), support, bounded=parts[ok[0]].bounded)


def stratified_auroc_estimate(
    levels: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    strata: np.ndarray,
    *,
    n_clusters: int | None = None,
) -> ClusteredEstimate:
    """Macro AUROC counting only pairs of samples from the same stratum.

    For each level (one-vs-rest), the AUROC within every stratum that has both classes,
    averaged with weights proportional to the stratum's number of (positive, negative)
    pairs; then the unweighted mean over levels. A score that separates the levels only
    because it tells the strata apart (an attribute encoded through the site) falls to
    chance here.

    Examples
    --------
    >>> lv = np.array([0, 1, 0, 1])
    >>> strata = np.array([0, 0, 1, 1])
    >>> round(stratified_auroc_estimate(lv, np.array([0.1, 0.2, 0.8, 0.9]), np.arange(4),
    ...                                 strata).value, 3)
    1.0
    """
    lv = np.asarray(levels)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.ndim == 1:
        sc = np.stack([-sc, sc], axis=1)
    st = np.asarray(strata)
    k = int(n_clusters if n_clusters is not None else np.asarray(clusters).max() + 1)
    cols = [1] if sc.shape[1] == 2 else list(range(sc.shape[1]))
    per_level = []
    for j in cols:
        pos = lv == j
        parts, pairs = [], []
        for s_val in np.unique(st):
            m = st == s_val
            n_pos, n_neg = int(np.count_nonzero(pos & m)), int(np.count_nonzero(~pos & m))
            if n_pos and n_neg:
                parts.append(
                    auroc_estimate(pos[m], sc[m, j], np.asarray(clusters)[m], n_clusters=k)
                )
                pairs.append(n_pos * n_neg)
        per_level.append(_average(parts, np.asarray(pairs)) if parts else _nan_estimate(k, True))
    return _average(per_level, np.ones(len(per_level)))


def balanced_accuracy_estimate(
    y_true: np.ndarray,
    decision: np.ndarray,
    clusters: np.ndarray,
    *,
    n_clusters: int | None = None,
) -> ClusteredEstimate:
    """Balanced accuracy ``(sensitivity + specificity) / 2`` with its cluster influence.

    Examples
    --------
    >>> balanced_accuracy_estimate([0, 0, 1, 1], [0, 1, 1, 1], np.arange(4)).value
    0.75
    """
    y = np.asarray(y_true).astype(bool)
    d = np.asarray(decision).astype(bool)
    c = np.asarray(clusters, dtype=np.int64)
    k = int(n_clusters if n_clusters is not None else (c.max() + 1 if c.size else 0))
    if not y.any() or y.all():
        return _nan_estimate(k, True)
    correct = (d == y).astype(np.float64)
    m, n = np.count_nonzero(y), np.count_nonzero(~y)
    tpr, tnr = correct[y].mean(), correct[~y].mean()
    contrib = np.where(y, (correct - tpr) / (2 * m), (correct - tnr) / (2 * n))
    phi = np.bincount(c, weights=contrib, minlength=k)
    support = np.bincount(c, minlength=k) > 0
    return ClusteredEstimate(float((tpr + tnr) / 2), phi, support, bounded=True)


def mean_estimate(
    values: np.ndarray,
    clusters: np.ndarray,
    *,
    n_clusters: int | None = None,
    bounded: bool = False,
    weights: np.ndarray | None = None,
) -> ClusteredEstimate:
    """Mean of ``values`` (a score change, a 0/1 flip indicator) with its cluster influence.

    With ``weights``, the weighted mean ``sum(w * v) / sum(w)`` (weights treated as fixed).

    Examples
    --------
    >>> est = mean_estimate(np.array([1.0, 1.0, 0.0, 0.0]), np.array([0, 0, 1, 1]))
    >>> est.value, est.n_clusters
    (0.5, 2)
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(clusters, dtype=np.int64)
    k = int(n_clusters if n_clusters is not None else (c.max() + 1 if c.size else 0))
    w = np.ones(v.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.size == 0 or w.sum() <= 0:
        return _nan_estimate(k, bounded)
    mu = float(np.sum(w * v) / w.sum())
    phi = np.bincount(c, weights=w * (v - mu) / w.sum(), minlength=k)
    support = np.bincount(c[w > 0], minlength=k) > 0
    return ClusteredEstimate(mu, phi, support, bounded=bounded)
