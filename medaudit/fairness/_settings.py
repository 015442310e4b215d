"""The settings of :func:`medaudit.fairness.group_metrics`, validated in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import param_error

__all__ = ["P_METHODS", "GroupMetricsSettings", "settings_from"]

P_METHODS = ("bootstrap", "permutation", "none")


@dataclass(frozen=True)
class GroupMetricsSettings:
    """How :func:`group_metrics` measures; every field is also a keyword of it.

    Parameters
    ----------
    threshold : float
        Operating threshold: predicted positive means ``score >= threshold``.
    intersections : bool
        Also evaluate every pair of attributes crossed (``"sex&age_group"``).
    n_boot : int
        Bootstrap resamples (0 disables CIs and bootstrap p-values).
    confidence : float
        CI level (simultaneous over the groups for gaps).
    p_method : {"bootstrap", "permutation", "none"}
        Gap p-values: the test dual to the simultaneous CI (same null, never
        disagreeing), a permutation test of patients, or none.
    n_permutations : int
        Permutations per attribute when ``p_method="permutation"``.
    p_adjust : {"holm", "bh", "none"}
        Multiple-testing adjustment across the gaps of ``p_family``.
    p_family : tuple of str, optional
        Gap metrics whose tests form the adjusted family (the checks actually reported);
        every tested gap when None.
    min_group_size, min_class_count : int
        Smaller groups are reported as skipped with the reason.
    n_bins : int
        Calibration bins of the ECE.
    es_auc_variant : {"sum", "std"}
        Equity-scaled AUROC: ``AUC / (1 + sum_g |AUC_g - AUC|)`` (FairCLIP / FairDomain)
        or ``AUC / (1 + std_g AUC_g)``.
    exact_max_rows : int
        Up to this many rows (or whenever scores take at most ``max_bins`` values) the
        bootstrap is exact; above, it runs on ``max_bins`` quantile bins.
    max_bins, permutation_bins : int
        Resolution of the binned bootstrap and of the permutation test's statistic.
    max_levels, continuous_bins : int
        Numeric attributes with more than ``max_levels`` values are cut into
        ``continuous_bins`` quantile groups.
    random_state : int
    """

    threshold: float = 0.5
    intersections: bool = False
    n_boot: int = 1000
    confidence: float = 0.95
    p_method: str = "bootstrap"
    n_permutations: int = 1000
    p_adjust: str = "holm"
    p_family: tuple[str, ...] | None = None
    min_group_size: int = 30
    min_class_count: int = 5
    n_bins: int = 10
    es_auc_variant: str = "sum"
    exact_max_rows: int = 100_000
    max_bins: int = 4096
    permutation_bins: int = 256
    max_levels: int = 20
    continuous_bins: int = 4
    random_state: int = 0

    def __post_init__(self) -> None:
        func = "group_metrics"
        for name, lo in (
            ("n_boot", 0),
            ("n_permutations", 0),
            ("min_group_size", 1),
            ("min_class_count", 1),
            ("n_bins", 1),
            ("max_bins", 16),
            ("permutation_bins", 4),
            ("exact_max_rows", 0),
            ("max_levels", 1),
            ("continuous_bins", 2),
            ("random_state", 0),
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise param_error(name, func, f"an integer >= {lo}", v)
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < 1:
            raise param_error("confidence", func, "a float in (0, 1)", c)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise param_error("threshold", func, "a finite float", t)
        for name, choices in (
            ("p_method", P_METHODS),
            ("p_adjust", ("holm", "bh", "none")),
            ("es_auc_variant", ("sum", "std")),
        ):
            if getattr(self, name) not in choices:
                raise param_error(name, func, f"one of {choices}", getattr(self, name))
        if not isinstance(self.intersections, bool):
            raise param_error("intersections", func, "True or False", self.intersections)
        if self.p_family is not None:
            from medaudit.fairness._gaps import FAIRLEARN_DIFFERENCES
            from medaudit.fairness._metrics import GAP_METRICS

            known = GAP_METRICS + FAIRLEARN_DIFFERENCES
            bad = [m for m in self.p_family if m not in known]
            if isinstance(self.p_family, str) or bad:
                raise param_error("p_family", func, f"a tuple of names from {known}", self.p_family)

    @property
    def alpha(self) -> float:
        """1 - confidence."""
        return 1.0 - float(self.confidence)


def settings_from(
    settings: GroupMetricsSettings | None, options: dict[str, Any]
) -> GroupMetricsSettings:
    """``settings`` (or the defaults) with keyword ``options`` applied, validated."""
    base = settings if settings is not None else GroupMetricsSettings()
    if not isinstance(base, GroupMetricsSettings):
        raise param_error("settings", "group_metrics", "a GroupMetricsSettings", base)
    known = {f.name for f in dataclasses.fields(GroupMetricsSettings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise param_error("options", "group_metrics", f"keywords among {sorted(known)}", unknown)
    if "p_family" in options and options["p_family"] is not None:
        options = {**options, "p_family": tuple(options["p_family"])}
    return dataclasses.replace(base, **options)
