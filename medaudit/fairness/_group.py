"""Group metrics, gaps, bootstrap CIs and p-values, in the Fairlearn style.

The array API takes the data first and options as keywords::

    gm = group_metrics(y_true, y_score, groups=df[["sex", "age_group"]], threshold=0.5)
    gm.by_group("sex")            # one row per group, metric columns with CIs
    gm.gaps                       # max-min, worst-to-overall, Fairlearn differences, ES-AUC
    gm.to_metricframe("sex")      # the equivalent fairlearn.metrics.MetricFrame

The work is split as Fairlearn splits ``MetricFrame``: inputs (:mod:`._inputs`), result
types (:mod:`._results`), gaps and p-values (:mod:`._gaps`), the estimator
(:mod:`._estimator`) on the histogram engine (:mod:`._engine`). This module is their
public face and holds :func:`subgroup_gap`.

Statistics (DESIGN.md, "Statistics are part of the product"):

- 95% CIs by a bootstrap that resamples whole patients (all their images, both
  classes) within each group, and within the patient's class profile for metrics that
  condition on the class; percentile intervals.
- A gap's CI is simultaneous over every pair of groups, so it allows for the extreme
  groups being picked from the data; its p-value is the test dual to it (same null,
  ``p <= 1 - confidence`` exactly when the CI excludes 0), adjusted over the gaps
  reported (Holm by default). A permutation test of patients is available instead.
- The ECE is debiased, with a valid interval, and each group gets Spiegelhalter's test
  of calibration.
- Groups below ``min_group_size`` or with fewer than ``min_class_count`` of a class are
  reported as skipped with the reason, never as numbers, and left out of every gap (and
  of ``to_metricframe()``), which each gap's note says.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._estimator import GroupMetricsSettings, group_metrics
from medaudit.fairness._gaps import FAIRLEARN_DIFFERENCES, TESTED, adjust_gap_pvalues
from medaudit.fairness._inputs import (
    ALL_LABEL,
    MISSING_LABEL,
    MSG_EMPTY,
    MSG_FEW_GROUPS,
    MSG_GROUP_LENGTH,
    MSG_LABELS,
    MSG_LENGTH,
    MSG_MC_LABELS,
    MSG_NONFINITE,
    MSG_PATIENT_LENGTH,
    MSG_RANGE,
    MSG_SINGLE_CLASS,
    SKIP_CLASS,
    SKIP_SMALL,
    SKIP_UNDEFINED,
)
from medaudit.fairness._metrics import GAP_METRICS, metric_spec
from medaudit.fairness._results import GapResult, GroupMetrics, format_group_table

__all__ = [
    "ALL_LABEL",
    "FAIRLEARN_DIFFERENCES",
    "MISSING_LABEL",
    "MSG_EMPTY",
    "MSG_FEW_GROUPS",
    "MSG_GROUP_LENGTH",
    "MSG_LABELS",
    "MSG_LENGTH",
    "MSG_MC_LABELS",
    "MSG_NONFINITE",
    "MSG_PATIENT_LENGTH",
    "MSG_RANGE",
    "MSG_SINGLE_CLASS",
    "SKIP_CLASS",
    "SKIP_SMALL",
    "SKIP_UNDEFINED",
    "TESTED",
    "GapResult",
    "GroupMetrics",
    "GroupMetricsSettings",
    "adjust_gap_pvalues",
    "format_group_table",
    "group_metrics",
    "subgroup_gap",
]

# Kept for code that imported the private name.
_format_group_table = format_group_table


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
    p_method: str = "bootstrap",
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
        value; the CI is simultaneous over the groups, so it allows for the extreme
        groups being picked from the data.
    threshold, patient_id, n_boot, confidence, n_permutations, p_method, min_group_size,
    min_class_count, random_state
        As in :class:`GroupMetricsSettings`.

    Returns
    -------
    GapResult

    Raises
    ------
    InvalidInputError
        When fewer than two groups are large enough to compare.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 2, 600)
    >>> s = np.clip(0.35 * y + rng.uniform(0, 0.65, 600), 0, 1)
    >>> r = subgroup_gap(y, s, groups=np.repeat(["A", "B"], 300), n_boot=200)
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
        p_method=p_method,
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
