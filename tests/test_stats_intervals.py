"""medaudit.stats: the resampling design, simultaneous intervals, ECE, sample sizes.

Hand-computed cases, agreement with independent references, and the properties the
simulations in tests/test_coverage.py rely on (fast; the coverage itself is slow).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.fairness import group_metrics
from medaudit.stats import (
    bootstrap_counts,
    bootstrap_interval,
    calibration_error,
    calibration_terms,
    expected_calibration_error,
    extreme_interval,
    percentile_intervals,
    pseudo_replicates,
    range_interval,
    required_sample_size,
    resampling_strata,
    simultaneous_critical_value,
    simultaneous_intervals,
    small_sample_widen,
    spiegelhalter_test,
)


# ----------------------------------------------------------------------------- resampling
def test_patient_with_both_classes_is_never_split_and_strata_keep_their_size():
    y = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    pid = np.array([1, 1, 2, 3, 4, 4, 5, 6])  # patients 1 and 4 have both classes
    strata = resampling_strata(n_samples=8, labels=y, clusters=pid)
    W = bootstrap_counts(strata, n_boot=500, random_state=0, clusters=pid)
    assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 4] == W[:, 5])
    # Patients with a positive image (1, 4, 6) and without (2, 3, 5): 3 of each per resample.
    per_patient = np.stack([W[:, 0], W[:, 2], W[:, 3], W[:, 4], W[:, 6], W[:, 7]], axis=1)
    assert np.allclose(per_patient[:, [0, 3, 5]].sum(axis=1), 3)
    assert np.allclose(per_patient[:, [1, 2, 4]].sum(axis=1), 3)


def test_prevalence_strata_do_not_fix_the_class_mix():
    y = np.r_[np.zeros(50), np.ones(50)]
    W = bootstrap_counts(
        resampling_strata(n_samples=100, labels=y, by_class=False), n_boot=300, random_state=1
    )
    prevalence = (W @ y) / W.sum(axis=1)
    assert prevalence.std() == pytest.approx(np.sqrt(0.25 / 100), rel=0.2)
    W = bootstrap_counts(resampling_strata(n_samples=100, labels=y), n_boot=50, random_state=1)
    assert np.allclose((W @ y) / W.sum(axis=1), 0.5)  # by class: fixed


def test_rescaled_bootstrap_variance_of_a_mean_is_unbiased():
    # Rao & Wu (1988): with n - 1 draws scaled by n / (n - 1) the bootstrap variance of a
    # mean is s^2 / n (the plain bootstrap's is (n - 1) / n of it).
    x = np.array([0.0, 1.0, 3.0, 7.0, 2.0, 5.0])
    n = len(x)
    for rescaled, factor in ((True, 1.0), (False, (n - 1) / n)):
        W = bootstrap_counts(np.zeros(n), n_boot=60_000, random_state=2, rescaled=rescaled)
        means = (W @ x) / n
        assert means.var() == pytest.approx(factor * x.var(ddof=1) / n, rel=0.03)


def test_resampling_strata_rejects_bad_lengths():
    with pytest.raises(InvalidInputError, match="labels must have one entry"):
        resampling_strata(n_samples=3, labels=np.array([0, 1]))
    with pytest.raises(InvalidParameterError, match="'labels' parameter"):
        resampling_strata(n_samples=3)


# ----------------------------------------------------------------------------- intervals
def test_simultaneous_intervals_cover_all_columns_jointly_and_match_their_dual_test():
    rng = np.random.default_rng(0)
    reps = rng.normal(size=(4000, 6)) * [1, 2, 0.5, 1, 1, 3]
    est = np.zeros(6)
    sim = simultaneous_intervals(reps, est, 0.95)
    inside = ((reps >= sim.low) & (reps <= sim.high)).all(axis=1).mean()
    assert inside == pytest.approx(0.95, abs=0.01)
    # Sidak's critical value for 6 independent normals: z at 1 - 0.05/12 (about).
    assert sim.critical == pytest.approx(sst.norm.ppf(1 - (1 - 0.95 ** (1 / 6)) / 2), abs=0.08)
    for shift in np.linspace(0, 4, 17):  # exact duality, including at the boundary
        null = np.full(6, -shift)
        excluded = bool(((null < sim.low) | (null > sim.high)).any())
        assert (sim.p_value(null) <= 0.05) == excluded


def test_range_interval_duality_and_two_families():
    rng = np.random.default_rng(1)
    for seed in range(30):
        r = np.random.default_rng(seed)
        pts = r.normal(0, 0.03, 4)
        reps = pts + r.normal(0, 0.02, size=(800, 4))
        g = range_interval(pts, reps)
        assert (g.p_value <= 0.05) == (g.ci[0] > 0)
        assert g.ci[0] <= g.value <= g.ci[1]
    a = np.array([0.8, 0.7])
    b = np.array([0.1, 0.3])
    reps_a = a + rng.normal(0, 0.01, (500, 2))
    reps_b = b + rng.normal(0, 0.01, (500, 2))
    both = range_interval([a, b], [reps_a, reps_b])
    assert both.value == pytest.approx(0.2)  # the larger of the two ranges (FPR's)
    assert (both.high, both.low) == (1, 0)


def test_extreme_interval_is_min_over_simultaneous_bounds():
    reps = np.array([[0.5, 0.9], [0.6, 0.8], [0.7, 1.0]] * 10)
    r = extreme_interval(np.array([0.6, 0.9]), reps, which="min")
    assert r.value == 0.6 and r.low == 0
    assert r.ci[0] < 0.6 < r.ci[1] < 0.9


def test_percentile_intervals_match_numpy_and_ignore_nan():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(999, 3))
    x[:10, 1] = np.nan
    got = percentile_intervals(x, 0.9)
    for k in range(3):
        col = np.sort(x[np.isfinite(x[:, k]), k])
        lo, hi = np.quantile(col, [0.05, 0.95])
        assert got[k, 0] == pytest.approx(lo, abs=0.05) and got[k, 1] == pytest.approx(hi, abs=0.05)


def test_wilson_pseudo_replicates_reproduce_the_wilson_interval():
    # Reference: statsmodels-free Wilson interval by its formula (Wilson 1927).
    from medaudit.stats import wilson_interval

    rng = np.random.default_rng(3)
    for k, n in ((0, 20), (20, 20), (7, 40), (3, 200)):
        p = k / n
        reps = rng.binomial(n, p, 4000)[:, None] / n
        lo, hi = percentile_intervals(
            pseudo_replicates("proportion", np.array([p]), reps, np.array([n])), 0.95
        )[0]
        wl, wh = wilson_interval(k, n)
        assert lo == pytest.approx(float(wl), abs=0.006) and hi == pytest.approx(
            float(wh), abs=0.006
        )


def test_logit_basic_interval_reflects_the_bootstrap_on_the_logit_scale():
    reps = np.array([0.90, 0.92, 0.94, 0.96, 0.98] * 200)
    lo, hi = bootstrap_interval(0.95, reps, kind="logit", confidence=0.5)
    lg = lambda v: np.log(v / (1 - v))  # noqa: E731
    ex = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    q = np.quantile(lg(reps), [0.25, 0.75])
    assert lo == pytest.approx(ex(2 * lg(0.95) - q[1]), abs=0.01)
    assert hi == pytest.approx(ex(2 * lg(0.95) - q[0]), abs=0.01)


def test_small_sample_widening_uses_student_t():
    out = small_sample_widen(np.array([0.5, 0.5]), np.array([[0.4, 0.4]]), np.array([25, 10_000]))
    assert (0.5 - out[0, 0]) / 0.1 == pytest.approx(sst.t.ppf(0.975, 24) / sst.norm.ppf(0.975))
    assert (0.5 - out[0, 1]) / 0.1 == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------- calibration
def _calibrated(n, seed, *, shift=0.0):
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-0.5, 1.5, n)))
    y = (rng.random(n) < np.clip(p + shift, 0, 1)).astype(int)
    return y, p


def test_debiased_ece_agrees_with_kumar_formula_on_large_data():
    # Reference: Kumar et al. 2019's debiased squared error per bin,
    # sum_b w_b ((ybar_b - pbar_b)^2 - ybar_b (1 - ybar_b) / (n_b - 1)), written directly.
    y, p = _calibrated(200_000, 0, shift=0.05)
    b = np.minimum((p * 10).astype(int), 9)
    ref = 0.0
    for k in range(10):
        m = b == k
        nb = m.sum()
        yb, pb = y[m].mean(), p[m].mean()
        ref += nb / len(y) * ((yb - pb) ** 2 - y[m].var(ddof=1) / nb)
    assert calibration_error(y, p) == pytest.approx(np.sqrt(ref), rel=0.02)


def test_debiased_ece_is_about_zero_for_calibrated_models_where_the_plugin_is_not():
    est, plug = [], []
    for seed in range(40):
        y, p = _calibrated(300, seed)
        est.append(calibration_terms(y, p).debiased_squared[0])
        plug.append(expected_calibration_error(y, p))
    # Unbiased for CE^2 = 0: the mean is within 3 standard errors of 0.
    assert abs(np.mean(est)) < 3 * np.std(est) / np.sqrt(len(est))
    assert np.mean(plug) > 0.04


def test_ece_interval_contains_zero_for_a_calibrated_model():
    y, p = _calibrated(1000, 5)
    gm = group_metrics(y, p, groups=np.tile(["a", "b"], 500), n_boot=300)
    w = gm.by_group("group")
    assert (w["ece_ci_low"] == 0).all()
    cal = gm.calibration.set_index("group")
    assert (cal["p_value"] > 0.05).all() and set(cal.columns) >= {
        "spiegelhalter_z",
        "spiegelhalter_p",
    }


def test_spiegelhalter_matches_its_formula_and_clusters_widen_it():
    # Reference: Spiegelhalter (1986), z = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p)).
    y, p = _calibrated(2000, 7, shift=0.04)
    z = ((y - p) * (1 - 2 * p)).sum() / np.sqrt(((1 - 2 * p) ** 2 * p * (1 - p)).sum())
    res = spiegelhalter_test(y, p)
    assert res.z == pytest.approx(z) and res.p_value == pytest.approx(2 * sst.norm.sf(abs(z)))
    # Two identical copies of each image in one patient: ignoring the patients inflates z
    # by sqrt 2; with them, the within-patient covariance (estimated from the residuals)
    # brings it back to about the z of one copy.
    y2, p2 = np.r_[y, y], np.r_[p, p]
    pid = np.r_[np.arange(2000), np.arange(2000)]
    assert spiegelhalter_test(y2, p2).z == pytest.approx(np.sqrt(2) * z)
    assert spiegelhalter_test(y2, p2, clusters=pid).z == pytest.approx(z, rel=0.05)


# ----------------------------------------------------------------------------- sample size
def test_required_sample_size_hand_computed_and_validated():
    # Two groups, TPR 0.8 vs 0.7, prevalence 0.2: v = 0.16/0.2 + 0.21/0.2 = 1.85;
    # n = (1.96 + 0.8416)^2 * 1.85 / 0.1^2 = 1452.3 images.
    r = required_sample_size("true_positive_rate", gap=0.1, baseline=0.8, prevalence=0.2)
    assert r.images_per_group == 1453 and r.critical_value == pytest.approx(1.959964, abs=1e-6)
    assert simultaneous_critical_value(8) > simultaneous_critical_value(4) > 1.96
    more = required_sample_size(
        "true_positive_rate", gap=0.1, baseline=0.8, prevalence=0.2, images_per_patient=4, icc=0.5
    )
    assert more.design_effect == 2.5 and more.images_per_group == pytest.approx(2.5 * 1453, abs=3)
    assert "patients per group" in str(r)
    with pytest.raises(InvalidParameterError, match="'metric' parameter of required_sample_size"):
        required_sample_size("ppv", gap=0.1)
    with pytest.raises(InvalidParameterError, match="'gap' parameter"):
        required_sample_size(gap=1.5)


def test_group_metrics_settings_and_unknown_options():
    from medaudit.fairness import GroupMetricsSettings

    y = np.tile([0, 1], 100)
    s = np.linspace(0.01, 0.99, 200)
    st = GroupMetricsSettings(n_boot=0, threshold=0.4)
    gm = group_metrics(y, s, groups=np.repeat(["a", "b"], 100), settings=st, min_group_size=10)
    assert gm.threshold == 0.4 and gm.n_boot == 0
    with pytest.raises(InvalidParameterError, match="'options' parameter of group_metrics"):
        group_metrics(y, s, groups=np.repeat(["a", "b"], 100), n_bootstrap=5)
    with pytest.raises(InvalidParameterError, match="'p_method' parameter"):
        GroupMetricsSettings(p_method="exact")


def test_skipped_group_is_left_out_of_gaps_and_of_the_metricframe():
    # Reference: fairlearn.metrics.equalized_odds_difference on the kept rows.
    from fairlearn.metrics import equalized_odds_difference

    rng = np.random.default_rng(4)
    y = (rng.random(600) < 0.4).astype(int)
    s = 1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.0)))
    g = np.where(np.arange(600) < 300, "A", "B").astype(object)
    g[0], y[0], s[0] = "tiny", 1, 0.1
    gm = group_metrics(y, s, groups={"grp": g}, n_boot=0)
    row = gm.gaps.set_index(["metric", "kind"]).loc[("equalized_odds_difference", "difference")]
    mf = gm.to_metricframe("grp")
    assert "tiny" not in set(mf.by_group.index)
    kept = g != "tiny"
    ref = equalized_odds_difference(
        y[kept], (s[kept] >= 0.5).astype(int), sensitive_features=g[kept]
    )
    assert row["value"] == pytest.approx(ref, abs=1e-12)
    full = equalized_odds_difference(y, (s >= 0.5).astype(int), sensitive_features=g)
    assert row["note"].endswith(
        "excludes skipped group(s) tiny; with them, as Fairlearn computes it over every "
        f"group: {full:.6g}"
    )
    assert gm.skipped_groups("grp") == {
        "tiny": "n=1 < min_group_size=30; n_pos=1 < min_class_count=5; n_neg=0 < min_class_count=5"
    }
    with warnings.catch_warnings():  # sklearn warns about the one-image group, as it should
        warnings.simplefilter("ignore")
        assert len(gm.to_metricframe("grp", include_skipped=True).by_group) == 3


def test_gap_pvalue_agrees_with_its_interval_and_family_is_the_reported_checks():
    rng = np.random.default_rng(6)
    n = 1200
    y = rng.integers(0, 2, n)
    g = rng.choice(list("abc"), n)
    s = 1 / (1 + np.exp(-((1.0 + 0.6 * (g == "a")) * (2 * y - 1) + rng.normal(0, 1, n))))
    gm = group_metrics(y, s, groups={"g": g}, n_boot=400, p_family=("auroc", "ece"))
    d = gm.gaps[(gm.gaps.kind == "difference") & gm.gaps.p_value.notna()]
    assert ((d.p_value <= 0.05) == (d.ci_low > 0)).all()
    adjusted = gm.gaps[gm.gaps.p_adjusted.notna()]
    assert set(adjusted.metric) == {"auroc", "ece"}
    assert isinstance(gm.calibration, pd.DataFrame)


def test_power_command_prints_the_sample_size(capsys):
    from medaudit.cli.app import run

    assert (
        run(
            [
                "power",
                "--gap",
                "0.1",
                "--metric",
                "true_positive_rate",
                "--baseline",
                "0.8",
                "--prevalence",
                "0.2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("About 1,453 patients per group (1,453 images) to detect a gap of 0.1")
    assert run(["power", "--gap", "0.1", "--metric", "ppv"]) == 2
    assert "The 'metric' parameter of required_sample_size" in capsys.readouterr().err


def test_coverage_harness_smoke(tmp_path):
    # The committed table comes from experiments/coverage/run.py: a tiny run writes the
    # CSV and replaces the table between the markers of a docs page.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "coverage"))
    import run as coverage_run

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{coverage_run.BEGIN}\nold\n{coverage_run.END}\nend\n")
    rc = coverage_run.main(
        [
            "--scale",
            "0.01",
            "--boot",
            "50",
            "--cells",
            "skipped_group",
            "--csv",
            str(tmp_path / "r.csv"),
            "--doc",
            str(doc),
        ]
    )
    text = doc.read_text()
    assert rc == 0 and "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "| EOD/DPD with a skipped group |" in text and (tmp_path / "r.csv").exists()


def test_gap_intervals_are_cut_to_where_the_quantity_lies():
    # A range of quantities in [lo, hi] lies in [0, hi - lo]; an extreme in [lo, hi].
    # (The demo's site AUROC gap had a max-t interval of [0, 2.77] before the cut.)
    from medaudit.stats import extreme_interval, range_interval

    rng = np.random.default_rng(0)
    reps = np.c_[rng.normal(0.9, 0.05, 500), rng.normal(0.6, 0.2, 500), rng.normal(0.8, 0.05, 500)]
    pts = np.array([0.9, 0.6, 0.8])
    free = range_interval(pts, reps)
    assert free.ci[1] > 0.5
    cut = range_interval(pts, reps, bounds=(0.25, 0.75))
    assert cut.ci == (min(free.ci[0], 0.5), 0.5)
    assert cut.value == free.value and cut.p_value == free.p_value
    low_free = extreme_interval(pts, reps, which="min")
    assert low_free.ci[0] < 0.25 and low_free.ci[1] > 0.9
    low = extreme_interval(pts, reps, which="min", bounds=(0.25, 0.9))
    assert low.ci == (0.25, 0.9) and low.value == low_free.value


def test_logit_interval_stays_sensible_when_many_resamples_are_perfect():
    # Site AUROC 0.984 on 33 positives: 40% of patient resamples ranked perfectly, and
    # their unclipped reflection put the lower limit at 0.004.
    reps = np.r_[np.ones(400), np.linspace(0.95, 0.999, 600)]
    lo, hi = bootstrap_interval(0.984, reps, kind="logit")
    assert 0.9 < lo < 0.984 < hi <= 1.0
    lg = lambda v: np.log(v / (1 - v))  # noqa: E731
    # log-odds at most ln 4 (and the point's own ln(1/p)) beyond the point
    assert lg(0.984) - lg(lo) <= np.log(4 / 0.984) + 1e-9
