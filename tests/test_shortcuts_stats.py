"""Shortcut audit statistics: clustered influence CIs, probes, matching, KS tests.

References used below: scikit-learn (roc_auc_score, RidgeClassifier, balanced accuracy),
scipy (ks_2samp), DeLong et al. 1988 (variance of the AUROC), and simulations with
clustered patients for coverage and level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from medaudit.shortcuts import (
    attribute_probe,
    auroc_estimate,
    balanced_accuracy_estimate,
    ks_tests,
    macro_auroc_estimate,
    matching_weights,
    mean_estimate,
    patient_folds,
    stratified_auroc_estimate,
)
from medaudit.shortcuts._matching import matched_gaps, one_per_patient
from medaudit.shortcuts._probe import out_of_fold_scores


def clustered_scores(n_patients, *, d=1.2, prevalence=0.3, icc=0.5, seed=0, max_images=4):
    """Binormal scores of patients with 1..max_images images sharing a random effect.

    The patient effect shifts every image's score (correlation icc within a patient) and the
    label is a patient property, so images are not independent. True AUROC: the binormal
    AUROC Phi(d / sqrt(2)) since the effect is shared by both classes' marginals.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_images + 1, n_patients)
    pid = np.repeat(np.arange(n_patients), sizes)
    y_p = rng.random(n_patients) < prevalence
    u = rng.normal(0, np.sqrt(icc), n_patients)
    y = y_p[pid]
    s = d * y + u[pid] + rng.normal(0, np.sqrt(1 - icc), len(pid))
    return y.astype(int), s, pid


# ---------------------------------------------------------------------- point estimates
def test_auroc_estimate_equals_sklearn_with_ties_and_weights():
    # Reference: sklearn.metrics.roc_auc_score (with sample_weight).
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # many ties
    w = rng.random(300) * 3
    c = np.arange(300)
    assert auroc_estimate(y, s, c).value == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    got = auroc_estimate(y, s, c, weights=w).value
    assert got == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_macro_auroc_equals_sklearn_ovr_macro():
    # Reference: roc_auc_score(multi_class="ovr", average="macro").
    rng = np.random.default_rng(1)
    lv = rng.integers(0, 4, 400)
    sc = rng.random((400, 4)) + 0.5 * np.eye(4)[lv]
    sc /= sc.sum(1, keepdims=True)
    ref = roc_auc_score(lv, sc, multi_class="ovr", average="macro")
    assert macro_auroc_estimate(lv, sc, np.arange(400)).value == pytest.approx(ref, abs=1e-12)


def test_balanced_accuracy_equals_sklearn():
    rng = np.random.default_rng(2)
    y, d = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    est = balanced_accuracy_estimate(y, d, np.arange(200))
    assert est.value == pytest.approx(balanced_accuracy_score(y, d), abs=1e-12)


def test_unclustered_variance_matches_delong():
    # Reference: DeLong 1988, var = S10/m + S01/n with structural components V10, V01.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500).astype(bool)
    s = rng.normal(y * 1.0, 1.0)
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    delong = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    est = auroc_estimate(y, s, np.arange(500))
    assert est.se**2 == pytest.approx(delong, rel=0.01)


def test_hand_computed_small_auroc_and_ci_inside_unit_interval():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    est = auroc_estimate(y, s, np.array([0, 1, 2, 3]))
    assert est.value == 0.75
    lo, hi = est.ci(0.95)
    assert 0 < lo < 0.75 < hi < 1
    perfect = auroc_estimate(y, np.array([0.1, 0.2, 0.8, 0.9]), np.arange(4))
    lo, hi = perfect.ci(0.95)  # Wilson with 4 clusters, never the degenerate [1, 1]
    assert perfect.value == 1.0 and lo < 0.6 and hi == 1.0


def test_missing_class_gives_nan_and_nan_ci():
    est = auroc_estimate(np.ones(5), np.arange(5.0), np.arange(5))
    assert np.isnan(est.value) and all(np.isnan(est.ci(0.95)))


# --------------------------------------------------------------- coverage and level
@pytest.mark.parametrize("d", [0.8, 2.0])
def test_clustered_auroc_ci_covers_the_truth(d):
    truth = sst.norm.cdf(d / np.sqrt(2))
    hits = []
    for seed in range(400):
        y, s, pid = clustered_scores(150, d=d, seed=seed)
        lo, hi = auroc_estimate(y, s, pid).ci(0.95)
        hits.append(lo <= truth <= hi)
    assert 0.92 <= np.mean(hits) <= 0.98, np.mean(hits)


def test_ignoring_the_clusters_would_undercover():
    # Guard that the simulation is clustered enough to matter: the same CI with every
    # image its own cluster covers clearly less often.
    truth = sst.norm.cdf(0.8 / np.sqrt(2))
    hits = []
    for seed in range(300):
        y, s, _ = clustered_scores(150, d=0.8, seed=seed, icc=0.8)
        lo, hi = auroc_estimate(y, s, np.arange(len(y))).ci(0.95)
        hits.append(lo <= truth <= hi)
    assert np.mean(hits) < 0.9


def test_paired_difference_of_two_aurocs_keeps_its_level():
    # Two scores of the same images, equally good: the CI of the difference excludes 0
    # about 5% of the time.
    rejections = []
    for seed in range(400):
        y, s, pid = clustered_scores(120, d=1.0, seed=seed)
        rng = np.random.default_rng(10_000 + seed)
        s2 = 1.0 * y + rng.normal(0, 1, len(y)) + (s - 1.0 * y) * 0.5
        s1 = 1.0 * y + rng.normal(0, 1, len(y)) + (s - 1.0 * y) * 0.5
        diff = auroc_estimate(y, s1, pid) - auroc_estimate(y, s2, pid)
        lo, hi = diff.ci(0.95)
        rejections.append(lo > 0 or hi < 0)
    assert 0.02 <= np.mean(rejections) <= 0.08, np.mean(rejections)


def test_clustered_mean_and_balanced_accuracy_coverage():
    hits_m, hits_b = [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        sizes = rng.integers(1, 5, 120)
        pid = np.repeat(np.arange(120), sizes)
        u = rng.normal(0, 1, 120)[pid]
        v = u + rng.normal(0, 1, len(pid))
        lo, hi = mean_estimate(v, pid).ci(0.95)
        hits_m.append(lo <= 0 <= hi)
        y = (rng.random(120) < 0.4)[pid]
        s = y + rng.normal(0, 1, len(pid)) * 0.3 + u * 0.95
        lo, hi = balanced_accuracy_estimate(y, s >= 0.5, pid).ci(0.95)
        hits_b.append(lo <= balanced_accuracy_truth() <= hi)
    assert 0.92 <= np.mean(hits_m) <= 0.98
    assert 0.91 <= np.mean(hits_b) <= 0.99


def balanced_accuracy_truth():
    # s = y + 0.3 e + 0.95 u with e, u standard normal: s - y ~ N(0, 0.3^2 + 0.95^2).
    sd = np.sqrt(0.3**2 + 0.95**2)
    return 0.5 * (sst.norm.sf(-0.5 / sd) + sst.norm.cdf(0.5 / sd))


# -------------------------------------------------------------------------------- probes
def test_ridge_probe_equals_sklearn_ridge_classifier():
    # Reference: sklearn.linear_model.RidgeClassifier(alpha=1) on the standardised features,
    # fitted on the other folds (the probe standardises once over all images).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(240, 6)) * [1, 2, 3, 4, 5, 6] + 3
    z = (x - x.mean(0)) / x.std(0)
    for n_lv in (2, 3):
        lv = rng.integers(0, n_lv, 240)
        folds = rng.integers(0, 3, 240)
        got, _ = out_of_fold_scores(x, lv, folds, n_levels=n_lv, probe="ridge")
        for f in range(3):
            tr, te = folds != f, folds == f
            ref = RidgeClassifier(alpha=1.0).fit(z[tr], lv[tr])
            np.testing.assert_allclose(got[te], ref.decision_function(z[te]), atol=1e-9)


def test_patient_folds_keep_patients_whole_and_spread_levels():
    rng = np.random.default_rng(5)
    pid = np.repeat(np.arange(300), rng.integers(1, 4, 300))
    lv = (rng.random(300) < 0.2).astype(int)[pid]
    f = patient_folds(lv, pid, n_folds=5, random_state=0)
    assert all(len(np.unique(f[pid == p])) == 1 for p in range(300))
    share = [lv[f == k].mean() for k in range(5)]
    assert max(share) - min(share) < 0.08


def _probe_data(r, n_pat, delta, d=8):
    pid = np.repeat(np.arange(n_pat), r.integers(1, 4, n_pat))
    lv_p = r.integers(0, 2, n_pat)
    x = r.normal(size=(len(pid), d)) + r.normal(size=(n_pat, d))[pid]
    x[:, 0] += delta * lv_p[pid]
    return x, lv_p[pid], pid


@pytest.mark.slow
@pytest.mark.parametrize("delta", [0.0, 1.5])
def test_probe_ci_covers_the_expected_cross_validated_auroc(delta):
    # Truth: the AUROC, on a large independent sample, of the probe fitted on 4/5 of a
    # cohort the size of the audited one (what 5-fold cross-validation estimates),
    # averaged over cohorts. Patients have 1-3 correlated images.
    r = np.random.default_rng(123)
    truths = []
    for _ in range(100):
        x, lv, _ = _probe_data(r, 80, delta)
        xb, lvb, _ = _probe_data(r, 2000, delta)
        mu, sd = x.mean(0), x.std(0)
        fit = RidgeClassifier(alpha=1.0).fit((x - mu) / sd, lv)
        truths.append(roc_auc_score(lvb, fit.decision_function((xb - mu) / sd)))
    truth = np.mean(truths)
    hits = []
    for seed in range(100):
        x, lv, pid = _probe_data(np.random.default_rng(seed), 100, delta)
        lo, hi = attribute_probe(
            x, lv, pid, n_levels=2, n_resamples=30, random_state=seed
        ).probe.ci()
        hits.append(lo <= truth <= hi)
    assert 0.89 <= np.mean(hits) <= 0.99, (np.mean(hits), truth)


def test_probe_finds_an_encoded_attribute():
    rng = np.random.default_rng(6)
    pid = np.repeat(np.arange(200), 2)
    lv = rng.integers(0, 2, 200)[pid]
    x = rng.normal(size=(400, 8)) + 0.8 * lv[:, None]
    assert attribute_probe(x, lv, pid, n_levels=2).probe.ci(0.95)[0] > 0.8


def _insurance_like(seed, *, beyond):
    """Attribute planted through site and age only (or also drawn in the features)."""
    r = np.random.default_rng(seed)
    n_pat = 400
    site = r.integers(0, 4, n_pat)
    age = r.normal(55, 15, n_pat)
    logit = np.array([-1.2, -0.4, 0.4, 1.2])[site] + 0.06 * (55 - age)
    attr = (r.random(n_pat) < 1 / (1 + np.exp(-logit))).astype(int)
    pid = np.repeat(np.arange(n_pat), 2)
    feats = np.column_stack([np.eye(4)[site] * 2.0, (age - 55) / 15, r.normal(size=(n_pat, 4))])[
        pid
    ] + r.normal(0, 0.3, (2 * n_pat, 9))
    if beyond:
        feats[:, -1] += 1.5 * attr[pid]
    meta = pd.DataFrame({"site": site[pid].astype(str), "age": age[pid]})
    ctl = np.column_stack(
        [pd.get_dummies(meta["site"], dtype=float).to_numpy()[:, 1:], (meta["age"] - 55) / 15]
    )
    return feats, attr[pid], pid, ctl, meta["site"].to_numpy()


@pytest.mark.slow
def test_encoded_only_through_the_metadata_is_not_called_beyond_it():
    not_beyond = []
    for seed in range(30):
        x, lv, pid, ctl, site = _insurance_like(seed, beyond=False)
        r = attribute_probe(
            x,
            lv,
            pid,
            n_levels=2,
            control=ctl,
            control_columns=("site", "age"),
            strata=site,
            n_resamples=20,
            random_state=seed,
        )
        assert r.probe.value > 0.65  # encoded (through site and age)
        not_beyond.append(not r.beyond_metadata(0.95))
    assert np.mean(not_beyond) >= 0.95
    x, lv, pid, ctl, site = _insurance_like(0, beyond=True)
    r = attribute_probe(
        x, lv, pid, n_levels=2, control=ctl, control_columns=("site", "age"), strata=site
    )
    assert r.beyond_metadata(0.95) and r.probe_within.value > r.control_within.value


def test_stratified_auroc_ignores_pairs_across_strata():
    # The score separates only the strata, which differ in prevalence: overall AUROC is
    # high, within strata it is chance.
    st = np.repeat([0, 1], 200)
    lv = np.r_[np.zeros(150), np.ones(50), np.zeros(50), np.ones(150)].astype(int)
    s = st + np.random.default_rng(0).normal(0, 0.01, 400)
    assert auroc_estimate(lv, s, np.arange(400)).value > 0.7
    within = stratified_auroc_estimate(lv, s, np.arange(400), st)
    assert within.value == pytest.approx(0.5, abs=0.1)


# ------------------------------------------------------------------------- matching
def test_matching_weights_give_every_level_the_pooled_mix():
    rng = np.random.default_rng(7)
    lv = rng.integers(0, 3, 2000)
    cells = rng.integers(0, 6, 2000) + (lv == 2) * rng.integers(0, 2, 2000)
    cells = np.clip(cells, 0, 5)
    w, missing = matching_weights(lv, cells, 3)
    pooled = np.bincount(cells, minlength=6) / 2000
    for j in range(3):
        m = lv == j
        mix = np.bincount(cells[m], weights=w[m], minlength=6) / w[m].sum()
        np.testing.assert_allclose(mix, pooled, atol=1e-12)
    assert missing == 0.0


def test_a_gap_caused_by_age_disappears_after_matching():
    # Older patients are harder; group B is older: B's AUROC is lower before matching
    # and equal after.
    rng = np.random.default_rng(8)
    n = 6000
    grp = rng.integers(0, 2, n)
    old = rng.random(n) < np.where(grp == 1, 0.8, 0.2)
    y = rng.random(n) < 0.4
    s = np.where(old, 0.4, 1.6) * y + rng.normal(0, 1, n)
    meta = pd.DataFrame({"old": old.astype(int)})
    from medaudit.shortcuts._matching import match_cells

    cells = match_cells(meta, y.astype(int), ["old"])
    res = matched_gaps(y, s, grp, ["A", "B"], np.arange(n), cells, matched_on=["old"])
    g = res.gaps.set_index("metric").loc["auroc"]
    assert g["gap_low"] > 0.05 and not g["remains"]
    assert abs(g["gap_matched"]) < 0.03


# ----------------------------------------------------------------------------- KS tests
def test_ks_tests_equal_scipy():
    # Reference: scipy.stats.ks_2samp.
    rng = np.random.default_rng(9)
    v = rng.normal(size=300)
    lv = rng.integers(0, 2, 300)
    df = ks_tests({"mode 1": v}, lv, ["a", "b"], p_adjust="none")
    ref = sst.ks_2samp(v[lv == 1], v[lv != 1])
    assert df["ks"].iat[0] == pytest.approx(ref.statistic) and df["p_value"].iat[0] == (
        pytest.approx(ref.pvalue)
    )


@pytest.mark.slow
def test_ks_tests_hold_their_level_on_one_image_per_patient():
    # Clustered patients (1-4 correlated images each), no group difference.
    rejections = []
    for seed in range(200):
        r = np.random.default_rng(seed)
        pid = np.repeat(np.arange(120), r.integers(1, 5, 120))
        grp = r.integers(0, 2, 120)[pid]
        val = r.normal(size=120)[pid] + 0.3 * r.normal(size=len(pid))
        keep = one_per_patient(pid, seed)
        out = ks_tests({"m": val[keep]}, grp[keep], ["a", "b"], p_adjust="none")
        rejections.append(out["p_value"].iat[0] < 0.05)
    assert np.mean(rejections) <= 0.08, np.mean(rejections)


# ------------------------------------------------------------ association of a level
def test_level_direction_association_test_holds_its_level_on_clustered_patients():
    # No association: patients (1-4 images each, label and level per patient) with a
    # level independent of the label. A direction is given in about alpha of the runs;
    # ignoring the clustering would give far more.
    from medaudit.shortcuts._usage import level_direction

    hits, naive = [], []
    for seed in range(400):
        r = np.random.default_rng(seed)
        pid = np.repeat(np.arange(150), r.integers(1, 5, 150))
        y, lv = r.random(150)[pid] < 0.4, r.integers(0, 2, 150)[pid]
        hits.append(level_direction(lv, y, 2, clusters=pid, alpha=0.05).any())
        naive.append(level_direction(lv, y, 2, alpha=0.05).any())
    assert 0.02 <= np.mean(hits) <= 0.08, np.mean(hits)
    assert np.mean(naive) > np.mean(hits) + 0.03  # the clustering matters here


def test_level_direction_finds_a_real_association():
    from medaudit.shortcuts._usage import level_direction

    r = np.random.default_rng(0)
    pid = np.repeat(np.arange(200), 2)
    y = (r.random(200) < 0.4)[pid]
    lv = np.where(r.random(200) < 0.7, y[::2], 1 - y[::2])[pid]  # agrees 70% of the time
    assert level_direction(lv, y, 2, clusters=pid, alpha=0.01).tolist() == [-1, 1]
