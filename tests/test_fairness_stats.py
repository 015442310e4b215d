"""Fairness statistics: bootstrap, permutations, multiple testing, power, false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from medaudit.fairness import group_metrics
from medaudit.stats import adjust_pvalues, multinomial_counts, permutation_pvalue, random_tables


def binormal(n_per_group, d_per_group, *, prevalence=0.3, seed=0):
    """Scores from the binormal model: negatives N(0,1), positives N(d_g,1), squashed to (0,1).

    The true AUROC of group g is Phi(d_g / sqrt(2)) (a monotone squash keeps it).
    """
    rng = np.random.default_rng(seed)
    ys, ss, gs = [], [], []
    for gi, (n, d) in enumerate(zip(n_per_group, d_per_group, strict=True)):
        y = rng.random(n) < prevalence
        z = rng.normal(np.where(y, d, 0.0), 1.0)
        ys.append(y.astype(int))
        ss.append(1 / (1 + np.exp(-(z - d / 2))))
        gs.append(np.full(n, f"g{gi}"))
    return np.concatenate(ys), np.concatenate(ss), np.concatenate(gs)


# ----------------------------------------------------------------------------- stats.py
def test_bh_agrees_with_scipy():
    # Reference: scipy.stats.false_discovery_control (Benjamini-Hochberg).
    p = np.random.default_rng(0).random(30) ** 3
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), sst.false_discovery_control(p), atol=1e-12)


def test_holm_hand_computed_and_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    # m = 4 valid: sorted 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08->0.09 (monotone), 0.5*1=0.5
    out = adjust_pvalues(p, "holm")
    np.testing.assert_allclose(out[[0, 2, 3, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(out[1])


def test_adjust_pvalues_rejects_unknown_method():
    with pytest.raises(ValueError, match="The 'method' parameter of adjust_pvalues"):
        adjust_pvalues([0.1], "bonferroni")


def test_multinomial_counts_preserve_totals():
    w = multinomial_counts(np.array([5, 0, 1, 10]), n_boot=200, random_state=1)
    assert (w.sum(1) == 16).all() and (w[:, 1] == 0).all()
    assert w[:, 3].mean() == pytest.approx(10, abs=0.6)


def test_random_tables_margins_and_mean():
    cols = np.array([7, 0, 3, 12, 1])
    rows = np.array([10, 5, 8])
    t = random_tables(cols, rows, n_draws=4000, random_state=2)
    assert (t.sum(2) == rows).all() and (t.sum(1) == cols).all()
    # Hypergeometric mean: rows_g * cols_k / N.
    np.testing.assert_allclose(t.mean(0), np.outer(rows, cols) / cols.sum(), atol=0.1)


def test_permutation_pvalue_counts_observed():
    assert permutation_pvalue(5.0, np.zeros(99)) == 0.01
    assert permutation_pvalue(0.0, np.zeros(9)) == 1.0
    assert np.isnan(permutation_pvalue(np.nan, np.zeros(9)))


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_keeps_group_sizes_but_lets_the_class_mix_vary():
    y, s, g = binormal([300, 200], [1.5, 1.5], seed=1)
    gm = group_metrics(y, s, groups=g, n_boot=400)
    t = gm.table[gm.table.metric == "prevalence"].set_index("group")
    # Prevalence depends on the class mix: its CI has the binomial width, not zero.
    for grp, n in (("g0", 300), ("g1", 200)):
        p = t.loc[grp, "value"]
        width = t.loc[grp, "ci_high"] - t.loc[grp, "ci_low"]
        assert width == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)


def test_patient_bootstrap_accounts_for_repeated_images():
    y, s, g = binormal([400, 400], [1.5, 1.5], seed=2)
    pid = np.arange(len(y))
    # Every patient imaged twice with the same result: no new information.
    y2, s2, g2, pid2 = (np.r_[a, a] for a in (y, s, g, pid))
    kw = {"n_boot": 600, "n_permutations": 0, "random_state": 0}
    base = group_metrics(y, s, groups=g, **kw).gap("group", "auroc")
    naive = group_metrics(y2, s2, groups=g2, **kw).gap("group", "auroc")
    clustered = group_metrics(y2, s2, groups=g2, patient_id=pid2, **kw).gap("group", "auroc")
    width = lambda r: r.ci[1] - r.ci[0]  # noqa: E731
    assert width(naive) < 0.8 * width(base)  # images treated as independent: over-confident
    assert width(clustered) == pytest.approx(width(base), rel=0.15)


def test_skipped_groups_never_get_numbers():
    y, s, g = binormal([300, 20, 300], [1.5, 1.5, 1.5], seed=3)
    gm = group_metrics(y, s, groups=g, n_boot=50, n_permutations=50)
    small = gm.table[gm.table.group == "g1"]
    assert (small["status"] == "skipped").all()
    assert small.loc[small.metric != "count", ["value", "ci_low", "ci_high"]].isna().all().all()
    assert "n=20 < min_group_size=30" in small["reason"].iloc[0]
    gap = gm.gap("group", "auroc")
    assert {gap.group_high, gap.group_low} == {"g0", "g2"}


def test_same_seed_same_numbers():
    y, s, g = binormal([200, 200], [1.0, 1.4], seed=4)
    a = group_metrics(y, s, groups=g, n_boot=100, n_permutations=100, random_state=3)
    b = group_metrics(y, s, groups=g, n_boot=100, n_permutations=100, random_state=3)
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.gaps, b.gaps)


# ----------------------------------------------------------------------------- power / false alarm
def test_planted_hard_subgroup_is_detected():
    # Group g1 is "harder": its positives are less separated (AUROC 0.74 vs 0.86).
    y, s, g = binormal([1500, 1500], [1.5, 0.9], seed=5)
    gm = group_metrics(y, s, groups={"sex": g}, n_boot=500, n_permutations=500)
    gap = gm.gap("sex", "auroc")
    assert gap.worst_group == "g1"
    assert gap.ci[0] > 0  # the CI of the gap excludes 0
    assert gap.p_value < 0.05
    assert gap.value > 0.05


def test_null_gap_check_false_alarm_rate():
    # No planted effect; 2 groups (sex-like) and 4 groups (age-group-like) of a 6,000-image
    # test set. The check fails when the max-min AUROC gap exceeds 0.05 (policy default).
    fails = 0
    seeds = 100
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        y, s, _ = binormal([6000], [1.5], seed=1000 + seed)
        groups = {
            "sex": rng.choice(["F", "M"], len(y)),
            "age_group": rng.choice(list("abcd"), len(y)),
        }
        gm = group_metrics(y, s, groups=groups, n_boot=0, n_permutations=0)
        fails += any(gm.gap(a, "auroc").value > 0.05 for a in groups)
    assert fails / seeds <= 0.05


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
def test_null_pvalues_are_not_small(method):
    # Under the null the p-value is about uniform: about 5% of draws below 0.05 (200
    # draws measured 4.5% for permutations); 40 draws here, with room for binomial noise.
    p = []
    for seed in range(40):
        y, s, g = binormal([200, 200], [1.2, 1.2], seed=200 + seed)
        gm = group_metrics(
            y, s, groups=g, n_boot=200, n_permutations=200, p_method=method, random_state=seed
        )
        p.append(gm.gaps.set_index(["metric", "kind"]).loc[("auroc", "difference"), "p_value"])
    assert np.mean(np.array(p) < 0.05) <= 0.125
    assert 0.3 < np.median(p) < 0.7


@pytest.mark.slow
def test_bootstrap_ci_coverage_of_true_group_auroc():
    # 200 synthetic draws; the 95% CI of each group's AUROC must cover the true value
    # Phi(d / sqrt 2) in 92-98% of draws.
    d = (1.2, 0.8)
    truth = [sst.norm.cdf(x / np.sqrt(2)) for x in d]
    covered = []
    for seed in range(200):
        y, s, g = binormal([400, 400], d, seed=10_000 + seed)
        gm = group_metrics(y, s, groups=g, n_boot=1000, n_permutations=0, random_state=seed)
        w = gm.by_group("group").set_index("group")
        for gi, t in enumerate(truth):
            covered.append(w.loc[f"g{gi}", "auroc_ci_low"] <= t <= w.loc[f"g{gi}", "auroc_ci_high"])
    rate = float(np.mean(covered))
    print(f"coverage of 95% bootstrap CIs: {rate:.3f} over {len(covered)} intervals")
    assert 0.92 <= rate <= 0.98
