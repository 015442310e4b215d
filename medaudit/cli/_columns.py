"""The column-mapping flags shared by every command that reads a table.

``check``, ``train`` and ``predict`` declare these options; ``audit`` gets the same
flags from the ``labels`` audit's settings (so a policy file's ``[settings.labels]``
sets them too).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from medaudit.data import ColumnMap

__all__ = [
    "LabelColumnOpt",
    "PathColumnOpt",
    "PatientColumnOpt",
    "PositiveLabelOpt",
    "ScoreColumnOpt",
    "ScoreColumnsOpt",
    "UncertainLabelOpt",
    "UncertainPolicyOpt",
    "column_map",
    "policy_columns",
]

LabelColumnOpt = Annotated[
    str | None, typer.Option("--label-column", help="Column holding the label [default: label].")
]
PathColumnOpt = Annotated[
    str | None, typer.Option("--path-column", help="Column holding the image path [default: path].")
]
PatientColumnOpt = Annotated[
    str | None,
    typer.Option("--patient-column", help="Column holding the patient id [default: patient_id]."),
]
ScoreColumnOpt = Annotated[
    str | None, typer.Option("--score-column", help="Column holding the score [default: score].")
]
ScoreColumnsOpt = Annotated[
    str | None,
    typer.Option("--score-columns", help="Comma-separated score columns, one per class."),
]
PositiveLabelOpt = Annotated[
    str | None,
    typer.Option("--positive-label", help="Label value of the positive class (e.g. yes)."),
]
UncertainLabelOpt = Annotated[
    str | None,
    typer.Option("--uncertain-label", help="Label value meaning uncertain (e.g. -1)."),
]
UncertainPolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--uncertain-policy",
        help="Uncertain labels: ignore (leave out), zeros or ones [default: ignore].",
    ),
]


def column_map(config: dict[str, Any] | None = None, **flags: Any) -> ColumnMap:
    """The mapping from the flags (those given) over ``config`` (a policy / tool table)."""
    merged = {**(config or {}), **{k: v for k, v in flags.items() if v is not None}}
    return ColumnMap.from_config(merged)


def policy_columns(policy: Any) -> dict[str, Any]:
    """The column keys a policy file sets under ``[settings.labels]``."""
    from medaudit.data import COLUMN_KEYS

    return {k: policy.setting(f"labels.{k}") for k in COLUMN_KEYS}
