"""The shortcut audit's report section: a verdict per attribute, its tables and maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit.report import Check, Section
from medaudit.shortcuts._clustered import ClusteredEstimate
from medaudit.shortcuts._examine import AttributeFindings, ShortcutFindings

__all__ = ["CHECK_ENCODED", "CHECK_USED", "REFERENCES", "shortcut_section"]

CHECK_ENCODED = "shortcuts.{attr}.encoded"
CHECK_USED = "shortcuts.{attr}.used"
TITLE = "Shortcuts: site, markers and patient attributes"

REFERENCES = [
    "Glocker B, Jones C, Bernhardt M, Winzeck S. Algorithmic encoding of protected "
    "characteristics in chest X-ray disease detection models. eBioMedicine 89:104467, 2023.",
    "Lotter W. Acquisition parameters influence AI recognition of race in chest x-rays and "
    "mitigating these factors reduces underdiagnosis bias. Nat Commun 15:7465, 2024.",
    "Müller C, et al. Disentanglement and assessment of shortcuts in ophthalmological "
    "retinal imaging exams. arXiv:2308.01163, 2023.",
    "Ganin Y, et al. Domain-adversarial training of neural networks. JMLR 17(59):1-35, 2016.",
    "DeGrave AJ, Janizek JD, Lee S-I. AI for radiographic COVID-19 detection selects "
    "shortcuts over signal. Nature Machine Intelligence 3:610-619, 2021.",
    "Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics "
    "53(2):567-578, 1997.",
]

METHODS = (
    "Encoded: a linear probe (ridge, or logistic regression) predicts each attribute from "
    "the model's frozen penultimate features in patient-grouped cross-validation folds; its "
    "out-of-fold AUROC (macro one-vs-rest) is compared with a control that predicts the same "
    "attribute from the other metadata columns only, in the same folds, and both are also "
    "evaluated within strata of a confounder (pairs of images from the same site). "
    "'Beyond what the metadata explains' requires the 95% CI of the paired difference to lie "
    "above zero. Used: images are split into attribute-aligned and attribute-conflicting "
    "halves by the direction in which each level is associated with the label (in the "
    "training data when given); AUROC and balanced accuracy are reported for each half, and "
    "the check decides on the class-wise shift (within positives and within negatives, how "
    "often an image whose level points towards the disease outscores one whose level points "
    "away; a shortcut moves both classes, a subgroup whose disease is harder to see only the "
    "positives). For a two-valued image-level attribute with a known or estimated region, "
    "that region is swapped with an image of the other value (same site) and the score "
    "change and share of flipped decisions are measured. Where: captum occlusion on a coarse "
    "grid over a class-balanced subsample, aggregated per class and per attribute level; "
    "border share and concentration (top eighth of the windows) summarise each map. "
    "Surviving gaps: each level is reweighted to the pooled label x age mix (the expectation "
    "of Glocker et al.'s test-set resampling) and per-level AUROC and sensitivity are "
    "compared before and after, with simultaneous (Bonferroni over pairs) intervals; the "
    "first principal modes of the features and the logits are compared between each level "
    "and the rest with two-sample KS tests on one image per patient, multiple-testing "
    "corrected. The probes' CIs come from a patient bootstrap that refits every fold; the "
    "other CIs from per-patient influence functions (clustered DeLong / Obuchowski for "
    "AUROCs), with no resampling."
)


def _ci(est: ClusteredEstimate | None, conf: float) -> tuple[float, float]:
    if est is None:
        return (float("nan"), float("nan"))
    return est.ci(conf)


def _fmt(est: Any, conf: float, pct: bool = False) -> str:
    lo, hi = est.ci(conf)
    if pct:
        return f"{100 * est.value:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
    return f"{est.value:.3f} [{lo:.3f}, {hi:.3f}]"


# -- checks ------------------------------------------------------------------------------


def _encoded_check(af: AttributeFindings, policy: Any, conf: float) -> Check:
    cid = CHECK_ENCODED.format(attr=af.name)
    desc = f"{af.name} can be read from the model's penultimate features (probe AUROC)"
    if af.skipped or af.probe is None:
        return policy.skipped(cid, desc, af.skipped or "no probe could be fitted")
    p = af.probe
    check = policy.judge(cid, desc, p.probe.value, ci=p.probe.ci(conf))
    return dataclasses.replace(check, reason=_beyond_words(af, conf))


def _beyond_words(af: AttributeFindings, conf: float) -> str:
    p = af.probe
    assert p is not None
    if not p.control_columns or not np.isfinite(p.control.value):
        return "no metadata control could be formed"
    cols = "/".join(p.control_columns)
    beyond = "beyond" if p.beyond_metadata(conf) else "not beyond"
    return (
        f"{beyond} what {cols} explain (control AUROC {_fmt(p.control, conf)}; "
        f"difference {_fmt(p.difference, conf)})"
    )


def _used_check(af: AttributeFindings, policy: Any, conf: float, min_class: int) -> Check:
    cid = CHECK_USED.format(attr=af.name)
    desc = (
        f"the model's score moves with {af.name} within each class (smaller class-wise "
        "AUROC of aligned over conflicting images; 0.5 = not used)"
    )
    if af.skipped:
        return policy.skipped(cid, desc, af.skipped)
    al = af.alignment
    if al is None and af.unassociated:
        # Nothing to read off: a pass on the reference data's evidence, not on a shift.
        th = policy.threshold(cid)
        return Check(
            cid,
            desc,
            None,
            "pass",
            None,
            th.op,
            th.threshold,
            af.reasons["used"],
            severity=th.severity,
        )
    if al is None:
        return policy.skipped(cid, desc, af.reasons.get("used", "not measured"))
    small = [
        f"{n} {what}"
        for n, what in (
            (al.pos_aligned, "aligned positives"),
            (al.neg_aligned, "aligned negatives"),
            (al.pos_conflicting, "conflicting positives"),
            (al.neg_conflicting, "conflicting negatives"),
        )
        if n < min_class
    ]
    if small:
        return policy.skipped(
            cid, desc, f"too few images to compare: {', '.join(small)} (< {min_class})"
        )
    check = policy.judge(cid, desc, al.shift, ci=al.shift_ci(conf))
    return dataclasses.replace(check, reason=_used_words(af, conf))


def _used_words(af: AttributeFindings, conf: float) -> str:
    al = af.alignment
    assert al is not None
    parts = [
        f"AUROC {_fmt(al.auroc_aligned, conf)} where {af.name} agrees with the label vs "
        f"{_fmt(al.auroc_conflicting, conf)} where it conflicts",
        f"class-wise shift {al.shift_positive.value:.2f} (positives), "
        f"{al.shift_negative.value:.2f} (negatives)",
    ]
    cf = af.counterfactual
    if cf is not None:
        parts.append(
            f"swapping its region flips {_fmt(cf.flipped, conf, pct=True)} of decisions "
            f"(score {cf.change_added.value:+.2f} when added, "
            f"{cf.change_removed.value:+.2f} when removed)"
        )
    return "; ".join(parts)


# -- verdicts ----------------------------------------------------------------------------

_STATUS_WORDS = {
    "encoded": {"fail": "yes", "pass": "no", "inconclusive": "unclear", "skipped": "not tested"},
    "used": {"fail": "yes", "pass": "no", "inconclusive": "unclear", "skipped": "not tested"},
}


def _where_words(af: AttributeFindings) -> str:
    d = af.difference_map
    if d is None or d.pattern == "none":
        return "not measured"
    side = "border band" if d.border_share > d.border_area else "centre"
    return (
        f"{d.pattern}; {100 * d.border_share:.0f}% of the difference between its levels' maps "
        f"lies in the border band ({100 * d.border_area:.0f}% of the area): mostly the {side}"
    )


def _gap_words(af: AttributeFindings) -> str:
    """Which subgroup gaps remain once prevalence and age are matched."""
    if af.matched is None or not len(af.matched.gaps):
        return ""
    g = af.matched.gaps.set_index("metric")
    left = [
        f"{m} {g.loc[m, 'gap_matched']:.2f} ({g.loc[m, 'levels_matched']})"
        for m in g.index
        if bool(g.loc[m, "remains"])
    ]
    if not left:
        return ""
    on = ", ".join(af.matched.matched_on)
    return f"; a gap between its groups remains after matching {on}: " + ", ".join(left)


def _verdict(af: AttributeFindings, enc: Check, used: Check, conf: float) -> dict[str, Any]:
    e = _STATUS_WORDS["encoded"][enc.status]
    u = _STATUS_WORDS["used"][used.status]
    beyond = ""
    if af.probe is not None and af.probe.control_columns and np.isfinite(af.probe.control.value):
        beyond = "yes" if af.probe.beyond_metadata(conf) else "no"
    if af.skipped:
        sentence = f"{af.name}: not examined ({af.skipped})."
    else:
        enc_s = {
            "yes": f"encoded (probe AUROC {enc.value:.2f})",
            "no": f"not encoded (probe AUROC {enc.value:.2f})",
            "unclear": f"possibly encoded (probe AUROC {enc.value:.2f}, CI straddles the "
            "threshold)",
            "not tested": "encoding not tested",
        }[e]
        if beyond and e != "no":
            assert af.probe is not None
            cols = "/".join(af.probe.control_columns)
            enc_s += (
                f", beyond what {cols} explain"
                if beyond == "yes"
                else f", but not beyond what {cols} explain"
            )
        use_s = {
            "yes": "the model uses it",
            "no": "no sign the model uses it",
            "unclear": "unclear whether the model uses it",
            "not tested": "use not tested",
        }[u]
        if af.counterfactual is not None:
            use_s += (
                f" (swapping its region flips {100 * af.counterfactual.flipped.value:.0f}% "
                "of decisions)"
            )
        where = _where_words(af)
        sentence = f"{af.name}: {enc_s}; {use_s}" + (
            f"; attribution: {where}" if where != "not measured" else ""
        )
        sentence += _gap_words(af) + "."
    return {
        "attribute": af.name,
        "encoded": e,
        "beyond_metadata": beyond or "n/a",
        "used": u,
        "where": _where_words(af),
        "verdict": sentence,
    }


# -- tables ------------------------------------------------------------------------------


def _probe_rows(found: ShortcutFindings, conf: float) -> pd.DataFrame:
    rows = []
    for af in found.attributes:
        p = af.probe
        if p is None:
            continue
        rec: dict[str, Any] = {"attribute": af.name, "levels": len(set(af.coded.levels))}
        rec["n_images"] = p.n_images
        for key, est in (
            ("probe", p.probe),
            ("control", p.control),
            ("difference", p.difference),
            ("probe_within", p.probe_within),
            ("control_within", p.control_within),
        ):
            lo, hi = est.ci(conf)
            rec.update({f"{key}_auroc" if key != "difference" else key: est.value})
            rec.update({f"{key}_low": lo, f"{key}_high": hi})
        rec["beyond_metadata"] = p.beyond_metadata(conf)
        rec["control_columns"] = ", ".join(p.control_columns)
        rec["within"] = p.stratify_by or ""
        rows.append(rec)
    return pd.DataFrame(rows)


def _alignment_rows(found: ShortcutFindings, conf: float) -> pd.DataFrame:
    rows = []
    for af in found.attributes:
        al = af.alignment
        if al is None:
            continue
        for half, n, pos, neg, a, b in (
            (
                "aligned",
                al.n_aligned,
                al.pos_aligned,
                al.neg_aligned,
                al.auroc_aligned,
                al.bacc_aligned,
            ),
            (
                "conflicting",
                al.n_conflicting,
                al.pos_conflicting,
                al.neg_conflicting,
                al.auroc_conflicting,
                al.bacc_conflicting,
            ),
            (
                "aligned - conflicting",
                al.n_aligned + al.n_conflicting,
                None,
                None,
                al.auroc_gap,
                al.bacc_gap,
            ),
        ):
            (a_lo, a_hi), (b_lo, b_hi) = a.ci(conf), b.ci(conf)
            rows.append(
                {
                    "attribute": af.name,
                    "images": half,
                    "n": n,
                    "positives": pos,
                    "negatives": neg,
                    "auroc": a.value,
                    "auroc_low": a_lo,
                    "auroc_high": a_hi,
                    "balanced_accuracy": b.value,
                    "bacc_low": b_lo,
                    "bacc_high": b_hi,
                }
            )
        for cls, est in (("positives", al.shift_positive), ("negatives", al.shift_negative)):
            lo, hi = est.ci(conf)
            rows.append(
                {
                    "attribute": af.name,
                    "images": f"class-wise shift ({cls})",
                    "n": None,
                    "positives": None,
                    "negatives": None,
                    "auroc": est.value,
                    "auroc_low": lo,
                    "auroc_high": hi,
                    "balanced_accuracy": None,
                    "bacc_low": None,
                    "bacc_high": None,
                }
            )
    return pd.DataFrame(rows)


def _counterfactual_rows(found: ShortcutFindings, conf: float) -> pd.DataFrame:
    rows = []
    for af in found.attributes:
        cf = af.counterfactual
        if cf is None:
            continue
        regions = "; ".join(f"{k}: {v}" for k, v in cf.regions.items())
        for what, n, change, flip in (
            ("region added", cf.n_added, cf.change_added, cf.flipped_added),
            ("region removed", cf.n_removed, cf.change_removed, cf.flipped_removed),
            ("both", cf.n_added + cf.n_removed, None, cf.flipped),
        ):
            c_lo, c_hi = _ci(change, conf)
            f_lo, f_hi = flip.ci(conf)
            rows.append(
                {
                    "attribute": af.name,
                    "swap": what,
                    "n": n,
                    "score_change": None if change is None else change.value,
                    "change_low": c_lo,
                    "change_high": c_hi,
                    "flipped": flip.value,
                    "flipped_low": f_lo,
                    "flipped_high": f_hi,
                    "region": regions,
                }
            )
    return pd.DataFrame(rows)


def _occlusion_rows(found: ShortcutFindings) -> pd.DataFrame:
    rows = []

    def add(kind: str, name: str, s: Any) -> None:
        rows.append(
            {
                "map": kind,
                "group": name,
                "n_images": s.n_images,
                "border_share": s.border_share,
                "border_area": s.border_area,
                "concentration": s.concentration,
                "pattern": s.pattern,
            }
        )

    for cls, s in found.class_maps.items():
        add("class", cls, s)
    for af in found.attributes:
        for lvl, s in af.level_maps.items():
            add(af.name, lvl, s)
        if af.difference_map is not None:
            add(af.name, "difference between levels", af.difference_map)
    return pd.DataFrame(rows)


def _matched_rows(found: ShortcutFindings) -> tuple[pd.DataFrame, pd.DataFrame]:
    gaps, levels = [], []
    for af in found.attributes:
        if af.matched is None:
            continue
        g = af.matched.gaps.copy()
        g.insert(0, "attribute", af.name)
        g["matched_on"] = ", ".join(af.matched.matched_on)
        gaps.append(g)
        t = af.matched.table.copy()
        t.insert(0, "attribute", af.name)
        levels.append(t)
    cat = lambda xs: pd.concat(xs, ignore_index=True) if xs else pd.DataFrame()  # noqa: E731
    return cat(gaps), cat(levels)


def _ks_rows(found: ShortcutFindings) -> pd.DataFrame:
    parts = []
    for af in found.attributes:
        if af.ks is not None and len(af.ks):
            t = af.ks.copy()
            t.insert(0, "attribute", af.name)
            parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# -- the section -------------------------------------------------------------------------


def shortcut_section(found: ShortcutFindings, *, policy: Any, figures: bool = True) -> Section:
    """Build the report section from :func:`~medaudit.shortcuts._examine.examine`'s findings."""
    conf = float(policy.setting("confidence"))
    min_class = int(policy.setting("min_class_count"))
    checks, verdicts = [], []
    for af in found.attributes:
        enc = _encoded_check(af, policy, conf)
        used = _used_check(af, policy, conf, min_class)
        checks += [enc, used]
        verdicts.append(_verdict(af, enc, used, conf))
    tables: dict[str, pd.DataFrame] = {"verdicts": pd.DataFrame(verdicts)}
    for name, df in (
        ("probes", _probe_rows(found, conf)),
        ("aligned_conflicting", _alignment_rows(found, conf)),
        ("counterfactual", _counterfactual_rows(found, conf)),
        ("occlusion", _occlusion_rows(found)),
    ):
        if len(df):
            tables[name] = df
    gaps, levels = _matched_rows(found)
    if len(gaps):
        tables["matched_gaps"] = gaps
        tables["matched_levels"] = levels
    ks = _ks_rows(found)
    if len(ks):
        tables["ks_tests"] = ks
    if found.compare is not None:
        tables["compare"] = found.compare
    figs = {}
    if figures and found.mean_maps:
        from medaudit.shortcuts._plots import occlusion_figure, per_image_figure

        figs["occlusion_maps"] = occlusion_figure(found)
        if found.settings.per_image_maps and found.occlusion is not None:
            figs["occlusion_per_image"] = per_image_figure(found)
    return Section(
        name="shortcuts",
        title=TITLE,
        summary=_summary(verdicts, checks),
        tables=tables,
        figures=figs,
        checks=checks,
        notes=_notes(found),
        references=list(REFERENCES),
        methods=METHODS,
    )


def _summary(verdicts: list[dict[str, Any]], checks: list[Check]) -> str:
    if not verdicts:
        return "No attribute was examined: name columns with --shortcut-attributes."
    used = [v["attribute"] for v in verdicts if v["used"] == "yes"]
    enc = [v["attribute"] for v in verdicts if v["encoded"] == "yes"]
    if used:
        return (
            f"The model uses {', '.join(used)} as a shortcut: its score moves with "
            f"{'it' if len(used) == 1 else 'them'} within each class. "
            + (f"Encoded in its features: {', '.join(enc)}." if enc else "")
        ).strip()
    if enc:
        return (
            f"Encoded in the model's features: {', '.join(enc)}; no attribute is shown to be "
            "used as a shortcut."
        )
    return "No examined attribute is encoded in the model's features or used as a shortcut."


def _compare_words(found: ShortcutFindings) -> list[str]:
    if found.compare is None or not len(found.compare):
        return []
    parts = [
        f"{r.metric} {r.baseline:.3f} → {r.model:.3f}"
        for r in found.compare.itertuples()
        if np.isfinite(r.baseline) and np.isfinite(r.model)
    ]
    return [
        f"Against the baseline {Path(str(found.settings.compare_to)).name}: "
        + "; ".join(parts)
        + " (table "
        "'compare', with the CI of each paired change)."
    ]


def _notes(found: ShortcutFindings) -> list[str]:
    notes = _compare_words(found) + [
        f"Directions of association (aligned vs conflicting) come from {found.reference}.",
        "Encoded is informational: a model may see an attribute without using it. A "
        "subgroup whose disease is harder to see lowers AUROC on one half without being a "
        "shortcut; the class-wise shift separates the two.",
    ]
    for af in found.attributes:
        if af.skipped:
            notes.append(f"{af.name}: not examined ({af.skipped}).")
        elif "counterfactual" in af.reasons and af.coded.n_levels == 2:
            notes.append(f"{af.name}: no counterfactual swap ({af.reasons['counterfactual']}).")
        if af.probe is not None and not af.probe.converged:
            notes.append(f"{af.name}: a logistic probe stopped at its iteration limit.")
    if found.occlusion is not None:
        occ = found.occlusion
        notes.append(
            f"Occlusion: {len(occ.rows)} images, windows of {occ.window[0]}x{occ.window[1]} "
            f"pixels; only maps averaged over at least 5 images are shown."
        )
    return notes + found.notes
