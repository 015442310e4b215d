"""The operating point: explicit, recorded, and never good news when it flags everything."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medaudit.fairness import fairness_section
from medaudit.inference import Predictions
from medaudit.operating_point import choose_operating_point, extreme_selection
from medaudit.performance import performance_section
from medaudit.report import Policy, Report, build_summary

FAST = Policy.from_mapping({"settings": {"n_bootstrap": 100}})


def _preds(n=800, seed=0, *, shift=0.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    z = 1.5 * y + rng.normal(0, 1, n)
    s = 1 / (1 + np.exp(-(z - 0.75))) * (1 - shift) + shift  # shift > 0 lifts every score
    meta = pd.DataFrame(
        {"sex": rng.choice(["F", "M"], n), "patient_id": np.arange(n) // 2, "site": "A"}
    )
    return Predictions(np.c_[1 - s, s], y, np.zeros(n), None, meta)


def test_scores_all_above_threshold_are_reported_as_a_bad_operating_point():
    p = _preds(shift=0.55)  # every score lies above 0.5
    assert (p.score >= 0.5).all()
    perf = performance_section(p, policy=FAST)
    checks = {c.id: c for c in perf.checks}
    assert checks["performance.operating_point"].status == "fail"
    sens = checks["performance.sensitivity"]
    assert sens.value == 1.0 and sens.status == "inconclusive"  # not good news
    assert "flags every image" in sens.reason
    assert "flags every image" in perf.summary and "choose an operating point" in perf.summary
    fair = fairness_section(p, sensitive=["sex"], policy=FAST, n_permutations=0, figures=False)
    fnr = {c.id: c for c in fair.checks}["fairness.sex.fnr_gap"]
    assert fnr.status == "inconclusive" and "flags every image" in fnr.reason
    summary = build_summary(Report([perf, fair]))
    first = summary.findings[0]
    assert first.cause == "operating_point" and first.status == "fail"
    assert "--operating-point" in first.advice
    import re

    page = re.sub(r"<abbr [^>]*>|</abbr>", "", Report([perf, fair]).to_html())
    assert "The operating point flags every image: choose one" in page


def test_a_sensible_threshold_is_not_flagged():
    perf = performance_section(_preds(), policy=FAST)
    checks = {c.id: c for c in perf.checks}
    assert checks["performance.operating_point"].status == "pass"
    assert checks["performance.sensitivity"].status in ("pass", "fail", "inconclusive")
    assert not any(rc.key == "operating_point" for rc in perf.root_causes)


def test_operating_point_is_chosen_on_the_calibration_split_and_recorded():
    p, cal = _preds(seed=1), _preds(seed=2)
    pol = Policy.from_mapping(
        {
            "settings": {
                "n_bootstrap": 50,
                "operating_point": "sensitivity",
                "target_sensitivity": 0.9,
            }
        }
    )
    from medaudit.operating_point import operating_point_from_policy

    op = operating_point_from_policy(p, pol, cal)
    assert op.chosen_on == "calibration split" and op.n_calibration == len(cal)
    cal_sens = (cal.score[cal.labels == 1] >= op.threshold).mean()
    assert cal_sens >= 0.9
    sec = performance_section(p, policy=pol, calibration=cal)
    rec = sec.tables["operating_point"].iloc[0]
    assert rec["method"] == "sensitivity" and rec["threshold"] == pytest.approx(op.threshold)
    assert any("Operating point: score ≥" in n for n in sec.notes)
    # Without a calibration split it says the point flatters the metrics.
    sec2 = performance_section(p, policy=pol)
    assert any("flatters" in n for n in sec2.notes)


def test_choose_and_extreme_hand_computed():
    op = choose_operating_point([0, 1], [0.2, 0.9], method="fixed", threshold=0.3)
    assert (op.method, op.threshold, op.chosen_on) == ("fixed", 0.3, "policy")
    assert extreme_selection(0.99) == "every" and extreme_selection(0.01) == "no"
    assert extreme_selection(0.5) is None


def test_cli_flags_set_the_operating_point(tmp_path):
    from medaudit.cli.audit import operating_point_settings

    assert operating_point_settings("youden", None, None) == {"operating_point": "youden"}
    assert operating_point_settings(None, 0.3, 0.8) == {
        "operating_threshold": 0.3,
        "target_sensitivity": 0.8,
    }
    from medaudit.cli.check import check_predictions

    p = _preds()
    df = pd.DataFrame({"label": p.labels, "score": p.score, "sex": p.meta["sex"]})
    df.to_csv(tmp_path / "p.csv", index=False)
    df.iloc[:400].to_csv(tmp_path / "cal.csv", index=False)
    sec = check_predictions(
        tmp_path / "p.csv",
        operating_point="youden",
        calibration=tmp_path / "cal.csv",
        n_permutations=0,
    )
    assert any("Youden's J on the calibration split" in n for n in sec.notes)
