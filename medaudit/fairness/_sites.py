"""Fairness within acquisition sites: group metrics per site, the group mix, Simpson's paradox.

A gap pooled over sites can come from the sites rather than the groups: when one group
is mostly imaged at the site where the model does worst, the pooled gap is large though
within every site the groups fare alike, and the sign can even reverse (Simpson's
paradox). This module computes the metrics per (site, group) with CIs, the share of each
group at each site, and compares the pooled gap with the size-weighted mean of the gaps
within sites.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medaudit.fairness._group import GroupMetrics, group_metrics
from medaudit.inference import Predictions
from medaudit.report import Policy

__all__ = ["SiteAnalysis", "within_site_analysis"]

MSG_SIMPSON = (
    "SIMPSON'S PARADOX ({attr}, {metric}): pooled over sites, {high} is ahead of {low} by "
    "{pooled:.3f}, but within sites it is behind by {within:.3f} on average: the pooled gap "
    "reflects which sites the groups come from. Read the per-site table before acting."
)
MSG_CONFOUNDED = (
    "SITE MIX ({attr}, {metric}): the pooled gap between {high} and {low} is {pooled:.3f}, "
    "but only {within:.3f} on average within sites: most of it reflects which sites the "
    "groups come from (see the group mix per site)."
)
METRIC_WORDS = {"auroc": "AUROC", "true_positive_rate": "sensitivity"}
_SEP = "\x1f"


@dataclass(frozen=True)
class SiteAnalysis:
    """Tables and warnings of the within-site analysis."""

    tables: dict[str, pd.DataFrame]
    titles: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _site_roles(meta: pd.DataFrame) -> dict[str, str]:
    if "split" not in meta.columns:
        return {}
    return {
        str(site): ", ".join(sorted(g["split"].astype(str).unique()))
        for site, g in meta.groupby(meta["site"].astype(str))
    }


def within_site_analysis(
    predictions: Predictions,
    sensitive: Sequence[str],
    gm: GroupMetrics,
    policy: Policy,
    threshold: float,
) -> SiteAnalysis | None:
    """Per-site group metrics, group mix and the pooled-versus-within comparison.

    Returns None when the data have no ``site`` column or a single site.
    """
    meta = predictions.meta
    if "site" not in meta.columns or meta["site"].nunique() < 2:
        return None
    site = meta["site"].astype(str).to_numpy()
    roles = _site_roles(meta)
    metrics_rows, mix_rows, cmp_rows, warnings = [], [], [], []
    for attr in sensitive:
        values = meta[attr].astype(str).to_numpy()
        for s_name in sorted(np.unique(site)):
            m = site == s_name
            vals, counts = np.unique(values[m], return_counts=True)
            for v, k in zip(vals, counts, strict=True):
                mix_rows.append(
                    {"attribute": attr, "site": s_name, "split": roles.get(s_name, ""),
                     "group": v, "n": int(k), "share_of_site": k / m.sum()}
                )  # fmt: skip
        cell = pd.Series([f"{g}{_SEP}{s}" for g, s in zip(values, site, strict=True)])
        cm = group_metrics(
            predictions.labels,
            predictions.score,
            groups=cell.rename("cell"),
            threshold=threshold,
            patient_id=meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None,
            n_boot=int(policy.setting("n_bootstrap")),
            confidence=float(policy.setting("confidence")),
            n_permutations=0,
            p_adjust="none",
            min_group_size=int(policy.setting("min_group_size")),
            min_class_count=int(policy.setting("min_class_count")),
            random_state=int(policy.setting("seed")),
        )
        t = cm.by_group("cell")
        for r in t.itertuples(index=False):
            g, s_name = str(r.group).split(_SEP, 1)
            row = {"attribute": attr, "site": s_name, "split": roles.get(s_name, ""),
                   "group": g, "n": int(r.n), "n_pos": int(r.n_pos)}  # fmt: skip
            for metric in ("auroc", "true_positive_rate"):
                row[metric] = getattr(r, metric)
                row[f"{metric}_ci_low"] = getattr(r, f"{metric}_ci_low")
                row[f"{metric}_ci_high"] = getattr(r, f"{metric}_ci_high")
            row["status"], row["reason"] = r.status, r.reason
            metrics_rows.append(row)
        for metric in ("auroc", "true_positive_rate"):
            res = _compare(gm, attr, metric, pd.DataFrame(metrics_rows))
            if res is not None:
                cmp_rows.append(res)
                if res["verdict"] == "reversal":
                    warnings.append(MSG_SIMPSON.format(**_words(res)))
                elif res["verdict"] == "mostly site mix":
                    warnings.append(MSG_CONFOUNDED.format(**_words(res)))
    tables = {
        "within_site": pd.DataFrame(metrics_rows),
        "group_mix_by_site": pd.DataFrame(mix_rows),
    }
    titles = {
        "within_site": "Fairness within each site: metrics per site and group",
        "group_mix_by_site": "Group mix of each site (share of the site's images)",
    }
    if cmp_rows:
        tables["pooled_vs_within_site"] = pd.DataFrame(cmp_rows)
        titles["pooled_vs_within_site"] = (
            "Pooled gap against the mean gap within sites (Simpson's paradox check)"
        )
    if not roles:
        for k in ("within_site", "group_mix_by_site"):
            tables[k] = tables[k].drop(columns="split")
    return SiteAnalysis(tables, titles, warnings)


def _words(res: dict) -> dict:
    return {
        "attr": res["attribute"],
        "metric": METRIC_WORDS[res["metric"]],
        "high": res["group_high"],
        "low": res["group_low"],
        "pooled": res["pooled_gap"],
        "within": abs(res["within_site_gap"]),
    }


def _compare(
    gm: GroupMetrics, attr: str, metric: str, rows: pd.DataFrame
) -> dict[str, object] | None:
    """Pooled gap (high minus low group) against the weighted mean of the same gap per site."""
    g = gm.gaps
    r = g[(g["attribute"] == attr) & (g["metric"] == metric) & (g["kind"] == "difference")]
    if r.empty or r.iloc[0]["status"] != "ok":
        return None
    r0 = r.iloc[0]
    high, low = str(r0["group_high"]), str(r0["group_low"])
    t = rows[(rows["attribute"] == attr) & (rows["status"] == "ok")]
    diffs, weights, n_sites = [], [], 0
    for _, s in t.groupby("site"):
        s = s.set_index("group")
        if high in s.index and low in s.index:
            a, b = float(s.loc[high, metric]), float(s.loc[low, metric])
            if math.isfinite(a) and math.isfinite(b):
                diffs.append(a - b)
                weights.append(1 / (1 / s.loc[high, "n"] + 1 / s.loc[low, "n"]))
                n_sites += 1
    if not diffs:
        return None
    within = float(np.average(diffs, weights=weights))
    pooled = float(r0["value"])
    ci_excludes_zero = float(r0["ci_low"]) > 0
    if pooled > 0.01 and within < -0.01:
        verdict = "reversal"
    elif ci_excludes_zero and abs(within) < pooled / 2:
        verdict = "mostly site mix"
    else:
        verdict = "consistent"
    return {
        "attribute": attr,
        "metric": metric,
        "group_high": high,
        "group_low": low,
        "pooled_gap": pooled,
        "within_site_gap": within,
        "n_sites_compared": n_sites,
        "verdict": verdict,
    }
