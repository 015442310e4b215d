"""Vectorised group metrics on score histograms: point estimates, bootstrap, permutations.

Every metric medaudit reports for a group depends on the data only through the counts
of each distinct score value among the group's positives and negatives. So the data of
one grouping (one attribute) is held as a histogram per *stratum* (class x group) over a
sorted support of score values, and a bootstrap resample or a permutation is a new set
of counts on the same support:

- **exact** support: the distinct score values. The point estimates equal scikit-learn's
  and a multinomial draw of counts *is* the nonparametric bootstrap, only cheaper when
  scores repeat;
- **binned** support (large data): fine quantile bins whose edges include the operating
  threshold and the calibration-bin edges, so threshold metrics stay exact; AUROC,
  Brier and ECE replicates are shifted by (exact - binned) point estimate.

The cost of a resample is the size of the support, not the number of rows, and all
resamples of a chunk are evaluated at once as ``(n_resamples, n_support)`` arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from medaudit.stats import calibration_bins, multinomial_counts

__all__ = [
    "Hist",
    "build_hist",
    "evaluate",
    "iter_bootstrap",
    "iter_permutations",
    "sorted_union",
]

ENGINE_METRICS: tuple[str, ...] = (
    "count",
    "prevalence",
    "auroc",
    "true_positive_rate",
    "true_negative_rate",
    "false_positive_rate",
    "false_negative_rate",
    "ppv",
    "selection_rate",
    "balanced_accuracy",
    "brier_score",
    "ece",
)


@dataclass
class Hist:
    """Counts per (class, group) over a sorted support; built by :func:`build_hist`.

    ``codes[c][g]`` are sorted support indices present in stratum (c, g) and
    ``counts[c][g]`` their counts; ``units[c][g]`` (clustered data) is a sparse
    (n_units, n_codes) matrix of images per (patient, support point).
    """

    grid: np.ndarray
    n_groups: int
    codes: list[list[np.ndarray]]
    counts: list[list[np.ndarray]]
    units: list[list[sp.csr_matrix | None]] | None
    threshold: float
    n_bins: int

    def __post_init__(self) -> None:
        self.vals = [[self.grid[c] for c in row] for row in self.codes]
        self.ece_bin = [[calibration_bins(v, self.n_bins) for v in row] for row in self.vals]
        self._features: list[list[np.ndarray]] | None = None
        k = len(self.grid)
        self.auc_lohi = [_lohi(self.codes[0][g], self.codes[1][g], k) for g in range(self.n_groups)]
        self.union = []
        for c in (0, 1):
            u = sorted_union(self.codes[c], k)
            self.union.append(
                (u, [_positions(u, self.codes[c][g], k) for g in range(self.n_groups)])
            )
        self.union_lohi = _lohi(self.union[0][0], self.union[1][0], k)

    @property
    def features(self) -> list[list[np.ndarray]]:
        """Per stratum, the matrix that turns resample counts into additive statistics.

        Columns: [1, predicted positive, s, s^2, ECE-bin one-hot, ECE-bin one-hot * s],
        so one matrix product gives every count and sum a metric needs.
        """
        if self._features is None:
            feats = []
            for row_v, row_b in zip(self.vals, self.ece_bin, strict=True):
                out = []
                for v, eb in zip(row_v, row_b, strict=True):
                    f = np.zeros((len(v), 4 + 2 * self.n_bins))
                    f[:, 0] = 1.0
                    f[:, 1] = v >= self.threshold
                    f[:, 2] = v
                    f[:, 3] = v * v
                    rows = np.arange(len(v))
                    f[rows, 4 + eb] = 1.0
                    f[rows, 4 + self.n_bins + eb] = v
                    out.append(f)
                feats.append(out)
            self._features = feats
        return self._features

    def additive(self, c: int, g: int, w: np.ndarray) -> np.ndarray:
        """Additive statistics of stratum (c, g) for resample counts ``w`` (n_rows, n_codes)."""
        j = self.n_bins
        if w.shape[0] > 2:
            return w @ self.features[c][g]
        # Few rows (point estimates): avoid building the (n_codes, 4 + 2j) matrix.
        v = self.vals[c][g]
        eb = self.ece_bin[c][g]
        pos = v >= self.threshold
        out = np.empty((w.shape[0], 4 + 2 * j))
        for r in range(w.shape[0]):
            wr = w[r]
            out[r, 0] = wr.sum()
            out[r, 1] = wr[pos].sum()
            out[r, 2] = wr @ v
            out[r, 3] = wr @ (v * v)
            out[r, 4 : 4 + j] = np.bincount(eb, weights=wr, minlength=j)
            out[r, 4 + j :] = np.bincount(eb, weights=wr * v, minlength=j)
        return out

    @property
    def support_size(self) -> int:
        """Total number of (stratum, support point) cells."""
        return int(sum(len(c) for row in self.codes for c in row))

    def class_counts(self) -> np.ndarray:
        """Array of shape (2, n_groups): negatives and positives per group."""
        return np.array([[self.counts[c][g].sum() for g in range(self.n_groups)] for c in (0, 1)])

    def base_weights(self) -> list[list[np.ndarray]]:
        """The observed counts as a single 'resample' (for point estimates)."""
        return [[cnt[None, :] for cnt in row] for row in self.counts]


def build_hist(
    codes: np.ndarray,
    grid: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    *,
    threshold: float,
    n_bins: int = 10,
    clusters: np.ndarray | None = None,
) -> Hist:
    """Histogram of ``codes`` (indices into the sorted ``grid``) per (class, group).

    Parameters
    ----------
    codes : ndarray of shape (n,)
        Support index of each row's score.
    grid : ndarray of shape (n_support,)
        Score value of each support point, ascending.
    y : ndarray of shape (n,), bool
    groups : ndarray of shape (n,), int in [0, n_groups)
    clusters : ndarray of shape (n,), int, optional
        Patient code of each row (cluster bootstrap).
    """
    k = len(grid)
    stratum = groups.astype(np.int64) * 2 + y.astype(np.int64)
    n_strata = 2 * n_groups
    cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    units_out: list[list[sp.csr_matrix | None]] | None = None
    if clusters is None:
        key = stratum * k + codes.astype(np.int64)
        if n_strata * k <= 100_000_000:
            full = np.bincount(key, minlength=n_strata * k)
            uk = np.flatnonzero(full)
            cnt = full[uk].astype(np.float64)
        else:
            uk, cnt_i = np.unique(key, return_counts=True)
            cnt = cnt_i.astype(np.float64)
        st = uk // k
        bounds = np.searchsorted(st, np.arange(n_strata + 1))
        for s in range(n_strata):
            sl = slice(bounds[s], bounds[s + 1])
            cells[(s % 2, s // 2)] = (uk[sl] - s * k, cnt[sl])
    else:
        _, ucl = np.unique(clusters, return_inverse=True)
        ucl = ucl.ravel().astype(np.int64)
        n_cl = int(ucl.max()) + 1 if len(ucl) else 1
        key = (stratum * n_cl + ucl) * k + codes.astype(np.int64)
        uk, cnt_i = np.unique(key, return_counts=True)
        code_of = uk % k
        su = uk // k  # stratum * n_cl + cluster
        st = su // n_cl
        bounds = np.searchsorted(st, np.arange(n_strata + 1))
        units_out = [[None] * n_groups, [None] * n_groups]
        for s in range(n_strata):
            sl = slice(bounds[s], bounds[s + 1])
            c_codes = code_of[sl]
            sup, col = np.unique(c_codes, return_inverse=True)
            _, row = np.unique(su[sl], return_inverse=True)
            n_units = int(row.max()) + 1 if row.size else 0
            m = sp.csr_matrix(
                (cnt_i[sl].astype(np.float64), (row.ravel(), col.ravel())),
                shape=(n_units, len(sup)),
            )
            cells[(s % 2, s // 2)] = (sup, np.asarray(m.sum(axis=0)).ravel())
            units_out[s % 2][s // 2] = m
    codes_l = [[cells[(c, g)][0] for g in range(n_groups)] for c in (0, 1)]
    counts_l = [[cells[(c, g)][1] for g in range(n_groups)] for c in (0, 1)]
    return Hist(grid, n_groups, codes_l, counts_l, units_out, float(threshold), n_bins)


def _dense_ok(size: int, total: int) -> bool:
    return size <= 4 * total + 1024


def _lohi(neg: np.ndarray, pos: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each code in ``pos``: how many ``neg`` codes are < it, and <= it (both sorted)."""
    if not _dense_ok(size, len(neg) + len(pos)):
        return np.searchsorted(neg, pos, side="left"), np.searchsorted(neg, pos, side="right")
    present = np.zeros(size + 1, dtype=np.int64)
    present[neg + 1] = 1
    below = np.cumsum(present)  # below[c] = number of neg codes < c
    lo = below[pos]
    return lo, lo + present[pos + 1]


def _positions(sorted_all: np.ndarray, sub: np.ndarray, size: int) -> np.ndarray:
    """Index in ``sorted_all`` of each element of ``sub`` (a subset of it)."""
    if not _dense_ok(size, len(sorted_all)):
        return np.searchsorted(sorted_all, sub)
    where = np.zeros(size, dtype=np.int64)
    where[sorted_all] = np.arange(len(sorted_all))
    return where[sub]


def sorted_union(arrays: list[np.ndarray], size: int) -> np.ndarray:
    """Sorted distinct values of integer arrays in [0, size), in O(size + total length)."""
    if not _dense_ok(size, sum(len(a) for a in arrays)):
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)
    present = np.zeros(size, dtype=bool)
    for a in arrays:
        present[a] = True
    return np.flatnonzero(present)


def _cum0(w: np.ndarray) -> np.ndarray:
    out = np.zeros((w.shape[0], w.shape[1] + 1))
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _auc(wp: np.ndarray, wn: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    # Mann-Whitney: each positive counts the negatives strictly below plus half the ties.
    cum = _cum0(wn)
    num = np.einsum("bk,bk->b", wp, cum[:, lo] + cum[:, hi]) * 0.5
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def evaluate(h: Hist, w: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Every engine metric for each resample, per group and overall.

    Parameters
    ----------
    h : Hist
    w : list over class of list over group of ndarray of shape (n_rows, n_codes)
        Counts on each stratum's support (one row per resample).

    Returns
    -------
    dict of str to ndarray of shape (n_rows, n_groups + 1)
        Column ``g`` is group ``g``; the last column is all groups together.
    """
    n_g = h.n_groups
    b = w[0][0].shape[0]
    j = h.n_bins
    n_f = 4 + 2 * j
    # stats[c][:, g, :] = resample counts of stratum (c, g) @ its feature matrix.
    stats = [np.zeros((b, n_g + 1, n_f)), np.zeros((b, n_g + 1, n_f))]
    for c in (0, 1):
        for g in range(n_g):
            if w[c][g].shape[1]:
                stats[c][:, g, :] = h.additive(c, g, w[c][g])
        stats[c][:, n_g, :] = stats[c][:, :n_g, :].sum(axis=1)
    n = [stats[c][..., 0] for c in (0, 1)]
    above = [stats[c][..., 1] for c in (0, 1)]
    s1 = [stats[c][..., 2] for c in (0, 1)]
    s2 = [stats[c][..., 3] for c in (0, 1)]
    e_cnt = [stats[c][..., 4 : 4 + j] for c in (0, 1)]
    e_sum = [stats[c][..., 4 + j :] for c in (0, 1)]
    shape = (b, n_g + 1)
    auc = np.empty(shape)
    for g in range(n_g):
        lo, hi = h.auc_lohi[g]
        auc[:, g] = _auc(w[1][g], w[0][g], lo, hi)
    union = []
    for c in (0, 1):
        u, pos = h.union[c]
        wu = np.zeros((b, len(u)))
        for g in range(n_g):
            wu[:, pos[g]] += w[c][g]
        union.append(wu)
    auc[:, n_g] = _auc(union[1], union[0], *h.union_lohi)
    n0, n1 = n
    tot = n0 + n1
    tp, fp = above[1], above[0]
    out: dict[str, np.ndarray] = {"count": tot}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["prevalence"] = n1 / tot
        out["auroc"] = auc
        tpr = tp / n1
        fpr = fp / n0
        out["true_positive_rate"] = tpr
        out["true_negative_rate"] = (n0 - fp) / n0
        out["false_positive_rate"] = fpr
        out["false_negative_rate"] = (n1 - tp) / n1
        out["ppv"] = tp / (tp + fp)
        out["selection_rate"] = (tp + fp) / tot
        out["balanced_accuracy"] = 0.5 * (tpr + (n0 - fp) / n0)
        out["brier_score"] = (s2[1] - 2.0 * s1[1] + n1 + s2[0]) / tot
        out["ece"] = np.abs(e_sum[0] + e_sum[1] - e_cnt[1]).sum(axis=2) / tot
    return out


def _chunk_size(h: Hist, n_boot: int, budget_bytes: float = 2.0e8) -> int:
    # About a dozen (chunk, support) float64 temporaries are alive at once.
    per_row = 8.0 * 12 * max(1, h.support_size)
    return int(max(1, min(n_boot, budget_bytes // per_row)))


def _resample(counts: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial resample counts; by drawing rows when values are mostly distinct.

    Both are the same distribution; a multinomial costs about twice as much per support
    point as a row draw, so rows are drawn when there are fewer than two per point.
    """
    n = int(round(counts.sum()))
    k = len(counts)
    if n == 0 or n >= 2 * k:
        return multinomial_counts(counts, n_boot=b, random_state=rng)
    item = np.repeat(np.arange(k), counts.astype(np.int64))
    draws = rng.integers(0, n, size=(b, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)
    out = np.empty((b, k))
    for r in range(b):  # one row at a time keeps the counts array in cache
        out[r] = np.bincount(item[draws[r]], minlength=k)
    return out


def iter_bootstrap(
    h: Hist, n_boot: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    """Yield :func:`evaluate` results for chunks of stratified bootstrap resamples.

    Each (class, group) stratum is resampled to its own size; with clusters, whole
    patients are drawn within each stratum and bring all their images.
    """
    chunk = _chunk_size(h, n_boot)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        w: list[list[np.ndarray]] = [[], []]
        for c in (0, 1):
            for g in range(h.n_groups):
                if h.units is None:
                    w[c].append(_resample(h.counts[c][g], b, rng))
                else:
                    m = h.units[c][g]
                    if m is None:  # an empty group x class: nothing to resample
                        w[c].append(np.zeros((b, 0)))
                        continue
                    n_units = m.shape[0]
                    if n_units == 0:
                        w[c].append(np.zeros((b, m.shape[1])))
                        continue
                    drawn = multinomial_counts(np.ones(n_units), n_boot=b, random_state=rng)
                    w[c].append(np.asarray((m.T @ drawn.T).T))
        yield evaluate(h, w)
        done += b


def iter_permutations(
    h: Hist, n_perm: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    """Yield :func:`evaluate` results for chunks of within-class group-label permutations.

    ``h`` must have a dense support shared by all strata (as built on a coarse grid with
    every code present); group sizes per class are kept, which is the null "scores of
    each class do not depend on the group".
    """
    from medaudit.stats import random_tables

    k = len(h.grid)
    dense = [[np.zeros(k) for _ in range(h.n_groups)] for _ in (0, 1)]
    for c in (0, 1):
        for g in range(h.n_groups):
            dense[c][g][h.codes[c][g]] = h.counts[c][g]
    full = np.arange(k)
    hd = Hist(
        h.grid,
        h.n_groups,
        [[full] * h.n_groups for _ in (0, 1)],
        [list(row) for row in dense],
        None,
        h.threshold,
        h.n_bins,
    )
    chunk = _chunk_size(hd, n_perm)
    done = 0
    while done < n_perm:
        b = min(chunk, n_perm - done)
        w: list[list[np.ndarray]] = [[], []]
        for c in (0, 1):
            col = np.sum(dense[c], axis=0)
            rows = np.array([d.sum() for d in dense[c]])
            t = random_tables(col, rows, n_draws=b, random_state=rng)
            w[c] = [t[:, g, :] for g in range(h.n_groups)]
        yield evaluate(hd, w)
        done += b
