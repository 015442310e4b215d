"""Sufficient statistics of a federated audit: what a site sends instead of its scores.

Each site reduces its own predictions, per patient group (every value of every sensitive
attribute, plus ``all``), to

- the confusion counts at the operating threshold (TP, FP, TN, FN), and
- the histogram of its scores per class on a fixed grid of bins of the logit,
  ``log(p / (1 - p))`` clipped to ±16 (fine where scores crowd near 0 and 1): 65,536
  bins by default, at least 4,096.

Counts add up across sites, so the server's sums equal the pooled computation exactly;
AUROC from the summed histograms counts a positive and a negative in the same bin as a
tie, which moves it by at most half the share of such pairs (below 1e-3 even for the
crowded scores of an untrained model).

Confidence intervals account for patients with several images. A second pass sends the
server's summed histograms back to each site, which returns per group a handful of sums
over its patients (the cluster moments): with them the server computes Obuchowski's
clustered variance of the AUROC and design-effect adjusted Wilson intervals for
sensitivity and specificity — still without a score leaving the site. Without patient
ids each image is its own cluster (DeLong's variance).

A release under differential privacy adds Laplace noise to every count at the site
(:func:`add_laplace_noise`); the cluster moments are then not sent, and the intervals
come from the noisy histograms alone.

References
----------
.. [1] Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics
       53(2):567-578, 1997.
.. [2] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
       correlated receiver operating characteristic curves. Biometrics 44(3):837-845, 1988.
.. [3] Korn EL, Graubard BI. Confidence intervals for proportions with small expected
       number of positive counts estimated from survey data. Survey Methodology
       24:193-201, 1998.
.. [4] Dwork C, McSherry F, Nissim K, Smith A. Calibrating noise to sensitivity in private
       data analysis. TCC 2006.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "ALL_GROUP",
    "DEFAULT_BINS",
    "LOGIT_RANGE",
    "MIN_BINS",
    "ClusterMoments",
    "SufficientStatistics",
    "add_laplace_noise",
    "aggregate_moments",
    "aggregate_statistics",
    "auroc_from_histograms",
    "cluster_moments",
    "score_bins",
    "site_statistics",
    "subgroup_metrics",
]

#: The fewest histogram bins a site may use.
MIN_BINS = 4096
#: The default: 2**16 bins of 0.0005 logit resolve even a barely trained model's scores,
#: which crowd into a few hundredths of a logit, and travel sparse (non-empty bins only).
DEFAULT_BINS = 65536
#: Scores are binned on the logit, clipped to ±LOGIT_RANGE (p within 1.1e-7 of 0 or 1).
LOGIT_RANGE = 16.0
#: The key of the whole cohort among the groups.
ALL_GROUP: tuple[str, str] = ("all", "all")

MSG_KEYS_DIFFER = (
    "Cannot combine statistics computed with different settings: threshold {a_thr} vs "
    "{b_thr}, {a_bins} vs {b_bins} bins."
)

# Column order of the cluster moments (sums over the clusters, i.e. patients, of a group):
# m, n = positives and negatives of the cluster; v10, v01 = sums of their placement values;
# k, t = its true positives and true negatives at the threshold.
MOMENTS: tuple[str, ...] = (
    "clusters",
    "m2",
    "n2",
    "v10_2",
    "v01_2",
    "m_v10",
    "n_v01",
    "v10_v01",
    "m_v01",
    "n_v10",
    "m_n",
    "k2",
    "k_m",
    "t2",
    "t_n",
    "clusters_pos",
    "clusters_neg",
)


def score_bins(scores: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Histogram bin of each probability: ``n_bins`` equal bins of the clipped logit.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Probabilities of the positive class, in [0, 1].
    n_bins : int, default 65536

    Returns
    -------
    ndarray of shape (n_samples,), dtype int64
        Bins in ``[0, n_bins)``; monotone in the score.

    Examples
    --------
    >>> score_bins(np.array([0.0, 0.5, 1.0]), 4096).tolist()
    [0, 2048, 4095]
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    z = (np.clip(logit, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2 * LOGIT_RANGE)
    return np.minimum((z * n_bins).astype(np.int64), n_bins - 1)


@dataclass(frozen=True)
class SufficientStatistics:
    """Confusion counts and score histograms per patient group, from one site or summed.

    Attributes
    ----------
    keys : tuple of (str, str)
        ``(attribute, group)`` of each row; ``("all", "all")`` is the whole cohort.
    confusion : ndarray of shape (n_keys, 4)
        TP, FP, TN, FN at ``threshold`` (score >= threshold is positive).
    histograms : ndarray of shape (n_keys, 2, n_bins)
        Image counts per score bin, negatives in row 0 and positives in row 1.
    threshold : float
    n_bins : int
    noise_epsilon : float or None
        ε of the Laplace noise added to the counts (None: exact counts).
    """

    keys: tuple[tuple[str, str], ...]
    confusion: np.ndarray
    histograms: np.ndarray
    threshold: float
    n_bins: int
    noise_epsilon: float | None = None

    def index(self, key: tuple[str, str]) -> int:
        """Row of ``key``."""
        return self.keys.index(key)


def _groups_of(
    groups: Mapping[str, Sequence[object] | np.ndarray], n: int
) -> list[tuple[tuple[str, str], np.ndarray]]:
    """``[(key, boolean mask)]`` for ``all`` and every (attribute, value) present."""
    out = [(ALL_GROUP, np.ones(n, dtype=bool))]
    for attr, values in groups.items():
        v = pd.Series(np.asarray(values, dtype=object))
        if len(v) != n:
            raise InvalidInputError(
                f"Attribute {attr!r} has {len(v)} values for {n} predictions; need one each."
            )
        text = v.astype(str).where(v.notna(), "missing").to_numpy()
        for g in sorted(set(text.tolist())):
            out.append(((str(attr), g), text == g))
    return out


def _check_inputs(labels: np.ndarray, scores: np.ndarray, func: str) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise InvalidInputError(
            f"{func}: labels and scores must be 1-d of the same length; got {y.shape} "
            f"and {s.shape}."
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(f"{func}: scores contain NaN or infinite values.")
    return y.astype(bool), s


def _check_bins(n_bins: object, func: str) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < MIN_BINS:
        raise param_error("n_bins", func, f"an int >= {MIN_BINS}", n_bins)
    return int(n_bins)


def site_statistics(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    groups: Mapping[str, Sequence[object] | np.ndarray],
    threshold: float = 0.5,
    n_bins: int = DEFAULT_BINS,
) -> SufficientStatistics:
    """What one site sends: confusion counts and score histograms per group.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Binary labels (nonzero = positive).
    scores : array-like of shape (n_samples,)
        Probability of the positive class.
    groups : mapping of str to array-like of shape (n_samples,)
        Sensitive attribute columns; every value present becomes a group.
    threshold : float, default 0.5
        Score at or above which an image is called positive.
    n_bins : int, default 65536

    Returns
    -------
    SufficientStatistics

    Examples
    --------
    >>> st = site_statistics([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.6], groups={"sex": list("ffmm")})
    >>> st.keys
    (('all', 'all'), ('sex', 'f'), ('sex', 'm'))
    >>> st.confusion.tolist()  # TP, FP, TN, FN
    [[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    """
    func = "site_statistics"
    y, s = _check_inputs(labels, scores, func)
    n_bins = _check_bins(n_bins, func)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise param_error("threshold", func, "a float in [0, 1]", threshold)
    b = score_bins(s, n_bins)
    pred = s >= threshold
    keys, conf, hist = [], [], []
    for key, mask in _groups_of(groups, len(y)):
        yy, pp = y[mask], pred[mask]
        conf.append([np.sum(yy & pp), np.sum(~yy & pp), np.sum(~yy & ~pp), np.sum(yy & ~pp)])
        hist.append(
            np.stack(
                [
                    np.bincount(b[mask][~yy], minlength=n_bins),
                    np.bincount(b[mask][yy], minlength=n_bins),
                ]
            )
        )
        keys.append(key)
    return SufficientStatistics(
        keys=tuple(keys),
        confusion=np.asarray(conf, dtype=np.int64).reshape(-1, 4),
        histograms=np.asarray(hist, dtype=np.int64).reshape(-1, 2, n_bins),
        threshold=float(threshold),
        n_bins=n_bins,
    )


def aggregate_statistics(parts: Sequence[SufficientStatistics]) -> SufficientStatistics:
    """Sum the statistics of several sites (groups missing at a site count zero).

    Examples
    --------
    >>> a = site_statistics([0, 1], [0.2, 0.9], groups={"sex": ["f", "f"]})
    >>> b = site_statistics([1, 0], [0.7, 0.6], groups={"sex": ["m", "m"]})
    >>> agg = aggregate_statistics([a, b])
    >>> agg.keys, agg.confusion[0].tolist()
    ((('all', 'all'), ('sex', 'f'), ('sex', 'm')), [2, 1, 1, 0])
    """
    if not parts:
        raise param_error("parts", "aggregate_statistics", "a non-empty sequence", parts)
    first = parts[0]
    for p in parts[1:]:
        if p.threshold != first.threshold or p.n_bins != first.n_bins:
            raise InvalidInputError(
                MSG_KEYS_DIFFER.format(
                    a_thr=first.threshold, b_thr=p.threshold, a_bins=first.n_bins, b_bins=p.n_bins
                )
            )
    keys = _union_keys([p.keys for p in parts])
    conf = np.zeros((len(keys), 4), dtype=np.int64)
    hist = np.zeros((len(keys), 2, first.n_bins), dtype=np.int64)
    pos = {k: i for i, k in enumerate(keys)}
    for p in parts:
        rows = [pos[k] for k in p.keys]
        conf[rows] += p.confusion
        hist[rows] += p.histograms
    eps = [p.noise_epsilon for p in parts if p.noise_epsilon is not None]
    return SufficientStatistics(
        keys=keys,
        confusion=conf,
        histograms=hist,
        threshold=first.threshold,
        n_bins=first.n_bins,
        noise_epsilon=max(eps) if eps else None,
    )


def _union_keys(key_lists: Sequence[Sequence[tuple[str, str]]]) -> tuple[tuple[str, str], ...]:
    seen = {k for ks in key_lists for k in ks}
    rest = sorted(k for k in seen if k != ALL_GROUP)
    return (ALL_GROUP, *rest) if ALL_GROUP in seen else tuple(rest)


def add_laplace_noise(
    stats: SufficientStatistics, *, epsilon: float, random_state: int | np.random.Generator = 0
) -> SufficientStatistics:
    """The statistics with Laplace noise on every count, for an ε-DP release (per image).

    One image changes one confusion cell and one histogram bin of every group it belongs
    to: ``1 + (number of attributes)`` groups, so the L1 sensitivity is twice that. Noisy
    counts are rounded and clipped at zero (post-processing keeps the guarantee). A
    patient with k images is protected at k·ε.

    Parameters
    ----------
    stats : SufficientStatistics
        One site's exact statistics.
    epsilon : float > 0
    random_state : int or Generator

    Examples
    --------
    >>> st = site_statistics([0, 1] * 50, [0.3, 0.8] * 50, groups={})
    >>> noisy = add_laplace_noise(st, epsilon=1.0, random_state=0)
    >>> noisy.noise_epsilon, bool(noisy.confusion.min() >= 0)
    (1.0, True)
    """
    func = "add_laplace_noise"
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise param_error("epsilon", func, "a float > 0", epsilon)
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    attributes = {a for a, _ in stats.keys if (a, _) != ALL_GROUP}
    sensitivity = 2.0 * (1 + len(attributes))
    scale = sensitivity / float(epsilon)

    def noisy(a: np.ndarray) -> np.ndarray:
        return np.maximum(np.rint(a + rng.laplace(0.0, scale, size=a.shape)), 0).astype(np.int64)

    return SufficientStatistics(
        keys=stats.keys,
        confusion=noisy(stats.confusion),
        histograms=noisy(stats.histograms),
        threshold=stats.threshold,
        n_bins=stats.n_bins,
        noise_epsilon=float(epsilon),
    )


def auroc_from_histograms(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of binned scores (a positive and a negative in one bin count one half).

    Examples
    --------
    >>> auroc_from_histograms(np.array([2, 1, 0]), np.array([0, 1, 2]))
    0.875
    """
    neg = np.asarray(negatives, dtype=np.float64)
    pos = np.asarray(positives, dtype=np.float64)
    m, n = pos.sum(), neg.sum()
    if m <= 0 or n <= 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (m * n))


def _placements(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement value per bin: of a positive there (V10) and of a negative there (V01)."""
    neg = neg.astype(np.float64)
    pos = pos.astype(np.float64)
    m, n = max(pos.sum(), 1.0), max(neg.sum(), 1.0)
    v10 = (np.cumsum(neg) - neg + 0.5 * neg) / n
    pos_above = pos.sum() - np.cumsum(pos)
    v01 = (pos_above + 0.5 * pos) / m
    return v10, v01


@dataclass(frozen=True)
class ClusterMoments:
    """Per group, sums over the clusters (patients) of one site, or summed over sites.

    Attributes
    ----------
    keys : tuple of (str, str)
    moments : ndarray of shape (n_keys, 17)
        Columns named by :data:`MOMENTS`.
    """

    keys: tuple[tuple[str, str], ...]
    moments: np.ndarray


def cluster_moments(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    groups: Mapping[str, Sequence[object] | np.ndarray],
    clusters: Sequence[object] | np.ndarray | None,
    pooled: SufficientStatistics,
) -> ClusterMoments:
    """The second pass at a site: per-patient sums the clustered intervals need.

    Parameters
    ----------
    labels, scores : array-like of shape (n_samples,)
    groups : mapping of str to array-like
    clusters : array-like of shape (n_samples,) or None
        Patient of each image (None: every image its own patient).
    pooled : SufficientStatistics
        The server's sums over all sites (placement values are relative to them).

    Returns
    -------
    ClusterMoments
    """
    func = "cluster_moments"
    y, s = _check_inputs(labels, scores, func)
    b = score_bins(s, pooled.n_bins)
    pred = s >= pooled.threshold
    cl = (
        np.arange(len(y))
        if clusters is None
        else np.unique(np.asarray(clusters).astype(str), return_inverse=True)[1].ravel()
    )
    keys, rows = [], []
    for key, mask in _groups_of(groups, len(y)):
        if key not in pooled.keys:
            continue
        hist = pooled.histograms[pooled.index(key)]
        v10, v01 = _placements(hist[0], hist[1])
        rows.append(_moments(y[mask], b[mask], pred[mask], cl[mask], v10, v01))
        keys.append(key)
    return ClusterMoments(tuple(keys), np.asarray(rows, dtype=np.float64).reshape(-1, len(MOMENTS)))


def _moments(
    y: np.ndarray, b: np.ndarray, pred: np.ndarray, cl: np.ndarray, v10: np.ndarray, v01: np.ndarray
) -> list[float]:
    if len(y) == 0:
        return [0.0] * len(MOMENTS)
    _, c = np.unique(cl, return_inverse=True)
    k_clusters = int(c.max()) + 1

    def per(x: np.ndarray) -> np.ndarray:
        return np.bincount(c, weights=x.astype(np.float64), minlength=k_clusters)

    m, n = per(y), per(~y)
    a10, a01 = per(np.where(y, v10[b], 0.0)), per(np.where(~y, v01[b], 0.0))
    k, t = per(y & pred), per(~y & ~pred)
    return [
        float(k_clusters),
        *(
            float(np.sum(u * w))
            for u, w in (
                (m, m),
                (n, n),
                (a10, a10),
                (a01, a01),
                (m, a10),
                (n, a01),
                (a10, a01),
                (m, a01),
                (n, a10),
                (m, n),
                (k, k),
                (k, m),
                (t, t),
                (t, n),
            )
        ),
        float(np.sum(m > 0)),
        float(np.sum(n > 0)),
    ]


def aggregate_moments(parts: Sequence[ClusterMoments]) -> ClusterMoments:
    """Sum the cluster moments of several sites (patients never span sites)."""
    if not parts:
        raise param_error("parts", "aggregate_moments", "a non-empty sequence", parts)
    keys = _union_keys([p.keys for p in parts])
    out = np.zeros((len(keys), len(MOMENTS)))
    pos = {k: i for i, k in enumerate(keys)}
    for p in parts:
        out[[pos[k] for k in p.keys]] += p.moments
    return ClusterMoments(keys, out)


def _quantile(confidence: float, df: float) -> float:
    """Two-sided Student-t quantile with ``df`` degrees of freedom (normal when df is large).

    With few patients of a class the clustered variance is itself uncertain; the t
    quantile keeps the intervals' coverage near nominal (checked by simulation).
    """
    from scipy.special import stdtrit

    if not np.isfinite(df) or df > 1e6:
        return NormalDist().inv_cdf(0.5 + confidence / 2)
    return float(stdtrit(max(df, 1.0), 0.5 + confidence / 2))


def _auroc_interval(theta: float, var: float, q: float) -> tuple[float, float]:
    """Logit-scale Wald interval of an AUROC (stays in [0, 1], keeps coverage near 1)."""
    if not np.isfinite(theta) or not np.isfinite(var):
        return float("nan"), float("nan")
    if theta <= 0.0 or theta >= 1.0 or var <= 0:
        return theta, theta
    lg = np.log(theta / (1 - theta))
    se = np.sqrt(var) / (theta * (1 - theta))
    lo, hi = lg - q * se, lg + q * se
    return float(1 / (1 + np.exp(-lo))), float(1 / (1 + np.exp(-hi)))


def _clustered_auroc_var(
    theta: float, mm: Mapping[str, float], big_m: float, big_n: float
) -> float:
    """Obuchowski's (1997) variance of the clustered AUROC estimate."""
    i = mm["clusters"]
    if i < 2 or big_m <= 0 or big_n <= 0:
        return float("nan")
    f = i / (i - 1)
    s10 = f / big_m * (mm["v10_2"] - 2 * theta * mm["m_v10"] + theta**2 * mm["m2"])
    s01 = f / big_n * (mm["v01_2"] - 2 * theta * mm["n_v01"] + theta**2 * mm["n2"])
    s11 = f * (mm["v10_v01"] - theta * mm["n_v10"] - theta * mm["m_v01"] + theta**2 * mm["m_n"])
    return float(s10 / big_m + s01 / big_n + 2 * s11 / (big_m * big_n))


def _histogram_auroc_var(theta: float, neg: np.ndarray, pos: np.ndarray) -> float:
    """DeLong's variance from the histograms alone (every image its own patient)."""
    m, n = float(pos.sum()), float(neg.sum())
    if m < 2 or n < 2:
        return float("nan")
    v10, v01 = _placements(neg, pos)
    s10 = float(np.sum(pos * (v10 - theta) ** 2)) / (m - 1)
    s01 = float(np.sum(neg * (v01 - theta) ** 2)) / (n - 1)
    return s10 / m + s01 / n


def _proportion_interval(
    k: float, total: float, sq: float, cross: float, t2: float, clusters: float, q: float
) -> tuple[float, float]:
    """Wilson interval at the design-effect adjusted sample size (Korn & Graubard 1998).

    ``q`` is the quantile of the interval (Student-t with the clusters' degrees of freedom).
    """
    if total <= 0:
        return float("nan"), float("nan")
    p = k / total
    n_eff = total
    if clusters >= 2 and 0 < p < 1:
        var_cluster = clusters / (clusters - 1) * (sq - 2 * p * cross + p * p * t2) / total**2
        var_binom = p * (1 - p) / total
        if var_cluster > 0:
            n_eff = min(total, var_binom / var_cluster * total)
    return _wilson(p * n_eff, n_eff, q)


def _wilson(k: float, n: float, q: float) -> tuple[float, float]:
    """Wilson score interval with quantile ``q`` (as :func:`medaudit.stats.wilson_interval`)."""
    p = k / n
    denom = 1 + q * q / n
    centre = (p + q * q / (2 * n)) / denom
    half = q * np.sqrt(max(p * (1 - p) / n + q * q / (4 * n * n), 0.0)) / denom
    lo = 0.0 if k <= 0 else float(np.clip(centre - half, 0.0, 1.0))
    hi = 1.0 if k >= n else float(np.clip(centre + half, 0.0, 1.0))
    return lo, hi


def subgroup_metrics(
    stats: SufficientStatistics,
    moments: ClusterMoments | None = None,
    *,
    confidence: float = 0.95,
    min_group_size: int = 30,
    min_class_count: int = 5,
) -> pd.DataFrame:
    """Global per-group metrics from the summed statistics, with confidence intervals.

    Parameters
    ----------
    stats : SufficientStatistics
        Summed over the sites (:func:`aggregate_statistics`).
    moments : ClusterMoments, optional
        Summed second-pass moments (:func:`aggregate_moments`); without them the
        intervals treat every image as its own patient.
    confidence : float, default 0.95
    min_group_size, min_class_count : int
        Smaller groups get ``status = "skipped"`` and a reason, never a number.

    Returns
    -------
    DataFrame
        One row per group: ``attribute``, ``group``, ``n``, ``n_positive``, ``tp``,
        ``fp``, ``tn``, ``fn``, ``sensitivity`` (+ ``_low``/``_high``), ``specificity``
        (+ CI), ``auroc`` (+ CI and its standard error ``auroc_se``), ``ci_method``,
        ``status``, ``reason``.
    """
    func = "subgroup_metrics"
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    mom = {} if moments is None else dict(zip(moments.keys, moments.moments, strict=True))
    rows = []
    for i, key in enumerate(stats.keys):
        tp, fp, tn, fn = (float(v) for v in stats.confusion[i])
        neg, pos = stats.histograms[i]
        m, n = tp + fn, fp + tn
        row: dict[str, object] = {
            "attribute": key[0],
            "group": key[1],
            "n": int(m + n),
            "n_positive": int(m),
            "tp": int(tp),
            "fp": int(fp),
            "tn": int(tn),
            "fn": int(fn),
        }
        reason = _too_small(m, n, min_group_size, min_class_count)
        mm = dict(zip(MOMENTS, mom[key], strict=True)) if key in mom else None
        row.update(_group_numbers(tp, fp, tn, fn, neg, pos, mm, z, confidence, reason))
        row["ci_method"] = ("clustered (patients)" if mm is not None else "images independent") + (
            "; noisy counts" if stats.noise_epsilon is not None else ""
        )
        row["status"] = "skipped" if reason else "ok"
        row["reason"] = reason
        rows.append(row)
    return pd.DataFrame(rows)


def _too_small(m: float, n: float, min_group_size: int, min_class_count: int) -> str:
    if m + n < min_group_size:
        return f"group has {int(m + n)} images (< {min_group_size})"
    if min(m, n) < min_class_count:
        return f"group has {int(m)} positives and {int(n)} negatives (< {min_class_count})"
    return ""


def _group_numbers(
    tp: float,
    fp: float,
    tn: float,
    fn: float,
    neg: np.ndarray,
    pos: np.ndarray,
    mm: Mapping[str, float] | None,
    z: float,
    confidence: float,
    reason: str,
) -> dict[str, float]:
    nan = float("nan")
    keys = ("sensitivity", "specificity", "auroc")
    out = {k2: nan for k in keys for k2 in (k, f"{k}_low", f"{k}_high")}
    out["auroc_se"] = nan
    if reason:
        return out
    m, n = tp + fn, fp + tn
    theta = auroc_from_histograms(neg, pos)
    if mm is not None:
        i_pos, i_neg = mm["clusters_pos"], mm["clusters_neg"]
        var = _clustered_auroc_var(theta, mm, m, n)
        q_auc = _quantile(confidence, min(i_pos, i_neg) - 1)
        sens_ci = _proportion_interval(
            tp, m, mm["k2"], mm["k_m"], mm["m2"], mm["clusters"], _quantile(confidence, i_pos - 1)
        )
        spec_ci = _proportion_interval(
            tn, n, mm["t2"], mm["t_n"], mm["n2"], mm["clusters"], _quantile(confidence, i_neg - 1)
        )
    else:
        var = _histogram_auroc_var(theta, neg, pos)
        q_auc = z
        sens_ci = _wilson(tp, m, z)
        spec_ci = _wilson(tn, n, z)
    out["sensitivity"], out["specificity"], out["auroc"] = tp / m, tn / n, theta
    out["sensitivity_low"], out["sensitivity_high"] = sens_ci
    out["specificity_low"], out["specificity_high"] = spec_ci
    out["auroc_low"], out["auroc_high"] = _auroc_interval(theta, var, q_auc)
    out["auroc_se"] = float(np.sqrt(var)) if np.isfinite(var) and var >= 0 else nan
    return out
