"""The estimator behind :func:`group_metrics`: settings, one function per grouping.

For each task (a class one-vs-rest) and each grouping (an attribute, an intersection,
and "all rows"), :func:`_grouping` builds the score histogram, the point estimates, the
calibration terms, the bootstrap replicates under the two resampling schemes, the
p-values, and the rows of the long table and of the gap table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medaudit._stats._calibration import squared_ece_from_contributions
from medaudit.fairness._engine import (
    SCHEMES,
    Hist,
    build_hist,
    evaluate,
    iter_bootstrap,
    iter_permutations,
)
from medaudit.fairness._gaps import (
    GAP_COLUMNS,
    TESTED,
    GroupingEvidence,
    adjust_gap_pvalues,
    family_metrics,
    gap_rows,
)
from medaudit.fairness._inputs import (
    ALL_LABEL,
    SKIP_CLASS,
    SKIP_SMALL,
    Grouping,
    Task,
    groupings,
    patient_codes,
    require_both_classes,
    tasks,
)
from medaudit.fairness._metrics import METRICS
from medaudit.fairness._results import GroupMetrics
from medaudit.fairness._rows import (
    CALIBRATION_COLUMNS,
    TABLE_COLUMNS,
    calibration_rows,
    group_rows,
    overall_rows,
)
from medaudit.fairness._settings import GroupMetricsSettings, settings_from
from medaudit.stats import (
    CalibrationTerms,
    calibration_p_values,
    calibration_terms,
    ece_pseudo_replicates,
    permutation_pvalue,
    pseudo_replicates,
    small_sample_widen,
)

__all__ = ["GroupMetricsSettings", "group_metrics"]

NOTE_BINNED = (
    "Bootstrap CIs were computed on scores binned to {max_bins} quantile bins (threshold "
    "and calibration-bin edges kept exact; AUROC and Brier replicates shifted to the exact "
    "point estimate) because n = {n:,} > {exact_max_rows:,}: threshold metrics and the ECE "
    "are exact, the others approximate. Point estimates are exact."
)
NOTE_PATIENTS = (
    "The bootstrap resamples whole patients (all their images, both classes) within each "
    "group (Rao-Wu rescaled); for AUROC, sensitivity and specificity also within the "
    "patient's class profile (with or without a positive image)."
)
NOTE_P_BOOTSTRAP = (
    "Gap p-values: the bootstrap test dual to the simultaneous CI (p <= {alpha:g} exactly "
    "when the CI excludes 0); {p_adjust}-adjusted over the gaps reported."
)
NOTE_P_PERMUTATION = (
    "Gap p-values: {n_perm} permutations of group labels among {units} (within class "
    "profile for class-conditional metrics); they test that the groups are exchangeable, "
    "which implies the CI's null; {p_adjust}-adjusted over the gaps reported."
)


@dataclass(frozen=True)
class _Scores:
    """One task's scores on the three supports: exact, bootstrap (maybe binned), permutation.

    ``cache`` keeps what every grouping of the task shares (the calibration terms of all
    rows).
    """

    task: Task
    exact: tuple[np.ndarray, np.ndarray]
    boot: tuple[np.ndarray, np.ndarray]
    perm: tuple[np.ndarray, np.ndarray]
    is_exact: bool
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


def _binned(
    s: np.ndarray, n_bins_q: int, threshold: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and representative values of a quantile grid that keeps threshold and ECE edges."""
    q = np.quantile(s, np.linspace(0, 1, n_bins_q + 1)[1:-1])
    edges = np.unique(np.concatenate([q, [threshold], np.arange(1, n_bins) / n_bins]))
    codes = np.searchsorted(edges, s, side="right")
    k = len(edges) + 1
    cnt = np.bincount(codes, minlength=k)
    tot = np.bincount(codes, weights=s, minlength=k)
    lows = np.r_[0.0, edges]
    with np.errstate(invalid="ignore", divide="ignore"):
        rep = np.where(cnt > 0, tot / np.maximum(cnt, 1), lows)
    # An empty bin's value is never used; keep the grid ascending for searchsorted.
    rep = np.maximum.accumulate(rep)
    return codes.astype(np.int64), rep


def _scores(task: Task, st: GroupMetricsSettings) -> _Scores:
    grid, codes = np.unique(task.s, return_inverse=True)
    exact = (codes.ravel().astype(np.int64), grid)
    n = len(task.s)
    is_exact = n <= st.exact_max_rows or len(grid) <= st.max_bins
    boot = exact if is_exact else _binned(task.s, st.max_bins, float(st.threshold), st.n_bins)
    perm = (
        exact
        if len(grid) <= st.permutation_bins
        else _binned(task.s, st.permutation_bins, float(st.threshold), st.n_bins)
    )
    return _Scores(task, exact, boot, perm, is_exact)


def _eligibility(h: Hist, min_group_size: int, min_class_count: int) -> list[str]:
    cc = h.class_counts()
    reasons = []
    for g in range(h.n_groups):
        n0, n1 = int(cc[0, g]), int(cc[1, g])
        why = []
        if n0 + n1 < min_group_size:
            why.append(SKIP_SMALL.format(n=n0 + n1, m=min_group_size))
        if n1 < min_class_count:
            why.append(SKIP_CLASS.format(which="n_pos", k=n1, m=min_class_count))
        if n0 < min_class_count:
            why.append(SKIP_CLASS.format(which="n_neg", k=n0, m=min_class_count))
        reasons.append("; ".join(why))
    return reasons


def _collect(chunks: Any) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for d in chunks:
        for k, v in d.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def _hist(sc: _Scores, support: str, g: Grouping, st: GroupMetricsSettings, clusters: Any) -> Hist:
    codes, grid = getattr(sc, support)
    return build_hist(
        codes,
        grid,
        sc.task.y,
        g.codes,
        len(g.labels),
        threshold=float(st.threshold),
        n_bins=st.n_bins,
        clusters=clusters,
    )


@dataclass
class _Grouped:
    """The data of one (task, grouping) that the replicates are drawn from."""

    sc: _Scores
    grouping: Grouping
    h: Hist
    hb: Hist
    terms: CalibrationTerms
    point: dict[str, np.ndarray]


def _calibration(
    sc: _Scores, g: Grouping, st: GroupMetricsSettings, clusters: Any
) -> CalibrationTerms:
    """Calibration terms of each group, then of all rows (the last row)."""
    y, s = sc.task.y, sc.task.s
    n_g = len(g.labels)
    if n_g == 1:  # one group: its terms are those of all rows
        per = sc.cache.get("all") or calibration_terms(
            y, s, n_bins=st.n_bins, groups=g.codes, n_groups=1, clusters=clusters
        )
    else:
        per = calibration_terms(
            y, s, n_bins=st.n_bins, groups=g.codes, n_groups=n_g, clusters=clusters
        )
    if "all" not in sc.cache:
        sc.cache["all"] = (
            per if n_g == 1 else calibration_terms(y, s, n_bins=st.n_bins, clusters=clusters)
        )
    allt = sc.cache["all"]
    return CalibrationTerms(
        *(
            np.concatenate([a, b])
            for a, b in zip(dataclasses.astuple(per), dataclasses.astuple(allt), strict=True)
        )
    )


def _prepare(sc: _Scores, g: Grouping, st: GroupMetricsSettings, clusters: Any) -> _Grouped:
    h = _hist(sc, "exact", g, st, clusters)
    hb = h if sc.is_exact else _hist(sc, "boot", g, st, clusters)
    terms = _calibration(sc, g, st, clusters)
    point = {k: v[0] for k, v in evaluate(h, h.base_weights()).items()}
    point["ece"] = terms.debiased
    point["underdiagnosis_rate"] = point[sc.task.underdiagnosis]
    return _Grouped(sc, g, h, hb, terms, point)


def _denominators(gd: _Grouped) -> dict[str, np.ndarray]:
    """Images each rate is a fraction of, per group and overall (Wilson's ``n``)."""
    cc = gd.h.class_counts()
    n0 = np.r_[cc[0], cc[0].sum()]
    n1 = np.r_[cc[1], cc[1].sum()]
    n = n0 + n1
    flagged = gd.point["selection_rate"] * n
    by_class = {"true_positive_rate": n1, "false_negative_rate": n1}
    by_class.update(true_negative_rate=n0, false_positive_rate=n0)
    return {"prevalence": n, "selection_rate": n, "ppv": flagged, **by_class}


def _replicates(
    gd: _Grouped, n: int, rng: np.random.Generator, confidence: float
) -> dict[str, np.ndarray]:
    """Pseudo-replicates of every metric (class metrics resampled by class profile).

    Their percentiles are the metric's CI (Wilson with a design effect for rates, basic
    on the logit scale for AUROC, balanced accuracy and Brier score, widened by
    ``t(patients - 1) / z``; the debiased ECE's basic interval); they stay paired
    resample by resample for the gaps.
    """
    raw: dict[str, np.ndarray] = {}
    for scheme in SCHEMES:
        raw.update(_collect(iter_bootstrap(gd.hb, n, rng, scheme)))
    if gd.hb is not gd.h:  # binned: shift threshold-free replicates to the exact estimate
        bpoint = evaluate(gd.hb, gd.hb.base_weights())
        for k in ("auroc", "brier_score"):
            raw[k] = raw[k] + (gd.point[k] - bpoint[k][0])[None, :]
    reps: dict[str, np.ndarray] = {}
    reps["ece"], reps["ece_squared"] = ece_pseudo_replicates(
        raw.pop("ece_contribution"), raw.pop("ece_share"), gd.terms
    )
    denom = _denominators(gd)
    units = np.r_[gd.h.patient_counts(), gd.h.patient_counts().sum()]
    for m, spec in METRICS.items():
        if m in ("ece", "underdiagnosis_rate"):
            continue
        if spec.interval not in ("proportion", "logit"):
            reps[m] = raw[m]
            continue
        pr = pseudo_replicates(spec.interval, gd.point[m], raw[m], denom.get(m))
        reps[m] = small_sample_widen(gd.point[m], pr, units, confidence)
    reps["underdiagnosis_rate"] = reps[gd.sc.task.underdiagnosis]
    return reps


def _range_stats(d: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Max - min over the first ``k`` groups of each tested metric present in ``d``."""
    out = {}
    for m, v in d.items():
        if m not in TESTED:
            continue
        v = v[:, :k]
        fin = np.isfinite(v)
        hi = np.where(fin, v, -np.inf).max(axis=1)
        lo = np.where(fin, v, np.inf).min(axis=1)
        out[m] = np.where(fin.sum(axis=1) >= 2, hi - lo, np.nan)
    if "true_positive_rate" in out and "false_positive_rate" in out:
        out["equalized_odds_difference"] = np.maximum(
            out["true_positive_rate"], out["false_positive_rate"]
        )
    return out


def _permutation_p(
    gd: _Grouped,
    eligible: list[int],
    st: GroupMetricsSettings,
    n_perm: int,
    clusters: Any,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Permutation p-values of the range of each tested metric over the eligible groups."""
    remap = np.full(len(gd.grouping.labels), -1, np.int64)
    remap[eligible] = np.arange(len(eligible))
    g = remap[gd.grouping.codes]
    keep = g >= 0
    codes, grid = gd.sc.perm
    h = build_hist(
        codes[keep],
        grid,
        gd.sc.task.y[keep],
        g[keep],
        len(eligible),
        threshold=float(st.threshold),
        n_bins=st.n_bins,
        clusters=None if clusters is None else clusters[keep],
    )

    def stats(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "ece_contribution" in d:  # the plug-in ECE: any statistic is exact under the null
            d = {
                **d,
                "ece": squared_ece_from_contributions(d["ece_contribution"], d["ece_share"], 0.0),
            }
        return _range_stats(d, len(eligible))

    obs = stats(evaluate(h, h.base_weights()))
    null: dict[str, np.ndarray] = {}
    for scheme in SCHEMES:
        null.update(_collect(stats(d) for d in iter_permutations(h, n_perm, rng, scheme)))
    return {m: permutation_pvalue(float(obs[m][0]), null[m]) for m in TESTED if m in null}


def _group_calibration_p(gd: _Grouped, reps: dict[str, np.ndarray] | None) -> np.ndarray:
    """Per group (then all rows), p-value of "calibrated": dual to the ECE's interval.

    Spiegelhalter's z when there are no bootstrap replicates.
    """
    if reps is None:
        return gd.terms.p_value
    return calibration_p_values(reps["ece_squared"])


def _calibration_p(p: np.ndarray, eligible: list[int]) -> float:
    """Bonferroni p-value of "every eligible group is calibrated"."""
    q = p[eligible]
    q = q[np.isfinite(q)]
    return float(min(1.0, q.min() * len(q))) if q.size else math.nan


@dataclass
class _Run:
    """State shared by the groupings of one call: settings, rng, family size."""

    st: GroupMetricsSettings
    rng: np.random.Generator
    clusters: np.ndarray | None
    n_tests: int

    @property
    def needed(self) -> int:
        """Resamples for the smallest p-value to survive the adjustment with room to spare."""
        if self.st.p_adjust == "none":
            return 0
        return int(math.ceil(2 * self.n_tests / self.st.alpha)) - 1


def _evidence(
    gd: _Grouped,
    reps: dict[str, np.ndarray] | None,
    reasons: list[str],
    run: _Run,
    perm_p: dict[str, float] | None,
) -> GroupingEvidence:
    n_g = len(gd.grouping.labels)
    eligible = [i for i in range(n_g) if not reasons[i]]
    calibration_p = _calibration_p(_group_calibration_p(gd, reps), eligible)
    if reps is None:
        reps = {k: np.full((1, n_g + 1), np.nan) for k in gd.point}
    return GroupingEvidence(
        task=gd.sc.task,
        grouping=gd.grouping,
        point=gd.point,
        reps=reps,
        eligible=eligible,
        reasons=reasons,
        calibration_p=calibration_p,
        confidence=run.st.confidence,
        es_variant=run.st.es_auc_variant,
        permutation_p=perm_p,
    )


def _at_floor(rows: list[dict[str, Any]], family: set[str], n: int) -> bool:
    """True when a family test's p-value sits at the resolution of ``n`` resamples."""
    return any(
        r["tested"] and r["p_from"] in family and r["p_value"] <= 2.0 / (n + 1) for r in rows
    )


@dataclass(frozen=True)
class _Result:
    """What one (task, grouping) contributes to the tables."""

    gd: _Grouped
    reasons: list[str]
    reps: dict[str, np.ndarray] | None
    gaps: list[dict[str, Any]]


def _grouping(sc: _Scores, g: Grouping, run: _Run) -> _Result:
    """Point estimates, replicates, p-values and gap rows of one (task, grouping)."""
    st = run.st
    gd = _prepare(sc, g, st, run.clusters)
    reasons = _eligibility(gd.h, st.min_group_size, st.min_class_count)
    if len(g.labels) == 1 and g.name == ALL_LABEL:  # all rows: no gaps, no tests
        reps = _replicates(gd, st.n_boot, run.rng, st.confidence) if st.n_boot > 0 else None
        return _Result(gd, reasons, reps, [])
    eligible = [i for i in range(len(g.labels)) if not reasons[i]]
    reps = _replicates(gd, st.n_boot, run.rng, st.confidence) if st.n_boot > 0 else None
    perm_p = _permutations(gd, eligible, st.n_permutations, run)
    rows = gap_rows(_evidence(gd, reps, reasons, run, perm_p))
    n_done = st.n_boot if st.p_method == "bootstrap" else st.n_permutations
    if 0 < n_done < run.needed and _at_floor(rows, family_metrics(st.p_family, sc.task), n_done):
        # Sequential top-up: more resamples only where a p-value sits at the resolution
        # floor and the adjustment over the family needs a finer one.
        if st.p_method == "bootstrap" and reps is not None:
            more = _replicates(gd, run.needed - n_done, run.rng, st.confidence)
            reps = {k: np.concatenate([reps[k], more[k]]) for k in reps}
        else:
            perm_p = _permutations(gd, eligible, run.needed, run)
        rows = gap_rows(_evidence(gd, reps, reasons, run, perm_p))
    if st.p_method == "none":
        for r in rows:
            r.update(p_value=math.nan, tested=False)
    return _Result(gd, reasons, reps, rows)


def _permutations(
    gd: _Grouped, eligible: list[int], n_perm: int, run: _Run
) -> dict[str, float] | None:
    if run.st.p_method != "permutation":
        return None
    if len(eligible) < 2 or n_perm == 0:
        return {}
    return _permutation_p(gd, eligible, run.st, n_perm, run.clusters, run.rng)


def _notes(st: GroupMetricsSettings, n: int, all_exact: bool, clustered: bool) -> list[str]:
    notes = []
    if not all_exact:
        notes.append(
            NOTE_BINNED.format(max_bins=st.max_bins, n=n, exact_max_rows=st.exact_max_rows)
        )
    if clustered:
        notes.append(NOTE_PATIENTS)
    if st.p_method == "bootstrap" and st.n_boot > 0:
        notes.append(NOTE_P_BOOTSTRAP.format(alpha=st.alpha, p_adjust=st.p_adjust))
    elif st.p_method == "permutation":
        notes.append(
            NOTE_P_PERMUTATION.format(
                n_perm=st.n_permutations,
                units="patients" if clustered else "images",
                p_adjust=st.p_adjust,
            )
        )
    return notes


def group_metrics(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    groups: Any,
    patient_id: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    no_finding: str | int | None = None,
    settings: GroupMetricsSettings | None = None,
    **options: Any,
) -> GroupMetrics:
    """Per-group metrics with bootstrap CIs, gaps with simultaneous CIs and p-values.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Binary labels (binary scores), class indices (multiclass scores), or a 0/1
        indicator matrix (multi-label). Multiclass and multi-label are one-vs-rest.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Predicted probabilities in [0, 1].
    groups : array-like of shape (n_samples,), DataFrame, or mapping of name to array
        Sensitive attribute(s). Numeric columns with more than ``max_levels`` distinct
        values are cut into ``continuous_bins`` quantile groups; missing values form
        the group ``"(missing)"``.
    patient_id : array-like of shape (n_samples,), optional
        When given, the bootstrap (and a permutation test) resamples whole patients.
    class_names : sequence of str, optional
    no_finding : str or int, optional
        The "no finding" class of a multiclass / multi-label model; its underdiagnosis
        rate is its false positive rate (Seyyed-Kalantari et al.). Detected by name
        ("No Finding", "normal") when not given.
    settings : GroupMetricsSettings, optional
        How to measure (threshold, resamples, confidence, p-values, minimum group
        sizes, ...); the defaults when None.
    **options
        Any field of :class:`GroupMetricsSettings` (``threshold=0.3``, ``n_boot=2000``,
        ``intersections=True``, ...), overriding ``settings``.

    Returns
    -------
    GroupMetrics

    Notes
    -----
    CIs are percentile intervals of a bootstrap that resamples whole patients within each
    group, and within the patient's class profile for metrics that condition on the
    class. A gap's interval is simultaneous over every pair of groups (Mandel &
    Betensky 2008), so it stays valid although the extreme groups are picked from the
    data; its p-value is the dual test. The ECE is debiased (Kumar et al. 2019) and
    Spiegelhalter's test says whether each group is calibrated at all (``calibration``).

    References
    ----------
    .. [1] Seyyed-Kalantari L et al. Underdiagnosis bias of artificial intelligence
           algorithms applied to chest radiographs in under-served patient populations.
           Nat Med 27:2176-2182, 2021.
    .. [2] Luo Y et al. FairCLIP: Harnessing fairness in vision-language learning.
           CVPR 2024 (equity-scaled AUC).
    .. [3] Mandel M, Betensky RA. Simultaneous confidence intervals based on the
           percentile bootstrap approach. Comput Stat Data Anal 52(4):2158-2165, 2008.
    .. [4] Kumar A, Liang P, Ma T. Verified uncertainty calibration. NeurIPS 2019.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> s = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0, 1)
    >>> sex = np.where(rng.random(400) < 0.5, "F", "M")
    >>> gm = group_metrics(y, s, groups={"sex": sex}, n_boot=200)
    >>> gm.by_group("sex")[["group", "n"]].to_dict("list")
    {'group': ['F', 'M'], 'n': [199, 201]}
    >>> gap = gm.gap("sex", "auroc")
    >>> bool(gap.ci[0] <= gap.value <= gap.ci[1])
    True
    """
    func = "group_metrics"
    st = settings_from(settings, options)
    all_tasks = tasks(y_true, y_score, class_names, no_finding, func)
    n = len(all_tasks[0].y)
    grps, n_base = groupings(
        groups,
        n,
        intersections=st.intersections,
        max_levels=st.max_levels,
        bins=st.continuous_bins,
        func=func,
    )
    clusters = patient_codes(patient_id, n, func)
    require_both_classes(all_tasks, func)
    family = family_metrics(st.p_family, all_tasks[0])
    run = _Run(
        st,
        np.random.default_rng(st.random_state),
        clusters,
        len(all_tasks) * len(grps) * len(family),
    )
    rows: list[dict[str, Any]] = []
    overall: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    calib: list[dict[str, Any]] = []
    hists: dict[tuple[str, str], Hist] = {}
    scores = [_scores(t, st) for t in all_tasks]
    for sc in scores:
        every = Grouping(ALL_LABEL, np.zeros(n, np.int64), [ALL_LABEL])
        top = _grouping(sc, every, run)
        overall += overall_rows(sc.task.name, top.gd.point, top.reps, st.confidence)
        for g in grps:
            res = _grouping(sc, g, run)
            hists[(sc.task.name, g.name)] = res.gd.h
            gd = res.gd
            rows += group_rows(
                g, sc.task.name, gd.h, gd.point, res.reps, res.reasons, st.confidence
            )
            calib += calibration_rows(
                g,
                sc.task.name,
                gd.h,
                gd.point["ece"],
                gd.terms,
                _group_calibration_p(gd, res.reps),
                res.reasons,
            )
            gaps += res.gaps
    gap_table = adjust_gap_pvalues(
        pd.DataFrame(gaps, columns=GAP_COLUMNS), st.p_adjust, st.p_family
    )
    return GroupMetrics(
        table=pd.DataFrame(rows, columns=TABLE_COLUMNS),
        overall=pd.DataFrame(overall, columns=["class", "metric", "value", "ci_low", "ci_high"]),
        gaps=gap_table,
        attributes=tuple(g.name for g in grps),
        class_names=tuple(t.name for t in all_tasks),
        threshold=float(st.threshold),
        confidence=float(st.confidence),
        n_boot=int(st.n_boot),
        n_permutations=int(st.n_permutations),
        p_adjust=st.p_adjust,
        exact=all(sc.is_exact for sc in scores),
        notes=tuple(_notes(st, n, all(sc.is_exact for sc in scores), clusters is not None)),
        p_method=st.p_method,
        calibration=pd.DataFrame(calib, columns=CALIBRATION_COLUMNS),
        _raw={
            "tasks": {t.name: t for t in all_tasks},
            "hists": hists,
            "labels": {g.name: g.labels for g in grps},
            "codes": {g.name: g.codes for g in grps},
            "base_attributes": [g.name for g in grps[:n_base]],
            "n_bins": st.n_bins,
            "clusters": clusters,
            "min_group_size": st.min_group_size,
            "min_class_count": st.min_class_count,
        },
    )
