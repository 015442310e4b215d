"""Group metrics, gaps, bootstrap CIs and permutation p-values, in the Fairlearn style.

The array API takes the data first and options as keywords::

    gm = group_metrics(y_true, y_score, groups=df[["sex", "age_group"]], threshold=0.5)
    gm.by_group("sex")            # one row per group, metric columns with CIs
    gm.gaps                       # max-min, worst-to-overall, Fairlearn differences, ES-AUC
    gm.to_metricframe("sex")      # the equivalent fairlearn.metrics.MetricFrame

Statistics (DESIGN.md, "Statistics are part of the product"):

- 95% CIs by a bootstrap that resamples within each (group, class) stratum, and whole
  patients when ``patient_id`` is given; percentile intervals.
- A gap's CI is the CI of the difference between the two groups that are highest and
  lowest on the data (identities fixed), so it can include zero; the permutation
  p-value uses max - min under the null, which accounts for picking that pair.
- Permutation p-values permute group labels within each class and are adjusted across
  all gaps tested (Holm by default, or Benjamini-Hochberg).
- Groups below ``min_group_size`` or with fewer than ``min_class_count`` of a class are
  reported as skipped with the reason, never as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._engine import (
    Hist,
    build_hist,
    evaluate,
    iter_bootstrap,
    iter_permutations,
    sorted_union,
)
from medaudit.fairness._metrics import GAP_METRICS, METRICS, metric_spec
from medaudit.stats import adjust_pvalues, permutation_pvalue

__all__ = [
    "GapResult",
    "GroupMetrics",
    "adjust_gap_pvalues",
    "group_metrics",
    "subgroup_gap",
]

# Messages, tested word for word.
MSG_LENGTH = "{func}: y_true has {n_true} rows but y_score has {n_score}; they must be row-aligned."
MSG_EMPTY = "{func}: there are no rows to audit."
MSG_NONFINITE = (
    "{func}: y_score contains {n_bad} NaN or infinite value(s) (first at row {first}); "
    "remove or impute those rows before auditing."
)
MSG_RANGE = (
    "{func}: y_score must be probabilities in [0, 1] (found min {lo:.6g}, max {hi:.6g}); "
    "apply a sigmoid or softmax to the model's outputs first."
)
MSG_LABELS = "{func}: y_true must contain only 0 and 1 for binary scores; found values {vals}."
MSG_MC_LABELS = (
    "{func}: y_true must hold class indices in [0, {k}) for scores with {k} columns; "
    "found values {vals}."
)
MSG_SINGLE_CLASS = (
    "{func}: y_true contains only {which} for class {cls!r}; AUROC, sensitivity and "
    "specificity need patients with and without the finding."
)
MSG_GROUP_LENGTH = "{func}: the sensitive attribute {name!r} has {n_g} rows but y_true has {n}."
MSG_PATIENT_LENGTH = "{func}: patient_id has {n_p} rows but y_true has {n}."
MSG_FEW_GROUPS = (
    "{func}: attribute {name!r} has fewer than two groups large enough to compare "
    "({detail}); lower min_group_size / min_class_count or pool small groups."
)

SKIP_SMALL = "n={n} < min_group_size={m}"
SKIP_CLASS = "{which}={k} < min_class_count={m}"
SKIP_UNDEFINED = "{metric} is undefined in this group ({why})"

#: Gap statistics given a permutation p-value; the others share a twin's p-value.
TESTED = (
    "auroc",
    "true_positive_rate",
    "false_positive_rate",
    "ppv",
    "selection_rate",
    "balanced_accuracy",
    "brier_score",
    "ece",
    "equalized_odds_difference",
)
FAIRLEARN_DIFFERENCES = (
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
)
ALL_LABEL = "(all)"
MISSING_LABEL = "(missing)"


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Task:
    """One binary problem: a class one-vs-rest (or the binary positive class)."""

    name: str
    y: np.ndarray  # bool
    s: np.ndarray  # float64
    underdiagnosis: str  # "false_negative_rate" or "false_positive_rate" (no-finding class)


def _tasks(
    y_true: ArrayLike,
    y_score: ArrayLike,
    class_names: Sequence[str] | None,
    no_finding: str | int | None,
    func: str,
) -> list[_Task]:
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    if s.dtype == object or y.dtype == object:
        try:
            s = s.astype(np.float64)
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{func}: y_true and y_score must be numeric.") from None
    n = len(y)
    if len(s) != n:
        raise InvalidInputError(MSG_LENGTH.format(func=func, n_true=n, n_score=len(s)))
    if n == 0:
        raise InvalidInputError(MSG_EMPTY.format(func=func))
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        flat = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
        raise InvalidInputError(
            MSG_NONFINITE.format(func=func, n_bad=int(bad.sum()), first=int(flat[0]))
        )
    if s.min() < 0 or s.max() > 1:
        raise InvalidInputError(MSG_RANGE.format(func=func, lo=s.min(), hi=s.max()))
    if y.ndim == 2 and y.shape != s.shape:
        raise InvalidInputError(
            f"{func}: multi-label y_true of shape {y.shape} needs y_score of the same shape; "
            f"got {s.shape}."
        )
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim == 2 and s.shape[1] == 2 and y.ndim == 1:
        s = s[:, 1]  # binary model with softmax over two classes
        class_names = (
            [class_names[1]] if class_names is not None and len(class_names) == 2 else None
        )
    if s.ndim == 1:
        if y.ndim != 1:
            raise InvalidInputError(f"{func}: y_true must be 1-d for 1-d y_score; got {y.shape}.")
        if not np.all(np.isin(y, (0, 1))):
            raise InvalidInputError(
                MSG_LABELS.format(func=func, vals=_few(np.unique(y[~np.isin(y, (0, 1))])))
            )
        name = str(class_names[-1]) if class_names else "positive"
        return [_Task(name, y.astype(bool), s, "false_negative_rate")]
    if s.ndim != 2:
        raise InvalidInputError(f"{func}: y_score must be 1-d or 2-d; got shape {s.shape}.")
    k = s.shape[1]
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else [f"class_{i}" for i in range(k)]
    )
    if len(names) != k:
        raise param_error("class_names", func, f"a sequence of {k} names", list(names))
    if y.ndim == 2:  # multi-label
        if not np.all(np.isin(y, (0, 1))):
            raise InvalidInputError(MSG_LABELS.format(func=func, vals=_few(np.unique(y))))
        ys = [y[:, i].astype(bool) for i in range(k)]
    else:
        if not np.all(np.isin(y, np.arange(k))):
            raise InvalidInputError(
                MSG_MC_LABELS.format(
                    func=func, k=k, vals=_few(np.unique(y[~np.isin(y, np.arange(k))]))
                )
            )
        ys = [y == i for i in range(k)]
    nf = _no_finding_index(no_finding, names)
    return [
        _Task(names[i], ys[i], s[:, i], "false_positive_rate" if i == nf else "false_negative_rate")
        for i in range(k)
    ]


def _no_finding_index(no_finding: str | int | None, names: list[str]) -> int | None:
    if no_finding is None:
        for i, nm in enumerate(names):
            if nm.lower().replace("_", " ") in ("no finding", "normal", "no findings"):
                return i
        return None
    if isinstance(no_finding, (int, np.integer)):
        return int(no_finding)
    if no_finding not in names:
        raise param_error("no_finding", "group_metrics", f"one of {names}", no_finding)
    return names.index(no_finding)


def _few(vals: np.ndarray) -> str:
    v = [x.item() if hasattr(x, "item") else x for x in list(vals[:5])]
    return repr(v) + (" ..." if len(vals) > 5 else "")


@dataclass(frozen=True)
class _Grouping:
    name: str
    codes: np.ndarray  # int64 (n,)
    labels: list[str]


def _group_codes(
    values: Any, name: str, n: int, *, max_levels: int, bins: int, func: str
) -> _Grouping:
    if isinstance(values, pd.Series):
        ser = values.reset_index(drop=True)
    else:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise InvalidInputError(
                f"{func}: the sensitive attribute {name!r} must be 1-d; got shape {arr.shape}."
            )
        ser = pd.Series(arr)
    if len(ser) != n:
        raise InvalidInputError(MSG_GROUP_LENGTH.format(func=func, name=name, n_g=len(ser), n=n))
    missing = ser.isna().to_numpy()
    is_numeric = pd.api.types.is_numeric_dtype(ser) and not pd.api.types.is_bool_dtype(ser)
    if is_numeric and ser.nunique(dropna=True) > max_levels:
        x = ser.to_numpy(dtype=np.float64)
        ok = x[~missing]
        edges = np.unique(np.quantile(ok, np.linspace(0, 1, bins + 1)))
        codes = np.searchsorted(edges[1:-1], x, side="right").astype(np.int64)
        labels = [
            f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}"
            for i in range(len(edges) - 1)
        ]
    else:
        codes, uniques = pd.factorize(ser, sort=True, use_na_sentinel=True)
        codes = codes.astype(np.int64)
        labels = [str(u) for u in uniques]
    if missing.any():
        codes[missing] = len(labels)
        labels.append(MISSING_LABEL)
    return _Grouping(name, codes, labels)


def _groupings(
    groups: Any, n: int, *, intersections: bool, max_levels: int, bins: int, func: str
) -> tuple[list[_Grouping], int]:
    """The attributes' groupings, then their pairwise intersections; and the attribute count."""
    if isinstance(groups, pd.DataFrame):
        items = [(str(c), groups[c]) for c in groups.columns]
    elif isinstance(groups, Mapping):
        items = [(str(k), v) for k, v in groups.items()]
    elif isinstance(groups, pd.Series):
        items = [(str(groups.name) if groups.name is not None else "group", groups)]
    else:
        arr = np.asarray(groups)
        if arr.ndim == 2:
            items = [(f"group_{i}", arr[:, i]) for i in range(arr.shape[1])]
        else:
            items = [("group", arr)]
    if not items:
        raise InvalidInputError(f"{func}: no sensitive attribute given in groups.")
    out = [_group_codes(v, k, n, max_levels=max_levels, bins=bins, func=func) for k, v in items]
    if intersections and len(out) > 1:
        inter = []
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                key = a.codes * len(b.labels) + b.codes
                uk, codes = np.unique(key, return_inverse=True)
                labels = [
                    f"{a.labels[k // len(b.labels)]} & {b.labels[k % len(b.labels)]}" for k in uk
                ]
                inter.append(
                    _Grouping(f"{a.name}&{b.name}", codes.ravel().astype(np.int64), labels)
                )
        out += inter
    return out, len(items)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class GapResult:
    """One gap between groups, with its CI, p-value and the per-group evidence.

    Attributes
    ----------
    attribute, metric, kind : str
        What is compared (``kind`` is ``"difference"`` = highest - lowest group, or
        ``"worst_to_overall"``).
    value : float
        The gap (NaN only when ``status`` is ``"skipped"``).
    ci : tuple of (float, float)
        Bootstrap percentile interval at ``confidence``.
    p_value : float
        Permutation p-value for "the gap is zero" (NaN when not tested).
    group_high, group_low, worst_group : str
        Groups behind the gap.
    table : DataFrame
        One row per group: ``group, n, n_pos, value, ci_low, ci_high, status, reason``.
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
        return _format_group_table(
            self.table,
            METRICS[self.metric].label if self.metric in METRICS else self.metric,
            self.confidence,
        )


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _format_group_table(df: pd.DataFrame, label: str, confidence: float) -> str:
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
            ["group", "n", "n_pos", "value", "ci_low", "ci_high", "status", "reason"]
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
        **kwargs: Any,
    ) -> Any:
        """The equivalent ``fairlearn.metrics.MetricFrame`` (point estimates agree to 1e-9).

        Parameters
        ----------
        attribute : str or sequence of str, optional
            Sensitive feature(s); default the first attribute. Several give Fairlearn's
            intersectional groups.
        class_name : str, optional
            For multiclass / multi-label results.
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
        return metricframe(
            task.y,
            task.s,
            sf if len(attrs) > 1 else sf[attrs[0]],
            threshold=self.threshold,
            n_bins=self._raw["n_bins"],
            underdiagnosis=task.underdiagnosis,
            **kwargs,
        )

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


# ----------------------------------------------------------------------------- engine glue
def _binned(
    s: np.ndarray, n_bins_q: int, threshold: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and representative values of a quantile grid that keeps threshold and ECE edges."""
    q = np.quantile(s, np.linspace(0, 1, n_bins_q + 1)[1:-1])
    edges = np.unique(np.concatenate([q, [threshold], np.arange(1, n_bins) / n_bins]))
    codes = np.searchsorted(edges, s, side="right")
    k = len(edges) + 1
    cnt = np.bincount(codes, minlength=k)
    tot = np.bincount(codes, weights=s, minlength=k)
    lows = np.r_[0.0, edges]
    with np.errstate(invalid="ignore", divide="ignore"):
        rep = np.where(cnt > 0, tot / np.maximum(cnt, 1), lows)
    # An empty bin's value is never used; keep the grid ascending for searchsorted.
    rep = np.maximum.accumulate(rep)
    return codes.astype(np.int64), rep


def _eligibility(h: Hist, min_group_size: int, min_class_count: int) -> list[str]:
    cc = h.class_counts()
    reasons = []
    for g in range(h.n_groups):
        n0, n1 = int(cc[0, g]), int(cc[1, g])
        why = []
        if n0 + n1 < min_group_size:
            why.append(SKIP_SMALL.format(n=n0 + n1, m=min_group_size))
        if n1 < min_class_count:
            why.append(SKIP_CLASS.format(which="n_pos", k=n1, m=min_class_count))
        if n0 < min_class_count:
            why.append(SKIP_CLASS.format(which="n_neg", k=n0, m=min_class_count))
        reasons.append("; ".join(why))
    return reasons


def _collect(chunks: Any) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for d in chunks:
        for k, v in d.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def _with_underdiagnosis(d: dict[str, np.ndarray], which: str) -> dict[str, np.ndarray]:
    d["underdiagnosis_rate"] = d[which]
    return d


def group_metrics(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    threshold: float = 0.5,
    patient_id: ArrayLike | None = None,
    intersections: bool = False,
    class_names: Sequence[str] | None = None,
    no_finding: str | int | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    n_permutations: int = 1000,
    p_adjust: str = "holm",
    min_group_size: int = 30,
    min_class_count: int = 5,
    n_bins: int = 10,
    es_auc_variant: str = "sum",
    exact_max_rows: int = 100_000,
    max_bins: int = 4096,
    permutation_bins: int = 256,
    max_levels: int = 20,
    continuous_bins: int = 4,
    random_state: int = 0,
) -> GroupMetrics:
    """Per-group metrics with bootstrap CIs, gaps with CIs and permutation p-values.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Binary labels (binary scores), class indices (multiclass scores), or a 0/1
        indicator matrix (multi-label). Multiclass and multi-label are one-vs-rest.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1].
    groups : array-like of shape (n_samples,), DataFrame, or mapping of name to array
        Sensitive attribute(s). Numeric columns with more than ``max_levels`` distinct
        values are cut into ``continuous_bins`` quantile groups; missing values form
        the group ``"(missing)"``.
    threshold : float
        Operating threshold: predicted positive means ``score >= threshold``.
    patient_id : array-like of shape (n_samples,), optional
        When given, the bootstrap resamples whole patients within each stratum.
    intersections : bool
        Also evaluate every pair of attributes crossed (``"sex&age_group"``).
    class_names : sequence of str, optional
    no_finding : str or int, optional
        The "no finding" class of a multiclass / multi-label model; its underdiagnosis
        rate is its false positive rate (Seyyed-Kalantari et al.). Detected by name
        ("No Finding", "normal") when not given.
    n_boot : int
        Bootstrap resamples (0 disables CIs).
    confidence : float
        CI level.
    n_permutations : int
        Permutations per attribute for the p-values (0 disables them).
    p_adjust : {"holm", "bh", "none"}
        Multiple-testing adjustment across every gap tested.
    min_group_size, min_class_count : int
        Smaller groups are reported as skipped with the reason.
    n_bins : int
        Calibration bins of the ECE.
    es_auc_variant : {"sum", "std"}
        Equity-scaled AUROC: ``AUC / (1 + sum_g |AUC_g - AUC|)`` (FairCLIP / FairDomain)
        or ``AUC / (1 + std_g AUC_g)``.
    exact_max_rows : int
        Up to this many rows (or whenever scores take at most ``max_bins`` values) the
        bootstrap is exact; above, it runs on ``max_bins`` quantile bins (threshold and
        ECE bin edges kept exact) with replicates shifted to the exact point estimate.
    max_bins, permutation_bins : int
        Resolution of the binned bootstrap and of the permutation test's statistic
        (the test stays exact in level whatever the resolution).
    max_levels, continuous_bins : int
    random_state : int

    Returns
    -------
    GroupMetrics

    References
    ----------
    .. [1] Seyyed-Kalantari L et al. Underdiagnosis bias of artificial intelligence
           algorithms applied to chest radiographs in under-served patient populations.
           Nat Med 27:2176-2182, 2021.
    .. [2] Luo Y et al. FairCLIP: Harnessing fairness in vision-language learning.
           CVPR 2024 (equity-scaled AUC).
    .. [3] Phipson B, Smyth GK. Permutation p-values should never be zero. Stat Appl
           Genet Mol Biol 9(1), 2010.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> s = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0, 1)
    >>> sex = np.where(rng.random(400) < 0.5, "F", "M")
    >>> gm = group_metrics(y, s, groups={"sex": sex}, n_boot=200, n_permutations=200)
    >>> gm.by_group("sex")[["group", "n"]].to_dict("list")
    {'group': ['F', 'M'], 'n': [199, 201]}
    >>> bool(gm.gap("sex", "auroc").ci[0] < gm.gap("sex", "auroc").value)
    True
    """
    func = "group_metrics"
    _check_int(n_boot, "n_boot", func, minimum=0)
    _check_int(n_permutations, "n_permutations", func, minimum=0)
    _check_int(min_group_size, "min_group_size", func, minimum=1)
    _check_int(min_class_count, "min_class_count", func, minimum=1)
    _check_int(n_bins, "n_bins", func, minimum=1)
    _check_int(max_bins, "max_bins", func, minimum=16)
    _check_int(permutation_bins, "permutation_bins", func, minimum=4)
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    if (
        not isinstance(threshold, (int, float))
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
    ):
        raise param_error("threshold", func, "a finite float", threshold)
    if p_adjust not in ("holm", "bh", "none"):
        raise param_error("p_adjust", func, "one of ('holm', 'bh', 'none')", p_adjust)
    if es_auc_variant not in ("sum", "std"):
        raise param_error("es_auc_variant", func, "one of ('sum', 'std')", es_auc_variant)

    tasks = _tasks(y_true, y_score, class_names, no_finding, func)
    n = len(tasks[0].y)
    groupings, n_base = _groupings(
        groups,
        n,
        intersections=intersections,
        max_levels=max_levels,
        bins=continuous_bins,
        func=func,
    )
    clusters = None
    if patient_id is not None:
        pid = pd.Series(np.asarray(patient_id))
        if len(pid) != n:
            raise InvalidInputError(MSG_PATIENT_LENGTH.format(func=func, n_p=len(pid), n=n))
        clusters = pd.factorize(pid, use_na_sentinel=False)[0].astype(np.int64)
    for t in tasks:
        n1 = int(t.y.sum())
        if n1 == 0 or n1 == n:
            which = "negatives" if n1 == 0 else "positives"
            raise InvalidInputError(MSG_SINGLE_CLASS.format(func=func, which=which, cls=t.name))

    rng = np.random.default_rng(random_state)
    rows: list[dict[str, Any]] = []
    overall_rows: list[dict[str, Any]] = []
    gap_rows: list[dict[str, Any]] = []
    hists: dict[tuple[str, str], Hist] = {}
    all_exact = True
    notes: list[str] = []
    alpha = (1 - confidence) / 2

    for task in tasks:
        grid, codes = np.unique(task.s, return_inverse=True)
        codes = codes.ravel().astype(np.int64)
        exact = n <= exact_max_rows or len(grid) <= max_bins
        if exact:
            bcodes, bgrid = codes, grid
        else:
            all_exact = False
            bcodes, bgrid = _binned(task.s, max_bins, float(threshold), n_bins)
        if len(grid) <= permutation_bins:
            pcodes, pgrid = codes, grid
        else:
            pcodes, pgrid = _binned(task.s, permutation_bins, float(threshold), n_bins)
        all_grouping = _Grouping(ALL_LABEL, np.zeros(n, np.int64), [ALL_LABEL])
        for grouping in [all_grouping, *groupings]:
            G = len(grouping.labels)
            h = build_hist(
                codes,
                grid,
                task.y,
                grouping.codes,
                G,
                threshold=float(threshold),
                n_bins=n_bins,
                clusters=clusters,
            )
            point = _with_underdiagnosis(evaluate(h, h.base_weights()), task.underdiagnosis)
            point = {k: v[0] for k, v in point.items()}
            if n_boot > 0:
                hb = (
                    h
                    if exact
                    else build_hist(
                        bcodes,
                        bgrid,
                        task.y,
                        grouping.codes,
                        G,
                        threshold=float(threshold),
                        n_bins=n_bins,
                        clusters=clusters,
                    )
                )
                reps = _collect(iter_bootstrap(hb, n_boot, rng))
                if not exact:
                    bpoint = evaluate(hb, hb.base_weights())
                    for k in reps:
                        reps[k] = reps[k] + (point[k] - bpoint[k][0])[None, :]
                reps = _with_underdiagnosis(reps, task.underdiagnosis)
            else:
                reps = {k: np.full((1, G + 1), np.nan) for k in point}
            if grouping is all_grouping:
                for m in METRICS:
                    lo, hi = _ci(reps[m][:, G], alpha)
                    overall_rows.append(
                        {
                            "class": task.name,
                            "metric": m,
                            "value": float(point[m][G]),
                            "ci_low": lo,
                            "ci_high": hi,
                        }
                    )
                continue
            hists[(task.name, grouping.name)] = h
            reasons = _eligibility(h, min_group_size, min_class_count)
            cc = h.class_counts()
            eligible = [g for g in range(G) if not reasons[g]]
            for g, lab in enumerate(grouping.labels):
                for m in METRICS:
                    status, reason = ("skipped", reasons[g]) if reasons[g] else ("ok", "")
                    val = float(point[m][g])
                    lo, hi = _ci(reps[m][:, g], alpha)
                    if status == "ok" and not math.isfinite(val):
                        status, reason = (
                            "skipped",
                            SKIP_UNDEFINED.format(metric=m, why=_undefined_why(m)),
                        )
                    if status == "skipped" and m != "count":
                        val, lo, hi = math.nan, math.nan, math.nan
                    if status == "skipped" and m == "count":
                        lo = hi = math.nan
                    rows.append(
                        {
                            "attribute": grouping.name,
                            "class": task.name,
                            "group": lab,
                            "n": int(cc[0, g] + cc[1, g]),
                            "n_pos": int(cc[1, g]),
                            "n_neg": int(cc[0, g]),
                            "metric": m,
                            "value": val,
                            "ci_low": lo,
                            "ci_high": hi,
                            "status": status,
                            "reason": reason,
                            "group_status": "skipped" if reasons[g] else "ok",
                            "group_reason": reasons[g],
                        }
                    )
            pvals = (
                _permutation_pvalues(
                    task, grouping, eligible, pcodes, pgrid, n_permutations, threshold, n_bins, rng
                )
                if len(eligible) >= 2 and n_permutations > 0
                else {}
            )
            gap_rows += _gap_rows(
                task, grouping, point, reps, eligible, reasons, alpha, pvals, es_auc_variant
            )
    if not all_exact:
        notes.append(
            f"Bootstrap CIs were computed on scores binned to {max_bins} quantile bins "
            "(threshold and calibration-bin edges kept exact; AUROC, Brier and ECE "
            f"replicates shifted to the exact point estimate) because n = {n:,} > "
            f"{exact_max_rows:,}: threshold metrics are exact, the others approximate. "
            "Point estimates are exact."
        )
    if clusters is not None:
        notes.append(
            "The bootstrap resamples whole patients within each (group, class) stratum; "
            "the permutation test permutes images, which is optimistic when patients "
            "contribute many images."
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "attribute",
            "class",
            "group",
            "n",
            "n_pos",
            "n_neg",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "status",
            "reason",
            "group_status",
            "group_reason",
        ],
    )
    gaps = pd.DataFrame(
        gap_rows,
        columns=[
            "attribute",
            "class",
            "metric",
            "kind",
            "value",
            "ci_low",
            "ci_high",
            "p_value",
            "p_adjusted",
            "group_high",
            "group_low",
            "worst_group",
            "n_groups",
            "status",
            "reason",
            "note",
            "tested",
            "p_from",
        ],
    )
    gaps = adjust_gap_pvalues(gaps, p_adjust)
    return GroupMetrics(
        table=table,
        overall=pd.DataFrame(
            overall_rows, columns=["class", "metric", "value", "ci_low", "ci_high"]
        ),
        gaps=gaps,
        attributes=tuple(g.name for g in groupings),
        class_names=tuple(t.name for t in tasks),
        threshold=float(threshold),
        confidence=float(confidence),
        n_boot=int(n_boot),
        n_permutations=int(n_permutations),
        p_adjust=p_adjust,
        exact=all_exact,
        notes=tuple(notes),
        _raw={
            "tasks": {t.name: t for t in tasks},
            "hists": hists,
            "labels": {g.name: g.labels for g in groupings},
            "codes": {g.name: g.codes for g in groupings},
            "base_attributes": [g.name for g in groupings[:n_base]],
            "n_bins": n_bins,
        },
    )


def _undefined_why(m: str) -> str:
    return {"ppv": "no patient is flagged", "auroc": "one class only"}.get(m, "division by zero")


def _check_int(v: Any, name: str, func: str, *, minimum: int) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise param_error(name, func, f"an integer >= {minimum}", v)


def _ci(x: np.ndarray, alpha: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    lo, hi = np.quantile(x, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def _spread(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.max() - v.min()) if v.size >= 2 else math.nan


def _permutation_pvalues(
    task: _Task,
    grouping: _Grouping,
    eligible: list[int],
    pcodes: np.ndarray,
    pgrid: np.ndarray,
    n_perm: int,
    threshold: float,
    n_bins: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    remap = np.full(len(grouping.labels), -1, np.int64)
    remap[eligible] = np.arange(len(eligible))
    g = remap[grouping.codes]
    keep = g >= 0
    h = build_hist(
        pcodes[keep],
        pgrid,
        task.y[keep],
        g[keep],
        len(eligible),
        threshold=float(threshold),
        n_bins=n_bins,
    )
    k = len(eligible)

    def stats(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for m in TESTED[:-1]:
            v = d[m][:, :k]
            with np.errstate(invalid="ignore"):
                out[m] = (
                    np.nanmax(v, axis=1) - np.nanmin(v, axis=1)
                    if np.isfinite(v).any()
                    else np.full(len(v), np.nan)
                )
        out["equalized_odds_difference"] = np.maximum(
            out["true_positive_rate"], out["false_positive_rate"]
        )
        return out

    obs = stats(evaluate(h, h.base_weights()))
    null = _collect(stats(d) for d in iter_permutations(h, n_perm, rng))
    return {m: permutation_pvalue(float(obs[m][0]), null[m]) for m in TESTED}


def _gap_rows(
    task: _Task,
    grouping: _Grouping,
    point: dict[str, np.ndarray],
    reps: dict[str, np.ndarray],
    eligible: list[int],
    reasons: list[str],
    alpha: float,
    pvals: dict[str, float],
    es_variant: str,
) -> list[dict[str, Any]]:
    G = len(grouping.labels)
    labels = grouping.labels
    out: list[dict[str, Any]] = []
    twins = {
        "true_negative_rate": "false_positive_rate",
        "false_negative_rate": "true_positive_rate",
        "underdiagnosis_rate": "true_positive_rate"
        if task.underdiagnosis == "false_negative_rate"
        else "false_positive_rate",
        "demographic_parity_difference": "selection_rate",
        "equal_opportunity_difference": "true_positive_rate",
    }
    skipped_txt = "; ".join(f"{labels[g]}: {reasons[g]}" for g in range(G) if reasons[g])

    def base(metric: str, kind: str) -> dict[str, Any]:
        return {
            "attribute": grouping.name,
            "class": task.name,
            "metric": metric,
            "kind": kind,
            "value": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
            "p_adjusted": math.nan,
            "group_high": "",
            "group_low": "",
            "worst_group": "",
            "n_groups": len(eligible),
            "status": "skipped",
            "reason": "",
            "note": "",
            "tested": False,
            "p_from": "",
        }

    diffs: dict[str, tuple[float, np.ndarray]] = {}
    for m in GAP_METRICS:
        spec = METRICS[m]
        valid = [g for g in eligible if math.isfinite(point[m][g])]
        if len(valid) < 2:
            reason = "fewer than two groups can be compared" + (
                f" ({skipped_txt})" if skipped_txt else ""
            )
            for kind in ("difference", "worst_to_overall", "worst_group"):
                if kind != "difference" and spec.higher_is_better is None:
                    continue
                r = base(m, kind)
                r["reason"] = reason
                out.append(r)
            diffs[m] = (math.nan, np.full(len(reps[m]), np.nan))
            continue
        vals = np.array([point[m][g] for g in valid])
        hi_g, lo_g = valid[int(np.argmax(vals))], valid[int(np.argmin(vals))]
        worst = lo_g if spec.higher_is_better else hi_g
        value = float(point[m][hi_g] - point[m][lo_g])
        rep = reps[m][:, hi_g] - reps[m][:, lo_g]
        diffs[m] = (value, rep)
        r = base(m, "difference")
        ci = _ci(rep, alpha)
        r.update(
            value=value,
            ci_low=ci[0],
            ci_high=ci[1],
            group_high=labels[hi_g],
            group_low=labels[lo_g],
            worst_group=labels[worst] if spec.higher_is_better is not None else "",
            status="ok",
            p_value=pvals.get(m, math.nan),
            tested=m in TESTED and bool(pvals),
            p_from=twins.get(m, m) if pvals else "",
        )
        if m in twins and pvals:
            r["p_value"] = pvals.get(twins[m], math.nan)
        out.append(r)
        if spec.higher_is_better is None:
            continue
        sign = 1.0 if spec.higher_is_better else -1.0
        r = base(m, "worst_to_overall")
        v2 = float(sign * (point[m][G] - point[m][worst]))
        ci = _ci(sign * (reps[m][:, G] - reps[m][:, worst]), alpha)
        r.update(
            value=v2,
            ci_low=ci[0],
            ci_high=ci[1],
            worst_group=labels[worst],
            group_high=labels[hi_g],
            group_low=labels[lo_g],
            status="ok",
        )
        out.append(r)
        r = base(m, "worst_group")
        ci = _ci(reps[m][:, worst], alpha)
        r.update(
            value=float(point[m][worst]),
            ci_low=ci[0],
            ci_high=ci[1],
            worst_group=labels[worst],
            group_high=labels[hi_g],
            group_low=labels[lo_g],
            status="ok",
        )
        out.append(r)
    # Fairlearn's aggregate differences (between_groups = max - min).
    for name, parts in (
        ("demographic_parity_difference", ("selection_rate",)),
        ("equal_opportunity_difference", ("true_positive_rate",)),
        ("equalized_odds_difference", ("true_positive_rate", "false_positive_rate")),
    ):
        part_values = [diffs[p][0] for p in parts]
        r = base(name, "difference")
        if not all(math.isfinite(v) for v in part_values):
            r["reason"] = "fewer than two groups can be compared" + (
                f" ({skipped_txt})" if skipped_txt else ""
            )
            out.append(r)
            continue
        which = parts[int(np.argmax(part_values))]
        rep = np.max(np.stack([diffs[p][1] for p in parts]), axis=0)
        ci = _ci(rep, alpha)
        src = next(x for x in out if x["metric"] == which and x["kind"] == "difference")
        r.update(
            value=float(max(part_values)),
            ci_low=ci[0],
            ci_high=ci[1],
            group_high=src["group_high"],
            group_low=src["group_low"],
            worst_group=src["worst_group"],
            status="ok",
            note=f"largest of {', '.join(parts)} differences ({which})"
            if len(parts) > 1
            else f"= {which} difference",
            tested=name in TESTED and bool(pvals),
            p_from=twins.get(name, name) if pvals else "",
        )
        r["p_value"] = pvals.get(name if name in TESTED else twins[name], math.nan)
        out.append(r)
    # Equity-scaled AUROC.
    r = base("auroc", "equity_scaled")
    valid = [g for g in eligible if math.isfinite(point["auroc"][g])]
    if len(valid) >= 2:

        def es(a: np.ndarray) -> np.ndarray:
            allv = a[:, G]
            grp = a[:, valid]
            spread = (
                np.abs(grp - allv[:, None]).sum(axis=1) if es_variant == "sum" else grp.std(axis=1)
            )
            return allv / (1.0 + spread)

        v = float(es(point["auroc"][None, :])[0])
        ci = _ci(es(reps["auroc"]), alpha)
        r.update(
            value=v,
            ci_low=ci[0],
            ci_high=ci[1],
            status="ok",
            note="ES-AUC = AUC / (1 + sum_g |AUC_g - AUC|) (FairCLIP/FairDomain)"
            if es_variant == "sum"
            else "ES-AUC = AUC / (1 + std_g AUC_g)",
        )
    else:
        r["reason"] = "fewer than two groups can be compared"
    out.append(r)
    return out


def adjust_gap_pvalues(gaps: pd.DataFrame, method: str) -> pd.DataFrame:
    """Fill ``p_adjusted`` across every row with ``tested`` True (one family).

    A row whose ``p_from`` names another metric (the FNR difference is the TPR
    difference, the demographic parity difference is the selection-rate difference) is the
    same test: it gets that row's adjusted p-value and does not count twice.
    """
    gaps = gaps.copy()
    tested = gaps["tested"].to_numpy(dtype=bool)
    adj = np.full(len(gaps), np.nan)
    if tested.any():
        adj[tested] = adjust_pvalues(gaps.loc[tested, "p_value"].to_numpy(dtype=np.float64), method)
    key = {
        (a, c, m): p
        for a, c, m, k, p, t in zip(
            gaps["attribute"], gaps["class"], gaps["metric"], gaps["kind"], adj, tested, strict=True
        )
        if t and k == "difference"
    }
    for i, (a, c, src, k) in enumerate(
        zip(gaps["attribute"], gaps["class"], gaps["p_from"], gaps["kind"], strict=True)
    ):
        if src and k == "difference" and not tested[i]:
            adj[i] = key.get((a, c, src), np.nan)
    gaps["p_adjusted"] = adj
    return gaps


def subgroup_gap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    metric: str = "auroc",
    kind: str = "difference",
    threshold: float = 0.5,
    patient_id: ArrayLike | None = None,
    class_name: str | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    n_permutations: int = 1000,
    min_group_size: int = 30,
    min_class_count: int = 5,
    random_state: int = 0,
) -> GapResult:
    """The gap in ``metric`` between the groups of one sensitive attribute, with its CI.

    Parameters
    ----------
    y_true, y_score : array-like
        As in :func:`group_metrics`.
    groups : array-like of shape (n_samples,), Series or one-column DataFrame
    metric : str
        A metric name (``"auroc"``, ``"true_positive_rate"``, ...) or a Fairlearn
        difference (``"equalized_odds_difference"``, ``"demographic_parity_difference"``,
        ``"equal_opportunity_difference"``).
    kind : {"difference", "worst_to_overall", "worst_group"}
        Highest minus lowest group, overall minus the worst group, or the worst group's
        value.

    Returns
    -------
    GapResult

    Raises
    ------
    InvalidInputError
        When fewer than two groups are large enough to compare.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 2, 600)
    >>> s = np.clip(0.35 * y + rng.uniform(0, 0.65, 600), 0, 1)
    >>> r = subgroup_gap(y, s, groups=np.repeat(["A", "B"], 300), n_boot=200, n_permutations=200)
    >>> r.metric, r.kind, bool(r.ci[0] <= r.value <= r.ci[1])
    ('auroc', 'difference', True)
    """
    func = "subgroup_gap"
    if metric not in GAP_METRICS and metric not in FAIRLEARN_DIFFERENCES:
        raise param_error("metric", func, f"one of {GAP_METRICS + FAIRLEARN_DIFFERENCES}", metric)
    if kind not in ("difference", "worst_to_overall", "worst_group"):
        raise param_error(
            "kind", func, "one of ('difference', 'worst_to_overall', 'worst_group')", kind
        )
    if metric in FAIRLEARN_DIFFERENCES and kind != "difference":
        raise param_error("kind", func, f"'difference' for {metric}", kind)
    if (
        metric in GAP_METRICS
        and kind != "difference"
        and metric_spec(metric, func).higher_is_better is None
    ):
        raise param_error(
            "kind", func, f"'difference' for {metric} (it has no 'worse' direction)", kind
        )
    if isinstance(groups, pd.DataFrame):
        if groups.shape[1] != 1:
            raise param_error(
                "groups",
                func,
                "one attribute (use group_metrics for several)",
                list(groups.columns),
            )
        groups = groups.iloc[:, 0]
    gm = group_metrics(
        y_true,
        y_score,
        groups=groups,
        threshold=threshold,
        patient_id=patient_id,
        n_boot=n_boot,
        confidence=confidence,
        n_permutations=n_permutations,
        p_adjust="none",
        min_group_size=min_group_size,
        min_class_count=min_class_count,
        random_state=random_state,
    )
    res = gm.gap(
        gm.attributes[0],
        metric,
        kind=kind,
        class_name=class_name if class_name is not None or len(gm.class_names) == 1 else None,
    )
    if res.status == "skipped":
        detail = (
            "; ".join(
                f"{r.group}: {r.reason}" for r in res.table.itertuples() if r.status == "skipped"
            )
            or res.reason
        )
        raise InvalidInputError(
            MSG_FEW_GROUPS.format(func=func, name=gm.attributes[0], detail=detail)
        )
    return res
