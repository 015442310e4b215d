"""The report model every audit speaks: Check, Figure, Section, Report.

An audit returns one :class:`Section`. A :class:`Report` is metadata plus sections, and
``Report.save(dir)`` writes ``index.html`` and ``audit.json``, each complete on its own.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medaudit._errors import param_error

__all__ = [
    "BLOCKING_SEVERITIES",
    "CAUSE_KEYS",
    "EVIDENCE",
    "OPS",
    "SEVERITIES",
    "STATUSES",
    "Check",
    "Figure",
    "Report",
    "RootCause",
    "Section",
    "atomic_write_text",
    "display_status",
    "group_cause",
    "site_cause",
]

Status = Literal["pass", "fail", "inconclusive", "skipped"]
STATUSES: tuple[str, ...] = ("pass", "fail", "inconclusive", "skipped")
Severity = Literal["critical", "major", "minor", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "info")
# A failed check of one of these severities fails the report (exit code 1).
BLOCKING_SEVERITIES: tuple[str, ...] = ("critical", "major")
# Where a check's CI lies relative to its threshold.
EVIDENCE: tuple[str, ...] = ("beyond_threshold", "straddles", "within")
Decision = Literal["ci", "estimate"]
# Severities of code and policy files written before severities had four levels.
SEVERITY_ALIASES: dict[str, str] = {"fail": "major", "warn": "minor"}
OPS: dict[str, Any] = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
}


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Check:
    """One statement about the model, with its evidence and how much it matters.

    Parameters
    ----------
    id : str
        Stable dotted identifier, e.g. ``"fairness.sex.auroc_gap"``; policies key on it.
    description : str
        What is checked, in words a clinician can read.
    value : float or None
        The point estimate (None when skipped).
    status : {"pass", "fail", "inconclusive", "skipped"}
        What the evidence supports. Under the default decision rule a check fails when
        its CI lies wholly beyond the threshold, passes when it lies wholly on the
        passing side, and is inconclusive when it straddles the threshold; a check
        without a CI is decided on its value. ``skipped`` comes with a reason.
    ci : tuple of (float, float) or None
        Confidence interval of ``value`` when known.
    op : {"<=", "<", ">=", ">"} or None
        How ``value`` is compared with ``threshold``.
    threshold : float or None
        The policy's threshold.
    reason : str
        Why the check was skipped, or a short qualifier of the verdict.
    advice : str
        What to do when the check does not pass (feeds the executive summary).
    severity : {"critical", "major", "minor", "info"}
        How serious a failure would be, from the policy. A failed ``critical`` or
        ``major`` check fails the report (exit code 1); ``minor`` and ``info`` failures
        are reported but do not.
    """

    id: str
    description: str
    value: float | None
    status: Status
    ci: tuple[float, float] | None = None
    op: str | None = None
    threshold: float | None = None
    reason: str = ""
    advice: str = ""
    severity: Severity = "major"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise param_error("status", "Check", f"one of {STATUSES}", self.status)
        if self.severity in SEVERITY_ALIASES:
            object.__setattr__(self, "severity", SEVERITY_ALIASES[self.severity])
        if self.severity not in SEVERITIES:
            raise param_error("severity", "Check", f"one of {SEVERITIES}", self.severity)
        if self.op is not None and self.op not in OPS:
            raise param_error("op", "Check", f"one of {tuple(OPS)}", self.op)
        if self.status == "skipped" and not self.reason:
            raise param_error("reason", "Check", "a non-empty string when skipped", self.reason)

    @classmethod
    def evaluate(
        cls,
        id: str,
        description: str,
        value: float,
        *,
        op: str,
        threshold: float,
        ci: tuple[float, float] | None = None,
        severity: Severity = "major",
        advice: str = "",
        decision: Decision = "ci",
    ) -> Check:
        """Compare ``value`` (and its CI) with ``threshold`` and build the check.

        With ``decision="ci"`` (the default) the status follows the evidence: ``fail``
        when the CI lies wholly beyond the threshold, ``pass`` when it lies wholly on the
        passing side, ``inconclusive`` when it straddles it. Without a CI, or with
        ``decision="estimate"``, the point estimate decides. A non-finite value is never
        a pass: it becomes ``skipped`` with a reason.

        Examples
        --------
        >>> Check.evaluate("m.auroc", "AUROC", 0.8, op=">=", threshold=0.75).status
        'pass'
        >>> Check.evaluate("m.gap", "gap", 0.1, op="<=", threshold=0.05, ci=(0.02, 0.2)).status
        'inconclusive'
        >>> Check.evaluate("m.gap", "gap", 0.1, op="<=", threshold=0.05, ci=(0.02, 0.2),
        ...                decision="estimate").status
        'fail'
        """
        if op not in OPS:
            raise param_error("op", "Check.evaluate", f"one of {tuple(OPS)}", op)
        if decision not in ("ci", "estimate"):
            raise param_error("decision", "Check.evaluate", "'ci' or 'estimate'", decision)
        v = _finite_or_none(value)
        if v is None:
            return cls.skipped(
                id, description, "the value could not be computed (not finite)", severity=severity
            )
        ci_t = None if ci is None else (float(ci[0]), float(ci[1]))
        severity = SEVERITY_ALIASES.get(severity, severity)  # type: ignore[assignment]
        status: Status = "pass" if OPS[op](v, threshold) else "fail"
        evidence = _evidence(ci_t, op, float(threshold))
        if decision == "ci" and evidence is not None:
            status = {"beyond_threshold": "fail", "within": "pass"}.get(evidence, "inconclusive")  # type: ignore[assignment]
        return cls(id, description, v, status, ci_t, op, float(threshold), "", advice, severity)

    @classmethod
    def skipped(
        cls, id: str, description: str, reason: str, *, severity: Severity = "major"
    ) -> Check:
        """Build a skipped check; ``reason`` says why (e.g. the group is too small)."""
        return cls(id, description, None, "skipped", reason=reason, severity=severity)

    @property
    def evidence(self) -> str | None:
        """Where the CI lies: ``beyond_threshold``, ``straddles`` or ``within`` (None: no CI).

        ``within`` means wholly on the passing side of the threshold, ``beyond_threshold``
        wholly on the failing side.
        """
        if self.threshold is None or self.op is None:
            return None
        return _evidence(self.ci, self.op, float(self.threshold))

    @property
    def blocking(self) -> bool:
        """True when this check fails the report: a failure of critical or major severity."""
        return self.status == "fail" and self.severity in BLOCKING_SEVERITIES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of this check."""
        return {
            "id": self.id,
            "description": self.description,
            "value": _finite_or_none(self.value),
            "ci": None if self.ci is None else [_finite_or_none(c) for c in self.ci],
            "op": self.op,
            "threshold": _finite_or_none(self.threshold),
            "status": self.status,
            "severity": self.severity,
            "evidence": self.evidence,
            "reason": self.reason,
            "advice": self.advice,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        """Inverse of :meth:`to_dict`."""
        ci = d.get("ci")
        nan = float("nan")
        status, severity = d["status"], d.get("severity", "major")
        if status == "warn":  # written before statuses had four values
            status, severity = "fail", "minor"
        return cls(
            id=d["id"],
            description=d["description"],
            value=d.get("value"),
            status=status,
            ci=None if ci is None else tuple(nan if c is None else c for c in ci),  # type: ignore[arg-type]
            op=d.get("op"),
            threshold=d.get("threshold"),
            reason=d.get("reason", ""),
            advice=d.get("advice", ""),
            severity=severity,
        )


def _evidence(ci: tuple[float, float] | None, op: str, threshold: float) -> str | None:
    """Where ``ci`` lies relative to ``threshold`` for a check ``value op threshold``."""
    if ci is None:
        return None
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo == hi:
        # A zero-width interval (no event in a group, no variation in the resamples)
        # is no evidence of precision: the check is decided on its value alone.
        return None
    passes = OPS[op]
    lo_ok, hi_ok = passes(lo, threshold), passes(hi, threshold)
    if lo_ok and hi_ok:
        return "within"
    if not lo_ok and not hi_ok:
        return "beyond_threshold"
    return "straddles"


def display_status(check: Check) -> str:
    """How a check is shown in the page and the summary.

    ``fail`` (a blocking failure), ``warn`` (a minor/info failure or an inconclusive
    check), ``pass`` or ``skipped``.

    Examples
    --------
    >>> display_status(Check("a", "a", 1.0, "fail", severity="minor"))
    'warn'
    """
    if check.status == "fail":
        return "fail" if check.blocking else "warn"
    if check.status == "inconclusive":
        return "warn"
    return check.status


@dataclass(frozen=True)
class Figure:
    """A figure as inline SVG with its alt text (what a screen reader says).

    ``wide`` figures take the page's full width (forest plots, multi-panel figures);
    the others sit side by side on a wide screen.
    """

    svg: str
    alt: str
    wide: bool = False

    @classmethod
    def from_matplotlib(cls, fig: Any, alt: str, *, wide: bool = False) -> Figure:
        """Render a matplotlib figure to SVG text and close it."""
        import matplotlib.pyplot as plt

        buf = io.StringIO()
        # svg.hashsalt fixes element ids so the same figure gives the same bytes.
        with plt.rc_context({"svg.hashsalt": "medaudit", "svg.fonttype": "none"}):
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        svg = buf.getvalue()
        start = svg.find("<svg")
        return cls(svg=svg[start:] if start >= 0 else svg, alt=alt, wide=wide)


@dataclass(frozen=True)
class RootCause:
    """Checks of one section that share a cause, put into words by the audit that ran them.

    The executive summary turns root causes into findings: causes with the same ``key``
    from different sections merge into one finding (``"calibration"`` from the
    performance and the fairness audits), and a failed or inconclusive check that no
    cause claims becomes a finding of its own.

    Parameters
    ----------
    key : str
        What the checks have in common, e.g. ``"group:sex=female"``, ``"site:H3"``,
        ``"calibration"``, ``"sensitivity"`` (see :data:`CAUSE_KEYS`).
    title : str
        The finding as a headline a clinician can read ("Disease is missed more often
        in patients with sex = female").
    checks : tuple of str
        Ids of the checks behind it (of this section).
    text : str
        The numbers with their CIs, who is affected, and the worst cell.
    advice : str
        What to do next.
    """

    key: str
    title: str
    checks: tuple[str, ...]
    text: str
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "key": self.key,
            "title": self.title,
            "checks": list(self.checks),
            "text": self.text,
            "advice": self.advice,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RootCause:
        """Inverse of :meth:`to_dict`."""
        return cls(
            key=str(d["key"]),
            title=str(d["title"]),
            checks=tuple(str(c) for c in d.get("checks", [])),
            text=str(d.get("text", "")),
            advice=str(d.get("advice", "")),
        )


# Root-cause keys shared by audits, so that their causes merge into one finding. A group
# is "group:<attribute>=<group>", a site "site:<site>".
CAUSE_KEYS: dict[str, str] = {
    "operating_point": "the operating threshold flags almost every image, or almost none",
    "sensitivity": "disease is missed at the operating point, in every group alike",
    "discrimination": "the model separates diseased from healthy images poorly",
    "calibration": "predicted probabilities do not match observed rates",
}


def group_cause(attribute: str, group: str) -> str:
    """The root-cause key of a patient group: ``group:sex=female``."""
    return f"group:{attribute}={group}"


def site_cause(site: str) -> str:
    """The root-cause key of an acquisition site: ``site:H3``."""
    return f"site:{site}"


@dataclass
class Section:
    """What one audit returns.

    Parameters
    ----------
    name : str
        Key of the section in ``audit.json`` (``"fairness"``).
    title : str
        Heading shown in the report.
    summary : str
        One sentence a clinician can read.
    tables : dict of str to DataFrame
        Named result tables.
    figures : dict of str to Figure
        Named figures; a matplotlib figure given here is converted to SVG at once,
        with its name as alt text unless a :class:`Figure` is given.
    checks : list of Check
        The pass/fail statements of this audit.
    notes : list of str
        Caveats and explanations.
    references : list of str
        The papers the method follows.
    methods : str
        What the audit computed, for the report's Methods block.
    root_causes : list of RootCause
        The audit's own grouping of its checks into findings (see :class:`RootCause`).
    table_titles : dict of str to str
        Human titles of the tables (the key stays the table's name in ``audit.json``).
    """

    name: str
    title: str
    summary: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    methods: str = ""
    root_causes: list[RootCause] = field(default_factory=list)
    table_titles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, fig in list(self.figures.items()):
            if not isinstance(fig, Figure):
                self.figures[key] = Figure.from_matplotlib(fig, alt=key)

    @property
    def status(self) -> str:
        """Worst display status among the checks (see :func:`display_status`).

        ``fail`` (a blocking failure), ``warn``, ``pass``, or ``skipped`` when every check
        was skipped; ``pass`` when there are none.
        """
        statuses = {display_status(c) for c in self.checks}
        for s in ("fail", "warn"):
            if s in statuses:
                return s
        if statuses and statuses == {"skipped"}:
            return "skipped"
        return "pass"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    A crash never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file private (0600); a report is meant to be opened and shared,
    # so give it the permissions an ordinary new file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Report:
    """Metadata plus sections; ``save`` writes ``index.html`` and ``audit.json``.

    Parameters
    ----------
    sections : list of Section
        In the order they are shown.
    meta : dict
        Model and data hashes, versions, seed, timings, command line, model card fields.
    """

    sections: list[Section] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def checks(self) -> list[Check]:
        """All checks of all sections."""
        return [c for s in self.sections for c in s.checks]

    @property
    def passed(self) -> bool:
        """True when no critical or major check failed.

        Minor and informational failures, inconclusive and skipped checks are reported
        but do not fail a report.
        """
        return not any(c.blocking for c in self.checks)

    def section(self, name: str) -> Section:
        """The section called ``name``."""
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The ``audit.json`` document (schema ``medaudit.audit/1``)."""
        from medaudit.report._json import report_to_dict

        return report_to_dict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Report:
        """Rebuild a report from an ``audit.json`` document."""
        from medaudit.report._json import report_from_dict

        return report_from_dict(doc)

    def to_html(self, *, include_identifiers: bool = False) -> str:
        """The self-contained HTML page."""
        from medaudit.report._html import render_html

        return render_html(self, include_identifiers=include_identifiers)

    def save(self, out_dir: str | os.PathLike[str], *, include_identifiers: bool = False) -> Path:
        """Write ``index.html`` and ``audit.json`` into ``out_dir``; return the directory.

        Both files are rendered in memory first and written atomically, so a failure
        leaves no half-written report.
        """
        import json

        from medaudit.report._json import dumps

        out = Path(out_dir)
        doc = self.to_dict()
        if not include_identifiers:
            doc = _without_identifier_columns(doc)
        js = dumps(doc)
        # The page is rendered from the JSON document, not from this object, so that
        # `medaudit report --from audit.json` gives exactly the same HTML.
        canonical = Report.from_dict(json.loads(js))
        html = canonical.to_html(include_identifiers=include_identifiers)
        atomic_write_text(out / "audit.json", js)
        atomic_write_text(out / "index.html", html)
        return out


def _without_identifier_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The audit.json document less every identifier column (patient_id, paths, ...).

    A report saved without ``include_identifiers`` is safe to share: neither file holds
    patient identifiers.
    """
    from medaudit.report._html import is_identifier_column

    for sec in doc["sections"].values():
        for name, recs in sec["tables"].items():
            sec["tables"][name] = [
                {k: v for k, v in r.items() if not is_identifier_column(k)} for r in recs
            ]
        # table_columns keeps the names, so the page can say which columns were withheld.
    return doc


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame → list of JSON-ready records (NaN → None, numpy → Python)."""
    out = []
    cols = [str(c) for c in df.columns]
    for row in df.itertuples(index=False, name=None):
        rec = {}
        for c, v in zip(cols, row, strict=True):
            rec[c] = _jsonable(v)
        out.append(rec)
    return out


def _jsonable(v: Any) -> Any:
    import numpy as np

    if v is None:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (str, int)):
        return v
    return str(v)


def records_to_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Inverse of the table serialisation (None stays missing)."""
    return pd.DataFrame.from_records(list(records))
