"""The fairness audit as a report :class:`~medaudit.report.Section`.

:func:`fairness_section` runs :func:`~medaudit.fairness.group_metrics` once and hands its
result to one function per part of the section: the checks (with the p-values corrected
in two pre-specified families), the continuous attributes, the analysis within sites, the
mitigation suggestion, the figures, the root causes and the methods text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.fairness._continuous import (
    continuous_association,
    continuous_checks,
)
from medaudit.fairness._group import GroupMetrics, group_metrics
from medaudit.fairness._metrics import METRICS
from medaudit.inference import Predictions
from medaudit.operating_point import OperatingPoint, choose_operating_point, extreme_selection
from medaudit.report import Check, Policy, Section, Threshold
from medaudit.report._format import format_p_value

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
    "Bickel PJ, Hammel EA, O'Connell JW. Sex bias in graduate admissions: data from "
    "Berkeley. Science 187:398-404, 1975 (Simpson's paradox).",
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
    "fnr_gap": (
        "false_negative_rate",
        "difference",
        Threshold("<=", 0.05, "major"),
        "False-negative-rate gap between groups (diseased patients missed)",
        "Diseased patients in {worst} are missed more often. Do not deploy one threshold "
        "for every group without review: compare the mitigation options below, collect "
        "and up-weight cases from that group, and review negatives in it clinically.",
    ),
    "worst_group_sensitivity": (
        "true_positive_rate",
        "worst_group",
        Threshold(">=", 0.80, "major"),
        "Sensitivity of the worst group",
        "The model misses too many diseased patients in {worst}; validate and improve "
        "sensitivity in that group before clinical use.",
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


def _task_arrays(p: Predictions) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if p.is_binary:
        return p.labels, p.score, [p.class_names[-1]] if p.class_names else None
    return p.labels, p.scores, list(p.class_names)


def _operating_point(
    mode: str,
    operating: float,
    target: float,
    p: Predictions,
    calibration: Predictions | None,
    notes: list[str],
) -> OperatingPoint:
    if mode != "fixed" and not p.is_binary:
        raise param_error("threshold", "fairness_section", "'fixed' for a multiclass model", mode)
    if mode == "fixed":
        return choose_operating_point([], [], method="fixed", threshold=operating)
    cal = None if calibration is None else (calibration.labels, calibration.score)
    op = choose_operating_point(
        p.labels, p.score, method=mode, threshold=operating, target_sensitivity=target,
        calibration=cal,
    )  # fmt: skip
    _operating_notes(op, notes)
    return op


def _operating_notes(op: OperatingPoint, notes: list[str]) -> None:
    if op.method == "fixed":
        return
    if op.on_audited_data:
        notes.append(
            f"The {op.method} threshold was chosen on the evaluated data itself (no "
            "calibration split given), which flatters every threshold metric."
        )
    how = "Youden's J" if op.method == "youden" else f"sensitivity >= {op.target_sensitivity:g}"
    split = "calibration" if not op.on_audited_data else "evaluated"
    notes.append(f"Operating threshold {op.threshold:.4g}: {how} on the {split} split.")


def _check_id(attr: str, cls: str, suffix: str, multiclass: bool) -> str:
    return f"fairness.{attr}.{cls}.{suffix}" if multiclass else f"fairness.{attr}.{suffix}"


# Checks whose value depends on the operating threshold (meaningless when it flags every
# image or none).
THRESHOLD_CHECKS = frozenset(
    {
        "fnr_gap",
        "worst_group_sensitivity",
        "underdiagnosis_gap",
        "equalized_odds_difference",
        "demographic_parity_difference",
    }
)
# Primary family of the multiple-testing correction: the AUROC and false-negative-rate
# gaps of each attribute given (not the intersections). Pre-specified, so that the gaps a
# clinical safety officer asks about first are not diluted by every exploratory test.
PRIMARY_CHECKS = ("auroc_gap", "fnr_gap")
# Permutations per primary test: with m primary tests, B >= PERMUTATIONS_PER_TEST * m
# makes the smallest Holm-adjusted p-value m / (B + 1) <= 0.005 reachable.
PERMUTATIONS_PER_TEST = 200


@dataclasses.dataclass(frozen=True)
class CheckInfo:
    """Where a fairness check comes from: attribute, class, kind and its gap row."""

    attribute: str
    class_name: str
    suffix: str
    row: pd.Series | None


def _checks(
    gm: GroupMetrics, policy: Policy, extreme: str | None
) -> tuple[list[Check], dict[str, CheckInfo]]:
    multiclass = len(gm.class_names) > 1
    g = gm.gaps
    out: list[Check] = []
    info: dict[str, CheckInfo] = {}
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
                    info[cid] = CheckInfo(attr, cls, suffix, None)
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
                if extreme is not None and suffix in THRESHOLD_CHECKS:
                    chk = dataclasses.replace(
                        chk,
                        status="inconclusive",
                        reason=f"the operating point flags {extreme} image, so this rate "
                        "says nothing about the model",
                    )
                out.append(chk)
                info[cid] = CheckInfo(attr, cls, suffix, r)
    return out, info


def _p_families(
    checks: list[Check], info: dict[str, CheckInfo], gm: GroupMetrics, base: Sequence[str]
) -> dict[str, tuple[float, str, int]]:
    """Adjusted p-value, family and family size of each reported gap check.

    Two families, each adjusted with ``gm.p_adjust``: the primary one (AUROC and FNR gaps
    of the attributes given) and the secondary one (every other gap check reported,
    intersections included). A test behind two checks (the FNR and underdiagnosis gaps of
    a binary model test the same TPR difference) counts once.
    """
    from medaudit.stats import adjust_pvalues

    tests: dict[tuple[str, str, str], tuple[float, str]] = {}
    owner: dict[str, tuple[str, str, str]] = {}
    for c in checks:
        ci = info.get(c.id)
        if ci is None or ci.row is None or c.status == "skipped":
            continue
        p_raw, src = ci.row.get("p_value", math.nan), str(ci.row.get("p_from", "") or "")
        if not (isinstance(p_raw, float) and math.isfinite(p_raw)) or not src:
            continue
        key = (ci.attribute, ci.class_name, src)
        family = "primary" if ci.suffix in PRIMARY_CHECKS and ci.attribute in base else "secondary"
        old = tests.get(key)
        if old is None or family == "primary":
            tests[key] = (float(p_raw), family)
        owner[c.id] = key
    adjusted: dict[tuple[str, str, str], tuple[float, str, int]] = {}
    for fam in ("primary", "secondary"):
        keys = [k for k, (_, f) in tests.items() if f == fam]
        if keys:
            adj = adjust_pvalues(np.array([tests[k][0] for k in keys]), gm.p_adjust)
            adjusted.update({k: (float(a), fam, len(keys)) for k, a in zip(keys, adj, strict=True)})
    return {cid: adjusted[k] for cid, k in owner.items() if k in adjusted}


def _with_p_values(
    checks: list[Check], families: dict[str, tuple[float, str, int]], gm: GroupMetrics
) -> list[Check]:
    out = []
    for c in checks:
        if c.id in families:
            p, fam, m = families[c.id]
            how = "" if gm.p_adjust == "none" else f", {_ADJUST_WORDS[gm.p_adjust]} across the "
            test = "permutation" if gm.p_method == "permutation" else "bootstrap"
            text = f"{test} p {_p_text(p)}{how}{fam} family of {m}" if how else (
                f"{test} p {_p_text(p)} (not adjusted)"
            )  # fmt: skip
            c = dataclasses.replace(c, reason="; ".join(x for x in (c.reason, text) if x))
        out.append(c)
    return out


_ADJUST_WORDS = {"holm": "Holm-adjusted", "bh": "Benjamini-Hochberg-adjusted"}


def _p_text(p: float) -> str:
    shown = format_p_value(p)
    return shown if shown.startswith("<") else f"= {shown}"


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


def _groups_table(gm: GroupMetrics, attr: str) -> pd.DataFrame:
    keep = [
        "auroc",
        "true_positive_rate",
        "false_negative_rate",
        "false_positive_rate",
        "ppv",
        "selection_rate",
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


def _overall_table(gm: GroupMetrics) -> pd.DataFrame:
    t = gm.overall.copy()
    # A count is not estimated: it carries no interval.
    t.loc[t["metric"] == "count", ["ci_low", "ci_high"]] = math.nan
    return t


def _gaps_table(gm: GroupMetrics, families: dict[str, tuple[float, str, int]]) -> pd.DataFrame:
    g = gm.gaps
    keep = (g["kind"].isin(["difference", "equity_scaled"])) | (
        (g["kind"] == "worst_group") & (g["metric"].isin(["auroc", "true_positive_rate"]))
    )
    t = g[keep].reset_index(drop=True)
    cols = [c for c in t.columns if c not in ("tested", "p_from", "p_adjusted")]
    return t[cols].rename(columns={"p_value": "p_value_unadjusted"})


@dataclasses.dataclass(frozen=True)
class _Options:
    intersections: bool
    mitigation: str | None
    p_adjust: str
    n_permutations: int
    p_method: str
    figures: bool
    continuous: tuple[str, ...]


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
    operating_point: OperatingPoint | None = None,
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
    operating_point : OperatingPoint, optional
        An operating point chosen already (the one the performance audit uses);
        overrides ``threshold``, ``operating_threshold`` and ``target_sensitivity``.
    continuous : sequence of str
        Continuous attributes for Pearson r with the score and the error (skipped with a
        note when absent).
    mitigation : {"equalized_odds", "true_positive_rate_parity"} or None
        Constraint of the ThresholdOptimizer suggestion (needs ``calibration``).
    p_adjust : {"holm", "bh", "none"}
    n_permutations : int
        At least this many permutations per test; raised when needed so that the
        smallest adjusted p-value of the primary family can fall below 0.01.
    p_method : {"bootstrap", "permutation", "none"}
        Gap p-values: the test dual to the gap's CI, or a permutation test of patients.
    figures : bool
        Draw the figures.

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
    opts = _Options(
        intersections, mitigation, p_adjust, n_permutations, p_method, figures, tuple(continuous)
    )
    notes: list[str] = []
    if operating_point is None:
        operating_point = _operating_point(
            threshold, operating_threshold, target_sensitivity, predictions, calibration, notes
        )
    else:
        _operating_notes(operating_point, notes)
    return _build(predictions, sensitive, policy, opts, operating_point, calibration, notes)


def _n_permutations(requested: int, n_attributes: int, n_classes: int) -> int:
    if requested <= 0:
        return requested
    m = len(PRIMARY_CHECKS) * n_attributes * n_classes
    return max(requested, PERMUTATIONS_PER_TEST * m)


def _build(
    predictions: Predictions,
    sensitive: list[str],
    policy: Policy,
    opts: _Options,
    op: OperatingPoint,
    calibration: Predictions | None,
    notes: list[str],
) -> Section:
    from medaudit.fairness._causes import root_causes
    from medaudit.fairness._sites import within_site_analysis

    meta = predictions.meta
    thr = op.threshold
    y, s, class_names = _task_arrays(predictions)
    pid = meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None
    n_perm = _n_permutations(opts.n_permutations, len(sensitive), len(class_names or [1]))
    gm = group_metrics(
        y,
        s,
        groups=meta[sensitive],
        threshold=thr,
        patient_id=pid,
        intersections=opts.intersections and len(sensitive) > 1,
        class_names=class_names,
        n_boot=int(policy.setting("n_bootstrap")),
        confidence=float(policy.setting("confidence")),
        n_permutations=n_perm,
        p_method=opts.p_method,
        p_adjust=opts.p_adjust,
        # The stats-side adjustment (p_adjusted) covers the gaps the checks report; the
        # report's two families (_p_families) are what the checks print.
        p_family=tuple(m for m, k, *_ in CHECK_KINDS.values() if k == "difference"),
        min_group_size=int(policy.setting("min_group_size")),
        min_class_count=int(policy.setting("min_class_count")),
        random_state=int(policy.setting("seed")),
    )
    notes += list(gm.notes)
    extreme = None
    if predictions.is_binary:
        extreme = extreme_selection(float((predictions.score >= thr).mean()))
        if extreme is not None:
            notes.append(
                f"The operating threshold {thr:.4g} flags {extreme} image: every error-rate "
                "gap below describes the threshold, not the model. Choose an operating point "
                "on a calibration split (policy setting operating_point)."
            )
    checks, info = _checks(gm, policy, extreme)
    families = _p_families(checks, info, gm, sensitive)
    checks = _with_p_values(checks, families, gm)
    tables: dict[str, pd.DataFrame] = {"overall": _overall_table(gm)}
    titles = {"overall": "All audited images: every fairness metric with its CI"}
    for attr in gm.attributes:
        tables[f"groups_{attr}"] = _groups_table(gm, attr)
        titles[f"groups_{attr}"] = f"Metrics per {attr.replace('&', ' × ')} group"
    tables["gaps"] = _gaps_table(gm, families)
    titles["gaps"] = "Every gap between groups, with CIs and unadjusted p-values"
    cont_checks, cont_table = continuous_checks(meta, y, s, gm, policy, opts.continuous, notes)
    checks += cont_checks
    if cont_table is not None:
        tables["continuous"] = cont_table
        titles["continuous"] = "Continuous attributes: Pearson r with the score and the error"
    sites = (
        within_site_analysis(predictions, sensitive, gm, policy, thr)
        if predictions.is_binary
        else None
    )
    if sites is not None:
        tables.update(sites.tables)
        titles.update(sites.titles)
        notes += sites.warnings
    if opts.mitigation is not None and calibration is not None and predictions.is_binary:
        _mitigation(predictions, calibration, sensitive[0], op, policy, opts, tables, titles, notes)
    figs = _figures(gm, checks, sensitive, predictions, thr) if opts.figures else {}
    _skipped_groups_note(gm, notes)
    return Section(
        name="fairness",
        title="Fairness across patient groups",
        summary=_summary(gm, checks),
        tables=tables,
        figures=figs,
        checks=checks,
        notes=notes,
        references=list(REFERENCES),
        methods=_methods_text(gm, policy, op, pid is not None, families, sites is not None),
        root_causes=root_causes(checks, info, gm, sensitive, extreme, families),
        table_titles=titles,
    )


def _mitigation(
    predictions: Predictions,
    calibration: Predictions,
    attr: str,
    op: OperatingPoint,
    policy: Policy,
    opts: _Options,
    tables: dict[str, pd.DataFrame],
    titles: dict[str, str],
    notes: list[str],
) -> None:
    """The mitigation suggestion and its alternatives (never applied), on the audited data."""
    from medaudit.fairness._mitigation import mitigation_comparison

    if not calibration.is_binary:
        return
    if attr not in calibration.meta.columns:
        notes.append(
            f"Mitigation suggestion not computed: the calibration split has no {attr!r} column."
        )
        return
    try:
        result = mitigation_comparison(
            calibration, predictions, attr, op=op, constraints=opts.mitigation or "equalized_odds",
            target_sensitivity=float(policy.setting("target_sensitivity")),
            n_boot=int(policy.setting("n_bootstrap")),
            confidence=float(policy.setting("confidence")),
            random_state=int(policy.setting("seed")),
        )  # fmt: skip
    except ValueError as exc:  # e.g. a calibration group with one class
        notes.append(f"Mitigation suggestion not computed: {exc}")
        return
    tables["mitigation"] = result.suggestion
    tables["mitigation_alternatives"] = result.alternatives
    titles["mitigation"] = (
        f"Mitigation suggestion (not applied): group-specific thresholds for {attr}, "
        "before and after, on the audited images"
    )
    titles["mitigation_alternatives"] = (
        "Mitigation alternatives side by side, on the audited images"
    )
    notes.append(
        f"SUGGESTION, NOT APPLIED: group-specific thresholds for {attr!r} from Fairlearn's "
        f"ThresholdOptimizer ({opts.mitigation}), fitted on the calibration split and "
        "evaluated, with CIs, on the audited images it was not fitted on; the alternatives "
        "table sets it beside group-wise recalibration and a target-sensitivity operating point."
    )
    notes += result.warnings


def _figures(
    gm: GroupMetrics, checks: list[Check], sensitive: list[str], p: Predictions, thr: float
) -> dict[str, Any]:
    from medaudit.fairness._plots import forest_plot, rates_figure, roc_figure, sweep_figure
    from medaudit.report._plots import reliability_figure

    figs: dict[str, Any] = {}
    for attr in sensitive:
        curves = {cls: gm.roc_curves(attr, cls) for cls in gm.class_names}
        aucs = {
            cls: dict(
                zip(gm.by_group(attr, cls)["group"], gm.by_group(attr, cls)["auroc"], strict=True)
            )
            for cls in gm.class_names
        }
        figs[f"roc_{attr}"] = roc_figure(curves, aucs, attribute=attr)
        if not p.is_binary:
            continue
        figs[f"rates_{attr}"] = rates_figure(gm, attr)
        values = p.meta[attr].astype(str).to_numpy()
        ok = set(gm.by_group(attr).query("status == 'ok'")["group"])
        panels = {
            g: (p.labels[values == g], p.score[values == g])
            for g in sorted(ok)
            if (values == g).any()
        }
        if panels:
            figs[f"reliability_{attr}"] = reliability_figure(
                panels, title=f"Reliability per {attr} group"
            )
            figs[f"sweep_{attr}"] = sweep_figure(panels, attribute=attr, threshold=thr)
    gap_checks = [
        c for c in checks if not c.id.endswith(("worst_group_auroc", "worst_group_sensitivity"))
    ]
    figs["forest"] = forest_plot(gap_checks)
    return figs


def _skipped_groups_note(gm: GroupMetrics, notes: list[str]) -> None:
    skipped = gm.table[(gm.table["group_status"] == "skipped") & (gm.table["metric"] == "count")]
    if len(skipped):
        notes.append(
            f"{len(skipped)} group(s) skipped as too small: "
            + "; ".join(
                f"{r.attribute}={r.group} ({r.group_reason})" for r in skipped.head(8).itertuples()
            )
            + (" ..." if len(skipped) > 8 else "")
        )


def _methods_text(
    gm: GroupMetrics,
    policy: Policy,
    op: OperatingPoint,
    clustered: bool,
    families: dict[str, tuple[float, str, int]],
    sites: bool,
) -> str:
    sizes = {fam: m for _, fam, m in families.values()}
    fam_text = (
        "p-values: "
        + (
            f"{gm.n_permutations} permutations of group labels among patients within each "
            "class (statistic max - min), "
            if gm.p_method == "permutation"
            else "the bootstrap test dual to each gap's simultaneous CI, "
        )
        + (
            f"{_ADJUST_WORDS[gm.p_adjust]} within two pre-specified families: the primary "
            f"family (AUROC and false-negative-rate gaps of each attribute given, "
            f"{sizes.get('primary', 0)} tests) and the secondary family (every other gap "
            f"check, intersections included, {sizes.get('secondary', 0)} tests)."
            + (
                f" The number of permutations is at least {PERMUTATIONS_PER_TEST} per primary "
                "test, so that an adjusted p-value below 0.01 can be reached."
                if gm.p_method == "permutation"
                else ""
            )
            if gm.p_adjust != "none"
            else "not adjusted for multiple testing."
        )
    )
    return (
        f"Per-group metrics at the operating point {op.description} (predicted positive = "
        f"score >= threshold) for {', '.join(gm.attributes)}. {gm.confidence:.0%} CIs: "
        f"bootstrap ({gm.n_boot} resamples) of whole "
        + ("patients" if clustered else "images")
        + " within each group (and within class profile for AUROC, sensitivity and "
        "specificity); Wilson intervals with the bootstrap's design effect for rates, "
        "logit-scale basic intervals for AUROC and the Brier score, a debiased ECE. A gap "
        "is the difference between the highest and lowest group; its CI is simultaneous "
        "over every pair of groups (max-t), so it allows for the pair being picked from the "
        f"data. {fam_text} The ECE gap passes when no group is shown to be miscalibrated. "
        "Groups with fewer than "
        f"{policy.setting('min_group_size')} images or fewer than "
        f"{policy.setting('min_class_count')} of a class are skipped."
        + (
            "\n\nWithin sites: the same metrics per site and group, the group mix of each "
            "site, and the pooled gap compared with the size-weighted mean of the within-site "
            "gaps; a reversal of sign is flagged as Simpson's paradox, and a pooled gap more "
            "than twice the within-site gap as one that mostly reflects which sites the groups "
            "come from."
            if sites
            else ""
        )
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
