"""Fairness audit: group metrics with honest statistics, gaps, and the report section."""

from medaudit.fairness._audit import SPEC, audit
from medaudit.fairness._group import (
    GapResult,
    GroupMetrics,
    GroupMetricsSettings,
    adjust_gap_pvalues,
    group_metrics,
    subgroup_gap,
)
from medaudit.fairness._interop import metricframe
from medaudit.fairness._io import predictions_from_frame, read_predictions
from medaudit.fairness._metrics import (
    METRICS,
    MetricSpec,
    calibration_error,
    expected_calibration_error,
    underdiagnosis_rate,
)
from medaudit.fairness._mitigation import threshold_optimizer_suggestion
from medaudit.fairness._section import continuous_association, fairness_section
from medaudit.fairness._thresholds import sensitivity_threshold, youden_threshold

__all__ = [
    "SPEC",
    "METRICS",
    "GapResult",
    "GroupMetrics",
    "GroupMetricsSettings",
    "MetricSpec",
    "adjust_gap_pvalues",
    "audit",
    "calibration_error",
    "continuous_association",
    "expected_calibration_error",
    "fairness_section",
    "group_metrics",
    "metricframe",
    "predictions_from_frame",
    "read_predictions",
    "sensitivity_threshold",
    "subgroup_gap",
    "threshold_optimizer_suggestion",
    "underdiagnosis_rate",
    "youden_threshold",
]
