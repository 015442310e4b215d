"""Continuous attributes (age): Pearson r with the score and with the absolute error."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medaudit.report import Check, Policy, Threshold

if TYPE_CHECKING:
    from medaudit.fairness._group import GroupMetrics

__all__ = ["PEARSON_THRESHOLD", "continuous_association", "continuous_checks"]

PEARSON_THRESHOLD = Threshold("<=", 0.10, "minor")


def _check_id(attr: str, cls: str, suffix: str, multiclass: bool) -> str:
    return f"fairness.{attr}.{cls}.{suffix}" if multiclass else f"fairness.{attr}.{suffix}"


def continuous_association(
    values: np.ndarray,
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    attribute: str,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Pearson r between a continuous attribute (age) and the score / absolute error.

    Rows with a missing attribute are dropped. The CI is Fisher's z interval.

    Returns
    -------
    DataFrame
        ``attribute, target, n, r, ci_low, ci_high, p_value, status, reason`` with targets
        ``score`` and ``absolute_error`` (``|y - score|``).

    Examples
    --------
    >>> age = np.arange(100.0)
    >>> t = continuous_association(age, age % 2, age / 100, attribute="age")
    >>> t.loc[0, "target"], int(t.loc[0, "n"]), round(float(t.loc[0, "r"]), 6)
    ('score', 100, 1.0)
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    x = x[ok]
    y = np.asarray(y_true, dtype=np.float64)[ok]
    s = np.asarray(y_score, dtype=np.float64)[ok]
    rows = []
    for target, v in (("score", s), ("absolute_error", np.abs(y - s))):
        row: dict[str, Any] = {"attribute": attribute, "target": target, "n": int(len(x))}
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(v) == 0:
            row.update(
                r=math.nan,
                ci_low=math.nan,
                ci_high=math.nan,
                p_value=math.nan,
                status="skipped",
                reason="fewer than 3 rows or a constant variable",
            )
        else:
            res = stats.pearsonr(x, v)
            ci = res.confidence_interval(confidence_level=confidence)
            row.update(
                r=float(res.statistic),
                ci_low=float(ci.low),
                ci_high=float(ci.high),
                p_value=float(res.pvalue),
                status="ok",
                reason="",
            )
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "attribute",
            "target",
            "n",
            "r",
            "ci_low",
            "ci_high",
            "p_value",
            "status",
            "reason",
        ],
    )


def continuous_checks(
    meta: pd.DataFrame,
    y: np.ndarray,
    s: np.ndarray,
    gm: GroupMetrics,
    policy: Policy,
    continuous: Sequence[str],
    notes: list[str],
) -> tuple[list[Check], pd.DataFrame | None]:
    """Pearson r between each continuous attribute and the score / absolute error."""
    checks: list[Check] = []
    frames = []
    multiclass = len(gm.class_names) > 1
    for col in continuous:
        if col not in meta.columns:
            notes.append(f"No {col!r} column: Pearson r with {col} not computed.")
            continue
        if not pd.api.types.is_numeric_dtype(meta[col]):
            notes.append(f"Column {col!r} is not numeric: Pearson r not computed.")
            continue
        for cls_i, cls in enumerate(gm.class_names):
            yy = (
                (y == (cls_i if multiclass else 1)).astype(float)
                if np.ndim(y) == 1
                else y[:, cls_i]
            )
            ss = s if np.ndim(s) == 1 else s[:, cls_i]
            t = continuous_association(
                meta[col].to_numpy(dtype=np.float64, na_value=np.nan),
                yy,
                ss,
                attribute=col,
                confidence=float(policy.setting("confidence")),
            )
            t.insert(1, "class", cls)
            frames.append(t)
            err = t[t["target"] == "absolute_error"].iloc[0]
            checks.append(_pearson_check(col, cls, multiclass, err, gm, policy))
    return checks, (pd.concat(frames, ignore_index=True) if frames else None)


def _pearson_check(
    col: str, cls: str, multiclass: bool, err: pd.Series, gm: GroupMetrics, policy: Policy
) -> Check:
    cid = _check_id(col, cls, "error_abs_pearson_r", multiclass)
    desc = f"|Pearson r| between {col} and the absolute error" + (f" ({cls})" if multiclass else "")
    if err["status"] == "skipped":
        return policy.skipped(cid, desc, str(err["reason"]))
    lo, hi = float(err["ci_low"]), float(err["ci_high"])
    abs_ci = (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
    chk = policy.judge(
        cid,
        desc,
        abs(float(err["r"])),
        ci=abs_ci,
        default=PEARSON_THRESHOLD,
        advice=(
            f"Errors change with {col}; check performance in the extreme {col} "
            "groups and their representation in training."
        ),
    )
    why = f"r = {float(err['r']):.3f}, {gm.confidence:.0%} CI [{lo:.3f}, {hi:.3f}] (Fisher z)"
    return dataclasses.replace(chk, reason="; ".join(x for x in (chk.reason, why) if x))
