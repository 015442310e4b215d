"""The operating point: the score at or above which an image is called positive.

Sensitivity, specificity and every error-rate gap depend on it, so it is explicit and
recorded: a fixed threshold from the policy, Youden's J, or the highest threshold that
reaches a target sensitivity, the latter two chosen on a calibration split. A threshold
must be chosen on data the audit does not evaluate; choosing it on the audited images
makes every threshold metric look better than it will be in the clinic.

The policy's core settings ``operating_point`` (``fixed``, ``youden`` or
``sensitivity``), ``operating_threshold`` and ``target_sensitivity`` choose it; the
performance and the fairness audits read the same :class:`OperatingPoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error

if TYPE_CHECKING:
    from medaudit.inference import Predictions
    from medaudit.report import Policy

__all__ = [
    "METHODS",
    "OperatingPoint",
    "choose_operating_point",
    "extreme_selection",
    "operating_point_from_policy",
    "sensitivity_threshold",
    "youden_threshold",
]

METHODS: tuple[str, ...] = ("fixed", "youden", "sensitivity")
# An operating point that flags more than 1 - this fraction of the images, or less than
# it, does not separate anything: its sensitivity (or specificity) says nothing.
EXTREME_SELECTION = 0.02
MSG_NO_CALIBRATION_NOTE = (
    "The {method} operating point was chosen on the audited data itself (no calibration "
    "split was given), which flatters every threshold metric; give a calibration split "
    "(--calibration-data) to choose it on other images."
)
METHOD_WORDS = {
    "fixed": "fixed by the policy",
    "youden": "Youden's J (sensitivity + specificity - 1) maximised",
    "sensitivity": "the highest threshold reaching sensitivity {target:g}",
}


@dataclass(frozen=True)
class OperatingPoint:
    """Where the scores are cut, how that was chosen, and on which data.

    Attributes
    ----------
    method : {"fixed", "youden", "sensitivity"}
    threshold : float
        Predicted positive means ``score >= threshold``.
    chosen_on : {"policy", "calibration split", "audited data"}
    target_sensitivity : float or None
        For ``method="sensitivity"``.
    n_calibration : int or None
        Images of the split it was chosen on (None for a fixed threshold).
    """

    method: str
    threshold: float
    chosen_on: str
    target_sensitivity: float | None = None
    n_calibration: int | None = None

    @property
    def description(self) -> str:
        """One phrase: how the threshold was chosen and on which data."""
        how = METHOD_WORDS[self.method].format(target=self.target_sensitivity or 0)
        where = "" if self.method == "fixed" else f", chosen on the {self.chosen_on}"
        n = f" ({self.n_calibration:,} images)" if self.n_calibration else ""
        return f"score ≥ {self.threshold:.4g} ({how}{where}{n})"

    @property
    def on_audited_data(self) -> bool:
        """True when the threshold was chosen on the images it is evaluated on."""
        return self.chosen_on == "audited data"

    def to_record(self) -> dict[str, Any]:
        """A one-row table record for the report."""
        return {
            "method": self.method,
            "threshold": self.threshold,
            "chosen_on": self.chosen_on,
            "target_sensitivity": self.target_sensitivity,
            "n_calibration": self.n_calibration,
        }


def _roc_points(y_true: ArrayLike, y_score: ArrayLike, func: str) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape or y.size == 0:
        raise InvalidInputError(
            f"{func}: y_true and y_score must be non-empty, 1-d and of the same length; "
            f"got shapes {y.shape} and {s.shape}."
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(f"{func}: y_score contains NaN or infinite values.")
    yb = y.astype(bool)
    n1, n0 = int(yb.sum()), int((~yb).sum())
    if n1 == 0 or n0 == 0:
        raise InvalidInputError(
            f"{func}: the calibration data has only one class ({n1} positives, {n0} "
            "negatives); a threshold cannot be chosen."
        )
    thr, inv = np.unique(s, return_inverse=True)
    thr = thr[::-1]  # descending: predicted positive = score >= thr[i]
    inv = len(thr) - 1 - inv.ravel()
    tp = np.cumsum(np.bincount(inv, weights=yb, minlength=len(thr)))
    fp = np.cumsum(np.bincount(inv, weights=~yb, minlength=len(thr)))
    return thr, tp / n1, fp / n0


def youden_threshold(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1.

    Predicted positive means ``score >= threshold``. Among equal J, the highest threshold
    is returned.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels of the calibration split.
    y_score : array-like of shape (n_samples,)

    References
    ----------
    .. [1] Youden WJ. Index for rating diagnostic tests. Cancer 3(1):32-35, 1950.

    Examples
    --------
    >>> youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8
    """
    thr, tpr, fpr = _roc_points(y_true, y_score, "youden_threshold")
    j = tpr - fpr
    # Ties (up to float noise) go to the highest threshold.
    return float(thr[int(np.argmax(j >= j.max() - 1e-12))])


def sensitivity_threshold(y_true: ArrayLike, y_score: ArrayLike, *, target: float = 0.9) -> float:
    """The highest threshold whose sensitivity on the calibration split is >= ``target``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_score : array-like of shape (n_samples,)
    target : float in (0, 1]
        Required sensitivity (true positive rate).

    Examples
    --------
    >>> sensitivity_threshold([0, 0, 1, 1, 1, 1], [0.1, 0.5, 0.3, 0.6, 0.7, 0.9], target=0.75)
    0.6
    """
    if not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise param_error("target", "sensitivity_threshold", "a float in (0, 1]", target)
    thr, tpr, _ = _roc_points(y_true, y_score, "sensitivity_threshold")
    return float(thr[int(np.argmax(tpr >= target - 1e-12))])


def choose_operating_point(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    method: str = "fixed",
    threshold: float = 0.5,
    target_sensitivity: float = 0.9,
    calibration: tuple[ArrayLike, ArrayLike] | None = None,
) -> OperatingPoint:
    """Choose the operating point; on ``calibration`` when given, else on the data itself.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_samples,)
        The audited data (used only when no calibration split is given).
    method : {"fixed", "youden", "sensitivity"}
    threshold : float
        The fixed threshold (``method="fixed"``).
    target_sensitivity : float in (0, 1]
    calibration : (labels, scores), optional
        The calibration split.

    Examples
    --------
    >>> op = choose_operating_point([0, 1], [0.2, 0.9], method="youden",
    ...                             calibration=([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))
    >>> op.threshold, op.chosen_on
    (0.8, 'calibration split')
    """
    if method not in METHODS:
        raise param_error("method", "choose_operating_point", f"one of {METHODS}", method)
    if method == "fixed":
        if not 0.0 <= float(threshold) <= 1.0:
            raise param_error("threshold", "choose_operating_point", "a float in [0, 1]", threshold)
        return OperatingPoint("fixed", float(threshold), "policy")
    y, s = calibration if calibration is not None else (y_true, y_score)
    where = "calibration split" if calibration is not None else "audited data"
    if method == "youden":
        thr = youden_threshold(y, s)
        return OperatingPoint("youden", thr, where, None, int(np.asarray(y).size))
    thr = sensitivity_threshold(y, s, target=target_sensitivity)
    return OperatingPoint(
        "sensitivity", thr, where, float(target_sensitivity), int(np.asarray(y).size)
    )


def operating_point_from_policy(
    predictions: Predictions, policy: Policy, calibration: Predictions | None = None
) -> OperatingPoint:
    """The operating point the policy's core settings ask for, for a binary model."""
    cal = None if calibration is None else (calibration.labels, calibration.score)
    return choose_operating_point(
        predictions.labels,
        predictions.score,
        method=str(policy.setting("operating_point")),
        threshold=float(policy.setting("operating_threshold")),
        target_sensitivity=float(policy.setting("target_sensitivity")),
        calibration=cal,
    )


def extreme_selection(flagged_fraction: float) -> str | None:
    """``"every"``/``"no"`` when an operating point flags (almost) every image or none.

    Examples
    --------
    >>> extreme_selection(1.0), extreme_selection(0.004), extreme_selection(0.3)
    ('every', 'no', None)
    """
    if flagged_fraction >= 1 - EXTREME_SELECTION:
        return "every"
    if flagged_fraction <= EXTREME_SELECTION:
        return "no"
    return None
