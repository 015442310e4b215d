"""Who loses most when the image gets worse: AUROC drop per patient group, and sites.

For every group ``g`` of an attribute, the rest of the cohort ``r`` is the comparison:
the clean gap is ``AUROC_r - AUROC_g``, the corrupted gap the same under a corruption.
``excess_drop = drop_g - drop_r`` (= corrupted gap - clean gap) says whether the group
loses more than everyone else; ``gap_widening = sign(clean gap) * excess_drop`` whether
the corruption widens the difference that was there on clean images (positive: the side
that was already worse loses more). Both come with percentile-bootstrap intervals from
one resampling stratified by group and class and by patient, shared by the clean and
every corrupted pass (paired). Widening is signed by the clean point estimate rather than
taken as a difference of absolute gaps, whose bootstrap is unreliable near a zero gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medaudit.robustness._metrics import Estimate, auroc_estimate
from medaudit.stats import bootstrap_counts

__all__ = ["GroupSettings", "acquisition_shift", "subgroup_drops"]

VERDICTS = {
    "more": "loses more than the rest",
    "less": "loses less than the rest",
    "same": "no clear difference",
}


@dataclass(frozen=True)
class GroupSettings:
    """Statistical settings of the group comparisons (from the policy)."""

    n_boot: int
    seed: int
    confidence: float
    min_group_size: int
    min_class_count: int


def _eligible(labels: np.ndarray, mask: np.ndarray, s: GroupSettings, n_classes: int) -> str:
    n = int(mask.sum())
    present = np.bincount(labels, minlength=n_classes) > 0
    counts = np.bincount(labels[mask], minlength=n_classes)[present]
    if n < s.min_group_size or counts.min() < s.min_class_count:
        return (
            f"group too small (n={n}, per class {counts.tolist()}; minimum n="
            f"{s.min_group_size} and {s.min_class_count} per class)"
        )
    return ""


def _resampling(
    labels: np.ndarray, codes: np.ndarray, clusters: np.ndarray | None, s: GroupSettings
) -> np.ndarray:
    strata = codes * (int(labels.max()) + 1) + labels
    return bootstrap_counts(strata, n_boot=s.n_boot, random_state=s.seed, clusters=clusters)


def _auc(labels: np.ndarray, scores: np.ndarray, W: np.ndarray, mask: np.ndarray) -> Estimate:
    return auroc_estimate(labels[mask], scores[mask], W[:, mask])


def subgroup_drops(
    labels: np.ndarray,
    clean: np.ndarray,
    corrupted: Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    sensitive: Sequence[str],
    *,
    severity: int,
    settings: GroupSettings,
    clusters: np.ndarray | None = None,
) -> pd.DataFrame:
    """AUROC drop per group under each corruption, against the rest of the cohort.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    clean : ndarray of shape (n, n_classes)
        Clean class probabilities.
    corrupted : mapping of str to ndarray of shape (n, n_classes)
        Corruption name → probabilities at ``severity``.
    meta : DataFrame
        Row-aligned metadata holding the ``sensitive`` columns.
    sensitive : sequence of str
    severity : int
        Recorded in the table.
    settings : GroupSettings
    clusters : ndarray of shape (n,), optional
        Patient ids (whole patients are resampled).
    """
    rows: list[dict[str, object]] = []
    n_classes = clean.shape[1]
    for attr in sensitive:
        valid = meta[attr].notna().to_numpy()
        values = meta[attr].astype(str).to_numpy()
        groups = sorted(set(values[valid]))
        if len(groups) < 2:
            continue
        codes = np.searchsorted(groups, values)
        W = np.zeros((settings.n_boot, len(labels)))
        W[:, valid] = _resampling(
            labels[valid], codes[valid], None if clusters is None else clusters[valid], settings
        )
        for g in groups:
            in_g = valid & (values == g)
            rest = valid & ~in_g
            why = _eligible(labels, in_g, settings, n_classes) or _eligible(
                labels, rest, settings, n_classes
            )
            rows += _group_rows(
                attr, g, labels, clean, corrupted, W, in_g, rest, why, severity, settings
            )
    return pd.DataFrame(rows, columns=_COLUMNS)


_COLUMNS = [
    "attribute",
    "group",
    "corruption",
    "severity",
    "n",
    "auroc_clean",
    "auroc_corrupted",
    "auroc_drop",
    "auroc_drop_ci_low",
    "auroc_drop_ci_high",
    "excess_drop",
    "excess_drop_ci_low",
    "excess_drop_ci_high",
    "gap_clean",
    "gap_clean_ci_low",
    "gap_clean_ci_high",
    "gap_corrupted",
    "gap_widening",
    "gap_widening_ci_low",
    "gap_widening_ci_high",
    "verdict",
    "status",
    "reason",
]


def _group_rows(
    attr: str,
    group: str,
    labels: np.ndarray,
    clean: np.ndarray,
    corrupted: Mapping[str, np.ndarray],
    W: np.ndarray,
    in_g: np.ndarray,
    rest: np.ndarray,
    why: str,
    severity: int,
    s: GroupSettings,
) -> list[dict[str, object]]:
    base = {"attribute": attr, "group": group, "severity": severity, "n": int(in_g.sum())}
    if why:
        return [
            {**base, "corruption": name, "status": "skipped", "reason": why, "verdict": ""}
            for name in corrupted
        ]
    g0, r0 = _auc(labels, clean, W, in_g), _auc(labels, clean, W, rest)
    gap0 = r0 - g0
    glo, ghi = gap0.ci(s.confidence)
    out = []
    for name, scores in corrupted.items():
        g1, r1 = _auc(labels, scores, W, in_g), _auc(labels, scores, W, rest)
        drop_g, excess = g0 - g1, (g0 - g1) - (r0 - r1)
        gap1 = r1 - g1
        side = 1.0 if gap0.value >= 0 else -1.0
        widening = Estimate(side * excess.value, side * excess.samples)
        dlo, dhi = drop_g.ci(s.confidence)
        elo, ehi = excess.ci(s.confidence)
        wlo, whi = widening.ci(s.confidence)
        verdict = VERDICTS["more" if elo > 0 else "less" if ehi < 0 else "same"]
        if wlo > 0:
            verdict += "; the gap widens"
        elif whi < 0:
            verdict += "; the gap narrows"
        out.append(
            {
                **base,
                "corruption": name,
                "auroc_clean": g0.value,
                "auroc_corrupted": g1.value,
                "auroc_drop": drop_g.value,
                "auroc_drop_ci_low": dlo,
                "auroc_drop_ci_high": dhi,
                "excess_drop": excess.value,
                "excess_drop_ci_low": elo,
                "excess_drop_ci_high": ehi,
                "gap_clean": gap0.value,
                "gap_clean_ci_low": glo,
                "gap_clean_ci_high": ghi,
                "gap_corrupted": gap1.value,
                "gap_widening": widening.value,
                "gap_widening_ci_low": wlo,
                "gap_widening_ci_high": whi,
                "verdict": verdict,
                "status": "ok",
                "reason": "",
            }
        )
    return out


def acquisition_shift(
    labels: np.ndarray,
    clean: np.ndarray,
    meta: pd.DataFrame,
    *,
    settings: GroupSettings,
    clusters: np.ndarray | None = None,
) -> pd.DataFrame | None:
    """Each acquisition site's AUROC against the other sites' (a real acquisition shift).

    Returns None without a ``site`` column holding two sites or more. A site whose rows
    all have ``split == "external"`` is marked ``held_out``.
    """
    if "site" not in meta.columns or meta["site"].nunique() < 2:
        return None
    sites = meta["site"].astype(str).to_numpy()
    names = sorted(set(sites))
    codes = np.searchsorted(names, sites)
    W = _resampling(labels, codes, clusters, settings)
    external = (
        meta["split"].astype(str).to_numpy() == "external"
        if "split" in meta.columns
        else np.zeros(len(sites), dtype=bool)
    )
    rows: list[dict[str, object]] = []
    for site in names:
        here = sites == site
        others = ~here
        row: dict[str, object] = {
            "site": site,
            "held_out": bool(external[here].all()),
            "n": int(here.sum()),
        }
        why = _eligible(labels, here, settings, clean.shape[1]) or _eligible(
            labels, others, settings, clean.shape[1]
        )
        if why:
            rows.append({**row, "status": "skipped", "reason": why})
            continue
        a_site, a_other = _auc(labels, clean, W, here), _auc(labels, clean, W, others)
        drop = a_other - a_site
        lo, hi = drop.ci(settings.confidence)
        rows.append(
            {
                **row,
                "auroc": a_site.value,
                "auroc_other_sites": a_other.value,
                "auroc_drop": drop.value,
                "auroc_drop_ci_low": lo,
                "auroc_drop_ci_high": hi,
                "status": "ok",
                "reason": "",
            }
        )
    cols = [
        "site",
        "held_out",
        "n",
        "auroc",
        "auroc_other_sites",
        "auroc_drop",
        "auroc_drop_ci_low",
        "auroc_drop_ci_high",
        "status",
        "reason",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)
