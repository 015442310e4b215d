"""Gaps between groups: simultaneous intervals, p-values and the multiple-testing family.

A gap picks its groups from the data (the best and the worst), so its interval must
hold for whichever pair turns out extreme: every interval here comes from bootstrap
intervals that hold simultaneously over all the pairs (or all the groups) involved
(:func:`medaudit.stats.range_interval`, :func:`medaudit.stats.extreme_interval`). The
default p-value of a difference is the test dual to its interval (``p <= 1 -
confidence`` exactly when the interval excludes 0): one null, "the metric is equal in
every group", for both. Holm's or Benjamini-Hochberg's adjustment runs over the gaps
actually reported (``p_family``), each test counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medaudit.fairness._inputs import Grouping, Task
from medaudit.fairness._metrics import GAP_METRICS, METRICS
from medaudit.stats import (
    adjust_pvalues,
    extreme_interval,
    percentile_intervals,
    range_interval,
)

__all__ = [
    "FAIRLEARN_DIFFERENCES",
    "GAP_COLUMNS",
    "TESTED",
    "GroupingEvidence",
    "adjust_gap_pvalues",
    "family_metrics",
    "gap_rows",
]

#: Gap statistics with a test of their own; the others share a twin's p-value.
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
#: Fairlearn difference -> the group metrics it is the range of.
FAIRLEARN_PARTS: dict[str, tuple[str, ...]] = {
    "demographic_parity_difference": ("selection_rate",),
    "equal_opportunity_difference": ("true_positive_rate",),
    "equalized_odds_difference": ("true_positive_rate", "false_positive_rate"),
}
GAP_COLUMNS = [
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
    "calibration_p",
]
FEW_GROUPS = "fewer than two groups can be compared"
NOTE_SKIPPED = (
    "excludes skipped group(s) {groups}; with them, as Fairlearn computes it over every "
    "group: {value}"
)


def _twins(task: Task) -> dict[str, str]:
    """Gap metric -> the tested metric whose p-value it shares."""
    return {
        "true_negative_rate": "false_positive_rate",
        "false_negative_rate": "true_positive_rate",
        "underdiagnosis_rate": "true_positive_rate"
        if task.underdiagnosis == "false_negative_rate"
        else "false_positive_rate",
        "demographic_parity_difference": "selection_rate",
        "equal_opportunity_difference": "true_positive_rate",
    }


def family_metrics(family: tuple[str, ...] | None, task: Task) -> set[str]:
    """The tested metrics behind the gaps of ``family`` (None: every tested metric)."""
    if family is None:
        return set(TESTED)
    tw = _twins(task)
    return {tw.get(m, m) for m in family} & set(TESTED)


@dataclass(frozen=True)
class GroupingEvidence:
    """Everything the gap rows of one (class, attribute) are computed from.

    ``point`` and ``reps`` map a metric to arrays of shape (n_groups + 1,) and
    (n_replicates, n_groups + 1) (last column: all groups); ``permutation_p`` holds the
    permutation p-values per tested metric when they replace the bootstrap's.
    """

    task: Task
    grouping: Grouping
    point: dict[str, np.ndarray]
    reps: dict[str, np.ndarray]
    eligible: list[int]
    reasons: list[str]
    calibration_p: float
    confidence: float
    es_variant: str
    permutation_p: dict[str, float] | None


def _row(ev: GroupingEvidence, metric: str, kind: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "attribute": ev.grouping.name,
        "class": ev.task.name,
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
        "n_groups": len(ev.eligible),
        "status": "skipped",
        "reason": "",
        "note": "",
        "tested": False,
        "p_from": "",
        "calibration_p": math.nan,
    }
    row.update(values)
    return row


def _skipped_text(ev: GroupingEvidence) -> str:
    labels = ev.grouping.labels
    return "; ".join(f"{labels[g]}: {r}" for g, r in enumerate(ev.reasons) if r)


def _few_reason(ev: GroupingEvidence) -> str:
    txt = _skipped_text(ev)
    return FEW_GROUPS + (f" ({txt})" if txt else "")


def _p(ev: GroupingEvidence, metric: str, dual: float) -> tuple[float, bool, str]:
    """(raw p-value, counts as a test, metric whose test it is) for a difference row."""
    src = _twins(ev.task).get(metric, metric)
    p = dual if ev.permutation_p is None else ev.permutation_p.get(src, math.nan)
    return p, metric in TESTED and math.isfinite(p), src


def _all_groups_range(ev: GroupingEvidence, parts: tuple[str, ...]) -> float:
    """The gap over every group with a value, skipped ones included (Fairlearn's)."""
    n_g = len(ev.grouping.labels)
    out = []
    for m in parts:
        v = ev.point[m][:n_g]
        v = v[np.isfinite(v)]
        out.append(float(v.max() - v.min()) if v.size >= 2 else math.nan)
    return max(out)


def _skip_note(ev: GroupingEvidence, parts: tuple[str, ...]) -> str:
    skipped = [ev.grouping.labels[g] for g, r in enumerate(ev.reasons) if r]
    if not skipped:
        return ""
    full = _all_groups_range(ev, parts)
    value = "undefined" if not math.isfinite(full) else f"{full:.6g}"
    return NOTE_SKIPPED.format(groups=", ".join(skipped), value=value)


# Every metric but the count is a rate, a score or an AUROC in [0, 1]: gap intervals are
# cut to where the gaps can lie.
_UNIT = (0.0, 1.0)


def _valid(ev: GroupingEvidence, metric: str) -> list[int]:
    return [g for g in ev.eligible if math.isfinite(ev.point[metric][g])]


def _metric_rows(ev: GroupingEvidence, m: str) -> list[dict[str, Any]]:
    spec = METRICS[m]
    kinds = ["difference"] + (
        ["worst_to_overall", "worst_group"] if spec.higher_is_better is not None else []
    )
    valid = _valid(ev, m)
    if len(valid) < 2:
        return [_row(ev, m, k, reason=_few_reason(ev)) for k in kinds]
    labels, n_g = ev.grouping.labels, len(ev.grouping.labels)
    pts, reps = ev.point[m], ev.reps[m]
    unit = _UNIT if m != "count" else None
    rng_ = range_interval(pts[valid], reps[:, valid], ev.confidence, bounds=unit)
    hi_g, lo_g = valid[rng_.high], valid[rng_.low]
    worst = lo_g if spec.higher_is_better else hi_g
    p, tested, src = _p(ev, m, rng_.p_value)
    who = {"group_high": labels[hi_g], "group_low": labels[lo_g]}
    out = [
        _row(
            ev,
            m,
            "difference",
            value=rng_.value,
            ci_low=rng_.ci[0],
            ci_high=rng_.ci[1],
            worst_group=labels[worst] if spec.higher_is_better is not None else "",
            status="ok",
            p_value=p,
            tested=tested,
            p_from=src,
            note=_skip_note(ev, (m,)),
            calibration_p=ev.calibration_p if m == "ece" else math.nan,
            **who,
        )
    ]
    if spec.higher_is_better is None:
        return out
    sign = 1.0 if spec.higher_is_better else -1.0
    dev = extreme_interval(
        sign * (pts[n_g] - pts[valid]),
        sign * (reps[:, [n_g]] - reps[:, valid]),
        ev.confidence,
        which="max",
        bounds=(-1.0, 1.0) if unit else None,
    )
    ext = extreme_interval(
        pts[valid],
        reps[:, valid],
        ev.confidence,
        which="min" if spec.higher_is_better else "max",
        bounds=unit,
    )
    for kind, res in (("worst_to_overall", dev), ("worst_group", ext)):
        out.append(
            _row(
                ev,
                m,
                kind,
                value=res.value,
                ci_low=res.ci[0],
                ci_high=res.ci[1],
                worst_group=labels[worst],
                status="ok",
                **who,
            )
        )
    return out


def _fairlearn_rows(ev: GroupingEvidence, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, parts in FAIRLEARN_PARTS.items():
        valid = [_valid(ev, m) for m in parts]
        if any(len(v) < 2 for v in valid):
            out.append(_row(ev, name, "difference", reason=_few_reason(ev)))
            continue
        res = range_interval(
            [ev.point[m][v] for m, v in zip(parts, valid, strict=True)],
            [ev.reps[m][:, v] for m, v in zip(parts, valid, strict=True)],
            ev.confidence,
            bounds=_UNIT,
        )
        ranges = [
            float(np.nanmax(ev.point[m][v]) - np.nanmin(ev.point[m][v]))
            for m, v in zip(parts, valid, strict=True)
        ]
        which = parts[int(np.argmax(ranges))]
        src = next(r for r in done if r["metric"] == which and r["kind"] == "difference")
        p, tested, p_from = _p(ev, name, res.p_value)
        out.append(
            _row(
                ev,
                name,
                "difference",
                value=res.value,
                ci_low=res.ci[0],
                ci_high=res.ci[1],
                group_high=src["group_high"],
                group_low=src["group_low"],
                worst_group=src["worst_group"],
                status="ok",
                p_value=p,
                tested=tested,
                p_from=p_from,
                note="; ".join(
                    x
                    for x in (
                        f"largest of {', '.join(parts)} differences ({which})"
                        if len(parts) > 1
                        else f"= {which} difference",
                        _skip_note(ev, parts),
                    )
                    if x
                ),
            )
        )
    return out


def _equity_scaled_row(ev: GroupingEvidence) -> dict[str, Any]:
    valid = _valid(ev, "auroc")
    if len(valid) < 2:
        return _row(ev, "auroc", "equity_scaled", reason=FEW_GROUPS)
    n_g = len(ev.grouping.labels)

    def es(a: np.ndarray) -> np.ndarray:
        allv = a[:, n_g]
        grp = a[:, valid]
        if ev.es_variant == "sum":
            spread = np.abs(grp - allv[:, None]).sum(axis=1)
        else:
            spread = grp.std(axis=1)
        return allv / (1.0 + spread)

    lo, hi = percentile_intervals(es(ev.reps["auroc"])[:, None], ev.confidence)[0]
    return _row(
        ev,
        "auroc",
        "equity_scaled",
        value=float(es(ev.point["auroc"][None, :])[0]),
        ci_low=float(lo),
        ci_high=float(hi),
        status="ok",
        note="ES-AUC = AUC / (1 + sum_g |AUC_g - AUC|) (FairCLIP/FairDomain)"
        if ev.es_variant == "sum"
        else "ES-AUC = AUC / (1 + std_g AUC_g)",
    )


def gap_rows(ev: GroupingEvidence) -> list[dict[str, Any]]:
    """Every gap row of one (class, attribute): per metric, Fairlearn's, ES-AUC."""
    out: list[dict[str, Any]] = []
    for m in GAP_METRICS:
        out += _metric_rows(ev, m)
    out += _fairlearn_rows(ev, out)
    out.append(_equity_scaled_row(ev))
    return out


def adjust_gap_pvalues(
    gaps: pd.DataFrame, method: str, family: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Fill ``p_adjusted`` over the tests of the reported gaps (one family).

    A row whose ``p_from`` names another metric (the FNR difference is the TPR
    difference, the demographic parity difference is the selection-rate difference) is the
    same test: it gets that row's adjusted p-value and does not count twice. With
    ``family`` (gap metric names), only the tests behind those gaps are adjusted, over
    each attribute and class; the other rows get NaN.
    """
    gaps = gaps.copy()
    tested = gaps["tested"].to_numpy(dtype=bool).copy()
    if family is not None:
        wanted = set(family)
        in_family = {
            (a, c, src)
            for a, c, m, src, k in zip(
                gaps["attribute"],
                gaps["class"],
                gaps["metric"],
                gaps["p_from"],
                gaps["kind"],
                strict=True,
            )
            if m in wanted and k == "difference"
        }
        tested &= np.array(
            [
                (a, c, m) in in_family
                for a, c, m in zip(gaps["attribute"], gaps["class"], gaps["metric"], strict=True)
            ],
            dtype=bool,
        )
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
