"""``medaudit synth``: write the synthetic hospitals as PNG files plus a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from medaudit.cli.app import app

__all__ = ["synth", "synth_summary"]


def synth_summary(manifest: Path, meta: pd.DataFrame) -> str:
    """One line describing what ``medaudit synth`` wrote.

    Examples
    --------
    >>> meta = pd.DataFrame({"label": [0, 1, 1], "site": ["site_A", "site_A", "site_B"],
    ...                      "patient_id": ["a", "a", "b"],
    ...                      "split": ["train", "train", "external"]})
    >>> synth_summary(Path("m.csv"), meta)
    'Wrote 3 images of 2 patients from 2 sites (67% positive; train 2, external 1) to m.csv'
    """
    splits = meta["split"].value_counts()
    order = [s for s in ("train", "val", "test", "external") if s in splits.index]
    parts = ", ".join(f"{s} {int(splits[s])}" for s in order)
    return (
        f"Wrote {len(meta)} images of {meta['patient_id'].nunique()} patients from "
        f"{meta['site'].nunique()} sites ({meta['label'].mean():.0%} positive; {parts}) "
        f"to {manifest.as_posix()}"
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder for manifest.csv and images/.")],
    sites: Annotated[
        int, typer.Option("--sites", min=1, max=26, help="Number of hospital sites.")
    ] = 4,
    patients: Annotated[
        int, typer.Option("--patients", min=1, help="Patients per site (1-3 studies each).")
    ] = 200,
    size: Annotated[
        int, typer.Option("--size", min=16, max=1024, help="Image height and width in pixels.")
    ] = 64,
    shortcut_strength: Annotated[
        float,
        typer.Option(
            "--shortcut-strength",
            min=0.0,
            max=1.0,
            help="How strongly the site marker tracks the label in the training sites (0-1).",
        ),
    ] = 0.0,
    heldout_site: Annotated[
        str,
        typer.Option(
            "--heldout-site",
            help="Site kept out of training (split 'external'): 'last', a site name, or 'none'.",
        ),
    ] = "last",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed.")] = 0,
) -> None:
    """Generate synthetic chest-radiograph hospitals: DIR/manifest.csv + DIR/images/."""
    from medaudit.data.synthetic import write_synthetic

    manifest = write_synthetic(
        out,
        n_sites=sites,
        patients_per_site=patients,
        image_size=size,
        shortcut_strength=shortcut_strength,
        heldout_site=None if heldout_site.lower() == "none" else heldout_site,
        seed=seed,
    )
    meta = pd.read_csv(manifest, usecols=["label", "site", "patient_id", "split"])
    typer.echo(synth_summary(manifest, meta))
