"""``medaudit federate``: federated training (or a federated audit) of a multi-site manifest.

Runs Flower's simulation engine with one virtual site per value of ``--site-column`` (or
a Dirichlet partition), shows each round's per-site AUROC and who dropped, and writes
``model.safetensors``, ``index.html`` and ``audit.json`` to ``--out``. Exit codes: 0 all
checks pass, 1 a critical or major check failed, 2 bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit._errors import InvalidInputError
from medaudit.cli._common import parse_list, read_policy, require_file
from medaudit.cli.app import app

__all__ = ["federate", "federate_manifest", "settings_from_options"]

MSG_ROUNDS = "--rounds must be at least 1 (got {rounds})."
MSG_AUDIT_ONLY_MODEL = "--audit-only needs the model to audit: --model CHECKPOINT."
MSG_MODEL_WITHOUT_AUDIT = "--model is the checkpoint of --audit-only; to start from it use --init."
MSG_DIRICHLET = "--dirichlet-alpha and --n-sites go together (a simulated Dirichlet partition)."
MSG_DP_PAIR = "--client-dp-noise and --client-dp-clip go together (client-level DP)."
MSG_OUT_IS_FILE = "--out must be a folder, but {out} is a file."


def settings_from_options(**opts: Any) -> Any:
    """A validated :class:`~medaudit.federated.FederatedSettings` from CLI options."""
    from medaudit.federated import ClientDP, FederatedSettings, SampleDP, get_strategy

    if opts["rounds"] < 1:
        raise InvalidInputError(MSG_ROUNDS.format(rounds=opts["rounds"]))
    strategies = parse_list(opts.pop("strategy")) or ["fedavg"]
    for name in strategies:
        get_strategy(name)
    noise, clip = opts.pop("client_dp_noise"), opts.pop("client_dp_clip")
    delta, clipping = opts.pop("client_dp_delta"), opts.pop("client_dp_clipping")
    if (noise is None) != (clip is None):
        raise InvalidInputError(MSG_DP_PAIR)
    dp = None if noise is None else ClientDP(noise, clip, delta=delta, clipping=clipping)
    s_noise, s_clip = opts.pop("sample_dp_noise", None), opts.pop("sample_dp_clip", 1.0)
    s_delta = opts.pop("sample_dp_delta", 1e-5)
    sdp = None if s_noise is None else SampleDP(s_noise, s_clip, delta=s_delta)
    return FederatedSettings(strategies=tuple(strategies), client_dp=dp, sample_dp=sdp, **opts)


class _Progress:
    """Rich progress on stderr: a bar over the rounds and one line per finished round."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.advance: Callable[[int], None] = lambda n: None
        self.console: Any = None

    @contextmanager
    def show(self) -> Iterator[_Progress]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(file=sys.stderr)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as prog:
            task = prog.add_task("Federated rounds", total=self.total)
            self.advance = lambda n: prog.advance(task, n)
            yield self

    def stage(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{text}…[/dim]")

    def round(self, rec: Any) -> None:
        if self.console is not None:
            aucs = " · ".join(f"{s} {v:.3f}" for s, v in sorted(rec.eval_auroc.items()))
            dropped = ", ".join(rec.dropped) or "none"
            state = "" if rec.aggregated else f" [yellow]({rec.note})[/yellow]"
            head = f"{rec.strategy} round {rec.round}"
            self.console.print(f"{head}: AUROC {aucs or 'n/a'}; dropped: {dropped}{state}")
        self.advance(1)


def federate_manifest(
    data: Path,
    out: Path,
    *,
    settings: Any,
    site_column: str = "site",
    dirichlet_alpha: float | None = None,
    n_sites: int | None = None,
    skew_by: str = "label",
    sensitive: list[str] | None = None,
    init: Path | None = None,
    audit_model: Path | None = None,
    centralised: bool = True,
    policy: Path | None = None,
    cpus: int | None = None,
    progress: bool = False,
) -> Any:
    """Load the manifest, partition it into sites and run :func:`medaudit.federated.federate`."""
    from medaudit.data import dirichlet_partition, load_cohort, partition_by_site
    from medaudit.federated import federate, require_flower

    require_flower()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(MSG_OUT_IS_FILE.format(out=out))
    pol = read_policy(policy)
    cohort = load_cohort(require_file(data, "Manifest"))
    if (dirichlet_alpha is None) != (n_sites is None):
        raise InvalidInputError(MSG_DIRICHLET)
    if dirichlet_alpha is not None and n_sites is not None:
        partition = dirichlet_partition(
            cohort, n_sites=n_sites, alpha=dirichlet_alpha, by=skew_by, random_state=settings.seed
        )
    else:
        partition = partition_by_site(cohort, column=site_column)
    strategies = len(settings.strategies)
    bar = _Progress(0 if audit_model else settings.rounds * strategies, progress)
    with bar.show():
        return federate(
            cohort,
            settings=settings,
            partition=partition,
            sensitive=sensitive,
            init=init,
            audit_model=audit_model,
            centralised=centralised,
            policy=pol,
            out=out,
            on_round=bar.round,
            on_stage=bar.stage,
            cpus=cpus,
        )


@app.command()
def federate(
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet of all sites.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for model.safetensors, index.html, audit.json.")
    ],
    site_column: Annotated[
        str, typer.Option("--site-column", help="Column naming each image's site.")
    ] = "site",
    rounds: Annotated[int, typer.Option(help="Federated rounds (>= 1).")] = 5,
    strategy: Annotated[
        str,
        typer.Option(
            help="fedavg, fedprox, fedmedian, krum, fedtrimmedavg or multikrum; several "
            "(comma-separated) "
            "run from the same start and are compared; the first one's model is saved."
        ),
    ] = "fedavg",
    local_epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size at the sites.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate at the sites.")] = 1e-3,
    arch: Annotated[str, typer.Option(help="Architecture from the zoo.")] = "small_cnn",
    image_size: Annotated[
        int | None, typer.Option(min=8, help="Train at this size (default: as stored).")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Checkpoint to start from (pretrained init).")
    ] = None,
    proximal_mu: Annotated[float, typer.Option(min=0.0, help="FedProx's mu.")] = 0.01,
    trimmed_beta: Annotated[
        float,
        typer.Option(
            help="FedTrimmedAvg's beta in [0, 0.5): the share of sites dropped at each end "
            "of every coordinate (0.25 drops one of four)."
        ),
    ] = 0.25,
    krum_malicious: Annotated[
        int,
        typer.Option(min=0, help="Sites Krum and Multi-Krum assume may be malicious (f)."),
    ] = 1,
    krum_select: Annotated[
        int,
        typer.Option(min=0, help="Updates Multi-Krum averages (0: all but --krum-malicious)."),
    ] = 0,
    min_sites: Annotated[
        int, typer.Option(min=1, help="Fewest replies with which a round is aggregated.")
    ] = 2,
    round_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the sites in a round.")
    ] = 600.0,
    on_bad_site: Annotated[
        str,
        typer.Option(
            help="A site without positives or negatives: 'skip' it (named in the report) "
            "or 'stop' with an error."
        ),
    ] = "skip",
    dirichlet_alpha: Annotated[
        float | None,
        typer.Option(help="Simulate sites by Dirichlet skew of --skew-by (with --n-sites)."),
    ] = None,
    n_sites: Annotated[
        int | None, typer.Option(min=2, help="Sites of the Dirichlet partition.")
    ] = None,
    skew_by: Annotated[
        str, typer.Option(help="Column the Dirichlet partition skews (label or an attribute).")
    ] = "label",
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated attribute columns of the federated audit.")
    ] = None,
    client_dp_noise: Annotated[
        float | None, typer.Option(help="Client-level DP noise multiplier (with --client-dp-clip).")
    ] = None,
    client_dp_clip: Annotated[
        float | None, typer.Option(help="Client-level DP clipping norm of a site's update.")
    ] = None,
    client_dp_delta: Annotated[float, typer.Option(help="Client-level DP delta.")] = 1e-5,
    client_dp_clipping: Annotated[
        str, typer.Option(help="Where updates are clipped: server or client.")
    ] = "server",
    sample_dp_noise: Annotated[
        float | None,
        typer.Option(help="Sample-level DP: DP-SGD noise multiplier at every site."),
    ] = None,
    sample_dp_clip: Annotated[
        float, typer.Option(help="Sample-level DP: per-image gradient clipping norm.")
    ] = 1.0,
    sample_dp_delta: Annotated[float, typer.Option(help="Sample-level DP delta.")] = 1e-5,
    audit_only: Annotated[
        bool, typer.Option("--audit-only", help="Only audit --model across the sites.")
    ] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="Checkpoint audited by --audit-only.")
    ] = None,
    audit_noise: Annotated[
        float | None,
        typer.Option(help="Epsilon of Laplace noise each site adds to its audit statistics."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Operating threshold of the federated audit.")
    ] = 0.5,
    centralised: Annotated[
        bool, typer.Option(help="Also train centrally on the pooled data for comparison.")
    ] = True,
    local_baseline: Annotated[
        bool, typer.Option(help="Also train a local-only model at every site.")
    ] = True,
    policy: Annotated[Path | None, typer.Option(help="Policy TOML with thresholds.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of splits, training and audit.")] = 0,
    cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs the simulation may use (default: all).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> int:
    """Federated training across the sites of a manifest (Flower simulation), or an audit."""
    if audit_only and model is None:
        raise InvalidInputError(MSG_AUDIT_ONLY_MODEL)
    if model is not None and not audit_only:
        raise InvalidInputError(MSG_MODEL_WITHOUT_AUDIT)
    settings = settings_from_options(
        rounds=rounds,
        strategy=strategy,
        local_epochs=local_epochs,
        batch_size=batch_size,
        lr=lr,
        arch=arch,
        image_size=image_size,
        proximal_mu=proximal_mu,
        trimmed_beta=trimmed_beta,
        krum_malicious=krum_malicious,
        krum_select=krum_select,
        min_sites=min_sites,
        round_timeout=round_timeout,
        on_bad_site=on_bad_site,
        threshold=threshold,
        audit_noise=audit_noise,
        local_baseline=local_baseline,
        seed=seed,
        client_dp_noise=client_dp_noise,
        client_dp_clip=client_dp_clip,
        client_dp_delta=client_dp_delta,
        client_dp_clipping=client_dp_clipping,
        sample_dp_noise=sample_dp_noise,
        sample_dp_clip=sample_dp_clip,
        sample_dp_delta=sample_dp_delta,
    )
    result = federate_manifest(
        data,
        out,
        settings=settings,
        site_column=site_column,
        dirichlet_alpha=dirichlet_alpha,
        n_sites=n_sites,
        skew_by=skew_by,
        sensitive=None if sensitive is None else (parse_list(sensitive) or []),
        init=init,
        audit_model=model if audit_only else None,
        centralised=centralised,
        policy=policy,
        cpus=cpus,
        progress=progress,
    )
    failed = [c for c in result.report.checks if c.blocking]
    typer.echo(
        f"Report written to {out / 'index.html'}"
        + ("" if audit_only else f", model to {out / 'model.safetensors'}")
        + ": "
        + (
            "no critical or major check failed."
            if not failed
            else f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}."
        )
    )
    return 1 if failed else 0
