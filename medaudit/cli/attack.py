"""``medaudit attack``: attack a trained model to measure what it gives away.

A command group (a typer sub-app): ``attack membership`` and ``attack reconstruct``
(gradient inversion); other attacks add their commands to :data:`attack_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli._common import parse_list, read_policy, require_file
from medaudit.cli.app import app

__all__ = [
    "MSG_BAD_DEFENCE",
    "attack_app",
    "attack_membership",
    "attack_reconstruct",
    "membership",
    "parse_defences",
    "reconstruct",
]

attack_app = typer.Typer(
    name="attack",
    help="Attack a trained model to measure what it gives away (membership inference).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(attack_app, name="attack")


def attack_membership(
    model: Path,
    members: Path,
    non_members: Path,
    out: Path,
    *,
    population: Path | None = None,
    reference_models: int = 1,
    attacks: list[str] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    arch: str | None = None,
    policy: Path | None = None,
    seed: int | None = None,
    cache_dir: Path | None = None,
    cache: bool = True,
    workers: int = 0,
    backend: str = "auto",
    device: str = "cpu",
    progress: bool = False,
) -> Any:
    """Run the membership attacks on ``model`` and save the ``privacy`` report in ``out``.

    Members and non-members (and the population) that share a patient are refused
    before any work is done.
    """
    from medaudit._device import resolve_device
    from medaudit.attacks.membership._data import check_disjoint
    from medaudit.data import load_cohort
    from medaudit.pipeline import load_model_and_predict, run_audits

    for path, what in (
        (model, "Checkpoint"),
        (members, "Members manifest"),
        (non_members, "Non-members manifest"),
    ):
        require_file(path, what)
    member_cohort = load_cohort(members)
    non_cohort = load_cohort(non_members)
    pop = load_cohort(require_file(population, "Population manifest")) if population else None
    check_disjoint(member_cohort, non_cohort, "members", "non-members")
    if pop is not None:
        check_disjoint(pop, member_cohort, "population", "members")
        check_disjoint(pop, non_cohort, "population", "non-members")
    settings: dict[str, Any] = {
        "privacy.reference_models": reference_models,
        "privacy.reference_epochs": epochs,
        "privacy.reference_batch_size": batch_size,
        "privacy.reference_lr": lr,
        "privacy.cache": cache,
        "privacy.workers": workers,
        "privacy.backend": backend,
    }
    if attacks is not None:  # named on the command line: each must run
        settings["privacy.attacks"] = attacks
        settings["privacy.require_attacks"] = True
    if seed is not None:
        settings["seed"] = seed
    pol = read_policy(policy)
    pol = pol.with_settings(settings, source=f"{pol.source} + command-line settings")
    dev = resolve_device(device)
    lp = load_model_and_predict(model, non_members, arch=arch, device=dev, progress=progress)
    report = run_audits(
        lp.predictions,
        lp.cohort,
        audits=["privacy"],
        policy=pol,
        train=member_cohort,
        population=pop,
        model=lp.loaded.model,
        model_info={**lp.model_info, "checkpoint": model.name},
        meta={"title": f"medaudit attack membership — {model.name}"},
        device=dev,
        cache_dir=cache_dir,
        progress=progress,
    )
    report.save(out)
    return report


@attack_app.command("membership")
def membership(
    model: Annotated[
        Path, typer.Option("--model", help="Checkpoint (.safetensors, .pt, TorchScript).")
    ],
    members: Annotated[
        Path, typer.Option("--members", help="Manifest of the images the model trained on.")
    ],
    non_members: Annotated[
        Path,
        typer.Option(
            "--non-members",
            help="Manifest of images from the same source the model never saw "
            "(no patient in common with the members).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and audit.json.")],
    population: Annotated[
        Path | None,
        typer.Option(
            "--population",
            help="Manifest of more images from the same source, in neither set: reference "
            "models train on them. Default: hold out half of the non-members' patients.",
        ),
    ] = None,
    reference_models: Annotated[
        int,
        typer.Option(
            "--reference-models",
            min=0,
            help="Reference models K (RMIA works with 1; LiRA needs 2, online LiRA an even "
            "number >= 4).",
        ),
    ] = 1,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated attacks: loss, calibrated_loss, rmia, lira, lira_online "
            "(default: loss, calibrated_loss, rmia, and lira when K >= 2)."
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs of each reference model (mirror the target's).")
    ] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Reference models' batch size.")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Reference models' learning rate.")] = 1e-3,
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML with thresholds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice.")] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache folder (default: ~/.cache/medaudit or $MEDAUDIT_CACHE_DIR)."),
    ] = None,
    cache: Annotated[
        bool, typer.Option(help="Reuse reference models trained before (content-hash cache).")
    ] = True,
    workers: Annotated[
        int, typer.Option(min=0, help="Processes training reference models (0: one per core).")
    ] = 0,
    backend: Annotated[
        str,
        typer.Option(help="auto (a running Ray cluster, else processes), serial, process, ray."),
    ] = "auto",
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or mps.")
    ] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> int:
    """Membership inference: exit 0, 1 if a critical or major check fails, 2 on bad input."""
    report = attack_membership(
        model,
        members,
        non_members,
        out,
        population=population,
        reference_models=reference_models,
        attacks=parse_list(attacks),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        arch=arch,
        policy=policy,
        seed=seed,
        cache_dir=cache_dir,
        cache=cache,
        workers=workers,
        backend=backend,
        device=device,
        progress=progress,
    )
    sec = report.section("privacy")
    failed = [c for c in report.checks if c.blocking]
    typer.echo(sec.summary)
    typer.echo(
        f"Report written to {out / 'index.html'}: "
        + (
            "no critical or major check failed."
            if not failed
            else f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}."
        )
    )
    return 1 if failed else 0


MSG_BAD_DEFENCE = (
    "A defence reads none, batch:N, steps:K or dp:EPSILON (comma-separated); got {item!r}."
)


def parse_defences(spec: str, *, dataset_size: int) -> list[Any]:
    """``"none,batch:32,steps:5,dp:8"`` → the :class:`Defence` list (DP sized to the data)."""
    from medaudit.attacks.reconstruction import Defence, dp_defence

    out = []
    for item in parse_list(spec) or []:
        kind, _, arg = item.partition(":")
        try:
            if kind == "none" and not arg:
                out.append(Defence("none"))
            elif kind == "batch":
                out.append(Defence(f"batch {int(arg)}", batch_size=int(arg)))
            elif kind == "steps":
                out.append(Defence(f"{int(arg)} local steps", local_steps=int(arg)))
            elif kind == "dp":
                out.append(dp_defence(float(arg), dataset_size=dataset_size))
            else:
                raise ValueError(item)
        except ValueError as exc:
            raise InvalidInputError(MSG_BAD_DEFENCE.format(item=item)) from exc
    if not out:
        raise InvalidInputError(MSG_BAD_DEFENCE.format(item=spec))
    return out


def attack_reconstruct(
    model: Path,
    data: Path,
    out: Path,
    *,
    defences: str = "none,batch:32,dp:8",
    trials: int = 2,
    steps: int = 300,
    restarts: int = 1,
    show_images: bool = False,
    arch: str | None = None,
    policy: Path | None = None,
    seed: int = 0,
) -> Any:
    """Invert simulated client updates of ``model`` under each defence; save the report."""
    from medaudit.attacks.reconstruction import (
        InversionSettings,
        reconstruction_attack,
        reconstruction_section,
        trainable_parameters,
    )
    from medaudit.data import load_cohort
    from medaudit.models import load_checkpoint
    from medaudit.report import Report

    loaded = load_checkpoint(require_file(model, "Checkpoint"), arch=arch)
    trainable_parameters(loaded.model, what=model.name)
    cohort = load_cohort(require_file(data, "Client manifest"))
    ds = parse_defences(defences, dataset_size=max(2, len(cohort)))
    pol = read_policy(policy)
    mean = loaded.mean or [0.0] * loaded.in_channels
    std = loaded.std or [1.0] * loaded.in_channels
    result = reconstruction_attack(
        loaded.model,
        cohort,
        defences=ds,
        mean=mean,
        std=std,
        image_size=loaded.image_size,
        trials=trials,
        settings=InversionSettings(steps=steps, seed=seed, restarts=restarts),
        seed=seed,
    )
    section = reconstruction_section(result, policy=pol, show_images=show_images)
    report = Report(
        sections=[section],
        meta={"title": f"medaudit attack reconstruct — {model.name}", "seed": seed},
    )
    report.save(out)
    return report


@attack_app.command("reconstruct")
def reconstruct(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint the clients train.")],
    data: Annotated[Path, typer.Option("--data", help="Manifest of the clients' images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and audit.json.")],
    defences: Annotated[
        str,
        typer.Option(help="Comma-separated: none, batch:N, steps:K (local SGD steps), dp:EPS."),
    ] = "none,batch:32,dp:8",
    trials: Annotated[int, typer.Option(min=1, help="Clients attacked per defence.")] = 2,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps of the attack.")] = 300,
    restarts: Annotated[
        int, typer.Option(min=1, help="Random starts per client; the best-matching one is kept.")
    ] = 1,
    show_images: Annotated[
        bool, typer.Option(help="Show reconstructions in the report (patients' images).")
    ] = False,
    arch: Annotated[str | None, typer.Option(help="Architecture of a state-dict .pt file.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML with thresholds.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> int:
    """Gradient inversion: exit 0 if every defence held, 1 if one did not, 2 on bad input."""
    report = attack_reconstruct(
        model,
        data,
        out,
        defences=defences,
        trials=trials,
        steps=steps,
        restarts=restarts,
        show_images=show_images,
        arch=arch,
        policy=policy,
        seed=seed,
    )
    sec = report.section("reconstruction")
    typer.echo(sec.summary)
    failed = [c for c in report.checks if c.blocking]
    typer.echo(f"Report written to {out / 'index.html'}.")
    return 1 if failed else 0
