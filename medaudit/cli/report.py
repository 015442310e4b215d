"""``medaudit report``: re-render a report from its ``audit.json`` without re-running the audit."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli.app import app

__all__ = ["JUNIT_UNAVAILABLE", "render_report", "report"]

JUNIT_UNAVAILABLE = (
    "JUnit output needs medaudit.report._junit (checks_to_junit), which this "
    "installation of medaudit does not have."
)
JUNIT_SUITE = "medaudit"


def _checks_to_junit() -> Any:
    try:
        module = importlib.import_module("medaudit.report._junit")
    except ImportError:
        raise InvalidInputError(JUNIT_UNAVAILABLE) from None
    fn = getattr(module, "checks_to_junit", None)
    if fn is None:
        raise InvalidInputError(JUNIT_UNAVAILABLE)
    return fn


def render_report(
    source: str | Path,
    out: str | Path | None,
    *,
    junit: str | Path | None = None,
    include_identifiers: bool = False,
    pdf: str | Path | None = None,
) -> bool:
    """Re-render ``source`` (an ``audit.json``) into ``out``/index.html and ``out``/audit.json.

    The page is rendered from the document alone, so it is byte-identical to the one
    ``Report.save`` wrote with the same ``include_identifiers``.

    Parameters
    ----------
    source : path
        The ``audit.json`` to read; it is validated against the schema first.
    out : path
        Folder to write ``index.html`` and ``audit.json`` into (created when missing).
    junit : path, optional
        Also write the checks as JUnit XML here, for CI systems.
    include_identifiers : bool, default=False
        Show identifier columns and image paths in the page.
    pdf : path, optional
        Also print the page to this PDF through headless Chromium.

    Returns
    -------
    bool
        Whether the report passed (no check failed).
    """
    from medaudit.report import Check, atomic_write_text, dumps, load_audit_json, render_document

    doc = load_audit_json(source)
    if out is None:
        if pdf is None:
            raise InvalidInputError("Give --out DIR, --pdf FILE, or both.")
        html = render_document(doc, include_identifiers=include_identifiers)
        from medaudit.report._pdf import html_to_pdf

        html_to_pdf(html, pdf)
        return bool(doc["passed"])
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"--out must be a folder, but {out_dir} is a file.")
    # Render everything in memory first: a bad document leaves nothing behind.
    html = render_document(doc, include_identifiers=include_identifiers)
    junit_xml = None
    if junit is not None:
        checks = [Check.from_dict(c) for s in doc["sections"].values() for c in s["checks"]]
        junit_xml = _checks_to_junit()(checks, JUNIT_SUITE)
    src, dst = Path(source).resolve(), (out_dir / "audit.json").resolve()
    if src != dst:
        atomic_write_text(out_dir / "audit.json", dumps(doc))
    atomic_write_text(out_dir / "index.html", html)
    if junit is not None and junit_xml is not None:
        atomic_write_text(Path(junit), junit_xml)
    if pdf is not None:
        from medaudit.report._pdf import html_to_pdf

        html_to_pdf(html, pdf)
    return bool(doc["passed"])


@app.command()
def report(
    source: Annotated[
        Path, typer.Option("--from", help="The audit.json of an earlier audit.", show_default=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for index.html and audit.json.", show_default=False),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write the checks as JUnit XML here.")
    ] = None,
    include_identifiers: Annotated[
        bool,
        typer.Option(
            "--include-identifiers", help="Show patient/study ids and image paths in the page."
        ),
    ] = False,
    pdf: Annotated[
        Path | None,
        typer.Option(
            "--pdf", help="Also print the page to this PDF (needs headless Chromium installed)."
        ),
    ] = None,
) -> int:
    """Re-render a report from audit.json; exit 0 if it passed, 1 if a check failed."""
    passed = render_report(
        source, out, junit=junit, include_identifiers=include_identifiers, pdf=pdf
    )
    where = [str(p) for p in (out / "index.html" if out else None, pdf) if p is not None]
    typer.echo(
        f"Report written to {' and '.join(where)}: "
        + ("no critical or major check failed." if passed else "at least one check failed.")
    )
    return 0 if passed else 1
