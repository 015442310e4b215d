"""``medaudit audit``: every audit on a trained checkpoint → index.html + audit.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medaudit.cli._common import parse_list, read_policy, require_file
from medaudit.cli.app import app

__all__ = ["audit", "audit_checkpoint"]


def audit_checkpoint(
    model: Path,
    data: Path,
    out: Path,
    *,
    train_data: Path | None = None,
    sensitive: list[str] | None = None,
    audits: list[str] | None = None,
    policy: Path | None = None,
    arch: str | None = None,
    cache_dir: Path | None = None,
    include_identifiers: bool = False,
    calibration_data: Path | None = None,
    progress: bool = False,
):  # noqa: ANN201 - returns medaudit.report.Report
    """Run the audits on ``model`` over ``data`` and save the report in ``out``."""
    from medaudit.cli.predict import load_model_and_predict
    from medaudit.data._readers import load_cohort
    from medaudit.pipeline import run_audits

    pol = read_policy(policy)
    loaded, cohort, preds = load_model_and_predict(
        model, data, arch=arch, cache_dir=cache_dir, progress=progress
    )
    train = load_cohort(require_file(train_data, "Training manifest")) if train_data else None
    calibration = None
    if calibration_data is not None:
        _, _, calibration = load_model_and_predict(
            model, calibration_data, arch=arch, cache_dir=cache_dir
        )
    report = run_audits(
        preds,
        cohort,
        audits=audits,
        sensitive=sensitive,
        policy=pol,
        train=train,
        model=loaded.model,
        model_info={
            "arch": loaded.arch,
            "format": loaded.format,
            "image_size": loaded.image_size,
            "in_channels": loaded.in_channels,
            "class_names": list(loaded.class_names or []),
            "checkpoint": model.name,
        },
        meta={"title": f"medaudit audit — {model.name} on {data.name}"},
        calibration=calibration,
    )
    report.save(out, include_identifiers=include_identifiers)
    return report


@app.command()
def audit(
    model: Annotated[
        Path, typer.Option("--model", help="Checkpoint (.safetensors, .pt, TorchScript).")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz to audit on.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and audit.json.")],
    train_data: Annotated[
        Path | None, typer.Option("--train-data", help="Training manifest (patient overlap).")
    ] = None,
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated attribute columns, e.g. sex,age_group.")
    ] = None,
    audits: Annotated[
        str | None, typer.Option(help="Comma-separated audits (default: all registered).")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML with thresholds.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache predictions here, keyed by model and data hashes.")
    ] = None,
    include_identifiers: Annotated[
        bool, typer.Option("--include-identifiers", help="Show patient/study ids and file paths.")
    ] = False,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            "--calibration-data",
            help="Manifest of a calibration split (not the audited data): fits the fairness "
            "mitigation suggestion (group thresholds, never applied).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> int:
    """Audit a checkpoint; exit 0 if every check passes, 1 if one fails, 2 on bad input."""
    report = audit_checkpoint(
        model,
        data,
        out,
        train_data=train_data,
        sensitive=parse_list(sensitive),
        audits=parse_list(audits),
        policy=policy,
        arch=arch,
        cache_dir=cache_dir,
        include_identifiers=include_identifiers,
        calibration_data=calibration_data,
        progress=progress,
    )
    failed = [c for c in report.checks if c.status == "fail"]
    typer.echo(
        f"Report written to {out / 'index.html'}: "
        + (
            "all checks passed."
            if not failed
            else f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}."
        )
    )
    return 1 if failed else 0
