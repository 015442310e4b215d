"""``medaudit predict``: one clean pass of a checkpoint over a manifest → predictions CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.cli._common import require_file
from medaudit.cli.app import app
from medaudit.report import atomic_write_text

__all__ = ["load_model_and_predict", "predict"]


def load_model_and_predict(
    model_path: Path,
    data_path: Path,
    *,
    arch: str | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Any, Any, Any]:
    """Load a checkpoint and a cohort and run the model once: ``(loaded, cohort, predictions)``."""
    from medaudit.data._readers import load_cohort
    from medaudit.inference import predict as run_predict
    from medaudit.models import load_checkpoint

    loaded = load_checkpoint(require_file(model_path, "Checkpoint"), arch=arch)
    cohort = load_cohort(require_file(data_path, "Manifest"))
    if loaded.class_names and len(loaded.class_names) != cohort.num_classes:
        # Keep the model's class names: the data may not show every class.
        cohort.class_names = list(loaded.class_names)
    preds = run_predict(
        loaded.model,
        cohort,
        batch_size=batch_size,
        image_size=loaded.image_size,
        in_channels=loaded.in_channels,
        mean=loaded.mean,
        std=loaded.std,
        cache_dir=cache_dir,
        progress=progress,
    )
    return loaded, cohort, preds


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option("--model", help="Checkpoint (.safetensors, .pt, TorchScript).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions CSV to write.")],
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> int:
    """Write label, score(s) and metadata per image: the input of ``medaudit check``."""
    _, _, preds = load_model_and_predict(
        model, data, arch=arch, batch_size=batch_size, progress=progress
    )
    atomic_write_text(out, preds.to_frame().to_csv(index=False))
    typer.echo(f"Wrote {len(preds)} predictions to {out}.")
    return 0
