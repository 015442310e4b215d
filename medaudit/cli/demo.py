"""``medaudit demo``: the whole tool on the embedded synthetic hospitals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medaudit.cli.app import app

__all__ = ["demo"]


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for index.html, audit.json and the model.")
    ] = Path("medaudit-demo"),
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the patients (the four hospitals stay the same), training and bootstrap."
        ),
    ] = 0,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller data and fewer epochs (a smoke test).")
    ] = False,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu, cuda or mps.")
    ] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> int:
    """Generate synthetic hospitals, train a small CNN, run every audit, write the report.

    The synthetic data plant a site-marker shortcut and a hard-to-diagnose subgroup on
    purpose, so failing checks in the demo report are expected: they show the audits
    finding what was planted. The command exits 0 once the report is written.
    """
    from medaudit.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()
    result = run_demo(out, seed=seed, settings=settings, progress=progress, device=device)
    checks = result.report.checks
    counts = {
        s: sum(c.status == s for c in checks) for s in ("pass", "fail", "inconclusive", "skipped")
    }
    typer.echo(
        f"Report written to {result.out_dir / 'index.html'} and {result.out_dir / 'audit.json'} "
        f"in {result.seconds:.0f} s: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['inconclusive']} inconclusive, {counts['skipped']} skipped "
        "(the synthetic hospitals plant a shortcut and a hard subgroup on purpose)."
    )
    return 0
