"""Statistics shared by every audit: exact AUROC, vectorised stratified bootstrap, CIs.

The bootstrap resamples **within each stratum** (group × class) and, when patient ids are
given, **by patient** (a resampled patient brings all of its images). Resamples are
represented as a count matrix ``W`` of shape (n_boot, n_samples): ``W[b, i]`` is how
often sample ``i`` appears in resample ``b``. Weighted metrics then evaluate all
resamples at once, with no Python loop over rows.

References
----------
.. [1] Efron B, Tibshirani R. An Introduction to the Bootstrap. Chapman & Hall, 1993.
.. [2] Hanley JA, McNeil BJ. The meaning and use of the area under a ROC curve.
       Radiology 143(1):29-36, 1982.
"""

from __future__ import annotations

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "auroc",
    "bootstrap_counts",
    "percentile_ci",
    "weighted_auroc",
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
) -> np.ndarray:
    """Resampling counts of a bootstrap stratified by ``strata``, optionally by cluster.

    Each stratum keeps its size in every resample (so a group's class balance is fixed).
    With ``clusters`` (e.g. patient ids), whole clusters are drawn with replacement within
    each stratum, and every image of a drawn cluster is counted.

    Parameters
    ----------
    strata : array-like of shape (n_samples,)
        Stratum of each sample (e.g. ``group * 2 + label``).
    n_boot : int
        Number of resamples.
    random_state : int or Generator
    clusters : array-like of shape (n_samples,), optional
        Cluster id of each sample.

    Returns
    -------
    ndarray of shape (n_boot, n_samples), dtype float64

    Examples
    --------
    >>> W = bootstrap_counts(np.array([0, 0, 1, 1, 1]), n_boot=4, random_state=0)
    >>> W.shape, W[:, :2].sum(axis=1).tolist(), W[:, 2:].sum(axis=1).tolist()
    ((4, 5), [2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0])
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise param_error("n_boot", "bootstrap_counts", "a positive integer", n_boot)
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )
    strata = np.asarray(strata)
    n = len(strata)
    out = np.zeros((n_boot, n), dtype=np.float64)
    if clusters is None:
        clusters_arr = np.arange(n)
    else:
        clusters_arr = np.asarray(clusters)
        if len(clusters_arr) != n:
            raise InvalidInputError("clusters must have one entry per sample.")
    # Unit of resampling: (stratum, cluster). A cluster spanning two strata (a patient with
    # a positive and a negative image) is resampled in each stratum separately.
    _, unit = np.unique(
        np.stack([_codes(strata), _codes(clusters_arr)]), axis=1, return_inverse=True
    )
    unit = unit.ravel()
    n_units = unit.max() + 1 if n else 0
    unit_stratum = np.empty(n_units, dtype=np.int64)
    unit_stratum[unit] = _codes(strata)
    for st in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == st)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        counts = np.zeros((n_boot, n_units), dtype=np.float64)
        rows = np.repeat(np.arange(n_boot), len(members))
        np.add.at(counts, (rows, members[draws].ravel()), 1.0)
        in_st = unit_stratum[unit] == st
        out[:, in_st] = counts[:, unit[in_st]]
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
