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


def degradation_curves(sweep: pd.DataFrame, *, clean_auroc: float) -> Figure:
    """AUROC against severity (0 = clean) for every corruption, with 95% CI bands."""
    names = list(dict.fromkeys(sweep["corruption"]))
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        d = sweep[sweep["corruption"] == name].sort_values("severity")
        colour = colours(i % colours.N)
        ax.fill_between(
            d["severity"], d["auroc_ci_low"], d["auroc_ci_high"], color=colour, alpha=0.12, lw=0
        )
        ax.plot(
            np.r_[0, d["severity"].to_numpy()],
            np.r_[clean_auroc, d["auroc"].to_numpy()],
            "o-",
            color=colour,
            ms=3,
            lw=1.2,
            label=name,
        )
    ax.axhline(clean_auroc, color="0.5", lw=0.8, ls="--", label="clean")
    ax.set(xlabel="severity (0 = clean)", ylabel="AUROC (95% CI)", xticks=range(0, 6))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    alt = (
        f"AUROC against severity for {len(names)} corruptions with 95% confidence bands; "
        f"dashed line: clean AUROC {clean_auroc:.3f}."
    )
    return Figure.from_matplotlib(fig, alt=alt)


def severity_strip(images: Mapping[str, Sequence[np.ndarray]]) -> Figure:
    """One image, clean and at severities 1-5, one row per corruption (one mosaic).

    ``images`` maps a corruption to six arrays of shape (C, H, W) in [0, 1].
    """
    names = list(images)
    first = np.asarray(images[names[0]][0])
    c, h, w = first.shape
    gap = max(1, h // 16)
    mosaic = np.ones((len(names) * (h + gap) - gap, 6 * (w + gap) - gap, 3))
    for r, name in enumerate(names):
        for k, img in enumerate(images[name]):
            arr = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
            rgb = np.repeat(arr[:1], 3, axis=0) if arr.shape[0] == 1 else arr[:3]
            top, left = r * (h + gap), k * (w + gap)
            mosaic[top : top + h, left : left + w] = rgb.transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(6.4, 1.07 * len(names) + 0.4))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([k * (w + gap) + w / 2 for k in range(6)])
    ax.set_xticklabels(["clean", *(f"severity {k}" for k in range(1, 6))], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(names))])
    ax.set_yticklabels(names, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    alt = (
        f"One synthetic image, clean and at severities 1 to 5, under {len(names)} "
        f"corruptions: {', '.join(names)}."
    )
    return Figure.from_matplotlib(fig, alt=alt)
