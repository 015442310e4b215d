"""``medaudit corrupt``: write corrupted copies of a data set plus a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medaudit.cli.app import app

__all__ = ["corrupt"]


@app.command()
def corrupt(
    data: Annotated[
        Path, typer.Option("--data", help="Manifest CSV/Parquet or MedMNIST .npz to corrupt.")
    ],
    corruption: Annotated[
        str,
        typer.Option(
            "--corruption", help="A registered corruption (an unknown name lists them all)."
        ),
    ],
    severity: Annotated[int, typer.Option("--severity", help="Severity, 1 (mild) to 5.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for manifest.csv and images/.")],
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seeds each image's draws with its row.")
    ] = 0,
    bit_depth: Annotated[
        int, typer.Option("--bit-depth", help="PNG depth: 8, or 16 for grayscale images.")
    ] = 8,
) -> None:
    """Corrupt every image of DATA at one severity: OUT/manifest.csv + OUT/images/*.png."""
    from medaudit.cli._common import require_file
    from medaudit.robustness import write_corrupted

    manifest, dropped = write_corrupted(
        require_file(data, "Data file"),
        out,
        corruption=corruption,
        severity=severity,
        seed=seed,
        bit_depth=bit_depth,
    )
    note = f" ({dropped} unreadable row(s) left out)" if dropped else ""
    typer.echo(f"Wrote {corruption} at severity {severity} to {manifest.as_posix()}{note}")
