"""The federated audit's statistics: exact counts, binned AUROC, clustered intervals, noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from medaudit._errors import InvalidParameterError
from medaudit.federated import (
    DEFAULT_BINS,
    MIN_BINS,
    add_laplace_noise,
    aggregate_moments,
    aggregate_statistics,
    auroc_from_histograms,
    cluster_moments,
    score_bins,
    site_statistics,
    subgroup_metrics,
)
from medaudit.federated._stats import LOGIT_RANGE, _wilson
from medaudit.stats import wilson_interval


def _hospitals(rng: np.random.Generator, n_patients: int, prevalence: float = 0.2):
    """Clustered images: 1-4 per patient, a patient effect on the score, 3 unequal sites."""
    k = rng.integers(1, 5, n_patients)
    pid = np.repeat(np.arange(n_patients), k)
    diseased = rng.random(n_patients) < prevalence
    y = diseased[pid] & (rng.random(len(pid)) < 0.85)
    logit = -0.5 + 1.5 * y + rng.normal(0, 1.2, n_patients)[pid] + rng.normal(0, 0.7, len(pid))
    sex = np.where(rng.random(n_patients) < 0.5, "female", "male")[pid]
    site = rng.choice(3, n_patients, p=[0.6, 0.3, 0.1])[pid]
    return y, 1 / (1 + np.exp(-logit)), sex, pid, site


def _bin_centres(bins: np.ndarray) -> np.ndarray:
    """Probabilities at the centres of the given logit bins (binning them changes nothing)."""
    logit = (bins + 0.5) / DEFAULT_BINS * 2 * LOGIT_RANGE - LOGIT_RANGE
    return 1 / (1 + np.exp(-logit))


def _per_site(y, s, sex, pid, site, *, noise=None):
    parts = [
        site_statistics(y[site == k], s[site == k], groups={"sex": sex[site == k]})
        for k in np.unique(site)
    ]
    if noise is not None:
        parts = [add_laplace_noise(p, epsilon=noise, random_state=i) for i, p in enumerate(parts)]
    pooled = aggregate_statistics(parts)
    moments = aggregate_moments(
        [
            cluster_moments(
                y[site == k],
                s[site == k],
                groups={"sex": sex[site == k]},
                clusters=pid[site == k],
                pooled=pooled,
            )
            for k in np.unique(site)
        ]
    )
    return pooled, moments


def test_summed_site_counts_equal_the_pooled_confusion_matrix_exactly():
    rng = np.random.default_rng(0)
    y, s, sex, pid, site = _hospitals(rng, 800)
    pooled, _ = _per_site(y, s, sex, pid, site)
    for i, (attr, group) in enumerate(pooled.keys):
        m = np.ones(len(y), bool) if attr == "all" else sex == group
        # Reference: scikit-learn's confusion_matrix on the pooled data, score >= 0.5.
        tn, fp, fn, tp = confusion_matrix(y[m], s[m] >= 0.5, labels=[False, True]).ravel()
        assert pooled.confusion[i].tolist() == [tp, fp, tn, fn]
        assert pooled.histograms[i].sum() == m.sum()


def test_group_auroc_from_summed_histograms_is_within_0_002_of_the_pooled_auroc():
    rng = np.random.default_rng(1)
    y, s, sex, pid, site = _hospitals(rng, 1500)
    s = np.where(rng.random(len(s)) < 0.1, np.round(s, 9) ** 0.05, s)  # crowd some near 1
    pooled, _ = _per_site(y, s, sex, pid, site)
    table = subgroup_metrics(pooled, min_group_size=1, min_class_count=1)
    for _, row in table.iterrows():
        m = np.ones(len(y), bool) if row["attribute"] == "all" else sex == row["group"]
        # Reference: scikit-learn's roc_auc_score on the pooled scores.
        assert abs(row["auroc"] - roc_auc_score(y[m], s[m])) < 0.002


def test_histogram_auroc_counts_a_shared_bin_as_a_tie():
    # negatives at bins 0, 0, 1; positives at bins 1, 2, 2: 8 wins + 1 tie of 9 pairs
    assert auroc_from_histograms(np.array([2, 1, 0]), np.array([0, 1, 2])) == 8.5 / 9
    assert np.isnan(auroc_from_histograms(np.array([3, 0]), np.array([0, 0])))


def test_score_bins_are_monotone_and_the_minimum_bin_count_is_enforced():
    p = np.linspace(0, 1, 10001)
    b = score_bins(p, MIN_BINS)
    assert b.min() == 0 and b.max() == MIN_BINS - 1 and np.all(np.diff(b) >= 0)
    with pytest.raises(InvalidParameterError) as err:
        site_statistics([0, 1], [0.2, 0.8], groups={}, n_bins=1024)
    assert str(err.value) == (
        "The 'n_bins' parameter of site_statistics must be an int >= 4096. Got 1024 instead."
    )


def _delong_var(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong's variance from its definition (O(n^2) placements; DeLong et al. 1988)."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_unclustered_interval_uses_delongs_variance():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.3
    bins = rng.choice(np.arange(16000, 48000), size=300, replace=False) + 6400 * y
    s = _bin_centres(bins)
    assert np.array_equal(score_bins(s), bins)
    st = site_statistics(y, s, groups={})
    row = subgroup_metrics(st, min_group_size=1, min_class_count=1).iloc[0]
    assert row["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert row["auroc_se"] ** 2 == pytest.approx(_delong_var(y, s), rel=1e-9)


def _obuchowski_var(y, s, cl) -> float:
    """Obuchowski's (1997) clustered variance, written out cluster by cluster."""
    pos, neg = s[y], s[~y]
    m_all, n_all = len(pos), len(neg)
    v10 = {i: ((s[i] > neg).sum() + 0.5 * (s[i] == neg).sum()) / n_all for i in np.flatnonzero(y)}
    v01 = {i: ((pos > s[i]).sum() + 0.5 * (pos == s[i]).sum()) / m_all for i in np.flatnonzero(~y)}
    theta = sum(v10.values()) / m_all
    clusters = np.unique(cl)
    a10, a01, m, n = [], [], [], []
    for c in clusters:
        rows = np.flatnonzero(cl == c)
        a10.append(sum(v10.get(i, 0.0) for i in rows))
        a01.append(sum(v01.get(i, 0.0) for i in rows))
        m.append(int(y[rows].sum()))
        n.append(int((~y[rows]).sum()))
    a10, a01, m, n = map(np.asarray, (a10, a01, m, n))
    k = len(clusters)
    s10 = k / ((k - 1) * m_all) * np.sum((a10 - m * theta) ** 2)
    s01 = k / ((k - 1) * n_all) * np.sum((a01 - n * theta) ** 2)
    s11 = k / (k - 1) * np.sum((a10 - m * theta) * (a01 - n * theta))
    return s10 / m_all + s01 / n_all + 2 * s11 / (m_all * n_all)


def test_clustered_variance_from_site_moments_equals_obuchowskis_formula():
    rng = np.random.default_rng(3)
    y, s, sex, pid, site = _hospitals(rng, 120)
    s = _bin_centres(score_bins(s))  # the binned scores: both computations see the same ties
    pooled, moments = _per_site(y, s, sex, pid, site)
    row = subgroup_metrics(pooled, moments, min_group_size=1, min_class_count=1).iloc[0]
    assert row["auroc_se"] ** 2 == pytest.approx(_obuchowski_var(y, s, pid), rel=1e-9)


@pytest.mark.slow
def test_clustered_intervals_cover_the_truth_and_the_naive_ones_do_not():
    """Coverage by simulation: clustered patients, unequal sites, 20% prevalence."""
    rng = np.random.default_rng(4)
    y, s, *_ = _hospitals(rng, 200_000)
    truth = {
        "auroc": roc_auc_score(y, s),
        "sensitivity": np.mean(s[y] >= 0.5),
        "specificity": np.mean(s[~y] < 0.5),
    }
    reps = 250
    hits = {k: np.zeros(2) for k in truth}
    for _ in range(reps):
        data = _hospitals(rng, 150)
        pooled, moments = _per_site(*data)
        for j, mom in enumerate((moments, None)):
            row = subgroup_metrics(pooled, mom, min_group_size=1, min_class_count=1).iloc[0]
            for k, v in truth.items():
                hits[k][j] += row[f"{k}_low"] <= v <= row[f"{k}_high"]
    for k in truth:
        clustered, naive = hits[k] / reps
        assert 0.91 <= clustered <= 0.985, (k, clustered)
        assert naive < clustered, (k, naive, clustered)


def test_a_noisy_release_keeps_counts_whole_and_records_its_epsilon():
    y = np.array([0, 1] * 500)
    st = site_statistics(y, np.where(y == 1, 0.8, 0.3), groups={"sex": ["f", "m"] * 500})
    noisy = add_laplace_noise(st, epsilon=0.5, random_state=0)
    assert noisy.noise_epsilon == 0.5
    assert noisy.confusion.dtype == np.int64 and noisy.confusion.min() >= 0
    assert not np.array_equal(noisy.histograms, st.histograms)
    assert aggregate_statistics([noisy, st]).noise_epsilon == 0.5
    with pytest.raises(InvalidParameterError) as err:
        add_laplace_noise(st, epsilon=0)
    assert str(err.value) == (
        "The 'epsilon' parameter of add_laplace_noise must be a float > 0. Got 0 instead."
    )


def test_noisy_histograms_spread_like_laplace_noise():
    st = site_statistics(np.zeros(10), np.full(10, 0.3), groups={})
    big = st.__class__(
        st.keys,
        st.confusion + 10**6,
        st.histograms + 10**6,
        st.threshold,
        st.n_bins,
    )
    noisy = add_laplace_noise(big, epsilon=1.0, random_state=1)
    d = (noisy.histograms - big.histograms).ravel().astype(float)
    # One image changes one bin and one cell of its only group: L1 sensitivity 2, so the
    # Laplace scale is 2 / epsilon and the standard deviation sqrt(2) times that.
    assert np.std(d) == pytest.approx(np.sqrt(2) * 2.0, rel=0.05)


def test_wilson_with_a_quantile_matches_medaudit_stats():
    lo, hi = wilson_interval(7, 40, 0.95)
    z = 1.959963984540054
    # Reference: medaudit.stats.wilson_interval (Wilson 1927).
    assert _wilson(7, 40, z) == pytest.approx((float(lo), float(hi)), abs=1e-12)
    assert _wilson(0, 10, z)[0] == 0.0 and _wilson(10, 10, z)[1] == 1.0


def test_small_groups_are_skipped_with_the_reason():
    st = site_statistics(
        [0, 1, 0, 1, 0, 0], [0.1, 0.9, 0.2, 0.8, 0.3, 0.4], groups={"sex": list("ffffmm")}
    )
    table = subgroup_metrics(st, min_group_size=3, min_class_count=1)
    male = table[table["group"] == "m"].iloc[0]
    assert male["status"] == "skipped" and male["reason"] == "group has 2 images (< 3)"
    assert np.isnan(male["auroc"])
