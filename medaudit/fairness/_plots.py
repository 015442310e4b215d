"""Figures of the fairness section.

Per-group ROC curves, error rates with CIs, threshold sweeps, and a full-width forest
plot of the gaps, one panel per metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medaudit.report import Check, Figure  # noqa: E402
from medaudit.report._plots import (  # noqa: E402
    dot_whisker_figure,
    sweep,
    threshold_sweep_figure,
)

__all__ = ["forest_plot", "rates_figure", "roc_figure", "sweep_figure"]


def roc_figure(
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    aucs: dict[str, dict[str, float]],
    *,
    attribute: str,
) -> Figure:
    """ROC curves per group, one panel per class; the legend gives each group's AUROC.

    Parameters
    ----------
    curves : dict of class name to dict of group to (fpr, tpr)
    aucs : dict of class name to dict of group to AUROC
    attribute : str
    """
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
    alt_parts = []
    for ax, (cls, by_group) in zip(axes[0], curves.items(), strict=False):
        for grp, (fpr, tpr) in by_group.items():
            ax.plot(fpr, tpr, lw=1.5, label=f"{grp} (AUROC {aucs[cls][grp]:.3f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate (sensitivity)")
        ax.set_title(cls if n > 1 else f"ROC by {attribute}")
        if by_group:
            ax.legend(
                fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False
            )
        else:
            ax.text(0.5, 0.5, "no group large enough", ha="center", va="center", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if by_group:
            lo = min(by_group, key=lambda g: aucs[cls][g])
            hi = max(by_group, key=lambda g: aucs[cls][g])
            alt_parts.append(
                f"{cls}: {len(by_group)} groups, AUROC from {aucs[cls][lo]:.3f} ({lo}) "
                f"to {aucs[cls][hi]:.3f} ({hi})"
            )
    fig.tight_layout()
    alt = f"ROC curves of each {attribute} group. " + "; ".join(alt_parts) + "."
    return Figure.from_matplotlib(fig, alt=alt)


def rates_figure(gm: object, attribute: str) -> Figure:
    """Sensitivity, false positive and false negative rate of each group, with CIs."""
    t = gm.by_group(attribute)  # type: ignore[attr-defined]
    t = t[t["status"] == "ok"]
    ov = gm.overall.set_index("metric")["value"]  # type: ignore[attr-defined]
    panels, ref = {}, {}
    for metric, title in (
        ("true_positive_rate", "sensitivity (TPR)"),
        ("false_negative_rate", "false negative rate"),
        ("false_positive_rate", "false positive rate"),
    ):
        panels[title] = [
            (str(r["group"]), float(r[metric]), float(r[f"{metric}_ci_low"]),
             float(r[f"{metric}_ci_high"]))
            for _, r in t.iterrows()
        ]  # fmt: skip
        ref[title] = float(ov.get(metric, float("nan")))
    return dot_whisker_figure(
        panels, title=f"Error rates per {attribute} group at the operating point", reference=ref
    )


def sweep_figure(
    panels: dict[str, tuple[np.ndarray, np.ndarray]], *, attribute: str, threshold: float
) -> Figure:
    """Sensitivity and specificity of each group as the operating threshold moves."""
    grid = np.linspace(0, 1, 201)
    curves = {}
    for g, (y, s) in panels.items():
        sens, spec = sweep(np.asarray(y), np.asarray(s), grid)
        curves[g] = (grid, sens, spec)
    return threshold_sweep_figure(
        curves, threshold=threshold, title=f"Threshold sweep per {attribute} group"
    )


_PANELS = (
    ("auroc_gap", "AUROC gap"),
    ("fnr_gap", "false-negative-rate gap"),
    ("underdiagnosis_gap", "underdiagnosis gap"),
    ("equalized_odds_difference", "equalized-odds difference"),
    ("demographic_parity_difference", "demographic-parity difference"),
    ("ece_gap", "ECE gap"),
)


def forest_plot(checks: Sequence[Check], *, title: str = "Fairness gaps") -> Figure:
    """Point estimate and CI of every gap check with its threshold, one panel per metric.

    Rows are the attributes (and intersections); skipped checks are left out; the alt text
    lists how many were drawn and which failed.
    """
    drawn = [c for c in checks if c.status != "skipped" and c.value is not None]
    panels = []
    for suffix, name in _PANELS:
        rows = [c for c in drawn if c.id.endswith("." + suffix)]
        if rows:
            panels.append((name, rows))
    other = [c for c in drawn if not any(c.id.endswith("." + s) for s, _ in _PANELS)]
    if other:
        panels.append(("other", other))
    n_rows = max((len(r) for _, r in panels), default=1)
    ncols = min(3, max(1, len(panels)))
    nrows = math.ceil(max(1, len(panels)) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.3 * ncols, (0.42 * n_rows + 1.3) * nrows), squeeze=False
    )
    colors = {"pass": "#2b7a3d", "inconclusive": "#b7791f", "fail": "#c53030"}
    for ax, (name, rows) in zip(axes.flat, panels, strict=False):
        for i, c in enumerate(rows):
            y = len(rows) - 1 - i
            if c.ci is not None and all(math.isfinite(v) for v in c.ci):
                ax.plot(c.ci, [y, y], color=colors[c.status], lw=2)
            ax.plot([c.value], [y], "o", color=colors[c.status], ms=5)
            if c.threshold is not None:
                ax.plot([c.threshold, c.threshold], [y - 0.4, y + 0.4], color="0.2", lw=1.2)
        ax.axvline(0, color="0.7", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([_row_label(c) for c in reversed(rows)], fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="0.93")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{title}: point estimate and 95% CI (green pass, amber inconclusive, red fail); "
        "black tick = policy threshold",
        fontsize=9,
    )
    fig.tight_layout()
    failed = [c.id for c in drawn if c.status == "fail"]
    alt = (
        f"Forest plot of {len(drawn)} fairness gaps with 95% confidence intervals and their "
        f"policy thresholds, one panel per metric; {len(failed)} exceed the threshold"
        + (f" ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})." if failed else ".")
    )
    return Figure.from_matplotlib(fig, alt=alt, wide=True)


def _row_label(c: Check) -> str:
    parts = c.id.split(".")
    label = ".".join(parts[1:-1]) if len(parts) > 2 else c.id
    return label.replace("&", " × ")
