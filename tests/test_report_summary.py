"""Executive summary and number formatting (medaudit.report._summary)."""

from __future__ import annotations

import math

import pytest

from medaudit._errors import InvalidParameterError
from medaudit.report import Check, Report, RootCause, Section, display_status
from medaudit.report._summary import (
    HEADLINES,
    SKIPPED_NOTE,
    build_summary,
    decimals_for,
    format_number,
    format_p_value,
    format_threshold,
    format_value_ci,
)

# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.9123, "0.912"),
        (0.27, "0.270"),  # rates: three significant digits
        (12.34, "12.3"),
        (1234.5, "1,234"),  # banker's rounding of the float repr: 1234.5 -> 1,234
        (0.034, "0.0340"),
        (0.00123, "0.00123"),
        (0.0061, "0.00610"),  # one format: never 6.1e-03 next to 0.01
        (0.0, "0.000"),
        (-0.25, "-0.250"),
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


def test_format_number_tiny_values_with_fixed_decimals_switch_to_scientific():
    assert format_number(1e-5, 3) == "1.0e-05"
    assert format_number(0.0004, 3) == "4.0e-04"
    assert format_number(0.0, 3) == "0.000"
    assert format_number(-0.0001, 3) == "-1.0e-04"


def test_decimals_cover_every_magnitude():
    got = [decimals_for(x) for x in (500, 50, 5, 0.5, 0.05, 0.005, 1e-9, 0.0999996)]
    assert got == [0, 1, 2, 3, 4, 5, 8, 3]


@pytest.mark.parametrize(
    ("value", "ci", "expected"),
    [
        (0.9123, (0.881, 0.934), "0.912 [0.881, 0.934]"),
        (0.08, (0.041, 0.118), "0.080 [0.041, 0.118]"),
        (0.061, (-0.01, 0.13), "0.061 [-0.010, 0.130]"),
        (0.0, (-0.02, 0.03), "0.0000 [-0.0200, 0.0300]"),
        (0.5, (0.4, float("nan")), "0.500 [0.400, –]"),
        (0.5, (0.4, None), "0.500 [0.400, –]"),
        (0.0, (0.0, 0.0), "0.000 [CI not estimable]"),  # zero width is not evidence
        (0.25, (0.25, 0.25), "0.250 [CI not estimable]"),
        (3, None, "3"),
        (3.0, None, "3"),  # a count carries no interval
        (3.5, None, "3.50"),
        (None, (0.1, 0.2), "–"),
        (float("nan"), None, "–"),
    ],
)
def test_format_value_ci(value, ci, expected):
    assert format_value_ci(value, ci) == expected


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.0004, "< 0.001"),
        (0.001, "0.0010"),
        (0.0049975, "0.0050"),
        (0.0539, "0.054"),
        (0.188, "0.19"),
        (0.5, "0.50"),
        (1.0, "1.0"),
        (float("nan"), "–"),
        (None, "–"),
    ],
)
def test_p_values_read_below_0001_or_with_two_significant_digits(p, expected):
    assert format_p_value(p) == expected


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
    warn = _fail("a.w", 0.2, 0.1, severity="minor")
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
        assert s.status_counts["fail"] == sum(c.status == "fail" for c in checks)
        assert s.n_checks == len(checks)
    s = build_summary(_report(Section("a", "A", "s", checks=cases["fail"])))
    assert s.headline == (
        "The model did not pass this audit: 1 of 4 checks failed at critical or major severity."
    )
    assert s.headline == HEADLINES["fail"].format(n=4, n_blocking=1, n_attention=2, n_pass=1)
    assert s.skipped_note == SKIPPED_NOTE.format(n_skipped=1, checks="check")
    assert build_summary(_report(Section("a", "A", "s", checks=[skip]))).skipped_note == ""
    w = build_summary(_report(Section("a", "A", "s", checks=cases["warn"])))
    assert w.headline.startswith("No critical or major check failed, but 1 of 3 checks need")


def test_findings_ranked_by_severity_status_then_evidence_beyond_threshold():
    checks_a = [
        _fail("a.small_fail", 0.06, 0.05),  # excess 0.2
        _fail("a.big_minor", 0.5, 0.05, severity="minor"),  # excess 9, but minor
    ]
    checks_b = [
        _fail("b.big_fail", 0.10, 0.05),  # excess 1.0
        _fail("b.auroc", 0.60, 0.75, op=">="),  # excess 0.2 (tie with a.small_fail -> by id)
        _fail("b.critical", 0.051, 0.05, severity="critical"),  # tiny excess, but critical
        Check.skipped("b.skip", "skipped", "too small"),
    ]
    s = build_summary(
        _report(Section("a", "A", "s", checks=checks_a), Section("b", "B", "s", checks=checks_b))
    )
    assert [f.check.id for f in s.findings] == [
        "b.critical",
        "b.big_fail",
        "a.small_fail",
        "b.auroc",
        "a.big_minor",
    ]
    assert [f.excess for f in s.findings] == pytest.approx([0.02, 1.0, 0.2, 0.2, 9.0])
    assert s.n_attention == 5
    assert [f.section for f in s.findings] == ["b", "b", "a", "b", "a"]
    assert [f.severity for f in s.findings] == ["critical", "major", "major", "major", "minor"]
    top3 = build_summary(
        _report(Section("a", "A", "s", checks=checks_a), Section("b", "B", "s", checks=checks_b)),
        n_findings=3,
    )
    assert len(top3.findings) == 3 and top3.n_attention == 5


def test_excess_is_measured_at_the_ci_bound_nearest_the_threshold():
    wide = _fail("f.wide", 0.40, 0.05, ci=(0.06, 0.74))  # estimate far, CI bound close
    tight = _fail("f.tight", 0.15, 0.05, ci=(0.12, 0.18))
    s = build_summary(_report(Section("f", "F", "s", checks=[wide, tight])))
    assert [f.check.id for f in s.findings] == ["f.tight", "f.wide"]
    assert [f.excess for f in s.findings] == pytest.approx([1.4, 0.2])


def test_root_causes_merge_checks_and_sections_into_one_finding():
    gap = _fail("fair.sex.gap", 0.2, 0.05, ci=(0.1, 0.3))
    inter = _fail("fair.sex&age.gap", 0.3, 0.05, ci=(0.1, 0.5))
    ok = Check.evaluate("fair.sex.other", "fine", 0.01, op="<=", threshold=0.05)
    ece = _fail("perf.ece", 0.2, 0.1, severity="minor", ci=(0.15, 0.25))
    ece_gap = _fail("fair.sex.ece_gap", 0.2, 0.05, severity="minor", ci=(0.1, 0.3))
    fair = Section(
        "fair", "Fairness", "s", checks=[gap, inter, ok, ece_gap],
        root_causes=[
            RootCause("group:sex=F", "Women are missed", (gap.id, inter.id, ok.id), "Text A."),
            RootCause("calibration", "Miscalibrated (fairness)", (ece_gap.id,), "Text C.", "Fix."),
        ],
    )  # fmt: skip
    perf = Section(
        "perf", "Performance", "s", checks=[ece],
        root_causes=[RootCause("calibration", "Miscalibrated", (ece.id,), "Text B.", "Fix.")],
    )  # fmt: skip
    s = build_summary(_report(perf, fair))
    assert [f.cause for f in s.findings] == ["group:sex=F", "calibration"]
    women, calib = s.findings
    assert women.title == "Women are missed" and women.status == "fail"
    assert set(women.check_ids) == {gap.id, inter.id}  # a passing check is not a finding
    assert calib.title == "Miscalibrated"  # the first section to name the cause
    assert calib.text == "Text B. Text C." and calib.advice == "Fix."
    assert set(calib.sections) == {"perf", "fair"}
    d = women.to_dict()
    assert set(d) == {"title", "severity", "status", "checks", "text", "advice", "cause"}
    assert d["severity"] == "major" and d["checks"][0] in (gap.id, inter.id)


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
