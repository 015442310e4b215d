"""Result types of the group metrics: :class:`GroupMetrics` and :class:`GapResult`.

The estimator (:func:`medaudit.fairness.group_metrics`) fills them; they only look
things up, format them and hand them to Fairlearn, as Fairlearn's
``_disaggregated_result.py`` does for ``MetricFrame``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import param_error
from medaudit.fairness._engine import Hist, sorted_union
from medaudit.fairness._metrics import METRICS

__all__ = ["GapResult", "GroupMetrics", "format_group_table"]


@dataclass(frozen=True)
class GapResult:
    """One gap between groups, with its CI, p-value and the per-group evidence.

    Attributes
    ----------
    attribute, metric, kind : str
        What is compared (``kind`` is ``"difference"`` = highest - lowest group,
        ``"worst_to_overall"`` or ``"worst_group"``).
    value : float
        The gap (NaN only when ``status`` is ``"skipped"``).
    ci : tuple of (float, float)
        Bootstrap interval at ``confidence``, simultaneous over the groups so that it
        allows for the extreme groups being picked from the data.
    p_value : float
        Adjusted p-value of "the metric is equal in every group", from the test dual to
        the interval (or a permutation test); NaN when not tested.
    group_high, group_low, worst_group : str
        Groups behind the gap.
    table : DataFrame
        One row per group: ``group, n, n_pos, n_patients, value, ci_low, ci_high,
        status, reason``.
    status : {"ok", "skipped"}
    reason : str
    confidence : float
    """

    attribute: str
    metric: str
    kind: str
    value: float
    ci: tuple[float, float]
    p_value: float
    group_high: str
    group_low: str
    worst_group: str
    table: pd.DataFrame
    status: str
    reason: str
    confidence: float

    def format_table(self) -> str:
        """The per-group table as aligned text (what failing assertions print)."""
        return format_group_table(
            self.table,
            METRICS[self.metric].label if self.metric in METRICS else self.metric,
            self.confidence,
        )


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def format_group_table(df: pd.DataFrame, label: str, confidence: float) -> str:
    pct = f"{confidence:.0%}"
    rows = [("group", "n", "n_pos", label, f"{pct} CI", "status")]
    for r in df.itertuples(index=False):
        if r.status == "skipped":
            rows.append((str(r.group), str(r.n), str(r.n_pos), "-", "-", f"skipped: {r.reason}"))
        else:
            ci = (
                "n/a"
                if not (math.isfinite(r.ci_low) and math.isfinite(r.ci_high))
                else f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
            )
            rows.append((str(r.group), str(r.n), str(r.n_pos), _fmt(r.value), ci, "ok"))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class GroupMetrics:
    """Per-group metrics with CIs, gaps with CIs and p-values, for every attribute.

    Attributes
    ----------
    table : DataFrame
        Long form, one row per (attribute, class, group, metric): ``attribute, class,
        group, n, n_pos, n_neg, metric, value, ci_low, ci_high, status, reason``;
        ``status`` is ``"ok"`` or ``"skipped"`` (value then NaN and ``reason`` says why).
    overall : DataFrame
        ``class, metric, value, ci_low, ci_high`` over all rows.
    gaps : DataFrame
        ``attribute, class, metric, kind, value, ci_low, ci_high, p_value, p_adjusted,
        group_high, group_low, worst_group, n_groups, status, reason, note``.
    attributes : tuple of str
        Attribute names, intersections last (``"sex&age_group"``).
    class_names : tuple of str
    threshold : float
    confidence : float
    n_boot, n_permutations : int
    p_adjust : str
    exact : bool
        False when a bootstrap ran on binned scores (large data); see ``notes``.
    notes : tuple of str
    p_method : str
        How the gap p-values were computed: ``"bootstrap"`` (the test dual to the
        simultaneous CI: ``p <= 1 - confidence`` exactly when the CI excludes 0),
        ``"permutation"`` (group labels permuted among patients) or ``"none"``.
    calibration : DataFrame
        Tests of "calibrated" per group: ``attribute, class, group, n, ece, p_value``
        (the test dual to the ECE's interval: ``p <= 1 - confidence`` when the interval
        excludes 0), ``spiegelhalter_z, spiegelhalter_p`` (Spiegelhalter's z), ``status``.
    """

    table: pd.DataFrame
    overall: pd.DataFrame
    gaps: pd.DataFrame
    attributes: tuple[str, ...]
    class_names: tuple[str, ...]
    threshold: float
    confidence: float
    n_boot: int
    n_permutations: int
    p_adjust: str
    exact: bool
    notes: tuple[str, ...]
    p_method: str = "bootstrap"
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    _raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def by_group(self, attribute: str, class_name: str | None = None) -> pd.DataFrame:
        """Wide table for one attribute: one row per group, metrics with their CIs.

        Columns ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` plus ``n, n_pos,
        n_neg, status, reason``. Like ``MetricFrame.by_group`` with CIs; skipped groups
        have NaN metrics and a reason.
        """
        cls = self._class(class_name)
        self._attr(attribute)
        t = self.table[(self.table["attribute"] == attribute) & (self.table["class"] == cls)]
        groups = list(dict.fromkeys(t["group"]))
        out = pd.DataFrame({"group": groups})
        first = t.drop_duplicates("group").set_index("group")
        for c in ("n", "n_pos", "n_neg"):
            out[c] = first.loc[groups, c].to_numpy()
        for m in METRICS:
            tm = t[t["metric"] == m].set_index("group")
            out[m] = tm.loc[groups, "value"].to_numpy()
            out[f"{m}_ci_low"] = tm.loc[groups, "ci_low"].to_numpy()
            out[f"{m}_ci_high"] = tm.loc[groups, "ci_high"].to_numpy()
        group_skip = first.loc[groups, "group_status"].to_numpy()
        out["status"] = group_skip
        out["reason"] = first.loc[groups, "group_reason"].to_numpy()
        return out

    def gap(
        self,
        attribute: str,
        metric: str = "auroc",
        *,
        kind: str = "difference",
        class_name: str | None = None,
    ) -> GapResult:
        """One gap as a :class:`GapResult` (with the per-group table behind it)."""
        cls = self._class(class_name)
        self._attr(attribute)
        g = self.gaps
        row = g[
            (g["attribute"] == attribute)
            & (g["class"] == cls)
            & (g["metric"] == metric)
            & (g["kind"] == kind)
        ]
        if row.empty:
            kinds = sorted(set(g[(g["metric"] == metric)]["kind"]))
            raise param_error("kind", "GroupMetrics.gap", f"one of {kinds} for {metric!r}", kind)
        r = row.iloc[0]
        base = {
            "demographic_parity_difference": "selection_rate",
            "equal_opportunity_difference": "true_positive_rate",
            "equalized_odds_difference": "true_positive_rate",
        }.get(metric, metric)
        t = self.table
        t = t[(t["attribute"] == attribute) & (t["class"] == cls) & (t["metric"] == base)]
        table = t[
            ["group", "n", "n_pos", "n_patients", "value", "ci_low", "ci_high", "status", "reason"]
        ].reset_index(drop=True)
        return GapResult(
            attribute=attribute,
            metric=metric,
            kind=kind,
            value=float(r["value"]),
            ci=(float(r["ci_low"]), float(r["ci_high"])),
            p_value=float(r["p_adjusted"]),
            group_high=str(r["group_high"]),
            group_low=str(r["group_low"]),
            worst_group=str(r["worst_group"]),
            table=table,
            status=str(r["status"]),
            reason=str(r["reason"]),
            confidence=self.confidence,
        )

    def roc_curves(
        self, attribute: str, class_name: str | None = None, *, max_points: int = 300
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ROC curve ``(fpr, tpr)`` per non-skipped group (at most ``max_points`` points)."""
        cls = self._class(class_name)
        self._attr(attribute)
        h: Hist = self._raw["hists"][(cls, attribute)]
        labels = self._raw["labels"][attribute]
        skipped = set(
            self.table[
                (self.table["attribute"] == attribute)
                & (self.table["class"] == cls)
                & (self.table["group_status"] == "skipped")
            ]["group"]
        )
        out = {}
        for g, lab in enumerate(labels):
            if lab in skipped:
                continue
            out[lab] = _roc_from_hist(h, g, max_points)
        return out

    def to_metricframe(
        self,
        attribute: str | Sequence[str] | None = None,
        class_name: str | None = None,
        *,
        include_skipped: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The equivalent ``fairlearn.metrics.MetricFrame`` (point estimates agree to 1e-9).

        Groups that medaudit skipped (too small, too few of a class) are left out, as
        they are from medaudit's gaps, so ``MetricFrame.difference()`` and Fairlearn's
        ``demographic_parity_difference`` / ``equalized_odds_difference`` on the frame's
        rows equal medaudit's gap values. ``include_skipped=True`` keeps them, as
        Fairlearn does by default (a gap can then be driven by a group of one).

        Parameters
        ----------
        attribute : str or sequence of str, optional
            Sensitive feature(s); default the first attribute. Several give Fairlearn's
            intersectional groups.
        class_name : str, optional
            For multiclass / multi-label results.
        include_skipped : bool
            Keep the rows of skipped groups.
        **kwargs
            Passed to ``MetricFrame`` (e.g. ``n_boot``, ``ci_quantiles``, ``random_state``).
        """
        from medaudit.fairness._interop import metricframe

        cls = self._class(class_name)
        attrs = (
            [self.attributes[0]]
            if attribute is None
            else ([attribute] if isinstance(attribute, str) else list(attribute))
        )
        base = self._raw["base_attributes"]
        for a in attrs:
            if a not in base:
                raise param_error(
                    "attribute", "GroupMetrics.to_metricframe", f"one of {list(base)}", a
                )
        task = self._raw["tasks"][cls]
        sf = pd.DataFrame(
            {
                a: np.asarray(self._raw["labels"][a], dtype=object)[self._raw["codes"][a]]
                for a in attrs
            }
        )
        keep = np.ones(len(task.y), dtype=bool) if include_skipped else self._kept(attrs, task.y)
        clusters = self._raw.get("clusters")
        return metricframe(
            task.y[keep],
            task.s[keep],
            (sf if len(attrs) > 1 else sf[attrs[0]])[keep].reset_index(drop=True),
            threshold=self.threshold,
            n_bins=self._raw["n_bins"],
            underdiagnosis=task.underdiagnosis,
            clusters=None if clusters is None else clusters[keep],
            **kwargs,
        )

    def skipped_groups(self, attribute: str, class_name: str | None = None) -> dict[str, str]:
        """Groups of ``attribute`` left out of every gap, with the reason."""
        cls = self._class(class_name)
        self._attr(attribute)
        t = self.table
        t = t[
            (t["attribute"] == attribute)
            & (t["class"] == cls)
            & (t["metric"] == "count")
            & (t["group_status"] == "skipped")
        ]
        return dict(zip(t["group"], t["group_reason"], strict=True))

    def _kept(self, attrs: list[str], y: np.ndarray) -> np.ndarray:
        """Rows of the groups (crossed when several attributes) that are not skipped."""
        codes = [self._raw["codes"][a] for a in attrs]
        sizes = [len(self._raw["labels"][a]) for a in attrs]
        key = np.zeros(len(y), np.int64)
        for c, k in zip(codes, sizes, strict=True):
            key = key * k + c
        _, inv = np.unique(key, return_inverse=True)
        inv = inv.ravel()
        n = np.bincount(inv)
        n_pos = np.bincount(inv, weights=y.astype(np.float64))
        ok = (
            (n >= self._raw["min_group_size"])
            & (n_pos >= self._raw["min_class_count"])
            & (n - n_pos >= self._raw["min_class_count"])
        )
        kept: np.ndarray = ok[inv]
        return kept

    def _class(self, class_name: str | None) -> str:
        if class_name is None:
            if len(self.class_names) > 1:
                raise param_error(
                    "class_name",
                    "GroupMetrics",
                    f"one of {list(self.class_names)} for multiclass results",
                    None,
                )
            return self.class_names[0]
        if class_name not in self.class_names:
            raise param_error(
                "class_name", "GroupMetrics", f"one of {list(self.class_names)}", class_name
            )
        return class_name

    def _attr(self, attribute: str) -> None:
        if attribute not in self.attributes:
            raise param_error(
                "attribute", "GroupMetrics", f"one of {list(self.attributes)}", attribute
            )


def _roc_from_hist(h: Hist, g: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    u = sorted_union([h.codes[0][g], h.codes[1][g]], len(h.grid))
    neg = np.zeros(len(u))
    pos = np.zeros(len(u))
    neg[np.searchsorted(u, h.codes[0][g])] = h.counts[0][g]
    pos[np.searchsorted(u, h.codes[1][g])] = h.counts[1][g]
    tpr = np.r_[0.0, np.cumsum(pos[::-1]) / max(pos.sum(), 1)]
    fpr = np.r_[0.0, np.cumsum(neg[::-1]) / max(neg.sum(), 1)]
    if len(fpr) > max_points:
        grid = np.linspace(0, 1, max_points)
        tpr = np.interp(grid, fpr, tpr)
        fpr = grid
    return fpr, tpr
