"""Statistics shared by every audit: exact AUROC, the one resampling design, CIs, tests.

The bootstrap resamples **whole patients** (a resampled patient brings all of its
images, whatever their labels), **stratified by group**, and by class only for metrics
that condition on the class (:func:`resampling_strata`, :func:`bootstrap_counts`).
Resamples are a count matrix ``W`` of shape (n_boot, n_samples): ``W[b, i]`` is how
often sample ``i`` appears in resample ``b``. Weighted metrics then evaluate all
resamples at once, with no Python loop over rows. (:mod:`medaudit.fairness` applies
the same design to score histograms, for millions of rows.)

Gaps between groups picked from the data get simultaneous intervals
(:func:`range_interval`); the ECE a debiased estimator with a valid interval
(:func:`calibration_error`) and a test of calibration (:func:`spiegelhalter_test`);
:func:`required_sample_size` says how much data a gap check needs.

References
----------
.. [1] Efron B, Tibshirani R. An Introduction to the Bootstrap. Chapman & Hall, 1993.
.. [2] Hanley JA, McNeil BJ. The meaning and use of the area under a ROC curve.
       Radiology 143(1):29-36, 1982.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from medaudit._errors import InvalidInputError, param_error
from medaudit._stats._calibration import (
    CalibrationTerms,
    CalibrationTest,
    calibration_error,
    calibration_error_interval,
    calibration_p_values,
    calibration_terms,
    ece_pseudo_replicates,
    spiegelhalter_test,
)
from medaudit._stats._power import (
    POWER_METRICS,
    SampleSize,
    required_sample_size,
    simultaneous_critical_value,
)
from medaudit._stats._pseudo import (
    PSEUDO_KINDS,
    bootstrap_interval,
    pseudo_replicates,
    small_sample_widen,
)
from medaudit._stats._simultaneous import (
    GapInterval,
    SimultaneousIntervals,
    extreme_interval,
    percentile_intervals,
    range_interval,
    simultaneous_intervals,
)

__all__ = [
    "POWER_METRICS",
    "PSEUDO_KINDS",
    "CalibrationTerms",
    "CalibrationTest",
    "GapInterval",
    "SampleSize",
    "SimultaneousIntervals",
    "adjust_pvalues",
    "auroc",
    "bootstrap_counts",
    "bootstrap_interval",
    "calibration_bins",
    "calibration_error",
    "calibration_error_interval",
    "calibration_p_values",
    "calibration_terms",
    "ece_pseudo_replicates",
    "expected_calibration_error",
    "extreme_interval",
    "multinomial_counts",
    "percentile_ci",
    "percentile_intervals",
    "permutation_pvalue",
    "pseudo_replicates",
    "random_tables",
    "range_interval",
    "required_sample_size",
    "resampling_strata",
    "simultaneous_critical_value",
    "simultaneous_intervals",
    "small_sample_widen",
    "spiegelhalter_test",
    "weighted_auroc",
    "weighted_expected_calibration_error",
    "wilson_interval",
]


def _check_binary(
    y_true: np.ndarray, y_score: np.ndarray, func: str
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise InvalidInputError(
            f"{func}: y_true and y_score must be 1-d of the same length; "
            f"got shapes {y.shape} and {s.shape}."
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(f"{func}: y_score contains NaN or infinite values.")
    return y.astype(bool), s


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), equal to sklearn's ``roc_auc_score``.

    Returns NaN when only one class is present.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels (nonzero = positive).
    y_score : array-like of shape (n_samples,)
        Scores; higher means more likely positive.

    Examples
    --------
    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _check_binary(np.asarray(y_true), np.asarray(y_score), "auroc")
    return float(weighted_auroc(y, s, np.ones((1, len(y))))[0])


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights`` (e.g. bootstrap counts), vectorised.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,)
    y_score : ndarray of shape (n_samples,)
    weights : ndarray of shape (n_rows, n_samples)
        Non-negative sample weights; row ``b`` gives one AUROC.

    Returns
    -------
    ndarray of shape (n_rows,)
        NaN for a row with no positive or no negative weight.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    w_sorted = w[:, order]
    # Group tied scores: AUROC counts a tie between a positive and a negative as 1/2.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    wpos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)
    wneg = np.add.reduceat(w_sorted * ~y_sorted, starts, axis=1)
    neg_below = np.cumsum(wneg, axis=1) - wneg
    num = (wpos * (neg_below + 0.5 * wneg)).sum(axis=1)
    den = wpos.sum(axis=1) * wneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_counts(
    strata: np.ndarray,
    *,
    n_boot: int,
    random_state: int | np.random.Generator = 0,
    clusters: np.ndarray | None = None,
    rescaled: bool = False,
) -> np.ndarray:
    """Resampling counts of a bootstrap of whole clusters, stratified by ``strata``.

    Each stratum keeps its number of clusters in every resample. With ``clusters``
    (patient ids), whole patients are drawn with replacement and every image of a drawn
    patient is counted. A patient is never split: one whose images fall in several
    strata is resampled as a unit, among the patients whose images span the same
    strata. Build ``strata`` with :func:`resampling_strata`.

    Parameters
    ----------
    strata : array-like of shape (n_samples,)
        Stratum of each sample (e.g. ``group * 2 + label``).
    n_boot : int
        Number of resamples.
    random_state : int or Generator
    clusters : array-like of shape (n_samples,), optional
        Cluster id of each sample.
    rescaled : bool
        Rao & Wu's rescaled bootstrap: ``n - 1`` of a stratum's ``n`` clusters are
        drawn and their counts multiplied by ``n / (n - 1)``, which removes the plain
        bootstrap's ``(n - 1) / n`` shrinkage of the variance (it matters for strata of
        a few patients). The counts are then not integers.

    Returns
    -------
    ndarray of shape (n_boot, n_samples), dtype float64

    References
    ----------
    .. [1] Rao JNK, Wu CFJ. Resampling inference with complex survey data. J Am Stat
           Assoc 83(401):231-241, 1988.

    Examples
    --------
    >>> W = bootstrap_counts(np.array([0, 0, 1, 1, 1]), n_boot=4, random_state=0)
    >>> W.shape, W[:, :2].sum(axis=1).tolist(), W[:, 2:].sum(axis=1).tolist()
    ((4, 5), [2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0])
    >>> W = bootstrap_counts(np.array([0, 1, 0, 1]), n_boot=3, clusters=np.array([7, 7, 8, 9]))
    >>> bool(np.all(W[:, 0] == W[:, 1]))  # patient 7 (both classes) is never split
    True
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise param_error("n_boot", "bootstrap_counts", "a positive integer", n_boot)
    rng = _rng(random_state)
    strata = np.asarray(strata)
    n = len(strata)
    if clusters is None:
        unit = np.arange(n)
    else:
        clusters_arr = np.asarray(clusters)
        if len(clusters_arr) != n:
            raise InvalidInputError("clusters must have one entry per sample.")
        unit = _codes(clusters_arr)
    n_units = int(unit.max()) + 1 if n else 0
    unit_stratum = _unit_strata(unit, _codes(strata), n_units)
    counts = np.zeros((n_boot, n_units), dtype=np.float64)
    for st in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == st)
        k = len(members)
        m = k - 1 if rescaled and k > 1 else k
        draws = rng.integers(0, k, size=(n_boot, m))
        rows = np.repeat(np.arange(n_boot), m)
        np.add.at(counts, (rows, members[draws].ravel()), k / m)
    out: np.ndarray = counts[:, unit]
    return out


def _unit_strata(unit: np.ndarray, stratum: np.ndarray, n_units: int) -> np.ndarray:
    """Stratum of each unit; a unit spanning several strata gets the stratum of that set."""
    pairs = np.unique(np.stack([unit, stratum]), axis=1)
    n_strata = int(stratum.max()) + 1 if len(stratum) else 0
    per_unit = np.bincount(pairs[0], minlength=n_units)
    out = np.zeros(n_units, dtype=np.int64)
    single = per_unit[pairs[0]] == 1
    out[pairs[0][single]] = pairs[1][single]
    multi = np.flatnonzero(per_unit > 1)
    if multi.size:
        starts = np.searchsorted(pairs[0], multi)
        keys = [tuple(pairs[1][s : s + per_unit[u]]) for u, s in zip(multi, starts, strict=True)]
        index = {k: n_strata + i for i, k in enumerate(dict.fromkeys(keys))}
        out[multi] = [index[k] for k in keys]
    return out


def resampling_strata(
    *,
    n_samples: int,
    groups: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    by_class: bool = True,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """Strata of medaudit's bootstrap design, for :func:`bootstrap_counts`.

    Whole patients are resampled within each group, so every group keeps its number of
    patients. Metrics that condition on the class (AUROC, sensitivity, specificity) are
    resampled ``by_class``: images by their class, or with ``clusters`` patients by
    whether they have a positive image (a kind with fewer than two patients in a group
    is pooled with the other), which keeps each class's size about fixed. Metrics that
    depend on the prevalence (PPV, selection rate, Brier score, ECE) must not be:
    ``by_class=False`` lets the class mix vary as it does between samples.

    Parameters
    ----------
    n_samples : int
    groups : array-like of shape (n_samples,), optional
        Group of each image (e.g. the site); one group when None.
    labels : array-like of shape (n_samples,), optional
        Class of each image; required when ``by_class``.
    by_class : bool
    clusters : array-like of shape (n_samples,), optional
        Patient of each image.

    Returns
    -------
    ndarray of shape (n_samples,), dtype int64

    Examples
    --------
    >>> resampling_strata(n_samples=4, groups=np.array(["a", "a", "b", "b"]),
    ...                   labels=np.array([0, 1, 0, 1])).tolist()
    [0, 1, 2, 3]
    >>> resampling_strata(n_samples=4, labels=np.array([0, 1, 0, 1]), by_class=False).tolist()
    [0, 0, 0, 0]
    """
    g = np.zeros(n_samples, np.int64) if groups is None else _codes(np.asarray(groups))
    if len(g) != n_samples:
        raise InvalidInputError("resampling_strata: groups must have one entry per sample.")
    if not by_class:
        return g
    if labels is None:
        raise param_error("labels", "resampling_strata", "an array when by_class=True", None)
    lab = _codes(np.asarray(labels))
    if len(lab) != n_samples:
        raise InvalidInputError("resampling_strata: labels must have one entry per sample.")
    if clusters is None:
        out: np.ndarray = g * (int(lab.max()) + 1 if n_samples else 1) + lab
        return out
    # A patient's profile: has a positive (non-zero class) image or not, within its group.
    unit = _codes(np.stack([g, _codes(np.asarray(clusters))]).T @ np.array([1, n_samples + 1]))
    has_pos = np.zeros(int(unit.max()) + 1 if n_samples else 0, dtype=bool)
    np.logical_or.at(has_pos, unit, lab > 0)
    unit_group = np.zeros(len(has_pos), np.int64)
    unit_group[unit] = g
    kinds = np.zeros((int(g.max()) + 1 if n_samples else 0, 2), np.int64)
    np.add.at(kinds, (unit_group, has_pos.astype(np.int64)), 1)
    split = kinds.min(axis=1) >= 2  # pool a kind with fewer than two patients
    prof = np.where(split[unit_group], has_pos.astype(np.int64), 0)
    out = g * 2 + prof[unit]
    return out


def _codes(a: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(a), return_inverse=True)[1].ravel()


def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs ignored; NaN if all are NaN).

    Examples
    --------
    >>> [round(v, 9) for v in percentile_ci(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    if not 0 < confidence < 1:
        raise param_error("confidence", "percentile_ci", "a float in (0, 1)", confidence)
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    lo, hi = np.quantile(x, [a, 1 - a])
    return (float(lo), float(hi))


def multinomial_counts(
    counts: np.ndarray, *, n_boot: int, random_state: int | np.random.Generator = 0
) -> np.ndarray:
    """Bootstrap resamples of a stratum given as counts over its distinct values.

    Drawing ``n`` items with replacement from a stratum whose distinct values occur
    ``counts[k]`` times gives, for every resample, counts that follow
    ``Multinomial(n, counts / n)``. Working on counts instead of rows makes the cost
    depend on the number of distinct values, not on the number of rows, and is exact.

    Parameters
    ----------
    counts : array-like of shape (n_values,)
        Non-negative integer counts of each distinct value (zeros allowed).
    n_boot : int
        Number of resamples.
    random_state : int or Generator

    Returns
    -------
    ndarray of shape (n_boot, n_values), dtype float64
        Each row sums to ``counts.sum()``.

    Examples
    --------
    >>> W = multinomial_counts(np.array([3, 0, 2]), n_boot=5, random_state=0)
    >>> W.shape, W.sum(axis=1).tolist(), W[:, 1].tolist()
    ((5, 3), [5.0, 5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0])
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise param_error("n_boot", "multinomial_counts", "a positive integer", n_boot)
    rng = _rng(random_state)
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or np.any(c < 0) or not np.all(np.isfinite(c)):
        raise InvalidInputError("multinomial_counts: counts must be a 1-d array of counts >= 0.")
    n = int(round(c.sum()))
    if n == 0 or c.size == 0:
        return np.zeros((n_boot, c.size), dtype=np.float64)
    nz = np.flatnonzero(c)
    out = np.zeros((n_boot, c.size), dtype=np.float64)
    if len(nz) == 1:
        out[:, nz[0]] = n
        return out
    p = c[nz] / n
    out[:, nz] = rng.multinomial(n, p / p.sum(), size=n_boot)
    return out


def random_tables(
    col_counts: np.ndarray,
    row_sizes: np.ndarray,
    *,
    n_draws: int,
    random_state: int | np.random.Generator = 0,
) -> np.ndarray:
    """Random contingency tables with fixed margins (the permutation null), vectorised.

    Randomly permuting group labels among ``N`` items whose values fall in bins with
    ``col_counts`` items each, with ``row_sizes[g]`` items in group ``g``, gives a table
    of counts per (group, bin). This draws such tables directly, by sequential
    hypergeometric draws, without touching individual rows.

    Parameters
    ----------
    col_counts : array-like of shape (n_bins,)
        Items per bin (integers).
    row_sizes : array-like of shape (n_groups,)
        Items per group; must sum to ``col_counts.sum()``.
    n_draws : int
        Number of tables.
    random_state : int or Generator

    Returns
    -------
    ndarray of shape (n_draws, n_groups, n_bins), dtype float64
        Row sums equal ``row_sizes`` and column sums equal ``col_counts`` in every draw.

    Examples
    --------
    >>> T = random_tables(np.array([2, 3, 1]), np.array([4, 2]), n_draws=3)
    >>> T.sum(axis=2).tolist()
    [[4.0, 2.0], [4.0, 2.0], [4.0, 2.0]]
    >>> T.sum(axis=1).tolist()
    [[2.0, 3.0, 1.0], [2.0, 3.0, 1.0], [2.0, 3.0, 1.0]]
    """
    if not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise param_error("n_draws", "random_tables", "a positive integer", n_draws)
    rng = _rng(random_state)
    cols = np.asarray(col_counts).astype(np.int64)
    rows = np.asarray(row_sizes).astype(np.int64)
    if cols.sum() != rows.sum() or np.any(cols < 0) or np.any(rows < 0):
        raise InvalidInputError(
            "random_tables: row_sizes and col_counts must be non-negative with equal totals; "
            f"got totals {int(rows.sum())} and {int(cols.sum())}."
        )
    n_groups, n_bins = len(rows), len(cols)
    out = np.zeros((n_draws, n_groups, n_bins), dtype=np.float64)
    remaining = np.tile(cols, (n_draws, 1))  # items per bin not yet given to a group
    for g in range(n_groups - 1):
        need = np.full(n_draws, rows[g], dtype=np.int64)
        # Items left in bins after k: the "bad" items of bin k's hypergeometric draw.
        left_after = remaining[:, ::-1].cumsum(axis=1)[:, ::-1] - remaining
        for k in range(n_bins):
            if not cols[k]:
                continue
            x = rng.hypergeometric(remaining[:, k], left_after[:, k], need)
            out[:, g, k] = x
            need -= x
        remaining -= out[:, g].astype(np.int64)
    if n_groups:
        out[:, n_groups - 1] = remaining
    return out


def permutation_pvalue(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value ``(1 + #{null >= observed}) / (1 + n_valid)``.

    The "+1" counts the observed arrangement among the permutations, so the p-value is
    never zero and the test keeps its level (Phipson & Smyth 2010). NaN draws are ignored;
    NaN if ``observed`` is NaN or no draw is valid.

    Examples
    --------
    >>> permutation_pvalue(0.3, np.array([0.1, 0.2, 0.35, 0.05]))
    0.4
    """
    t = np.asarray(null, dtype=np.float64)
    t = t[np.isfinite(t)]
    if not np.isfinite(observed) or t.size == 0:
        return float("nan")
    # A tiny tolerance so that a permutation reproducing the observed table counts as >=.
    ge = np.count_nonzero(t >= observed - 1e-12 * max(1.0, abs(observed)))
    return float((1 + ge) / (1 + t.size))


def adjust_pvalues(pvalues: np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjust p-values for multiple testing (Holm or Benjamini-Hochberg).

    Parameters
    ----------
    pvalues : array-like of shape (n_tests,)
        Raw p-values; NaN entries are left NaN and do not count as tests.
    method : {"holm", "bh", "none"}
        ``"holm"`` controls the family-wise error rate (Holm 1979); ``"bh"`` the false
        discovery rate (Benjamini & Hochberg 1995); ``"none"`` returns a copy.

    Returns
    -------
    ndarray of shape (n_tests,)

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(6).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "bh").round(6).tolist()
    [0.03, 0.04, 0.04]
    """
    if method not in ("holm", "bh", "none"):
        raise param_error("method", "adjust_pvalues", "one of ('holm', 'bh', 'none')", method)
    p = np.asarray(pvalues, dtype=np.float64).copy()
    if p.ndim != 1:
        raise InvalidInputError("adjust_pvalues: pvalues must be 1-d.")
    ok = np.flatnonzero(np.isfinite(p))
    if method == "none" or ok.size == 0:
        return p
    q = p[ok]
    m = q.size
    order = np.argsort(q, kind="mergesort")
    ranked = q[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    res = np.empty(m)
    res[order] = adj
    p[ok] = res
    return p


def _rng(random_state: int | np.random.Generator) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def calibration_bins(y_prob: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Index of the equal-width bin of each probability: bin ``j`` is ``[j/n, (j+1)/n)``.

    The last bin is closed at 1. Every ECE and reliability table in medaudit bins this way.

    Examples
    --------
    >>> calibration_bins(np.array([0.0, 0.1, 0.3, 0.99, 1.0]), 10).tolist()
    [0, 1, 3, 9, 9]
    """
    # j / n_bins is correctly rounded (np.linspace is not: its 0.3 is 0.30000000000000004,
    # which would put a probability of exactly 0.3 into the bin below).
    edges = np.arange(1, n_bins) / n_bins
    return np.searchsorted(edges, np.asarray(y_prob, dtype=np.float64), side="right")


def expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 10
) -> float:
    """Expected calibration error of positive-class probabilities (equal-width bins).

    ``ECE = Σ_j (n_j / n) · |mean(y_prob in bin j) − mean(y_true in bin j)|``, the binary
    reliability form of Guo et al. (2017); bins as in :func:`calibration_bins`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    n_bins : int
        Number of bins.

    References
    ----------
    .. [1] Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural
           networks. ICML 2017.

    Examples
    --------
    >>> round(expected_calibration_error([0, 1, 1, 0], [0.2, 0.8, 0.6, 0.4]), 6)
    0.3
    >>> expected_calibration_error([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0])
    0.0
    """
    y, p = _check_calibration_input(y_true, y_prob, n_bins)
    return float(weighted_expected_calibration_error(y, p, np.ones((1, len(y))), n_bins=n_bins)[0])


def weighted_expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray, *, n_bins: int = 10
) -> np.ndarray:
    """ECE for each row of ``weights`` (e.g. bootstrap counts), vectorised.

    Parameters
    ----------
    y_true, y_prob : ndarray of shape (n_samples,)
    weights : ndarray of shape (n_rows, n_samples)
    n_bins : int

    Returns
    -------
    ndarray of shape (n_rows,)
        NaN for a row with no weight.
    """
    y, p = _check_calibration_input(y_true, y_prob, n_bins)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    onehot = np.zeros((len(y), n_bins))
    onehot[np.arange(len(y)), calibration_bins(p, n_bins)] = 1.0
    gap = (w * (p - y)) @ onehot
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.abs(gap).sum(axis=1) / np.where(total > 0, total, np.nan)
    return out


def _check_calibration_input(
    y_true: np.ndarray, y_prob: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise param_error("n_bins", "expected_calibration_error", "a positive integer", n_bins)
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise InvalidInputError(
            "expected_calibration_error: y_true and y_prob must be non-empty, 1-d and "
            f"of the same length; got shapes {y.shape} and {p.shape}."
        )
    return y, p


def wilson_interval(
    k: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``k / n``, vectorised.

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage for
    small ``n`` and proportions near 0 or 1 — the usual case for per-site prevalence.

    Parameters
    ----------
    k : int or ndarray
        Number of successes.
    n : int or ndarray
        Number of trials (NaN interval where ``n == 0``).
    confidence : float, default 0.95

    Returns
    -------
    (low, high) : tuple of ndarray

    References
    ----------
    .. [1] Wilson EB. J Am Stat Assoc 22(158):209-212, 1927.

    Examples
    --------
    >>> lo, hi = wilson_interval(5, 10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.2366, 0.7634)
    """
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise param_error("confidence", "wilson_interval", "a float in (0, 1)", confidence)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    # stdlib quantile (Wichura's AS241, ~1e-16): avoids importing scipy.stats (seconds).
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        # k = 0 and k = n give exactly 0 and 1; say so instead of leaving rounding dust.
        lo = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        hi = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
        lo = np.where(n > 0, lo, np.nan)
        hi = np.where(n > 0, hi, np.nan)
    return lo, hi
