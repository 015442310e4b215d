"""``audit.json``: the report as data (schema ``medaudit.audit/1``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medaudit.report._model import (
    BLOCKING_SEVERITIES,
    Check,
    Figure,
    Report,
    RootCause,
    Section,
    _jsonable,
    _records,
    records_to_frame,
)

__all__ = [
    "SCHEMA_ID",
    "audit_schema",
    "dumps",
    "load_audit_json",
    "report_from_dict",
    "report_to_dict",
    "validate_audit_json",
]

SCHEMA_ID = "medaudit.audit/1"
INVALID_AUDIT = "Invalid audit.json ({source}): {problems}."
_MAX_PROBLEMS = 10


def report_to_dict(report: Report) -> dict[str, Any]:
    """Serialise ``report`` as the ``audit.json`` document.

    Tables become lists of records with the DataFrame's column names; NaN becomes null.
    Figures are kept as SVG text so that ``medaudit report --from`` can re-render the page.
    """
    sections: dict[str, Any] = {}
    for s in report.sections:
        sections[s.name] = {
            "title": s.title,
            "summary": s.summary,
            "status": s.status,
            "checks": [c.to_dict() for c in s.checks],
            "tables": {k: _records(v) for k, v in s.tables.items()},
            "table_columns": {k: [str(c) for c in v.columns] for k, v in s.tables.items()},
            "figures": {k: _figure_dict(f) for k, f in s.figures.items()},
            "notes": list(s.notes),
            "references": list(s.references),
            "methods": s.methods,
            "root_causes": [rc.to_dict() for rc in s.root_causes],
            "table_titles": dict(s.table_titles),
        }
    from medaudit.report._summary import build_summary

    return {
        "schema": SCHEMA_ID,
        "passed": report.passed,
        "meta": _jsonable_meta(report.meta),
        "summary": build_summary(report).to_dict(),
        "sections": sections,
    }


def _figure_dict(f: Figure) -> dict[str, Any]:
    d: dict[str, Any] = {"svg": f.svg, "alt": f.alt}
    if f.wide:
        d["wide"] = True
    return d


def _jsonable_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        out[str(k)] = _jsonable_meta(v) if isinstance(v, Mapping) else _jsonable(v)
    return out


def report_from_dict(doc: Mapping[str, Any]) -> Report:
    """Rebuild a :class:`Report` from an ``audit.json`` document."""
    if doc.get("schema") != SCHEMA_ID:
        from medaudit._errors import InvalidInputError

        raise InvalidInputError(
            f"Not a medaudit audit.json: expected schema {SCHEMA_ID!r}, got {doc.get('schema')!r}."
        )
    sections = []
    for name, s in doc["sections"].items():
        cols = s.get("table_columns", {})
        tables = {}
        for k, recs in s.get("tables", {}).items():
            df = records_to_frame(recs)
            if k in cols:
                df = df.reindex(columns=cols[k])
            tables[k] = df
        sections.append(
            Section(
                name=name,
                title=s["title"],
                summary=s["summary"],
                tables=tables,
                figures={
                    k: Figure(svg=f["svg"], alt=f["alt"], wide=bool(f.get("wide", False)))
                    for k, f in s.get("figures", {}).items()
                },
                checks=[Check.from_dict(c) for c in s.get("checks", [])],
                notes=list(s.get("notes", [])),
                references=list(s.get("references", [])),
                methods=s.get("methods", ""),
                root_causes=[RootCause.from_dict(r) for r in s.get("root_causes", [])],
                table_titles=dict(s.get("table_titles", {})),
            )
        )
    return Report(sections=sections, meta=dict(doc.get("meta", {})))


def dumps(doc: Mapping[str, Any]) -> str:
    """JSON text of ``doc``: strict (no NaN), stable key order, indented."""
    return json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def audit_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``audit.json``, shipped in the package."""
    from importlib import resources

    text = (
        resources.files("medaudit.report")
        .joinpath("schema", "audit.schema.json")
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def _schema_problems(doc: Any) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return _structural_problems(doc)
    validator = jsonschema.Draft202012Validator(audit_schema())
    problems = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.append(f"at {where}: {err.message}")
    return problems


def _structural_problems(doc: Any) -> list[str]:
    """The schema's main rules, checked without ``jsonschema`` (an optional dependency)."""
    if not isinstance(doc, Mapping):
        return [f"at (top level): {type(doc).__name__} is not of type 'object'"]
    problems = []
    top: tuple[tuple[str, type, str], ...] = (
        ("passed", bool, "boolean"),
        ("meta", Mapping, "object"),
        ("sections", Mapping, "object"),
    )
    for key, typ, name in top:
        if key not in doc:
            problems.append(f"at (top level): {key!r} is a required property")
        elif not isinstance(doc[key], typ):
            problems.append(f"at {key}: {doc[key]!r:.40} is not of type {name!r}")
    if doc.get("schema") != SCHEMA_ID:
        problems.append(f"at schema: {SCHEMA_ID!r} was expected")
    sections = doc.get("sections")
    if not isinstance(sections, Mapping):
        return problems
    for name, sec in sections.items():
        if not isinstance(sec, Mapping):
            problems.append(f"at sections/{name}: not of type 'object'")
            continue
        fields: tuple[tuple[str, type, str], ...] = (
            ("title", str, "string"),
            ("summary", str, "string"),
            ("checks", list, "array"),
            ("tables", Mapping, "object"),
        )
        for key, typ, tname in fields:
            if key not in sec:
                problems.append(f"at sections/{name}: {key!r} is a required property")
            elif not isinstance(sec[key], typ):
                problems.append(f"at sections/{name}/{key}: not of type {tname!r}")
        for i, chk in enumerate(
            sec.get("checks", []) if isinstance(sec.get("checks"), list) else []
        ):
            where = f"sections/{name}/checks/{i}"
            if not isinstance(chk, Mapping):
                problems.append(f"at {where}: not of type 'object'")
                continue
            for key in ("id", "description", "value", "status"):
                if key not in chk:
                    problems.append(f"at {where}: {key!r} is a required property")
            if chk.get("status") not in ("pass", "fail", "inconclusive", "skipped", "warn"):
                problems.append(f"at {where}/status: {chk.get('status')!r} is not a status")
            v = chk.get("value")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                problems.append(f"at {where}/value: {v!r:.40} is not of type 'number', 'null'")
    return problems


def validate_audit_json(doc: Any, *, source: str = "document") -> None:
    """Check that ``doc`` is a valid ``audit.json`` document; raise once with every problem.

    Validates against :func:`audit_schema` (with ``jsonschema`` when it is installed,
    else the schema's main rules) and checks that ``passed`` agrees with the checks.

    Raises
    ------
    InvalidInputError
        Listing the problems found (the first ten).

    Examples
    --------
    >>> validate_audit_json({"schema": SCHEMA_ID, "passed": True, "meta": {}, "sections": {}})
    >>> try:
    ...     validate_audit_json({"schema": SCHEMA_ID, "passed": "yes", "meta": {}, "sections": {}})
    ... except ValueError as exc:
    ...     print(exc)
    Invalid audit.json (document): at passed: 'yes' is not of type 'boolean'.
    """
    from medaudit._errors import InvalidInputError

    problems = _schema_problems(doc)
    if not problems:
        failed = [
            c["id"]
            for s in doc["sections"].values()
            for c in s["checks"]
            if c["status"] == "fail" and c.get("severity", "major") in BLOCKING_SEVERITIES
        ]
        if doc["passed"] and failed:
            problems.append(f"'passed' is true but check(s) {failed[:3]} failed")
        if not doc["passed"] and not failed:
            problems.append("'passed' is false but no critical or major check failed")
    if problems:
        more = len(problems) - _MAX_PROBLEMS
        text = "; ".join(problems[:_MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise InvalidInputError(INVALID_AUDIT.format(source=source, problems=text))


def load_audit_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an ``audit.json`` file.

    Raises
    ------
    InvalidInputError
        When the file is missing, is not JSON, or is not a valid audit document.
    """
    from medaudit._errors import InvalidInputError

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"audit.json not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{p} is not valid JSON: {exc}") from None
    validate_audit_json(doc, source=str(p))
    return dict(doc)
