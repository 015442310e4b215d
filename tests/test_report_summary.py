"""Executive summary and number formatting (medaudit.report._summary)."""

from __future__ import annotations

import math

import pytest

from medaudit._errors import InvalidParameterError
from medaudit.report import Check, Report, Section, display_status
from medaudit.report._summary import (
    HEADLINES,
    SKIPPED_NOTE,
    build_summary,
    decimals_for,
    format_number,
    format_threshold,
    format_value_ci,
)

# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.9123, "0.91"),
        (0.905, "0.91"),  # float(0.905) is 0.90500000000000002665, rounds up
        (12.34, "12.3"),
        (1234.5, "1,234"),  # banker's rounding of the float repr: 1234.5 -> 1,234
        (0.034, "0.034"),
        (0.00123, "0.0012"),
        (0.0, "0.00"),
        (-0.25, "-0.25"),
        (7, "7"),
        (1234567, "1,234,567"),
        (None, "–"),
        (float("nan"), "–"),
        (float("inf"), "–"),
        (True, "true"),
    ],
)
def test_format_number_hand_computed(x, expected):
    assert format_number(x) == expected


def test_format_number_tiny_values_switch_to_scientific():
    assert format_number(1e-5, 3) == "1.0e-05"
    assert format_number(0.0004, 3) == "4.0e-04"
    assert format_number(0.0, 3) == "0.000"


def test_decimals_cover_every_magnitude():
    assert [decimals_for(x) for x in (500, 50, 5, 0.5, 0.05, 0.005, 1e-9)] == [0, 1, 2, 2, 3, 4, 6]


@pytest.mark.parametrize(
    ("value", "ci", "expected"),
    [
        (0.9123, (0.881, 0.934), "0.91 [0.88, 0.93]"),
        (0.08, (0.041, 0.118), "0.080 [0.041, 0.118]"),
        (0.061, (-0.01, 0.13), "0.061 [-0.010, 0.130]"),
        (0.0, (-0.02, 0.03), "0.000 [-0.020, 0.030]"),
        (0.5, (0.4, float("nan")), "0.50 [0.40, –]"),
        (0.5, (0.4, None), "0.50 [0.40, –]"),
        (3, None, "3"),
        (3.0, None, "3"),
        (3.5, None, "3.50"),
        (None, (0.1, 0.2), "–"),
        (float("nan"), None, "–"),
    ],
)
def test_format_value_ci(value, ci, expected):
    assert format_value_ci(value, ci) == expected


def test_format_threshold_shows_the_policy_number_as_written():
    assert format_threshold("<=", 0.05) == "≤ 0.05"
    assert format_threshold(">=", 0.8) == "≥ 0.8"
    assert format_threshold("<", 0) == "< 0"
    assert format_threshold(">", 0.125) == "> 0.125"
    assert format_threshold(None, 0.1) == "–"
    assert format_threshold("<=", float("nan")) == "–"


# ----------------------------------------------------------------------------- summary


def _fail(cid, value, threshold, *, op="<=", ci=None, advice="", severity="fail"):
    return Check.evaluate(
        cid, f"desc of {cid}", value, op=op, threshold=threshold, ci=ci, advice=advice,
        severity=severity,
    )  # fmt: skip


def _report(*sections):
    return Report(sections=list(sections))


def test_verdicts_and_headlines():
    ok = Check.evaluate("a.x", "x", 1.0, op=">=", threshold=0.5)
    warn = _fail("a.w", 0.2, 0.1, severity="warn")
    bad = _fail("a.f", 0.2, 0.1)
    skip = Check.skipped("a.s", "s", "group too small")
    cases = {
        "fail": [ok, warn, bad, skip],
        "warn": [ok, warn, skip],
        "pass": [ok, skip],
        "skipped": [skip],
        "empty": [],
    }
    for verdict, checks in cases.items():
        s = build_summary(_report(Section("a", "A", "s", checks=checks)))
        assert s.verdict == verdict
        counts = {
            k: sum(display_status(c) == k for c in checks)
            for k in ("pass", "fail", "warn", "skipped")
        }
        assert dict(s.counts) == counts
        assert s.n_checks == len(checks)
        assert s.headline == HEADLINES[verdict].format(
            n=len(checks), n_fail=counts["fail"], n_warn=counts["warn"], n_pass=counts["pass"]
        )
    s = build_summary(_report(Section("a", "A", "s", checks=cases["fail"])))
    assert s.headline == "The model did not pass this audit: 1 of 4 checks failed."
    assert s.skipped_note == SKIPPED_NOTE.format(n_skipped=1, checks="check")
    assert build_summary(_report(Section("a", "A", "s", checks=[skip]))).skipped_note == ""


def test_findings_ranked_by_severity_then_relative_excess():
    checks_a = [
        _fail("a.small_fail", 0.06, 0.05),  # excess 0.2
        _fail("a.big_warn", 0.5, 0.05, severity="warn"),  # excess 9, but only a warning
    ]
    checks_b = [
        _fail("b.big_fail", 0.10, 0.05),  # excess 1.0
        _fail("b.auroc", 0.60, 0.75, op=">="),  # excess 0.2 (tie with a.small_fail -> by id)
        Check.skipped("b.skip", "skipped", "too small"),
    ]
    s = build_summary(
        _report(Section("a", "A", "s", checks=checks_a), Section("b", "B", "s", checks=checks_b)),
        n_findings=10,
    )
    assert [f.check.id for f in s.findings] == [
        "b.big_fail",
        "a.small_fail",
        "b.auroc",
        "a.big_warn",
    ]
    assert [f.excess for f in s.findings] == pytest.approx([1.0, 0.2, 0.2, 9.0])
    assert s.n_attention == 4
    assert [f.section for f in s.findings] == ["b", "a", "b", "a"]
    top3 = build_summary(
        _report(Section("a", "A", "s", checks=checks_a), Section("b", "B", "s", checks=checks_b))
    )
    assert len(top3.findings) == 3 and top3.n_attention == 4


def test_zero_threshold_violation_ranks_first_within_its_severity():
    s = build_summary(
        _report(
            Section("x", "X", "s", checks=[_fail("x.gap", 0.5, 0.05)]),
            Section("y", "Y", "s", checks=[_fail("y.overlap", 2, 0)]),
        )
    )
    assert s.findings[0].check.id == "y.overlap"
    assert math.isinf(s.findings[0].excess)


def test_sentence_has_number_ci_threshold_and_the_checks_advice():
    gap = _fail(
        "anything.at.all",
        0.08,
        0.05,
        ci=(0.061, 0.118),
        advice="Retrain with --disentangle site or remove markers.",
    )
    unsure = _fail("other.gap", 0.061, 0.05, ci=(-0.01, 0.13))
    s = build_summary(
        _report(Section("made_up_audit", "Some audit nobody planned", "s", checks=[gap, unsure]))
    )
    f0, f1 = s.findings
    assert f0.sentence == (
        "Desc of anything.at.all: 0.080 [0.061, 0.118]; the policy requires at most 0.05. "
        "The 95% CI lies entirely beyond the threshold."
    )
    assert f0.advice == "Retrain with --disentangle site or remove markers."
    assert f0.section_title == "Some audit nobody planned"
    assert f1.sentence.endswith(
        "The 95% CI includes the threshold, so more data are needed to be sure."
    )


def test_confidence_level_is_read_from_meta():
    gap = _fail("a.gap", 0.08, 0.05, ci=(0.06, 0.1))
    rep = Report(
        [Section("a", "A", "s", checks=[gap])], meta={"policy": {"settings": {"confidence": 0.9}}}
    )
    assert "The 90% CI lies" in build_summary(rep).findings[0].sentence
    assert "The 80% CI" in build_summary(rep, confidence=0.8).findings[0].sentence


def test_summary_validates_its_parameters():
    with pytest.raises(InvalidParameterError, match="'report' parameter of build_summary"):
        build_summary({"sections": []})  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'n_findings' parameter of build_summary"):
        build_summary(Report(), n_findings=-1)


def test_findings_the_ci_supports_rank_before_possible_noise():
    from medaudit.report import Check, Report, Section, build_summary

    noisy = Check.evaluate("f.a&b.gap", "noisy gap", 0.40, op="<=", threshold=0.05, ci=(-0.1, 0.8))
    solid = Check.evaluate("f.sex.gap", "solid gap", 0.10, op="<=", threshold=0.05, ci=(0.07, 0.14))
    rep = Report([Section("f", "F", "s", checks=[noisy, solid])])
    ids = [f.check.id for f in build_summary(rep).findings]
    assert ids == ["f.sex.gap", "f.a&b.gap"]
