"""The severity sweep: every (corruption, severity) cell streamed through the model once.

Each cell is one pass of :meth:`AuditContext.predict_transformed` with a
:class:`CorruptionTransform`: batches are corrupted on their way to the model, so the
corrupted data set never exists in memory or on disk. The cells' scores are then scored
against the clean pass with one shared bootstrap (paired intervals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit.robustness._metrics import (
    Estimate,
    auroc_estimate,
    balanced_error_estimate,
    corruption_error,
    top_label_ece,
)
from medaudit.robustness._presets import SweepPlan
from medaudit.robustness._registry import SEVERITIES, Corruption, apply_corruption

__all__ = ["CorruptionTransform", "SweepResult", "run_cells", "score_sweep"]


@dataclass(frozen=True)
class CorruptionTransform:
    """``transform(x, idx)`` that corrupts a batch on its way to the model.

    Parameters
    ----------
    corruption : Corruption
    parameter : object
        The severity's parameter.
    seed : int
    native_channels : int
        Channels of the stored images. Grayscale images that a model reads as three
        identical channels are corrupted once, as grayscale, and then repeated.
    """

    corruption: Corruption
    parameter: Any
    seed: int = 0
    native_channels: int = 1

    def __call__(self, x: Any, idx: np.ndarray) -> Any:
        """Corrupt the batch ``x`` whose cohort rows are ``idx``."""
        if self.native_channels == 1 and x.shape[1] > 1:
            gray = apply_corruption(self.corruption, x[:, :1], self.parameter, idx, self.seed)
            return gray.expand(-1, x.shape[1], -1, -1)
        return apply_corruption(self.corruption, x, self.parameter, np.asarray(idx), self.seed)


Predict = Callable[[CorruptionTransform, str], np.ndarray]


def run_cells(
    plan: SweepPlan,
    predict: Predict,
    *,
    seed: int,
    native_channels: int,
    on_cell: Callable[[], None] | None = None,
) -> dict[tuple[str, int], np.ndarray]:
    """Class scores of every cell: ``{(corruption, severity): scores (n, n_classes)}``.

    ``predict(transform, key)`` runs the model over the cohort with the transform.
    """
    out: dict[tuple[str, int], np.ndarray] = {}
    for planned in plan.corruptions:
        for sev in SEVERITIES:
            param = planned.parameters[sev - 1]
            t = CorruptionTransform(planned.corruption, param, seed, native_channels)
            out[(planned.name, sev)] = predict(
                t, f"robustness:{planned.name}/{sev}/{param!r}/{seed}"
            )
            if on_cell is not None:
                on_cell()
    return out


@dataclass(frozen=True)
class SweepResult:
    """The scored sweep.

    Attributes
    ----------
    sweep : DataFrame
        One row per cell: ``corruption``, ``severity``, ``parameter``, ``auroc`` with
        ``auroc_ci_low``/``auroc_ci_high``, ``auroc_drop`` with its CI,
        ``balanced_error`` with its CI, ``ece``.
    corruption_errors : DataFrame
        One row per corruption: CE and relative CE with CIs.
    overall : DataFrame
        Clean AUROC, balanced error and ECE, mCE and relative mCE, each with a CI.
    clean_auroc, drops, mce : Estimate
        The clean AUROC, each cell's AUROC drop, the mCE (for the checks).
    reference : str
        ``"reference model"`` or ``"clean model"``: what CE is measured against.
    """

    sweep: pd.DataFrame
    corruption_errors: pd.DataFrame
    overall: pd.DataFrame
    clean_auroc: Estimate
    drops: dict[tuple[str, int], Estimate] = field(default_factory=dict)
    mce: Estimate | None = None
    reference: str = "clean model"


def _ci_cols(prefix: str, est: Estimate, confidence: float) -> dict[str, float]:
    lo, hi = est.ci(confidence)
    return {prefix: est.value, f"{prefix}_ci_low": lo, f"{prefix}_ci_high": hi}


def score_sweep(
    labels: np.ndarray,
    clean: np.ndarray,
    cells: dict[tuple[str, int], np.ndarray],
    plan: SweepPlan,
    W: np.ndarray,
    *,
    confidence: float,
    threshold: float,
    reference: tuple[np.ndarray, dict[tuple[str, int], np.ndarray]] | None = None,
) -> SweepResult:
    """Score every cell against the clean pass (and the reference model's, when given)."""
    auc_clean = auroc_estimate(labels, clean, W)
    be_clean = balanced_error_estimate(labels, clean, W, threshold=threshold)
    rows, drops, ce_rows = [], {}, []
    ces: list[Estimate] = []
    rces: list[Estimate] = []
    ref_clean = (
        None
        if reference is None
        else balanced_error_estimate(labels, reference[0], W, threshold=threshold)
    )
    for planned in plan.corruptions:
        errors, ref_errors = [], []
        for sev in SEVERITIES:
            s = cells[(planned.name, sev)]
            auc = auroc_estimate(labels, s, W)
            be = balanced_error_estimate(labels, s, W, threshold=threshold)
            drop = auc_clean - auc
            drops[(planned.name, sev)] = drop
            errors.append(be)
            if reference is not None:
                ref_errors.append(
                    balanced_error_estimate(
                        labels, reference[1][(planned.name, sev)], W, threshold=threshold
                    )
                )
            rows.append(
                {
                    "corruption": planned.name,
                    "severity": sev,
                    "parameter": repr(planned.parameters[sev - 1]),
                    **_ci_cols("auroc", auc, confidence),
                    **_ci_cols("auroc_drop", drop, confidence),
                    **_ci_cols("balanced_error", be, confidence),
                    "ece": top_label_ece(labels, s),
                }
            )
        ce, rce = corruption_error(
            errors,
            be_clean,
            reference=ref_errors or None,
            reference_clean=ref_clean,
        )
        ces.append(ce)
        rces.append(rce)
        ce_rows.append(
            {
                "corruption": planned.name,
                "family": planned.corruption.family,
                "mean_balanced_error": float(np.mean([e.value for e in errors])),
                **_ci_cols("ce", ce, confidence),
                **_ci_cols("relative_ce", rce, confidence),
            }
        )
    mce, rmce = _mean(ces), _mean(rces)
    overall = pd.DataFrame(
        [
            {"metric": "AUROC (clean)", **_pick(auc_clean, confidence)},
            {"metric": "balanced error (clean)", **_pick(be_clean, confidence)},
            {"metric": "ECE (clean)", "value": top_label_ece(labels, clean)},
            {"metric": "mCE", **_pick(mce, confidence)},
            {"metric": "relative mCE", **_pick(rmce, confidence)},
        ]
    )
    return SweepResult(
        sweep=pd.DataFrame(rows),
        corruption_errors=pd.DataFrame(ce_rows),
        overall=overall,
        clean_auroc=auc_clean,
        drops=drops,
        mce=mce,
        reference="clean model" if reference is None else "reference model",
    )


def _pick(est: Estimate, confidence: float) -> dict[str, float]:
    lo, hi = est.ci(confidence)
    return {"value": est.value, "ci_low": lo, "ci_high": hi}


def _mean(items: list[Estimate]) -> Estimate:
    vals = np.array([e.value for e in items], dtype=np.float64)
    stacked = np.stack([e.samples for e in items])
    with np.errstate(invalid="ignore"):
        value = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        ok = np.isfinite(stacked).any(axis=0)
        samples = np.full(stacked.shape[1], np.nan)
        samples[ok] = np.nanmean(stacked[:, ok], axis=0)
    return Estimate(value, samples)
