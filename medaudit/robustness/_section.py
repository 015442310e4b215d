"""The robustness audit as a report :class:`~medaudit.report.Section`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medaudit.report import Check, Figure, Policy, Section
from medaudit.robustness._plots import degradation_curves, drop_heatmap, severity_strip
from medaudit.robustness._presets import SweepPlan
from medaudit.robustness._subgroups import GroupSettings, acquisition_shift, subgroup_drops
from medaudit.robustness._sweep import SweepResult, score_sweep
from medaudit.stats import bootstrap_counts

__all__ = ["REFERENCES", "SweepInputs", "robustness_section"]

REFERENCES = [
    "Hendrycks D, Dietterich T. Benchmarking neural network robustness to common corruptions "
    "and perturbations. ICLR 2019 (ImageNet-C; CE, relative CE, mCE).",
    "Di Salvo F, Doerrich S, Ledig C. MedMNIST-C: Comprehensive benchmark and improved "
    "classifier robustness by simulating realistic image corruptions. arXiv:2406.17536, 2024.",
    "Pérez-García F, Sparks R, Ourselin S. TorchIO: a Python library for efficient loading, "
    "preprocessing, augmentation and patch-based sampling of medical images in deep learning. "
    "Comput Methods Programs Biomed 208:106236, 2021 (bias field, ghosting).",
    "Tellez D, Litjens G, Bándi P, et al. Quantifying the effects of data augmentation and "
    "stain color normalization in convolutional neural networks for computational pathology. "
    "Med Image Anal 58:101544, 2019 (stain shift).",
    "Efron B, Tibshirani R. An Introduction to the Bootstrap. Chapman & Hall, 1993.",
]

METHODS = (
    "Every corruption is applied at five severities to every audited image on its way to "
    "the model (at the model's input size, before normalisation), batch by batch; the "
    "corrupted images are never stored. Per cell: AUROC, balanced error (one minus the mean "
    "per-class recall) and ECE. Corruption error (CE) and relative CE follow ImageNet-C on "
    "balanced error, as MedMNIST-C does, against a reference model when one is given and "
    "otherwise against the audited model's own clean error; mCE averages CE over the "
    "corruptions. All intervals are percentile bootstraps that resample whole patients "
    "within each class (and group), shared by the clean and corrupted passes, so drops are "
    "paired. Per patient group, the AUROC drop under each corruption is compared with the "
    "rest of the cohort's (excess drop) and with the clean gap between them (gap widening)."
)


# Why mCE could not be computed, by what CE is measured against.
MSG_NO_MCE = {
    "clean model": "the clean balanced error is 0, so CE against the clean model is "
    "undefined; give --reference-model to measure CE against a reference",
    "reference model": "the reference model's errors do not grow under these corruptions, "
    "so CE against it is undefined",
}


@dataclass(frozen=True)
class SweepInputs:
    """What the section is built from: one clean pass and one pass per cell."""

    labels: np.ndarray
    clean: np.ndarray
    cells: dict[tuple[str, int], np.ndarray]
    plan: SweepPlan
    meta: pd.DataFrame
    sensitive: Sequence[str] = ()
    reference: tuple[np.ndarray, dict[tuple[str, int], np.ndarray]] | None = None
    strip: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notes: Sequence[str] = ()


def _group_settings(policy: Policy) -> GroupSettings:
    return GroupSettings(
        n_boot=int(policy.setting("n_bootstrap")),
        seed=int(policy.setting("seed")),
        confidence=float(policy.setting("confidence")),
        min_group_size=int(policy.setting("min_group_size")),
        min_class_count=int(policy.setting("min_class_count")),
    )


def robustness_section(
    inputs: SweepInputs, *, policy: Policy, severity: int = 3, threshold: float = 0.5
) -> Section:
    """Sweep tables, subgroup drops, acquisition shift, figures and checks.

    Parameters
    ----------
    inputs : SweepInputs
    policy : Policy
        Thresholds of ``robustness.*.auroc_drop`` and ``robustness.mce``, bootstrap settings.
    severity : int
        The severity the checks and the subgroup table look at.
    threshold : float
        Operating point of a binary model's balanced error.
    """
    gs = _group_settings(policy)
    meta = inputs.meta
    clusters = meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None
    W = bootstrap_counts(inputs.labels, n_boot=gs.n_boot, random_state=gs.seed, clusters=clusters)
    result = score_sweep(
        inputs.labels,
        inputs.clean,
        inputs.cells,
        inputs.plan,
        W,
        confidence=gs.confidence,
        threshold=threshold,
        reference=inputs.reference,
    )
    at_sev = {p.name: inputs.cells[(p.name, severity)] for p in inputs.plan.corruptions}
    groups = subgroup_drops(
        inputs.labels,
        inputs.clean,
        at_sev,
        meta,
        [a for a in inputs.sensitive if a in meta.columns],
        severity=severity,
        settings=gs,
        clusters=clusters,
    )
    shift = acquisition_shift(inputs.labels, inputs.clean, meta, settings=gs, clusters=clusters)
    checks = _checks(result, inputs.plan, policy, severity, gs.confidence)
    tables = {
        "sweep": result.sweep,
        "corruption_errors": result.corruption_errors,
        "overall": result.overall,
        "subgroups": groups,
    }
    if shift is not None:
        tables["acquisition_shift"] = shift
    return Section(
        name="robustness",
        title="Robustness to image corruption",
        summary=_summary(result, checks, groups, shift, severity, gs.confidence),
        tables=tables,
        figures=_figures(result, inputs.strip),
        checks=checks,
        notes=_notes(result, inputs, gs, severity),
        references=REFERENCES,
        methods=METHODS,
    )


def _checks(
    result: SweepResult, plan: SweepPlan, policy: Policy, severity: int, confidence: float
) -> list[Check]:
    checks: list[Check] = []
    ref = result.reference
    mce_desc = (
        f"Mean corruption error (mCE, balanced error against the {ref}) over "
        f"{len(plan.corruptions)} corruption(s)"
    )
    if result.mce is not None and not math.isfinite(result.mce.value):
        checks.append(policy.skipped("robustness.mce", mce_desc, MSG_NO_MCE[ref]))
    elif result.mce is not None:
        checks.append(
            policy.judge(
                "robustness.mce",
                mce_desc,
                result.mce.value,
                ci=result.mce.ci(confidence),
                advice="Errors grow under corrupted images: train with these corruptions as "
                "augmentation (MedMNIST-C shows it helps) and check acquisition quality.",
            )
        )
    for p in plan.corruptions:
        cid = f"robustness.{p.name}.auroc_drop"
        desc = f"AUROC drop under {p.name} at severity {severity}"
        drop = result.drops[(p.name, severity)]
        if not math.isfinite(result.clean_auroc.value):
            checks.append(policy.skipped(cid, desc, "the clean AUROC could not be computed"))
            continue
        checks.append(
            policy.judge(
                cid,
                desc,
                drop.value,
                ci=drop.ci(confidence),
                advice=f"The model breaks under {p.name}: add it to training augmentation, "
                "or screen incoming images for it before they reach the model.",
            )
        )
    return checks


def _figures(result: SweepResult, strip: dict[str, list[np.ndarray]]) -> dict[str, Figure]:
    figs = {
        "heatmap": drop_heatmap(result.sweep, clean_auroc=result.clean_auroc.value),
        "degradation_curves": degradation_curves(
            result.sweep, clean_auroc=result.clean_auroc.value
        ),
    }
    if strip:
        figs["severity_strip"] = severity_strip(strip)
    return figs


def _summary(
    result: SweepResult,
    checks: list[Check],
    groups: pd.DataFrame,
    shift: pd.DataFrame | None,
    severity: int,
    confidence: float,
) -> str:
    sweep = result.sweep
    n = sweep["corruption"].nunique()
    clean = result.clean_auroc.value
    if not math.isfinite(clean) or sweep["auroc"].isna().all():
        return f"Swept {n} corruption(s) × 5 severities; the AUROC could not be computed."
    worst = sweep.loc[sweep["auroc"].idxmin()]
    parts = [
        f"Across {n} corruption(s) × 5 severities the AUROC falls from {clean:.2f} (clean) to "
        f"as low as {worst['auroc']:.2f} ({worst['corruption']}, severity "
        f"{int(worst['severity'])})."
    ]
    drops = [c for c in checks if c.id.endswith(".auroc_drop") and c.threshold is not None]
    broken = [c.id.split(".")[1] for c in drops if c.status == "fail"]
    if broken:
        parts.append(
            f"At severity {severity} the model breaks under {', '.join(broken)} (the AUROC "
            "drop exceeds the policy threshold)."
        )
    elif drops:
        parts.append(
            f"At severity {severity} no corruption costs more than {drops[0].threshold:g} "
            "AUROC beyond doubt."
        )
    parts += _subgroup_sentence(groups)
    parts += _shift_sentence(shift, result, confidence)
    return " ".join(parts)


def _subgroup_sentence(groups: pd.DataFrame) -> list[str]:
    ok = groups[groups["status"] == "ok"] if not groups.empty else groups
    if ok.empty:
        return []
    out = []
    # The group that is worst off on clean images, for the attribute where that is clearest.
    worst = ok.loc[ok["gap_clean"].idxmax()]
    if worst["gap_clean_ci_low"] > 0:  # worse than the rest beyond doubt
        rows = ok[(ok["attribute"] == worst["attribute"]) & (ok["group"] == worst["group"])]
        wider = sorted(rows.loc[rows["gap_widening_ci_low"] > 0, "corruption"])
        narrower = sorted(rows.loc[rows["gap_widening_ci_high"] < 0, "corruption"])
        change = " and ".join(
            [f"widens under {', '.join(wider)}"] * bool(wider)
            + [f"narrows under {', '.join(narrower)}"] * bool(narrower)
        )
        out.append(
            f"The {worst['group']} group ({worst['attribute']}) is the worst off on clean "
            f"images (AUROC {worst['auroc_clean']:.2f}, {worst['gap_clean']:.2f} below the "
            f"rest); its gap {change or 'does not change clearly under any corruption'}."
        )
    more = ok[ok["excess_drop_ci_low"] > 0]
    if more.empty:
        return [*out, "No patient group loses clearly more AUROC than the rest."]
    top = more.sort_values("excess_drop", ascending=False)
    first = top.iloc[0]
    same = (top["attribute"] == first["attribute"]) & (top["group"] == first["group"])
    names = sorted(set(top.loc[same, "corruption"]))
    return [
        *out,
        f"The {first['group']} group ({first['attribute']}) loses more AUROC than the rest "
        f"under {', '.join(names)} (excess drop up to {first['excess_drop']:.2f}).",
    ]


def _shift_sentence(
    shift: pd.DataFrame | None, result: SweepResult, confidence: float
) -> list[str]:
    if shift is None or "auroc_drop" not in shift.columns:
        return []
    held = shift[shift["held_out"] & (shift["status"] == "ok")]
    if held.empty:
        return []
    row = held.iloc[0]
    sweep = result.sweep.dropna(subset=["auroc_drop"])
    near = (
        sweep.iloc[int(np.argmin(np.abs(sweep["auroc_drop"] - row["auroc_drop"])))]
        if len(sweep)
        else None
    )
    like = (
        f", about as much as {near['corruption']} at severity {int(near['severity'])}"
        if near is not None
        else ""
    )
    return [
        f"The held-out site {row['site']} loses {row['auroc_drop']:.2f} AUROC against the other "
        f"sites ({confidence:.0%} CI {row['auroc_drop_ci_low']:.2f} to "
        f"{row['auroc_drop_ci_high']:.2f}){like}."
    ]


def _notes(result: SweepResult, inputs: SweepInputs, gs: GroupSettings, severity: int) -> list[str]:
    notes = [
        f"Corruption error is measured against the {result.reference}"
        + (
            "; without --reference-model, CE = mean balanced error under the corruption "
            "divided by the clean balanced error (1 = no loss)."
            if result.reference == "clean model"
            else " given with --reference-model, on the same corrupted images."
        ),
        f"Checks and the subgroup table look at severity {severity} "
        "(policy: [settings.robustness] severity).",
        f"{gs.confidence:.0%} CIs: {gs.n_boot} bootstrap resamples of whole patients within "
        "each class (and group).",
        "Random corruptions are seeded per image by its row and the policy seed; the five "
        "severities of a corruption reuse the same draws, so they differ only in strength.",
        "Corruptions: "
        + "; ".join(f"{p.name} ({p.corruption.source or 'user'})" for p in inputs.plan.corruptions)
        + ".",
    ]
    if inputs.plan.left_out:
        notes.append(
            "Left out (the images cannot take them): " + ", ".join(inputs.plan.left_out) + "."
        )
    return notes + list(inputs.notes)
