"""``audit.json``: the report as data (schema ``medaudit.audit/1``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medaudit.report._model import (
    Check,
    Figure,
    Report,
    Section,
    _jsonable,
    _records,
    records_to_frame,
)

__all__ = ["SCHEMA_ID", "dumps", "report_from_dict", "report_to_dict"]

SCHEMA_ID = "medaudit.audit/1"


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
            "figures": {k: {"svg": f.svg, "alt": f.alt} for k, f in s.figures.items()},
            "notes": list(s.notes),
            "references": list(s.references),
            "methods": s.methods,
        }
    return {
        "schema": SCHEMA_ID,
        "passed": report.passed,
        "meta": _jsonable_meta(report.meta),
        "sections": sections,
    }


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
                    k: Figure(svg=f["svg"], alt=f["alt"]) for k, f in s.get("figures", {}).items()
                },
                checks=[Check.from_dict(c) for c in s.get("checks", [])],
                notes=list(s.get("notes", [])),
                references=list(s.get("references", [])),
                methods=s.get("methods", ""),
            )
        )
    return Report(sections=sections, meta=dict(doc.get("meta", {})))


def dumps(doc: Mapping[str, Any]) -> str:
    """JSON text of ``doc``: strict (no NaN), stable key order, indented."""
    return json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
