import json

import numpy as np
import pandas as pd
import pytest

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.report import Check, Policy, Report, Section, Threshold
from medaudit.stats import auroc, bootstrap_counts, weighted_auroc


def test_check_evaluate_and_evidence():
    c = Check.evaluate("x.gap", "gap", 0.08, op="<=", threshold=0.05, ci=(0.06, 0.10))
    assert c.status == "fail" and c.evidence == "beyond_threshold" and c.blocking
    c = Check.evaluate("x.gap", "gap", 0.04, op="<=", threshold=0.05, ci=(0.01, 0.09))
    assert c.status == "inconclusive" and c.evidence == "straddles" and not c.blocking
    c = Check.evaluate(
        "x.gap", "gap", 0.04, op="<=", threshold=0.05, ci=(0.01, 0.09), decision="estimate"
    )
    assert c.status == "pass" and c.evidence == "straddles"
    c = Check.evaluate("x.gap", "gap", 0.02, op="<=", threshold=0.05, ci=(0.01, 0.03))
    assert c.status == "pass" and c.evidence == "within"  # a pass is never "beyond"
    c = Check.evaluate("x.auc", "auc", 0.9, op=">=", threshold=0.75, ci=(0.85, 0.95))
    assert c.evidence == "within"
    c = Check.evaluate("x.auc", "auc", 0.6, op=">=", threshold=0.75, ci=(0.5, 0.7))
    assert c.evidence == "beyond_threshold" and c.status == "fail"
    # the boundary: a CI ending exactly at the threshold lies on the passing side of <=
    c = Check.evaluate("x.n", "n", 0.0, op="<=", threshold=0.0, ci=(-0.01, 0.0))
    assert c.evidence == "within" and c.status == "pass"
    # a zero-width CI is no evidence: the value alone decides, and no evidence is claimed
    c = Check.evaluate("x.n", "n", 0.0, op="<=", threshold=0.0, ci=(0.0, 0.0))
    assert c.evidence is None and c.status == "pass"
    minor = Check.evaluate("x.gap", "gap", 0.08, op="<=", threshold=0.05, severity="minor")
    assert minor.status == "fail" and not minor.blocking
    assert Report([Section("x", "X", "s", checks=[minor])]).passed
    assert Check.evaluate("x", "d", float("nan"), op="<=", threshold=1).status == "skipped"
    with pytest.raises(InvalidParameterError, match="'op' parameter"):
        Check.evaluate("x", "d", 1.0, op="==", threshold=1)
    with pytest.raises(InvalidParameterError):
        Check("x", "d", None, "skipped")  # skipped needs a reason


def test_policy_patterns_and_errors(tmp_path):
    pol = Policy.from_mapping(
        {
            "checks": {
                "fairness.*": {"op": "<=", "threshold": 0.1},
                "fairness.sex.*": {"op": "<=", "threshold": 0.02, "severity": "warn"},
            }
        }
    )
    assert pol.threshold("fairness.sex.auroc_gap") == Threshold("<=", 0.02, "minor")
    assert pol.threshold("fairness.age_group.auroc_gap").threshold == 0.1
    assert pol.threshold("performance.auroc").op == ">="  # built-in default kept
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[settings]\nn_bootstrap = -1\nfoo = 1\n[settings.fairness]\nbar = 2\n"
        '[checks."a"]\nop = "=="\n[checks."nosuch.*"]\nop = "<="\nthreshold = 1\n'
    )
    with pytest.raises(InvalidInputError) as exc:
        Policy.from_toml(bad)
    msg = str(exc.value)  # every problem is listed at once, unknown keys named
    assert "n_bootstrap" in msg and "'foo'" in msg and "op must be" in msg and "threshold" in msg
    assert "'fairness.bar'" in msg and "'nosuch.*'" in msg and "fairness.p_adjust" in msg
    with pytest.raises(InvalidInputError, match="not found"):
        Policy.from_toml(tmp_path / "missing.toml")
    text = Policy.default().to_toml()
    (tmp_path / "p.toml").write_text(text)
    assert Policy.from_toml(tmp_path / "p.toml").checks == Policy.default().checks


def test_report_json_round_trip():
    df = pd.DataFrame({"group": ["a", "b"], "auroc": [0.8, np.nan], "n": [10, 20]})
    sec = Section(
        "s",
        "S",
        "summary",
        tables={"t": df},
        checks=[
            Check.evaluate("s.a", "A", 0.9, op=">=", threshold=0.8, ci=(0.85, 0.95)),
            Check.skipped("s.b", "B", "group too small"),
        ],
    )
    rep = Report([sec], meta={"seed": 0, "nested": {"x": np.float64(1.5)}})
    doc = rep.to_dict()
    text = json.dumps(doc, allow_nan=False)  # NaN became null
    assert doc["schema"] == "medaudit.audit/1" and doc["passed"] is True
    assert doc["sections"]["s"]["tables"]["t"][1]["auroc"] is None
    back = Report.from_dict(json.loads(text))
    assert back.to_dict() == doc


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        s = np.round(rng.random(300), 1)  # many ties
        # Reference: sklearn.metrics.roc_auc_score.
        assert abs(auroc(y, s) - roc_auc_score(y, s)) < 1e-12
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_weighted_auroc_equals_auroc_on_repeated_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    w = rng.integers(0, 4, 50).astype(float)
    rep = np.repeat(np.arange(50), w.astype(int))
    assert weighted_auroc(y, s, w[None])[0] == pytest.approx(auroc(y[rep], s[rep]), abs=1e-12)


def test_bootstrap_keeps_strata_sizes_and_whole_patients():
    strata = np.array([0] * 6 + [1] * 4)
    patients = np.array([0, 0, 1, 2, 2, 3, 4, 4, 5, 6])
    W = bootstrap_counts(strata, n_boot=300, random_state=0, clusters=patients)
    # images of one patient (within a stratum) are always drawn together
    assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 3] == W[:, 4]) and np.all(W[:, 6] == W[:, 7])
    # the number of patients drawn per stratum is fixed
    assert np.allclose(W[:, [0, 2, 3, 5]].sum(1), 4)  # one column per patient of stratum 0
    assert np.allclose(W[:, [6, 8, 9]].sum(1), 3)
    W2 = bootstrap_counts(strata, n_boot=300, random_state=0, clusters=patients)
    assert np.array_equal(W, W2)


def test_saved_report_is_readable_by_others(tmp_path):
    import os
    import stat

    from medaudit.report import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o644
