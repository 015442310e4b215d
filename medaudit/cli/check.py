"""``medaudit check``: the predictions-only fairness audit for CI.

Exit codes: 0 every check passed (warnings allowed) · 1 a check failed · 2 bad input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.cli import _columns as col
from medaudit.cli.app import app

__all__ = ["MSG_ALLOW_SINGLE_CLASS", "check_predictions", "render_table"]

MSG_ALLOW_SINGLE_CLASS = (
    "note: --allow-single-class is deprecated and has no effect: groups with one class or "
    "too few images are always reported as skipped, with the reason."
)


def check_predictions(
    predictions: str | Path,
    *,
    policy: str | Path | None = None,
    sensitive: list[str] | None = None,
    threshold: float | None = None,
    intersections: bool = True,
    allow_single_class: bool = False,
    n_permutations: int = 1000,
    operating_point: str | None = None,
    target_sensitivity: float | None = None,
    calibration: str | Path | None = None,
    columns: Any = None,
) -> Any:
    """Run the fairness audit on a predictions file; return the fairness ``Section``.

    The logic of ``medaudit check``, callable from Python and tests. Groups with one
    class or too few images are skipped with the reason (``allow_single_class`` is
    deprecated and ignored). ``columns``: a :class:`medaudit.data.ColumnMap` (default:
    the policy's ``[settings.labels]`` keys).
    """
    from medaudit._errors import param_error
    from medaudit.data import require_sensitive
    from medaudit.fairness import fairness_section, read_predictions
    from medaudit.report import Policy

    if threshold is not None and not math.isfinite(threshold):
        raise param_error("threshold", "check", "a finite float", threshold)
    from medaudit.cli.audit import operating_point_settings
    from medaudit.operating_point import operating_point_from_policy

    pol = Policy.from_toml(policy) if policy is not None else Policy.default()
    op_settings = operating_point_settings(operating_point, threshold, target_sensitivity)
    pol = pol.with_settings(op_settings)
    cmap = columns if columns is not None else col.column_map(col.policy_columns(pol))
    preds = read_predictions(predictions, columns=cmap)
    cal = read_predictions(calibration, columns=cmap) if calibration is not None else None
    attrs = require_sensitive(preds.meta.columns, sensitive, source=str(predictions))
    op = operating_point_from_policy(preds, pol, cal) if preds.is_binary else None
    return fairness_section(
        preds,
        sensitive=attrs,
        policy=pol,
        intersections=intersections,
        operating_threshold=float(pol.setting("operating_threshold")),
        operating_point=op,
        calibration=cal,
        n_permutations=n_permutations,
    )


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "-" if not math.isfinite(x) else f"{x:.3f}"
    return str(x)


def render_table(checks: list[Any]) -> str:
    """The checks as aligned text: status, id, value, CI, threshold."""
    rows = [("status", "check", "value", "95% CI", "threshold")]
    for c in checks:
        ci = "-" if c.ci is None else f"[{_fmt(c.ci[0])}, {_fmt(c.ci[1])}]"
        thr = "-" if c.threshold is None else f"{c.op} {_fmt(c.threshold)}"
        rows.append((c.status.upper(), c.id, _fmt(c.value), ci, thr))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


@app.command("check")
def check(
    predictions: Annotated[
        Path, typer.Option("--predictions", help="CSV/Parquet with label, score(s), attributes.")
    ],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy TOML (thresholds, settings).")
    ] = None,
    sensitive: Annotated[
        str | None,
        typer.Option(
            "--sensitive",
            help="Comma-separated attribute columns (default: the demographic columns "
            "present: sex, gender, age_group, race, ethnicity, insurance).",
        ),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write the checks as JUnit XML here.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write index.html + audit.json into DIR.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Output on stdout: table or json.")
    ] = "table",
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Operating threshold, score >= t is positive (default: the policy's, 0.5).",
        ),
    ] = None,
    intersections: Annotated[
        bool, typer.Option("--intersections/--no-intersections", help="Audit attribute pairs.")
    ] = True,
    allow_single_class: Annotated[
        bool,
        typer.Option(
            "--allow-single-class",
            help="Deprecated, no effect: single-class groups are always skipped.",
        ),
    ] = False,
    label_column: col.LabelColumnOpt = None,
    score_column: col.ScoreColumnOpt = None,
    score_columns: col.ScoreColumnsOpt = None,
    patient_column: col.PatientColumnOpt = None,
    positive_label: col.PositiveLabelOpt = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            help="fixed (--threshold), youden or sensitivity (--target-sensitivity); the "
            "latter two chosen on --calibration.",
        ),
    ] = None,
    target_sensitivity: Annotated[
        float | None,
        typer.Option("--target-sensitivity", help="Sensitivity the operating point must reach."),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Predictions of a calibration split (not the audited rows): the youden or "
            "sensitivity operating point is chosen there.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> int:
    """Audit subgroup fairness from a predictions file (no model needed)."""
    from medaudit._errors import param_error
    from medaudit.report import Report, atomic_write_text, checks_to_junit, dumps

    if fmt not in ("table", "json"):
        raise param_error("--format", "check", "'table' or 'json'", fmt)
    attrs = [s.strip() for s in sensitive.split(",") if s.strip()] if sensitive else None
    if allow_single_class:
        sys.stderr.write(MSG_ALLOW_SINGLE_CLASS + "\n")
    from medaudit.report import Policy

    flags = {"label_column": label_column, "score_column": score_column}
    flags.update(score_columns=score_columns, patient_column=patient_column)
    pol_cols = col.policy_columns(Policy.from_toml(policy) if policy else Policy.default())
    section = check_predictions(
        predictions,
        policy=policy,
        sensitive=attrs,
        threshold=threshold,
        intersections=intersections,
        allow_single_class=allow_single_class,
        operating_point=operating_point,
        target_sensitivity=target_sensitivity,
        calibration=calibration,
        columns=col.column_map(pol_cols, positive_label=positive_label, **flags),
    )
    report = Report(
        sections=[section],
        meta={
            "command": "medaudit check",
            "predictions": str(predictions),
            "policy": str(policy) if policy else "built-in defaults",
        },
    )
    if junit is not None:
        atomic_write_text(junit, checks_to_junit(section.checks, "medaudit.fairness"))
    if out is not None:
        report.save(out)
    if fmt == "json":
        sys.stdout.write(dumps(report.to_dict()))
    else:
        sys.stdout.write(section.summary + "\n\n" + render_table(section.checks) + "\n")
        for n in section.notes:
            sys.stdout.write(f"note: {n}\n")
    failed = any(c.blocking for c in section.checks)
    if failed:
        raise typer.Exit(1)
    return 0
