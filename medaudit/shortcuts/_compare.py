"""Before / after: the audited model against a baseline checkpoint (``--compare-to``).

Both models are evaluated on the same audited images, so every change is paired: its CI
comes from the difference of the two estimates' per-patient influences. Rows: task AUROC
on all images, on the training sites and on the held-out site(s); the probe AUROC of each
attribute; and each attribute's subgroup AUROC gap (best minus worst level).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medaudit.shortcuts._clustered import ClusteredEstimate, auroc_estimate
from medaudit.shortcuts._probe import attribute_probe

__all__ = ["compare_to_baseline", "heldout_sites"]

COLUMNS = ["metric", "baseline", "model", "change", "change_low", "change_high"]


def heldout_sites(ctx: Any) -> list[str]:
    """Sites of the audited data the model was not trained on.

    With ``--train-data``: the audited sites absent from it; otherwise the sites all of
    whose rows have ``split == "external"`` (how the synthetic hospitals mark one).
    """
    meta = ctx.predictions.meta
    if "site" not in meta.columns:
        return []
    sites = meta["site"].astype(str)
    if ctx.train is not None and "site" in ctx.train.meta.columns:
        seen = set(ctx.train.meta["site"].astype(str))
        return sorted(set(sites) - seen)
    if "split" not in meta.columns:
        return []
    ext = meta["split"].astype(str) == "external"
    return sorted(s for s in set(sites[ext]) if ext[sites == s].all())


def _row(metric: str, base: Any, new: Any, conf: float) -> dict[str, Any]:
    diff = new - base
    lo, hi = diff.ci(conf)
    return {
        "metric": metric,
        "baseline": base.value,
        "model": new.value,
        "change": diff.value,
        "change_low": lo,
        "change_high": hi,
    }


def _subgroup_gap(
    y: np.ndarray, s: np.ndarray, codes: np.ndarray, pt: np.ndarray, k: int, levels: list[int]
) -> ClusteredEstimate | None:
    ests = [
        auroc_estimate(y[codes == j], s[codes == j], pt[codes == j], n_clusters=k) for j in levels
    ]
    ok = [e for e in ests if np.isfinite(e.value)]
    if len(ok) < 2:
        return None
    return max(ok, key=lambda e: e.value) - min(ok, key=lambda e: e.value)


def compare_to_baseline(
    ctx: Any, cfg: Any, found: Any, patients: np.ndarray, conf: float
) -> pd.DataFrame:
    """The before/after table of the audited model against ``cfg.compare_to``."""
    from medaudit.shortcuts._features import predict_with_features

    loaded = ctx.load_model(cfg.compare_to)
    base = predict_with_features(
        loaded.model,
        ctx.cohort,
        image_size=loaded.image_size,
        in_channels=loaded.in_channels,
        mean=loaded.mean,
        std=loaded.std,
        batch_size=ctx.batch_size,
        device=ctx.device,
    )
    new = ctx.predictions
    k = int(patients.max()) + 1 if len(patients) else 0
    y = new.labels > 0
    rows = []
    if new.is_binary and base.is_binary:
        held = heldout_sites(ctx)
        site = new.meta["site"].astype(str).to_numpy() if "site" in new.meta.columns else None
        masks = [("task AUROC (all audited images)", np.ones(len(y), bool))]
        if held and site is not None:
            in_held = np.isin(site, held)
            masks += [
                ("task AUROC (training sites)", ~in_held),
                (f"task AUROC (held-out site {', '.join(held)})", in_held),
            ]
        for name, m in masks:
            rows.append(
                _row(
                    name,
                    auroc_estimate(y[m], base.score[m], patients[m], n_clusters=k),
                    auroc_estimate(y[m], new.score[m], patients[m], n_clusters=k),
                    conf,
                )
            )
    for af in found.attributes:
        if af.skipped or af.probe is None:
            continue
        known = af.coded.codes >= 0
        uniq, lv = np.unique(af.coded.codes[known], return_inverse=True)
        base_probe = attribute_probe(
            base.features[known],
            lv.ravel(),
            patients[known],
            n_levels=len(uniq),
            n_folds=cfg.folds,
            probe=cfg.probe,
            n_resamples=cfg.probe_resamples,
            random_state=int(ctx.setting("seed")),
        )
        rows.append(_row(f"probe AUROC: {af.name}", base_probe.probe, af.probe.probe, conf))
        if new.is_binary and base.is_binary:
            levels = list(np.unique(af.coded.codes[known]))
            codes = af.coded.codes
            g_base = _subgroup_gap(y, base.score, codes, patients, k, levels)
            g_new = _subgroup_gap(y, new.score, codes, patients, k, levels)
            if g_base is not None and g_new is not None:
                rows.append(_row(f"subgroup AUROC gap: {af.name}", g_base, g_new, conf))
    return pd.DataFrame(rows, columns=COLUMNS)
