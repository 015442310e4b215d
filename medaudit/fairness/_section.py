"""The fairness audit as a report :class:`~medaudit.report.Section`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._group import GroupMetrics, group_metrics
from medaudit.fairness._metrics import METRICS
from medaudit.fairness._thresholds import sensitivity_threshold, youden_threshold
from medaudit.inference import Predictions
from medaudit.report import Check, Policy, Section, Threshold

__all__ = ["CHECK_KINDS", "continuous_association", "fairness_section"]

MSG_MISSING_ATTR = (
    "fairness_section: sensitive attribute(s) {missing} not found in the predictions' "
    "metadata (columns: {available})."
)

REFERENCES = [
    "Seyyed-Kalantari L, Zhang H, McDermott MBA, Chen IY, Ghassemi M. Underdiagnosis bias of "
    "artificial intelligence algorithms applied to chest radiographs in under-served patient "
    "populations. Nat Med 27:2176-2182, 2021.",
    "Luo Y, Shi M, Khan MO, et al. FairCLIP: Harnessing fairness in vision-language learning. "
    "CVPR 2024 (equity-scaled AUC).",
    "Hardt M, Price E, Srebro N. Equality of opportunity in supervised learning. NeurIPS 2016.",
    "Weerts H, Dudik M, Edgar R, Jalali A, Lutz R, Madaio M. Fairlearn: Assessing and "
    "improving fairness of AI systems. JMLR 24(257):1-8, 2023.",
    "Efron B, Tibshirani R. An Introduction to the Bootstrap. Chapman & Hall, 1993.",
    "Phipson B, Smyth GK. Permutation p-values should never be zero. Stat Appl Genet Mol "
    "Biol 9(1), 2010.",
    "Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat "
    "6(2):65-70, 1979.",
]

# (gap metric, gap kind) -> (check suffix, built-in threshold, words, advice)
CHECK_KINDS: dict[str, tuple[str, str, Threshold, str, str]] = {
    "auroc_gap": (
        "auroc",
        "difference",
        Threshold("<=", 0.05),
        "AUROC gap between groups",
        "The model ranks patients less well in {worst}. Check that group's size and label "
        "quality in the training data, collect or up-weight its cases, and report "
        "per-group performance to users.",
    ),
    "worst_group_auroc": (
        "auroc",
        "worst_group",
        Threshold(">=", 0.70, "minor"),
        "AUROC of the worst group",
        "Performance in {worst} may be too low for clinical use; validate on more cases "
        "from that group before deployment.",
    ),
    "underdiagnosis_gap": (
        "underdiagnosis_rate",
        "difference",
        Threshold("<=", 0.05, "minor"),
        "Underdiagnosis-rate gap between groups",
        "Patients in {worst} with a finding are more often called 'no finding'. Consider "
        "group-aware operating points (see the mitigation table) and clinical review of "
        "negatives in that group.",
    ),
    "equalized_odds_difference": (
        "equalized_odds_difference",
        "difference",
        Threshold("<=", 0.10, "minor"),
        "Equalized-odds difference (max of TPR and FPR gaps)",
        "Error rates at the operating threshold differ between groups; try group-specific "
        "thresholds fitted on a calibration split (Fairlearn ThresholdOptimizer).",
    ),
    "demographic_parity_difference": (
        "demographic_parity_difference",
        "difference",
        Threshold("<=", 0.10, "minor"),
        "Demographic-parity difference (selection-rate gap)",
        "Flag rates differ between groups; compare with the prevalence gap before acting, "
        "since unequal prevalence legitimately gives unequal flag rates.",
    ),
    "ece_gap": (
        "ece",
        "difference",
        Threshold("<=", 0.05, "minor"),
        "Calibration (ECE) gap between groups",
        "Predicted probabilities are less trustworthy in {worst}; recalibrate per group on "
        "a calibration split or report calibration per group.",
    ),
}
PEARSON_THRESHOLD = Threshold("<=", 0.10, "minor")


def continuous_association(
    values: np.ndarray,
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    attribute: str,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Pearson r between a continuous attribute (age) and the score / absolute error.

    Rows with a missing attribute are dropped. The CI is Fisher's z interval.

    Returns
    -------
    DataFrame
        ``attribute, target, n, r, ci_low, ci_high, p_value, status, reason`` with targets
        ``score`` and ``absolute_error`` (``|y - score|``).

    Examples
    --------
    >>> age = np.arange(100.0)
    >>> t = continuous_association(age, age % 2, age / 100, attribute="age")
    >>> t.loc[0, "target"], int(t.loc[0, "n"]), round(float(t.loc[0, "r"]), 6)
    ('score', 100, 1.0)
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    x = x[ok]
    y = np.asarray(y_true, dtype=np.float64)[ok]
    s = np.asarray(y_score, dtype=np.float64)[ok]
    rows = []
    for target, v in (("score", s), ("absolute_error", np.abs(y - s))):
        row: dict[str, Any] = {"attribute": attribute, "target": target, "n": int(len(x))}
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(v) == 0:
            row.update(
                r=math.nan,
                ci_low=math.nan,
                ci_high=math.nan,
                p_value=math.nan,
                status="skipped",
                reason="fewer than 3 rows or a constant variable",
            )
        else:
            res = stats.pearsonr(x, v)
            ci = res.confidence_interval(confidence_level=confidence)
            row.update(
                r=float(res.statistic),
                ci_low=float(ci.low),
                ci_high=float(ci.high),
                p_value=float(res.pvalue),
                status="ok",
                reason="",
            )
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "attribute",
            "target",
            "n",
            "r",
            "ci_low",
            "ci_high",
            "p_value",
            "status",
            "reason",
        ],
    )


def _task_arrays(p: Predictions) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if p.is_binary:
        return p.labels, p.score, [p.class_names[-1]] if p.class_names else None
    return p.labels, p.scores, list(p.class_names)


def _choose_threshold(
    mode: str,
    operating: float,
    target: float,
    p: Predictions,
    calibration: Predictions | None,
    notes: list[str],
) -> float:
    if mode == "fixed":
        return float(operating)
    if not p.is_binary:
        raise param_error("threshold", "fairness_section", "'fixed' for a multiclass model", mode)
    src = calibration if calibration is not None else p
    if calibration is None:
        notes.append(
            f"The {mode} threshold was chosen on the evaluated data itself (no calibration "
            "split given), which flatters every threshold metric."
        )
    split = "calibration" if calibration is not None else "evaluated"
    if mode == "youden":
        thr = youden_threshold(src.labels, src.score)
        notes.append(f"Operating threshold {thr:.4g}: Youden's J on the {split} split.")
    else:
        thr = sensitivity_threshold(src.labels, src.score, target=target)
        notes.append(
            f"Operating threshold {thr:.4g}: sensitivity >= {target:g} on the {split} split."
        )
    return thr


def _check_id(attr: str, cls: str, suffix: str, multiclass: bool) -> str:
    return f"fairness.{attr}.{cls}.{suffix}" if multiclass else f"fairness.{attr}.{suffix}"


def _checks(gm: GroupMetrics, policy: Policy) -> list[Check]:
    multiclass = len(gm.class_names) > 1
    g = gm.gaps
    out: list[Check] = []
    for attr in gm.attributes:
        for cls in gm.class_names:
            for suffix, (metric, kind, default, words, advice) in CHECK_KINDS.items():
                cid = _check_id(attr, cls, suffix, multiclass)
                row = g[
                    (g["attribute"] == attr)
                    & (g["class"] == cls)
                    & (g["metric"] == metric)
                    & (g["kind"] == kind)
                ]
                desc = f"{words} ({attr}{', ' + cls if multiclass else ''})"
                if row.empty or row.iloc[0]["status"] == "skipped":
                    reason = row.iloc[0]["reason"] if not row.empty else "not computed"
                    out.append(policy.skipped(cid, desc, reason or "not computed"))
                    continue
                r = row.iloc[0]
                if kind == "difference" and r["group_high"]:
                    desc += f": {r['group_high']} vs {r['group_low']}"
                elif r["worst_group"]:
                    desc += f": {r['worst_group']}"
                chk = policy.judge(
                    cid,
                    desc,
                    float(r["value"]),
                    ci=(float(r["ci_low"]), float(r["ci_high"])),
                    advice=advice.format(worst=r["worst_group"] or "one group"),
                    default=default,
                )
                chk = _judge_calibration(chk, r, gm)
                reason = "; ".join(x for x in (chk.reason, _verdict_reason(chk, r, gm)) if x)
                out.append(dataclasses.replace(chk, reason=reason))
    return out


def _judge_calibration(chk: Check, r: pd.Series, gm: GroupMetrics) -> Check:
    """A calibration gap is judged on the test whose null is "every group is calibrated".

    An ECE gap whose CI straddles the threshold while no group is shown miscalibrated
    is no finding: the check passes, saying why (a calibrated model then warns in at
    most 1 - confidence of audits, whatever the group sizes).
    """
    p = r.get("calibration_p", math.nan)
    alpha = 1 - gm.confidence
    if r["metric"] != "ece" or chk.status != "inconclusive" or not (p > alpha):
        return chk
    return dataclasses.replace(
        chk,
        status="pass",
        reason=f"no group is shown to be miscalibrated (test of calibration, p = {p:.2g} "
        "Bonferroni-adjusted over the groups)",
    )


def _verdict_reason(chk: Check, r: pd.Series, gm: GroupMetrics) -> str:
    # Whether the CI excludes the threshold is stated by the report for every check
    # (Check.ci_excludes_threshold); the reason adds what only this audit knows.
    parts = []
    p = r.get("p_adjusted", math.nan)
    if isinstance(p, float) and math.isfinite(p):
        test = "permutation" if gm.p_method == "permutation" else "bootstrap"
        parts.append(f"{test} p = {p:.3g} ({gm.p_adjust}-adjusted)")
    return "; ".join(x for x in parts if x)


def _groups_table(gm: GroupMetrics, attr: str) -> pd.DataFrame:
    keep = [
        "auroc",
        "true_positive_rate",
        "false_positive_rate",
        "ppv",
        "underdiagnosis_rate",
        "selection_rate",
        "brier_score",
        "ece",
    ]
    frames = []
    for cls in gm.class_names:
        w = gm.by_group(attr, cls)
        cols = ["group", "n", "n_pos", "prevalence"]
        for m in keep:
            cols += [m, f"{m}_ci_low", f"{m}_ci_high"]
        t = w[[*cols, "status", "reason"]].copy()
        if len(gm.class_names) > 1:
            t.insert(0, "class", cls)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def fairness_section(
    predictions: Predictions,
    *,
    sensitive: Sequence[str],
    policy: Policy | None = None,
    intersections: bool = True,
    threshold: str = "fixed",
    operating_threshold: float = 0.5,
    target_sensitivity: float = 0.9,
    calibration: Predictions | None = None,
    continuous: Sequence[str] = ("age",),
    mitigation: str | None = "equalized_odds",
    p_adjust: str = "holm",
    n_permutations: int = 1000,
    p_method: str = "bootstrap",
    figures: bool = True,
) -> Section:
    """Audit subgroup performance and return the report's ``fairness`` section.

    Parameters
    ----------
    predictions : Predictions
        Scores, labels and metadata of the evaluated (test) split.
    sensitive : sequence of str
        Metadata columns to audit (e.g. ``["sex", "age_group"]``); numeric columns with
        many values are cut into quartile groups.
    policy : Policy, optional
        Thresholds and statistical settings (``min_group_size``, ``min_class_count``,
        ``n_bootstrap``, ``confidence``, ``seed``); the built-in policy by default.
    intersections : bool
        Also audit each pair of attributes crossed.
    threshold : {"fixed", "youden", "sensitivity"}
        How the operating threshold is chosen: ``operating_threshold``, Youden's J or the
        highest threshold reaching ``target_sensitivity``, the latter two on
        ``calibration`` (binary models).
    operating_threshold : float
    target_sensitivity : float
    calibration : Predictions, optional
        A calibration split: used to choose the threshold and to fit the mitigation
        suggestion.
    continuous : sequence of str
        Continuous attributes for Pearson r with the score and the error (skipped with a
        note when absent).
    mitigation : {"equalized_odds", "true_positive_rate_parity"} or None
        Constraint of the ThresholdOptimizer suggestion (needs ``calibration``).
    p_adjust : {"holm", "bh", "none"}
    n_permutations : int
    p_method : {"bootstrap", "permutation", "none"}
        Gap p-values: the test dual to the gap's CI, or a permutation test of patients.
    figures : bool
        Draw the ROC curves and the forest plot.

    Returns
    -------
    Section
        ``name="fairness"``; checks ``fairness.<attribute>.<check>`` (with the class
        inserted for multiclass models).
    """
    func = "fairness_section"
    if not isinstance(predictions, Predictions):
        raise param_error(
            "predictions", func, "a medaudit.inference.Predictions", type(predictions).__name__
        )
    if isinstance(sensitive, str):
        sensitive = [s.strip() for s in sensitive.split(",") if s.strip()]
    sensitive = list(sensitive)
    if not sensitive:
        raise param_error("sensitive", func, "a non-empty list of metadata columns", sensitive)
    if threshold not in ("fixed", "youden", "sensitivity"):
        raise param_error("threshold", func, "one of ('fixed', 'youden', 'sensitivity')", threshold)
    if mitigation not in (None, "equalized_odds", "true_positive_rate_parity"):
        raise param_error(
            "mitigation", func, "None, 'equalized_odds' or 'true_positive_rate_parity'", mitigation
        )
    meta = predictions.meta
    missing = [c for c in sensitive if c not in meta.columns]
    if missing:
        raise InvalidInputError(
            MSG_MISSING_ATTR.format(missing=missing, available=", ".join(map(str, meta.columns)))
        )
    policy = policy or Policy.default()
    notes: list[str] = []
    thr = _choose_threshold(
        threshold, operating_threshold, target_sensitivity, predictions, calibration, notes
    )
    y, s, class_names = _task_arrays(predictions)
    pid = meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None
    gm = group_metrics(
        y,
        s,
        groups=meta[sensitive],
        threshold=thr,
        patient_id=pid,
        intersections=intersections and len(sensitive) > 1,
        class_names=class_names,
        n_boot=int(policy.setting("n_bootstrap")),
        confidence=float(policy.setting("confidence")),
        n_permutations=n_permutations,
        p_method=p_method,
        p_adjust=p_adjust,
        # Adjust over the gaps the checks report, not every gap in the table.
        p_family=tuple(m for m, k, *_ in CHECK_KINDS.values() if k == "difference"),
        min_group_size=int(policy.setting("min_group_size")),
        min_class_count=int(policy.setting("min_class_count")),
        random_state=int(policy.setting("seed")),
    )
    notes += list(gm.notes)
    checks = _checks(gm, policy)
    tables: dict[str, pd.DataFrame] = {"overall": gm.overall.copy()}
    for attr in gm.attributes:
        tables[f"groups_{attr}"] = _groups_table(gm, attr)
    gaps = gm.gaps
    keep = (gaps["kind"].isin(["difference", "equity_scaled"])) | (
        (gaps["kind"] == "worst_group") & (gaps["metric"] == "auroc")
    )
    tables["gaps"] = gaps[keep].reset_index(drop=True)

    # Continuous attributes: Pearson r with the score and with the error.
    cont_frames = []
    for col in continuous:
        if col not in meta.columns:
            notes.append(f"No {col!r} column: Pearson r with {col} not computed.")
            continue
        if not pd.api.types.is_numeric_dtype(meta[col]):
            notes.append(f"Column {col!r} is not numeric: Pearson r not computed.")
            continue
        for cls_i, cls in enumerate(gm.class_names):
            yy = (
                (y == (cls_i if len(gm.class_names) > 1 else 1)).astype(float)
                if np.ndim(y) == 1
                else y[:, cls_i]
            )
            ss = s if np.ndim(s) == 1 else s[:, cls_i]
            t = continuous_association(
                meta[col].to_numpy(dtype=np.float64, na_value=np.nan),
                yy,
                ss,
                attribute=col,
                confidence=float(policy.setting("confidence")),
            )
            t.insert(1, "class", cls)
            cont_frames.append(t)
            err = t[t["target"] == "absolute_error"].iloc[0]
            cid = _check_id(col, cls, "error_abs_pearson_r", len(gm.class_names) > 1)
            desc = f"|Pearson r| between {col} and the absolute error" + (
                f" ({cls})" if len(gm.class_names) > 1 else ""
            )
            if err["status"] == "skipped":
                checks.append(policy.skipped(cid, desc, str(err["reason"])))
            else:
                lo, hi = float(err["ci_low"]), float(err["ci_high"])
                abs_ci = (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
                chk = policy.judge(
                    cid,
                    desc,
                    abs(float(err["r"])),
                    ci=abs_ci,
                    default=PEARSON_THRESHOLD,
                    advice=(
                        f"Errors change with {col}; check performance in the extreme {col} "
                        "groups and their representation in training."
                    ),
                )
                checks.append(
                    dataclasses.replace(
                        chk,
                        reason="; ".join(
                            x
                            for x in (
                                chk.reason,
                                f"r = {float(err['r']):.3f}, {gm.confidence:.0%} CI "
                                f"[{lo:.3f}, {hi:.3f}] (Fisher z)",
                            )
                            if x
                        ),
                    )
                )
    if cont_frames:
        tables["continuous"] = pd.concat(cont_frames, ignore_index=True)

    # Mitigation suggestion (never applied).
    if (
        mitigation is not None
        and calibration is not None
        and predictions.is_binary
        and calibration.is_binary
    ):
        attr = sensitive[0]
        if attr in calibration.meta.columns:
            from medaudit.fairness._mitigation import threshold_optimizer_suggestion

            try:
                tables["mitigation"] = threshold_optimizer_suggestion(
                    calibration.labels,
                    calibration.score,
                    calibration.meta[attr].astype(str).to_numpy(),
                    predictions.labels,
                    predictions.score,
                    meta[attr].astype(str).to_numpy(),
                    threshold=thr,
                    constraints=mitigation,
                    random_state=int(policy.setting("seed")),
                )
                notes.append(
                    f"SUGGESTION, NOT APPLIED: group-specific thresholds for {attr!r} from "
                    f"Fairlearn's ThresholdOptimizer ({mitigation}), fitted on the calibration "
                    "split; the 'mitigation' table shows test-split rates before and after."
                )
            except ValueError as exc:  # e.g. a calibration group with one class
                notes.append(f"Mitigation suggestion not computed: {exc}")
        else:
            notes.append(
                f"Mitigation suggestion not computed: the calibration split has no {attr!r} column."
            )

    figs: dict[str, Any] = {}
    if figures:
        from medaudit.fairness._plots import forest_plot, roc_figure

        for attr in sensitive:
            curves = {cls: gm.roc_curves(attr, cls) for cls in gm.class_names}
            aucs = {
                cls: dict(
                    zip(
                        gm.by_group(attr, cls)["group"],
                        gm.by_group(attr, cls)["auroc"],
                        strict=True,
                    )
                )
                for cls in gm.class_names
            }
            figs[f"roc_{attr}"] = roc_figure(curves, aucs, attribute=attr)
        gap_checks = [c for c in checks if not c.id.endswith("worst_group_auroc")]
        figs["forest"] = forest_plot(gap_checks)

    summary = _summary(gm, checks)
    methods = (
        f"Per-group metrics at operating threshold {thr:.4g} (predicted positive = score >= "
        f"threshold) for {', '.join(gm.attributes)}. {gm.confidence:.0%} CIs: bootstrap "
        f"({gm.n_boot} resamples) of whole "
        + ("patients" if pid is not None else "images")
        + " within each group (and within class profile for AUROC, sensitivity and "
        "specificity); Wilson intervals with the bootstrap's design effect for rates, "
        "logit-scale basic intervals for AUROC and the Brier score, a debiased ECE. A gap "
        "is the difference between the highest and lowest group; its CI is simultaneous "
        "over every pair of groups (max-t), so it allows for the pair being picked from the "
        "data. p-values: "
        + (
            f"{n_permutations} permutations of group labels among patients"
            if gm.p_method == "permutation"
            else "the bootstrap test dual to the gap's CI"
        )
        + f", {gm.p_adjust}-adjusted across the gaps the checks report. The ECE gap passes "
        "when no group is shown to be miscalibrated. Groups with fewer than "
        f"{policy.setting('min_group_size')} images or fewer "
        f"than {policy.setting('min_class_count')} of a class are skipped."
    )
    skipped_groups = gm.table[
        (gm.table["group_status"] == "skipped") & (gm.table["metric"] == "count")
    ]
    if len(skipped_groups):
        notes.append(
            f"{len(skipped_groups)} group(s) skipped as too small: "
            + "; ".join(
                f"{r.attribute}={r.group} ({r.group_reason})"
                for r in skipped_groups.head(8).itertuples()
            )
            + (" ..." if len(skipped_groups) > 8 else "")
        )
    return Section(
        name="fairness",
        title="Fairness across patient groups",
        summary=summary,
        tables=tables,
        figures=figs,
        checks=checks,
        notes=notes,
        references=list(REFERENCES),
        methods=methods,
    )


def _summary(gm: GroupMetrics, checks: list[Check]) -> str:
    g = gm.gaps
    auc = g[(g["metric"] == "auroc") & (g["kind"] == "difference") & (g["status"] == "ok")]
    failed = [c for c in checks if c.status == "fail"]
    unsure = [c for c in checks if c.status == "inconclusive"]
    judged = [c for c in checks if c.status != "skipped"]
    if auc.empty:
        return (
            "No two patient groups were large enough to compare; the fairness of this model "
            "could not be assessed."
        )
    top = auc.loc[auc["value"].idxmax()]
    cls = f" for {top['class']}" if len(gm.class_names) > 1 else ""
    lead = (
        f"AUROC{cls} differs by up to {top['value']:.3f} between {top['attribute']} groups "
        f"({top['group_high']} vs {top['group_low']}, {gm.confidence:.0%} CI "
        f"{top['ci_low']:.3f} to {top['ci_high']:.3f})"
    )
    verdict = f"{len(failed)} of {len(judged)} fairness checks failed" + (
        f" and {len(unsure)} were inconclusive" if unsure else ""
    )
    return f"{lead}; {verdict}."


# Metric labels, re-exported for renderers that want readable column headers.
METRIC_LABELS = {k: v.label for k, v in METRICS.items()}
