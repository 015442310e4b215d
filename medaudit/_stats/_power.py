"""How much data a gap check needs: sample sizes for the simultaneous gap interval.

A gap check decides when the simultaneous interval of the gap lies wholly on one side
of its threshold. For two groups of ``n`` patients whose metric has per-patient variance
``v1`` and ``v2`` (variance of the estimate = ``v / n``), the interval's half-width is
about ``c * sqrt((v1 + v2) / n)``, with ``c`` the simultaneous critical value for all
pairs of ``n_groups`` groups (Tukey's studentized range over sqrt 2; 1.96 for two
groups). It excludes a boundary ``delta`` away from the true gap with probability
``power`` once ``n >= (c + z_power)^2 (v1 + v2) / delta^2``.

Per-image variances: binomial for rates (over the images of the class the rate is
conditioned on), Hanley & McNeil (1982) for AUROC. Images of one patient are alike:
the design effect ``1 + (m - 1) * icc`` for ``m`` images per patient converts images
to patients.

References
----------
.. [1] Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating
       characteristic (ROC) curve. Radiology 143(1):29-36, 1982.
.. [2] Tukey JW. The problem of multiple comparisons. Princeton University, 1953
       (the studentized range).
.. [3] Donner A, Klar N. Design and Analysis of Cluster Randomization Trials in Health
       Research. Arnold, 2000 (the design effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from medaudit._errors import param_error

__all__ = ["POWER_METRICS", "SampleSize", "required_sample_size", "simultaneous_critical_value"]

#: Metrics with a closed-form per-image variance, and the class they condition on.
POWER_METRICS: dict[str, str | None] = {
    "auroc": "both",
    "true_positive_rate": "positive",
    "false_negative_rate": "positive",
    "underdiagnosis_rate": "positive",
    "false_positive_rate": "negative",
    "true_negative_rate": "negative",
    "selection_rate": None,
    "prevalence": None,
}


@dataclass(frozen=True)
class SampleSize:
    """Patients (and images) per group that a gap check needs.

    Attributes
    ----------
    metric : str
    patients_per_group, images_per_group : int
    n_groups : int
    gap, margin : float
        True gap assumed, and the threshold the interval must clear (0: "detect").
    power, confidence : float
    critical_value : float
        Simultaneous critical value used for the interval.
    design_effect : float
    """

    metric: str
    patients_per_group: int
    images_per_group: int
    n_groups: int
    gap: float
    margin: float
    power: float
    confidence: float
    critical_value: float
    design_effect: float

    def __str__(self) -> str:
        what = (
            f"detect a gap of {self.gap:g} in {self.metric}"
            if self.margin == 0
            else f"decide a gap of {self.gap:g} in {self.metric} against a threshold of "
            f"{self.margin:g}"
        )
        return (
            f"About {self.patients_per_group:,} patients per group "
            f"({self.images_per_group:,} images) to {what} across {self.n_groups} groups "
            f"with {self.power:.0%} power at {self.confidence:.0%} confidence."
        )


def simultaneous_critical_value(n_groups: int, confidence: float = 0.95) -> float:
    """Critical value of simultaneous intervals over every pair of ``n_groups`` groups.

    Tukey's studentized range quantile ``q(confidence; n_groups, inf) / sqrt(2)`` for
    groups of equal precision; ``z`` for two groups.

    Examples
    --------
    >>> round(simultaneous_critical_value(2), 3), round(simultaneous_critical_value(4), 3)
    (1.96, 2.569)
    """
    if n_groups < 2:
        raise param_error("n_groups", "simultaneous_critical_value", "an integer >= 2", n_groups)
    if n_groups == 2:
        return NormalDist().inv_cdf(0.5 + confidence / 2)
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(confidence, n_groups, 1e6) / math.sqrt(2))


def _unit_variance(metric: str, value: float, prevalence: float) -> float:
    """Variance of the metric's estimate times the number of images in the group."""
    if metric == "auroc":
        a = value
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        return (q1 - a * a) / (1 - prevalence) + (q2 - a * a) / prevalence
    cls = POWER_METRICS[metric]
    share = {"positive": prevalence, "negative": 1 - prevalence, None: 1.0}[cls]
    return value * (1 - value) / share


def _check_prob(name: str, v: float, lo: float = 0.0, hi: float = 1.0) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi:
        raise param_error(name, "required_sample_size", f"a number in ({lo:g}, {hi:g})", v)


def required_sample_size(
    metric: str = "auroc",
    *,
    gap: float,
    baseline: float = 0.85,
    prevalence: float = 0.3,
    n_groups: int = 2,
    margin: float = 0.0,
    confidence: float = 0.95,
    power: float = 0.8,
    images_per_patient: float = 1.0,
    icc: float = 0.0,
) -> SampleSize:
    """Patients per group needed to detect a gap, or to show it is within a threshold.

    Parameters
    ----------
    metric : str
        One of :data:`POWER_METRICS` (``"auroc"``, ``"true_positive_rate"``, ...).
    gap : float
        True difference between the best and the worst group (the worst is
        ``baseline - gap`` for metrics where higher is better, ``baseline + gap``
        otherwise, clipped inside (0, 1)).
    baseline : float
        The metric in the better group.
    prevalence : float
        Share of images with the finding.
    n_groups : int
        Groups compared (the interval is simultaneous over all their pairs).
    margin : float
        0 (default): the interval must exclude 0 ("detect a gap of ``gap``"). Otherwise
        the check's threshold: the interval must lie wholly on one side of it, which
        needs ``n`` such that ``|gap - margin|`` exceeds the half-width.
    confidence, power : float
    images_per_patient : float
        Mean images per patient; ``icc`` their intra-patient correlation.
    icc : float

    Returns
    -------
    SampleSize

    References
    ----------
    .. [1] Hanley JA, McNeil BJ. Radiology 143(1):29-36, 1982.

    Examples
    --------
    >>> r = required_sample_size("auroc", gap=0.05, baseline=0.85, prevalence=0.3)
    >>> r.patients_per_group
    1552
    >>> r = required_sample_size("true_positive_rate", gap=0.1, baseline=0.8,
    ...                          prevalence=0.2, n_groups=4, images_per_patient=2, icc=0.3)
    >>> r.patients_per_group, r.images_per_group
    (1399, 2798)
    """
    func = "required_sample_size"
    if metric not in POWER_METRICS:
        raise param_error("metric", func, f"one of {tuple(POWER_METRICS)}", metric)
    _check_prob("gap", gap)
    _check_prob("baseline", baseline)
    _check_prob("prevalence", prevalence)
    _check_prob("confidence", confidence)
    _check_prob("power", power)
    _check_prob("icc", icc, -1e-12, 1.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise param_error("margin", func, "a number in [0, 1)", margin)
    if margin and math.isclose(margin, gap):
        raise param_error("margin", func, "different from gap (no sample size decides it)", margin)
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 2:
        raise param_error("n_groups", func, "an integer >= 2", n_groups)
    if (
        isinstance(images_per_patient, bool)
        or not isinstance(images_per_patient, (int, float))
        or images_per_patient < 1
    ):
        raise param_error("images_per_patient", func, "a number >= 1", images_per_patient)
    higher_better = metric in ("auroc", "true_positive_rate", "true_negative_rate")
    other = baseline - gap if higher_better else baseline + gap
    other = min(max(other, 1e-6), 1 - 1e-6)
    v = _unit_variance(metric, baseline, prevalence) + _unit_variance(metric, other, prevalence)
    c = simultaneous_critical_value(n_groups, confidence)
    z = NormalDist().inv_cdf(power)
    delta = abs(gap - margin)
    deff = 1.0 + (images_per_patient - 1.0) * icc
    images = math.ceil((c + z) ** 2 * v * deff / delta**2)
    patients = math.ceil(images / images_per_patient)
    return SampleSize(
        metric=metric,
        patients_per_group=patients,
        images_per_group=math.ceil(patients * images_per_patient),
        n_groups=n_groups,
        gap=float(gap),
        margin=float(margin),
        power=float(power),
        confidence=float(confidence),
        critical_value=c,
        design_effect=deff,
    )
