"""Attack metrics: ROC and TPR at FPR against scikit-learn, CIs by simulation, exposure."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from medaudit import InvalidInputError
from medaudit.attacks.membership import (
    attack_metrics,
    balanced_accuracy,
    most_exposed,
    roc_points,
    subgroup_exposure,
    tpr_at_fpr,
)


def _explicit_tpr_at(y, s, alpha):
    """The documented rule, written out on scikit-learn's ROC points, one at a time."""
    # Reference: sklearn.metrics.roc_curve with every threshold kept.
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    i = max(j for j in range(len(fpr)) if fpr[j] <= alpha)  # last point at or below alpha
    if fpr[i] == alpha or i == len(fpr) - 1:
        return tpr[i]
    return tpr[i] + (alpha - fpr[i]) * (tpr[i + 1] - tpr[i]) / (fpr[i + 1] - fpr[i])


labels_scores = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < n),
        st.lists(st.integers(0, 8), min_size=n, max_size=n),  # small range: many ties
    )
)


@settings(max_examples=60, deadline=None)
@given(labels_scores, st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0]))
def test_tpr_at_fpr_matches_explicit_interpolation_of_sklearn_roc_curve(ys, alpha):
    y, s = np.array(ys[0]), np.array(ys[1], dtype=float)
    assert tpr_at_fpr(y, s, alpha) == pytest.approx(_explicit_tpr_at(y, s, alpha), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(labels_scores)
def test_roc_points_and_auc_equal_sklearn(ys):
    y, s = np.array(ys[0]), np.array(ys[1], dtype=float)
    fpr, tpr = roc_points(y, s)
    f_ref, t_ref, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f_ref, atol=1e-12)
    np.testing.assert_allclose(tpr, t_ref, atol=1e-12)
    m = attack_metrics(y, s, n_boot=1)
    assert m.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    best = max((t + 1 - f) / 2 for f, t in zip(f_ref, t_ref, strict=True))
    assert balanced_accuracy(y, s) == pytest.approx(best, abs=1e-12)


def test_tpr_at_fpr_by_hand():
    y, s = [1, 1, 0, 1, 0, 0], [6, 5, 4, 3, 2, 1]
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(2 / 3)  # members above every non-member
    assert tpr_at_fpr(y, s, 0.5) == 1.0
    # a tie between a member and a non-member is a diagonal step: interpolated
    assert tpr_at_fpr([1, 1, 0, 0], [2, 1, 1, 0], 0.25) == 0.75
    assert tpr_at_fpr([1, 0], [0.0, 1.0], 0.0) == 0.0


def test_bad_input_is_refused():
    with pytest.raises(InvalidInputError, match="needs both members and non-members"):
        tpr_at_fpr([1, 1], [0.1, 0.2], 0.01)
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        roc_points([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="'fpr' parameter of tpr_at_fpr"):
        tpr_at_fpr([1, 0], [1, 0], 1.5)


def _clustered(rng, n_pat=150, mu=1.0, su=0.7):
    """Scores of members (shifted by mu) and non-members, 1-4 images per patient."""
    sizes = rng.integers(1, 5, size=2 * n_pat)
    member = np.repeat(np.r_[np.ones(n_pat, bool), np.zeros(n_pat, bool)], sizes)
    pid = np.repeat(np.arange(2 * n_pat), sizes)
    s = mu * member + rng.normal(0, su, 2 * n_pat)[pid] + rng.normal(size=len(pid))
    return member, s, pid


@pytest.mark.slow
def test_auc_and_tpr_intervals_cover_the_truth_with_clustered_patients():
    # Scores: mu * member + patient effect N(0, 0.7^2) + image noise N(0, 1), 1-4 images
    # per patient. True AUC Phi(mu / (sqrt 2 sd)) and TPR at FPR a Phi(mu / sd - z_{1-a}),
    # sd^2 = 0.7^2 + 1. 200 draws: coverage measured 0.945 (AUC) and 0.96 (TPR at 1%).
    nd = NormalDist()
    sd = (0.49 + 1) ** 0.5
    auc_true = nd.cdf(1.0 / (2**0.5 * sd))
    tpr_true = 1 - nd.cdf(nd.inv_cdf(0.99) - 1.0 / sd)
    rng = np.random.default_rng(0)
    cov_auc, cov_tpr = [], []
    for r in range(200):
        y, s, p = _clustered(rng)
        m = attack_metrics(y, s, patients=p, n_boot=200, random_state=r)
        cov_auc.append(m.auc_ci[0] <= auc_true <= m.auc_ci[1])
        cov_tpr.append(m.tpr_ci[0.01][0] <= tpr_true <= m.tpr_ci[0.01][1])
    assert 0.91 <= np.mean(cov_auc) <= 0.985
    assert 0.90 <= np.mean(cov_tpr) <= 0.99


def test_patient_bootstrap_is_wider_than_image_bootstrap_when_patients_cluster():
    rng = np.random.default_rng(3)
    y, s, p = _clustered(rng, su=1.5)
    by_patient = attack_metrics(y, s, patients=p, n_boot=400, random_state=0).auc_ci
    by_image = attack_metrics(y, s, n_boot=400, random_state=0).auc_ci
    assert by_patient[1] - by_patient[0] > 1.2 * (by_image[1] - by_image[0])


def test_subgroup_exposure_finds_the_exposed_group_and_skips_small_ones():
    rng = np.random.default_rng(0)
    n = 800
    site = np.where(np.arange(n) % 2 == 0, "A", "B")
    member = rng.random(n) < 0.5
    # site A's members stand out; site B's do not
    s = rng.normal(size=n) + 1.5 * (member & (site == "A"))
    small = np.where(np.arange(n) < 20, "tiny", "big")
    tab = subgroup_exposure(
        member, s, {"site": pd.Series(site), "ward": pd.Series(small)}, n_boot=200
    ).set_index(["attribute", "group"])
    assert tab.loc[("site", "A"), "ci_low"] > 0.75
    assert tab.loc[("site", "B"), "ci_low"] < 0.5 < tab.loc[("site", "B"), "ci_high"]
    assert tab.loc[("ward", "tiny"), "note"] == (
        "skipped: 8 members and 12 non-members (fewer than 30 of either)"
    )
    assert np.isnan(tab.loc[("ward", "tiny"), "auc"])


def test_most_exposed_lists_rows_only():
    tab = most_exposed([1, 1, 1, 0, 0], [0.2, 0.9, 0.5, 0.4, 0.1], [10, 11, 12, 0, 1], top=2)
    assert list(tab.columns) == ["member_row", "score", "non_members_scored_lower"]
    assert tab["member_row"].tolist() == [11, 12]
    assert tab["non_members_scored_lower"].tolist() == [1.0, 1.0]
