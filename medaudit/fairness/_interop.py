"""Fairlearn interop: the same numbers as a ``fairlearn.metrics.MetricFrame``.

Fairlearn users keep their habits: ``GroupMetrics.to_metricframe()`` returns a
MetricFrame over the same rows, with the same metric names, whose ``by_group`` agrees
with medaudit's point estimates to 1e-9.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    precision_score,
    roc_auc_score,
)

from medaudit.fairness._metrics import calibration_error

__all__ = ["metricframe", "metricframe_metrics"]


def _prevalence(y_true: Any, y_pred: Any) -> float:
    return float(np.mean(np.asarray(y_true)))


def _auroc(y_true: Any, y_pred: Any, y_score: Any) -> float:
    if len(np.unique(np.asarray(y_true))) < 2:  # a one-class group (kept with include_skipped)
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def _ppv(y_true: Any, y_pred: Any) -> float:
    return float(precision_score(y_true, y_pred, zero_division=np.nan))


def _brier(y_true: Any, y_pred: Any, y_score: Any) -> float:
    return float(brier_score_loss(y_true, y_score))


def metricframe_metrics(
    *, n_bins: int = 10, underdiagnosis: str = "false_negative_rate"
) -> dict[str, Any]:
    """The metric functions of a medaudit table, keyed by medaudit's (Fairlearn's) names.

    Threshold-free metrics (``auroc``, ``brier_score``, ``ece``) take the score through
    the ``y_score`` sample parameter; the others take ``y_pred = score >= threshold``.
    """
    from fairlearn import metrics as fm

    def _ece(y_true: Any, y_pred: Any, y_score: Any, clusters: Any = None) -> float:
        return calibration_error(y_true, y_score, n_bins=n_bins, clusters=clusters)

    return {
        "count": fm.count,
        "prevalence": _prevalence,
        "auroc": _auroc,
        "true_positive_rate": fm.true_positive_rate,
        "true_negative_rate": fm.true_negative_rate,
        "false_positive_rate": fm.false_positive_rate,
        "false_negative_rate": fm.false_negative_rate,
        "ppv": _ppv,
        "selection_rate": fm.selection_rate,
        "balanced_accuracy": balanced_accuracy_score,
        "brier_score": _brier,
        "ece": _ece,
        "underdiagnosis_rate": getattr(fm, underdiagnosis),
    }


def metricframe(
    y_true: np.ndarray,
    y_score: np.ndarray,
    sensitive_features: Any,
    *,
    threshold: float = 0.5,
    n_bins: int = 10,
    underdiagnosis: str = "false_negative_rate",
    metrics: list[str] | None = None,
    clusters: np.ndarray | None = None,
    **kwargs: Any,
) -> Any:
    """A ``fairlearn.metrics.MetricFrame`` with medaudit's metrics on binary data.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,)
    y_score : ndarray of shape (n_samples,)
    sensitive_features : Series, DataFrame or array-like
    threshold : float
        ``y_pred = y_score >= threshold``.
    metrics : list of str, optional
        A subset of the metric names (default all).
    clusters : ndarray of shape (n_samples,), optional
        Patient ids, for the debiased ECE's variance (as medaudit computes it).
    **kwargs
        Passed to ``MetricFrame`` (``n_boot``, ``ci_quantiles``, ``random_state``, ...).
    """
    from fairlearn.metrics import MetricFrame

    funcs = metricframe_metrics(n_bins=n_bins, underdiagnosis=underdiagnosis)
    if metrics is not None:
        funcs = {k: funcs[k] for k in metrics}
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=np.float64)
    params: dict[str, dict[str, Any]] = {
        k: {"y_score": s} for k in ("auroc", "brier_score", "ece") if k in funcs
    }
    if clusters is not None and "ece" in params:
        params["ece"]["clusters"] = np.asarray(clusters)
    return MetricFrame(
        metrics=funcs,
        y_true=y,
        y_pred=(s >= threshold).astype(int),
        sensitive_features=sensitive_features,
        sample_params=params,
        **kwargs,
    )
