"""Mitigation to try next: group-specific thresholds from Fairlearn's ThresholdOptimizer.

This is a *suggestion*: it is fitted on a calibration split and evaluated on the test
split, and its before/after table goes in the report. Nothing is applied to the model.
:func:`mitigation_comparison` adds bootstrap CIs, flags "levelling down" (equal error
rates reached by making a group worse off) and sets two alternatives beside it:
group-wise recalibration and one operating point reaching a target sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medaudit._errors import param_error

if TYPE_CHECKING:
    from medaudit.inference import Predictions
    from medaudit.operating_point import OperatingPoint

__all__ = ["MitigationResult", "mitigation_comparison", "threshold_optimizer_suggestion"]

MSG_LEVELLING_DOWN = (
    "LEVELLING DOWN: {strategy} lowers sensitivity in {groups}. Equal error rates reached "
    "by making a group worse off are not a fairness gain for any patient; prefer an option "
    "that raises the worse-off group's sensitivity (see the alternatives table)."
)

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

    after = _optimizer_predictions(
        cal_y, cal_score, cal_groups, test_score, test_groups, constraints, random_state
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


def _optimizer_predictions(
    cal_y: np.ndarray,
    cal_score: np.ndarray,
    cal_groups: np.ndarray,
    test_score: np.ndarray,
    test_groups: np.ndarray,
    constraints: str,
    random_state: int,
) -> np.ndarray:
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
    return np.asarray(after).astype(bool)


def _recalibrated(
    cal_y: np.ndarray, cal_s: np.ndarray, cal_g: np.ndarray, s: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling fitted per group on the calibration split: (calibration, test) scores."""
    from sklearn.linear_model import LogisticRegression

    def logit(x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.float64), 1e-6, 1 - 1e-6)
        return np.log(x / (1 - x))[:, None]

    new_cal, new = np.array(cal_s, dtype=np.float64), np.array(s, dtype=np.float64)
    for grp in np.unique(cal_g):
        m = cal_g == grp
        if len(np.unique(cal_y[m])) < 2:
            continue
        lr = LogisticRegression(C=1e6).fit(logit(cal_s[m]), cal_y[m].astype(int))
        new_cal[m] = lr.predict_proba(logit(cal_s[m]))[:, 1]
        if (g == grp).any():
            new[g == grp] = lr.predict_proba(logit(s[g == grp]))[:, 1]
    return new_cal, new


@dataclass(frozen=True)
class MitigationResult:
    """The suggestion's before/after table, the alternatives, and warnings."""

    suggestion: pd.DataFrame
    alternatives: pd.DataFrame
    warnings: list[str]


def _rates(
    W: np.ndarray, y: np.ndarray, pred: np.ndarray, m: np.ndarray, confidence: float
) -> dict[str, float]:
    from medaudit.stats import percentile_ci

    out: dict[str, float] = {}
    for name, num, den in (
        ("tpr", pred & y & m, y & m),
        ("fpr", pred & ~y & m, ~y & m),
        ("selection_rate", pred & m, m),
    ):
        d = den.sum()
        out[name] = float((num.sum() / d) if d else np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            rep = (W @ num.astype(float)) / (W @ den.astype(float))
        lo, hi = percentile_ci(rep, confidence) if d else (np.nan, np.nan)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
    return out


def mitigation_comparison(
    calibration: Predictions,
    predictions: Predictions,
    attribute: str,
    *,
    op: OperatingPoint,
    constraints: str = "equalized_odds",
    target_sensitivity: float = 0.9,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> MitigationResult:
    """Before/after with CIs of the ThresholdOptimizer suggestion, and its alternatives.

    Every option is fitted on ``calibration`` and evaluated on ``predictions`` (data it
    was not fitted on); CIs are percentile-bootstrap intervals resampling patients.

    Parameters
    ----------
    calibration, predictions : Predictions
        Binary predictions; both need the ``attribute`` column.
    attribute : str
    op : OperatingPoint
        The operating point in use (the "before").
    constraints : {"equalized_odds", "true_positive_rate_parity"}
    target_sensitivity : float
        Of the single-threshold alternative.
    """
    from medaudit.operating_point import choose_operating_point
    from medaudit.stats import bootstrap_counts

    if constraints not in CONSTRAINTS:
        raise param_error(
            "constraints", "mitigation_comparison", f"one of {CONSTRAINTS}", constraints
        )
    cy, cs = calibration.labels.astype(bool), calibration.score
    cg = calibration.meta[attribute].astype(str).to_numpy()
    y, s = predictions.labels.astype(bool), predictions.score
    g = predictions.meta[attribute].astype(str).to_numpy()
    before = s >= op.threshold
    after = _optimizer_predictions(cy, cs, cg, s, g, constraints, random_state)
    cal_rc, test_rc = _recalibrated(cy, cs, cg, s, g)
    rc_thr = (
        op.threshold
        if op.method == "fixed"
        else choose_operating_point(
            [], [], method=op.method, target_sensitivity=op.target_sensitivity or 0.9,
            calibration=(cy, cal_rc),
        ).threshold
    )  # fmt: skip
    sens_op = choose_operating_point(
        [], [], method="sensitivity", target_sensitivity=target_sensitivity, calibration=(cy, cs)
    )
    options = {
        f"current operating point (score ≥ {op.threshold:.3g})": before,
        f"ThresholdOptimizer ({constraints.replace('_', ' ')})": after,
        "group-wise recalibration (Platt, per group)": test_rc >= rc_thr,
        f"one threshold reaching sensitivity {target_sensitivity:g} "
        f"(score ≥ {sens_op.threshold:.3g})": s >= sens_op.threshold,
    }
    pid = predictions.meta["patient_id"].to_numpy() if "patient_id" in predictions.meta else None
    W = bootstrap_counts(y.astype(int), n_boot=n_boot, random_state=random_state, clusters=pid)
    groups = [*sorted(set(g.tolist())), "(all)"]
    rows: list[dict[str, Any]] = []
    suggestion = []
    current = next(iter(options))
    for name, pred in options.items():
        for grp in groups:
            m = np.ones(len(y), bool) if grp == "(all)" else g == grp
            r: dict[str, Any] = {"strategy": name, "group": grp, "n": int(m.sum())}
            r.update(_rates(W, y, pred, m, confidence))
            rows.append(r)
    alt = pd.DataFrame(rows)
    first = alt[alt["strategy"] == current].set_index("group")["tpr"]
    # Levelling down: an option that lowers a group's sensitivity below the current one.
    alt["levelling_down"] = [
        bool(r.strategy != current and r.group != "(all)" and r.tpr < first[r.group] - 1e-12)
        for r in alt.itertuples()
    ]
    names = list(options)
    for grp in groups:
        b = alt[(alt["strategy"] == names[0]) & (alt["group"] == grp)].iloc[0]
        a = alt[(alt["strategy"] == names[1]) & (alt["group"] == grp)].iloc[0]
        row: dict[str, Any] = {"group": grp, "n": int(b["n"])}
        for metric in ("tpr", "fpr", "selection_rate"):
            for when, src in (("before", b), ("after", a)):
                row[f"{metric}_{when}"] = src[metric]
                row[f"{metric}_{when}_ci_low"] = src[f"{metric}_ci_low"]
                row[f"{metric}_{when}_ci_high"] = src[f"{metric}_ci_high"]
        row["levelling_down"] = bool(a["levelling_down"])
        suggestion.append(row)
    warnings = []
    for name in names[1:]:
        down = alt[(alt["strategy"] == name) & alt["levelling_down"]]
        if len(down):
            cur = first
            groups_txt = ", ".join(
                f"{r.group} ({cur[r.group]:.3f} → {r.tpr:.3f})" for r in down.itertuples()
            )
            warnings.append(MSG_LEVELLING_DOWN.format(strategy=name, groups=groups_txt))
    return MitigationResult(pd.DataFrame(suggestion), alt, warnings)
