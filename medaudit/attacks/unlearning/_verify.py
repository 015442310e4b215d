"""Verification: is an unlearned model distinguishable from one retrained without the data.

For the unlearned model and each retrained reference: AUROC on the forget, retain and
test sets, and a per-example membership attack on the forget set (the ``loss`` attack of
:mod:`medaudit.attacks.membership` on logit-scaled confidences, forget vs test images,
U-LiRA's question asked of each model). The forget-quality score compares the attack
statistics on the forget set of the unlearned model and of a retrained one with a
two-sample Kolmogorov-Smirnov test; each image's statistic is calibrated by the last
retrained model (its confidence there is subtracted, as the calibrated-loss attack
does), so that what is compared is how each model departs from retraining, image by
image. With more than two retrained references, all but the last are pooled into the
distribution compared with. Two retrained models still differ (seeds): the verdict
*indistinguishable from retraining* needs the whole patient-bootstrap CI of the KS
distance below a margin (0.3 by default) that leaves room for that; with three or more
references the verdict *distinguishable* also needs the CI above the largest distance
between two pooled references, and *indistinguishable* needs that distance within the
margin (on a forget set unlike the retained data, such as a whole site, retrained models
disagree with each other by more than the margin). Its error rates over
seeds, with a retrained model as the truth and with approximate methods, are measured in
``experiments/unlearning_verifier``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from torch import nn

from medaudit._errors import InvalidInputError
from medaudit.attacks.membership import (
    LossAttack,
    MembershipSignals,
    attack_metrics,
    logit_confidence,
)
from medaudit.inference import predict
from medaudit.models import macro_ovr_auroc
from medaudit.report import Check, Policy, Threshold
from medaudit.stats import bootstrap_counts, percentile_ci

__all__ = ["INDISTINGUISHABLE", "Verification", "verify_unlearning", "weighted_ks"]

#: The verdict's check: excess KS distance over the retrain-to-retrain floor.
INDISTINGUISHABLE = Threshold(
    "<=",
    0.3,
    "major",
    help="KS distance of the forget set's calibrated attack statistics, unlearned vs retrained.",
)
CHECK_ID = "unlearning.indistinguishable_from_retraining"
REFERENCE_NAME = "retrained reference"
MSG_FLOOR = (
    "not failed: the retrained references differ from each other by KS {floor:.2f} on this "
    "forget set (it is unlike the retained data, e.g. a whole site), and the CI reaches "
    "down to that"
)
MSG_FLOOR_PASS = (
    "not passed: the retrained references differ from each other by KS {floor:.2f} on this "
    "forget set, more than the margin, so closeness to them cannot show equivalence"
)
MSG_NEED_REFERENCE = (
    "Verification needs at least two retrained reference models (seeds differ): one to "
    "compare with, one to calibrate each image's difficulty."
)


def weighted_ks(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """KS distance of two paired samples under resampling weights, vectorised.

    Parameters
    ----------
    a : ndarray of shape (n,)
        A statistic of ``n`` images.
    b : ndarray of shape (n,) or (m, n)
        The same images' statistic under one model, or under ``m`` models pooled into one
        empirical distribution (each image counted once per model).
    weights : ndarray of shape (n_boot, n)
        Resampling counts (one row per resample) applied to every sample.

    Returns
    -------
    ndarray of shape (n_boot,)
        ``max_t |F_a(t) - F_b(t)|`` of the weighted empirical distributions — scipy's
        ``ks_2samp(a, b.ravel()).statistic`` for a row of ones.

    Examples
    --------
    >>> weighted_ks(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5, 2.5]), np.ones((1, 3)))
    array([0.33333333])
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    m = b2.shape[0]
    vals = np.concatenate([np.asarray(a, dtype=np.float64), b2.ravel()])
    order = np.argsort(vals, kind="mergesort")
    zeros = np.zeros_like(w)
    wa = np.concatenate([w] + [zeros] * m, axis=1)[:, order]
    wb = np.concatenate([zeros] + [w] * m, axis=1)[:, order]
    tot = w.sum(axis=1, keepdims=True)
    diff = np.cumsum(wa, axis=1) / tot - np.cumsum(wb, axis=1) / (m * tot)
    # Only compare at the last of tied values (the ECDFs are right-continuous).
    last = np.append(vals[order][1:] != vals[order][:-1], True)
    return np.abs(diff[:, last]).max(axis=1)


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_unlearning` returns.

    Attributes
    ----------
    table : DataFrame
        One row per model (the method's, then each retrained reference): ``model``,
        ``forget_auroc``, ``retain_auroc``, ``test_auroc``, ``attack_auc`` with
        ``attack_low``/``attack_high`` (forget vs test images, patient bootstrap), and
        ``forget_confidence`` (mean logit-scaled confidence in the true label).
    ks_statistic, ks_pvalue : float
        Two-sample KS test of the forget set's calibrated attack statistics (confidence
        minus the last reference's), unlearned vs the other retrained references pooled; the
        forget-quality score is the p-value (descriptive: the samples are paired).
    excess, excess_ci : float, (float, float)
        The KS distance (equal to ``ks_statistic``) and its patient-bootstrap 95% CI,
        which the verdict judges.
    check : Check
        ``unlearning.indistinguishable_from_retraining``: pass only when the CI allows it.
    statistics : DataFrame
        Per forget image, each model's attack statistic (for plots; no identifiers).
    reference_floor : float
        The largest KS distance between two pooled references' calibrated statistics:
        how far retrained models fall from each other here (NaN with two references).
        A method is failed only when the CI's lower limit exceeds it as well, and passed
        only when it lies within the margin.
    """

    method: str
    table: pd.DataFrame
    ks_statistic: float
    ks_pvalue: float
    excess: float
    excess_ci: tuple[float, float]
    check: Check
    statistics: pd.DataFrame = field(repr=False)
    reference_floor: float = float("nan")

    @property
    def indistinguishable(self) -> bool:
        """True only when the check passed (the CI lies below the margin)."""
        return self.check.status == "pass"


def _patients(cohort: Any) -> np.ndarray:
    if "patient_id" in cohort.meta.columns:
        return cohort.meta["patient_id"].astype(str).to_numpy()
    return np.arange(len(cohort)).astype(str)


def _auroc(model: nn.Module, cohort: Any, opts: dict[str, Any]) -> float:
    if cohort is None or len(cohort) == 0:
        return float("nan")
    p = predict(model, cohort, features=False, amp=False, **opts)
    return macro_ovr_auroc(np.asarray(cohort.labels), p.scores)


def _row(
    name: str,
    model: nn.Module,
    forget: Any,
    retain: Any,
    test: Any,
    opts: dict[str, Any],
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    phi_f = logit_confidence(model, forget, **opts)
    row: dict[str, Any] = {
        "model": name,
        "forget_auroc": _auroc(model, forget, opts),
        "retain_auroc": _auroc(model, retain, opts),
        "test_auroc": _auroc(model, test, opts),
        "attack_auc": np.nan,
        "attack_low": np.nan,
        "attack_high": np.nan,
        "forget_confidence": float(np.mean(phi_f)),
    }
    if test is not None and len(test):
        phi_t = logit_confidence(model, test, **opts)
        scores = LossAttack().run(MembershipSignals.from_arrays(np.concatenate([phi_f, phi_t])))
        member = np.r_[np.ones(len(phi_f), bool), np.zeros(len(phi_t), bool)]
        m = attack_metrics(
            member,
            scores,
            patients=np.concatenate([_patients(forget), _patients(test)]),
            n_boot=n_boot,
            random_state=seed,
        )
        row.update(attack_auc=m.auc, attack_low=m.auc_ci[0], attack_high=m.auc_ci[1])
    return row, phi_f


def verify_unlearning(
    unlearned: nn.Module,
    references: Sequence[nn.Module],
    *,
    method: str,
    forget: Any,
    retain: Any,
    test: Any = None,
    mean: list[float],
    std: list[float],
    image_size: int | None = None,
    in_channels: int = 1,
    policy: Policy | None = None,
    n_boot: int = 500,
    seed: int = 0,
) -> Verification:
    """Compare an unlearned model with retrained references on the forget set.

    Parameters
    ----------
    unlearned : torch.nn.Module
    references : sequence of torch.nn.Module
        At least two models retrained from scratch on ``retain`` (different seeds): the
        last calibrates each image's difficulty, the others are pooled into the
        distribution the unlearned model is compared with. More than two narrow the
        retrain-to-retrain spread the margin must leave room for (measured in
        ``experiments/unlearning_verifier``).
    method : str
        Name shown in the table.
    forget, retain : Cohort
    test : Cohort, optional
        Images no model trained on: the membership attack's non-members and the test
        AUROC (NaN without it).
    mean, std, image_size, in_channels
        The models' input.
    policy : Policy, optional
        Threshold of ``unlearning.indistinguishable_from_retraining`` (default ``<= 0.3``).
    n_boot : int, default 500
    seed : int, default 0

    Returns
    -------
    Verification

    References
    ----------
    .. [1] Hayes J, Shumailov I, Triantafillou E, Khalifa A, Papernot N. Inexact unlearning
           needs more careful evaluations to avoid a false sense of privacy (U-LiRA).
           arXiv:2403.01218, 2024.
    .. [2] Maini P, Feng Z, Schwarzschild A, Lipton ZC, Kolter JZ. TOFU: a task of
           fictitious unlearning for LLMs (forget quality as a KS test). 2024.
    """
    if len(references) < 2:
        raise InvalidInputError(MSG_NEED_REFERENCE)
    opts = {"image_size": image_size, "in_channels": in_channels, "mean": mean, "std": std}
    rows, phis = [], []
    models = [(method, unlearned)] + [
        (REFERENCE_NAME if i == 0 else f"{REFERENCE_NAME} {i + 1}", r)
        for i, r in enumerate(references)
    ]
    for name, mdl in models:
        row, phi = _row(name, mdl, forget, retain, test, opts, n_boot, seed)
        rows.append(row)
        phis.append(phi)
    # Paired, difficulty-calibrated statistics (the calibrated-loss attack's idea): each
    # forget image's confidence under a model minus its confidence under the last
    # reference. A retrained model and the unlearned one should give the same spread.
    base = phis[-1]
    s_u, s_r = phis[0] - base, np.vstack(phis[1:-1]) - base
    ks = sps.ks_2samp(s_u, s_r.ravel())
    w = np.vstack(
        [
            np.ones(len(s_u)),
            bootstrap_counts(
                np.zeros(len(s_u), int),
                n_boot=n_boot,
                random_state=seed,
                clusters=_patients(forget),
            ),
        ]
    )
    excess = weighted_ks(s_u, s_r, w)
    ci = percentile_ci(excess[1:])
    floor = _reference_floor(s_r)
    pol = policy or Policy.default()
    check = pol.judge(
        CHECK_ID,
        f"'{method}' is indistinguishable from retraining on the forget set (excess KS "
        "distance of the membership attack's statistics)",
        float(excess[0]),
        ci=ci,
        default=INDISTINGUISHABLE,
        advice="Retrain without the forgotten data, or unlearn longer and verify again.",
    )
    if check.status == "fail" and ci[0] <= floor:
        check = dataclasses.replace(
            check, status="inconclusive", reason=MSG_FLOOR.format(floor=floor)
        )
    elif check.status == "pass" and check.threshold is not None and floor > check.threshold:
        check = dataclasses.replace(
            check, status="inconclusive", reason=MSG_FLOOR_PASS.format(floor=floor)
        )
    stats = pd.DataFrame({name: phi for (name, _), phi in zip(models, phis, strict=True)})
    return Verification(
        method=method,
        table=pd.DataFrame(rows),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        excess=float(excess[0]),
        excess_ci=ci,
        check=check,
        statistics=stats,
        reference_floor=floor,
    )


def _reference_floor(pooled: np.ndarray) -> float:
    """Largest KS distance between two rows of ``pooled`` (NaN for a single row)."""
    m, n = pooled.shape
    one = np.ones((1, n))
    pairs = [
        float(weighted_ks(pooled[i], pooled[j], one)[0]) for i in range(m) for j in range(i + 1, m)
    ]
    return max(pairs) if pairs else float("nan")
