import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, recall_score, roc_auc_score

from medaudit.inference import Predictions
from medaudit.performance import calibration_curve, performance_section
from medaudit.report import Policy
from medaudit.stats import expected_calibration_error, weighted_expected_calibration_error


def _preds(n=600, sep=1.0, seed=0, sites=("A", "B", "C"), site_shift=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = rng.choice(list(sites), n)
    shift = np.array([(site_shift or {}).get(s, 1.0) for s in site])
    z = (2 * y - 1) * sep * shift + rng.normal(0, 1, n)
    s = 1 / (1 + np.exp(-z))
    meta = pd.DataFrame({"site": site, "patient_id": rng.integers(0, n // 2, n)})
    return Predictions(np.c_[1 - s, s], y, np.zeros(n), None, meta)


def test_point_estimates_agree_with_sklearn():
    p = _preds()
    sec = performance_section(p, policy=Policy.from_mapping({"settings": {"n_bootstrap": 50}}))
    overall = sec.tables["overall"].set_index("metric")["value"]
    y, s = p.labels, p.score
    pred = (s >= 0.5).astype(int)
    # Reference: scikit-learn's roc_auc_score / recall_score / confusion_matrix.
    assert abs(overall["AUROC"] - roc_auc_score(y, s)) < 1e-9
    assert abs(overall["Sensitivity (TPR)"] - recall_score(y, pred)) < 1e-9
    assert abs(overall["Specificity (TNR)"] - recall_score(1 - y, 1 - pred)) < 1e-9
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    cm = sec.tables["confusion_matrix"]
    assert cm["predicted positive"].tolist() == [tp, fp]
    assert cm["predicted negative"].tolist() == [fn, tn]
    lo, hi = sec.tables["overall"].set_index("metric").loc["AUROC", ["ci_low", "ci_high"]]
    assert lo < overall["AUROC"] < hi


def test_ece_hand_computed():
    # Two bins used: [0.2,0.3) holds p=0.25 twice with one positive → |0.5-0.25| = 0.25;
    # [0.9,1.0] holds p=0.95 twice, both positive → |1-0.95| = 0.05. ECE = (2*.25+2*.05)/4.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.25, 0.25, 0.95, 0.95])
    assert expected_calibration_error(y, p) == pytest.approx(0.15, abs=1e-12)
    table = calibration_curve(y, p)
    assert table["n"].sum() == 4 and len(table) == 10


def test_site_gap_found_when_planted_and_quiet_when_not():
    pol = Policy.from_mapping({"settings": {"n_bootstrap": 200}})
    planted = performance_section(_preds(n=1500, site_shift={"C": 0.2}), policy=pol)
    check = next(c for c in planted.checks if c.id == "performance.site_auroc_gap")
    assert check.status != "pass" and "C" in check.description
    assert check.evidence is not None
    quiet = performance_section(_preds(n=1500, seed=3), policy=pol)
    check = next(c for c in quiet.checks if c.id == "performance.site_auroc_gap")
    assert check.status in ("pass", "inconclusive") and not check.blocking


def test_small_site_is_skipped_with_reason():
    p = _preds(n=400, sites=("A", "B"))
    meta = p.meta.copy()
    meta.loc[:9, "site"] = "tiny"
    p = Predictions(p.scores, p.labels, p.loss, None, meta)
    sec = performance_section(p, policy=Policy.from_mapping({"settings": {"n_bootstrap": 20}}))
    row = sec.tables["per_site"].set_index("site").loc["tiny"]
    assert row["status"] == "skipped" and "too small" in row["reason"]
    assert np.isnan(row["auroc"])


def test_single_class_cohort_skips_auroc():
    p = _preds(n=100)
    y = np.ones(100, dtype=int)
    p = Predictions(p.scores, y, p.loss, None, p.meta)
    sec = performance_section(p, policy=Policy.from_mapping({"settings": {"n_bootstrap": 20}}))
    auroc = next(c for c in sec.checks if c.id == "performance.auroc")
    assert auroc.status == "skipped" and "too few" in auroc.reason


def test_same_seed_same_numbers():
    pol = Policy.from_mapping({"settings": {"n_bootstrap": 100, "seed": 7}})
    a = performance_section(_preds(), policy=pol).tables["overall"]
    b = performance_section(_preds(), policy=pol).tables["overall"]
    pd.testing.assert_frame_equal(a, b)


def test_weighted_ece_equals_ece_on_repeated_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # many values on bin edges
    w = rng.integers(0, 3, 80).astype(float)
    rep = np.repeat(np.arange(80), w.astype(int))
    got = weighted_expected_calibration_error(y, p, w[None])[0]
    assert got == pytest.approx(expected_calibration_error(y[rep], p[rep]), abs=1e-12)
