"""Figures of the fairness section: per-group ROC curves and a forest plot of gaps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medaudit.report import Check, Figure  # noqa: E402

__all__ = ["forest_plot", "roc_figure"]


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
            ax.legend(fontsize=7, loc="lower right")
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


def forest_plot(checks: Sequence[Check], *, title: str = "Fairness gaps") -> Figure:
    """Point estimate and CI of every gap check, with its policy threshold.

    Skipped checks are left out; the alt text lists how many were drawn and which failed.
    """
    drawn = [c for c in checks if c.status != "skipped" and c.value is not None]
    height = max(2.0, 0.32 * len(drawn) + 1.0)
    fig, ax = plt.subplots(figsize=(7.5, height))
    colors = {"pass": "#2b7a3d", "inconclusive": "#b7791f", "fail": "#c53030"}
    for i, c in enumerate(drawn):
        y = len(drawn) - 1 - i
        if c.ci is not None and all(math.isfinite(v) for v in c.ci):
            ax.plot(c.ci, [y, y], color=colors[c.status], lw=2)
        ax.plot(
            [float("nan") if c.value is None else c.value], [y], "o", color=colors[c.status], ms=5
        )
        if c.threshold is not None:
            ax.plot([c.threshold, c.threshold], [y - 0.4, y + 0.4], color="0.2", lw=1)
    ax.axvline(0, color="0.7", lw=0.8, ls="--")
    ax.set_yticks(range(len(drawn)))
    ax.set_yticklabels([c.id.removeprefix("fairness.") for c in reversed(drawn)], fontsize=7)
    ax.set_xlabel("gap (point estimate, 95% CI; black tick = policy threshold)")
    ax.set_title(title)
    fig.tight_layout()
    failed = [c.id for c in drawn if c.status == "fail"]
    alt = (
        f"Forest plot of {len(drawn)} fairness gaps with 95% confidence intervals and their "
        f"policy thresholds; {len(failed)} exceed the threshold"
        + (f" ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})." if failed else ".")
    )
    return Figure.from_matplotlib(fig, alt=alt)
