"""The group metrics medaudit reports, with their Fairlearn / scikit-learn names.

Names follow Fairlearn where it has the metric (``count``, ``selection_rate``,
``true_positive_rate``, ...), so a Fairlearn user reads the tables without translation;
the others use the field's names (``auroc``, ``underdiagnosis_rate``, ``ece``).
"""

from __future__ import annotations

from dataclasses import dataclass

from numpy.typing import ArrayLike

from medaudit.stats import calibration_error, expected_calibration_error

__all__ = [
    "GAP_METRICS",
    "METRICS",
    "MetricSpec",
    "calibration_error",
    "expected_calibration_error",
    "metric_spec",
    "underdiagnosis_rate",
]


@dataclass(frozen=True)
class MetricSpec:
    """What one group metric is and how it is judged.

    Parameters
    ----------
    name : str
        Column / check name (Fairlearn's where it exists).
    label : str
        Short label for tables and plots.
    higher_is_better : bool or None
        Direction used to name the worst group; None when neither direction is "worse"
        (selection rate, prevalence).
    reference : str
        The scikit-learn / Fairlearn function that computes the same number.
    description : str
        One line in words.
    conditions_on_class : bool
        True for metrics computed within one class (AUROC, sensitivity, specificity):
        the bootstrap then keeps each group's class profile; False for metrics that
        depend on the prevalence (PPV, selection rate, Brier score, ECE), whose bootstrap
        lets the class mix vary.
    interval : {"proportion", "logit", "ece", "none"}
        How its CI is read from the bootstrap (see
        :func:`medaudit.stats.pseudo_replicates`): Wilson with a bootstrap design effect
        for rates, the basic interval on the logit scale for AUROC, balanced accuracy
        and Brier score, the debiased ECE's own interval, none for counts.
    """

    name: str
    label: str
    higher_is_better: bool | None
    reference: str
    description: str
    conditions_on_class: bool = False
    interval: str = "proportion"


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec(
            "count", "n", None, "fairlearn.metrics.count", "number of images", interval="none"
        ),
        MetricSpec(
            "prevalence", "prevalence", None, "numpy.mean(y_true)", "fraction with the finding"
        ),
        MetricSpec(
            "auroc",
            "AUROC",
            True,
            "sklearn.metrics.roc_auc_score",
            "area under the ROC curve (ranking quality, threshold-free)",
            conditions_on_class=True,
            interval="logit",
        ),
        MetricSpec(
            "true_positive_rate",
            "TPR (sensitivity)",
            True,
            "fairlearn.metrics.true_positive_rate",
            "fraction of patients with the finding who are flagged",
            conditions_on_class=True,
        ),
        MetricSpec(
            "true_negative_rate",
            "TNR (specificity)",
            True,
            "fairlearn.metrics.true_negative_rate",
            "fraction of patients without the finding who are not flagged",
            conditions_on_class=True,
        ),
        MetricSpec(
            "false_positive_rate",
            "FPR",
            False,
            "fairlearn.metrics.false_positive_rate",
            "fraction of patients without the finding who are flagged",
            conditions_on_class=True,
        ),
        MetricSpec(
            "false_negative_rate",
            "FNR",
            False,
            "fairlearn.metrics.false_negative_rate",
            "fraction of patients with the finding who are missed",
            conditions_on_class=True,
        ),
        MetricSpec(
            "ppv",
            "PPV (precision)",
            True,
            "sklearn.metrics.precision_score",
            "fraction of flagged patients who have the finding",
        ),
        MetricSpec(
            "selection_rate",
            "selection rate",
            None,
            "fairlearn.metrics.selection_rate",
            "fraction of patients flagged",
        ),
        MetricSpec(
            "balanced_accuracy",
            "balanced accuracy",
            True,
            "sklearn.metrics.balanced_accuracy_score",
            "mean of sensitivity and specificity",
            conditions_on_class=True,
            interval="logit",
        ),
        MetricSpec(
            "brier_score",
            "Brier score",
            False,
            "sklearn.metrics.brier_score_loss",
            "mean squared error of the predicted probability",
            interval="logit",
        ),
        MetricSpec(
            "ece",
            "ECE",
            False,
            "medaudit.stats.calibration_error (10 equal-width bins; Guo et al.'s binned "
            "ECE in root-mean-square form, with each bin's bias removed)",
            "root-mean-square calibration error, debiased (Kumar et al. 2019)",
            interval="ece",
        ),
        MetricSpec(
            "underdiagnosis_rate",
            "underdiagnosis rate",
            False,
            "false negative rate of the finding (false positive rate of 'no finding')",
            "fraction of patients with a finding who are predicted 'no finding'",
            conditions_on_class=True,
        ),
    )
}

#: Metrics whose group differences are reported in the gap table.
GAP_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in ("count", "prevalence"))


def metric_spec(name: str, func: str) -> MetricSpec:
    """The :class:`MetricSpec` called ``name``; a clear error otherwise."""
    from medaudit._errors import param_error

    if name not in METRICS:
        raise param_error("metric", func, f"one of {tuple(METRICS)}", name)
    return METRICS[name]


def underdiagnosis_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of patients with a finding whom the model calls "no finding".

    For a binary finding classifier this is the false negative rate; for a model with a
    "No Finding" output it equals that output's false positive rate, the form used by
    Seyyed-Kalantari et al. Returns NaN when no patient has the finding.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        1 = the patient has a finding.
    y_pred : array-like of shape (n_samples,)
        1 = the model flags a finding.

    References
    ----------
    .. [1] Seyyed-Kalantari L, Zhang H, McDermott MBA, Chen IY, Ghassemi M.
           Underdiagnosis bias of artificial intelligence algorithms applied to chest
           radiographs in under-served patient populations. Nat Med 27:2176-2182, 2021.

    Examples
    --------
    >>> underdiagnosis_rate([1, 1, 1, 0], [1, 0, 1, 0])
    0.3333333333333333
    """
    import numpy as np

    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if y.sum() == 0:
        return float("nan")
    return float(np.mean(~p[y]))
