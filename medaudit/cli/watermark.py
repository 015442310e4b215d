"""``medaudit watermark embed|verify`` and ``medaudit protect``.

``verify`` exits 0 when ownership is shown, 1 when it is not and 2 on bad input; ``protect``
exits 0 when its evidence checks pass, 1 when one fails.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli._common import require_file
from medaudit.cli.app import app

__all__ = [
    "embed",
    "embed_checkpoint",
    "protect",
    "protect_manifest",
    "verify",
    "verify_checkpoint",
    "watermark_app",
]

watermark_app = typer.Typer(
    name="watermark",
    help="Embed an ownership watermark in a model, or verify one from black-box queries.",
    no_args_is_help=True,
)
app.add_typer(watermark_app, name="watermark")

MSG_KEY_ARG = "--key must be a key file written by `medaudit watermark embed` or an int; got {k!r}."
MSG_OUT_SUFFIX = "--out must end in .safetensors, got {name!r}."


class ProtectMethod(str, Enum):
    """Which perturbation ``medaudit protect`` adds."""

    adversarial = "adversarial"
    error_minimising = "error-minimising"


class Kind(str, Enum):
    """Which watermark."""

    trigger = "trigger"
    harmless = "harmless"


def _splits(cohort: Any, seed: int) -> tuple[Any, Any]:
    """The manifest's train and test rows (its ``split`` column, or a patient split)."""
    from medaudit.data import patient_split

    meta = cohort.meta
    names = set(meta["split"].astype(str)) if "split" in meta.columns else set()
    if "train" in names and names & {"test", "val"}:
        test_name = "test" if "test" in names else "val"
        return cohort.split("train"), cohort.split(test_name)
    split = patient_split(meta, fractions=(0.8, 0.2), names=("train", "test"), random_state=seed)
    cohort.meta = meta.assign(split=split)
    return cohort.split("train"), cohort.split("test")


def _scores(model: Any, cohort: Any, options: dict[str, Any]) -> Any:
    from medaudit.inference import predict

    return predict(model, cohort, features=False, **options).scores


def embed_checkpoint(
    data: Path,
    out: Path,
    *,
    key_seed: int,
    model: Path | None = None,
    kind: str = "trigger",
    n_triggers: int | None = None,
    steps: int = 150,
    epochs: int = 15,
    arch: str = "small_cnn",
    key_out: Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed a watermark and save the marked checkpoint and its key; return a summary.

    With ``model`` the finished checkpoint is fine-tuned with the triggers mixed into its
    training data (``steps`` optimizer steps); without it a new ``arch`` model is trained
    from scratch for ``epochs`` with the triggers mixed in. Either way an unmarked model
    (the checkpoint, or the same training without triggers) is scored on the manifest's
    test rows to report the clean utility change with its CI.
    """
    import copy

    from medaudit.data import load_cohort
    from medaudit.models import (
        build_model,
        compute_normalization,
        load_checkpoint,
        save_checkpoint,
        train_model,
    )
    from medaudit.watermark import WatermarkKey, embed_watermark, save_key, utility_change
    from medaudit.watermark._embed import DEFAULT_TRIGGERS

    if out.suffix != ".safetensors":
        raise InvalidInputError(MSG_OUT_SUFFIX.format(name=out.name))
    cohort = load_cohort(require_file(data, "Manifest"))
    train, test = _splits(cohort, seed)
    c, h, _ = train.image_shape
    if model is not None:
        loaded = load_checkpoint(require_file(model, "Checkpoint"))
        net, arch = loaded.model, loaded.arch
        size, c = loaded.image_size or h, loaded.in_channels
        mean, std, classes = loaded.mean, loaded.std, list(loaded.class_names)
        reference = copy.deepcopy(net)
        method = "finetune"
    else:
        size, classes = h, list(cohort.class_names)
        mean, std = compute_normalization(train, image_size=size, channels=c)
        net = build_model(arch, in_channels=c, num_classes=len(classes), random_state=seed)
        reference = copy.deepcopy(net)
        method = "train"
    key = WatermarkKey(
        key_seed,
        num_classes=len(classes),
        n_triggers=n_triggers or DEFAULT_TRIGGERS[kind],
        image_size=size,
        in_channels=c,
        kind=kind,
    )
    options = {"image_size": size, "in_channels": c, "mean": mean, "std": std}
    if method == "train":
        train_model(
            reference,
            train,
            None,
            epochs=epochs,
            seed=seed,
            patience=None,
            progress=progress,
            **options,
        )
    res = embed_watermark(
        net,
        train,
        key,
        method=method,
        epochs=epochs if method == "train" else 1,
        max_steps=steps if method == "finetune" else None,
        seed=seed,
        image_size=size,
        mean=mean,
        std=std,
        progress=progress,
    )
    pid = test.meta["patient_id"].to_numpy() if "patient_id" in test.meta else None
    change = utility_change(
        test.labels,
        _scores(reference, test, options),
        _scores(res.model, test, options),
        patient_ids=pid,
        random_state=seed,
    )
    save_checkpoint(
        res.model,
        out,
        arch=arch,
        in_channels=c,
        num_classes=len(classes),
        image_size=size,
        class_names=classes,
        mean=mean,
        std=std,
    )
    key_path = key_out or out.with_name(out.name.removesuffix(".safetensors") + ".key.json")
    save_key(key, key_path)
    return {
        "key": key_path,
        "method": method,
        "trigger_fit": res.trigger_fit,
        "top1_agreement": res.top1_agreement,
        "utility": change,
    }


@watermark_app.command()
def embed(
    data: Annotated[Path, typer.Option("--data", help="Manifest of the clean training data.")],
    key: Annotated[int, typer.Option("--key", min=0, help="The secret: an integer seed.")],
    out: Annotated[Path, typer.Option("--out", help="Marked checkpoint to write (.safetensors).")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Finished checkpoint to fine-tune (default: train anew)."),
    ] = None,
    kind: Annotated[Kind, typer.Option(help="trigger or harmless.")] = Kind.trigger,
    triggers: Annotated[
        int | None, typer.Option(min=2, help="Trigger images (default 32 / 64 harmless).")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps (with --model).")] = 150,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs when training anew.")] = 15,
    arch: Annotated[str, typer.Option(help="Architecture when training anew.")] = "small_cnn",
    key_out: Annotated[
        Path | None, typer.Option("--key-out", help="Key file (default: OUT with .key.json).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> int:
    """Embed a watermark while training or by fine-tuning; write the model and its key."""
    res = embed_checkpoint(
        data,
        out,
        key_seed=key,
        model=model,
        kind=kind.value,
        n_triggers=triggers,
        steps=steps,
        epochs=epochs,
        arch=arch,
        key_out=key_out,
        seed=seed,
        progress=progress,
    )
    u = res["utility"]
    lo, hi = u.auroc_change_ci
    fit = f"{res['trigger_fit']:.0%} of the triggers answer as the key says"
    if kind is Kind.harmless:
        fit += f", top-1 unchanged on {res['top1_agreement']:.0%}"
    typer.echo(
        f"Embedded the {kind.value} watermark ({res['method']}): {fit}; clean test AUROC "
        f"{u.auroc_before:.3f} -> {u.auroc_after:.3f} (change {u.auroc_change:+.3f}, "
        f"{100 * u.confidence:.0f}% CI {lo:+.3f} to {hi:+.3f})."
    )
    typer.echo(f"Wrote {out} and the key {res['key']} (keep the key secret).")
    return 0


def _read_key(text: str, loaded: Any, kind: str | None, queries: int | None) -> Any:
    from medaudit.watermark import WatermarkKey, load_key
    from medaudit.watermark._embed import DEFAULT_TRIGGERS

    p = Path(text)
    if p.is_file() or text.endswith(".json"):
        return load_key(p)
    try:
        seed = int(text)
    except ValueError:
        raise InvalidInputError(MSG_KEY_ARG.format(k=text)) from None
    k = kind or "trigger"
    return WatermarkKey(
        seed,
        num_classes=loaded.num_classes,
        n_triggers=queries or DEFAULT_TRIGGERS[k],
        image_size=loaded.image_size or 32,
        in_channels=loaded.in_channels,
        kind=k,
    )


def verify_checkpoint(
    model: Path,
    key: str,
    *,
    kind: str | None = None,
    false_claim_rate: float = 1e-3,
    queries: int | None = None,
    null_models: list[Path] | None = None,
    arch: str | None = None,
    out: Path | None = None,
) -> Any:
    """Verify the key's watermark in a checkpoint; write ``out`` when given."""
    from medaudit.models import load_checkpoint
    from medaudit.report import Policy, Report, atomic_write_text
    from medaudit.watermark import MSG_CLASSES, verify_watermark, watermark_section

    loaded = load_checkpoint(require_file(model, "Checkpoint"), arch=arch)
    k = _read_key(key, loaded, kind, queries)
    if k.num_classes != loaded.num_classes:
        raise InvalidInputError(MSG_CLASSES.format(got=loaded.num_classes, want=k.num_classes))
    nulls = [load_checkpoint(require_file(p, "Null model"), arch=arch) for p in null_models or []]
    v = verify_watermark(
        loaded, k, kind=kind, false_claim_rate=false_claim_rate, queries=queries, null_models=nulls
    )
    if out is not None:
        doc = {"schema": "medaudit.watermark-verification/1", "model": str(model), **v.to_dict()}
        atomic_write_text(out / "verification.json", json.dumps(doc, indent=2) + "\n")
        policy = Policy.default().with_settings({})
        section = watermark_section(v, policy=_policy_at(policy, false_claim_rate))
        Report(sections=[section], meta={"command": "medaudit watermark verify"}).save(out)
    return v


def _policy_at(policy: Any, rate: float) -> Any:
    """The policy with the p-value check's threshold at the verifier's false-claim rate."""
    import dataclasses

    from medaudit.report import Threshold

    t = policy.threshold("watermark.p_value")
    checks = {**policy.checks, "watermark.p_value": Threshold(t.op, rate, t.severity, t.help)}
    return dataclasses.replace(policy, checks=checks)


@watermark_app.command()
def verify(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint to test.")],
    key: Annotated[str, typer.Option("--key", help="Key file from `embed`, or the int seed.")],
    kind: Annotated[
        Kind | None, typer.Option(help="trigger or harmless (default: the key's).")
    ] = None,
    false_claim_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Level of the test (claim when p <= it).")
    ] = 1e-3,
    queries: Annotated[
        int | None, typer.Option(min=1, help="Trigger images to send (default: all).")
    ] = None,
    null_model: Annotated[
        list[Path] | None,
        typer.Option("--null-model", help="A model trained without the key (repeatable)."),
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for verification.json and a report.")
    ] = None,
) -> int:
    """Test ownership from the model's scores; exit 0 when shown, 1 when not."""
    if not 0 < false_claim_rate < 1:
        raise InvalidInputError(f"--false-claim-rate must be in (0, 1), got {false_claim_rate}.")
    v = verify_checkpoint(
        model,
        key,
        kind=None if kind is None else kind.value,
        false_claim_rate=false_claim_rate,
        queries=queries,
        null_models=null_model,
        arch=arch,
        out=out,
    )
    verdict = "ownership shown" if v.verified else "ownership NOT shown"
    typer.echo(
        f"p = {v.p_value:.3g}: {verdict} ({v.successes} of {v.trials} "
        f"{'triggers' if v.kind == 'trigger' else 'pairs'} agree with the key; "
        f"false-claim rate {v.false_claim_rate:g})."
    )
    return 0 if v.verified else 1


def protect_manifest(
    data: Path,
    out: Path,
    *,
    method: str = "adversarial",
    epsilon: float = 8.0,
    density: float = 0.3,
    rounds: int = 20,
    evidence: bool = True,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Any, Any, Any]:
    """Protect every image of a manifest; write them, the manifest and the evidence."""
    from medaudit.data import load_cohort
    from medaudit.report import Policy, Report
    from medaudit.watermark import (
        protect_images,
        protection_evidence,
        protection_section,
        write_protected,
    )

    cohort = load_cohort(require_file(data, "Manifest"))
    protected = protect_images(
        cohort,
        method=method,
        epsilon=epsilon / 255.0,
        density=density,
        rounds=rounds,
        seed=seed,
        progress=progress,
    )
    ev = None
    if evidence:
        train, test = _splits(cohort, seed)
        rows = cohort.meta.index[cohort.meta["split"].astype(str) == "train"].to_numpy()
        ev = protection_evidence(train, protected.subset(rows), test, epochs=epochs, seed=seed)
    write_protected(
        out, cohort, protected, report=None if ev is None else {"evidence": ev.to_dict()}
    )
    section = protection_section(protected, ev, policy=Policy.default())
    report = Report(sections=[section], meta={"command": "medaudit protect"})
    report.save(out / "report")
    return protected, ev, report


@app.command()
def protect(
    data: Annotated[Path, typer.Option("--data", help="Manifest of the images to protect.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the protected images.")],
    method: Annotated[
        ProtectMethod,
        typer.Option(
            help="adversarial: push each image towards another class (Fowl et al.; the "
            "stronger here); error-minimising: unlearnable examples (Huang et al., SALM)."
        ),
    ] = ProtectMethod.adversarial,
    epsilon: Annotated[
        float, typer.Option(min=1.0, max=64.0, help="L-inf budget in 8-bit levels (of 255).")
    ] = 8.0,
    density: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of each image's pixels perturbed.")
    ] = 0.3,
    rounds: Annotated[
        int, typer.Option(min=1, help="Min-min rounds at most (error-minimising).")
    ] = 20,
    evidence: Annotated[
        bool, typer.Option(help="Train on original vs protected images and compare.")
    ] = True,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the evidence models.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the noise model, split and training.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> int:
    """Protect a data set against training (perturbations on its significant pixels).

    Writes the protected images with a new manifest, and the evidence: a model trained on
    them against one trained on the originals, both tested on clean images.
    """
    protected, ev, report = protect_manifest(
        data,
        out,
        method=method.value.replace("-", "_"),
        epsilon=epsilon,
        density=density,
        rounds=rounds,
        evidence=evidence,
        epochs=epochs,
        seed=seed,
        progress=progress,
    )
    s = protected.summary()
    typer.echo(
        f"Wrote {s['n_images']} protected images and {out / 'manifest.csv'} "
        f"(PSNR >= {s['psnr_min']:.1f} dB, SSIM >= {s['ssim_min']:.3f})."
    )
    if ev is not None:
        typer.echo(
            f"A model trained on them reaches test AUROC {ev.auroc_protected_trained:.3f} "
            f"against {ev.auroc_clean_trained:.3f} on the originals (drop {ev.auroc_drop:.3f})."
        )
    return 0 if report.passed else 1
