"""Rows of the group-metric tables: the long table, the overall rows, the calibration table.

Pure formatting of what the estimator computed: skipped groups get no numbers, counts get
no CI.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medaudit.fairness._engine import Hist
from medaudit.fairness._inputs import SKIP_UNDEFINED, Grouping
from medaudit.fairness._metrics import METRICS
from medaudit.stats import CalibrationTerms, percentile_intervals

__all__ = [
    "CALIBRATION_COLUMNS",
    "TABLE_COLUMNS",
    "calibration_rows",
    "group_rows",
    "overall_rows",
]

TABLE_COLUMNS = [
    "attribute",
    "class",
    "group",
    "n",
    "n_pos",
    "n_neg",
    "n_patients",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "status",
    "reason",
    "group_status",
    "group_reason",
]
CALIBRATION_COLUMNS = [
    "attribute",
    "class",
    "group",
    "n",
    "ece",
    "p_value",
    "spiegelhalter_z",
    "spiegelhalter_p",
    "status",
]


def _undefined_why(m: str) -> str:
    return {"ppv": "no patient is flagged", "auroc": "one class only"}.get(m, "division by zero")


def group_rows(
    grouping: Grouping,
    task_name: str,
    h: Hist,
    point: dict[str, np.ndarray],
    reps: dict[str, np.ndarray] | None,
    reasons: list[str],
    confidence: float,
) -> list[dict[str, Any]]:
    """Rows of the long table: one per (group, metric), skipped groups without numbers."""
    g = grouping
    cc = h.class_counts()
    patients = h.patient_counts()
    rows = []
    for m in METRICS:
        ci = (
            percentile_intervals(reps[m], confidence)
            if reps is not None
            else np.full((len(g.labels) + 1, 2), np.nan)
        )
        for gi, lab in enumerate(g.labels):
            status, reason = ("skipped", reasons[gi]) if reasons[gi] else ("ok", "")
            val, (lo, hi) = float(point[m][gi]), ci[gi]
            if status == "ok" and not math.isfinite(val):
                status, reason = "skipped", SKIP_UNDEFINED.format(metric=m, why=_undefined_why(m))
            if status == "skipped" or m == "count":
                lo = hi = math.nan
                val = val if m == "count" else math.nan
            rows.append(
                {
                    "attribute": g.name,
                    "class": task_name,
                    "group": lab,
                    "n": int(cc[0, gi] + cc[1, gi]),
                    "n_pos": int(cc[1, gi]),
                    "n_neg": int(cc[0, gi]),
                    "n_patients": int(patients[gi]),
                    "metric": m,
                    "value": val,
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "status": status,
                    "reason": reason,
                    "group_status": "skipped" if reasons[gi] else "ok",
                    "group_reason": reasons[gi],
                }
            )
    return rows


def calibration_rows(
    grouping: Grouping,
    task_name: str,
    h: Hist,
    ece: np.ndarray,
    terms: CalibrationTerms,
    p: np.ndarray,
    reasons: list[str],
) -> list[dict[str, Any]]:
    """Rows of the calibration table: the ECE, its dual test, Spiegelhalter's z."""
    cc = h.class_counts()
    rows = []
    for i, lab in enumerate(grouping.labels):
        ok = not reasons[i]
        rows.append(
            {
                "attribute": grouping.name,
                "class": task_name,
                "group": lab,
                "n": int(cc[0, i] + cc[1, i]),
                "ece": float(ece[i]) if ok else math.nan,
                "p_value": float(p[i]) if ok else math.nan,
                "spiegelhalter_z": float(terms.z[i]) if ok else math.nan,
                "spiegelhalter_p": float(terms.p_value[i]) if ok else math.nan,
                "status": "ok" if ok else "skipped",
            }
        )
    return rows


def overall_rows(
    task_name: str,
    point: dict[str, np.ndarray],
    reps: dict[str, np.ndarray] | None,
    confidence: float,
) -> list[dict[str, Any]]:
    """Rows of the overall table (the last column of every metric: all rows)."""
    ci = (
        percentile_intervals(reps[m], confidence)[-1] if reps is not None else (math.nan, math.nan)
        for m in METRICS
    )
    return [
        {
            "class": task_name,
            "metric": m,
            "value": float(point[m][-1]),
            "ci_low": float(lo) if m != "count" else math.nan,
            "ci_high": float(hi) if m != "count" else math.nan,
        }
        for m, (lo, hi) in zip(METRICS, ci, strict=True)
    ]
