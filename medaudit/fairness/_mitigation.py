"""Mitigation to try next: group-specific thresholds from Fairlearn's ThresholdOptimizer.

This is a *suggestion*: it is fitted on a calibration split and evaluated on the test
split, and its before/after table goes in the report. Nothing is applied to the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import param_error

__all__ = ["threshold_optimizer_suggestion"]

CONSTRAINTS = ("equalized_odds", "true_positive_rate_parity")


def _estimator() -> Any:
    from sklearn.base import BaseEstimator, ClassifierMixin

    class ScoreAsPrediction(ClassifierMixin, BaseEstimator):
        """A prefit 'model' whose prediction is the score column it is given."""

        def fit(self, X: Any, y: Any = None) -> ScoreAsPrediction:  # noqa: N803
            self.fitted_ = True
            return self

        def predict(self, X: Any) -> np.ndarray:  # noqa: N803
            return np.asarray(X)[:, 0]

    return ScoreAsPrediction().fit(None)


def threshold_optimizer_suggestion(
    cal_y: np.ndarray,
    cal_score: np.ndarray,
    cal_groups: np.ndarray,
    test_y: np.ndarray,
    test_score: np.ndarray,
    test_groups: np.ndarray,
    *,
    threshold: float,
    constraints: str = "equalized_odds",
    random_state: int = 0,
) -> pd.DataFrame:
    """Before/after metrics of group-specific thresholds fitted on a calibration split.

    Parameters
    ----------
    cal_y, cal_score, cal_groups : ndarray of shape (n_cal,)
        Calibration split: labels, scores, group of each row.
    test_y, test_score, test_groups : ndarray of shape (n_test,)
        The evaluated split.
    threshold : float
        The single operating threshold in use (the "before").
    constraints : {"equalized_odds", "true_positive_rate_parity"}
        Fairlearn's constraint (equal opportunity is ``true_positive_rate_parity``).
    random_state : int
        ThresholdOptimizer randomises between two thresholds; this fixes the draw.

    Returns
    -------
    DataFrame
        ``group, n, tpr_before, tpr_after, fpr_before, fpr_after, selection_rate_before,
        selection_rate_after``, with a last row ``(all)``.

    References
    ----------
    .. [1] Hardt M, Price E, Srebro N. Equality of opportunity in supervised learning.
           NeurIPS 2016.
    """
    if constraints not in CONSTRAINTS:
        raise param_error(
            "constraints", "threshold_optimizer_suggestion", f"one of {CONSTRAINTS}", constraints
        )
    from fairlearn.postprocessing import ThresholdOptimizer

    opt = ThresholdOptimizer(
        estimator=_estimator(),
        constraints=constraints,
        predict_method="predict",
        prefit=True,
        objective="balanced_accuracy_score",
    )
    opt.fit(
        np.asarray(cal_score, dtype=np.float64)[:, None],
        np.asarray(cal_y).astype(int),
        sensitive_features=np.asarray(cal_groups, dtype=object),
    )
    after = opt.predict(
        np.asarray(test_score, dtype=np.float64)[:, None],
        sensitive_features=np.asarray(test_groups, dtype=object),
        random_state=random_state,
    )
    before = np.asarray(test_score) >= threshold
    y = np.asarray(test_y).astype(bool)
    tg = np.asarray(test_groups, dtype=object)
    rows = []
    for grp in [*sorted(set(tg.tolist()), key=str), "(all)"]:
        m = np.ones(len(y), bool) if grp == "(all)" else tg == grp
        row: dict[str, Any] = {"group": str(grp), "n": int(m.sum())}
        for name, pred in (("before", before), ("after", np.asarray(after).astype(bool))):
            pos, neg = y & m, ~y & m
            row[f"tpr_{name}"] = float(pred[pos].mean()) if pos.any() else float("nan")
            row[f"fpr_{name}"] = float(pred[neg].mean()) if neg.any() else float("nan")
            row[f"selection_rate_{name}"] = float(pred[m].mean())
        rows.append(row)
    cols = ["group", "n"] + [
        f"{m}_{w}" for m in ("tpr", "fpr", "selection_rate") for w in ("before", "after")
    ]
    return pd.DataFrame(rows)[cols]
