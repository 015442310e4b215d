"""The report: checks, sections, policy, and the HTML + JSON outputs."""

from medaudit.report._html import render_document, render_html
from medaudit.report._json import (
    SCHEMA_ID,
    audit_schema,
    load_audit_json,
    report_from_dict,
    report_to_dict,
    validate_audit_json,
)
from medaudit.report._model import Check, Figure, Report, Section, atomic_write_text
from medaudit.report._policy import BUILTIN_CHECKS, DEFAULT_SETTINGS, Policy, Threshold
from medaudit.report._summary import ExecutiveSummary, Finding, build_summary

__all__ = [
    "BUILTIN_CHECKS",
    "DEFAULT_SETTINGS",
    "SCHEMA_ID",
    "Check",
    "ExecutiveSummary",
    "Figure",
    "Finding",
    "Policy",
    "Report",
    "Section",
    "Threshold",
    "atomic_write_text",
    "audit_schema",
    "build_summary",
    "load_audit_json",
    "render_document",
    "render_html",
    "report_from_dict",
    "report_to_dict",
    "validate_audit_json",
]
