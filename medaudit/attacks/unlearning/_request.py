"""Forget requests: which rows of the training data a model must forget, at any level.

A request names a column of the training metadata and the identifiers to forget in it:
``site=site_A`` (a whole hospital), ``patient_id=P1,P2``, ``study_id=...`` or single
images (``path=...`` or ``image_id=...``). Only identifiers are kept in a model's
metadata afterwards, never images.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "LEVELS",
    "MSG_BAD_SPEC",
    "MSG_FORGET_ALL",
    "MSG_IDS_NOT_FOUND",
    "MSG_NO_COLUMN",
    "ForgetRequest",
    "parse_forget",
    "read_forget_file",
]

#: Hierarchy level of each identifier column, coarse to fine.
LEVELS: dict[str, str] = {
    "site": "site",
    "patient_id": "patient",
    "study_id": "study",
    "image_id": "image",
    "path": "image",
}

MSG_BAD_SPEC = "A forget request reads COLUMN=ID1,ID2,... (e.g. patient_id=P1,P2); got {spec!r}."
MSG_NO_COLUMN = (
    "The training data {name!r} has no column {column!r} to forget by (columns: {columns})."
)
MSG_IDS_NOT_FOUND = (
    "{n} {column} value(s) to forget are not in the training data {name!r}: {ids}. "
    "Check the identifiers (forgetting data a model never saw needs no unlearning)."
)
MSG_FORGET_ALL = (
    "The forget request covers all {n} training images of {name!r}: nothing would be "
    "retained. Train no model at all, or forget fewer {column} values."
)
MSG_EMPTY_FILE = "The forget file {path} lists no identifiers under a header naming the column."


@dataclass(frozen=True)
class ForgetRequest:
    """What to forget: identifiers in one column of the training metadata.

    Attributes
    ----------
    column : str
        ``site``, ``patient_id``, ``study_id``, ``image_id``, ``path`` or any other column.
    ids : tuple of str
        The identifiers, compared as strings.

    Examples
    --------
    >>> r = parse_forget("patient_id=P1, P2")
    >>> r.column, r.ids, r.level
    ('patient_id', ('P1', 'P2'), 'patient')
    """

    column: str
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise param_error("column", "ForgetRequest", "a non-empty string", self.column)
        if not self.ids:
            raise param_error("ids", "ForgetRequest", "a non-empty tuple of identifiers", self.ids)

    @property
    def level(self) -> str:
        """Hierarchy level: site, patient, study, image (or the column's own name)."""
        return LEVELS.get(self.column, self.column)

    def mask(self, cohort: Any) -> np.ndarray:
        """Boolean mask of the cohort's rows to forget; every check done first.

        Raises
        ------
        InvalidInputError
            The column is missing, an identifier is not in the data, or every row would
            be forgotten.
        """
        meta = cohort.meta
        if self.column not in meta.columns:
            raise InvalidInputError(
                MSG_NO_COLUMN.format(
                    name=cohort.name, column=self.column, columns=", ".join(map(str, meta.columns))
                )
            )
        values = meta[self.column].astype(str).to_numpy()
        missing = sorted(set(self.ids) - set(values))
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InvalidInputError(
                MSG_IDS_NOT_FOUND.format(
                    n=len(missing), column=self.column, name=cohort.name, ids=shown
                )
            )
        mask = np.isin(values, np.asarray(self.ids, dtype=str))
        if mask.all():
            raise InvalidInputError(
                MSG_FORGET_ALL.format(n=len(mask), name=cohort.name, column=self.column)
            )
        return mask

    def record(self, n_images: int) -> dict[str, Any]:
        """What a checkpoint's metadata keeps: identifiers and counts, never images."""
        return {
            "column": self.column,
            "level": self.level,
            "ids": list(self.ids),
            "n_images": int(n_images),
        }


def parse_forget(spec: str) -> ForgetRequest:
    """Parse ``COLUMN=ID1,ID2,...`` (the ``--forget`` option).

    Examples
    --------
    >>> parse_forget("site=site_A").level
    'site'
    """
    if not isinstance(spec, str) or "=" not in spec:
        raise InvalidInputError(MSG_BAD_SPEC.format(spec=spec))
    column, _, rest = spec.partition("=")
    ids = tuple(dict.fromkeys(v.strip() for v in rest.split(",") if v.strip()))
    if not column.strip() or not ids:
        raise InvalidInputError(MSG_BAD_SPEC.format(spec=spec))
    return ForgetRequest(column.strip(), ids)


def read_forget_file(path: str | Path) -> ForgetRequest:
    r"""Read a CSV whose header names the column and whose rows are the identifiers.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ids.csv"
    >>> _ = p.write_text("patient_id\nP1\nP2\n")
    >>> read_forget_file(p).ids
    ('P1', 'P2')
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"Forget file not found: {p}")
    rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
    if len(rows) < 2 or not rows[0] or not rows[0][0].strip():
        raise InvalidInputError(MSG_EMPTY_FILE.format(path=p))
    column = rows[0][0].strip()
    ids = tuple(dict.fromkeys(r[0].strip() for r in rows[1:] if r and r[0].strip()))
    if not ids:
        raise InvalidInputError(MSG_EMPTY_FILE.format(path=p))
    return ForgetRequest(column, ids)
