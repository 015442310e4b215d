"""The fairness checks grouped by root cause, each cause put into words.

A gap is about the group it leaves worst off: every check whose worst group is
``sex = female`` is one cause, and an intersection whose worst cell contains a group that
already has a failed check (``female & 60-79``) joins that group's cause, naming the cell.
A low worst-group value without a gap behind it (every group is low alike) is not about a
group: it joins the shared cause ``sensitivity`` or ``discrimination``; calibration gaps
join ``calibration``; threshold metrics at an operating point that flags every image or
none join ``operating_point``. The executive summary merges causes with the same key
across audits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from medaudit.report import Check, RootCause, group_cause
from medaudit.report._format import format_p_value, format_value_ci

if TYPE_CHECKING:
    from medaudit.fairness._group import GroupMetrics
    from medaudit.fairness._section import CheckInfo

__all__ = ["root_causes"]

SENSITIVITY_CHECKS = ("fnr_gap", "worst_group_sensitivity", "underdiagnosis_gap")
THRESHOLD_CHECKS = (
    *SENSITIVITY_CHECKS,
    "equalized_odds_difference",
    "demographic_parity_difference",
)
_OPEN = ("fail", "inconclusive")


@dataclass
class _Cause:
    key: str
    attribute: str
    group: str
    checks: list[Check] = field(default_factory=list)
    cells: list[tuple[str, str]] = field(default_factory=list)  # (intersection, cell)


def _components(gm: GroupMetrics, inter: str, cell: str) -> list[tuple[str, str]]:
    """``("sex&age_group", "female & 60-79")`` → ``[("sex", "female"), ("age_group", "60-79")]``."""
    parts = inter.split("&")
    if len(parts) != 2:
        return []
    a, b = parts
    labels_a = set(gm.by_group(a)["group"]) if a in gm.attributes else set()
    labels_b = set(gm.by_group(b)["group"]) if b in gm.attributes else set()
    for la in labels_a:
        rest = cell[len(la) + 3 :]
        if cell.startswith(f"{la} & ") and rest in labels_b:
            return [(a, la), (b, rest)]
    return []


def _worst(info: CheckInfo) -> str:
    r = info.row
    if r is None:
        return ""
    if r["worst_group"]:
        return str(r["worst_group"])
    return str(r["group_low"] or "")


def _route(
    checks: Sequence[Check], info: Mapping[str, CheckInfo], extreme: str | None
) -> tuple[dict[str, list[Check]], list[tuple[Check, CheckInfo]]]:
    """Shared causes of the checks that are not about one group; the group checks left."""
    status = {c.id: c.status for c in checks}
    by_attr = {(i.attribute, i.class_name, i.suffix): cid for cid, i in info.items()}
    shared: dict[str, list[Check]] = {}
    grouped = []
    for c in checks:
        i = info.get(c.id)
        if i is None or i.row is None or c.status == "skipped":
            continue
        gap_of = {"worst_group_sensitivity": "fnr_gap", "worst_group_auroc": "auroc_gap"}
        if extreme is not None and i.suffix in THRESHOLD_CHECKS:
            shared.setdefault("operating_point", []).append(c)
        elif i.suffix == "ece_gap":
            shared.setdefault("calibration", []).append(c)
        elif i.suffix in gap_of:
            gap_id = by_attr.get((i.attribute, i.class_name, gap_of[i.suffix]), "")
            if status.get(gap_id) == "fail":
                grouped.append((c, i))
            else:
                key = "sensitivity" if i.suffix == "worst_group_sensitivity" else "discrimination"
                shared.setdefault(key, []).append(c)
        else:
            grouped.append((c, i))
    return shared, grouped


def root_causes(
    checks: Sequence[Check],
    info: Mapping[str, CheckInfo],
    gm: GroupMetrics,
    sensitive: Sequence[str],
    extreme: str | None,
    families: Mapping[str, tuple[float, str, int]],
) -> list[RootCause]:
    """Group the fairness checks by root cause and write each cause as a finding."""
    shared, grouped = _route(checks, info, extreme)
    causes: dict[str, _Cause] = {}
    base = [(c, i) for c, i in grouped if "&" not in i.attribute]
    inter = [(c, i) for c, i in grouped if "&" in i.attribute]
    for c, i in base:
        w = _worst(i)
        key = group_cause(i.attribute, w)
        causes.setdefault(key, _Cause(key, i.attribute, w)).checks.append(c)
    failing = {k for k, cause in causes.items() if any(c.status == "fail" for c in cause.checks)}
    for c, i in inter:
        cell = _worst(i)
        parts = _components(gm, i.attribute, cell)
        home = next((group_cause(a, g) for a, g in parts if group_cause(a, g) in failing), None)
        if home is None:
            key = group_cause(i.attribute, cell)
            causes.setdefault(key, _Cause(key, i.attribute, cell)).checks.append(c)
            continue
        causes[home].checks.append(c)
        if c.status in _OPEN and (i.attribute, cell) not in causes[home].cells:
            causes[home].cells.append((i.attribute, cell))
    out = [_group_root_cause(cause, gm, info, families) for cause in causes.values()]
    out += [_shared_root_cause(k, cs, gm, info) for k, cs in shared.items()]
    return out


def _rate(gm: GroupMetrics, attr: str, group: str, metric: str, cls: str | None) -> str:
    t = gm.by_group(attr, cls).set_index("group")
    if group not in t.index or not math.isfinite(float(t.loc[group, metric])):
        return "–"
    r = t.loc[group]
    return format_value_ci(r[metric], (r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]))


def _best(gm: GroupMetrics, attr: str, metric: str, cls: str | None) -> str:
    t = gm.by_group(attr, cls)
    t = t[t["status"] == "ok"].dropna(subset=[metric])
    return "" if t.empty else str(t.loc[t[metric].idxmax(), "group"])


def _gap_words(c: Check, families: Mapping[str, tuple[float, str, int]]) -> str:
    p = families.get(c.id)
    p_txt = ""
    if p is not None:
        shown = format_p_value(p[0])
        p_txt = f", p {shown if shown.startswith('<') else '= ' + shown} ({p[1]} family)"
    return f"{format_value_ci(c.value, c.ci)}{p_txt}"


def _group_root_cause(
    cause: _Cause,
    gm: GroupMetrics,
    info: Mapping[str, CheckInfo],
    families: Mapping[str, tuple[float, str, int]],
) -> RootCause:
    attr, group = cause.attribute, cause.group
    suffixes = {info[c.id].suffix for c in cause.checks if c.status in _OPEN}
    cls = info[cause.checks[0].id].class_name
    cls_arg = cls if len(gm.class_names) > 1 else None
    who = f"{attr.replace('&', ' × ')} = {group}"
    if suffixes & {*SENSITIVITY_CHECKS, "equalized_odds_difference"}:
        title = f"The model misses disease more often in patients with {who}"
        lead_kinds: tuple[str, ...] = (*SENSITIVITY_CHECKS, "equalized_odds_difference")
    elif suffixes & {"auroc_gap", "worst_group_auroc"}:
        title = f"The model separates disease less well in patients with {who}"
        lead_kinds = ("auroc_gap", "worst_group_auroc")
    elif "demographic_parity_difference" in suffixes:
        title = f"Patients with {who} are flagged at a different rate"
        lead_kinds = ("demographic_parity_difference",)
    else:
        title = f"Patients with {who} are served worse"
        lead_kinds = tuple(suffixes)
    parts = []
    best_tpr = _best(gm, attr, "true_positive_rate", cls_arg)
    best_auc = _best(gm, attr, "auroc", cls_arg)
    by_suffix = {info[c.id].suffix: c for c in cause.checks if info[c.id].attribute == attr}
    if "fnr_gap" in by_suffix or "worst_group_sensitivity" in by_suffix:
        gap = by_suffix.get("fnr_gap")
        parts.append(
            f"Sensitivity in {group} is {_rate(gm, attr, group, 'true_positive_rate', cls_arg)}"
            f" against {_rate(gm, attr, best_tpr, 'true_positive_rate', cls_arg)} in {best_tpr}"
            + (f" (false-negative-rate gap {_gap_words(gap, families)})" if gap else "")
            + "."
        )
    if "auroc_gap" in by_suffix or "worst_group_auroc" in by_suffix:
        gap = by_suffix.get("auroc_gap")
        parts.append(
            f"AUROC in {group} is {_rate(gm, attr, group, 'auroc', cls_arg)} against "
            f"{_rate(gm, attr, best_auc, 'auroc', cls_arg)} in {best_auc}"
            + (f" (gap {_gap_words(gap, families)})" if gap else "")
            + "."
        )
    if not parts:
        lead = cause.checks[0]
        parts.append(f"{lead.description}: {_gap_words(lead, families)}.")
    if cause.cells:
        inter, cell = _worst_cell(gm, cause.cells, cls_arg)
        n = _n(gm, inter, cell, cls_arg)
        parts.append(
            f"Worst intersection: {cell} ({inter.replace('&', ' × ')}, {n} images), "
            f"sensitivity {_rate(gm, inter, cell, 'true_positive_rate', cls_arg)}, AUROC "
            f"{_rate(gm, inter, cell, 'auroc', cls_arg)}."
        )
    # The advice of the kind of check the title is about (the FNR gap's for missed disease).
    advice = next(
        (
            c.advice
            for kind in lead_kinds
            for c in cause.checks
            if info[c.id].suffix == kind and c.status in _OPEN and c.advice
        ),
        "",
    )
    return RootCause(cause.key, title, tuple(c.id for c in cause.checks), " ".join(parts), advice)


def _worst_cell(gm: GroupMetrics, cells: list[tuple[str, str]], cls: str | None) -> tuple[str, str]:
    def tpr(x: tuple[str, str]) -> float:
        t = gm.by_group(x[0], cls).set_index("group")
        v = float(t.loc[x[1], "true_positive_rate"]) if x[1] in t.index else math.nan
        return v if math.isfinite(v) else math.inf

    return min(cells, key=tpr)


def _n(gm: GroupMetrics, attr: str, group: str, cls: str | None) -> str:
    t = gm.by_group(attr, cls).set_index("group")
    return f"{int(t.loc[group, 'n']):,}" if group in t.index else "?"


SHARED_TITLES = {
    "sensitivity": "The model misses disease in every patient group alike",
    "discrimination": "The model separates disease poorly in every patient group alike",
    "calibration": "Predicted probabilities are miscalibrated, and unequally across groups",
    "operating_point": "The operating point flags almost every image, or almost none",
}


def _shared_root_cause(
    key: str, checks: list[Check], gm: GroupMetrics, info: Mapping[str, CheckInfo]
) -> RootCause:
    open_ = [c for c in checks if c.status in _OPEN] or checks
    lead = max(open_, key=lambda c: abs(float(c.value or 0.0)) if key == "calibration" else 0.0)
    if key in ("sensitivity", "discrimination"):
        lead = min(open_, key=lambda c: float(c.value if c.value is not None else math.inf))
        i = info[lead.id]
        metric = "sensitivity" if key == "sensitivity" else "AUROC"
        gap_suffix = "fnr_gap" if key == "sensitivity" else "auroc_gap"
        row = _gap_row(gm, i.attribute, i.class_name, gap_suffix)
        text = (
            f"The lowest {metric} of any {i.attribute.replace('&', ' × ')} group is "
            f"{format_value_ci(lead.value, lead.ci)} ({_worst(i)}), yet the gap between "
            f"groups is {row}: the shortfall is shared by every group, not specific to one."
        )
    elif key == "calibration":
        i = info[lead.id]
        text = (
            f"Calibration also differs between {i.attribute.replace('&', ' × ')} groups: "
            f"ECE gap {format_value_ci(lead.value, lead.ci)} ({_worst(i)} worst); small "
            "groups have a larger ECE by chance alone."
        )
    else:
        text = "Every error-rate gap between groups is meaningless at this operating point."
    return RootCause(key, SHARED_TITLES[key], tuple(c.id for c in checks), text, lead.advice)


def _gap_row(gm: GroupMetrics, attr: str, cls: str, suffix: str) -> str:
    metric = "false_negative_rate" if suffix == "fnr_gap" else "auroc"
    g = gm.gaps
    r = g[
        (g["attribute"] == attr)
        & (g["class"] == cls)
        & (g["metric"] == metric)
        & (g["kind"] == "difference")
    ]
    if r.empty or r.iloc[0]["status"] != "ok":
        return "not estimable"
    row: pd.Series = r.iloc[0]
    return format_value_ci(row["value"], (row["ci_low"], row["ci_high"]))
