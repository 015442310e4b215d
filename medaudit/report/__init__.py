"""The report: checks, sections, policy, and the HTML + JSON outputs."""

from medaudit.report._json import SCHEMA_ID, report_from_dict, report_to_dict
from medaudit.report._model import Check, Figure, Report, Section, atomic_write_text
from medaudit.report._policy import BUILTIN_CHECKS, DEFAULT_SETTINGS, Policy, Threshold

__all__ = [
    "BUILTIN_CHECKS",
    "DEFAULT_SETTINGS",
    "SCHEMA_ID",
    "Check",
    "Figure",
    "Policy",
    "Report",
    "Section",
    "Threshold",
    "atomic_write_text",
    "report_from_dict",
    "report_to_dict",
]
