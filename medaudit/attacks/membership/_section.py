"""The ``privacy`` report section: ROC (log-log), TPR at low FPR, exposure, epsilon, checks."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # reports are rendered headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medaudit.attacks.membership._epsilon import EpsilonBound  # noqa: E402
from medaudit.attacks.membership._metrics import FPR_LEVELS  # noqa: E402
from medaudit.attacks.membership._run import MembershipResult  # noqa: E402
from medaudit.report import Check, Figure, Policy, Section  # noqa: E402

__all__ = [
    "CHECK_AUC",
    "CHECK_EPSILON",
    "CHECK_TPR",
    "MIN_NON_MEMBERS_FOR_TPR",
    "REFERENCES",
    "membership_section",
    "roc_loglog_figure",
]

CHECK_AUC = "privacy.membership.auc"
CHECK_TPR = "privacy.membership.tpr_at_1pct_fpr"
CHECK_EPSILON = "privacy.dp.epsilon_excess"
# Below this many non-members a 1 % false-positive rate is less than one image.
MIN_NON_MEMBERS_FOR_TPR = 100

TITLE = "Membership inference and empirical privacy"
REFERENCES = [
    "Carlini N, Chien S, Nasr M, Song S, Terzis A, Tramer F. Membership inference attacks "
    "from first principles. IEEE S&P 2022 (LiRA; TPR at low FPR, log-log ROC).",
    "Zarifzadeh S, Liu P, Nguyen C, Shokri R. Low-cost high-power membership inference "
    "attacks. ICML 2024 (RMIA).",
    "Watson L, Guo C, Cormode G, Sablayrolles A. On the importance of difficulty "
    "calibration in membership inference attacks. ICLR 2022.",
    "Yeom S, Giacomelli I, Fredrikson M, Jha S. Privacy risk in machine learning: analyzing "
    "the connection to overfitting. IEEE CSF 2018 (LOSS attack).",
    "Steinke T, Nasr M, Jagielski M. Privacy auditing with one (1) training run. NeurIPS 2023.",
    "Jagielski M, Ullman J, Oprea A. Auditing differentially private machine learning: how "
    "private is private SGD? NeurIPS 2020.",
    "Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the "
    "case of the binomial. Biometrika 26(4):404-413, 1934.",
    "Murakonda SK, Shokri R. ML Privacy Meter: aiding regulatory compliance by quantifying "
    "the privacy risks of machine learning. arXiv:2007.09339, 2020.",
]
METHODS = (
    "Each attack scores every member (training image) and non-member; higher means 'more "
    "likely a member'. LOSS thresholds the target's loss; the calibrated loss subtracts the "
    "reference models' loss on the same image; LiRA fits Gaussians to the reference "
    "models' logit-scaled confidence; RMIA compares the target-to-reference likelihood "
    "ratio of an image with that of population images no model trained on. Reference "
    "models are trained with the same training loop on population data disjoint from the "
    "members. AUC and TPR at a fixed FPR come with 95% intervals from a bootstrap that "
    "resamples whole patients among members and among non-members. TPR at FPR alpha is "
    "read off the ROC with one point per distinct score, interpolating linearly between "
    "the last point at or below alpha and the next. Empirical epsilon lower bounds "
    "(Clopper-Pearson on a held-out threshold; the one-run audit) use one image per "
    "patient and a Bonferroni correction over attacks and methods."
)
ADVICE_LEAK = (
    "The model memorises its training patients. Train with differential privacy "
    "(medaudit train --dp --epsilon E), stronger regularisation or augmentation, fewer "
    "epochs or early stopping, and audit again."
)
ADVICE_CLAIM = (
    "An attack contradicts the checkpoint's privacy claim: the DP training or its "
    "accounting is wrong (e.g. a sampler the accountant does not model, steps not "
    "counted, clipping not applied). Do not release the model with this claim."
)


def roc_loglog_figure(result: MembershipResult) -> Figure:
    """ROC curves of every attack on log-log axes (the field's standard plot)."""
    n_neg = int((~result.is_member).sum())
    floor = 0.5 / max(n_neg, 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    parts = []
    for name, o in result.outcomes.items():
        m = o.metrics
        keep = _log_spaced(len(m.fpr))
        ax.plot(
            np.maximum(m.fpr[keep], floor),
            np.maximum(m.tpr_curve[keep], floor),
            lw=1.4,
            label=f"{name} (AUC {m.auc:.3f})",
        )
        parts.append(f"{name}: AUC {m.auc:.3f}, TPR {m.tpr[0.01]:.3f} at 1% FPR")
    grid = np.logspace(math.log10(floor), 0, 50)
    ax.plot(grid, grid, color="0.6", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("False positive rate (non-members called members)")
    ax.set_ylabel("True positive rate (members found)")
    ax.set_title("Membership attacks: ROC, log-log")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    alt = "Log-log ROC curves of the membership attacks. " + "; ".join(parts) + "."
    return Figure.from_matplotlib(fig, alt=alt)


def _log_spaced(n: int, points: int = 400) -> np.ndarray:
    """At most ``points`` ROC vertices, dense at the low-FPR end a log-log plot shows."""
    if n <= points:
        return np.arange(n)
    idx = np.unique(np.round(np.logspace(0, math.log10(n), points)).astype(int) - 1)
    return np.r_[0, idx[idx > 0]]


def _tpr_table(result: MembershipResult) -> pd.DataFrame:
    rows = []
    for name, o in result.outcomes.items():
        for a in FPR_LEVELS:
            lo, hi = o.metrics.tpr_ci[a]
            rows.append(
                {
                    "attack": name,
                    "fpr": a,
                    "members_found": o.metrics.tpr[a],
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(rows)


def _epsilon_table(result: MembershipResult) -> pd.DataFrame:
    rows = []
    for name, o in result.outcomes.items():
        for b in (o.epsilon_threshold, o.epsilon_one_run):
            d = b.details
            basis = (
                f"threshold {d.get('threshold', float('nan')):.4g} on held-out half: "
                f"TP {d.get('tp')}/{d.get('n_members')}, FP {d.get('fp')}/{d.get('n_non_members')}"
                if b.method == "clopper_pearson"
                else f"{d.get('v')} of {d.get('r')} guesses right (k+={d.get('k_pos')}, "
                f"k-={d.get('k_neg')}) among {d.get('m')} patients"
            )
            rows.append(
                {
                    "attack": name,
                    "method": b.method,
                    "epsilon_lower": b.epsilon,
                    "delta": b.delta,
                    "confidence": b.confidence,
                    "basis": basis,
                }
            )
    return pd.DataFrame(rows)


def _checks(result: MembershipResult, policy: Policy) -> list[Check]:
    best = result.outcomes[result.strongest].metrics
    checks = [
        policy.judge(
            CHECK_AUC,
            f"Membership inference AUC of the strongest attack ({result.strongest})",
            best.auc,
            ci=best.auc_ci,
            advice=ADVICE_LEAK,
        )
    ]
    top = max(result.outcomes, key=lambda n: result.outcomes[n].metrics.tpr[0.01])
    desc = f"Members found at 1% false positives by the strongest attack ({top})"
    n_neg = int((~result.is_member).sum())
    if n_neg < MIN_NON_MEMBERS_FOR_TPR:
        checks.append(
            policy.skipped(
                CHECK_TPR,
                desc,
                f"needs at least {MIN_NON_MEMBERS_FOR_TPR} non-members (1% of them is an image); "
                f"got {n_neg}",
            )
        )
    else:
        m = result.outcomes[top].metrics
        checks.append(
            policy.judge(CHECK_TPR, desc, m.tpr[0.01], ci=m.tpr_ci[0.01], advice=ADVICE_LEAK)
        )
    checks.append(_claim_check(result, policy))
    return checks


def _claim_check(result: MembershipResult, policy: Policy) -> Check:
    desc = "Empirical epsilon lower bound minus the checkpoint's claimed epsilon"
    if result.claim is None:
        return policy.skipped(
            CHECK_EPSILON,
            desc,
            "the checkpoint makes no differential-privacy claim (no 'privacy' metadata)",
        )
    claim = result.claim.for_groups(result.group_size)
    bound: EpsilonBound = result.epsilon_lower_bound
    per = (
        f"per patient of up to {result.group_size} images: eps {claim.epsilon:.3g}, "
        f"delta {claim.delta:.3g} by group privacy"
        if result.group_size > 1
        else f"delta {claim.delta:.3g}"
    )
    desc = (
        f"Empirical epsilon lower bound {bound.epsilon:.3f} ({bound.method}, {bound.attack}) "
        f"minus the claimed epsilon {result.claim.epsilon:.3g} ({per})"
    )
    return policy.judge(CHECK_EPSILON, desc, bound.epsilon - claim.epsilon, advice=ADVICE_CLAIM)


def _summary(result: MembershipResult) -> str:
    o = result.outcomes[result.strongest].metrics
    lo, hi = o.auc_ci
    leak = (
        "the model gives away who was in its training set"
        if lo > 0.55
        else "no clear sign that it gives away who was in its training set"
        if hi < 0.6
        else "some sign that it gives away who was in its training set"
    )
    text = (
        f"The strongest membership attack ({result.strongest}) tells training images from "
        f"unseen ones with AUC {o.auc:.2f} (95% CI {lo:.2f}-{hi:.2f}; 0.5 is guessing) and "
        f"finds {o.tpr[0.01]:.1%} of them at 1% false positives: {leak}."
    )
    if result.claim is not None:
        b = result.epsilon_lower_bound.epsilon
        claim = result.claim.for_groups(result.group_size).epsilon
        verdict = "contradicts" if b > claim else "is consistent with"
        text += f" The empirical epsilon bound {b:.2f} {verdict} the claimed epsilon {claim:.3g}."
    return text


def membership_section(result: MembershipResult, policy: Policy | None = None) -> Section:
    """Build the ``privacy`` section from a :class:`MembershipResult`.

    Parameters
    ----------
    result : MembershipResult
    policy : Policy, optional
        Thresholds of the checks (default: built-in).
    """
    policy = policy or Policy.default()
    tables = {
        "attacks": result.table(),
        "members_found_at_low_fpr": _tpr_table(result),
        "subgroup_exposure": result.exposure,
        "most_exposed_members": result.most_exposed,
        "empirical_epsilon": _epsilon_table(result),
    }
    if result.not_run:
        tables["attacks_not_run"] = pd.DataFrame(
            {"attack": list(result.not_run), "reason": list(result.not_run.values())}
        )
    refs = result.references
    notes = list(result.notes)
    if refs.get("k"):
        notes.append(
            f"{refs['k']} {refs['design']} reference model(s), about "
            f"{refs['images_per_model']} images each: {refs['trained']} trained "
            f"({refs['backend']}), {refs['from_cache']} loaded from the cache, "
            f"{refs['seconds']:.1f} s."
        )
    n_neg = int((~result.is_member).sum())
    if n_neg < 1000:
        notes.append(
            f"With {n_neg} non-members, TPR at 0.1% FPR is interpolated below one "
            "non-member image; read it as indicative."
        )
    notes.append(
        "Most exposed members are listed by their 0-based row in the members' manifest "
        "only; no identifier or image is shown."
    )
    return Section(
        name="privacy",
        title=TITLE,
        summary=_summary(result),
        tables=tables,
        figures={"roc_loglog": roc_loglog_figure(result)},
        checks=_checks(result, policy),
        notes=notes,
        references=list(REFERENCES),
        methods=METHODS,
    )
