"""Fairness assertions for test suites: fail with a readable per-group table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._group import (
    FAIRLEARN_DIFFERENCES,
    GapResult,
    _format_group_table,
    group_metrics,
    subgroup_gap,
)
from medaudit.fairness._metrics import GAP_METRICS, METRICS

__all__ = ["FairnessAssertionError", "assert_group_metric", "assert_subgroup_gap"]

MSG_SINGLE_CLASS_GROUP = (
    "{func}: group {group!r} has only {which} labels (n={n}); {metric} cannot be measured "
    "in it. Remove or merge that group before asserting on it."
)
MSG_NO_BOUND = "{func}: give min_value, max_value or both."
MSG_ALL_SKIPPED = (
    "{func}: no group is large enough to assert on ({detail}); lower min_group_size / "
    "min_class_count or use more data."
)


class FairnessAssertionError(AssertionError):
    """A fairness assertion failed; ``result`` holds the evidence (table, CI, threshold)."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


def _groups_array(groups: Any) -> Any:
    if isinstance(groups, pd.DataFrame):
        if groups.shape[1] != 1:
            raise param_error(
                "groups", "assert_subgroup_gap", "one attribute column", list(groups.columns)
            )
        return groups.iloc[:, 0]
    return groups


def _refuse_single_class(y_true: ArrayLike, groups: Any, func: str, metric: str) -> None:
    y = np.asarray(y_true)
    if y.ndim != 1:
        return
    g = pd.Series(
        np.asarray(groups, dtype=object) if not isinstance(groups, pd.Series) else groups.to_numpy()
    )
    if len(g) != len(y):
        return  # group_metrics reports the length mismatch
    codes, uniq = pd.factorize(g, sort=True)
    ok = codes >= 0
    yb = y[ok].astype(bool) if np.isin(y, (0, 1)).all() else None
    if yb is None:
        return
    n_pos = np.bincount(codes[ok], weights=yb, minlength=len(uniq))
    n_all = np.bincount(codes[ok], minlength=len(uniq))
    for i in range(len(uniq)):
        if n_pos[i] == 0 or n_pos[i] == n_all[i]:
            which = "negative" if n_pos[i] == 0 else "positive"
            raise InvalidInputError(
                MSG_SINGLE_CLASS_GROUP.format(
                    func=func, group=str(uniq[i]), which=which, n=int(n_all[i]), metric=metric
                )
            )


def assert_subgroup_gap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    metric: str = "auroc",
    max_gap: float = 0.05,
    ci: bool = True,
    kind: str = "difference",
    threshold: float = 0.5,
    patient_id: ArrayLike | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    min_group_size: int = 30,
    min_class_count: int = 5,
    random_state: int = 0,
) -> GapResult:
    """Assert that the gap in ``metric`` between groups is at most ``max_gap``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels.
    y_score : array-like of shape (n_samples,)
        Predicted probabilities.
    groups : array-like of shape (n_samples,)
        One sensitive attribute.
    metric : str
        ``"auroc"``, ``"true_positive_rate"``, ``"underdiagnosis_rate"``, ... or a
        Fairlearn difference (``"equalized_odds_difference"``, ...).
    max_gap : float
        Largest acceptable gap.
    ci : bool
        True (default): the *upper bound* of the ``confidence`` CI must be <= ``max_gap``,
        i.e. the data must show the gap is small; small groups then fail for lack of
        evidence. False: the point estimate must be <= ``max_gap``.
    kind : {"difference", "worst_to_overall"}
    threshold, patient_id, n_boot, confidence, min_group_size, min_class_count, random_state
        As in :func:`medaudit.fairness.group_metrics`.

    Returns
    -------
    GapResult
        When the assertion holds.

    Raises
    ------
    FairnessAssertionError
        With the per-group table (group, n, value, CI) and the threshold.
    InvalidInputError
        Bad input: NaN scores, length mismatch, a single-class group, fewer than two
        groups large enough.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> s = np.clip(0.4 * y + rng.uniform(0, 0.6, 2000), 0, 1)
    >>> g = np.tile(["A", "B"], 1000)
    >>> r = assert_subgroup_gap(y, s, groups=g, max_gap=0.1, n_boot=200)
    >>> r.value < 0.1
    True
    """
    func = "assert_subgroup_gap"
    if (
        not isinstance(max_gap, (int, float))
        or isinstance(max_gap, bool)
        or not math.isfinite(max_gap)
    ):
        raise param_error("max_gap", func, "a finite number", max_gap)
    if not isinstance(ci, bool):
        raise param_error("ci", func, "True or False", ci)
    if metric not in GAP_METRICS and metric not in FAIRLEARN_DIFFERENCES:
        raise param_error("metric", func, f"one of {GAP_METRICS + FAIRLEARN_DIFFERENCES}", metric)
    groups = _groups_array(groups)
    _refuse_single_class(y_true, groups, func, metric)
    res = subgroup_gap(
        y_true,
        y_score,
        groups=groups,
        metric=metric,
        kind=kind,
        threshold=threshold,
        patient_id=patient_id,
        n_boot=n_boot,
        confidence=confidence,
        n_permutations=0,
        min_group_size=min_group_size,
        min_class_count=min_class_count,
        random_state=random_state,
    )
    judged = res.ci[1] if ci else res.value
    if not math.isfinite(judged) or judged > max_gap:
        what = f"upper {confidence:.0%} CI bound {res.ci[1]:.3f}" if ci else f"gap {res.value:.3f}"
        label = METRICS[metric].label if metric in METRICS else metric
        msg = (
            f"{label} {kind.replace('_', ' ')} across {res.attribute!r} is {res.value:.3f} "
            f"({confidence:.0%} CI {res.ci[0]:.3f} to {res.ci[1]:.3f}; {res.group_high} vs "
            f"{res.group_low}).\n"
            f"Threshold: max_gap = {max_gap:g} ({'upper CI bound' if ci else 'point estimate'} "
            f"must be <= {max_gap:g}); the {what} exceeds it.\n\n" + res.format_table()
        )
        if ci and res.value <= max_gap:
            msg += (
                "\n\nThe point estimate is within the threshold but the CI is too wide to "
                "show it: more data per group would narrow it (or use ci=False)."
            )
        raise FairnessAssertionError(msg, res)
    return res


def assert_group_metric(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    metric: str = "auroc",
    min_value: float | None = None,
    max_value: float | None = None,
    ci: bool = True,
    threshold: float = 0.5,
    patient_id: ArrayLike | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    min_group_size: int = 30,
    min_class_count: int = 5,
    random_state: int = 0,
) -> pd.DataFrame:
    """Assert that ``metric`` is within bounds in every group large enough to measure.

    Parameters
    ----------
    y_true, y_score, groups
        As in :func:`assert_subgroup_gap`.
    metric : str
        A group metric name (``"auroc"``, ``"true_positive_rate"``, ...).
    min_value, max_value : float, optional
        Bounds; at least one is required.
    ci : bool
        True (default): the whole CI must lie within the bounds (lower bound >=
        ``min_value``, upper bound <= ``max_value``). False: the point estimate must.

    Returns
    -------
    DataFrame
        The per-group table ``group, n, n_pos, value, ci_low, ci_high, status, reason``;
        skipped groups (too small) are listed but not asserted on.

    Raises
    ------
    FairnessAssertionError
        Naming every group out of bounds, with the table and the bounds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> s = np.clip(0.5 * y + rng.uniform(0, 0.5, 2000), 0, 1)
    >>> t = assert_group_metric(y, s, groups=np.tile(["A", "B"], 1000), min_value=0.9, n_boot=200)
    >>> t["group"].tolist()
    ['A', 'B']
    """
    func = "assert_group_metric"
    if min_value is None and max_value is None:
        raise InvalidInputError(MSG_NO_BOUND.format(func=func))
    for name, v in (("min_value", min_value), ("max_value", max_value)):
        if v is not None and (
            not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
        ):
            raise param_error(name, func, "a finite number or None", v)
    if not isinstance(ci, bool):
        raise param_error("ci", func, "True or False", ci)
    if metric not in METRICS:
        raise param_error("metric", func, f"one of {tuple(METRICS)}", metric)
    groups = _groups_array(groups)
    _refuse_single_class(y_true, groups, func, metric)
    gm = group_metrics(
        y_true,
        y_score,
        groups=groups,
        threshold=threshold,
        patient_id=patient_id,
        n_boot=n_boot,
        confidence=confidence,
        n_permutations=0,
        min_group_size=min_group_size,
        min_class_count=min_class_count,
        random_state=random_state,
    )
    t = gm.table
    t = t[(t["attribute"] == gm.attributes[0]) & (t["metric"] == metric)]
    table = t[
        ["group", "n", "n_pos", "value", "ci_low", "ci_high", "status", "reason"]
    ].reset_index(drop=True)
    ok_rows = table[table["status"] == "ok"]
    if ok_rows.empty:
        detail = "; ".join(f"{r.group}: {r.reason}" for r in table.itertuples())
        raise InvalidInputError(MSG_ALL_SKIPPED.format(func=func, detail=detail))
    lo_col, hi_col = ("ci_low", "ci_high") if ci else ("value", "value")
    bad = []
    for r in ok_rows.itertuples():
        lo, hi = getattr(r, lo_col), getattr(r, hi_col)
        if min_value is not None and not (math.isfinite(lo) and lo >= min_value):
            bad.append(
                f"{r.group} ({'lower CI bound' if ci else 'value'} {lo:.3f} < {min_value:g})"
            )
        if max_value is not None and not (math.isfinite(hi) and hi <= max_value):
            bad.append(
                f"{r.group} ({'upper CI bound' if ci else 'value'} {hi:.3f} > {max_value:g})"
            )
    if bad:
        label = METRICS[metric].label
        judged = f"whole {confidence:.0%} CI" if ci else "point estimate"
        bounds = " and ".join(
            x
            for x in (
                f">= {min_value:g}" if min_value is not None else "",
                f"<= {max_value:g}" if max_value is not None else "",
            )
            if x
        )
        msg = (
            f"{label} is out of bounds in {len(bad)} group(s) of {gm.attributes[0]!r}: "
            + "; ".join(bad)
            + f".\nThreshold: {label} {bounds} ({judged}).\n\n"
            + _format_group_table(table, label, confidence)
        )
        raise FairnessAssertionError(msg, table)
    return table
