"""``medaudit train``: train a zoo model on a manifest and save a safetensors checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli._common import parse_list, require_file
from medaudit.cli.app import app

__all__ = ["train", "train_checkpoint"]


def train_checkpoint(
    data: Path,
    out: Path,
    *,
    arch: str = "small_cnn",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    image_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    disentangle: list[str] | None = None,
    disentangle_weight: float = 0.1,
) -> dict[str, float]:
    """Train on ``data`` (its train/val splits, or a patient split) and save to ``out``.

    ``disentangle`` names attribute columns to train out of the features (adversaries
    behind a gradient-reversal layer, :func:`medaudit.shortcuts.disentangle_hooks`).
    Returns the best epoch, its validation AUROC and ECE.
    """
    from medaudit.data import load_cohort, patient_split
    from medaudit.models import build_model, compute_normalization, save_checkpoint, train_model

    if out.suffix != ".safetensors":
        raise InvalidInputError(f"--out must end in .safetensors, got {out.name!r}.")
    cohort = load_cohort(require_file(data, "Manifest"))
    meta = cohort.meta
    if "split" not in meta.columns or not {"train", "val"} <= set(meta["split"].astype(str)):
        names = patient_split(
            meta, fractions=(0.85, 0.15), names=("train", "val"), random_state=seed
        )
        cohort.meta = meta.assign(split=names)
    train, val = cohort.split("train"), cohort.split("val")
    if len(train) == 0 or len(val) == 0:
        raise InvalidInputError("The manifest gives an empty train or validation split.")
    c, h, _ = train.image_shape
    size = image_size or h
    mean, std = compute_normalization(train)
    model = build_model(arch, in_channels=c, num_classes=cohort.num_classes, random_state=seed)
    hooks, extra = None, None
    if disentangle:  # adversaries remove these attributes from the features (issue 12)
        from medaudit.shortcuts import disentangle_hooks

        hooks = disentangle_hooks(
            model,
            train,
            disentangle,
            mean=mean,
            std=std,
            weight=disentangle_weight,
            epochs=epochs,
            batch_size=batch_size,
            image_size=size,
            seed=seed,
        ).hooks
        extra = {"disentangled": list(disentangle), "disentangle_weight": disentangle_weight}
    result = train_model(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        image_size=size,
        in_channels=c,
        mean=mean,
        std=std,
        device=device,
        progress=progress,
        hooks=hooks,
    )
    save_checkpoint(
        result.model,
        out,
        arch=arch,
        in_channels=c,
        num_classes=cohort.num_classes,
        image_size=size,
        class_names=list(cohort.class_names),
        mean=mean,
        std=std,
        extra=extra,
    )
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    return {
        "best_epoch": float(result.best_epoch),
        "best_val_auroc": float(result.best_val_auroc),
        "best_val_ece": float(best["val_ece"]),
    }


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")],
    arch: Annotated[str, typer.Option(help="Architecture from the zoo.")] = "small_cnn",
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (early stopping on val AUROC).")
    ] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 1e-3,
    image_size: Annotated[
        int | None, typer.Option(min=8, help="Resize images to this size (default: as stored).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or mps.")
    ] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    disentangle: Annotated[
        str | None,
        typer.Option(help="Attribute columns to train out of the features (e.g. site,sex)."),
    ] = None,
    disentangle_weight: Annotated[
        float, typer.Option(min=0.0, help="Final gradient-reversal strength (lambda).")
    ] = 0.1,
) -> int:
    """Train a model; uses the manifest's train/val splits or makes a patient-grouped split."""
    res = train_checkpoint(
        data,
        out,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        image_size=image_size,
        seed=seed,
        device=device,
        progress=progress,
        disentangle=parse_list(disentangle),
        disentangle_weight=disentangle_weight,
    )
    typer.echo(
        f"Saved {out} (best epoch {res['best_epoch']:.0f}, "
        f"validation AUROC {res['best_val_auroc']:.3f}, ECE {res['best_val_ece']:.3f})."
    )
    return 0
