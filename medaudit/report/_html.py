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
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from medaudit._errors import InvalidInputError, param_error
from medaudit.report._json import dumps, report_from_dict, report_to_dict, validate_audit_json
from medaudit.report._model import Report, display_status
from medaudit.report._summary import (
    ExecutiveSummary,
    _confidence_from_meta,
    build_summary,
    decimals_for,
    format_number,
    format_threshold,
    format_value_ci,
)

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
    "skipped": "Skipped",
    "empty": "No checks",
}
STATUS_ICONS = {"pass": "✔", "fail": "✖", "warn": "▲", "skipped": "–", "empty": "–"}
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


@dataclass
class _FigureView:
    svg: Markup
    alt: str
    name: str


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


def _format_cell(v: Any, decimals: int | None, ctx: _Context) -> _Cell:
    if v is None:
        return _Cell("–")
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
        headers.append(ctx.text(f"{c} [{pct} CI]" if c in pairs else c))
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
                cell = _format_cell(v, d, ctx)
                cell.num = cell.num or (v is None and c in numeric_cols)
                row.append(cell)
        rows.append(row)
    return _Table(
        name=ctx.text(name),
        anchor="",
        columns=headers,
        numeric=numeric,
        rows=rows,
        n_rows=len(records),
        withheld=[ctx.text(w) for w in withheld],
    )


_SVG_NS = "http://www.w3.org/2000/svg"
# The elements matplotlib's SVG backend writes; anything else is refused. None of them
# makes the browser's HTML parser leave SVG content, and none runs code.
_SVG_ELEMENTS = frozenset(
    {
        "svg", "g", "defs", "style", "path", "use", "clippath", "rect", "circle", "ellipse",
        "line", "polyline", "polygon", "text", "tspan", "image", "metadata", "title", "desc",
        "symbol", "lineargradient", "radialgradient", "stop", "pattern", "mask", "marker", "a",
        "filter", "fecolormatrix", "fecomposite", "feflood", "feblend", "feoffset",
        "fegaussianblur", "femerge", "femergenode",
    }
)  # fmt: skip
# RDF / Dublin Core / Creative Commons elements, allowed inside <metadata> only.
_METADATA_NS = frozenset(
    {
        "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        "http://purl.org/dc/elements/1.1/",
        "http://creativecommons.org/ns#",
    }
)
# HTML parses the content of these as HTML: they may hold text only.
_HTML_INTEGRATION_POINTS = frozenset({"title", "desc"})
_EXTERNAL_URL_RE = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.IGNORECASE)
_SAFE_HREF_RE = re.compile(r"^\s*(#|data:image/(png|jpeg);base64,)", re.IGNORECASE)
_JS_URL_RE = re.compile(r"j\s*a\s*v\s*a\s*s\s*c\s*r\s*i\s*p\s*t\s*:", re.IGNORECASE)


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, local = name[1:].split("}", 1)
        return ns, local.lower()
    return "", name.lower()


def _element_problem(el: ET.Element, in_metadata: bool) -> str | None:
    ns, tag = _split(el.tag)
    if in_metadata and ns in _METADATA_NS:
        pass
    elif ns != _SVG_NS or tag not in _SVG_ELEMENTS:
        return f"it contains a <{tag}> element"
    if tag in _HTML_INTEGRATION_POINTS and ns == _SVG_NS and len(el):
        return f"its <{tag}> holds elements"
    if tag == "style" and el.text and ("@import" in el.text or _EXTERNAL_URL_RE.search(el.text)):
        return "its stylesheet loads an external resource"
    for attr, value in el.attrib.items():
        a = _split(attr)[1]
        if a.startswith("on"):
            return f"it has an event-handler attribute {a!r}"
        if a in {"href", "src"} and not _SAFE_HREF_RE.match(value):
            return f"it references {value[:40]!r}"
        if _EXTERNAL_URL_RE.search(value) or _JS_URL_RE.search(value):
            return "it references an external resource"
    return None


@lru_cache(maxsize=64)
def _svg_problem(svg: str) -> str | None:
    """Why ``svg`` is not safe to inline (None when it is).

    Figures are matplotlib's own SVG output, but an ``audit.json`` may come from
    anywhere. The SVG must be well-formed XML made of the elements matplotlib writes, with
    no event handler, no external or ``javascript:`` reference, and none of the constructs
    that the HTML parser reads differently from an XML parser (CDATA, processing
    instructions, DOCTYPE, comments opening with ``>``).
    """
    upper = svg.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        return "it declares a DOCTYPE or entities"
    if "<![CDATA[" in upper:
        return "it contains a CDATA section"
    try:
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        root = ET.fromstring(svg, parser=parser)
    except ET.ParseError as exc:
        return f"it is not well-formed SVG ({exc})"
    if _split(root.tag) != (_SVG_NS, "svg"):
        return f"its root element <{_split(root.tag)[1]}> is not an <svg> in the SVG namespace"
    stack: list[tuple[ET.Element, bool]] = [(root, False)]
    while stack:
        el, in_metadata = stack.pop()
        if el.tag is ET.ProcessingInstruction:
            return "it contains a processing instruction"
        if el.tag is ET.Comment:
            if (el.text or "").startswith((">", "->")):
                return "it contains a malformed comment"
            continue
        why = _element_problem(el, in_metadata)
        if why is not None:
            return why
        inside = in_metadata or _split(el.tag) == (_SVG_NS, "metadata")
        stack.extend((child, inside) for child in el)
    return None


def _figure_view(section: str, name: str, fig: Mapping[str, Any], ctx: _Context) -> _FigureView:
    svg = str(fig.get("svg", ""))
    why = _svg_problem(svg)
    if why is not None:
        raise InvalidInputError(UNSAFE_SVG.format(figure=name, section=section, why=why))
    # The SVG is markup (checked above); its user strings were escaped by matplotlib.
    return _FigureView(svg=Markup(svg), alt=ctx.text(fig.get("alt") or name), name=ctx.text(name))


_EVIDENCE_WORDS = {
    "beyond_threshold": "CI lies beyond the threshold",
    "straddles": "CI straddles the threshold (inconclusive)",
}


def _check_row(c: Any, ctx: _Context) -> _CheckRow:
    reason = c.reason
    shown = display_status(c)
    qual = _EVIDENCE_WORDS.get(c.evidence or "", "") if shown in ("fail", "warn") else ""
    if c.status == "fail" and not c.blocking:
        qual = "; ".join(x for x in (f"{c.severity} severity: does not fail the report", qual) if x)
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
    env.globals.update(STATUS_LABELS=STATUS_LABELS, STATUS_ICONS=STATUS_ICONS)
    return env


@lru_cache(maxsize=1)
def _static() -> tuple[str, str]:
    base = resources.files("medaudit.report").joinpath("templates")
    css = base.joinpath("report.css").read_text(encoding="utf-8")
    js = base.joinpath("report.js").read_text(encoding="utf-8")
    return css, js


def _finding_view(f: Any, ctx: _Context, anchors: Mapping[str, str]) -> dict[str, str]:
    return {
        "status": display_status(f.check),
        "section_title": ctx.text(f.section_title),
        "sentence": ctx.text(f.sentence),
        "advice": ctx.text(f.advice),
        "anchor": anchors.get(f.check.id, ""),
        "id": ctx.text(f.check.id),
    }


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
        anchor = ctx.anchor("s-", name)
        checks = sorted(sec.checks, key=lambda c: _STATUS_RANK[display_status(c)])
        rows = [_check_row(c, ctx) for c in checks]
        for c, r in zip(checks, rows, strict=True):
            check_anchors.setdefault(c.id, r.anchor)
        tables = []
        for tname, recs in sdoc.get("tables", {}).items():
            t = _table_view(tname, recs, sdoc.get("table_columns", {}).get(tname, []), ctx)
            t.anchor = ctx.anchor(f"{anchor}-t-", tname)
            tables.append(t)
        counts = dict.fromkeys(_STATUS_RANK, 0)
        for c in sec.checks:
            counts[display_status(c)] += 1
        sections.append(
            _SectionView(
                name=ctx.text(name),
                anchor=anchor,
                title=ctx.text(sec.title),
                summary=ctx.text(sec.summary),
                status=sec.status if sec.checks else "empty",
                counts=counts,
                checks=rows,
                tables=tables,
                figures=[
                    _figure_view(name, fname, f, ctx)
                    for fname, f in sdoc.get("figures", {}).items()
                ],
                notes=[ctx.text(n) for n in sec.notes],
                methods=_paragraphs(sec.methods, ctx),
                references=[ctx.text(r) for r in sec.references],
            )
        )

    css, js = _static()
    script_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    model_card = _model_card(meta.get("model_card"), ctx)
    repro = [
        _node(k, v, ctx, label=_humanise(k))
        for k, v in meta.items()
        if k not in ("model_card", "title")
    ]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=ctx.text(meta.get("title") or "medaudit audit report"),
            subtitle=ctx.text(_subtitle(meta)),
            summary=summary,
            findings=[_finding_view(f, ctx, check_anchors) for f in summary.findings],
            headline=summary.headline,
            skipped_note=summary.skipped_note,
            sections=sections,
            model_card=model_card,
            repro=repro,
            include_identifiers=include_identifiers,
            confidence_pct=f"{ctx.confidence * 100:g}%",
            css=Markup(css),
            js=Markup(js),
            script_hash=script_hash,
            schema=str(doc.get("schema")),
        )
    )


def _subtitle(meta: Mapping[str, Any]) -> str:
    parts = []
    for key in ("model", "model_name", "data", "dataset", "created"):
        v = meta.get(key)
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v):
            parts.append(f"{_humanise(key)}: {v}")
    return " · ".join(parts)


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
