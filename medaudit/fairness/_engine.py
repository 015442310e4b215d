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
  threshold and the calibration-bin edges, so threshold metrics and the calibration
  terms stay exact; AUROC and Brier replicates are shifted by (exact - binned) point
  estimate.

The resampling design is the one of :func:`medaudit.stats.resampling_strata`: whole
patients (all their images, both classes) within each group; for the metrics that
condition on the class (``scheme="class"``) also within the patient's class profile
(with or without a positive image); for the metrics that depend on the prevalence
(``scheme="group"``) not. Without patient ids every image is a patient. Each stratum of
``n`` patients is resampled Rao & Wu's way: ``n - 1`` draws, counts scaled by
``n / (n - 1)``, so that a group of 25 patients or a class of 6 images does not get an
interval that is too narrow.

References: Rao JNK, Wu CFJ. Resampling inference with complex survey data. J Am Stat
Assoc 83(401):231-241, 1988.

The cost of a resample is the size of the support (or the number of patients), not the
number of rows, and all resamples of a chunk are evaluated at once as
``(n_resamples, n_support)`` arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from medaudit.stats import calibration_bins, random_tables

__all__ = [
    "CLASS_METRICS",
    "GROUP_METRICS",
    "SCHEMES",
    "Hist",
    "build_hist",
    "evaluate",
    "iter_bootstrap",
    "iter_permutations",
    "sorted_union",
]

#: Metrics resampled with the class profile fixed (they condition on the class).
CLASS_METRICS: tuple[str, ...] = (
    "auroc",
    "true_positive_rate",
    "true_negative_rate",
    "false_positive_rate",
    "false_negative_rate",
    "balanced_accuracy",
)
#: Metrics resampled with the class mix free (they depend on the prevalence).
GROUP_METRICS: tuple[str, ...] = (
    "count",
    "prevalence",
    "ppv",
    "selection_rate",
    "brier_score",
    "ece_contribution",
    "ece_share",
)
SCHEMES: tuple[str, ...] = ("class", "group")


@dataclass
class GroupUnits:
    """The patients of one group: images per (patient, class-0 code | class-1 code).

    ``matrix`` is sparse of shape (n_patients, n_codes_0 + n_codes_1); ``profile`` is
    the patient's class-profile stratum (see :func:`_profiles`).
    """

    matrix: sp.csr_matrix
    profile: np.ndarray
    split: int


@dataclass
class Hist:
    """Counts per (class, group) over a sorted support; built by :func:`build_hist`.

    ``codes[c][g]`` are sorted support indices present in stratum (c, g) and
    ``counts[c][g]`` their counts; ``units[g]`` (clustered data) holds group ``g``'s
    patients.
    """

    grid: np.ndarray
    n_groups: int
    codes: list[list[np.ndarray]]
    counts: list[list[np.ndarray]]
    units: list[GroupUnits] | None
    threshold: float
    n_bins: int

    def __post_init__(self) -> None:
        self.vals = [[self.grid[c] for c in row] for row in self.codes]
        self.ece_bin = [[calibration_bins(v, self.n_bins) for v in row] for row in self.vals]
        self.above = [[v >= self.threshold for v in row] for row in self.vals]
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
        so one matrix product gives every count and sum the prevalence metrics need.
        """
        if self._features is None:
            feats = []
            for row_v, row_b, row_a in zip(self.vals, self.ece_bin, self.above, strict=True):
                out = []
                for v, eb, ab in zip(row_v, row_b, row_a, strict=True):
                    f = np.zeros((len(v), 4 + 2 * self.n_bins))
                    f[:, 0] = 1.0
                    f[:, 1] = ab
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
        out = np.empty((w.shape[0], 4 + 2 * j))
        for r in range(w.shape[0]):
            wr = w[r]
            out[r, 0] = wr.sum()
            out[r, 1] = wr[self.above[c][g]].sum()
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

    def patient_counts(self) -> np.ndarray:
        """Patients per group (images per group when there are no patient ids)."""
        if self.units is None:
            return self.class_counts().sum(axis=0)
        return np.array([u.matrix.shape[0] for u in self.units], dtype=np.float64)

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
        Patient code of each row (patient bootstrap). A patient in two groups is two
        units, one per group.
    """
    if clusters is not None:
        return _build_clustered(codes, grid, y, groups, n_groups, threshold, n_bins, clusters)
    k = len(grid)
    stratum = groups.astype(np.int64) * 2 + y.astype(np.int64)
    n_strata = 2 * n_groups
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
    codes_l: list[list[np.ndarray]] = [[], []]
    counts_l: list[list[np.ndarray]] = [[], []]
    for s in range(n_strata):
        sl = slice(bounds[s], bounds[s + 1])
        codes_l[s % 2].append(uk[sl] - s * k)
        counts_l[s % 2].append(cnt[sl])
    return Hist(grid, n_groups, codes_l, counts_l, None, float(threshold), n_bins)


def _build_clustered(
    codes: np.ndarray,
    grid: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    threshold: float,
    n_bins: int,
    clusters: np.ndarray,
) -> Hist:
    k = len(grid)
    _, ucl = np.unique(clusters, return_inverse=True)
    ucl = ucl.ravel().astype(np.int64)
    n_cl = int(ucl.max()) + 1 if len(ucl) else 1
    unit_key = groups.astype(np.int64) * n_cl + ucl
    key = (unit_key * 2 + y.astype(np.int64)) * k + codes.astype(np.int64)
    uk, cnt_i = np.unique(key, return_counts=True)
    cnt = cnt_i.astype(np.float64)
    code_of = uk % k
    cls_of = (uk // k) % 2
    unit_of = uk // (2 * k)
    grp_of = unit_of // n_cl
    bounds = np.searchsorted(grp_of, np.arange(n_groups + 1))
    codes_l: list[list[np.ndarray]] = [[], []]
    counts_l: list[list[np.ndarray]] = [[], []]
    units: list[GroupUnits] = []
    for g in range(n_groups):
        sl = slice(bounds[g], bounds[g + 1])
        c_of, cd, cn = cls_of[sl], code_of[sl], cnt[sl]
        _, row = np.unique(unit_of[sl], return_inverse=True)
        row = row.ravel()
        n_units = int(row.max()) + 1 if row.size else 0
        cols = np.empty(len(cd), dtype=np.int64)
        offset = 0
        for c in (0, 1):
            m = c_of == c
            sup, col = np.unique(cd[m], return_inverse=True)
            cols[m] = col.ravel() + offset
            codes_l[c].append(sup)
            counts_l[c].append(np.bincount(col.ravel(), weights=cn[m], minlength=len(sup)))
            offset += len(sup)
        mat = sp.csr_matrix((cn, (row, cols)), shape=(n_units, offset))
        has = np.zeros((n_units, 2), dtype=bool)
        has[row, c_of] = True
        units.append(GroupUnits(mat, _profiles(has[:, 1]), len(codes_l[0][g])))
    return Hist(grid, n_groups, codes_l, counts_l, units, float(threshold), n_bins)


def _profiles(has_positive: np.ndarray) -> np.ndarray:
    """Class profile of each patient: 1 with a positive image, 0 without.

    Patients with and without a positive image are resampled separately for the class
    metrics; if one kind has fewer than two patients it cannot vary, so the group's
    patients are then resampled together.
    """
    prof = has_positive.astype(np.int64)
    counts = np.bincount(prof, minlength=2)
    return prof if counts.min() >= 2 else np.zeros_like(prof)


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


def evaluate(
    h: Hist, w: list[list[np.ndarray]], scheme: str | None = None
) -> dict[str, np.ndarray]:
    """Engine metrics for each resample, per group and overall.

    Parameters
    ----------
    h : Hist
    w : list over class of list over group of ndarray of shape (n_rows, n_codes)
        Counts on each stratum's support (one row per resample).
    scheme : {"class", "group"} or None
        Only the metrics resampled under that scheme (:data:`CLASS_METRICS`,
        :data:`GROUP_METRICS`); all when None.

    Returns
    -------
    dict of str to ndarray of shape (n_rows, n_groups + 1)
        Column ``g`` is group ``g``; the last column is all groups together.
        ``ece_contribution`` and ``ece_share`` have shape (n_rows, n_groups + 1, n_bins):
        each calibration bin's share of the mean residual ``p - y``, and of the images.
    """
    out: dict[str, np.ndarray] = {}
    if scheme in (None, "class"):
        out.update(_class_metrics(h, w))
    if scheme in (None, "group"):
        out.update(_group_metrics(h, w))
    return out


def _class_metrics(h: Hist, w: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    n_g = h.n_groups
    b = w[0][0].shape[0]
    n = np.zeros((2, b, n_g + 1))
    above = np.zeros((2, b, n_g + 1))
    for c in (0, 1):
        for g in range(n_g):
            if w[c][g].shape[1]:
                n[c, :, g] = w[c][g].sum(axis=1)
                above[c, :, g] = w[c][g][:, h.above[c][g]].sum(axis=1)
        n[c, :, n_g] = n[c, :, :n_g].sum(axis=1)
        above[c, :, n_g] = above[c, :, :n_g].sum(axis=1)
    auc = np.empty((b, n_g + 1))
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
    (n0, n1), (fp, tp) = n, above
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / n1
        tnr = (n0 - fp) / n0
        return {
            "auroc": auc,
            "true_positive_rate": tpr,
            "true_negative_rate": tnr,
            "false_positive_rate": fp / n0,
            "false_negative_rate": (n1 - tp) / n1,
            "balanced_accuracy": 0.5 * (tpr + tnr),
        }


def _group_metrics(h: Hist, w: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
    n_g = h.n_groups
    b = w[0][0].shape[0]
    j = h.n_bins
    # stats[c][:, g, :] = resample counts of stratum (c, g) @ its feature matrix.
    stats = [np.zeros((b, n_g + 1, 4 + 2 * j)), np.zeros((b, n_g + 1, 4 + 2 * j))]
    for c in (0, 1):
        for g in range(n_g):
            if w[c][g].shape[1]:
                stats[c][:, g, :] = h.additive(c, g, w[c][g])
        stats[c][:, n_g, :] = stats[c][:, :n_g, :].sum(axis=1)
    s0, s1 = stats
    n0, n1 = s0[..., 0], s1[..., 0]
    tot = n0 + n1
    sel = s0[..., 1] + s1[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = (s1[..., 3] - 2.0 * s1[..., 2] + n1 + s0[..., 3]) / tot
        contrib = (s0[..., 4 + j :] + s1[..., 4 + j :] - s1[..., 4 : 4 + j]) / tot[..., None]
        share = (s0[..., 4 : 4 + j] + s1[..., 4 : 4 + j]) / tot[..., None]
        return {
            "count": tot,
            "prevalence": n1 / tot,
            "ppv": s1[..., 1] / sel,
            "selection_rate": sel / tot,
            "brier_score": brier,
            "ece_contribution": contrib,
            "ece_share": share,
        }


def _chunk_size(h: Hist, n_boot: int, budget_bytes: float = 2.0e8) -> int:
    # About a dozen (chunk, support) float64 temporaries are alive at once; with patients
    # the (chunk, patients) draws as well.
    cells = max(1, h.support_size)
    if h.units is not None:
        cells += sum(u.matrix.shape[0] for u in h.units)
    per_row = 8.0 * 12 * cells
    return int(max(1, min(n_boot, budget_bytes // per_row)))


def _resample(counts: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Rescaled bootstrap counts of one stratum given as counts over its support.

    Rao & Wu's rescaling: ``n - 1`` items are drawn with replacement and their counts
    multiplied by ``n / (n - 1)``, which makes the bootstrap variance of a mean unbiased
    (the plain bootstrap's is ``(n - 1) / n`` of it, which matters for a group of a few
    patients or a class of a few images). A multinomial costs about twice as much per
    support point as a row draw, so rows are drawn when there are fewer than two per
    point; both are the same distribution.
    """
    n = int(round(counts.sum()))
    k = len(counts)
    if n < 2:
        return np.repeat(counts[None, :].astype(np.float64), b, axis=0)
    m = n - 1
    if m >= 2 * k:
        p = counts / n
        drawn = np.zeros((b, k))
        nz = np.flatnonzero(counts)
        drawn[:, nz] = rng.multinomial(m, p[nz] / p[nz].sum(), size=b)
        return drawn * (n / m)
    item = np.repeat(np.arange(k), counts.astype(np.int64))
    return _row_counts(item, k, n, b, rng)


def _row_counts(
    item: np.ndarray | None, k: int, n: int, b: int, rng: np.random.Generator
) -> np.ndarray:
    """Rescaled bootstrap counts over ``k`` values: ``n - 1`` of ``n`` rows drawn, x n/(n-1).

    ``item[i]`` is the value of row ``i`` (row ``i`` itself when None).
    """
    if n < 2:
        out1 = np.zeros((b, k))
        if n == 1:
            out1[:, 0 if item is None else int(item[0])] = 1.0
        return out1
    m = n - 1
    dtype = np.int64 if n > 2**31 - 1 else np.int32
    if b * m <= 4_000_000:  # all rows at once: one bincount over (resample, value) cells
        draws = rng.integers(0, n, size=(b, m), dtype=dtype)
        vals = draws if item is None else item[draws]
        cells = (np.arange(b, dtype=np.int64)[:, None] * k + vals).ravel()
        counts = np.bincount(cells, minlength=b * k).reshape(b, k).astype(np.float64)
    else:
        counts = np.empty((b, k))
        for r in range(b):  # one row at a time keeps the counts array in cache
            d = rng.integers(0, n, size=m, dtype=dtype)
            counts[r] = np.bincount(d if item is None else item[d], minlength=k)
    return counts * (n / m)


def _draw_units(u: GroupUnits, scheme: str, b: int, rng: np.random.Generator) -> np.ndarray:
    """Patients drawn with replacement (rescaled counts) of shape (b, n_patients).

    ``scheme="class"`` keeps the number of patients with and without a positive image
    (when each kind has at least two patients).
    """
    n_units = u.matrix.shape[0]
    strata = u.profile if scheme == "class" else np.zeros(n_units, np.int64)
    drawn = np.zeros((b, n_units))
    for prof in np.unique(strata):
        members = np.flatnonzero(strata == prof)
        drawn[:, members] = _row_counts(None, len(members), len(members), b, rng)
    return drawn


def _split(wg: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    return wg[:, :split], wg[:, split:]


def resample(h: Hist, scheme: str, b: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """One chunk of ``b`` bootstrap resamples under ``scheme`` ("class" or "group")."""
    w: list[list[np.ndarray]] = [[], []]
    for g in range(h.n_groups):
        if h.units is not None:
            u = h.units[g]
            if u.matrix.shape[0] == 0:
                parts = (np.zeros((b, len(h.codes[0][g]))), np.zeros((b, len(h.codes[1][g]))))
            else:
                drawn = _draw_units(u, scheme, b, rng)
                parts = _split(np.asarray((u.matrix.T @ drawn.T).T), u.split)
        elif scheme == "class":
            parts = (_resample(h.counts[0][g], b, rng), _resample(h.counts[1][g], b, rng))
        else:
            both = np.concatenate([h.counts[0][g], h.counts[1][g]])
            parts = _split(_resample(both, b, rng), len(h.counts[0][g]))
        w[0].append(parts[0])
        w[1].append(parts[1])
    return w


def iter_bootstrap(
    h: Hist, n_boot: int, rng: np.random.Generator, scheme: str = "class"
) -> Iterator[dict[str, np.ndarray]]:
    """Yield :func:`evaluate` results (``scheme``'s metrics) for chunks of resamples.

    Whole patients are drawn within each group (``scheme="group"``), and within each
    group's class profile (``scheme="class"``); every drawn patient brings all of its
    images. Without patient ids each image is a patient.
    """
    chunk = _chunk_size(h, n_boot)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        yield evaluate(h, resample(h, scheme, b, rng), scheme)
        done += b


def _dense(h: Hist) -> Hist:
    """The same data with every stratum on the full support (for permutations)."""
    k = len(h.grid)
    dense = [[np.zeros(k) for _ in range(h.n_groups)] for _ in (0, 1)]
    for c in (0, 1):
        for g in range(h.n_groups):
            dense[c][g][h.codes[c][g]] = h.counts[c][g]
    full = np.arange(k)
    return Hist(
        h.grid,
        h.n_groups,
        [[full] * h.n_groups for _ in (0, 1)],
        dense,
        None,
        h.threshold,
        h.n_bins,
    )


def _all_units(h: Hist) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Every patient of every group on the full (class, code) support: matrix, group, profile."""
    assert h.units is not None
    k = len(h.grid)
    mats, grp, prof = [], [], []
    for g, u in enumerate(h.units):
        cols = np.concatenate([h.codes[0][g], h.codes[1][g] + k])
        m = u.matrix.tocoo()
        mats.append(sp.csr_matrix((m.data, (m.row, cols[m.col])), shape=(m.shape[0], 2 * k)))
        grp.append(np.full(m.shape[0], g))
        prof.append(u.profile)
    return sp.vstack(mats).tocsr(), np.concatenate(grp), np.concatenate(prof)


def iter_permutations(
    h: Hist, n_perm: int, rng: np.random.Generator, scheme: str = "class"
) -> Iterator[dict[str, np.ndarray]]:
    """Yield :func:`evaluate` results for chunks of group-label permutations.

    Group labels are permuted among patients (images when there are no patient ids),
    within each class profile for ``scheme="class"`` and among all patients for
    ``scheme="group"``; group sizes are kept. The null is "the groups' patients are
    exchangeable" (given their class profile), under which every metric of the scheme
    is equal across groups. ``h`` should have a coarse support (a few hundred points).
    """
    hd = _dense(h)
    k = len(h.grid)
    units = _all_units(h) if h.units is not None else None
    chunk = _chunk_size(hd, n_perm)
    done = 0
    while done < n_perm:
        b = min(chunk, n_perm - done)
        if units is not None:
            w = _permute_units(units, h.n_groups, k, scheme, b, rng)
        else:
            w = _permute_tables(hd, k, scheme, b, rng)
        yield evaluate(hd, w, scheme)
        done += b


def _permute_tables(
    hd: Hist, k: int, scheme: str, b: int, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    n_g = hd.n_groups
    if scheme == "class":
        w: list[list[np.ndarray]] = [[], []]
        for c in (0, 1):
            col = np.sum(hd.counts[c], axis=0)
            rows = np.array([d.sum() for d in hd.counts[c]])
            t = random_tables(col, rows, n_draws=b, random_state=rng)
            w[c] = [t[:, g, :] for g in range(n_g)]
        return w
    both = [np.concatenate([hd.counts[0][g], hd.counts[1][g]]) for g in range(n_g)]
    rows = np.array([x.sum() for x in both])
    t = random_tables(np.sum(both, axis=0), rows, n_draws=b, random_state=rng)
    return [[t[:, g, :k] for g in range(n_g)], [t[:, g, k:] for g in range(n_g)]]


def _permute_units(
    units: tuple[sp.csr_matrix, np.ndarray, np.ndarray],
    n_groups: int,
    k: int,
    scheme: str,
    b: int,
    rng: np.random.Generator,
) -> list[list[np.ndarray]]:
    mat, grp, prof = units
    strata = prof if scheme == "class" else np.zeros(len(grp), np.int64)
    totals = [np.zeros((b, 2 * k)) for _ in range(n_groups)]
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        labels = rng.permuted(np.tile(grp[members], (b, 1)), axis=1)
        m_s = mat[members]
        for g in range(n_groups):
            assign = (labels == g).astype(np.float64)
            if assign.any():
                totals[g] += np.asarray((m_s.T @ assign.T).T)
    return [[t[:, :k] for t in totals], [t[:, k:] for t in totals]]
