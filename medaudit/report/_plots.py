"""Figures every audit can draw, with CIs where they apply and legends off the data.

Reliability diagrams with bin counts, dot-and-whisker panels, ROC curves with a CI band
and the operating point, threshold sweeps.

Legends sit outside the axes (below them) so they never cover data; labels are at least
8 pt at the size the page shows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medaudit.report._model import Figure  # noqa: E402

__all__ = [
    "dot_whisker_figure",
    "reliability_figure",
    "roc_band_figure",
    "threshold_sweep_figure",
]

FONT = 9
COLORS = ("#1f5f8b", "#b5452b", "#2b7a3d", "#7a4b9b", "#b7791f", "#3d8a8a", "#8c564b", "#555555")


def _legend_below(ax: plt.Axes, ncol: int = 3) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=min(ncol, len(handles)),
            fontsize=FONT - 1,
            frameon=False,
        )


def _reliability(y: np.ndarray, s: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    from medaudit.stats import calibration_bins

    b = calibration_bins(s, n_bins)
    n = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=s, minlength=n_bins) / n
        obs = np.bincount(b, weights=y.astype(float), minlength=n_bins) / n
    return n, mean_p, obs


def reliability_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    n_bins: int = 10,
    ncols: int = 4,
) -> Figure:
    """Reliability diagrams, one panel per group or site, with the images per bin as bars.

    Parameters
    ----------
    panels : mapping of str to (labels, scores)
        Binary labels and positive-class scores of each panel.
    title : str
        The figure's title (also starts the alt text).
    """
    k = max(1, len(panels))
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.9 * ncols + 0.6, 2.9 * nrows + 0.5), squeeze=False
    )
    alt = []
    centers = (np.arange(n_bins) + 0.5) / n_bins
    for ax, (name, (y, s)) in zip(axes.flat, panels.items(), strict=False):
        n, mean_p, obs = _reliability(np.asarray(y), np.asarray(s, dtype=float), n_bins)
        counts = ax.twinx()
        counts.bar(centers, n, width=0.9 / n_bins, color="0.85", zorder=0)
        counts.set_ylim(0, max(1.0, n.max()) * 3)  # bars stay in the lower third
        counts.tick_params(labelsize=FONT - 2, colors="0.45")
        counts.set_ylabel("images per bin", fontsize=FONT - 2, color="0.45")
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        ok = n > 0
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
        ax.plot(mean_p[ok], obs[ok], marker="o", ms=3.5, color="#b5452b", lw=1.4)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{name} (n = {int(n.sum()):,})", fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        ax.set_xlabel("mean predicted probability", fontsize=FONT - 1)
        ax.set_ylabel("observed disease rate", fontsize=FONT - 1)
        gap = np.abs(mean_p - obs)[ok]
        ece = float((n[ok] * gap).sum() / max(n.sum(), 1))
        alt.append(f"{name}: {int(n.sum())} images, ECE {ece:.3f}")
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return Figure.from_matplotlib(
        fig,
        alt=f"{title}: observed disease rate against mean predicted probability in "
        f"{n_bins} bins, grey bars the images per bin. " + "; ".join(alt) + ".",
        wide=k > 2,
    )


def dot_whisker_figure(
    panels: Mapping[str, Sequence[tuple[str, float, float, float]]],
    *,
    title: str,
    reference: Mapping[str, float] | None = None,
    xlabel: str = "rate (point estimate and 95% CI)",
) -> Figure:
    """One panel per metric: each group's point estimate with its CI.

    Parameters
    ----------
    panels : mapping of panel title to [(group, value, ci_low, ci_high), ...]
    reference : mapping of panel title to float, optional
        A vertical line (the overall value).
    """
    k = max(1, len(panels))
    n_rows = max((len(v) for v in panels.values()), default=1)
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k + 1.2, 0.38 * n_rows + 1.4), squeeze=False)
    alt = []
    for i, (ax, (name, rows)) in enumerate(zip(axes[0], panels.items(), strict=False)):
        ys = np.arange(len(rows))[::-1]
        for y, (_g, v, lo, hi) in zip(ys, rows, strict=True):
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [y, y], color="#1f5f8b", lw=2)
            ax.plot([v], [y], "o", color="#1f5f8b", ms=5)
        if reference and name in reference and math.isfinite(reference[name]):
            ax.axvline(reference[name], color="0.5", lw=0.8, ls="--")
        ax.set_yticks(ys)
        ax.set_yticklabels([r[0] for r in rows] if i == 0 else [], fontsize=FONT)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(name, fontsize=FONT + 1)
        ax.tick_params(axis="x", labelsize=FONT - 1)
        ax.grid(axis="x", color="0.92")
        finite = [(g, v) for g, v, _, _ in rows if math.isfinite(v)]
        if finite:
            lo_g = min(finite, key=lambda r: r[1])
            hi_g = max(finite, key=lambda r: r[1])
            alt.append(f"{name} from {lo_g[1]:.3f} ({lo_g[0]}) to {hi_g[1]:.3f} ({hi_g[0]})")
    fig.supxlabel(xlabel + ("; dashed line: all images" if reference else ""), fontsize=FONT)
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return Figure.from_matplotlib(fig, alt=f"{title}. " + "; ".join(alt) + ".", wide=True)


def roc_band_figure(
    fpr: np.ndarray,
    tpr: np.ndarray,
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    *,
    point: tuple[float, float] | None,
    point_label: str,
    auroc_text: str,
) -> Figure:
    """The ROC curve with a pointwise bootstrap band and the operating point marked.

    Parameters
    ----------
    fpr, tpr : ndarray
        The curve.
    band : (fpr_grid, tpr_low, tpr_high) or None
    point : (fpr, tpr) of the operating point, or None
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    if band is not None:
        g, lo, hi = band
        ax.fill_between(g, lo, hi, color="#1f5f8b", alpha=0.18, lw=0, label="95% CI band")
    ax.plot(fpr, tpr, color="#1f5f8b", lw=2, label=f"all images ({auroc_text})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="chance")
    if point is not None:
        ax.plot(
            [point[0]],
            [point[1]],
            "D",
            color="#b5452b",
            ms=7,
            label=f"operating point {point_label}",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.set_xlabel("false positive rate (1 - specificity)", fontsize=FONT)
    ax.set_ylabel("sensitivity (true positive rate)", fontsize=FONT)
    ax.set_title("ROC curve", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT - 1)
    _legend_below(ax, ncol=1)
    fig.tight_layout()
    where = (
        f" The operating point {point_label} sits at sensitivity {point[1]:.3f} and false "
        f"positive rate {point[0]:.3f}."
        if point is not None
        else ""
    )
    return Figure.from_matplotlib(
        fig, alt=f"ROC curve of the model on the audited images ({auroc_text}) with a 95% "
        f"bootstrap band.{where}"
    )  # fmt: skip


def threshold_sweep_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    threshold: float,
    title: str,
) -> Figure:
    """Sensitivity and specificity of each group as the threshold moves.

    Parameters
    ----------
    curves : mapping of group to (thresholds, sensitivity, specificity)
    threshold : float
        The operating threshold (a vertical line).
    """
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.6), sharey=True)
    for i, (g, (t, sens, spec)) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        axes[0].plot(t, sens, color=color, lw=1.5, label=str(g))
        axes[1].plot(t, spec, color=color, lw=1.5, label=str(g))
    for ax, name in zip(axes, ("sensitivity", "specificity"), strict=True):
        ax.axvline(threshold, color="0.3", lw=1, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.set_title(f"{name} by threshold", fontsize=FONT + 1)
        ax.set_xlabel("operating threshold (score ≥ t is positive)", fontsize=FONT - 1)
        ax.tick_params(labelsize=FONT - 1)
        ax.grid(color="0.93")
    axes[0].set_ylabel("rate", fontsize=FONT)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(4, len(labels)),
        fontsize=FONT - 1,
        frameon=False,
    )
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0.1 + 0.05 * (len(labels) > 4), 1, 1))
    at = []
    for g, (t, sens, _spec) in curves.items():
        j = int(np.clip(np.searchsorted(t, threshold), 0, len(t) - 1))
        at.append(f"{g} {sens[j]:.3f}")
    return Figure.from_matplotlib(
        fig,
        alt=f"{title}: sensitivity and specificity of each group as the operating threshold "
        f"moves; dashed line at the operating threshold {threshold:.4g}, where sensitivity is "
        + ", ".join(at)
        + ".",
        wide=True,
    )


def sweep(y: np.ndarray, s: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at each threshold of ``grid`` (``score >= t``)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=float)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = 1 - np.searchsorted(pos, grid, side="left") / max(len(pos), 1)
        spec = np.searchsorted(neg, grid, side="left") / max(len(neg), 1)
    return sens, spec
