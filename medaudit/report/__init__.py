"""The report: checks, sections, policy, and the HTML + JSON outputs."""

from medaudit.report._format import format_p_value, format_value_ci
from medaudit.report._html import render_document, render_html
from medaudit.report._json import (
    SCHEMA_ID,
    audit_schema,
    dumps,
    load_audit_json,
    report_from_dict,
    report_to_dict,
    validate_audit_json,
)
from medaudit.report._junit import checks_to_junit
from medaudit.report._model import (
    BLOCKING_SEVERITIES,
    CAUSE_KEYS,
    EVIDENCE,
    SEVERITIES,
    STATUSES,
    Check,
    Figure,
    Report,
    RootCause,
    Section,
    atomic_write_text,
    display_status,
    group_cause,
    site_cause,
)
from medaudit.report._policy import CORE_SETTINGS, Policy, Setting, Threshold
from medaudit.report._summary import ExecutiveSummary, Finding, build_summary

__all__ = [
    "BLOCKING_SEVERITIES",
    "CAUSE_KEYS",
    "CORE_SETTINGS",
    "EVIDENCE",
    "SCHEMA_ID",
    "SEVERITIES",
    "STATUSES",
    "Check",
    "ExecutiveSummary",
    "Figure",
    "Finding",
    "Policy",
    "Report",
    "RootCause",
    "Section",
    "Setting",
    "Threshold",
    "atomic_write_text",
    "audit_schema",
    "build_summary",
    "checks_to_junit",
    "display_status",
    "group_cause",
    "dumps",
    "format_p_value",
    "format_value_ci",
    "load_audit_json",
    "render_document",
    "render_html",
    "report_from_dict",
    "report_to_dict",
    "site_cause",
    "validate_audit_json",
]
