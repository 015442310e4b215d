"""Column mapping for tables as users have them: their names, string and uncertain labels.

A manifest or predictions table exported by another tool rarely uses medaudit's column
names (``path``, ``label``, ``patient_id``, ``score``). :class:`ColumnMap` names the
user's columns, which label value is the positive class (as scikit-learn's
``pos_label``), and which value marks an *uncertain* label (CheXpert and MIMIC-CXR write
``-1``) together with how to resolve it: ``ignore`` (leave those rows out), ``zeros``
(count them negative) or ``ones`` (count them positive), the U-Ignore, U-Zeros and U-Ones
policies of Irvin et al. Blank label cells are missing labels.

References
----------
.. [1] Irvin J. et al. "CheXpert: A Large Chest Radiograph Dataset with Uncertainty
   Labels and Expert Comparison." AAAI 2019.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.data._cohort import Cohort

__all__ = [
    "COLUMN_KEYS",
    "MSG_POSITIVE_ABSENT",
    "MSG_UNCERTAIN_ABSENT",
    "MSG_UNCERTAIN_TEXT",
    "MSG_UNKNOWN_COLUMN",
    "REASON_NO_LABEL",
    "REASON_UNCERTAIN",
    "UNCERTAIN_POLICIES",
    "ColumnMap",
    "LabelColumn",
    "label_text",
    "map_labels",
    "uncertain_cohort",
]

UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones")
# Reasons recorded in ``Cohort.dropped`` for rows the label mapping leaves out.
REASON_NO_LABEL = "no label"
REASON_UNCERTAIN = "uncertain label (policy ignore)"
#: Keys of a policy file's / ``[tool.medaudit]``'s column mapping (the flags without --).
COLUMN_KEYS: tuple[str, ...] = (
    "label_column",
    "path_column",
    "patient_column",
    "score_column",
    "score_columns",
    "positive_label",
    "uncertain_label",
    "uncertain_policy",
)

MSG_UNKNOWN_COLUMN = "{source} has no column {name!r} (--{flag}); its columns: {cols}."
MSG_POSITIVE_ABSENT = (
    "The positive label {value!r} (--positive-label) does not occur in column {col!r} of "
    "{source}; its values: {values}."
)
MSG_UNCERTAIN_TEXT = (
    "Column {col!r} of {source} has text labels besides the uncertain one: name the "
    "positive class with --positive-label so that uncertain labels can count as 0 or 1."
)
MSG_UNCERTAIN_ABSENT = (
    "The uncertain label {value!r} (--uncertain-label) does not occur in column {col!r} of "
    "{source}; its values: {values}."
)


def label_text(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Label cells as stripped text (``1.0`` → ``"1"``) and the mask of blank cells.

    Examples
    --------
    >>> t, blank = label_text(pd.Series([1.0, -1.0, None, 0.0]))
    >>> t.tolist(), blank.tolist()
    (['1', '-1', '', '0'], [False, False, True, False])
    """
    out = []
    for v in raw.astype(object).tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append("")
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    text = np.array(out, dtype=object)
    return text, text == ""


def _values(text: np.ndarray) -> str:
    vals = sorted({str(t) for t in text if t != ""})
    shown = ", ".join(repr(v) for v in vals[:10])
    return shown + (f" and {len(vals) - 10} more" if len(vals) > 10 else "") or "none"


@dataclass(frozen=True)
class LabelColumn:
    """A label column after the mapping: codes for the rows kept, and what was left out.

    ``labels`` holds text (or 0/1 with a positive label) for every row; ``uncertain``
    and ``blank`` mark the uncertain and missing cells; ``keep`` the rows that go on
    under the uncertain-label policy.
    """

    labels: pd.Series
    uncertain: np.ndarray
    blank: np.ndarray
    keep: np.ndarray


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a user's table hold the label, path, patient and scores.

    Parameters
    ----------
    label, path, patient : str
        Column names (defaults: medaudit's own).
    scores : tuple of str
        Score column(s) of a predictions table: one for a binary model, one per class
        otherwise (default: ``score`` or the ``score_<class>`` columns).
    positive_label : str, optional
        The label value of the positive class; every other value is negative.
    uncertain_label : str, optional
        The label value meaning "uncertain" (e.g. ``"-1"``).
    uncertain_policy : {"ignore", "zeros", "ones"}
        How uncertain labels are resolved (default ``ignore``: those rows are left out).

    Examples
    --------
    >>> m = ColumnMap.from_options(label_column="Effusion", uncertain_label=-1)
    >>> df = pd.DataFrame({"Path": ["a"], "Effusion": [1.0]})
    >>> list(m.rename(df, "t.csv", flag_of={"label": "label-column"}).columns)
    ['Path', 'label']
    """

    label: str = "label"
    path: str = "path"
    patient: str = "patient_id"
    scores: tuple[str, ...] = ()
    positive_label: str | None = None
    uncertain_label: str | None = None
    uncertain_policy: str = "ignore"
    given: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.uncertain_policy not in UNCERTAIN_POLICIES:
            raise param_error(
                "uncertain_policy",
                "ColumnMap",
                f"one of {UNCERTAIN_POLICIES}",
                self.uncertain_policy,
            )

    @classmethod
    def from_options(
        cls,
        *,
        label_column: str | None = None,
        path_column: str | None = None,
        patient_column: str | None = None,
        score_column: str | None = None,
        score_columns: Any = None,
        positive_label: Any = None,
        uncertain_label: Any = None,
        uncertain_policy: str | None = None,
    ) -> ColumnMap:
        """Build from the command-line flags / config keys (None: not given)."""
        scores: list[str] = [score_column] if score_column else []
        if isinstance(score_columns, str):
            scores += [s.strip() for s in score_columns.split(",") if s.strip()]
        elif score_columns:
            scores += [str(s) for s in score_columns]
        given = {
            k
            for k, v in (
                ("label", label_column),
                ("path", path_column),
                ("patient", patient_column),
            )
            if v
        }
        return cls(
            label=label_column or "label",
            path=path_column or "path",
            patient=patient_column or "patient_id",
            scores=tuple(scores),
            positive_label=None
            if positive_label is None
            else label_text(pd.Series([positive_label]))[0][0],
            uncertain_label=None
            if uncertain_label is None
            else label_text(pd.Series([uncertain_label]))[0][0],
            uncertain_policy=uncertain_policy or "ignore",
            given=frozenset(given),
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> ColumnMap:
        """Build from a ``[tool.medaudit]`` / policy-file table (keys :data:`COLUMN_KEYS`)."""
        return cls.from_options(**{k: table[k] for k in COLUMN_KEYS if k in table})

    @property
    def is_default(self) -> bool:
        """True when nothing is mapped: the table uses medaudit's names and labels."""
        return self == ColumnMap()

    def with_label(self, column: str) -> ColumnMap:
        """The same mapping with another label column (one finding of a multi-label file)."""
        from dataclasses import replace

        return replace(self, label=column, given=self.given | {"label"})

    def rename(self, df: pd.DataFrame, source: str, *, flag_of: Mapping[str, str]) -> pd.DataFrame:
        """``df`` with the mapped columns under medaudit's names.

        ``flag_of`` maps ``"label"``, ``"path"``, ``"patient"``, ``"score"`` to the
        flag named in the error for a missing column. A canonical column that a mapped
        one replaces is dropped (``label`` when ``--label-column Effusion``).
        """
        cols = [str(c) for c in df.columns]
        wanted = [("label", self.label, "label"), ("path", self.path, "path")]
        wanted.append(("patient", self.patient, "patient_id"))
        wanted += [("score", s, s) for s in self.scores]  # renamed by the caller
        mapping: dict[str, str] = {}
        for key, name, canon in wanted:
            if key not in flag_of or (name == canon and key != "score"):
                continue
            if name not in cols:
                if key == "patient" and key not in self.given:
                    continue
                raise InvalidInputError(
                    MSG_UNKNOWN_COLUMN.format(
                        source=source, name=name, flag=flag_of[key], cols=", ".join(cols)
                    )
                )
            if name != canon:
                mapping[name] = canon
        clash = [c for c in mapping.values() if c in cols and c not in mapping]
        return df.drop(columns=clash).rename(columns=mapping)

    def resolve_labels(self, raw: pd.Series, source: str) -> LabelColumn:
        """Apply the positive label and the uncertain-label policy to one label column.

        Blank cells are missing labels and never kept; uncertain cells are kept as 0 /
        1 under ``zeros`` / ``ones`` and left out under ``ignore``. Raises when the
        positive or uncertain value does not occur (a typo would silently give one class).
        """
        text, blank = label_text(raw)
        uncertain = np.zeros(len(text), dtype=bool)
        if self.uncertain_label is not None:
            uncertain = text == self.uncertain_label
            if not uncertain.any():
                raise InvalidInputError(
                    MSG_UNCERTAIN_ABSENT.format(
                        value=self.uncertain_label,
                        col=self.label,
                        source=source,
                        values=_values(text),
                    )
                )
        if self.positive_label is not None:
            if not (text == self.positive_label).any():
                raise InvalidInputError(
                    MSG_POSITIVE_ABSENT.format(
                        value=self.positive_label,
                        col=self.label,
                        source=source,
                        values=_values(text),
                    )
                )
            labels = pd.Series((text == self.positive_label).astype(np.int64))
        elif uncertain.any():
            labels = pd.Series(
                pd.to_numeric(pd.Series(np.where(uncertain, "0", text)), errors="coerce")
            )
            if labels[~blank].isna().any():
                raise InvalidInputError(MSG_UNCERTAIN_TEXT.format(col=self.label, source=source))
        else:
            labels = raw.copy().reset_index(drop=True)
        if uncertain.any():
            labels = labels.mask(uncertain, 1 if self.uncertain_policy == "ones" else 0)
        keep = ~blank & (~uncertain if self.uncertain_policy == "ignore" else True)
        return LabelColumn(labels, uncertain, blank, np.asarray(keep, dtype=bool))


def map_labels(
    df: pd.DataFrame, cmap: ColumnMap, p: Path
) -> tuple[pd.DataFrame, dict[int, tuple[str, str]], np.ndarray | None]:
    """Positive and uncertain labels resolved; blank and ignored rows as problems.

    Returns the table (``label`` resolved, ``label_uncertain`` with an uncertain value,
    the other finding columns left out), ``{row: (reason, detail)}`` for the rows left
    out, and the uncertain mask (None without an uncertain value).
    """
    res = cmap.resolve_labels(df["label"], f"manifest {p}")
    problems: dict[int, tuple[str, str]] = {}
    for row in np.flatnonzero(res.blank).tolist():
        problems[row] = (REASON_NO_LABEL, f"the {cmap.label!r} cell is empty")
    for row in np.flatnonzero(res.uncertain & ~res.keep).tolist():
        problems[row] = (REASON_UNCERTAIN, f"{cmap.label!r} is {cmap.uncertain_label!r}")
    out = df.assign(label=res.labels.to_numpy())
    if cmap.uncertain_label is None:
        return out, problems, None
    out["label_uncertain"] = res.uncertain
    return out.drop(columns=_other_findings(out, cmap)), problems, res.uncertain


def _other_findings(df: pd.DataFrame, cmap: ColumnMap) -> list[str]:
    """The other finding columns of a multi-label file (1/0/uncertain/blank values only).

    A column counts when the uncertain value occurs in it. They are labels, not
    attributes (``--findings`` audits them one at a time), so they leave the metadata.
    """
    allowed = {"1", "0", "", cmap.uncertain_label}
    out = []
    for c in df.columns:
        if c in ("label", "label_uncertain", "path", "patient_id"):
            continue
        text, _ = label_text(df[c])
        values = set(text.tolist())
        if cmap.uncertain_label in values and values <= allowed:
            out.append(c)
    return out


def uncertain_cohort(
    df: pd.DataFrame,
    uncertain: np.ndarray,
    rel: list[str | None],
    problems: dict[int, tuple[str, str]],
    cohort: Cohort,
) -> Cohort | None:
    """Every uncertain row whose image is readable (labels set to 0: not a label)."""
    rows = [
        i
        for i in np.flatnonzero(uncertain).tolist()
        if rel[i] and problems.get(i, (REASON_UNCERTAIN,))[0] == REASON_UNCERTAIN
    ]
    if not rows:
        return None
    meta = df.iloc[rows].copy()
    meta["path"] = [rel[i] for i in rows]
    meta["label"] = 0
    return Cohort(
        meta.reset_index(drop=True),
        root=cohort.root,
        class_names=cohort.class_names,
        name=f"{cohort.name}:uncertain",
    )
