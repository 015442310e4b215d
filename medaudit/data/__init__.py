"""Cohorts: images + metadata, synthetic hospitals, readers, splits, integrity checks."""

from medaudit.data._cohort import RESERVED_COLUMNS, Cohort
from medaudit.data._integrity import integrity_section
from medaudit.data._readers import load_cohort, load_manifest, load_npz, read_image
from medaudit.data._splits import patient_split
from medaudit.data.synthetic import generate_hospitals, write_synthetic

__all__ = [
    "RESERVED_COLUMNS",
    "Cohort",
    "generate_hospitals",
    "integrity_section",
    "load_cohort",
    "load_manifest",
    "load_npz",
    "patient_split",
    "read_image",
    "write_synthetic",
]
