"""``medaudit predict``: one clean pass of a checkpoint over a manifest → predictions CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medaudit.cli import _columns as col
from medaudit.cli.app import app
from medaudit.report import atomic_write_text

__all__ = ["predict"]


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option("--model", help="Checkpoint (.safetensors, .pt, TorchScript).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions CSV to write.")],
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or mps.")
    ] = "cpu",
    workers: Annotated[
        int, typer.Option(min=0, help="Processes decoding images from disk (0: in-process).")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    label_column: col.LabelColumnOpt = None,
    path_column: col.PathColumnOpt = None,
    patient_column: col.PatientColumnOpt = None,
    positive_label: col.PositiveLabelOpt = None,
    uncertain_label: col.UncertainLabelOpt = None,
    uncertain_policy: col.UncertainPolicyOpt = None,
) -> int:
    """Write label, score(s) and metadata per image: the input of ``medaudit check``."""
    from medaudit._device import resolve_device
    from medaudit.pipeline import load_model_and_predict

    preds = load_model_and_predict(
        model,
        data,
        arch=arch,
        batch_size=batch_size,
        device=resolve_device(device),
        workers=workers,
        progress=progress,
        columns=col.column_map(
            label_column=label_column,
            path_column=path_column,
            patient_column=patient_column,
            positive_label=positive_label,
            uncertain_label=uncertain_label,
            uncertain_policy=uncertain_policy,
        ),
    ).predictions
    atomic_write_text(out, preds.to_frame().to_csv(index=False))
    typer.echo(f"Wrote {len(preds)} predictions to {out}.")
    return 0
