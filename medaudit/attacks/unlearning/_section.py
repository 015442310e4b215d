"""The report section of an unlearning run: verification beside retraining, relearning."""

from __future__ import annotations

import pandas as pd

from medaudit.attacks.unlearning._verify import Verification
from medaudit.report import Section

__all__ = ["unlearning_section"]

REFERENCES = [
    "Hayes J, et al. Inexact unlearning needs more careful evaluations to avoid a false "
    "sense of privacy (U-LiRA). arXiv:2403.01218, 2024.",
    "Kurmanji M, et al. Towards unbounded machine unlearning (SCRUB). NeurIPS 2023.",
    "Maini P, et al. TOFU: a task of fictitious unlearning for LLMs (forget quality). 2024.",
    "Hu S, et al. Jogging the memory of unlearned LLMs through targeted relearning "
    "attacks. ICLR 2025.",
]


def unlearning_section(
    verification: Verification,
    *,
    request: dict | None = None,
    relearning: pd.DataFrame | None = None,
) -> Section:
    """Section ``unlearning``: the verification table, the verdict and the relearning curve.

    Parameters
    ----------
    verification : Verification
    request : dict, optional
        The forget request's record; only its level, column and counts are shown (the
        identifiers stay in the checkpoint's metadata, out of the report).
    relearning : DataFrame, optional
        From :func:`relearning_curve`.

    Returns
    -------
    Section
    """
    v = verification
    verdict = (
        "indistinguishable from retraining"
        if v.indistinguishable
        else "distinguishable from retraining"
        if v.check.status == "fail"
        else "not shown to be indistinguishable from retraining (inconclusive)"
    )
    what = ""
    if request:
        what = f" of {request.get('n_images', '?')} image(s) ({request.get('level')} level)"
    tables = {"verification": v.table.copy()}
    titles = {"verification": f"'{v.method}' beside the retrained reference"}
    if relearning is not None and not relearning.empty:
        tables["relearning"] = relearning.copy()
        titles["relearning"] = "Relearning attack: forget-set confidence while fine-tuning"
    quality = pd.DataFrame(
        [
            {
                "method": v.method,
                "ks_statistic": v.ks_statistic,
                "ks_pvalue": v.ks_pvalue,
                "ks_low": v.excess_ci[0],
                "ks_high": v.excess_ci[1],
                "reference_floor": v.reference_floor,
                "verdict": verdict,
            }
        ]
    )
    tables["forget_quality"] = quality
    titles["forget_quality"] = "Forget quality (KS test, unlearned vs retrained)"
    return Section(
        name="unlearning",
        title="Unlearning verification",
        summary=f"Unlearning{what} by '{v.method}': {verdict}.",
        tables=tables,
        table_titles=titles,
        checks=[v.check],
        notes=[
            "The membership attack is the loss attack on logit-scaled confidences, the "
            "forget set against images no model trained on (patient-bootstrap CI).",
            "Forget quality: two-sample KS test of the forget set's attack statistics, each "
            "calibrated by the last retrained reference; the verdict needs the whole 95% CI of "
            "the KS distance below the margin. With three or more retrained references, "
            "all but the last are pooled; 'distinguishable' also needs the CI above "
            "reference_floor, the largest KS distance between two of them, and "
            "'indistinguishable' needs reference_floor within the margin.",
            "Forgotten identifiers are recorded in the checkpoint's metadata only.",
        ],
        references=list(REFERENCES),
        methods=(
            "Unlearning through the one training loop; verification against models "
            "retrained from scratch without the forget set (different seeds)."
        ),
    )
