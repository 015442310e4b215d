"""Does the gap survive? Test-set resampling (Glocker) and KS tests of feature modes.

- **Resampling**: each attribute level is reweighted so that its mix of label and age
  (or any ``match_on`` columns, numbers in quartiles) equals the pooled mix; per-level
  AUROC and sensitivity are compared before and after. Weighting by
  ``P_pooled(cell) / P_level(cell)`` is the expectation of Glocker et al.'s resampling
  without its sampling noise. A gap that remains after matching is not explained by
  differences in prevalence or age.
- **KS tests**: the first principal modes of the penultimate features, and the logits,
  are compared between each level and the rest with two-sample Kolmogorov-Smirnov tests
  (scipy's), using one image per patient so the test's independence assumption holds;
  p-values are corrected for multiple testing across the attribute's tests.

References
----------
.. [1] Glocker B, Jones C, Bernhardt M, Winzeck S. Algorithmic encoding of protected
       characteristics in chest X-ray disease detection models. eBioMedicine 89:104467,
       2023 (and its chexploration code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from medaudit.shortcuts._clustered import ClusteredEstimate, auroc_estimate, mean_estimate
from medaudit.stats import adjust_pvalues

__all__ = [
    "MatchedGaps",
    "feature_modes",
    "ks_tests",
    "matched_gaps",
    "matching_weights",
    "one_per_patient",
]


def matching_weights(
    levels: np.ndarray, cells: np.ndarray, n_levels: int
) -> tuple[np.ndarray, float]:
    """Weights that give every level the pooled distribution over ``cells``.

    Returns the weights (mean 1 within each level) and the largest share of the pooled
    distribution that some level cannot match (its cells are empty there); those cells
    are left out for that level.

    Examples
    --------
    >>> w, miss = matching_weights(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 0, 1, 1]), 2)
    >>> w.round(3).tolist(), miss
    ([0.75, 0.75, 1.5, 1.5, 0.75, 0.75], 0.0)
    """
    lv = np.asarray(levels)
    cl = np.unique(np.asarray(cells), return_inverse=True)[1].ravel()
    n_cells = int(cl.max()) + 1 if cl.size else 0
    pooled = np.bincount(cl[lv >= 0], minlength=n_cells).astype(np.float64)
    pooled /= max(pooled.sum(), 1.0)
    w = np.zeros(len(lv))
    worst_missing = 0.0
    for j in range(n_levels):
        m = lv == j
        if not m.any():
            continue
        own = np.bincount(cl[m], minlength=n_cells).astype(np.float64)
        have = own > 0
        worst_missing = max(worst_missing, float(pooled[~have].sum()))
        target = np.where(have, pooled, 0.0)
        target /= max(target.sum(), 1e-12)
        ratio = np.where(have, target / np.where(have, own / own.sum(), 1.0), 0.0)
        w[m] = ratio[cl[m]]
    return w, worst_missing


def match_cells(meta: pd.DataFrame, labels: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Cell of each sample: its label crossed with each ``columns`` (numbers in quartiles)."""
    keys = [np.asarray(labels).astype(str)]
    for name in columns:
        col = meta[name]
        if pd.api.types.is_numeric_dtype(col) and col.nunique() > 4:
            q = np.nanquantile(col.to_numpy(dtype=np.float64), [0.25, 0.5, 0.75])
            keys.append(np.searchsorted(q, col.to_numpy(dtype=np.float64), "right").astype(str))
        else:
            keys.append(col.astype(str).to_numpy())
    return np.array(["|".join(t) for t in zip(*keys, strict=True)], dtype=object)


@dataclass(frozen=True, eq=False)
class MatchedGaps:
    """Per-level AUROC and sensitivity, before and after matching, and the gaps.

    Attributes
    ----------
    table : DataFrame
        One row per level: ``level``, ``n``, ``prevalence``, ``auroc``, ``auroc_matched``,
        ``sensitivity``, ``sensitivity_matched``.
    gaps : DataFrame
        One row per metric: ``metric``, ``gap``, ``gap_low``, ``gap_high`` (before) and
        ``gap_matched``, ``gap_matched_low``, ``gap_matched_high``, ``remains`` (the
        matched gap's simultaneous CI excludes zero), ``levels`` (the extreme pair).
    matched_on : tuple of str
    unmatched_share : float
        Largest share of the pooled mix some level could not match.
    """

    table: pd.DataFrame
    gaps: pd.DataFrame
    matched_on: tuple[str, ...]
    unmatched_share: float


def _extreme_gap(
    ests: dict[str, ClusteredEstimate], confidence: float
) -> tuple[float, float, float, str]:
    """Gap between the best and worst level, with an interval valid for every pair."""
    ok = {k: e for k, e in ests.items() if np.isfinite(e.value)}
    if len(ok) < 2:
        return (float("nan"), float("nan"), float("nan"), "")
    hi = max(ok, key=lambda k: ok[k].value)
    lo = min(ok, key=lambda k: ok[k].value)
    m = len(ok) * (len(ok) - 1) / 2  # Bonferroni over all pairs: the pair was picked
    conf = 1 - (1 - confidence) / m
    diff = ok[hi] - ok[lo]
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    se = diff.se
    return diff.value, diff.value - z * se, diff.value + z * se, f"{hi} - {lo}"


def matched_gaps(
    labels: np.ndarray,
    score: np.ndarray,
    levels: np.ndarray,
    level_names: Sequence[str],
    patients: np.ndarray,
    cells: np.ndarray,
    *,
    matched_on: Sequence[str],
    threshold: float = 0.5,
    min_count: int = 5,
    confidence: float = 0.95,
) -> MatchedGaps:
    """Per-level AUROC and sensitivity before and after matching the label/age mix.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400); lv = rng.integers(0, 2, 400)
    >>> s = y + rng.normal(0, 1, 400)
    >>> res = matched_gaps(y, s, lv, ["a", "b"], np.arange(400), y.astype(str), matched_on=[])
    >>> res.table["level"].tolist(), bool(res.gaps.set_index("metric").loc["auroc", "remains"])
    (['a', 'b'], False)
    """
    y = np.asarray(labels) > 0
    s = np.asarray(score, dtype=np.float64)
    lv = np.asarray(levels)
    pt = np.asarray(patients, dtype=np.int64)
    k = int(pt.max()) + 1 if pt.size else 0
    w, missing = matching_weights(lv, cells, len(level_names))
    rows = []
    est: dict[str, dict[str, ClusteredEstimate]] = {
        m: {} for m in ("auroc", "auroc_m", "sens", "sens_m")
    }
    for j, name in enumerate(level_names):
        m = lv == j
        n_pos, n_neg = int((m & y).sum()), int((m & ~y).sum())
        if n_pos < min_count or n_neg < min_count:
            continue
        est["auroc"][name] = auroc_estimate(y[m], s[m], pt[m], n_clusters=k)
        est["auroc_m"][name] = auroc_estimate(y[m], s[m], pt[m], n_clusters=k, weights=w[m])
        pos = m & y
        hit = s[pos] >= threshold
        est["sens"][name] = mean_estimate(hit, pt[pos], n_clusters=k, bounded=True)
        est["sens_m"][name] = mean_estimate(
            hit, pt[pos], n_clusters=k, bounded=True, weights=w[pos]
        )
        rows.append(
            {
                "level": name,
                "n": int(m.sum()),
                "prevalence": float(y[m].mean()),
                "auroc": est["auroc"][name].value,
                "auroc_matched": est["auroc_m"][name].value,
                "sensitivity": est["sens"][name].value,
                "sensitivity_matched": est["sens_m"][name].value,
            }
        )
    gaps = []
    for metric, before, after in (("auroc", "auroc", "auroc_m"), ("sensitivity", "sens", "sens_m")):
        g, g_lo, g_hi, pair = _extreme_gap(est[before], confidence)
        gm, gm_lo, gm_hi, pair_m = _extreme_gap(est[after], confidence)
        gaps.append(
            {
                "metric": metric,
                "gap": g,
                "gap_low": g_lo,
                "gap_high": g_hi,
                "levels": pair,
                "gap_matched": gm,
                "gap_matched_low": gm_lo,
                "gap_matched_high": gm_hi,
                "levels_matched": pair_m,
                "remains": bool(np.isfinite(gm_lo) and gm_lo > 0),
            }
        )
    return MatchedGaps(
        table=pd.DataFrame(
            rows,
            columns=[
                "level",
                "n",
                "prevalence",
                "auroc",
                "auroc_matched",
                "sensitivity",
                "sensitivity_matched",
            ],
        ),
        gaps=pd.DataFrame(gaps),
        matched_on=("label", *matched_on),
        unmatched_share=missing,
    )


# -- KS tests of feature modes and logits ------------------------------------------------


def one_per_patient(patients: np.ndarray, random_state: int = 0) -> np.ndarray:
    """Row indices of one randomly chosen image per patient (sorted)."""
    pt = np.asarray(patients)
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(pt))
    _, first = np.unique(pt[order], return_index=True)
    return np.sort(order[first])


def feature_modes(features: np.ndarray, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Projections on the first ``n_modes`` principal modes of standardised features.

    Returns the projections (n, n_modes) and each mode's share of the variance.
    """
    x = np.asarray(features, dtype=np.float64)
    sd = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_modes, vt.shape[0])
    var = sv**2
    return x @ vt[:k].T, var[:k] / max(var.sum(), 1e-12)


def ks_tests(
    values: dict[str, np.ndarray],
    levels: np.ndarray,
    level_names: Sequence[str],
    *,
    min_count: int = 10,
    p_adjust: str = "holm",
) -> pd.DataFrame:
    """Two-sample KS test of each variable between each level and the rest.

    Parameters
    ----------
    values : dict of str to ndarray of shape (n,)
        Variables (``"mode 1"``, ..., ``"logit"``), one value per patient.
    levels : ndarray of int of shape (n,)
    level_names : sequence of str
    min_count : int
        Fewer values than this on either side: the test is left out.
    p_adjust : {"holm", "bh", "none"}
        Correction across all tests of the attribute.

    Returns
    -------
    DataFrame
        ``variable``, ``level``, ``n_level``, ``n_rest``, ``ks``, ``p_value``,
        ``p_adjusted``, ``differs`` (adjusted p < 0.05).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lv = np.repeat([0, 1], 50)
    >>> v = rng.normal(size=100) + 2.0 * lv
    >>> ks_tests({"mode 1": v}, lv, ["a", "b"])[["level", "differs"]].values.tolist()
    [['b', True]]
    """
    from scipy.stats import ks_2samp

    lv = np.asarray(levels)
    pairs = [(j, name) for j, name in enumerate(level_names)]
    if len(pairs) == 2:  # two levels: "level 1 vs the rest" is the only comparison
        pairs = pairs[1:]
    rows = []
    for var, v in values.items():
        for j, name in pairs:
            a, b = v[lv == j], v[(lv >= 0) & (lv != j)]
            if len(a) < min_count or len(b) < min_count:
                continue
            res = ks_2samp(a, b)
            rows.append(
                {
                    "variable": var,
                    "level": name,
                    "n_level": len(a),
                    "n_rest": len(b),
                    "ks": float(res.statistic),
                    "p_value": float(res.pvalue),
                }
            )
    df = pd.DataFrame(rows, columns=["variable", "level", "n_level", "n_rest", "ks", "p_value"])
    df["p_adjusted"] = adjust_pvalues(df["p_value"].to_numpy(), p_adjust) if len(df) else []
    df["differs"] = df["p_adjusted"] < 0.05
    return df
