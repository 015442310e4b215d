"""The executive summary: the verdict and the findings that matter, grouped by root cause.

The summary is built from the sections alone; no audit is named here. Each audit may
group its checks by root cause (:class:`~medaudit.report.RootCause`): causes with the
same key merge across sections into one finding, and a failed or inconclusive check that
no cause claims is a finding of its own. A finding's status is ``fail`` when any of its
checks failed, else ``inconclusive``; its severity is the most serious among the checks
that set that status. Findings rank by severity, then status, then evidence (a finding
whose deciding checks all have a CI straddling the threshold comes after one the data
support), then by how far beyond its threshold even the favourable end of the deciding
check's CI lies, relative to the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medaudit._errors import param_error
from medaudit.report._format import (
    OP_SYMBOLS,
    OP_WORDS,
    decimals_for,
    format_number,
    format_p_value,
    format_threshold,
    format_value_ci,
)
from medaudit.report._model import SEVERITIES, Check, Report, RootCause, display_status

__all__ = [
    "HEADLINES",
    "OP_SYMBOLS",
    "SKIPPED_NOTE",
    "ExecutiveSummary",
    "Finding",
    "build_summary",
    "decimals_for",
    "format_number",
    "format_p_value",
    "format_threshold",
    "format_value_ci",
]

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_STATUS_RANK = {"fail": 0, "inconclusive": 1}

HEADLINES: dict[str, str] = {
    "fail": "The model did not pass this audit: {n_blocking} of {n} checks failed at "
    "critical or major severity.",
    "warn": "No critical or major check failed, but {n_attention} of {n} checks need "
    "attention (a minor failure or an inconclusive result).",
    "pass": "All {n_pass} evaluated checks passed.",
    "skipped": "No check could be evaluated: all {n} checks were skipped.",
    "empty": "This report contains no checks.",
}
SKIPPED_NOTE = "{n_skipped} {checks} could not be evaluated; each section says why."


@dataclass(frozen=True)
class Finding:
    """One root cause: the failed or inconclusive checks behind it, in words.

    Attributes
    ----------
    title : str
        The finding as a headline.
    severity : {"critical", "major", "minor", "info"}
        The most serious severity among the checks that set the status.
    status : {"fail", "inconclusive"}
        ``fail`` when any check failed, else ``inconclusive``.
    checks : tuple of Check
        Every check of the cause that did not pass (the deciding check first).
    text : str
        The numbers with their CIs, who is affected.
    advice : str
        What to do next.
    cause : str
        Root-cause key (a check id for a check no audit grouped).
    sections : tuple of str
        Names of the sections the checks come from.
    section_titles : tuple of str
    excess : float
        How far the deciding check lies beyond its threshold, relative to the threshold
        (``inf`` for a zero threshold).
    """

    title: str
    severity: str
    status: str
    checks: tuple[Check, ...]
    text: str
    advice: str
    cause: str
    sections: tuple[str, ...]
    section_titles: tuple[str, ...]
    excess: float
    _key: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def check(self) -> Check:
        """The deciding check (the most serious, furthest beyond its threshold)."""
        return self.checks[0]

    @property
    def check_ids(self) -> tuple[str, ...]:
        """Ids of the checks behind the finding."""
        return tuple(c.id for c in self.checks)

    @property
    def sentence(self) -> str:
        """The finding's text (kept for callers of the one-check findings)."""
        return self.text

    @property
    def section(self) -> str:
        """The first section the finding comes from."""
        return self.sections[0]

    @property
    def section_title(self) -> str:
        """Its title."""
        return self.section_titles[0]

    def to_dict(self) -> dict[str, Any]:
        """The record in ``audit.json``'s ``summary.findings``."""
        return {
            "title": self.title,
            "severity": self.severity,
            "status": self.status,
            "checks": list(self.check_ids),
            "text": self.text,
            "advice": self.advice,
            "cause": self.cause,
        }


@dataclass(frozen=True)
class ExecutiveSummary:
    """What the report says first.

    Attributes
    ----------
    verdict : {"fail", "warn", "pass", "skipped", "empty"}
        ``fail`` when a critical or major check failed, ``warn`` when a minor/info check
        failed or a check was inconclusive, ``pass`` when at least one check passed,
        ``skipped`` when every check was skipped, ``empty`` when there are no checks.
    headline : str
    counts : dict of str to int
        Number of checks per display status (``fail``, ``warn``, ``pass``, ``skipped``).
    status_counts : dict of str to int
        Number of checks per status (``pass``, ``fail``, ``inconclusive``, ``skipped``).
    findings : tuple of Finding
        Every finding, most important first (at most ``n_findings`` of them).
    n_attention : int
        How many findings there are in total.
    n_blocking : int
        How many checks failed at critical or major severity.
    skipped_note : str
    """

    verdict: str
    headline: str
    counts: Mapping[str, int]
    findings: tuple[Finding, ...]
    n_attention: int
    skipped_note: str
    status_counts: Mapping[str, int] = field(default_factory=dict)
    n_blocking: int = 0

    @property
    def n_checks(self) -> int:
        """Total number of checks."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """The ``summary`` block of ``audit.json``."""
        return {
            "verdict": self.verdict,
            "headline": self.headline,
            "counts": dict(self.status_counts),
            "findings": [f.to_dict() for f in self.findings],
        }


def _excess(check: Check) -> float:
    """How far beyond its threshold even the favourable end of the check's CI lies.

    Relative to the threshold; the point estimate when there is no usable CI, 0 when the
    CI straddles the threshold. A gap of a small intersection with a wide CI thus ranks
    below a gap the data pin down, however large its point estimate.
    """
    if check.value is None or check.threshold is None:
        return 0.0
    t = float(check.threshold)
    ref = float(check.value)
    ev = check.evidence
    if ev == "straddles":
        return 0.0
    if ev == "beyond_threshold" and check.ci is not None:
        lo, hi = (float(x) for x in check.ci)
        ref = min((lo, hi), key=lambda b: abs(b - t))
    d = abs(ref - t)
    if t == 0.0:
        return math.inf if d > 0 else 0.0
    return d / abs(t)


def check_sentence(check: Check, confidence: float) -> str:
    """One check in words: the number, its CI, the policy's threshold, what the CI says."""
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


@dataclass
class _Group:
    cause: str
    title: str = ""
    texts: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    checks: list[tuple[Check, str, str]] = field(default_factory=list)


def _groups(report: Report) -> list[_Group]:
    """Root causes merged by key across sections, then one group per unclaimed check."""
    by_key: dict[str, _Group] = {}
    claimed: set[tuple[str, str]] = set()
    for sec in report.sections:
        ids = {c.id: c for c in sec.checks}
        rc: RootCause
        for rc in sec.root_causes:
            g = by_key.setdefault(rc.key, _Group(rc.key, rc.title))
            if rc.text:
                g.texts.append(rc.text)
            if rc.advice and rc.advice not in g.advice:
                g.advice.append(rc.advice)
            for cid in rc.checks:
                if cid in ids and (sec.name, cid) not in claimed:
                    claimed.add((sec.name, cid))
                    g.checks.append((ids[cid], sec.name, sec.title))
    groups = list(by_key.values())
    for sec in report.sections:
        for c in sec.checks:
            if (sec.name, c.id) in claimed or c.status not in _STATUS_RANK:
                continue
            g = _Group(c.id, _capitalise(c.description.rstrip(".")))
            g.checks.append((c, sec.name, sec.title))
            if c.advice:
                g.advice.append(c.advice)
            groups.append(g)
    return groups


def _finding(g: _Group, confidence: float) -> Finding | None:
    open_ = [(c, s, t) for c, s, t in g.checks if c.status in _STATUS_RANK]
    if not open_:
        return None
    status = "fail" if any(c.status == "fail" for c, _, _ in open_) else "inconclusive"
    deciding = [x for x in open_ if x[0].status == status]
    severity = min((c.severity for c, _, _ in deciding), key=_SEVERITY_RANK.__getitem__)
    deciding = [x for x in deciding if x[0].severity == severity]

    def order(x: tuple[Check, str, str]) -> tuple[Any, ...]:
        c = x[0]
        return (
            _STATUS_RANK[c.status],
            _SEVERITY_RANK[c.severity],
            c.evidence == "straddles",
            -round(_excess(c), 9),
            c.id,
        )

    open_.sort(key=order)
    lead = min(deciding, key=order)
    open_.remove(lead)
    open_.insert(0, lead)
    excess = _excess(lead[0])
    text = " ".join(g.texts) or " ".join(check_sentence(c, confidence) for c, _, _ in open_[:3])
    sections = tuple(dict.fromkeys(s for _, s, _ in open_))
    titles = tuple(dict.fromkeys(t for _, _, t in open_))
    # A finding the data may not support (every deciding CI straddles the threshold)
    # ranks after those the CI supports, however far its point estimate lies.
    unsure = all(c.evidence == "straddles" for c, _, _ in deciding)
    key = (
        _SEVERITY_RANK[severity],
        _STATUS_RANK[status],
        unsure,
        -round(excess, 9),
        g.cause,
    )
    return Finding(
        title=g.title,
        severity=severity,
        status=status,
        checks=tuple(c for c, _, _ in open_),
        text=text,
        advice=" ".join(g.advice),
        cause=g.cause,
        sections=sections,
        section_titles=titles,
        excess=excess,
        _key=key,
    )


def build_summary(
    report: Report, *, n_findings: int | None = None, confidence: float | None = None
) -> ExecutiveSummary:
    """Build the executive summary of ``report`` from the checks of all its sections.

    Parameters
    ----------
    report : Report
        The report to summarise.
    n_findings : int, optional
        Keep at most this many findings (default: all).
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
    >>> s.verdict, s.status_counts["fail"], s.findings[0].status, s.findings[0].severity
    ('fail', 1, 'fail', 'major')
    >>> print(s.findings[0].text)  # doctest: +NORMALIZE_WHITESPACE
    AUROC gap between sexes: 0.120 [0.080, 0.160]; the policy requires at most 0.05.
    The 95% CI lies entirely beyond the threshold.
    """
    if not isinstance(report, Report):
        raise param_error("report", "build_summary", "a medaudit Report", type(report).__name__)
    if n_findings is not None and (
        not isinstance(n_findings, int) or isinstance(n_findings, bool) or n_findings < 0
    ):
        raise param_error("n_findings", "build_summary", "a non-negative int or None", n_findings)
    if confidence is None:
        confidence = _confidence_from_meta(report.meta)
    checks = report.checks
    counts = dict.fromkeys(("fail", "warn", "pass", "skipped"), 0)
    status_counts = dict.fromkeys(("fail", "inconclusive", "pass", "skipped"), 0)
    for c in checks:
        counts[display_status(c)] += 1
        status_counts[c.status] += 1
    findings = [f for g in _groups(report) if (f := _finding(g, confidence)) is not None]
    findings.sort(key=lambda f: f._key)
    n = len(checks)
    n_blocking = sum(c.blocking for c in checks)
    n_open = status_counts["fail"] + status_counts["inconclusive"]
    if n_blocking:
        verdict = "fail"
    elif n_open:
        verdict = "warn"
    elif status_counts["pass"]:
        verdict = "pass"
    elif n:
        verdict = "skipped"
    else:
        verdict = "empty"
    headline = HEADLINES[verdict].format(
        n=n, n_blocking=n_blocking, n_attention=n_open, n_pass=status_counts["pass"]
    )
    skipped_note = ""
    if status_counts["skipped"] and verdict != "skipped":
        k = status_counts["skipped"]
        skipped_note = SKIPPED_NOTE.format(n_skipped=k, checks="check" if k == 1 else "checks")
    kept = findings if n_findings is None else findings[:n_findings]
    return ExecutiveSummary(
        verdict=verdict,
        headline=headline,
        counts=counts,
        findings=tuple(kept),
        n_attention=len(findings),
        skipped_note=skipped_note,
        status_counts=status_counts,
        n_blocking=n_blocking,
    )


def _confidence_from_meta(meta: Mapping[str, Any]) -> float:
    candidates = [meta.get("confidence")]
    policy = meta.get("policy")
    if isinstance(policy, Mapping):
        settings = policy.get("settings")
        if isinstance(settings, Mapping):
            candidates.append(settings.get("confidence"))
    settings = meta.get("policy_settings")
    if isinstance(settings, Mapping):
        candidates.append(settings.get("confidence"))
    for c in candidates:
        if isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < 1:
            return float(c)
    return 0.95
