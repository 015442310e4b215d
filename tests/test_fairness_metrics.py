"""Point estimates of medaudit.fairness against scikit-learn and Fairlearn (to 1e-9)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    precision_score,
    roc_auc_score,
)

from medaudit.fairness import (
    METRICS,
    calibration_error,
    expected_calibration_error,
    group_metrics,
    sensitivity_threshold,
    subgroup_gap,
    underdiagnosis_rate,
    youden_threshold,
)

TOL = 1e-9


def _data(n: int, seed: int, *, rounded: int | None = None):
    rng = np.random.default_rng(seed)
    g = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "site": rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    y = (rng.random(n) < 0.35).astype(int)
    s = 1 / (1 + np.exp(-rng.normal(1.5 * y - 0.7 - 0.4 * (g["sex"] == "F") * y, 1.0)))
    if rounded is not None:
        s = np.round(s, rounded)  # many ties, as in exported CSVs
    return y, s, g


def _reference(y, s, thr=0.5):
    """Every metric by scikit-learn / Fairlearn / a plain numpy definition."""
    p = (s >= thr).astype(int)
    return {
        "count": len(y),
        "prevalence": float(np.mean(y)),
        "auroc": roc_auc_score(y, s),
        "true_positive_rate": true_positive_rate(y, p),
        "true_negative_rate": 1 - false_positive_rate(y, p),
        "false_positive_rate": false_positive_rate(y, p),
        "false_negative_rate": false_negative_rate(y, p),
        "ppv": precision_score(y, p, zero_division=np.nan),
        "selection_rate": selection_rate(y, p),
        "balanced_accuracy": balanced_accuracy_score(y, p),
        "brier_score": brier_score_loss(y, s),
        # The ECE is medaudit's debiased one (medaudit.stats.calibration_error).
        "ece": calibration_error(y, s),
        "underdiagnosis_rate": underdiagnosis_rate(y, p),
    }


@pytest.mark.parametrize("rounded", [None, 2])
@pytest.mark.parametrize("thr", [0.5, 0.37])
def test_group_metrics_agree_with_sklearn_and_fairlearn(rounded, thr):
    # Reference: sklearn.metrics and fairlearn.metrics, evaluated group by group.
    y, s, g = _data(3000, 0, rounded=rounded)
    gm = group_metrics(y, s, groups=g, threshold=thr, n_boot=0, n_permutations=0)
    for attr in ("sex", "site"):
        wide = gm.by_group(attr).set_index("group")
        for grp in wide.index:
            m = (g[attr] == grp).to_numpy()
            ref = _reference(y[m], s[m], thr)
            for name in METRICS:
                assert wide.loc[grp, name] == pytest.approx(ref[name], abs=TOL), (attr, grp, name)
    overall = gm.overall.set_index("metric")["value"]
    ref = _reference(y, s, thr)
    for name in METRICS:
        assert overall[name] == pytest.approx(ref[name], abs=TOL), name


def test_to_metricframe_matches_by_group():
    # Reference: fairlearn.metrics.MetricFrame built by to_metricframe().
    y, s, g = _data(2000, 1)
    gm = group_metrics(y, s, groups=g, n_boot=0, n_permutations=0)
    mf = gm.to_metricframe("site")
    assert isinstance(mf, MetricFrame)
    ours = gm.by_group("site").set_index("group")[list(mf.by_group.columns)]
    np.testing.assert_allclose(mf.by_group.to_numpy(float), ours.to_numpy(float), atol=TOL)
    assert list(mf.by_group.columns) == list(METRICS)


def test_to_metricframe_intersection_matches():
    y, s, g = _data(3000, 2)
    gm = group_metrics(y, s, groups=g, intersections=True, n_boot=0, n_permutations=0)
    mf = gm.to_metricframe(["sex", "site"])
    ours = gm.by_group("sex&site").set_index("group")
    for (a, b), row in mf.by_group.iterrows():
        np.testing.assert_allclose(row["auroc"], ours.loc[f"{a} & {b}", "auroc"], atol=TOL)
        np.testing.assert_allclose(
            row["true_positive_rate"], ours.loc[f"{a} & {b}", "true_positive_rate"], atol=TOL
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fairlearn_differences_agree(seed):
    # Reference: fairlearn.metrics.{demographic_parity,equalized_odds,equal_opportunity}_difference.
    y, s, g = _data(2500, seed)
    gm = group_metrics(
        y, s, groups=g, n_boot=0, n_permutations=0, min_group_size=1, min_class_count=1
    )
    p = (s >= 0.5).astype(int)
    for attr in ("sex", "site"):
        sf = g[attr]
        for name, fn in (
            ("demographic_parity_difference", demographic_parity_difference),
            ("equalized_odds_difference", equalized_odds_difference),
            ("equal_opportunity_difference", equal_opportunity_difference),
        ):
            ours = gm.gap(attr, name).value
            assert ours == pytest.approx(fn(y, p, sensitive_features=sf), abs=TOL), (attr, name)


def test_auroc_gap_is_max_minus_min():
    y, s, g = _data(3000, 3)
    r = subgroup_gap(y, s, groups=g["site"], n_boot=50, n_permutations=50)
    aucs = {k: roc_auc_score(y[g["site"] == k], s[g["site"] == k]) for k in "ABC"}
    assert r.value == pytest.approx(max(aucs.values()) - min(aucs.values()), abs=TOL)
    assert r.group_high == max(aucs, key=aucs.get)
    assert r.group_low == min(aucs, key=aucs.get)
    assert r.worst_group == r.group_low


def test_equity_scaled_auroc_both_variants():
    y, s, g = _data(3000, 4)
    aucs = np.array([roc_auc_score(y[g.site == k], s[g.site == k]) for k in "ABC"])
    a = roc_auc_score(y, s)
    for variant, expected in (
        ("sum", a / (1 + np.abs(aucs - a).sum())),  # FairCLIP / FairDomain form
        ("std", a / (1 + aucs.std())),
    ):
        gm = group_metrics(
            y, s, groups=g[["site"]], n_boot=0, n_permutations=0, es_auc_variant=variant
        )
        assert gm.gap("site", "auroc", kind="equity_scaled").value == pytest.approx(
            expected, abs=TOL
        )


def test_hand_computed_tiny_case():
    # Group A: AUROC 0.75 (from the auroc doctest); group B: perfect ranking.
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.3, 0.6, 0.9])
    g = np.array(list("AAAABBBB"))
    gm = group_metrics(
        y, s, groups=g, n_boot=0, n_permutations=0, min_group_size=1, min_class_count=1
    )
    w = gm.by_group("group").set_index("group")
    assert w.loc["A", "auroc"] == 0.75
    assert w.loc["B", "auroc"] == 1.0
    assert w.loc["A", "true_positive_rate"] == 0.5  # 0.8 flagged, 0.35 missed
    assert w.loc["A", "underdiagnosis_rate"] == 0.5
    assert w.loc["B", "selection_rate"] == 0.5
    assert gm.gap("group", "auroc").value == 0.25


def test_multiclass_one_vs_rest_agrees_with_sklearn():
    rng = np.random.default_rng(5)
    n, k = 2400, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sex = rng.choice(["F", "M"], n)
    names = ["No Finding", "effusion", "nodule"]
    gm = group_metrics(y, p, groups={"sex": sex}, class_names=names, n_boot=0, n_permutations=0)
    assert gm.class_names == tuple(names)
    for i, cls in enumerate(names):
        w = gm.by_group("sex", cls).set_index("group")
        for grp in ("F", "M"):
            m = sex == grp
            yy = (y[m] == i).astype(int)
            assert w.loc[grp, "auroc"] == pytest.approx(roc_auc_score(yy, p[m, i]), abs=TOL)
            pred = (p[m, i] >= 0.5).astype(int)
            # "No Finding": underdiagnosis = patients with a finding called "no finding" = its FPR.
            ref = false_positive_rate(yy, pred) if i == 0 else false_negative_rate(yy, pred)
            assert w.loc[grp, "underdiagnosis_rate"] == pytest.approx(ref, abs=TOL)


def test_multilabel_columns_are_independent_tasks():
    rng = np.random.default_rng(6)
    n = 1500
    y = (rng.random((n, 2)) < [0.3, 0.5]).astype(int)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, (n, 2)), 0, 1)
    g = rng.choice(["A", "B"], n)
    gm = group_metrics(y, s, groups=g, class_names=["a", "b"], n_boot=0, n_permutations=0)
    w = gm.by_group("group", "b").set_index("group")
    m = g == "A"
    assert w.loc["A", "auroc"] == pytest.approx(roc_auc_score(y[m, 1], s[m, 1]), abs=TOL)


def test_binned_large_path_keeps_exact_point_estimates():
    y, s, g = _data(4000, 7)
    exact = group_metrics(y, s, groups=g, n_boot=300, n_permutations=0, random_state=1)
    binned = group_metrics(
        y,
        s,
        groups=g,
        n_boot=300,
        n_permutations=0,
        random_state=1,
        exact_max_rows=100,
        max_bins=64,
    )
    assert exact.exact and not binned.exact
    assert any("binned" in n for n in binned.notes)
    a, b = exact.table, binned.table
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), atol=TOL)
    # Threshold metrics are exact under binning; AUROC's CI stays close with 64 bins.
    for m, tol in (("true_positive_rate", 0.02), ("auroc", 0.01)):
        ra = a[(a.metric == m) & (a.attribute == "site")]
        rb = b[(b.metric == m) & (b.attribute == "site")]
        np.testing.assert_allclose(ra["ci_low"], rb["ci_low"], atol=tol)
        np.testing.assert_allclose(ra["ci_high"], rb["ci_high"], atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(12, 80),
    seed=st.integers(0, 10_000),
    decimals=st.sampled_from([1, 2, 6]),
)
def test_auroc_property_matches_sklearn(n, seed, decimals):
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    s = np.round(rng.random(n), decimals)
    g = rng.choice(["A", "B"], n)
    if min(((g == k) & (y == c)).sum() for k in "AB" for c in (0, 1)) == 0:
        g[:4] = ["A", "A", "B", "B"]
        y[:4] = [0, 1, 0, 1]
    gm = group_metrics(
        y, s, groups=g, n_boot=0, n_permutations=0, min_group_size=1, min_class_count=1
    )
    w = gm.by_group("group").set_index("group")
    for k in "AB":
        m = g == k
        assert w.loc[k, "auroc"] == pytest.approx(roc_auc_score(y[m], s[m]), abs=TOL)
        assert w.loc[k, "brier_score"] == pytest.approx(brier_score_loss(y[m], s[m]), abs=TOL)


def test_ece_hand_computed():
    # Bins [0.1,0.2): |0.15-0| ; [0.8,0.9): |0.85-1| ; weights 1/2 each -> 0.15.
    assert expected_calibration_error([0, 1], [0.15, 0.85]) == pytest.approx(0.15)
    assert expected_calibration_error([1, 1], [1.0, 1.0]) == 0.0


def test_thresholds():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    assert youden_threshold(y, s) == 0.7  # TPR 2/3, FPR 0 -> J = 2/3 (ties broken high)
    assert sensitivity_threshold(y, s, target=1.0) == 0.4
    assert sensitivity_threshold(y, s, target=0.5) == 0.7


def test_no_warnings_from_small_groups():
    y, s, g = _data(200, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = group_metrics(y, s, groups=g, n_boot=50, n_permutations=50)
    assert set(gm.table["status"]) <= {"ok", "skipped"}
