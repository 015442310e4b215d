"""``medaudit audit``: the registered audits on a trained checkpoint → index.html + audit.json.

Besides its own options, ``audit`` accepts every flag a registered audit declares for one
of its settings (``--corruptions chest``), and ``--set AUDIT.KEY=VALUE`` for any setting;
both override the policy file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli._columns import column_map, policy_columns
from medaudit.cli._common import parse_list, read_policy, require_file
from medaudit.cli.app import app

__all__ = [
    "audit",
    "audit_checkpoint",
    "by_finding",
    "operating_point_settings",
    "parse_setting_args",
]

MSG_UNKNOWN_FLAG = "Unknown option {flag!r} for medaudit audit; audit options: {known}."
MSG_FLAG_VALUE = "Option {flag!r} needs a value."
MSG_SET_FORMAT = "--set takes AUDIT.KEY=VALUE (e.g. --set robustness.severity=3); got {text!r}."


def parse_setting_args(args: list[str]) -> dict[str, Any]:
    """Settings from the extra arguments: declared audit flags and ``--set KEY=VALUE``."""
    from medaudit.registry import known_settings, setting_flags
    from medaudit.report import CORE_SETTINGS

    flags = setting_flags()
    declared = known_settings()
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=")
        if flag not in flags and flag != "--set":
            known = ", ".join(sorted([*flags, "--set"]))
            raise InvalidInputError(MSG_UNKNOWN_FLAG.format(flag=flag, known=known))
        if eq:
            value = inline
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise InvalidInputError(MSG_FLAG_VALUE.format(flag=flag))
        if flag == "--set":
            key, eq2, text = value.partition("=")
            if not eq2 or key not in declared:
                if eq2 and key not in declared:
                    core = {s.name for s in CORE_SETTINGS}
                    raise InvalidInputError(
                        f"Unknown setting {key!r}; known: {', '.join(sorted(declared))}"
                        + (" (core settings have no audit prefix)" if key in core else "")
                        + "."
                    )
                raise InvalidInputError(MSG_SET_FORMAT.format(text=value))
            out[key] = declared[key].parse(text)
        else:
            full, setting = flags[flag]
            out[full] = setting.parse(value)
    return out


def operating_point_settings(
    method: str | None, threshold: float | None, target: float | None
) -> dict[str, Any]:
    """The policy settings the operating-point flags of ``audit`` and ``check`` set."""
    out: dict[str, Any] = {}
    for key, value in (
        ("operating_point", method),
        ("operating_threshold", threshold),
        ("target_sensitivity", target),
    ):
        if value is not None:
            out[key] = value
    return out


def audit_checkpoint(
    model: Path,
    data: Path,
    out: Path,
    *,
    train_data: Path | None = None,
    population: Path | None = None,
    sensitive: list[str] | None = None,
    audits: list[str] | None = None,
    policy: Path | None = None,
    settings: dict[str, Any] | None = None,
    arch: str | None = None,
    cache_dir: Path | None = None,
    include_identifiers: bool = False,
    calibration_data: Path | None = None,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = False,
) -> Any:
    """Run the audits on ``model`` over ``data`` and save the report in ``out``."""
    from medaudit._device import resolve_device
    from medaudit.data import load_cohort
    from medaudit.pipeline import load_model_and_predict, run_audits
    from medaudit.registry import check_audit_names

    if audits is not None:
        check_audit_names(audits)  # before any work: an unknown audit is exit 2 at once
    pol = read_policy(policy)
    if settings:
        pol = pol.with_settings(settings, source=f"{pol.source} + command-line settings")
    dev = resolve_device(device)
    cmap = column_map(policy_columns(pol))
    findings = pol.setting("labels.findings") or [None]
    reports = []
    for finding in findings:  # a multi-label manifest: one pass per finding column
        cm = cmap if finding is None else cmap.with_label(finding)
        lp = load_model_and_predict(
            model,
            data,
            arch=arch,
            cache_dir=cache_dir,
            device=dev,
            workers=workers,
            progress=progress,
            columns=cm,
        )
        train = (
            load_cohort(require_file(train_data, "Training manifest"), columns=cm)
            if train_data
            else None
        )
        pop = (
            load_cohort(require_file(population, "Population manifest"), columns=cm)
            if population
            else None
        )
        calibration = None
        if calibration_data is not None:
            calibration = load_model_and_predict(
                model,
                calibration_data,
                arch=arch,
                cache_dir=cache_dir,
                device=dev,
                workers=workers,
                columns=cm,
            ).predictions
        reports.append(
            run_audits(
                lp.predictions,
                lp.cohort,
                audits=audits,
                sensitive=sensitive,
                policy=pol,
                train=train,
                population=pop,
                model=lp.loaded.model,
                model_info={**lp.model_info, "checkpoint": model.name},
                meta={"title": f"medaudit audit — {model.name} on {data.name}"},
                calibration=calibration,
                device=dev,
                cache_dir=cache_dir,
                progress=progress,
            )
        )
    report = reports[0] if findings == [None] else by_finding(reports, findings)
    report.save(out, include_identifiers=include_identifiers)
    return report


def by_finding(reports: list[Any], findings: list[str]) -> Any:
    """One report of several findings' reports: each section once per finding, so named."""
    from dataclasses import replace

    from medaudit.report import Report

    sections = [
        replace(
            sec,
            name=f"{sec.name}[{finding}]",
            title=f"{sec.title} — {finding}",
            checks=[replace(c, id=f"{c.id}[{finding}]") for c in sec.checks],
        )
        for rep, finding in zip(reports, findings, strict=True)
        for sec in rep.sections
    ]
    meta = {**reports[0].meta, "findings": list(findings)}
    return Report(sections=sections, meta=meta)


def _audit_help() -> str:
    """The epilog of ``medaudit audit --help``: every registered audit and its flags."""
    from medaudit.registry import get_audit, list_audits

    lines = ["Registered audits (--audits):", ""]
    for name in list_audits():
        spec = get_audit(name)
        needs = f" [needs: {', '.join(spec.needs)}]" if spec.needs else ""
        lines.append(f"  {name}: {spec.title}{needs}")
        for s in spec.settings:
            if s.flag:
                lines.append(f"      {s.flag} VALUE  {s.help} (default: {s.default!r})")
    lines += ["", "Any setting: --set AUDIT.KEY=VALUE (see `medaudit policy show`)."]
    return "\n\n".join(lines)


def _epilog() -> str:
    try:
        return _audit_help()
    except Exception:  # noqa: BLE001 - help must render even if an audit fails to import
        return ""


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_epilog(),
)
def audit(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Option("--model", help="Checkpoint (.safetensors, .pt, TorchScript).")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz to audit on.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and audit.json.")],
    train_data: Annotated[
        Path | None,
        typer.Option("--train-data", help="Training manifest (patient overlap, privacy)."),
    ] = None,
    population: Annotated[
        Path | None,
        typer.Option(
            "--population",
            help="Manifest of data disjoint from the training data (privacy reference models).",
        ),
    ] = None,
    sensitive: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated attribute columns (default: the demographic columns "
            "present: sex, gender, age_group, race, ethnicity, insurance)."
        ),
    ] = None,
    audits: Annotated[
        str | None,
        typer.Option(help="Comma-separated audits (default: every audit whose inputs are given)."),
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
            help="Manifest of a calibration split (not the audited data): operating points "
            "and the fairness mitigation suggestion are fitted there.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or mps.")
    ] = "cpu",
    workers: Annotated[
        int, typer.Option(min=0, help="Processes decoding images from disk (0: in-process).")
    ] = 0,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            help="fixed (--operating-threshold), youden or sensitivity (--target-sensitivity); "
            "the latter two are chosen on --calibration-data.",
        ),
    ] = None,
    operating_threshold: Annotated[
        float | None,
        typer.Option("--operating-threshold", help="Score >= this is positive (fixed point)."),
    ] = None,
    target_sensitivity: Annotated[
        float | None,
        typer.Option("--target-sensitivity", help="Sensitivity the operating point must reach."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> int:
    """Audit a checkpoint: exit 0, 1 if a critical or major check fails, 2 on bad input."""
    settings = {
        **operating_point_settings(operating_point, operating_threshold, target_sensitivity),
        **parse_setting_args(list(ctx.args)),
    }
    report = audit_checkpoint(
        model,
        data,
        out,
        train_data=train_data,
        population=population,
        # --sensitive "" means no attribute; leaving it out means the default.
        sensitive=None if sensitive is None else (parse_list(sensitive) or []),
        audits=parse_list(audits),
        policy=policy,
        settings=settings,
        arch=arch,
        cache_dir=cache_dir,
        include_identifiers=include_identifiers,
        calibration_data=calibration_data,
        device=device,
        workers=workers,
        progress=progress,
    )
    failed = [c for c in report.checks if c.blocking]
    typer.echo(
        f"Report written to {out / 'index.html'}: "
        + (
            "no critical or major check failed."
            if not failed
            else f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}."
        )
    )
    return 1 if failed else 0
