"""The ``privacy_budget`` audit: the model's DP ledger, re-derived and judged.

Reads the ledger a DP-trained checkpoint carries (``ctx.model_info["privacy"]``, the
metadata key ``privacy``), recomputes ε from its (σ, q, steps, δ) with the same
accountant, and judges ε, δ·N and the run against its own target. A model without a
ledger gets a section saying that no guarantee can be stated (its check skipped).
"""

from __future__ import annotations

import math

import pandas as pd

from medaudit.privacy._ledger import PrivacyLedger, compute_epsilon
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Threshold
from medaudit.report._model import Figure

__all__ = ["CHECKS", "SPEC", "audit"]

NAME = "privacy_budget"
TITLE = "Privacy budget (differential privacy)"

CHECKS: dict[str, Threshold] = {
    f"{NAME}.epsilon": Threshold(
        "<=",
        10.0,
        "major",
        help="epsilon of the model's (epsilon, delta)-DP guarantee per training image",
    ),
    f"{NAME}.delta_times_n": Threshold(
        "<",
        1.0,
        "major",
        help="delta x N training images: at or above 1 the guarantee allows leaking a record",
    ),
    f"{NAME}.epsilon_recomputed_ratio": Threshold(
        "<=",
        1.01,
        "critical",
        help="epsilon recomputed from the ledger's (sigma, q, steps, delta) / epsilon recorded",
    ),
    f"{NAME}.epsilon_over_target": Threshold(
        "<=",
        1.0,
        "major",
        help="epsilon spent / the target the noise was calibrated for",
    ),
}

NO_LEDGER_SUMMARY = (
    "The model carries no privacy ledger: it was not trained with differential privacy "
    "by medaudit, so no (epsilon, delta) guarantee can be stated for its training patients."
)
NO_LEDGER_REASON = (
    "no privacy ledger in the checkpoint (train with medaudit train --dp, or "
    "medaudit.privacy.train_private)"
)
REFERENCES = [
    "Abadi M, et al. Deep learning with differential privacy. CCS 2016.",
    "Gopi S, Lee YT, Wutschitz L. Numerical composition of differential privacy. NeurIPS 2021.",
    "Mironov I, Talwar K, Zhang L. Renyi differential privacy of the sampled Gaussian "
    "mechanism. arXiv:1908.10530, 2019.",
    "Dwork C, Roth A. The algorithmic foundations of differential privacy. 2014.",
    "Tayebi Arasteh S, et al. Private, fair and accurate: training large-scale, "
    "privacy-preserving AI models in medical imaging. arXiv:2302.01622, 2023.",
]
METHODS = (
    "The ledger written at training time records the noise multiplier sigma, the Poisson "
    "sample rate q, every optimizer step (including empty batches and epochs discarded by "
    "early stopping), delta and the accountant. Epsilon is recomputed here from those "
    "values with the same Opacus accountant (PRV: numerical composition, an upper bound "
    "within 0.01 of the true value; RDP: a looser upper bound)."
)


def audit(ctx: AuditContext) -> Section:
    """The model's DP guarantee: ledger, ε curve, and checks of ε, δ·N and the accounting."""
    raw = ctx.model_info.get("privacy")
    if raw is None:
        return Section(
            name=NAME,
            title=TITLE,
            summary=NO_LEDGER_SUMMARY,
            checks=[
                ctx.policy.skipped(
                    f"{NAME}.epsilon",
                    "epsilon of the (epsilon, delta)-DP guarantee",
                    NO_LEDGER_REASON,
                )
            ],
            references=REFERENCES[:1],
        )
    led = PrivacyLedger.from_dict(raw)
    return Section(
        name=NAME,
        title=TITLE,
        summary=_summary(led),
        tables={"ledger": _ledger_table(led), "epsilon_curve": _curve_table(led)},
        figures={"epsilon_curve": _curve_figure(led)} if led.epsilon_curve else {},
        checks=_checks(ctx, led),
        notes=_notes(led),
        references=REFERENCES,
        methods=METHODS,
    )


def _summary(led: PrivacyLedger) -> str:
    return (
        f"Trained with DP-SGD: ({led.epsilon:.3g}, {led.delta:.1e})-differential privacy "
        f"per training image after {led.steps} steps ({led.epochs} epochs), noise "
        f"multiplier {led.noise_multiplier:.3g}, clipping norm {led.max_grad_norm:g}."
    )


def _checks(ctx: AuditContext, led: PrivacyLedger) -> list:
    pol = ctx.policy
    checks = [
        pol.judge(
            f"{NAME}.epsilon",
            "epsilon of the (epsilon, delta)-DP guarantee per training image",
            led.epsilon,
            advice="Train with more noise, fewer epochs or a smaller sample rate.",
        )
    ]
    desc = "delta x N training images (the guarantee is weak at or above 1)"
    if led.n_samples > 0:
        checks.append(
            pol.judge(
                f"{NAME}.delta_times_n",
                desc,
                led.delta * led.n_samples,
                advice="Retrain with delta below 1/N (the default is 0.1/N or less).",
            )
        )
    else:
        checks.append(pol.skipped(f"{NAME}.delta_times_n", desc, "the ledger omits N"))
    desc = "epsilon recomputed from the ledger / epsilon recorded"
    if led.accountant in ("prv", "rdp") and led.epsilon > 0 and led.noise_multiplier > 0:
        again = compute_epsilon(
            noise_multiplier=led.noise_multiplier,
            sample_rate=led.sample_rate,
            steps=led.steps,
            delta=led.delta,
            accountant=led.accountant,
        )
        checks.append(
            pol.judge(
                f"{NAME}.epsilon_recomputed_ratio",
                desc,
                again / led.epsilon,
                advice="The recorded epsilon understates what the ledger's own numbers "
                "spend: do not rely on it.",
            )
        )
    else:
        checks.append(
            pol.skipped(
                f"{NAME}.epsilon_recomputed_ratio", desc, "no steps taken or unknown accountant"
            )
        )
    desc = "epsilon spent / the target epsilon the noise was calibrated for"
    if led.target_epsilon is not None and led.target_epsilon > 0:
        checks.append(
            pol.judge(f"{NAME}.epsilon_over_target", desc, led.epsilon / led.target_epsilon)
        )
    else:
        checks.append(
            pol.skipped(
                f"{NAME}.epsilon_over_target", desc, "the noise multiplier was set directly"
            )
        )
    return checks


def _ledger_table(led: PrivacyLedger) -> pd.DataFrame:
    row = {
        "epsilon": led.epsilon,
        "delta": led.delta,
        "noise_multiplier": led.noise_multiplier,
        "sample_rate": led.sample_rate,
        "steps": led.steps,
        "epochs": led.epochs,
        "max_grad_norm": led.max_grad_norm,
        "accountant": led.accountant,
        "n_samples": led.n_samples,
        "target_epsilon": math.nan if led.target_epsilon is None else led.target_epsilon,
    }
    return pd.DataFrame([row])


def _curve_table(led: PrivacyLedger) -> pd.DataFrame:
    per_epoch = max(1, round(1.0 / led.sample_rate))
    return pd.DataFrame(
        {
            "epoch": [-(-s // per_epoch) for s, _ in led.epsilon_curve],
            "steps": [s for s, _ in led.epsilon_curve],
            "epsilon": [e for _, e in led.epsilon_curve],
        },
        columns=["epoch", "steps", "epsilon"],
    )


def _curve_figure(led: PrivacyLedger) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    steps = [s for s, _ in led.epsilon_curve]
    eps = [e for _, e in led.epsilon_curve]
    ax.plot(steps, eps, marker="o", color="#1f5f8b", label=f"epsilon ({led.accountant})")
    if led.target_epsilon is not None:
        ax.axhline(led.target_epsilon, color="#b03a2e", linestyle="--", label="target")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel(f"epsilon at delta={led.delta:.0e}")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    alt = f"Epsilon spent over training: rises to {led.epsilon:.3g} after {led.steps} steps" + (
        "" if led.target_epsilon is None else f" (target {led.target_epsilon:g})"
    )
    return Figure.from_matplotlib(fig, alt=alt)


def _notes(led: PrivacyLedger) -> list[str]:
    notes = [
        "Epsilon bounds what the model, and anything computed from it, reveals about any "
        "one training image: a patient with k images in the training data is protected "
        "only at about k x epsilon (group privacy).",
        "The guarantee assumes Poisson sampling (each image joins each batch independently "
        f"with probability {led.sample_rate:.3g}) and counts all {led.steps} steps taken, "
        "including those of epochs whose weights early stopping discarded.",
    ]
    if led.accountant == "rdp":
        notes.append("The RDP accountant gives an upper bound; PRV is tighter for the same run.")
    return notes


SPEC = register_audit(
    AuditSpec(
        name=NAME,
        title="the differential-privacy ledger of a DP-trained checkpoint: epsilon, delta",
        audit=audit,
        checks=CHECKS,
        needs=("model",),
    )
)
