"""Cohorts: images + metadata, synthetic hospitals, readers, splits, attributes."""

from medaudit.data._attributes import DEMOGRAPHIC_COLUMNS, require_sensitive, resolve_sensitive
from medaudit.data._cohort import RESERVED_COLUMNS, Cohort
from medaudit.data._columns import COLUMN_KEYS, UNCERTAIN_POLICIES, ColumnMap
from medaudit.data._loader import iter_batches
from medaudit.data._partitions import SitePartition, dirichlet_partition, partition_by_site
from medaudit.data._readers import load_cohort, load_manifest, load_npz, read_image
from medaudit.data._splits import patient_split
from medaudit.data.synthetic import generate_hospitals, write_synthetic

__all__ = [
    "COLUMN_KEYS",
    "DEMOGRAPHIC_COLUMNS",
    "RESERVED_COLUMNS",
    "UNCERTAIN_POLICIES",
    "Cohort",
    "ColumnMap",
    "SitePartition",
    "dirichlet_partition",
    "generate_hospitals",
    "iter_batches",
    "load_cohort",
    "load_manifest",
    "load_npz",
    "partition_by_site",
    "patient_split",
    "read_image",
    "require_sensitive",
    "resolve_sensitive",
    "write_synthetic",
]
