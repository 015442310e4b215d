"""Fairness assertions for test suites: fail with a readable per-group table.

The assertions decide as the report does (:meth:`medaudit.report.Check.evaluate`): with
``ci=True`` an assertion fails when the CI lies beyond the threshold, passes when it lies
within, and is *inconclusive* when it straddles it. An inconclusive result raises
:class:`FairnessInconclusiveError` (an :class:`AssertionError`, so the test still does
not pass silently) whose message starts with "inconclusive:" and says roughly how many
patients per group would decide it; ``inconclusive="skip"`` skips the test instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np  # noqa: F401 - the doctests use it
import pandas as pd
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._group import (
    FAIRLEARN_DIFFERENCES,
    GapResult,
    format_group_table,
    group_metrics,
    subgroup_gap,
)
from medaudit.fairness._metrics import GAP_METRICS, METRICS
from medaudit.report import Check

__all__ = [
    "FairnessAssertionError",
    "FairnessInconclusiveError",
    "assert_group_metric",
    "assert_subgroup_gap",
    "patients_to_decide",
]

MSG_SKIPPED = "skipped: {reason}"
MSG_NO_BOUND = "{func}: give min_value, max_value or both."
MSG_ALL_SKIPPED = (
    "{func}: no group is large enough to assert on ({detail}); lower min_group_size / "
    "min_class_count or use more data."
)
MSG_NEEDED = (
    "About {needed} {unit} per group (now {now:,}) would decide it if the {what} is as "
    "estimated (80% power at {confidence:.0%} confidence)."
)
MSG_AT_THRESHOLD = (
    "The estimate sits on the threshold: no amount of data decides it unless the true "
    "value moves away from it."
)
INCONCLUSIVE_CHOICES = ("fail", "skip", "pass")
_FEW_GROUPS = "fewer than two groups large enough to compare"
#: z quantile of 80% power, the "roughly how many" convention.
_Z_POWER = 0.8416212335729143


class FairnessAssertionError(AssertionError):
    """A fairness assertion failed; ``result`` holds the evidence (table, CI, threshold)."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


class FairnessInconclusiveError(FairnessAssertionError):
    """The CI straddles the threshold: the data decide neither way.

    ``needed`` is roughly how many patients (images without patient ids) per group
    would decide it, or None when no amount would (the estimate is on the threshold).
    """

    def __init__(self, message: str, result: Any, needed: int | None) -> None:
        super().__init__(message, result)
        self.needed = needed


def patients_to_decide(
    value: float,
    ci: tuple[float, float],
    threshold: float,
    n_now: int,
    *,
    power: float = 0.8,
    confidence: float = 0.95,
) -> int | None:
    """Roughly how many per group would make a CI straddling ``threshold`` decide.

    The CI's half-width on the side facing the threshold shrinks like ``1 / sqrt(n)``;
    with the estimate as the truth, the CI clears the threshold with probability
    ``power`` once ``n = n_now * ((c + z_power) / c)^2 * (half-width / distance)^2``.

    Returns
    -------
    int or None
        None when the estimate is on the threshold (or the CI is not finite).

    Examples
    --------
    >>> patients_to_decide(0.01, (0.0, 0.09), 0.05, 500)
    4087
    """
    from statistics import NormalDist

    lo, hi = ci
    if not all(math.isfinite(v) for v in (value, lo, hi)):
        return None
    distance = threshold - value
    half = (hi - value) if distance > 0 else (value - lo)
    if distance == 0 or half <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    zp = NormalDist().inv_cdf(power)
    return int(math.ceil(n_now * ((z + zp) / z) ** 2 * (half / abs(distance)) ** 2))


def _round2(n: int) -> str:
    """Two significant digits, as a reader wants a rough number."""
    if n < 100:
        return f"{n:,}"
    digits = len(str(n)) - 2
    return f"{round(n, -digits):,}"


def _needed_text(needed: int | None, now: int, unit: str, what: str, confidence: float) -> str:
    if needed is None:
        return MSG_AT_THRESHOLD
    return MSG_NEEDED.format(
        needed=_round2(needed), unit=unit, now=now, what=what, confidence=confidence
    )


def _inconclusive(msg: str, result: Any, needed: int | None, inconclusive: str) -> Any:
    if inconclusive == "pass":
        return result
    if inconclusive == "skip":
        import pytest

        pytest.skip(msg)
    raise FairnessInconclusiveError(msg, result, needed)


def _groups_array(groups: Any) -> Any:
    if isinstance(groups, pd.DataFrame):
        if groups.shape[1] != 1:
            raise param_error(
                "groups", "assert_subgroup_gap", "one attribute column", list(groups.columns)
            )
        return groups.iloc[:, 0]
    return groups


def _skip(msg: str) -> Any:
    """Skip the test with the reason: groups too small or with one class are never a refusal."""
    import pytest

    pytest.skip(msg)


def assert_subgroup_gap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    metric: str = "auroc",
    max_gap: float = 0.05,
    ci: bool = True,
    inconclusive: str = "fail",
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
        True (default): the report's rule on the gap's CI (simultaneous over the
        groups): fail when it lies wholly above ``max_gap``, pass when wholly at or
        below, inconclusive when it straddles. False: the point estimate decides.
    inconclusive : {"fail", "skip", "pass"}
        What an inconclusive result does: raise :class:`FairnessInconclusiveError`
        (default), skip the test (``pytest.skip``), or pass.
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
    FairnessInconclusiveError
        When the CI straddles ``max_gap``; the message starts with "inconclusive:" and
        says about how many patients per group would decide it.
    InvalidInputError
        Bad input: NaN scores, length mismatch. Fewer than two groups large enough (a
        group with one class or below ``min_group_size`` is skipped) skips the test
        with the reason (``pytest.skip``), never refuses it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 4000)
    >>> s = np.clip(0.4 * y + rng.uniform(0, 0.6, 4000), 0, 1)
    >>> g = np.tile(["A", "B"], 2000)
    >>> r = assert_subgroup_gap(y, s, groups=g, max_gap=0.1, n_boot=200)
    >>> r.ci[1] <= 0.1
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
    if inconclusive not in INCONCLUSIVE_CHOICES:
        raise param_error("inconclusive", func, f"one of {INCONCLUSIVE_CHOICES}", inconclusive)
    if metric not in GAP_METRICS and metric not in FAIRLEARN_DIFFERENCES:
        raise param_error("metric", func, f"one of {GAP_METRICS + FAIRLEARN_DIFFERENCES}", metric)
    groups = _groups_array(groups)
    try:
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
            p_method="none",
            min_group_size=min_group_size,
            min_class_count=min_class_count,
            random_state=random_state,
        )
    except InvalidInputError as exc:
        if _FEW_GROUPS not in str(exc):
            raise
        return _skip(MSG_SKIPPED.format(reason=exc))
    check = Check.evaluate(
        func,
        metric,
        res.value,
        op="<=",
        threshold=float(max_gap),
        ci=res.ci if ci and all(math.isfinite(v) for v in res.ci) else None,
        decision="ci" if ci else "estimate",
    )
    if check.status == "pass":
        return res
    label = METRICS[metric].label if metric in METRICS else metric
    head = (
        f"{label} {kind.replace('_', ' ')} across {res.attribute!r} is {res.value:.3f} "
        f"({confidence:.0%} CI {res.ci[0]:.3f} to {res.ci[1]:.3f}; {res.group_high} vs "
        f"{res.group_low})"
    )
    if check.status == "inconclusive":
        unit, now = _unit_and_size(res, patient_id)
        needed = patients_to_decide(res.value, res.ci, float(max_gap), now, confidence=confidence)
        msg = (
            f"inconclusive: {head}.\n"
            f"Threshold: max_gap = {max_gap:g}; the CI straddles it, so the data show "
            f"neither that the gap is within it nor that it exceeds it (the CI is too wide "
            f"to show it). {_needed_text(needed, now, unit, 'gap', confidence)}\n\n"
            + res.format_table()
        )
        out: GapResult = _inconclusive(msg, res, needed, inconclusive)
        return out
    why = (
        f"the whole CI is above it (lower {confidence:.0%} CI bound {res.ci[0]:.3f})"
        if ci
        else f"the point estimate {res.value:.3f} exceeds it"
    )
    msg = (
        f"{head}.\n"
        f"Threshold: max_gap = {max_gap:g} ({'upper CI bound' if ci else 'point estimate'} "
        f"must be <= {max_gap:g}); {why}.\n\n" + res.format_table()
    )
    raise FairnessAssertionError(msg, res)


def _unit_and_size(res: GapResult, patient_id: ArrayLike | None) -> tuple[str, int]:
    """'patients' or 'images', and the size of the smaller group behind the gap."""
    t = res.table.set_index("group")
    col = "n_patients" if patient_id is not None else "n"
    behind = [g for g in (res.group_high, res.group_low, res.worst_group) if g in t.index]
    sizes = t.loc[behind, col] if behind else t.loc[t["status"] == "ok", col]
    return ("patients" if patient_id is not None else "images"), int(sizes.min())


def assert_group_metric(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    metric: str = "auroc",
    min_value: float | None = None,
    max_value: float | None = None,
    ci: bool = True,
    inconclusive: str = "fail",
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
        True (default): the report's rule on each group's CI: a group fails when its CI
        lies wholly outside a bound, passes when wholly inside, and is inconclusive when
        it straddles a bound. False: the point estimate decides.
    inconclusive : {"fail", "skip", "pass"}
        What an inconclusive result (no group fails, some straddle) does, as in
        :func:`assert_subgroup_gap`.

    Returns
    -------
    DataFrame
        The per-group table ``group, n, n_pos, value, ci_low, ci_high, status, reason``;
        skipped groups (too small) are listed but not asserted on.

    Raises
    ------
    FairnessAssertionError
        Naming every group out of bounds, with the table and the bounds.
    FairnessInconclusiveError
        When no group is out of bounds but some CI straddles a bound.

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
    if inconclusive not in INCONCLUSIVE_CHOICES:
        raise param_error("inconclusive", func, f"one of {INCONCLUSIVE_CHOICES}", inconclusive)
    if metric not in METRICS:
        raise param_error("metric", func, f"one of {tuple(METRICS)}", metric)
    groups = _groups_array(groups)
    gm = group_metrics(
        y_true,
        y_score,
        groups=groups,
        threshold=threshold,
        patient_id=patient_id,
        n_boot=n_boot,
        confidence=confidence,
        n_permutations=0,
        p_method="none",
        min_group_size=min_group_size,
        min_class_count=min_class_count,
        random_state=random_state,
    )
    t = gm.table
    t = t[(t["attribute"] == gm.attributes[0]) & (t["metric"] == metric)]
    table = t[
        ["group", "n", "n_pos", "n_patients", "value", "ci_low", "ci_high", "status", "reason"]
    ].reset_index(drop=True)
    ok_rows = table[table["status"] == "ok"]
    if ok_rows.empty:
        detail = "; ".join(f"{r.group}: {r.reason}" for r in table.itertuples())
        return _skip(MSG_SKIPPED.format(reason=MSG_ALL_SKIPPED.format(func=func, detail=detail)))
    bounds = [(">=", min_value), ("<=", max_value)]
    unit = "patients" if patient_id is not None else "images"
    bad, unsure, needed = _judge_groups(ok_rows, bounds, ci, unit, confidence)
    if not bad and not unsure:
        return table
    label = METRICS[metric].label
    range_txt = " and ".join(
        x
        for x in (
            f">= {min_value:g}" if min_value is not None else "",
            f"<= {max_value:g}" if max_value is not None else "",
        )
        if x
    )
    judged_by = f"whole {confidence:.0%} CI" if ci else "point estimate"
    shown = format_group_table(table, label, confidence)
    if bad:
        msg = (
            f"{label} is out of bounds in {len(bad)} group(s) of {gm.attributes[0]!r}: "
            + "; ".join(bad)
            + f".\nThreshold: {label} {range_txt} ({judged_by}).\n\n"
            + shown
        )
        raise FairnessAssertionError(msg, table)
    most = None if any(n is None for n in needed) else max(n for n in needed if n is not None)
    now = int(ok_rows["n_patients" if patient_id is not None else "n"].min())
    msg = (
        f"inconclusive: {label} in {len(unsure)} group(s) of {gm.attributes[0]!r} has a CI "
        f"that straddles a bound: " + "; ".join(unsure) + f".\nThreshold: {label} "
        f"{range_txt} ({judged_by}). {_needed_text(most, now, unit, label, confidence)}\n\n" + shown
    )
    out: pd.DataFrame = _inconclusive(msg, table, most, inconclusive)
    return out


def _judge_groups(
    rows: pd.DataFrame,
    bounds: list[tuple[str, float | None]],
    ci: bool,
    unit: str,
    confidence: float,
) -> tuple[list[str], list[str], list[int | None]]:
    """Each group against each bound by the report's rule: failures, straddles, sizes."""
    bad: list[str] = []
    unsure: list[str] = []
    needed: list[int | None] = []
    for r in rows.itertuples():
        for op, bound in bounds:
            if bound is None:
                continue
            status = Check.evaluate(
                "assert_group_metric",
                "group metric",
                float(r.value),
                op=op,
                threshold=float(bound),
                ci=(float(r.ci_low), float(r.ci_high)) if ci else None,
                decision="ci" if ci else "estimate",
            ).status
            side = "lower" if op == ">=" else "upper"
            judged = float(r.ci_low if op == ">=" else r.ci_high) if ci else float(r.value)
            cmp = "<" if op == ">=" else ">"
            text = (
                f"{r.group} ({f'{side} CI bound' if ci else 'value'} {judged:.3f} {cmp} {bound:g})"
            )
            if status == "fail":
                if ci:
                    text = (
                        f"{r.group} (whole CI {'below' if op == '>=' else 'above'} {bound:g}: "
                        f"{r.ci_low:.3f} to {r.ci_high:.3f})"
                    )
                bad.append(text)
            elif status in ("inconclusive", "skipped"):
                unsure.append(text)
                now = int(r.n_patients if unit == "patients" else r.n)
                needed.append(
                    patients_to_decide(
                        float(r.value),
                        (float(r.ci_low), float(r.ci_high)),
                        float(bound),
                        now,
                        confidence=confidence,
                    )
                )
    return bad, unsure, needed
