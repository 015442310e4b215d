"""``medaudit power``: how much data a gap check needs (``medaudit.stats.required_sample_size``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from medaudit.cli.app import app

__all__ = ["power"]


@app.command()
def power(
    gap: Annotated[float, typer.Option("--gap", help="True gap to detect, e.g. 0.05.")],
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="auroc, true_positive_rate, false_positive_rate, false_negative_rate, "
            "true_negative_rate, underdiagnosis_rate, selection_rate or prevalence.",
        ),
    ] = "auroc",
    baseline: Annotated[
        float, typer.Option("--baseline", help="The metric in the better group.")
    ] = 0.85,
    prevalence: Annotated[
        float, typer.Option("--prevalence", help="Share of images with the finding.")
    ] = 0.3,
    groups: Annotated[int, typer.Option("--groups", help="Groups compared.")] = 2,
    margin: Annotated[
        float,
        typer.Option(
            "--margin",
            help="0: the CI must exclude 0 (detect the gap); otherwise the check's threshold "
            "the CI must clear.",
        ),
    ] = 0.0,
    power_: Annotated[float, typer.Option("--power", help="Probability of deciding.")] = 0.8,
    confidence: Annotated[float, typer.Option("--confidence", help="CI level.")] = 0.95,
    images_per_patient: Annotated[
        float, typer.Option("--images-per-patient", help="Mean images per patient.")
    ] = 1.0,
    icc: Annotated[
        float, typer.Option("--icc", help="Correlation between a patient's images.")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> int:
    """Patients per group needed to detect a gap of --gap (or to decide it against --margin)."""
    from medaudit.stats import required_sample_size

    res = required_sample_size(
        metric,
        gap=gap,
        baseline=baseline,
        prevalence=prevalence,
        n_groups=groups,
        margin=margin,
        confidence=confidence,
        power=power_,
        images_per_patient=images_per_patient,
        icc=icc,
    )
    typer.echo(json.dumps(asdict(res), indent=1) if as_json else str(res))
    return 0
