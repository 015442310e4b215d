"""``medaudit train``: train a zoo model on a manifest and save a safetensors checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli import _columns as col
from medaudit.cli._common import parse_list, require_file
from medaudit.cli.app import app

__all__ = ["MSG_DP_DISENTANGLE", "train", "train_checkpoint"]

MSG_DP_DISENTANGLE = (
    "--disentangle cannot be combined with --dp: the adversary's gradients would reach the "
    "model outside DP-SGD's per-sample clipping and noise, and the privacy ledger would not "
    "cover them."
)


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
    dp: Mapping[str, Any] | None = None,
    disentangle: list[str] | None = None,
    disentangle_weight: float = 0.1,
    columns: Any = None,
) -> dict[str, float]:
    """Train on ``data`` (its train/val splits, or a patient split) and save to ``out``.

    ``dp``: keyword arguments of :func:`medaudit.privacy.train_private` (train with
    DP-SGD; the ledger is saved under the checkpoint's metadata key ``privacy``).
    ``disentangle`` names attribute columns to train out of the features (adversaries
    behind a gradient-reversal layer, :func:`medaudit.shortcuts.disentangle_hooks`); it
    cannot be combined with ``dp``.
    ``columns``: the manifest's column names and label handling (a
    :class:`medaudit.data.ColumnMap`: label column, uncertain-label policy).
    With ``disentangle`` the saved weights are the average over the second half of
    training (as :func:`medaudit.shortcuts.train_disentangled` returns them) and the
    validation AUROC and ECE are theirs.
    Returns the best epoch, its validation AUROC and ECE (and ε with ``dp``).
    """
    if disentangle and dp is not None:
        raise InvalidInputError(MSG_DP_DISENTANGLE)
    from medaudit.data import load_cohort, patient_split
    from medaudit.models import build_model, compute_normalization, save_checkpoint, train_model

    if out.suffix != ".safetensors":
        raise InvalidInputError(f"--out must end in .safetensors, got {out.name!r}.")
    cohort = load_cohort(require_file(data, "Manifest"), columns=columns)
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
    options: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    options.update(image_size=size, in_channels=c, mean=mean, std=std, device=device)
    ledger, extra, dis = None, None, None
    if disentangle:  # adversaries remove these attributes from the features (issue 12)
        from medaudit.shortcuts import disentangle_hooks

        dis = disentangle_hooks(
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
            average=0.99,
        )
        options["hooks"] = dis.hooks
        extra = {"disentangled": list(disentangle), "disentangle_weight": disentangle_weight}
    if dp is None:
        result = train_model(model, train, val, progress=progress, **options)
        if dis is not None:  # keep the weight average (see train_disentangled), not an epoch
            dis.close()
            dis.load_average()
            result.model.eval()
    else:  # DP-SGD (medaudit.privacy); the ledger goes into the checkpoint's metadata
        from medaudit.privacy import train_private

        private = train_private(model, train, val, progress=progress, **dict(dp), **options)
        result, ledger = private.training, private.ledger.to_dict()
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
        privacy=ledger,
    )
    best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
    epoch, auroc, ece = result.best_epoch, result.best_val_auroc, best["val_ece"]
    if dis is not None and dis.averaged:  # the saved weights are the average, not an epoch
        epoch = int(result.history["epoch"].max())
        auroc, ece = _val_metrics(result.model, val, size, c, mean, std, device)
    return {
        "best_epoch": float(epoch),
        "best_val_auroc": float(auroc),
        "best_val_ece": float(ece),
        **({} if ledger is None else {"epsilon": ledger["epsilon"], "delta": ledger["delta"]}),
    }


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")],
    arch: Annotated[
        str | None,
        typer.Option(
            help="Architecture from the zoo [default: small_cnn; with --dp: small_cnn_dp]"
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (early stopping on the validation loss).")
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
    dp: Annotated[bool, typer.Option("--dp", help="Train with DP-SGD (Opacus).")] = False,
    epsilon: Annotated[float | None, typer.Option(help="DP: target epsilon.")] = None,
    delta: Annotated[float | None, typer.Option(help="DP: delta [default: <= 0.1/N].")] = None,
    max_grad_norm: Annotated[float, typer.Option(help="DP: per-sample clipping norm.")] = 1.0,
    accountant: Annotated[str, typer.Option(help="DP: accountant, prv or rdp.")] = "prv",
    noise_multiplier: Annotated[
        float | None, typer.Option(help="DP: noise multiplier (instead of --epsilon).")
    ] = None,
    label_column: col.LabelColumnOpt = None,
    path_column: col.PathColumnOpt = None,
    patient_column: col.PatientColumnOpt = None,
    positive_label: col.PositiveLabelOpt = None,
    uncertain_label: col.UncertainLabelOpt = None,
    uncertain_policy: col.UncertainPolicyOpt = None,
) -> int:
    """Train a model; uses the manifest's train/val splits or makes a patient-grouped split."""
    privacy = _dp_options(dp, epsilon, delta, max_grad_norm, accountant, noise_multiplier)
    res = train_checkpoint(
        data,
        out,
        arch=arch or ("small_cnn_dp" if dp else "small_cnn"),
        dp=privacy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        image_size=image_size,
        seed=seed,
        device=device,
        progress=progress,
        disentangle=parse_list(disentangle),
        disentangle_weight=disentangle_weight,
        columns=col.column_map(
            label_column=label_column,
            path_column=path_column,
            patient_column=patient_column,
            positive_label=positive_label,
            uncertain_label=uncertain_label,
            uncertain_policy=uncertain_policy,
        ),
    )
    typer.echo(
        f"Saved {out} (best epoch {res['best_epoch']:.0f}, "
        f"validation AUROC {res['best_val_auroc']:.3f}, ECE {res['best_val_ece']:.3f})."
        + (f" DP: epsilon {res['epsilon']:.3g} at delta {res['delta']:.1e}." if dp else "")
    )
    return 0


def _val_metrics(
    model: Any, val: Any, size: int, c: int, mean: Any, std: Any, device: str
) -> tuple[float, float]:
    """Validation AUROC and ECE of ``model``, as the training loop reports them."""
    import numpy as np

    from medaudit.inference import predict
    from medaudit.models import auroc_and_ece

    p = predict(
        model, val, image_size=size, in_channels=c, mean=mean, std=std, device=device,
        features=False,
    )  # fmt: skip
    return auroc_and_ece(val.labels, np.asarray(p.scores, dtype=np.float64))


def _dp_options(
    dp: bool, epsilon: Any, delta: Any, max_grad_norm: float, accountant: str, sigma: Any
) -> dict[str, Any] | None:
    """``train_private`` keywords from the --dp flags; the DP flags need --dp."""
    if not dp:
        if epsilon is not None or delta is not None or sigma is not None:
            raise InvalidInputError("--epsilon, --delta and --noise-multiplier need --dp.")
        return None
    return {
        "target_epsilon": epsilon,
        "target_delta": delta,
        "noise_multiplier": sigma,
        "max_grad_norm": max_grad_norm,
        "accountant": accountant,
    }
