"""Operating thresholds chosen on a calibration split: Youden's J or a target sensitivity.

A threshold must be chosen on data the audit does not evaluate; choosing it on the test
split makes every threshold metric look better than it will be in the clinic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error

__all__ = ["sensitivity_threshold", "youden_threshold"]


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
