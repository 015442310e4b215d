"""Report sections: ownership verification, robustness to removal, data protection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from medaudit.report import Check, Policy, Section, Threshold
from medaudit.stats import wilson_interval

if TYPE_CHECKING:
    from medaudit.watermark._attacks import RobustnessResult
    from medaudit.watermark._protect import ProtectedImages
    from medaudit.watermark._protect_evidence import ProtectionEvidence
    from medaudit.watermark._utility import UtilityChange
    from medaudit.watermark._verify import WatermarkVerification

__all__ = ["CHECKS", "protection_section", "robustness_section", "watermark_section"]

#: The checks of the watermark sections, with their built-in thresholds.
CHECKS: dict[str, Threshold] = {
    "watermark.p_value": Threshold(
        "<=",
        1e-3,
        "major",
        help="p-value of the ownership test; the threshold is the false-claim rate.",
    ),
    "watermark.clean_auroc_drop": Threshold(
        "<=", 0.01, "minor", help="Test AUROC lost by embedding the watermark."
    ),
    "watermark.top1_agreement": Threshold(
        ">=",
        0.99,
        "major",
        help="Harmless watermark: share of triggers whose top-1 class is unchanged.",
    ),
    "watermark.robust.*": Threshold(
        ">=",
        1.0,
        "minor",
        help="Share of an attack's settings (those keeping accuracy within 5 points) "
        "after which the watermark is still verified.",
    ),
    "watermark.protection.auroc_drop": Threshold(
        ">=",
        0.15,
        "major",
        help="Test AUROC a model loses by training on the protected instead of the "
        "original images.",
    ),
    "watermark.protection.psnr_min": Threshold(
        ">=", 35.0, "major", help="Lowest PSNR (dB) of a protected image against its original."
    ),
    "watermark.protection.ssim_min": Threshold(
        ">=", 0.9, "minor", help="Lowest SSIM of a protected image against its original."
    ),
}

REFERENCES = [
    "Adi Y, Baum C, Cisse M, Pinkas B, Keshet J. Turning your weakness into a strength: "
    "watermarking deep neural networks by backdooring. USENIX Security 2018.",
    "Yu Q, et al. StealthMark: harmless and stealthy ownership verification for medical "
    "segmentation via uncertainty-guided backdoors. IEEE Trans Image Process, 2026 "
    "(arXiv:2601.17107).",
    "Lukas N, Jiang E, Li X, Kerschbaum F. SoK: How robust is image classification deep "
    "neural network watermarking? IEEE S&P 2022.",
]
PROTECTION_REFERENCES = [
    "Huang H, Ma X, Erfani SM, Bailey J, Wang Y. Unlearnable examples: making personal "
    "data unexploitable. ICLR 2021.",
    "Sun W, Liu Y, Yan Z, Xu K, Sun L. Medical unlearnable examples: securing medical data "
    "from unauthorized training via sparsity-aware local masking. arXiv:2403.10573, 2024.",
    "Fowl L, Goldblum M, Chiang P, Geiping J, Czaja W, Goldstein T. Adversarial examples "
    "make strong poisons. NeurIPS 2021.",
    "Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error "
    "visibility to structural similarity. IEEE Trans Image Process 13(4):600-612, 2004.",
]
NO_KEY_REASON = "no watermark key was given (--watermark-key KEY.json)"


def _p(p: float) -> str:
    return f"{p:.2g}"


def verification_checks(
    v: WatermarkVerification,
    policy: Policy,
    *,
    utility: UtilityChange | None = None,
    top1_agreement: tuple[int, int] | None = None,
) -> list[Check]:
    """The checks of one verification (and, when known, of what embedding cost)."""
    checks = [
        policy.judge(
            "watermark.p_value",
            f"Ownership test ({v.kind} watermark): p-value of {v.successes} successes in "
            f"{v.trials} trials if the model had been made without the key",
            v.p_value,
            advice="The model does not carry this key's watermark at the false-claim rate "
            "asked for: it was made without the key, or the mark was removed.",
        )
    ]
    if utility is not None:
        lo, hi = utility.auroc_change_ci
        checks.append(
            policy.judge(
                "watermark.clean_auroc_drop",
                "Test AUROC lost by embedding the watermark (unmarked minus marked)",
                utility.auroc_drop,
                ci=(-hi, -lo),
                advice="Embed with fewer triggers or fewer steps, or fine-tune with a "
                "smaller learning rate.",
            )
        )
    if top1_agreement is not None:
        same, n = top1_agreement
        lo_a, hi_a = wilson_interval(same, n, confidence=float(policy.setting("confidence")))
        checks.append(
            policy.judge(
                "watermark.top1_agreement",
                "Triggers whose top-1 class is the unmarked model's",
                same / n,
                ci=(float(lo_a), float(hi_a)),
                advice="The harmless watermark changed predictions; embed with a higher "
                "low-confidence target.",
            )
        )
    return checks


def watermark_section(
    verification: WatermarkVerification | None,
    *,
    policy: Policy,
    utility: UtilityChange | None = None,
    top1_agreement: tuple[int, int] | None = None,
    notes: list[str] | None = None,
    name: str = "watermark",
    title: str = "Ownership watermark",
) -> Section:
    """The ownership-verification section (``verification=None``: no key, skipped)."""
    if verification is None:
        return Section(
            name=name,
            title=title,
            summary="No watermark key was given, so ownership was not tested.",
            checks=[policy.skipped("watermark.p_value", "Ownership test", NO_KEY_REASON)],
            references=REFERENCES[:2],
        )
    v = verification
    verdict = "shown" if v.verified else "not shown"
    table = pd.DataFrame(
        [
            {
                "kind": v.kind,
                "queries": v.n_queries,
                "successes": v.successes,
                "trials": v.trials,
                "success_rate": v.success_rate,
                "null": v.null,
                "null_rate": v.null_rate,
                "p_value": v.p_value,
                "false_claim_rate": v.false_claim_rate,
                "verified": v.verified,
            }
        ]
    )
    tables = {"verification": table}
    titles = {"verification": "Ownership test from black-box queries"}
    if utility is not None:
        tables["utility"] = (
            pd.DataFrame([utility.to_dict()])
            .drop(columns=["auroc_change_ci", "accuracy_change_ci"])
            .assign(
                auroc_change_low=utility.auroc_change_ci[0],
                auroc_change_high=utility.auroc_change_ci[1],
            )
        )
        titles["utility"] = "Clean test performance before and after embedding"
    return Section(
        name=name,
        title=title,
        summary=(
            f"Ownership is {verdict}: {v.successes} of {v.trials} {_trial_word(v)} agree with "
            f"the key (p = {_p(v.p_value)}; false-claim rate {v.false_claim_rate:g})."
        ),
        tables=tables,
        table_titles=titles,
        checks=verification_checks(v, policy, utility=utility, top1_agreement=top1_agreement),
        notes=list(notes or [])
        + [
            "The p-value is exact: a model made without the key agrees with each trigger's "
            "key-drawn label with probability 1/K (trigger-set), or ranks each pair as the "
            "key's coin chose with probability 1/2 (harmless), independently across "
            "triggers; the binomial tail is therefore a valid false-claim probability."
        ],
        references=REFERENCES[:2],
        methods=(
            "The key's trigger images (a key-drawn carrier with the key's pattern) were sent "
            "to the model as black-box queries; only the returned scores were used. "
            "Trigger-set: successes are triggers answered with their target label. "
            "Harmless: successes are pairs whose key-chosen trigger has the larger top-1 "
            "margin (ties dropped). p-value: exact binomial upper tail."
        ),
    )


def _trial_word(v: WatermarkVerification) -> str:
    return "triggers" if v.kind == "trigger" else "untied trigger pairs"


def robustness_section(result: RobustnessResult, *, policy: Policy) -> Section:
    """The removal-attack table with each setting's verdict, one check per attack."""
    checks = []
    for row in result.summary.itertuples(index=False):
        cid = f"watermark.robust.{row.attack}"
        desc = f"Watermark still verified after the {row.attack} attack"
        if row.settings_counted == 0:
            why = (
                "the marked model itself was not verified, so there was nothing to remove"
                if result.marked_p_value > result.false_claim_rate
                else f"every setting cost more than {100 * result.max_accuracy_drop:.0f} "
                "points of accuracy, so none counts"
            )
            checks.append(policy.skipped(cid, desc, why))
            continue
        checks.append(
            policy.judge(
                cid,
                desc,
                row.settings_survived / row.settings_counted,
                advice="The watermark can be removed while the model stays useful; embed with "
                "more triggers or more steps, and report the attack with the ownership claim.",
            )
        )
    robust = result.summary.loc[result.summary["robust"], "attack"].tolist()
    fragile = result.summary.loc[~result.summary["robust"], "attack"].tolist()
    marked = (
        f"marked model: p = {_p(result.marked_p_value)}, test accuracy {result.marked_accuracy:.3f}"
    )
    if result.marked_p_value > result.false_claim_rate:
        summary = f"The {result.kind} watermark was not verified before any attack ({marked})."
    else:
        summary = (
            f"The {result.kind} watermark survived {', '.join(robust) or 'no attack'}"
            + (f"; it did not survive {', '.join(fragile)}" if fragile else "")
            + f" ({marked})."
        )
    return Section(
        name=f"watermark_robustness_{result.kind}",
        title=f"Robustness of the {result.kind} watermark to removal attacks",
        summary=summary,
        tables={"attacks": result.table, "by_attack": result.summary},
        table_titles={
            "attacks": "Each removal attack setting: re-verification and test accuracy",
            "by_attack": "Which attacks the watermark survives",
        },
        checks=checks,
        notes=[
            f"An attack setting counts only when the attacked model's test accuracy stays "
            f"within {100 * result.max_accuracy_drop:.0f} points of the marked model's (the "
            "SoK's criterion): a thief gains nothing from a ruined model. Its verdict is "
            "'survives' when the watermark is still verified at the false-claim rate "
            f"{result.false_claim_rate:g}, 'removed' when not, and 'accuracy lost' when "
            "the attack does not count.",
            *result.notes,
        ],
        references=REFERENCES[2:],
        methods="Each registered removal attack was run on a copy of the marked model at "
        "each of its strengths; the watermark was re-verified by black-box queries and the "
        "test accuracy (top-1) measured on clean test images.",
    )


_PROTECTION_METHODS = {
    "error_minimising": "Error-minimising perturbations (min-min) on the significant pixels, "
    "alternating training steps of a noise model (by default a freshly initialised one "
    "each round) with projected sign-gradient steps that lower each image's loss; "
    "PSNR and SSIM (Gaussian window) on 8-bit values.",
    "adversarial": "Adversarial perturbations used as poisons (Fowl et al.) on the "
    "significant pixels: projected sign-gradient steps that move each image towards "
    "another class of a model trained briefly on the clean images, so that a model trained "
    "on them learns features that fail on clean images; PSNR and SSIM (Gaussian window) on "
    "8-bit values.",
}


def _protection_notes(protected: ProtectedImages, evidence: ProtectionEvidence | None) -> list[str]:
    notes = [
        "The perturbation of each image is confined to its most significant pixels "
        f"({protected.density:.0%} of them) and to +-{protected.epsilon * 255:.0f}/255 "
        "on each; both models were trained the same way and tested on clean images."
    ]
    if evidence is not None and evidence.auroc_protected_ci[1] < 0.5:
        notes.append(
            "The model trained on the protected images ranks clean images below chance "
            "(its AUROC CI lies under 0.5): it learned features of the other class. A thief "
            "who checks it on clean labelled images could invert its scores; a model trained "
            "on the data as given fails."
        )
    return notes


def protection_section(
    protected: ProtectedImages, evidence: ProtectionEvidence | None, *, policy: Policy
) -> Section:
    """Data protection: fidelity of the protected images and what they deny a thief."""
    finite = protected.psnr[pd.notna(protected.psnr) & (protected.psnr < float("inf"))]
    psnr_min = float(finite.min()) if len(finite) else float("inf")
    checks = []
    tables = {
        "fidelity": pd.DataFrame(
            [
                {
                    "method": protected.method,
                    "images": len(protected.images),
                    "epsilon_8bit": protected.epsilon * 255,
                    "density": protected.density,
                    "psnr_min": psnr_min,
                    "psnr_mean": float(finite.mean()) if len(finite) else float("inf"),
                    "ssim_min": float(protected.ssim.min()),
                    "ssim_mean": float(protected.ssim.mean()),
                    "rounds": protected.rounds,
                    "noise_model_accuracy": protected.noise_model_accuracy,
                }
            ]
        )
    }
    summary = f"Protected images keep PSNR >= {psnr_min:.1f} dB"
    if evidence is not None:
        checks.append(
            policy.judge(
                "watermark.protection.auroc_drop",
                "Test AUROC lost by a model trained on the protected, not the original, images",
                evidence.auroc_drop,
                ci=evidence.auroc_drop_ci,
                advice="The protection does not deny an unauthorised model enough; raise the "
                "budget (epsilon, density)"
                + (
                    " or run more rounds."
                    if protected.method == "error_minimising"
                    else ", or try more warm-up or PGD steps."
                ),
            )
        )
        tables["evidence"] = pd.DataFrame(
            [
                {
                    "trained_on": "original images",
                    "test_auroc": evidence.auroc_clean_trained,
                    "ci_low": evidence.auroc_clean_ci[0],
                    "ci_high": evidence.auroc_clean_ci[1],
                },
                {
                    "trained_on": "protected images",
                    "test_auroc": evidence.auroc_protected_trained,
                    "ci_low": evidence.auroc_protected_ci[0],
                    "ci_high": evidence.auroc_protected_ci[1],
                },
            ]
        )
        summary += (
            f"; a model trained on them reaches test AUROC {evidence.auroc_protected_trained:.3f}"
            f" against {evidence.auroc_clean_trained:.3f} when trained on the originals"
        )
    checks.append(
        policy.judge(
            "watermark.protection.psnr_min",
            "Lowest PSNR of a protected image (dB)",
            psnr_min,
            advice="The perturbation is visible; lower epsilon or density.",
        )
    )
    checks.append(
        policy.judge(
            "watermark.protection.ssim_min",
            "Lowest SSIM of a protected image",
            float(protected.ssim.min()),
            advice="The perturbation changes image structure; lower epsilon or density.",
        )
    )
    return Section(
        name="data_protection",
        title="Data protection (availability poisoning)",
        summary=summary + ".",
        tables=tables,
        table_titles={
            "fidelity": "Fidelity of the protected images",
            "evidence": "A model trained on the original vs the protected images (clean test)",
        },
        checks=checks,
        notes=_protection_notes(protected, evidence),
        references=PROTECTION_REFERENCES,
        methods=_PROTECTION_METHODS[protected.method],
    )
