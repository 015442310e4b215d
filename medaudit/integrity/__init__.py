"""Data-integrity audit: the first section of every report."""

from medaudit.integrity._audit import SPEC, audit
from medaudit.integrity._section import CHECKS, MAX_LISTED_ROWS, integrity_section
from medaudit.stats import wilson_interval

__all__ = ["CHECKS", "MAX_LISTED_ROWS", "SPEC", "audit", "integrity_section", "wilson_interval"]
