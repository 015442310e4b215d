"""The executive summary: the verdict and the few findings that matter most, in plain words.

The summary is built from every :class:`~medaudit.report.Section`'s checks alone; no audit
is named here. Failed checks come before warnings; within a severity, checks whose CI
crosses the threshold (possibly noise) come after the rest; then the check that lies
furthest beyond its threshold (relative to the threshold) comes first. Each finding is one
sentence with the number, its confidence interval and the threshold, followed by the
check's own ``advice``.

The number formatting used throughout the report (``0.91 [0.88, 0.93]``) lives here too,
so that the summary and the tables write numbers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medaudit._errors import param_error
from medaudit.report._model import Check, Report, display_status

__all__ = [
    "ExecutiveSummary",
    "Finding",
    "build_summary",
    "decimals_for",
    "format_number",
    "format_threshold",
    "format_value_ci",
]

OP_SYMBOLS: dict[str, str] = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}
OP_WORDS: dict[str, str] = {"<=": "at most", "<": "below", ">=": "at least", ">": "above"}
_SEVERITY_RANK: dict[str, int] = {"fail": 0, "warn": 1}

HEADLINES: dict[str, str] = {
    "fail": "The model did not pass this audit: {n_fail} of {n} checks failed.",
    "warn": "No check failed, but {n_warn} of {n} checks need attention.",
    "pass": "All {n_pass} evaluated checks passed.",
    "skipped": "No check could be evaluated: all {n} checks were skipped.",
    "empty": "This report contains no checks.",
}
SKIPPED_NOTE = "{n_skipped} {checks} could not be evaluated; each section says why."


def decimals_for(x: float) -> int:
    """Decimal places that show ``x`` with sensible precision.

    Two decimals between 0.1 and 10, fewer for large numbers, two significant digits
    for small ones (at most 6 decimals).

    Examples
    --------
    >>> [decimals_for(x) for x in (1234.5, 12.3, 0.912, 0.034, 0.0012, 0.0)]
    [0, 1, 2, 3, 4, 2]
    """
    a = abs(float(x))
    if not math.isfinite(a) or a == 0.0:
        return 2
    if a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 0.1:
        return 2
    return min(6, 1 - math.floor(math.log10(a)))


def format_number(x: Any, decimals: int | None = None) -> str:
    """Format one number for the report; ``"–"`` when missing or not finite.

    Integers (and bools) are written without decimals, with thousands separators.

    Examples
    --------
    >>> format_number(0.91234), format_number(12345), format_number(None), format_number(0.034)
    ('0.91', '12,345', '–', '0.034')
    >>> format_number(0.5, decimals=3)
    '0.500'
    """
    if x is None or isinstance(x, bool):
        return "–" if x is None else str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return "–"
    d = decimals_for(f) if decimals is None else decimals
    if f != 0.0 and abs(f) < 10.0**-d:
        return f"{f:.1e}"
    return f"{f:,.{d}f}"


def _is_count(*xs: Any) -> bool:
    vals = [x for x in xs if x is not None]
    return bool(vals) and all(
        isinstance(x, (int, float))
        and not isinstance(x, bool)
        and math.isfinite(float(x))
        and float(x).is_integer()
        and abs(float(x)) < 1e15
        for x in vals
    )


def format_value_ci(
    value: float | None, ci: Iterable[float | None] | None = None, *, decimals: int | None = None
) -> str:
    """Format a value with its confidence interval as ``"0.91 [0.88, 0.93]"``.

    The bounds use the same number of decimals as the value.

    Examples
    --------
    >>> format_value_ci(0.9123, (0.881, 0.934))
    '0.91 [0.88, 0.93]'
    >>> format_value_ci(0.034, [0.0121, 0.0562])
    '0.034 [0.012, 0.056]'
    >>> format_value_ci(None)
    '–'
    """
    if value is None or not math.isfinite(float(value)):
        return "–"
    bounds = None if ci is None else list(ci)
    if decimals is None:
        if bounds is None and _is_count(value):
            return format_number(int(float(value)))
        ref = float(value)
        if ref == 0.0 and bounds:
            finite = [abs(float(b)) for b in bounds if b is not None and math.isfinite(float(b))]
            ref = max(finite, default=0.0)
        decimals = decimals_for(ref)
    text = format_number(float(value), decimals)
    if bounds is not None and len(bounds) == 2:
        lo, hi = (format_number(None if b is None else float(b), decimals) for b in bounds)
        text += f" [{lo}, {hi}]"
    return text


def format_threshold(op: str | None, threshold: float | None) -> str:
    """Format ``op threshold`` as ``"≤ 0.05"`` (``"–"`` when there is none).

    Examples
    --------
    >>> format_threshold("<=", 0.05), format_threshold(">=", 0.75), format_threshold(None, None)
    ('≤ 0.05', '≥ 0.75', '–')
    >>> format_threshold("<=", 0.0), format_threshold(">", 0.125)
    ('≤ 0', '> 0.125')
    """
    if op is None or threshold is None or not math.isfinite(float(threshold)):
        return "–"
    # A threshold is a number someone wrote in a policy: show it as written.
    return f"{OP_SYMBOLS.get(op, op)} {float(threshold):g}"


@dataclass(frozen=True)
class Finding:
    """One failed or warned check, ranked and put into words.

    Attributes
    ----------
    section : str
        Name of the section the check belongs to.
    section_title : str
        Its heading.
    check : Check
        The check itself.
    sentence : str
        Plain-language statement with the number, its CI and the threshold.
    advice : str
        What to do about it (the check's ``advice``; empty when it gave none).
    excess : float
        How far the value lies beyond the threshold, relative to the threshold
        (``inf`` for a zero threshold); the ranking key within a severity.
    """

    section: str
    section_title: str
    check: Check
    sentence: str
    advice: str
    excess: float


@dataclass(frozen=True)
class ExecutiveSummary:
    """What the report says first.

    Attributes
    ----------
    verdict : {"fail", "warn", "pass", "skipped", "empty"}
        ``fail`` when any check failed, else ``warn`` when any warned, ``pass`` when at
        least one check passed, ``skipped`` when every check was skipped, ``empty``
        when there are no checks.
    headline : str
        One sentence stating the verdict with counts.
    counts : dict of str to int
        Number of checks per status (every status is a key).
    findings : tuple of Finding
        The most important failed or warned checks, most important first.
    n_attention : int
        How many checks failed or warned in total (``len(findings)`` may be fewer).
    skipped_note : str
        A sentence about skipped checks (empty when none were skipped).
    """

    verdict: str
    headline: str
    counts: Mapping[str, int]
    findings: tuple[Finding, ...]
    n_attention: int
    skipped_note: str

    @property
    def n_checks(self) -> int:
        """Total number of checks."""
        return sum(self.counts.values())


def _excess(check: Check) -> float:
    if check.value is None or check.threshold is None:
        return 0.0
    d = abs(float(check.value) - float(check.threshold))
    if check.threshold == 0.0:
        return math.inf if d > 0 else 0.0
    return d / abs(float(check.threshold))


def _sentence(check: Check, confidence: float) -> str:
    text = f"{_capitalise(check.description.rstrip('.'))}: {format_value_ci(check.value, check.ci)}"
    if check.op is not None and check.threshold is not None:
        text += (
            f"; the policy requires {OP_WORDS.get(check.op, check.op)} {float(check.threshold):g}"
        )
    text += "."
    ev = check.evidence
    pct = f"{confidence * 100:g}%"
    if ev == "beyond_threshold":
        text += f" The {pct} CI lies entirely beyond the threshold."
    elif ev == "straddles":
        text += f" The {pct} CI includes the threshold, so more data are needed to be sure."
    if check.reason:
        text += f" ({_capitalise(check.reason.rstrip('.'))}.)"
    return text


def _capitalise(s: str) -> str:
    return s[:1].upper() + s[1:]


def build_summary(
    report: Report, *, n_findings: int = 3, confidence: float | None = None
) -> ExecutiveSummary:
    """Build the executive summary of ``report`` from the checks of all its sections.

    Parameters
    ----------
    report : Report
        The report to summarise.
    n_findings : int, default=3
        How many findings to put into words.
    confidence : float, optional
        Confidence level of the CIs, for the wording; read from
        ``report.meta["confidence"]`` or ``report.meta["policy"]["settings"]["confidence"]``
        when not given, else 0.95.

    Returns
    -------
    ExecutiveSummary

    Examples
    --------
    >>> from medaudit.report import Check, Report, Section
    >>> gap = Check.evaluate("fairness.sex.auroc_gap", "AUROC gap between sexes", 0.12,
    ...                      op="<=", threshold=0.05, ci=(0.08, 0.16),
    ...                      advice="Collect more data of the worse-served group.")
    >>> rep = Report([Section("fairness", "Fairness", "One gap.", checks=[gap])])
    >>> s = build_summary(rep)
    >>> s.verdict, s.counts["fail"]
    ('fail', 1)
    >>> print(s.findings[0].sentence)  # doctest: +NORMALIZE_WHITESPACE
    AUROC gap between sexes: 0.12 [0.08, 0.16]; the policy requires at most 0.05.
    The 95% CI lies entirely beyond the threshold.
    """
    if not isinstance(report, Report):
        raise param_error("report", "build_summary", "a medaudit Report", type(report).__name__)
    if not isinstance(n_findings, int) or isinstance(n_findings, bool) or n_findings < 0:
        raise param_error("n_findings", "build_summary", "a non-negative int", n_findings)
    if confidence is None:
        confidence = _confidence_from_meta(report.meta)
    counts = dict.fromkeys(("pass", "fail", "warn", "skipped"), 0)
    ranked: list[tuple[tuple[int, int, float, str, int], Finding]] = []
    order = 0
    for section in report.sections:
        for check in section.checks:
            shown = display_status(check)
            counts[shown] += 1
            if shown not in _SEVERITY_RANK:
                continue
            excess = _excess(check)
            finding = Finding(
                section=section.name,
                section_title=section.title,
                check=check,
                sentence=_sentence(check, confidence),
                advice=check.advice,
                excess=excess,
            )
            # A finding that may be noise (its CI crosses the threshold) ranks after those
            # the CI supports and those without sampling error (counts such as patient
            # overlap), however far its point estimate lies; then the larger excess.
            # Rounded so that float noise does not decide between equal excesses.
            certainty = 1 if check.evidence == "straddles" else 0
            key = (_SEVERITY_RANK[shown], certainty, -round(excess, 9), check.id, order)
            ranked.append((key, finding))
            order += 1
    ranked.sort(key=lambda kf: kf[0])
    n = sum(counts.values())
    if counts["fail"]:
        verdict = "fail"
    elif counts["warn"]:
        verdict = "warn"
    elif counts["pass"]:
        verdict = "pass"
    elif n:
        verdict = "skipped"
    else:
        verdict = "empty"
    headline = HEADLINES[verdict].format(
        n=n, n_fail=counts["fail"], n_warn=counts["warn"], n_pass=counts["pass"]
    )
    skipped_note = ""
    if counts["skipped"] and verdict != "skipped":
        skipped_note = SKIPPED_NOTE.format(
            n_skipped=counts["skipped"], checks="check" if counts["skipped"] == 1 else "checks"
        )
    return ExecutiveSummary(
        verdict=verdict,
        headline=headline,
        counts=counts,
        findings=tuple(f for _, f in ranked[:n_findings]),
        n_attention=len(ranked),
        skipped_note=skipped_note,
    )


def _confidence_from_meta(meta: Mapping[str, Any]) -> float:
    candidates = [meta.get("confidence")]
    policy = meta.get("policy")
    if isinstance(policy, Mapping):
        settings = policy.get("settings")
        if isinstance(settings, Mapping):
            candidates.append(settings.get("confidence"))
    for c in candidates:
        if isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < 1:
            return float(c)
    return 0.95
