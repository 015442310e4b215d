"""How well an attack tells members from non-members: ROC, TPR at low FPR, exposure.

**TPR at a given FPR** (the field's headline number, Carlini et al. 2022) is read off the
ROC curve that has one point per distinct score (scikit-learn's
``roc_curve(..., drop_intermediate=False)``), with this rule: at FPR ``alpha`` take the
highest TPR of the points with FPR <= ``alpha``; when ``alpha`` falls between two
points, interpolate linearly between the last point at or below ``alpha`` and the next
one — the TPR a threshold randomised between the two scores achieves. At ``alpha = 0``
it is the share of members scored above every non-member.

Every interval resamples whole patients (all their images), separately among members
and non-members, with the vectorised bootstrap of :mod:`medaudit.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.stats import bootstrap_counts, percentile_ci, weighted_auroc

__all__ = [
    "FPR_LEVELS",
    "AttackMetrics",
    "attack_metrics",
    "balanced_accuracy",
    "most_exposed",
    "roc_points",
    "subgroup_exposure",
    "tpr_at_fpr",
    "weighted_roc",
]

#: The FPRs at which TPR is reported: 1 %, 0.1 % and 0 %.
FPR_LEVELS: tuple[float, ...] = (0.01, 0.001, 0.0)


def _check(is_member: np.ndarray, scores: np.ndarray, func: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_member)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise InvalidInputError(
            f"{func}: is_member and scores must be 1-d of the same length; "
            f"got shapes {y.shape} and {s.shape}."
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(f"{func}: scores contain NaN or infinite values.")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise InvalidInputError(f"{func}: needs both members and non-members.")
    return y, s


def weighted_roc(
    is_member: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points for each row of ``weights`` (e.g. bootstrap counts), vectorised.

    Parameters
    ----------
    is_member : ndarray of shape (n,)
    scores : ndarray of shape (n,)
    weights : ndarray of shape (n_rows, n)

    Returns
    -------
    fpr, tpr : ndarray of shape (n_rows, n_distinct + 1)
        From (0, 0) through one point per distinct score, highest score first, as
        scikit-learn's ``roc_curve(..., drop_intermediate=False)`` (NaN in a row with no
        member or no non-member weight).
    """
    y = np.asarray(is_member, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    # The last row of each run of tied scores closes one ROC point.
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    w_sorted = w[:, order]
    tp = np.cumsum(w_sorted * y[order], axis=1)[:, ends]
    fp = np.cumsum(w_sorted * ~y[order], axis=1)[:, ends]
    zeros = np.zeros((w.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.hstack([zeros, tp]) / tp[:, -1:]
        fpr = np.hstack([zeros, fp]) / fp[:, -1:]
    return fpr, tpr


def roc_points(is_member: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve with one point per distinct score (from (0, 0) to (1, 1)).

    Equal to scikit-learn's ``roc_curve(is_member, scores, drop_intermediate=False)``.

    Examples
    --------
    >>> fpr, tpr = roc_points([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y, s = _check(np.asarray(is_member), np.asarray(scores), "roc_points")
    fpr, tpr = weighted_roc(y, s, np.ones((1, len(y))))
    return fpr[0], tpr[0]


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, alpha: float) -> np.ndarray:
    """The documented rule on rows of ROC points (non-decreasing along axis 1)."""
    fpr, tpr = np.atleast_2d(fpr), np.atleast_2d(tpr)
    last = (fpr <= alpha).sum(axis=1) - 1  # last point at or below alpha
    last = np.clip(last, 0, fpr.shape[1] - 1)
    nxt = np.minimum(last + 1, fpr.shape[1] - 1)
    f0 = np.take_along_axis(fpr, last[:, None], 1)[:, 0]
    t0 = np.take_along_axis(tpr, last[:, None], 1)[:, 0]
    f1 = np.take_along_axis(fpr, nxt[:, None], 1)[:, 0]
    t1 = np.take_along_axis(tpr, nxt[:, None], 1)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(f1 > f0, (alpha - f0) / np.where(f1 > f0, f1 - f0, 1.0), 0.0)
    return t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0)


def tpr_at_fpr(is_member: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """True-positive rate of the attack at a false-positive rate (rule in module docs).

    Parameters
    ----------
    is_member : array-like of shape (n,)
    scores : array-like of shape (n,)
        Higher = more likely a member.
    fpr : float in [0, 1]

    Examples
    --------
    >>> y, s = [1, 1, 0, 1, 0, 0], [6, 5, 4, 3, 2, 1]
    >>> [round(tpr_at_fpr(y, s, a), 4) for a in (0.0, 0.1, 1 / 3, 0.5)]
    [0.6667, 0.6667, 1.0, 1.0]

    Tied scores make a diagonal step, interpolated:

    >>> tpr_at_fpr([1, 1, 0, 0], [2, 1, 1, 0], 0.25)
    0.75
    """
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 <= fpr <= 1:
        raise param_error("fpr", "tpr_at_fpr", "a float in [0, 1]", fpr)
    f, t = roc_points(is_member, scores)
    return float(_tpr_at(f, t, float(fpr))[0])


def balanced_accuracy(is_member: np.ndarray, scores: np.ndarray) -> float:
    """Best balanced accuracy of a threshold on the scores: ``max (TPR + 1 - FPR) / 2``.

    Examples
    --------
    >>> balanced_accuracy([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    0.75
    """
    f, t = roc_points(is_member, scores)
    return float(np.max((t + 1 - f) / 2))


@dataclass(frozen=True)
class AttackMetrics:
    """How well one attack's scores separate members from non-members.

    Attributes
    ----------
    auc, auc_ci : float, (float, float)
        ROC AUC and its bootstrap CI.
    balanced_accuracy : float
        Best ``(TPR + TNR) / 2`` over thresholds.
    tpr : dict of float to float
        TPR at each FPR of :data:`FPR_LEVELS`.
    tpr_ci : dict of float to (float, float)
    fpr, tpr_curve : ndarray
        The ROC points (for the log-log plot).
    n_members, n_non_members : int
    """

    auc: float
    auc_ci: tuple[float, float]
    balanced_accuracy: float
    tpr: dict[float, float]
    tpr_ci: dict[float, tuple[float, float]]
    fpr: np.ndarray = field(repr=False)
    tpr_curve: np.ndarray = field(repr=False)
    n_members: int = 0
    n_non_members: int = 0


def _boot_weights(
    is_member: np.ndarray, patients: np.ndarray | None, n_boot: int, seed: int
) -> np.ndarray:
    return bootstrap_counts(
        is_member.astype(int), n_boot=n_boot, random_state=seed, clusters=patients
    )


def attack_metrics(
    is_member: np.ndarray,
    scores: np.ndarray,
    *,
    patients: np.ndarray | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> AttackMetrics:
    """AUC, balanced accuracy and TPR at low FPR, with patient-bootstrap CIs.

    Parameters
    ----------
    is_member : array-like of shape (n,)
    scores : array-like of shape (n,)
    patients : array-like of shape (n,), optional
        Patient of each image: resampled whole.
    n_boot : int, default 1000
    confidence : float, default 0.95
    random_state : int, default 0

    Examples
    --------
    >>> m = attack_metrics([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1], n_boot=50)
    >>> m.auc, m.balanced_accuracy, m.tpr[0.0]
    (0.75, 0.75, 0.5)
    """
    y, s = _check(np.asarray(is_member), np.asarray(scores), "attack_metrics")
    w = np.vstack([np.ones(len(y)), _boot_weights(y, patients, n_boot, random_state)])
    fpr, tpr = weighted_roc(y, s, w)
    aucs = weighted_auroc(y, s, w)
    tprs = {a: _tpr_at(fpr, tpr, a) for a in FPR_LEVELS}
    return AttackMetrics(
        auc=float(aucs[0]),
        auc_ci=percentile_ci(aucs[1:], confidence),
        balanced_accuracy=float(np.max((tpr[0] + 1 - fpr[0]) / 2)),
        tpr={a: float(v[0]) for a, v in tprs.items()},
        tpr_ci={a: percentile_ci(v[1:], confidence) for a, v in tprs.items()},
        fpr=fpr[0],
        tpr_curve=tpr[0],
        n_members=int(y.sum()),
        n_non_members=int((~y).sum()),
    )


# Age in years → the bands the synthetic hospitals use (and most radiology cohorts).
AGE_BANDS: tuple[tuple[float, str], ...] = ((40, "18-39"), (60, "40-59"), (80, "60-79"))


def _age_band(age: pd.Series) -> pd.Series:
    a = pd.to_numeric(age, errors="coerce")
    out = pd.Series("80+", index=age.index, dtype=object)
    for edge, name in reversed(AGE_BANDS):
        out[a < edge] = name
    out[a.isna()] = np.nan
    return out


def exposure_attributes(meta: pd.DataFrame, sensitive: Sequence[str]) -> dict[str, pd.Series]:
    """Columns to split exposure by: ``site``, the sensitive attributes, and age bands.

    A numeric ``age`` column is cut into 18-39 / 40-59 / 60-79 / 80+ when no age group is
    among the sensitive attributes.
    """
    out: dict[str, pd.Series] = {}
    for col in ["site", *sensitive]:
        if col in meta.columns and col not in out:
            out[col] = meta[col].astype(object)
    has_age_group = any("age" in c.lower() for c in out)
    if "age" in meta.columns and not has_age_group:
        out["age_band"] = _age_band(meta["age"])
    return out


def subgroup_exposure(
    is_member: np.ndarray,
    scores: np.ndarray,
    groups: dict[str, pd.Series],
    *,
    patients: np.ndarray | None = None,
    min_group_size: int = 30,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """Attack AUC within each subgroup (are some sites, ages or sexes more exposed?).

    Parameters
    ----------
    is_member, scores : ndarray of shape (n,)
    groups : dict of str to Series of length n
        Attribute name → group of each image.
    patients : ndarray of shape (n,), optional
    min_group_size : int, default 30
        A group with fewer members or fewer non-members gets no number, with the reason.
    n_boot, confidence, random_state

    Returns
    -------
    DataFrame
        ``attribute``, ``group``, ``n_members``, ``n_non_members``, ``auc``, ``ci_low``,
        ``ci_high``, ``tpr_at_10pct_fpr``, ``note``.

    Examples
    --------
    >>> y = np.tile([True, False], 40)
    >>> site = pd.Series(["A"] * 60 + ["B"] * 20)
    >>> tab = subgroup_exposure(y, y + 0.0, {"site": site}, n_boot=20)
    >>> tab["auc"].tolist()[0], tab["note"].tolist()
    (1.0, ['', 'skipped: 10 members and 10 non-members (fewer than 30 of either)'])
    """
    y, s = _check(np.asarray(is_member), np.asarray(scores), "subgroup_exposure")
    rows = []
    for attr, values in groups.items():
        v = pd.Series(values).reset_index(drop=True)
        for g in sorted(v.dropna().unique(), key=str):
            sel = (v == g).to_numpy()
            nm, nn = int((y & sel).sum()), int((~y & sel).sum())
            row = {"attribute": attr, "group": str(g), "n_members": nm, "n_non_members": nn}
            if min(nm, nn) < min_group_size:
                row["note"] = (
                    f"skipped: {nm} members and {nn} non-members "
                    f"(fewer than {min_group_size} of either)"
                )
                rows.append(row)
                continue
            p = None if patients is None else np.asarray(patients)[sel]
            m = attack_metrics(
                y[sel],
                s[sel],
                patients=p,
                n_boot=n_boot,
                confidence=confidence,
                random_state=random_state,
            )
            f = _tpr_at(m.fpr, m.tpr_curve, 0.1)[0]
            row.update(
                auc=m.auc,
                ci_low=m.auc_ci[0],
                ci_high=m.auc_ci[1],
                tpr_at_10pct_fpr=float(f),
                note="",
            )
            rows.append(row)
    cols = [
        "attribute",
        "group",
        "n_members",
        "n_non_members",
        "auc",
        "ci_low",
        "ci_high",
        "tpr_at_10pct_fpr",
        "note",
    ]
    return pd.DataFrame(rows, columns=cols)


def most_exposed(
    is_member: np.ndarray, scores: np.ndarray, rows: np.ndarray, *, top: int = 10
) -> pd.DataFrame:
    """The members the attack is surest about, by row index only (no identifier).

    Parameters
    ----------
    is_member, scores : ndarray of shape (n,)
    rows : ndarray of shape (n,)
        Row of each image in its own manifest (0-based).
    top : int, default 10

    Returns
    -------
    DataFrame
        ``member_row``, ``score`` and ``non_members_scored_lower`` (the share of
        non-members below this member's score), most exposed first.

    Examples
    --------
    >>> most_exposed([1, 1, 0, 0], [0.9, 0.2, 0.5, 0.1], [7, 8, 0, 1], top=1)
       member_row  score  non_members_scored_lower
    0           7    0.9                       1.0
    """
    y, s = _check(np.asarray(is_member), np.asarray(scores), "most_exposed")
    r = np.asarray(rows)
    neg = np.sort(s[~y])
    idx = np.flatnonzero(y)
    idx = idx[np.argsort(-s[idx], kind="mergesort")][:top]
    below = np.searchsorted(neg, s[idx], side="left") / len(neg)
    return pd.DataFrame(
        {"member_row": r[idx].astype(int), "score": s[idx], "non_members_scored_lower": below}
    )
