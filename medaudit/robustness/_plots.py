"""Figures of the robustness section: heatmap, degradation curves, and an image strip."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medaudit.report import Figure  # noqa: E402

__all__ = ["degradation_curves", "drop_heatmap", "severity_strip"]


def drop_heatmap(sweep: pd.DataFrame, *, clean_auroc: float) -> Figure:
    """Corruption × severity grid coloured by AUROC drop, each cell labelled with its AUROC."""
    names = list(dict.fromkeys(sweep["corruption"]))
    sevs = sorted(sweep["severity"].unique())
    grid = sweep.pivot(index="corruption", columns="severity", values="auroc_drop").loc[names]
    aucs = sweep.pivot(index="corruption", columns="severity", values="auroc").loc[names]
    fig, ax = plt.subplots(figsize=(1.1 * len(sevs) + 2.6, 0.36 * len(names) + 1.4))
    vmax = max(0.05, float(np.nanmax(grid.to_numpy(dtype=float), initial=0.0)))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
    for i, name in enumerate(names):
        for j, sev in enumerate(sevs):
            v = aucs.loc[name, sev]
            if math.isfinite(v):
                dark = grid.loc[name, sev] > 0.6 * vmax
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    ax.set_title(f"AUROC under corruption (clean {clean_auroc:.2f}); colour = drop", fontsize=9)
    fig.colorbar(im, ax=ax, label="AUROC drop", fraction=0.05)
    fig.tight_layout()
    worst = sweep.loc[sweep["auroc_drop"].idxmax()] if sweep["auroc_drop"].notna().any() else None
    alt = f"Heatmap of AUROC drop for {len(names)} corruptions at severities 1 to {max(sevs)}." + (
        f" Largest drop {worst['auroc_drop']:.3f} under {worst['corruption']} at severity "
        f"{int(worst['severity'])} (AUROC {worst['auroc']:.3f}; clean {clean_auroc:.3f})."
        if worst is not None
        else ""
    )
    return Figure.from_matplotlib(fig, alt=alt)


def degradation_curves(
    sweep: pd.DataFrame, *, clean_auroc: float, heldout_auroc: float | None = None
) -> Figure:
    """AUROC against severity with its CI band, one small panel per corruption."""
    names = list(dict.fromkeys(sweep["corruption"]))
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.3 * ncols + 0.6, 1.9 * nrows + 0.6), squeeze=False, sharey=True
    )
    for ax, name in zip(axes.ravel(), names, strict=False):
        d = sweep[sweep["corruption"] == name].sort_values("severity")
        x = np.r_[0, d["severity"].to_numpy()]
        ax.fill_between(
            d["severity"], d["auroc_ci_low"], d["auroc_ci_high"], color="#1f5f8b", alpha=0.2, lw=0
        )
        ax.plot(x, np.r_[clean_auroc, d["auroc"].to_numpy()], "o-", color="#1f5f8b", ms=3)
        ax.axhline(clean_auroc, color="0.5", lw=0.8, ls="--")
        if heldout_auroc is not None and math.isfinite(heldout_auroc):
            ax.axhline(heldout_auroc, color="#b5452b", lw=0.8, ls=":")
        ax.set_title(name, fontsize=8)
        ax.set_xticks(range(0, 6))
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.supxlabel("severity (0 = clean)", fontsize=8)
    fig.supylabel("AUROC (95% CI)", fontsize=8)
    fig.tight_layout()
    alt = (
        f"AUROC against severity for {len(names)} corruptions with 95% confidence bands; "
        f"dashed line: clean AUROC {clean_auroc:.3f}"
        + (
            f"; dotted line: AUROC on the held-out site {heldout_auroc:.3f}."
            if heldout_auroc is not None and math.isfinite(heldout_auroc)
            else "."
        )
    )
    return Figure.from_matplotlib(fig, alt=alt)


def severity_strip(images: Mapping[str, Sequence[np.ndarray]]) -> Figure:
    """One image, clean and at severities 1-5, one row per corruption.

    ``images`` maps a corruption to six arrays of shape (C, H, W) in [0, 1].
    """
    names = list(images)
    fig, axes = plt.subplots(len(names), 6, figsize=(6.6, 1.15 * len(names) + 0.3), squeeze=False)
    for r, name in enumerate(names):
        for c, img in enumerate(images[name]):
            ax = axes[r, c]
            arr = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
            if arr.shape[0] == 1:
                ax.imshow(arr[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(arr[:3].transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    alt = (
        f"One synthetic image, clean and at severities 1 to 5, under {len(names)} "
        f"corruptions: {', '.join(names)}."
    )
    return Figure.from_matplotlib(fig, alt=alt)
