"""Cohorts: images + metadata, synthetic hospitals, readers, splits, integrity checks."""

from medaudit.data._cohort import RESERVED_COLUMNS, Cohort

__all__ = ["RESERVED_COLUMNS", "Cohort"]
