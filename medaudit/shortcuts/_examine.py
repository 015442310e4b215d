"""Run the four questions (encoded? used? where? does the gap survive?) on one context.

:func:`examine` gathers every number the section shows into :class:`ShortcutFindings`;
it runs the model again only for the counterfactual swap, the occlusion maps and a
baseline comparison, each on a bounded subsample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError
from medaudit.shortcuts._attributes import (
    CodedAttribute,
    code_attribute,
    control_matrix,
    determines,
    patient_codes,
)
from medaudit.shortcuts._matching import (
    MatchedGaps,
    feature_modes,
    ks_tests,
    match_cells,
    matched_gaps,
    one_per_patient,
)
from medaudit.shortcuts._occlusion import MapSummary, OcclusionMaps, occlusion_maps, summarise_map
from medaudit.shortcuts._probe import ProbeResult, attribute_probe
from medaudit.shortcuts._usage import (
    AlignmentResult,
    CounterfactualResult,
    Region,
    aligned_conflicting,
    counterfactual_swap,
    estimate_region,
    level_direction,
    pair_rows,
    parse_region,
)

__all__ = ["AttributeFindings", "ShortcutFindings", "ShortcutSettings", "examine"]

# Images loaded once for region estimation, counterfactual partners and occlusion: at
# most this many, and at most this many bytes (512 of 64 x 64, 106 of 224 x 224 x 3).
SAMPLE_IMAGES = 512
SAMPLE_BYTES = 64 * 1024**2
# Aggregate maps over fewer images than this are not shown (they would show patients).
MIN_IMAGES_PER_MAP = 5
# An attribute level takes a direction (aligned / conflicting) only when its prevalence
# differs from the other levels' at this level (patient-clustered Wald test): without a
# real association the sign is noise, and a model whose score merely moves with the
# attribute (a bright token shifting the intensity) would fail half the time. 0.001, not
# 0.01: a spurious direction fails "used" about half the time, so at 0.01 an audit of five
# unrelated attributes would raise a major false alarm in about 2.5% of data sets (seen:
# 1 of 20 seeds of the strength-0 sweep); an association strong enough to act as a
# shortcut has p far below 0.001 on any training set worth auditing.
ASSOCIATION_ALPHA = 0.001
MSG_NOT_ASSOCIATED = (
    "{name} is not associated with the label in {ref} (no level's prevalence differs from "
    "the others' at p < {alpha}): it cannot act as a shortcut for this label"
)


@dataclass(frozen=True)
class ShortcutSettings:
    """The shortcut audit's settings (see ``medaudit policy show``)."""

    attributes: tuple[str, ...] = ()
    marker_region: str = "auto"
    compare_to: str | None = None
    probe: str = "ridge"
    folds: int = 5
    probe_resamples: int = 50
    control_columns: tuple[str, ...] = ()
    stratify_by: str = "site"
    match_on: tuple[str, ...] = ("age",)
    n_modes: int = 4
    p_adjust: str = "holm"
    occlusion_images: int = 24
    occlusion_grid: int = 4
    border_band: float = 0.125
    per_image_maps: int = 0
    counterfactual_images: int = 128
    decision_threshold: float = 0.5
    max_levels: int = 10

    @classmethod
    def from_context(cls, ctx: Any) -> ShortcutSettings:
        """Read every ``shortcuts.*`` setting from the context's policy."""
        get = ctx.setting
        kw: dict[str, Any] = {}
        for f in cls.__dataclass_fields__:
            v = get(f"shortcuts.{f}")
            kw[f] = tuple(v) if isinstance(v, list) else v
        if kw.get("compare_to") is not None:
            kw["compare_to"] = str(kw["compare_to"])
        return cls(**kw)


@dataclass
class AttributeFindings:
    """Everything measured about one attribute (``None`` parts say why in ``reasons``)."""

    name: str
    coded: CodedAttribute
    probe: ProbeResult | None = None
    alignment: AlignmentResult | None = None
    counterfactual: CounterfactualResult | None = None
    matched: MatchedGaps | None = None
    ks: pd.DataFrame | None = None
    level_maps: dict[str, MapSummary] = field(default_factory=dict)
    difference_map: MapSummary | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: str = ""
    unassociated: bool = False


@dataclass
class ShortcutFindings:
    """What :func:`examine` returns."""

    settings: ShortcutSettings
    attributes: list[AttributeFindings]
    binary: bool
    n_images: int
    n_patients: int
    occlusion: OcclusionMaps | None = None
    class_maps: dict[str, MapSummary] = field(default_factory=dict)
    mean_maps: dict[str, np.ndarray] = field(default_factory=dict)
    compare: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    reference: str = "the audited data"


def default_attributes(columns: list[str], sensitive: list[str]) -> list[str]:
    """``site`` (when present) plus the resolved sensitive attributes."""
    return list(dict.fromkeys((["site"] if "site" in columns else []) + list(sensitive)))


def _usable(coded: CodedAttribute, min_count: int) -> CodedAttribute:
    """The attribute with levels of fewer than ``min_count`` images set to missing."""
    small = np.flatnonzero(coded.counts() < min_count)
    if small.size == 0:
        return coded
    codes = np.where(np.isin(coded.codes, small), -1, coded.codes)
    return CodedAttribute(coded.name, codes, coded.levels, coded.split_at)


def _control_columns(
    meta: pd.DataFrame, attr: str, cfg: ShortcutSettings, sens: list[str]
) -> list[str]:
    base = list(cfg.control_columns) or [
        "site",
        *sens,
        *cfg.attributes,
        "age",
        "label",
    ]
    cols = [c for c in dict.fromkeys(base) if c in meta.columns and c != attr]
    return [c for c in cols if c == "label" or not determines(meta, c, attr)]


def examine(ctx: Any, cfg: ShortcutSettings) -> ShortcutFindings:
    """Measure encoding, use, location and surviving gaps of every attribute."""
    from medaudit.data import resolve_sensitive

    preds = ctx.predictions
    meta = preds.meta
    if preds.features is None:
        raise InvalidInputError(
            "The shortcut audit needs penultimate-layer features (a zoo model, or "
            "feature_layer=...)."
        )
    requested = list(cfg.attributes) or None
    names = (
        resolve_sensitive(meta.columns, requested, source=f"cohort {ctx.cohort.name!r}")
        if requested
        else default_attributes(list(meta.columns), list(ctx.sensitive))
    )
    cfg_attrs = cfg if requested else _with_attributes(cfg, names)
    min_class = int(ctx.setting("min_class_count"))
    conf = float(ctx.setting("confidence"))
    seed = int(ctx.setting("seed"))
    patients = patient_codes(meta)
    binary = preds.is_binary
    found = ShortcutFindings(
        settings=cfg_attrs,
        attributes=[],
        binary=binary,
        n_images=len(preds),
        n_patients=int(patients.max()) + 1 if len(patients) else 0,
    )
    ref_meta = ctx.train.meta if ctx.train is not None else meta
    found.reference = "the training data" if ctx.train is not None else "the audited data"
    modes, _ = feature_modes(preds.features, cfg.n_modes)
    one = one_per_patient(patients, seed)
    for name in names:
        found.attributes.append(
            _examine_attribute(
                ctx, cfg_attrs, name, patients, ref_meta, modes, one, min_class, conf, seed
            )
        )
    sample = _image_sample(ctx, cfg, seed)
    _counterfactuals(ctx, cfg, found, sample, patients, seed)
    _occlusion(ctx, cfg, found, sample, seed)
    if cfg.compare_to:
        from medaudit.shortcuts._compare import compare_to_baseline

        found.compare = compare_to_baseline(ctx, cfg_attrs, found, patients, conf)
    return found


def _with_attributes(cfg: ShortcutSettings, names: list[str]) -> ShortcutSettings:
    import dataclasses

    return dataclasses.replace(cfg, attributes=tuple(names))


def _examine_attribute(
    ctx: Any,
    cfg: ShortcutSettings,
    name: str,
    patients: np.ndarray,
    ref_meta: pd.DataFrame,
    modes: np.ndarray,
    one: np.ndarray,
    min_class: int,
    conf: float,
    seed: int,
) -> AttributeFindings:
    preds = ctx.predictions
    meta = preds.meta
    coded = code_attribute(meta, name)
    out = AttributeFindings(name, coded)
    if name == "label":
        out.skipped = "the label itself is not a shortcut attribute"
        return out
    if coded.n_levels > cfg.max_levels:
        out.skipped = f"{coded.n_levels} distinct values (more than max_levels = {cfg.max_levels})"
        return out
    usable = _usable(coded, min_class)
    if np.count_nonzero(usable.counts()) < 2:
        out.skipped = f"fewer than two values with at least {min_class} images each"
        return out
    out.coded = usable
    known = usable.codes >= 0
    # 1. Encoded: probe with the metadata control and within strata of a confounder.
    ctl_cols = _control_columns(meta, name, cfg, list(ctx.sensitive))
    x_ctl, used_cols = control_matrix(meta.loc[known].reset_index(drop=True), ctl_cols)
    strat = cfg.stratify_by if cfg.stratify_by in meta.columns and cfg.stratify_by != name else None
    lv_known, n_lv = _recode(usable.codes[known])
    out.probe = attribute_probe(
        preds.features[known],
        lv_known,
        patients[known],
        n_levels=n_lv,
        control=x_ctl,
        control_columns=tuple(used_cols),
        strata=None if strat is None else meta[strat].astype(str).to_numpy()[known],
        stratify_by=strat,
        n_folds=cfg.folds,
        probe=cfg.probe,
        n_resamples=cfg.probe_resamples,
        random_state=seed,
    )
    # 2. Used: aligned vs conflicting (binary models).
    if preds.is_binary:
        ref = code_attribute(ref_meta, name) if name in ref_meta.columns else None
        direction = _direction(usable, ref, preds.labels, patients, ref_meta, min_class)
        if not np.any(direction):
            out.reasons["used"] = MSG_NOT_ASSOCIATED.format(
                name=name, ref=_ref(ctx), alpha=ASSOCIATION_ALPHA
            )
            out.unassociated = True
        else:
            out.alignment = aligned_conflicting(
                preds.labels,
                preds.score,
                usable.codes,
                patients,
                direction,
                threshold=cfg.decision_threshold,
            )
    else:
        out.reasons["used"] = "the aligned/conflicting test needs a binary model"
    # 4. Does the gap survive matching? KS tests of feature modes and logits.
    if preds.is_binary:
        match_cols = [c for c in cfg.match_on if c in meta.columns and c != name]
        match_cols = [c for c in match_cols if not determines(meta, c, name)]
        cells = match_cells(meta, preds.labels, match_cols)
        out.matched = matched_gaps(
            preds.labels,
            preds.score,
            usable.codes,
            usable.levels,
            patients,
            cells,
            matched_on=match_cols,
            threshold=cfg.decision_threshold,
            min_count=min_class,
            confidence=conf,
        )
    values = {f"feature mode {i + 1}": modes[one, i] for i in range(modes.shape[1])}
    values.update(_logits(preds.scores[one]))
    out.ks = ks_tests(values, usable.codes[one], usable.levels, min_count=10, p_adjust=cfg.p_adjust)
    return out


def _recode(codes: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(codes, return_inverse=True)
    return inv.ravel(), len(uniq)


def _ref(ctx: Any) -> str:
    return "the training data" if ctx.train is not None else "the audited data"


def _direction(
    usable: CodedAttribute,
    ref: CodedAttribute | None,
    labels: np.ndarray,
    patients: np.ndarray,
    ref_meta: pd.DataFrame,
    min_class: int,
) -> np.ndarray:
    """Association of each audited level with the label, from the reference data.

    A level the reference data lacks (a held-out site) takes its direction from the
    audited data. Only associations significant at ``ASSOCIATION_ALPHA`` count.
    """
    a = ASSOCIATION_ALPHA
    own = level_direction(
        usable.codes, labels, usable.n_levels, min_count=min_class, clusters=patients, alpha=a
    )
    if ref is None:
        return own
    ref_dir = level_direction(
        ref.codes,
        ref_meta["label"].to_numpy(),
        ref.n_levels,
        min_count=min_class,
        clusters=patient_codes(ref_meta),
        alpha=a,
    )
    by_name = dict(zip(ref.levels, ref_dir, strict=True))
    counts = ref.counts()
    out = own.copy()
    for j, lvl in enumerate(usable.levels):
        k = ref.levels.index(lvl) if lvl in ref.levels else -1
        if k >= 0 and counts[k] >= min_class:
            out[j] = by_name[lvl]
    return out


def _logits(scores: np.ndarray) -> dict[str, np.ndarray]:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    if p.shape[1] == 2:
        return {"logit": np.log(p[:, 1] / p[:, 0])}
    return {f"logit {k}": np.log(p[:, k] / (1 - p[:, k])) for k in range(p.shape[1])}


# -- images: one sample for the counterfactual swap and the occlusion maps ---------------


@dataclass
class _Sample:
    rows: np.ndarray
    images: np.ndarray


def _image_sample(ctx: Any, cfg: ShortcutSettings, seed: int) -> _Sample | None:
    if ctx.model is None or (cfg.occlusion_images == 0 and cfg.counterfactual_images == 0):
        return None
    n = len(ctx.cohort)
    info = ctx.model_info
    c, h, w = ctx.cohort.image_shape
    side = info.get("image_size")
    per_image = 4 * (info.get("in_channels") or c) * (side or h) * (side or w)
    cap = max(32, min(SAMPLE_IMAGES, SAMPLE_BYTES // per_image))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(n)[: min(n, cap)])
    images = ctx.cohort.subset(rows).load_all(
        image_size=info.get("image_size"), channels=info.get("in_channels")
    )
    return _Sample(rows, images)


def _counterfactuals(
    ctx: Any,
    cfg: ShortcutSettings,
    found: ShortcutFindings,
    sample: _Sample | None,
    patients: np.ndarray,
    seed: int,
) -> None:
    region = parse_region(cfg.marker_region)
    for af in found.attributes:
        if af.skipped:
            continue
        why = _counterfactual_blocker(ctx, cfg, found, af, region, sample)
        if why:
            af.reasons.setdefault("counterfactual", why)
            continue
        assert sample is not None
        af.counterfactual = _swap(ctx, cfg, af, sample, region, patients, seed)
        if af.counterfactual is None:
            af.reasons["counterfactual"] = (
                "no small region distinguishes images with and without it (the difference "
                "between them is diffuse); give --marker-region to name one"
            )


def _counterfactual_blocker(
    ctx: Any,
    cfg: ShortcutSettings,
    found: ShortcutFindings,
    af: AttributeFindings,
    region: Region | str,
    sample: _Sample | None,
) -> str:
    if not found.binary:
        return "the swap needs a binary model"
    if af.coded.n_levels != 2 or np.count_nonzero(af.coded.counts()) != 2:
        return "the swap applies to an attribute with two values (present / absent)"
    if region == "none":
        return "switched off (--marker-region none)"
    if sample is None or cfg.counterfactual_images == 0:
        return (
            "switched off (counterfactual_images = 0)"
            if ctx.model is not None
            else ("needs the model")
        )
    return ""


def _swap(
    ctx: Any,
    cfg: ShortcutSettings,
    af: AttributeFindings,
    sample: _Sample,
    region: Region | str,
    patients: np.ndarray,
    seed: int,
) -> CounterfactualResult | None:
    meta = ctx.predictions.meta
    codes = af.coded.codes[sample.rows]
    ok = codes >= 0
    rows, images, present = sample.rows[ok], sample.images[ok], codes[ok] == 1
    strat_col = cfg.stratify_by if cfg.stratify_by in meta.columns else None
    strata = (
        meta[strat_col].astype(str).to_numpy()[rows]
        if strat_col and strat_col != af.name
        else np.zeros(len(rows), dtype=object)
    )
    regions: dict[str, Region] = {}
    for s_val in np.unique(strata):
        m = strata == s_val
        if isinstance(region, Region):
            regions[str(s_val)] = region
        elif present[m].any() and (~present[m]).any():
            est = estimate_region(images[m], present[m])
            if est is not None:
                regions[str(s_val)] = est
    if not regions:
        return None
    eligible = np.flatnonzero(np.isin(strata.astype(str), list(regions)))
    rng = np.random.default_rng(seed + 1)
    take = _balanced(present[eligible], cfg.counterfactual_images, rng)
    chosen = eligible[take]
    partners = pair_rows(present, strata, chosen, rng)
    score = ctx.predictions.score

    def predict_fn(transform: Any, local: np.ndarray) -> np.ndarray:
        res = ctx.predict_transformed(
            lambda x, idx: transform(x, idx),
            key=f"shortcuts.swap:{af.name}:{cfg.marker_region}:{seed}",
            rows=rows[chosen[local]],
        )
        return res.scores[:, 1]

    return counterfactual_swap(
        predict_fn,
        images[partners],
        np.arange(len(chosen)),
        present[chosen],
        score[rows[chosen]],
        patients[rows[chosen]],
        [regions[str(strata[i])] for i in chosen],
        threshold=cfg.decision_threshold,
        region_names=regions if not isinstance(region, Region) else {"*": region},
    )


def _balanced(present: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` positions, half with and half without the attribute when possible."""
    a, b = np.flatnonzero(present), np.flatnonzero(~present)
    ka = min(len(a), max(n // 2, n - len(b)))
    kb = min(len(b), n - ka)
    return np.sort(np.r_[rng.permutation(a)[:ka], rng.permutation(b)[:kb]])


def _occlusion(
    ctx: Any,
    cfg: ShortcutSettings,
    found: ShortcutFindings,
    sample: _Sample | None,
    seed: int,
) -> None:
    if sample is None or cfg.occlusion_images == 0:
        found.notes.append(
            "Occlusion maps were not computed "
            + ("(occlusion_images = 0)." if ctx.model is not None else "(no model).")
        )
        return
    preds = ctx.predictions
    labels = preds.labels[sample.rows]
    rng = np.random.default_rng(seed + 2)
    pick = _balanced(labels > 0, cfg.occlusion_images, rng)
    rows = sample.rows[pick]
    target = np.ones(len(rows), dtype=np.int64) if found.binary else labels[pick]
    info = ctx.model_info
    occ = occlusion_maps(
        ctx.model,
        sample.images[pick],
        target,
        rows=rows,
        mean=info.get("mean"),
        std=info.get("std"),
        grid=cfg.occlusion_grid,
        batch_size=min(ctx.batch_size, 128),
        device=ctx.device,
    )
    found.occlusion = occ
    kw: dict[str, Any] = {"band": cfg.border_band, "window": occ.window, "stride": occ.stride}
    for k, cls in enumerate(preds.class_names):
        m = labels[pick] == k
        if m.sum() >= MIN_IMAGES_PER_MAP:
            mean_map = occ.maps[m].mean(axis=0)
            found.mean_maps[f"class: {cls}"] = mean_map
            found.class_maps[cls] = summarise_map(mean_map, n=int(m.sum()), **kw)
    for af in found.attributes:
        if af.skipped:
            continue
        codes = af.coded.codes[rows]
        per_level = {}
        for j, lvl in enumerate(af.coded.levels):
            m = codes == j
            if m.sum() >= MIN_IMAGES_PER_MAP:
                per_level[lvl] = occ.maps[m].mean(axis=0)
                af.level_maps[lvl] = summarise_map(per_level[lvl], n=int(m.sum()), **kw)
                found.mean_maps[f"{af.name}: {lvl}"] = per_level[lvl]
        if len(per_level) >= 2:
            stack = np.stack(list(per_level.values()))
            spread = stack.max(axis=0) - stack.min(axis=0)
            af.difference_map = summarise_map(
                spread, n=int(sum(s.n_images for s in af.level_maps.values())), **kw
            )
