"""What a watermark (or a removal attack) costs on clean data: a paired change with its CI.

Both models are scored on the same test images, so the change is paired: each bootstrap
resample draws whole patients (all their images) within each class and recomputes both
models' AUROC and accuracy on the same resample, vectorised with
:func:`medaudit.stats.bootstrap_counts` and :func:`medaudit.stats.weighted_auroc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error
from medaudit.stats import bootstrap_counts, percentile_ci, weighted_auroc

__all__ = ["UtilityChange", "utility_change"]


@dataclass(frozen=True)
class UtilityChange:
    """Clean performance of the unmarked and the marked model, and the paired change.

    Attributes
    ----------
    auroc_before, auroc_after : float
        Test AUROC (positive class; macro one-vs-rest for more than two classes).
    auroc_change : float
        ``auroc_after - auroc_before`` (negative: the mark costs discrimination).
    auroc_change_ci : tuple of float
    accuracy_before, accuracy_after, accuracy_change : float
        Top-1 accuracy and its paired change.
    accuracy_change_ci : tuple of float
    n_images, n_patients : int
    confidence : float
    """

    auroc_before: float
    auroc_after: float
    auroc_change: float
    auroc_change_ci: tuple[float, float]
    accuracy_before: float
    accuracy_after: float
    accuracy_change: float
    accuracy_change_ci: tuple[float, float]
    n_images: int
    n_patients: int
    confidence: float

    @property
    def auroc_drop(self) -> float:
        """``auroc_before - auroc_after`` (positive: the marked model is worse)."""
        return -self.auroc_change

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "auroc_before": self.auroc_before,
            "auroc_after": self.auroc_after,
            "auroc_change": self.auroc_change,
            "auroc_change_ci": list(self.auroc_change_ci),
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "accuracy_change": self.accuracy_change,
            "accuracy_change_ci": list(self.accuracy_change_ci),
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "confidence": self.confidence,
        }


def utility_change(
    labels: np.ndarray,
    scores_before: np.ndarray,
    scores_after: np.ndarray,
    *,
    patient_ids: np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> UtilityChange:
    """Paired change in test AUROC and accuracy between two models, with bootstrap CIs.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        True class index.
    scores_before, scores_after : array-like of shape (n_images, n_classes)
        Class scores of the unmarked and the marked (or attacked) model on the same images.
    patient_ids : array-like of shape (n_images,), optional
        Resample whole patients (all their images) when given.
    n_boot : int, default 1000
    confidence : float, default 0.95
    random_state : int, default 0

    Returns
    -------
    UtilityChange

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1])
    >>> a = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    >>> b = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    >>> u = utility_change(y, a, b, n_boot=200)
    >>> u.auroc_before, u.auroc_after, u.auroc_change
    (1.0, 0.75, -0.25)
    """
    y, sa, sb = _validate(labels, scores_before, scores_after, n_boot, confidence)
    pid = np.arange(len(y)) if patient_ids is None else np.asarray(patient_ids)
    if len(pid) != len(y):
        raise InvalidInputError("patient_ids must have one entry per image.")
    ones = np.ones((1, len(y)))
    a_before, a_after = _auroc(y, sa, ones)[0], _auroc(y, sb, ones)[0]
    hit_a = (sa.argmax(axis=1) == y).astype(np.float64)
    hit_b = (sb.argmax(axis=1) == y).astype(np.float64)
    w = bootstrap_counts(y, n_boot=n_boot, random_state=random_state, clusters=pid)
    d_auroc = _auroc(y, sb, w) - _auroc(y, sa, w)
    d_acc = (w @ (hit_b - hit_a)) / w.sum(axis=1)
    return UtilityChange(
        auroc_before=float(a_before),
        auroc_after=float(a_after),
        auroc_change=float(a_after - a_before),
        auroc_change_ci=percentile_ci(d_auroc, confidence),
        accuracy_before=float(hit_a.mean()),
        accuracy_after=float(hit_b.mean()),
        accuracy_change=float(hit_b.mean() - hit_a.mean()),
        accuracy_change_ci=percentile_ci(d_acc, confidence),
        n_images=len(y),
        n_patients=len(np.unique(pid)),
        confidence=float(confidence),
    )


def _auroc(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted AUROC per row of ``w``: positive class, or macro one-vs-rest."""
    if scores.shape[1] == 2:
        return weighted_auroc(y == 1, scores[:, 1], w)
    per_class = [
        weighted_auroc(y == k, scores[:, k], w)
        for k in range(scores.shape[1])
        if 0 < np.count_nonzero(y == k) < len(y)
    ]
    return np.mean(per_class, axis=0) if per_class else np.full(len(w), np.nan)


def _validate(
    labels: Any, before: Any, after: Any, n_boot: Any, confidence: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    func = "utility_change"
    y = np.asarray(labels)
    sa = np.asarray(before, dtype=np.float64)
    sb = np.asarray(after, dtype=np.float64)
    if y.ndim != 1 or sa.ndim != 2 or sa.shape != sb.shape or len(sa) != len(y):
        raise InvalidInputError(
            f"{func}: labels must be (n,) and both score arrays (n, n_classes) of the same "
            f"shape; got {y.shape}, {sa.shape} and {sb.shape}."
        )
    if len(np.unique(y)) < 2:
        raise InvalidInputError(f"{func}: the test images must contain at least two classes.")
    if not (np.all(np.isfinite(sa)) and np.all(np.isfinite(sb))):
        raise InvalidInputError(f"{func}: the scores contain NaN or infinite values.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise param_error("n_boot", func, "a positive int", n_boot)
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    return y.astype(np.int64), sa, sb
