"""The self-contained HTML page of a report (Jinja2, autoescape on).

The page is rendered from the ``audit.json`` document alone, so that ``medaudit report
--from audit.json`` writes the same bytes as ``Report.save``. It makes no network request:
CSS and the small sorting script are inline, figures are inline SVG, and a
Content-Security-Policy forbids every fetch (``default-src 'none'``) and every script but
the page's own. The script only adds table sorting; the page is complete without it.

Identifier hygiene: unless ``include_identifiers`` is true, table columns that hold
patient or study identifiers or file paths are dropped, and any text that looks like the
path of an image file is withheld.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from medaudit._errors import InvalidInputError, param_error
from medaudit.report._format import (
    decimals_for,
    format_number,
    format_p_value,
    format_threshold,
    format_value_ci,
)
from medaudit.report._glossary import GLOSSARY, column_label, gloss
from medaudit.report._json import dumps, report_from_dict, report_to_dict, validate_audit_json
from medaudit.report._model import Report, display_status
from medaudit.report._provenance import header_facts, not_run_audits, policy_tables
from medaudit.report._summary import ExecutiveSummary, _confidence_from_meta, build_summary
from medaudit.report._svg import _svg_problem

__all__ = [
    "IDENTIFIER_COLUMNS",
    "MAX_TABLE_ROWS",
    "is_identifier_column",
    "redact_image_paths",
    "render_document",
    "render_html",
]

# Columns that identify a patient, a study or an image file: withheld unless asked for.
IDENTIFIER_COLUMNS: frozenset[str] = frozenset(
    {
        "patient_id",
        "study_id",
        "series_id",
        "path",
        "image_path",
        "file_path",
        "filepath",
        "file",
        "filename",
        "file_name",
        "accession",
        "accession_number",
        "mrn",
        "study_uid",
        "series_uid",
        "sop_instance_uid",
    }
)
# Longer tables are cut to this many rows in the page (audit.json keeps every row).
MAX_TABLE_ROWS = 200
# Tables with more rows show this many until the reader unfolds them (print shows all).
FOLD_ROWS = 12
# Printed, a table with more columns than this is split into parts that each fit the
# page, the first column repeated in every part.
PRINT_COLUMNS = 7
WITHHELD_PATH = "[image path withheld]"
_IMAGE_PATH_RE = re.compile(
    r"[^\s\"'<>()\[\]{},;]+\.(?:png|jpe?g|tiff?|dcm|dicom|npy|npz|nii(?:\.gz)?|bmp|gif|webp)\b",
    re.IGNORECASE,
)
# CI columns shown with their value as "0.91 [0.88, 0.93]": `m` with `m_lo`/`m_hi` (or
# `m_ci_low`/`m_ci_high`, ...), or a bare `ci_low`/`ci_high` pair that belongs to a
# `value`/`estimate` column, else to the numeric column just left of it.
_CI_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_lo", "_hi"),
    ("_ci_lo", "_ci_hi"),
    ("_ci_low", "_ci_high"),
    ("_lower", "_upper"),
)
_CI_BARE: tuple[tuple[str, str], ...] = (("ci_low", "ci_high"), ("ci_lo", "ci_hi"))
_STATUS_RANK = {"fail": 0, "warn": 1, "skipped": 2, "pass": 3}
STATUS_LABELS = {
    "pass": "Pass",
    "fail": "Fail",
    "warn": "Attention",
    "inconclusive": "Inconclusive",
    "skipped": "Skipped",
    "empty": "No checks",
    "notrun": "Not run",
}
STATUS_ICONS = {
    "pass": "✔", "fail": "✖", "warn": "▲", "inconclusive": "?", "skipped": "–",
    "empty": "–", "notrun": "○",
}  # fmt: skip
SEVERITY_LABELS = {"critical": "Critical", "major": "Major", "minor": "Minor", "info": "Info"}
# One sentence each: what a status says, and what a severity says.
STATUS_EXPLAINED = (
    "Status says what the evidence supports: a check fails when its 95% CI lies wholly "
    "beyond the policy's threshold, passes when it lies wholly on the passing side, is "
    "inconclusive when the CI includes the threshold (more data are needed), and is "
    "skipped, with the reason, when it cannot be computed."
)
SEVERITY_EXPLAINED = (
    "Severity says how much a failure of the check would matter, as the policy sets it: a "
    "critical or major failure fails the report, a minor or info failure is reported "
    "without failing it."
)
MODEL_CARD_FIELDS: tuple[tuple[str, str], ...] = (
    ("intended_use", "Intended use"),
    ("training_data", "Training data"),
    ("sensitive_attributes", "Sensitive attributes audited"),
    ("limitations", "Limitations"),
)

UNSAFE_SVG = "Figure {figure!r} of section {section!r} cannot be shown: {why}."


def is_identifier_column(name: str) -> bool:
    """Whether a table column holds identifiers that a report must not show by default.

    Examples
    --------
    >>> is_identifier_column("patient_id"), is_identifier_column("Image_Path")
    (True, True)
    >>> is_identifier_column("auroc")
    False
    """
    n = str(name).strip().lower()
    return n in IDENTIFIER_COLUMNS or n.endswith("_path")


def redact_image_paths(text: str) -> str:
    """Replace anything that looks like an image file's path by a placeholder.

    Examples
    --------
    >>> redact_image_paths("duplicate of images/site0/P0001_a.png and b.dcm")
    'duplicate of [image path withheld] and [image path withheld]'
    >>> redact_image_paths("stored as .png files")
    'stored as .png files'
    """
    return _IMAGE_PATH_RE.sub(WITHHELD_PATH, text)


# --------------------------------------------------------------------------- view model


@dataclass
class _Cell:
    text: str
    num: bool = False
    sort: str = ""


@dataclass
class _Table:
    name: str
    anchor: str
    columns: list[str]
    numeric: list[bool]
    rows: list[list[_Cell]]
    n_rows: int
    withheld: list[str] = field(default_factory=list)
    title: str = ""
    all_zero: bool = False
    print_parts: list[list[int]] = field(default_factory=list)

    @property
    def folded(self) -> bool:
        """Whether the page shows only the first rows until the reader unfolds the table."""
        return len(self.rows) > FOLD_ROWS


@dataclass
class _CheckRow:
    anchor: str
    id: str
    description: str
    status: str
    value: str
    threshold: str
    reason: str
    advice: str
    value_sort: str
    outcome: str = ""
    severity: str = ""


@dataclass
class _FigureView:
    svg: Markup
    alt: str
    name: str
    wide: bool = False


@dataclass
class _SectionView:
    name: str
    anchor: str
    title: str
    summary: str
    status: str
    counts: dict[str, int]
    checks: list[_CheckRow]
    tables: list[_Table]
    figures: list[_FigureView]
    notes: list[str]
    methods: list[str]
    references: list[str]


@dataclass
class _Node:
    """One entry of a nested metadata block (model card, reproducibility)."""

    label: str
    kind: str  # "text" | "mono" | "list" | "map"
    text: str = ""
    items: list[str] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)


class _Context:
    def __init__(self, include_identifiers: bool, confidence: float) -> None:
        self.include_identifiers = include_identifiers
        self.confidence = confidence
        self.anchors: set[str] = set()

    def text(self, s: Any) -> str:
        t = "" if s is None else str(s)
        return t if self.include_identifiers else redact_image_paths(t)

    def anchor(self, prefix: str, name: str) -> str:
        base = prefix + (re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "x")
        a, i = base, 2
        while a in self.anchors:
            a, i = f"{base}-{i}", i + 1
        self.anchors.add(a)
        return a


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sort_key(v: Any) -> str:
    if _is_num(v) and math.isfinite(float(v)):
        return repr(float(v))
    return ""


def _column_decimals(values: Sequence[Any]) -> int | None:
    """Decimals for a numeric column (None: integer column, no decimals)."""
    nums = [v for v in values if _is_num(v)]
    # Counts stored as floats (18.0) read as counts; audit.json may hold either.
    if all(
        isinstance(v, int) or (math.isfinite(v) and float(v).is_integer() and abs(v) < 1e15)
        for v in nums
    ):
        return None
    mags = sorted(abs(float(v)) for v in nums if math.isfinite(float(v)) and v != 0)
    if not mags:
        return 2
    return decimals_for(mags[len(mags) // 2])


def _is_p_column(name: str) -> bool:
    n = str(name).lower()
    return n in ("p", "p_value", "p_adjusted", "pvalue") or n.startswith(("p_value", "p_adj"))


def _format_cell(v: Any, decimals: int | None, ctx: _Context, *, p: bool = False) -> _Cell:
    if v is None:
        return _Cell("–")
    if p and _is_num(v):
        return _Cell(format_p_value(v), True, _sort_key(v))
    if _is_num(v):
        if decimals is None and math.isfinite(v) and float(v).is_integer():
            return _Cell(format_number(int(v)), True, _sort_key(v))
        return _Cell(format_number(float(v), decimals), True, _sort_key(v))
    if isinstance(v, list):
        if len(v) == 2 and all(x is None or _is_num(x) for x in v):
            ref = max((abs(float(x)) for x in v if x is not None), default=0.0)
            d = decimals_for(ref)
            return _Cell("[" + ", ".join(format_number(x, d) for x in v) + "]", True)
        return _Cell(ctx.text(", ".join(format_number(x) if _is_num(x) else str(x) for x in v)))
    if isinstance(v, bool):
        return _Cell("yes" if v else "no")
    return _Cell(ctx.text(v))


def _ci_pairs(columns: Sequence[str], numeric: set[str]) -> dict[str, tuple[str, str]]:
    """Map a numeric value column to its (low, high) CI columns when the table has both."""
    present = [c for c in columns if c in numeric]
    pairs: dict[str, tuple[str, str]] = {}
    used: set[str] = set()

    def free(*cs: str) -> bool:
        return all(c in present and c not in used and c not in pairs for c in cs)

    for c in present:
        for lo_s, hi_s in _CI_SUFFIXES:
            lo, hi = c + lo_s, c + hi_s
            if c not in used and free(lo, hi):
                pairs[c] = (lo, hi)
                used |= {lo, hi}
                break
    for lo, hi in _CI_BARE:
        if not free(lo, hi):
            continue
        bases = [b for b in ("value", "estimate") if free(b)]
        if not bases:
            i = list(columns).index(lo)
            left = columns[i - 1] if i > 0 else None
            bases = [left] if left is not None and free(left) and left not in used else []
        if bases:
            pairs[bases[0]] = (lo, hi)
            used |= {lo, hi}
    return pairs


def _table_view(name: str, records: list[dict[str, Any]], columns: list[str], ctx: _Context):
    cols = list(columns) if columns else list(dict.fromkeys(k for r in records for k in r))
    withheld = []
    if not ctx.include_identifiers:
        withheld = [c for c in cols if is_identifier_column(c)]
        cols = [c for c in cols if c not in withheld]
    numeric_cols = set()
    for c in cols:
        non_null = [r.get(c) for r in records if r.get(c) is not None]
        if all(_is_num(v) for v in non_null):  # an all-missing column counts as numeric
            numeric_cols.add(c)
    pairs = _ci_pairs(cols, numeric_cols)
    hidden = {x for lo_hi in pairs.values() for x in lo_hi}
    shown = [c for c in cols if c not in hidden]
    pct = f"{ctx.confidence * 100:g}%"
    headers, numeric, decimals = [], [], []
    for c in shown:
        vals = [r.get(c) for r in records]
        is_numeric = c in numeric_cols and any(v is not None for v in vals)
        numeric.append(is_numeric or c in pairs)
        decimals.append(_column_decimals(vals) if is_numeric else 2)
        label = column_label(c)
        headers.append(ctx.text(f"{label} [{pct} CI]" if c in pairs else label))
    rows = []
    for r in records[:MAX_TABLE_ROWS]:
        row = []
        for c, d in zip(shown, decimals, strict=True):
            v = r.get(c)
            if c in pairs and v is not None and _is_num(v):
                lo, hi = (r.get(x) for x in pairs[c])
                ci = [lo if _is_num(lo) else None, hi if _is_num(hi) else None]
                dd = d if d is not None else decimals_for(float(v))
                row.append(_Cell(format_value_ci(v, ci, decimals=dd), True, _sort_key(v)))
            else:
                cell = _format_cell(v, d, ctx, p=_is_p_column(c))
                cell.num = cell.num or (v is None and c in numeric_cols)
                row.append(cell)
        rows.append(row)
    nums = [float(r[c]) for r in records for c in cols if c in numeric_cols and _is_num(r.get(c))]
    all_zero = bool(records) and bool(nums) and all(v == 0.0 for v in nums)
    parts = _print_parts(len(headers))
    return _Table(
        name=ctx.text(name),
        anchor="",
        columns=headers,
        numeric=numeric,
        rows=rows,
        n_rows=len(records),
        withheld=[ctx.text(w) for w in withheld],
        all_zero=all_zero,
        print_parts=parts,
    )


def _print_parts(n_cols: int) -> list[list[int]]:
    """Column indices of each printed part of a wide table (the first column in every part)."""
    if n_cols <= PRINT_COLUMNS:
        return []
    rest = list(range(1, n_cols))
    step = PRINT_COLUMNS - 1
    return [[0, *rest[i : i + step]] for i in range(0, len(rest), step)]


def _figure_view(section: str, name: str, fig: Mapping[str, Any], ctx: _Context) -> _FigureView:
    svg = str(fig.get("svg", ""))
    why = _svg_problem(svg)
    if why is not None:
        raise InvalidInputError(UNSAFE_SVG.format(figure=name, section=section, why=why))
    # The SVG is markup (checked above); its user strings were escaped by matplotlib.
    return _FigureView(
        svg=Markup(svg),
        alt=ctx.text(fig.get("alt") or name),
        name=ctx.text(name),
        wide=bool(fig.get("wide", False)),
    )


_EVIDENCE_WORDS = {
    "beyond_threshold": "CI lies beyond the threshold",
    "straddles": "CI straddles the threshold (inconclusive)",
}


def _check_row(c: Any, ctx: _Context) -> _CheckRow:
    reason = c.reason
    shown = display_status(c)
    qual = _EVIDENCE_WORDS.get(c.evidence or "", "") if c.status == "fail" else ""
    if c.status == "fail" and not c.blocking:
        qual = "; ".join(x for x in (f"{c.severity} severity: does not fail the report", qual) if x)
    if c.status == "inconclusive" and c.evidence == "straddles":
        qual = "the CI includes the threshold"
    if qual:
        reason = f"{reason}; {qual}" if reason else qual
    return _CheckRow(
        anchor=ctx.anchor("check-", c.id),
        id=ctx.text(c.id),
        description=ctx.text(c.description),
        status=shown,
        value=format_value_ci(c.value, c.ci),
        threshold=format_threshold(c.op, c.threshold),
        reason=ctx.text(reason),
        advice=ctx.text(c.advice) if shown in ("fail", "warn") else "",
        value_sort=_sort_key(c.value),
        outcome=c.status,
        severity=c.severity,
    )


def _paragraphs(text: str, ctx: _Context) -> list[str]:
    return [ctx.text(p.strip()) for p in re.split(r"\n\s*\n", text or "") if p.strip()]


def _humanise(key: str) -> str:
    s = str(key).replace("_", " ").strip()
    return s[:1].upper() + s[1:]


_HASH_RE = re.compile(r"^(sha\d+:|md5:)?[0-9a-f]{12,}$", re.IGNORECASE)


def _node(key: str, value: Any, ctx: _Context, *, label: str | None = None) -> _Node:
    lab = ctx.text(label if label is not None else key)
    k = str(key).lower()
    if isinstance(value, Mapping):
        return _Node(lab, "map", children=[_node(str(ck), cv, ctx) for ck, cv in value.items()])
    if isinstance(value, list):
        if ("command" in k or k in {"argv", "cmd"}) and all(isinstance(x, str) for x in value):
            return _Node(lab, "mono", text=ctx.text(shlex.join(value)))
        if any(isinstance(x, (Mapping, list)) for x in value):
            return _Node(
                lab, "map", children=[_node(str(i + 1), x, ctx) for i, x in enumerate(value)]
            )
        return _Node(lab, "list", items=[ctx.text(_scalar(x)) for x in value])
    text = ctx.text(_scalar(value))
    mono = (
        isinstance(value, str)
        and (bool(_HASH_RE.match(value)) or "command" in k or "hash" in k or k in {"argv", "cmd"})
    ) or _is_num(value)
    return _Node(lab, "mono" if mono else "text", text=text)


def _scalar(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _is_num(v):
        return format_number(v) if isinstance(v, int) else repr(float(v))
    return str(v)


def _model_card(card: Any, ctx: _Context) -> list[_Node]:
    if card is None:
        return []
    if not isinstance(card, Mapping):
        return [_node("model_card", card, ctx, label="Model card")]
    nodes = []
    known = dict(MODEL_CARD_FIELDS)
    for key, label in MODEL_CARD_FIELDS:
        if key in card and card[key] not in (None, "", [], {}):
            nodes.append(_node(key, card[key], ctx, label=label))
    for key, value in card.items():
        if key not in known and value not in (None, "", [], {}):
            nodes.append(_node(key, value, ctx, label=_humanise(key)))
    return nodes


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medaudit.report", "templates"),
        autoescape=True,  # every {{ }} is escaped; only the checked SVG is Markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(
        STATUS_LABELS=STATUS_LABELS, STATUS_ICONS=STATUS_ICONS, SEVERITY_LABELS=SEVERITY_LABELS
    )
    env.filters["gloss"] = gloss
    return env


@lru_cache(maxsize=1)
def _static() -> tuple[str, str]:
    base = resources.files("medaudit.report").joinpath("templates")
    css = base.joinpath("report.css").read_text(encoding="utf-8")
    js = base.joinpath("report.js").read_text(encoding="utf-8")
    return css, js


def _finding_view(f: Any, ctx: _Context, anchors: Mapping[str, str]) -> dict[str, Any]:
    return {
        "status": f.status,
        "display": "fail" if f.status == "fail" and f.severity in ("critical", "major") else "warn",
        "severity": f.severity,
        "title": ctx.text(f.title),
        "sections": ctx.text(", ".join(f.section_titles)),
        "text": ctx.text(f.text),
        "advice": ctx.text(f.advice),
        "checks": [(ctx.text(c.id), anchors.get(c.id, "")) for c in f.checks],
    }


_NOT_IN_REPRO = ("model_card", "title", "policy_toml", "audits_not_run")


def render_document(doc: Mapping[str, Any], *, include_identifiers: bool = False) -> str:
    """Render an ``audit.json`` document as the self-contained HTML page.

    Parameters
    ----------
    doc : mapping
        The parsed ``audit.json`` (schema ``medaudit.audit/1``); validated first.
    include_identifiers : bool, default=False
        Show identifier columns and image paths. Only for reports that stay inside
        the hospital.

    Returns
    -------
    str
        The page. It depends on ``doc`` alone, so the same document always gives the
        same bytes.

    Raises
    ------
    InvalidInputError
        When ``doc`` is not a valid audit document or a figure is not safe to inline.
    """
    if not isinstance(include_identifiers, bool):
        raise param_error("include_identifiers", "render_document", "a bool", include_identifiers)
    validate_audit_json(doc)
    report = report_from_dict(doc)
    summary: ExecutiveSummary = build_summary(report)
    meta = dict(doc.get("meta", {}))
    ctx = _Context(include_identifiers, _confidence_from_meta(meta))

    sections: list[_SectionView] = []
    check_anchors: dict[str, str] = {}
    for (name, sdoc), sec in zip(doc["sections"].items(), report.sections, strict=True):
        sections.append(_section_view(name, sdoc, sec, ctx, check_anchors))

    css, js = _static()
    script_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    model_card = _model_card(meta.get("model_card"), ctx)
    repro = [
        _node(k, v, ctx, label=_humanise(k)) for k, v in meta.items() if k not in _NOT_IN_REPRO
    ]
    findings = [_finding_view(f, ctx, check_anchors) for f in summary.findings]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=ctx.text(meta.get("title") or "medaudit audit report"),
            facts=[(k, lab, ctx.text(v)) for k, lab, v in header_facts(meta, summary.verdict)],
            summary=summary,
            findings=findings,
            n_shown=FINDINGS_SHOWN,
            headline=summary.headline,
            skipped_note=summary.skipped_note,
            sections=sections,
            not_run=[{k: ctx.text(v) for k, v in r.items()} for r in not_run_audits(meta)],
            model_card=model_card,
            repro=repro,
            policy_tables={
                name: [(ctx.text(a), ctx.text(b)) for a, b in rows]
                for name, rows in policy_tables(meta).items()
            },
            glossary=sorted(GLOSSARY.items(), key=lambda kv: kv[0].lower()),
            status_explained=STATUS_EXPLAINED,
            severity_explained=SEVERITY_EXPLAINED,
            include_identifiers=include_identifiers,
            confidence_pct=f"{ctx.confidence * 100:g}%",
            css=Markup(css),
            js=Markup(js),
            script_hash=script_hash,
            schema=str(doc.get("schema")),
        )
    )


# The executive summary spells out this many findings; the rest are listed folded.
FINDINGS_SHOWN = 5
_OUTCOME_RANK = {"fail": 0, "inconclusive": 1, "skipped": 2, "pass": 3}
_SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2, "info": 3}


def _section_view(
    name: str, sdoc: Mapping[str, Any], sec: Any, ctx: _Context, check_anchors: dict[str, str]
) -> _SectionView:
    anchor = ctx.anchor("s-", name)
    checks = sorted(sec.checks, key=lambda c: (_OUTCOME_RANK[c.status], _SEVERITY_RANK[c.severity]))
    rows = [_check_row(c, ctx) for c in checks]
    for c, r in zip(checks, rows, strict=True):
        check_anchors.setdefault(c.id, r.anchor)
    titles = sdoc.get("table_titles", {}) or {}
    tables = []
    for tname, recs in sdoc.get("tables", {}).items():
        t = _table_view(tname, recs, sdoc.get("table_columns", {}).get(tname, []), ctx)
        t.anchor = ctx.anchor(f"{anchor}-t-", tname)
        t.title = ctx.text(titles.get(tname) or _humanise(tname))
        tables.append(t)
    counts = dict.fromkeys(("fail", "inconclusive", "pass", "skipped"), 0)
    for c in sec.checks:
        counts[c.status] += 1
    return _SectionView(
        name=ctx.text(name),
        anchor=anchor,
        title=ctx.text(sec.title),
        summary=ctx.text(sec.summary),
        status=sec.status if sec.checks else "empty",
        counts=counts,
        checks=rows,
        tables=tables,
        figures=[_figure_view(name, fname, f, ctx) for fname, f in sdoc.get("figures", {}).items()],
        notes=[ctx.text(n) for n in sec.notes],
        methods=_paragraphs(sec.methods, ctx),
        references=[ctx.text(r) for r in sec.references],
    )


def render_html(report: Report, *, include_identifiers: bool = False) -> str:
    """Render ``report`` as one self-contained HTML page.

    The report is first turned into its ``audit.json`` document (exactly as written to
    disk) and the page is rendered from that, so ``medaudit report --from audit.json``
    reproduces it byte for byte.

    Parameters
    ----------
    report : Report
        The report.
    include_identifiers : bool, default=False
        Show identifier columns (``patient_id``, ``study_id``, ``path``, ...) and image
        paths. Off by default: a shared report must not identify patients.

    Returns
    -------
    str
        The HTML page.

    Examples
    --------
    >>> from medaudit.report import Check, Report, Section
    >>> sec = Section("performance", "Performance", "The model <b>works</b>.",
    ...               checks=[Check.evaluate("performance.auroc", "AUROC", 0.9,
    ...                                      op=">=", threshold=0.75, ci=(0.88, 0.93))])
    >>> page = render_html(Report([sec]))
    >>> "0.90 [0.88, 0.93]" in page, "&lt;b&gt;works&lt;/b&gt;" in page
    (True, True)
    """
    if not isinstance(report, Report):
        raise param_error("report", "render_html", "a medaudit Report", type(report).__name__)
    doc = json.loads(dumps(report_to_dict(report)))
    return render_document(doc, include_identifiers=include_identifiers)
