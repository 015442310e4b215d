"""The label-uncertainty audit: how resolving uncertain labels moves metrics and gaps.

Chest-radiograph label files (CheXpert, MIMIC-CXR) mark findings a report mentions
with hedging as *uncertain* (``-1``). Whether they count as absent (U-Zeros), present
(U-Ones) or are left out (U-Ignore) changes the measured AUROC, sensitivity and
specificity, and can change the subgroup gaps (a group with more uncertain labels moves
more). This audit recomputes the headline metrics and the fairness audit's gaps under
each policy on the same predictions and says which gap verdicts depend on the policy.

It registers as its own audit (``labels``); its settings are also the column mapping
every command reading a table uses, so a policy file's ``[settings.labels]`` table (or
``medaudit audit --label-column ...``) sets them.

References
----------
.. [1] Irvin J. et al. "CheXpert: A Large Chest Radiograph Dataset with Uncertainty
   Labels and Expert Comparison." AAAI 2019.
.. [2] Wilson EB. "Probable inference, the law of succession, and statistical
   inference." JASA 22:209-212, 1927.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError
from medaudit.data import UNCERTAIN_POLICIES
from medaudit.fairness._group import subgroup_gap
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting, Threshold
from medaudit.stats import auroc, wilson_interval

__all__ = [
    "CHECKS",
    "GAPS",
    "MSG_NONE_DECLARED",
    "SETTINGS",
    "SPEC",
    "UncertainLabels",
    "audit",
    "uncertainty_section",
]

#: Gaps recomputed under each policy: (metric, fairness check suffix, words).
GAPS: tuple[tuple[str, str, str], ...] = (
    ("auroc", "auroc_gap", "AUROC gap"),
    ("false_negative_rate", "fnr_gap", "false-negative-rate gap"),
)
CHECKS: dict[str, Threshold] = {
    "labels.policy_dependent_verdicts": Threshold(
        "<=",
        0,
        "minor",
        help="Number of subgroup-gap verdicts that change with the uncertain-label policy",
    ),
}
SETTINGS: tuple[Setting, ...] = (
    Setting("label_column", None, "Column holding the label.", "str", flag="--label-column"),
    Setting("path_column", None, "Column holding the image path.", "str", flag="--path-column"),
    Setting(
        "patient_column", None, "Column holding the patient id.", "str", flag="--patient-column"
    ),
    Setting("score_column", None, "Score column of a predictions table.", "str"),
    Setting("score_columns", None, "Score columns of a predictions table, one per class.", "list"),
    Setting(
        "positive_label", None, "Label value of the positive class.", "str", flag="--positive-label"
    ),
    Setting(
        "uncertain_label",
        None,
        "Label value meaning uncertain (e.g. -1).",
        "str",
        flag="--uncertain-label",
    ),
    Setting(
        "uncertain_policy",
        "ignore",
        "Uncertain labels: ignore (leave those rows out), zeros or ones.",
        "str",
        choices=UNCERTAIN_POLICIES,
        flag="--uncertain-policy",
    ),
    Setting(
        "findings",
        None,
        "Finding columns of a multi-label manifest to audit one after another (a section each).",
        "list",
        flag="--findings",
    ),
)

MSG_NONE_DECLARED = (
    "No uncertain label was declared (--uncertain-label), so no label-uncertainty analysis was run."
)
MSG_NO_UNCERTAIN_PREDICTIONS = (
    "The uncertain rows were left out (policy ignore) and no model was given to score them, "
    "so the other policies cannot be compared."
)


@dataclass(frozen=True)
class UncertainLabels:
    """Predictions split into definite and uncertain rows, as the audit compares them.

    ``score``/``label``/``meta`` of the definite rows; ``u_score``/``u_meta`` of the
    uncertain ones (their label is what each policy makes of it).
    """

    score: np.ndarray
    label: np.ndarray
    meta: pd.DataFrame
    u_score: np.ndarray
    u_meta: pd.DataFrame

    def resolved(self, policy: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """Scores, labels and metadata with the uncertain rows resolved by ``policy``."""
        if policy == "ignore" or len(self.u_score) == 0:
            return self.score, self.label, self.meta
        fill = np.full(len(self.u_score), 1 if policy == "ones" else 0, dtype=np.int64)
        meta = pd.concat([self.meta, self.u_meta], ignore_index=True)
        return np.r_[self.score, self.u_score], np.r_[self.label, fill], meta


def _headline(y: np.ndarray, s: np.ndarray, threshold: float, policy: str) -> dict[str, Any]:
    pred = s >= threshold
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    tp, tn = int((pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
    sl, sh = wilson_interval(tp, max(n_pos, 1))
    pl, ph = wilson_interval(tn, max(n_neg, 1))
    return {
        "policy": policy,
        "n": len(y),
        "n_pos": n_pos,
        "auroc": auroc(y, s) if 0 < n_pos < len(y) else float("nan"),
        "sensitivity": tp / n_pos if n_pos else float("nan"),
        "sensitivity_ci_low": float(sl),
        "sensitivity_ci_high": float(sh),
        "specificity": tn / n_neg if n_neg else float("nan"),
        "specificity_ci_low": float(pl),
        "specificity_ci_high": float(ph),
    }


def _gap_rows(ul: UncertainLabels, ctx: AuditContext, threshold: float) -> list[dict[str, Any]]:
    rows = []
    n_boot = min(int(ctx.setting("n_bootstrap")), 500)
    for policy in UNCERTAIN_POLICIES:
        s, y, meta = ul.resolved(policy)
        pid = meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None
        for attr in ctx.sensitive:
            for metric, suffix, words in GAPS:
                cid = f"fairness.{attr}.{suffix}"
                row: dict[str, Any] = {"attribute": attr, "gap": words, "policy": policy}
                try:
                    g = subgroup_gap(
                        y,
                        s,
                        groups=meta[attr].to_numpy(),
                        metric=metric,
                        threshold=threshold,
                        patient_id=pid,
                        n_boot=n_boot,
                        n_permutations=0,
                        p_method="none",
                    )
                except InvalidInputError as exc:
                    rows.append({**row, "value": np.nan, "verdict": "skipped", "reason": str(exc)})
                    continue
                check = ctx.policy.judge(cid, words, g.value, ci=g.ci)
                rows.append(
                    {
                        **row,
                        "value": g.value,
                        "ci_low": g.ci[0],
                        "ci_high": g.ci[1],
                        "verdict": check.status,
                        "reason": f"{g.group_high} vs {g.group_low}",
                    }
                )
    return rows


def _counts(ul: UncertainLabels, sensitive: list[str]) -> pd.DataFrame:
    rows = []
    for attr in sensitive:
        d = ul.meta[attr].astype(str).value_counts()
        u = ul.u_meta[attr].astype(str).value_counts() if len(ul.u_meta) else pd.Series()
        for g in sorted(set(d.index) | set(u.index)):
            nd, nu = int(d.get(g, 0)), int(u.get(g, 0))
            rows.append(
                {
                    "attribute": attr,
                    "group": g,
                    "n_definite": nd,
                    "n_uncertain": nu,
                    "uncertain_share": nu / (nd + nu),
                }
            )
    return pd.DataFrame(rows)


def uncertainty_section(ul: UncertainLabels, ctx: AuditContext) -> Section:
    """The section: uncertain counts per group, and the per-policy sensitivity tables."""
    chosen = str(ctx.setting("labels.uncertain_policy"))
    threshold = float(ctx.setting("operating_threshold"))
    head = pd.DataFrame(
        [_headline(*ul.resolved(p)[1::-1], threshold, p) for p in UNCERTAIN_POLICIES]
    )
    gaps = pd.DataFrame(_gap_rows(ul, ctx, threshold))
    notes = [
        f"Uncertain labels are resolved by the policy '{chosen}' in every other section "
        "(ignore: left out; zeros: counted negative; ones: counted positive).",
    ]
    dependent = 0
    if not gaps.empty:
        gaps["depends_on_policy"] = gaps.groupby(["attribute", "gap"])["verdict"].transform(
            lambda v: v[v != "skipped"].nunique() > 1
        )
        for (attr, words), grp in gaps[gaps["depends_on_policy"]].groupby(["attribute", "gap"]):
            dependent += 1
            verdicts = ", ".join(f"{r.policy}: {r.verdict}" for r in grp.itertuples())
            notes.append(
                f"The verdict on the {words} across {attr!r} depends on the policy ({verdicts})."
            )
    h = head.set_index("policy")
    summary = (
        f"{len(ul.u_score)} of {len(ul.u_score) + len(ul.score)} labels are uncertain. "
        f"Sensitivity {h.at['ignore', 'sensitivity']:.3f} (ignore), "
        f"{h.at['zeros', 'sensitivity']:.3f} (zeros), {h.at['ones', 'sensitivity']:.3f} (ones); "
        f"AUROC {h.at['ignore', 'auroc']:.3f} / {h.at['zeros', 'auroc']:.3f} / "
        f"{h.at['ones', 'auroc']:.3f}. "
        + (
            f"{dependent} subgroup-gap verdict(s) depend on the policy."
            if dependent
            else "No subgroup-gap verdict depends on the policy."
        )
    )
    check = ctx.policy.judge(
        "labels.policy_dependent_verdicts",
        "Subgroup-gap verdicts that change with the uncertain-label policy",
        float(dependent),
        advice="Have uncertain labels adjudicated (or report results under each policy) "
        "before drawing conclusions from the gaps whose verdict depends on the policy.",
    )
    return Section(
        name="labels",
        title="Label uncertainty",
        summary=summary,
        checks=[check],
        tables={
            "uncertain_counts": _counts(ul, ctx.sensitive),
            "sensitivity_headline": head,
            "sensitivity_gaps": gaps,
        },
        notes=notes,
        table_titles={
            "uncertain_counts": "Uncertain labels per group",
            "sensitivity_headline": "Headline metrics under each uncertain-label policy",
            "sensitivity_gaps": "Subgroup gaps under each policy (verdict by the fairness "
            "audit's thresholds)",
        },
        references=[
            "Irvin J, et al. CheXpert: a large chest radiograph dataset with uncertainty "
            "labels and expert comparison. AAAI 2019.",
        ],
    )


def _split(ctx: AuditContext) -> UncertainLabels | None:
    """Definite and uncertain rows of the audited predictions (None: none declared)."""
    p, cohort = ctx.predictions, ctx.cohort
    meta = p.meta.reset_index(drop=True)
    flag = (
        meta["label_uncertain"].to_numpy(dtype=bool)
        if "label_uncertain" in meta.columns
        else np.zeros(len(meta), dtype=bool)
    )
    if flag.any():
        u_score, u_meta = p.score[flag], meta[flag].reset_index(drop=True)
    elif cohort.uncertain is not None and ctx.model is not None:
        up = ctx.predict(cohort.uncertain, key="uncertain")
        u_score, u_meta = up.score, up.meta.reset_index(drop=True)
    elif cohort.uncertain is not None:
        raise InvalidInputError(MSG_NO_UNCERTAIN_PREDICTIONS)
    else:
        return None
    keep = ~flag
    return UncertainLabels(
        p.score[keep],
        p.labels[keep].astype(np.int64),
        meta[keep].reset_index(drop=True),
        u_score,
        u_meta,
    )


def audit(ctx: AuditContext) -> Section:
    """Uncertain-label counts per group and the per-policy sensitivity table."""
    title = "Label uncertainty"
    if not ctx.predictions.is_binary:
        return Section(name="labels", title=title, summary="Only binary tasks are analysed.")
    try:
        ul = _split(ctx)
    except InvalidInputError as exc:
        return Section(name="labels", title=title, summary=str(exc))
    if ul is None:
        return Section(name="labels", title=title, summary=MSG_NONE_DECLARED)
    return uncertainty_section(ul, ctx)


SPEC = register_audit(
    AuditSpec(
        name="labels",
        title="Label uncertainty",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
    )
)
