"""Is the attribute encoded? A cross-validated linear probe on frozen features, with controls.

The probe predicts an attribute from the model's penultimate features in patient-grouped
folds (no patient in both the fitting and the scoring fold). Two controls tell an
attribute the image *itself* reveals from one the features know only because they know
something else, as Gichoya et al. and the insurance paper (Lotter) argue:

- the **metadata control**: the same attribute predicted, in the same folds, from the
  other metadata columns only (site, the demographics, the label);
- the **within-stratum** probe: the probe's scores compared only between images of the
  same stratum of a confounder (e.g. the same site).

"Encoded beyond what the metadata explains" is said only when the 95% CI of the paired
difference probe − control lies above zero. The CIs come from a patient bootstrap that
refits every fold of the cross-validation on each resample.

References
----------
.. [1] Glocker B, Jones C, Bernhardt M, Winzeck S. Algorithmic encoding of protected
       characteristics in chest X-ray disease detection models. eBioMedicine 89:104467,
       2023.
.. [2] Lotter W. Acquisition parameters influence AI recognition of race in chest x-rays
       and mitigating these factors reduces underdiagnosis bias. Nat Commun 15:7465, 2024.
.. [3] Gichoya JW, et al. AI recognition of patient race in medical imaging: a modelling
       study. Lancet Digital Health 4(6):e406-e414, 2022.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "PROBES",
    "ProbeResult",
    "ResampledEstimate",
    "rank_auroc",
    "standardise",
    "attribute_probe",
    "out_of_fold_scores",
    "patient_folds",
]

PROBES: tuple[str, ...] = ("ridge", "logistic")
RIDGE_ALPHA = 1.0


def patient_folds(
    levels: np.ndarray, patients: np.ndarray, *, n_folds: int = 5, random_state: int = 0
) -> np.ndarray:
    """Fold of each sample: patients are never split, levels are spread over the folds.

    Each patient gets the most common level of its images; patients are shuffled, sorted
    by that level and dealt to the folds in turn, so every fold holds about the same share
    of each level (a stratified group k-fold in O(n log n)).

    Parameters
    ----------
    levels : ndarray of int of shape (n_samples,)
    patients : ndarray of int of shape (n_samples,)
        Patient code of each sample.
    n_folds : int
    random_state : int

    Returns
    -------
    ndarray of int of shape (n_samples,)

    Examples
    --------
    >>> f = patient_folds(np.array([0, 0, 1, 1, 0, 1]), np.array([0, 0, 1, 2, 3, 4]), n_folds=2)
    >>> bool(f[0] == f[1])  # one patient, one fold
    True
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise param_error("n_folds", "patient_folds", "an int >= 2", n_folds)
    lv = np.asarray(levels, dtype=np.int64)
    pt = np.asarray(patients, dtype=np.int64)
    n_pat = int(pt.max()) + 1 if pt.size else 0
    # Most common level per patient: count (patient, level) pairs and take the argmax.
    n_lv = int(lv.max()) + 1 if lv.size else 1
    table = np.zeros((n_pat, n_lv), dtype=np.int64)
    np.add.at(table, (pt, lv), 1)
    pat_level = table.argmax(axis=1)
    rng = np.random.default_rng(random_state)
    order = rng.permutation(n_pat)
    order = order[np.argsort(pat_level[order], kind="mergesort")]
    fold_of_patient = np.empty(n_pat, dtype=np.int64)
    fold_of_patient[order] = (np.arange(n_pat) + rng.integers(n_folds)) % n_folds
    return fold_of_patient[pt]


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance (constant columns left at zero).

    The probes standardise the features once over all audited images: a fixed linear map
    that uses no attribute and no label, so it leaks nothing between folds.
    """
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def _ridge_oof(z: np.ndarray, t: np.ndarray, folds: np.ndarray, alpha: float) -> np.ndarray:
    """Out-of-fold scores of scikit-learn's ``RidgeClassifier(alpha)`` on ``z``.

    Targets ``t`` are ±1 per level; the intercept is fitted by centring on the training
    folds, and ``alpha`` penalises the coefficients only. Each fold's training Gram matrix
    is the total minus the fold's own, so one pass over the rows serves every fold.
    """
    k = int(folds.max()) + 1
    d = z.shape[1]
    parts = [np.flatnonzero(folds == f) for f in range(k)]
    n_f = np.array([len(p) for p in parts], dtype=np.float64)
    s_f = np.stack([z[p].sum(axis=0) for p in parts])
    g_f = np.stack([z[p].T @ z[p] for p in parts])
    u_f = np.stack([z[p].T @ t[p] for p in parts])
    ts_f = np.stack([t[p].sum(axis=0) for p in parts])
    out = np.zeros((len(z), t.shape[1]))
    eye = alpha * np.eye(d)
    for f, p in enumerate(parts):
        n_tr = n_f.sum() - n_f[f]
        if len(p) == 0 or n_tr < 2:
            continue
        m = (s_f.sum(0) - s_f[f]) / n_tr
        tbar = (ts_f.sum(0) - ts_f[f]) / n_tr
        gram = g_f.sum(0) - g_f[f] - n_tr * np.outer(m, m)
        cross = u_f.sum(0) - u_f[f] - n_tr * np.outer(m, tbar)
        coef = np.linalg.solve(gram + eye, cross)
        out[p] = (z[p] - m) @ coef + tbar
    return out


def out_of_fold_scores(
    x: np.ndarray,
    levels: np.ndarray,
    folds: np.ndarray,
    *,
    n_levels: int,
    probe: str = "ridge",
) -> tuple[np.ndarray, bool]:
    """Scores of a linear probe for each sample from the model fitted on the other folds.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Features, standardised here over all samples.
    levels : ndarray of int of shape (n_samples,)
    folds : ndarray of int of shape (n_samples,)
        Fold 0..K-1 of each sample.
    n_levels : int
    probe : {"ridge", "logistic"}
        ``"ridge"``: scikit-learn's ``RidgeClassifier(alpha=1)``, in closed form (fast);
        ``"logistic"``: ``LogisticRegression(C=1)``.

    Returns
    -------
    scores : ndarray of shape (n_samples, n_levels), or (n_samples,) for two levels
    converged : bool
        False when a logistic fit stopped at its iteration limit.
    """
    if probe not in PROBES:
        raise param_error("probe", "out_of_fold_scores", f"one of {PROBES}", probe)
    n = len(levels)
    binary = n_levels == 2
    out = np.zeros(n) if binary else np.zeros((n, n_levels))
    converged = True
    if x.shape[1] == 0:
        return out, converged
    z = standardise(np.asarray(x, dtype=np.float64))
    if probe == "ridge":
        targets = np.where(np.arange(n_levels)[None, :] == levels[:, None], 1.0, -1.0)
        scores = _ridge_oof(z, targets[:, 1:] if binary else targets, folds, RIDGE_ALPHA)
        return (scores[:, 0] if binary else scores), converged
    for f in np.unique(folds):
        te = folds == f
        tr = ~te
        if len(np.unique(levels[tr])) < 2:
            continue
        sc, ok = _logistic_scores(z[tr], levels[tr], z[te], n_levels)
        converged = converged and ok
        out[te] = sc
    return out, converged


def rank_auroc(positive: np.ndarray, score: np.ndarray, strata: np.ndarray | None = None) -> float:
    """AUROC from ranks (ties count one half), counting only pairs within each stratum.

    Without strata this is the ordinary AUROC (scikit-learn's ``roc_auc_score``); with
    them, each stratum's AUROC weighted by its number of (positive, negative) pairs. NaN
    when no stratum has both classes. Vectorised: one sort.

    Examples
    --------
    >>> rank_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    pos = np.asarray(positive).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n = len(s)
    st = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    order = np.lexsort((s, st))
    s_o, st_o, p_o = s[order], st[order], pos[order]
    new_st = np.r_[True, st_o[1:] != st_o[:-1]]
    new_grp = new_st | np.r_[True, s_o[1:] != s_o[:-1]]
    st_id, grp_id = np.cumsum(new_st) - 1, np.cumsum(new_grp) - 1
    first_in_st = np.flatnonzero(new_st)
    first_in_grp = np.flatnonzero(new_grp)
    size = np.diff(np.r_[first_in_grp, n])
    # 1-based rank within the stratum, averaged over ties.
    grp_rank = first_in_grp - first_in_st[st_id[first_in_grp]] + (size + 1) / 2
    rank = grp_rank[grp_id]
    n_st = len(first_in_st)
    r_pos = np.bincount(st_id, weights=rank * p_o, minlength=n_st)
    n_pos = np.bincount(st_id, weights=p_o.astype(np.float64), minlength=n_st)
    n_neg = np.bincount(st_id, minlength=n_st) - n_pos
    pairs = n_pos * n_neg
    ok = pairs > 0
    if not ok.any():
        return float("nan")
    u = r_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2
    return float(u.sum() / pairs[ok].sum())


def _logistic_scores(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, n_levels: int
) -> tuple[np.ndarray, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=1.0, max_iter=500).fit(x_tr, y_tr)
    ok = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    proba = model.predict_proba(x_te)
    if n_levels == 2:
        return (proba[:, 1] if proba.shape[1] == 2 else np.zeros(len(x_te))), ok
    full = np.zeros((len(x_te), n_levels))
    full[:, model.classes_] = proba
    return full, ok


@dataclass(frozen=True, eq=False)
class ResampledEstimate:
    """A point estimate and its values on patient bootstrap resamples (refitted each time).

    The interval is Wald's with the bootstrap standard error, on the logit scale for a
    bounded quantity (an AUROC); replicates of two estimates made on the same resamples
    are paired, so their difference has the right interval.

    Examples
    --------
    >>> e = ResampledEstimate(0.8, np.array([0.75, 0.8, 0.85, 0.78, 0.82]))
    >>> lo, hi = e.ci(0.95)
    >>> 0.7 < lo < 0.8 < hi < 0.9
    True
    """

    value: float
    replicates: np.ndarray
    bounded: bool = True

    def __sub__(self, other: ResampledEstimate) -> ResampledEstimate:
        return ResampledEstimate(
            self.value - other.value, self.replicates - other.replicates, bounded=False
        )

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Wald interval with the bootstrap standard error (NaN when undefined)."""
        from statistics import NormalDist

        r = self.replicates[np.isfinite(self.replicates)]
        if not np.isfinite(self.value) or r.size < 2:
            return (float("nan"), float("nan"))
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        if not self.bounded:
            se = float(np.std(r, ddof=1))
            return (self.value - z * se, self.value + z * se)
        eps = 1e-4
        logit = lambda a: np.log(np.clip(a, eps, 1 - eps) / (1 - np.clip(a, eps, 1 - eps)))  # noqa: E731
        se = float(np.std(logit(r), ddof=1))
        centre = float(logit(np.asarray(self.value)))
        lo, hi = centre - z * se, centre + z * se
        return (float(1 / (1 + np.exp(-lo))), float(1 / (1 + np.exp(-hi))))


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """What :func:`attribute_probe` returns for one attribute.

    Attributes
    ----------
    probe : ResampledEstimate
        Macro one-vs-rest AUROC of the probe on the features (out of fold).
    control : ResampledEstimate
        The same from the metadata control columns.
    difference : ResampledEstimate
        ``probe - control``, paired over the same images and resamples.
    probe_within, control_within : ResampledEstimate
        Both, counting only pairs of images from the same stratum (NaN without strata).
    control_columns : tuple of str
        The metadata columns the control used.
    stratify_by : str or None
    n_images : int
        Images with a known level that entered.
    converged : bool
        False when a logistic fit hit its iteration limit.
    """

    probe: ResampledEstimate
    control: ResampledEstimate
    difference: ResampledEstimate
    probe_within: ResampledEstimate
    control_within: ResampledEstimate
    control_columns: tuple[str, ...]
    stratify_by: str | None
    n_images: int
    converged: bool = True

    def beyond_metadata(self, confidence: float = 0.95) -> bool:
        """True when the CI of ``probe - control`` lies above zero."""
        lo, _ = self.difference.ci(confidence)
        return bool(np.isfinite(lo) and lo > 0)


def _macro_auroc(levels: np.ndarray, scores: np.ndarray, strata: np.ndarray | None) -> float:
    """Macro one-vs-rest AUROC (within strata when given); NaN-free levels only."""
    if scores.ndim == 1:
        return rank_auroc(levels == 1, scores, strata)
    vals = [rank_auroc(levels == j, scores[:, j], strata) for j in range(scores.shape[1])]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _cv_aurocs(
    x: np.ndarray,
    ctl: np.ndarray | None,
    lv: np.ndarray,
    pt: np.ndarray,
    strata: np.ndarray | None,
    *,
    n_levels: int,
    n_folds: int,
    probe: str,
    seed: int,
) -> tuple[np.ndarray, bool]:
    """[probe, control, probe within, control within] AUROCs of one cross-validation."""
    folds = patient_folds(lv, pt, n_folds=n_folds, random_state=seed)
    scores, ok = out_of_fold_scores(x, lv, folds, n_levels=n_levels, probe=probe)
    out = np.full(4, np.nan)
    out[0] = _macro_auroc(lv, scores, None)
    if strata is not None:
        out[2] = _macro_auroc(lv, scores, strata)
    if ctl is not None:
        c_scores, ok2 = out_of_fold_scores(ctl, lv, folds, n_levels=n_levels, probe=probe)
        ok = ok and ok2
        out[1] = _macro_auroc(lv, c_scores, None)
        if strata is not None:
            out[3] = _macro_auroc(lv, c_scores, strata)
    return out, ok


def _resample_rows(
    pt: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows and new patient codes of each patient-bootstrap resample (vectorised)."""
    order = np.argsort(pt, kind="mergesort")
    counts = np.bincount(pt)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    n_pat = len(counts)
    for _ in range(n_resamples):
        draw = rng.integers(0, n_pat, n_pat)
        c = counts[draw]
        new_pt = np.repeat(np.arange(n_pat), c)
        offset = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        yield order[np.repeat(starts[draw], c) + offset], new_pt


def attribute_probe(
    features: np.ndarray,
    levels: np.ndarray,
    patients: np.ndarray,
    *,
    n_levels: int,
    control: np.ndarray | None = None,
    control_columns: tuple[str, ...] = (),
    strata: np.ndarray | None = None,
    stratify_by: str | None = None,
    n_folds: int = 5,
    probe: str = "ridge",
    n_resamples: int = 50,
    random_state: int = 0,
) -> ProbeResult:
    """Cross-validated linear probe of an attribute on frozen features, with its controls.

    The AUROCs are out of fold (pooled over the folds). Their CIs come from a patient
    bootstrap that repeats the whole cross-validation on every resample (a resampled
    patient brings all its images, and its copies stay in one fold), so they include the
    variability of the fitted probe, which intervals on fixed out-of-fold scores miss
    (those under-cover by about ten points in simulation).

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        Penultimate-layer features.
    levels : ndarray of int of shape (n_samples,)
        Attribute level 0..n_levels-1 of each sample (no missing values).
    patients : ndarray of int of shape (n_samples,)
        Patient code: folds never split a patient, resamples draw patients.
    n_levels : int
    control : ndarray of shape (n_samples, n_columns), optional
        Metadata design matrix (:func:`~medaudit.shortcuts._attributes.control_matrix`).
    control_columns : tuple of str
    strata : ndarray of shape (n_samples,), optional
        Stratum of each sample (e.g. its site) for the within-stratum AUROCs.
    stratify_by : str, optional
        Name of the stratifying column (for the report).
    n_folds : int, default 5
    probe : {"ridge", "logistic"}
    n_resamples : int, default 50
        Bootstrap resamples behind the CIs (each refits every fold).
    random_state : int
        Seeds the folds and the resamples: two calls with the same seed on the same
        patients use the same resamples (paired comparisons of two models).

    Returns
    -------
    ProbeResult

    References
    ----------
    .. [1] Bates S, Hastie T, Tibshirani R. Cross-validation: what does it estimate and
           how well does it do it? JASA 119(546):1434-1445, 2024.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lv = rng.integers(0, 2, 300)
    >>> x = rng.normal(size=(300, 5)) + 1.5 * lv[:, None]
    >>> r = attribute_probe(x, lv, np.arange(300), n_levels=2, n_resamples=20)
    >>> bool(r.probe.value > 0.9), bool(np.isnan(r.control.value))
    (True, True)
    """
    x = np.asarray(features, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.int64)
    pt = np.asarray(patients, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(lv) or len(pt) != len(lv):
        raise InvalidInputError(
            "attribute_probe: features must be (n_samples, n_features) and levels and "
            f"patients of length n_samples; got {x.shape}, {lv.shape}, {pt.shape}."
        )
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise param_error("n_resamples", "attribute_probe", "an int >= 0", n_resamples)
    pt = np.unique(pt, return_inverse=True)[1].ravel()
    ctl = control if control is not None and control.shape[1] > 0 else None
    st = None if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
    kw: dict[str, Any] = {"n_levels": n_levels, "n_folds": n_folds, "probe": probe}
    point, ok = _cv_aurocs(x, ctl, lv, pt, st, seed=random_state, **kw)
    rng = np.random.default_rng([random_state, 7])
    reps = np.full((max(0, int(n_resamples)), 4), np.nan)
    for b, (rows, new_pt) in enumerate(_resample_rows(pt, reps.shape[0], rng)):
        if len(np.unique(lv[rows])) < 2:
            continue
        reps[b], ok_b = _cv_aurocs(
            x[rows],
            None if ctl is None else ctl[rows],
            lv[rows],
            new_pt,
            None if st is None else st[rows],
            seed=random_state + 1 + b,
            **kw,
        )
        ok = ok and ok_b
    est = [ResampledEstimate(float(point[j]), reps[:, j]) for j in range(4)]
    return ProbeResult(
        probe=est[0],
        control=est[1],
        difference=est[0] - est[1],
        probe_within=est[2],
        control_within=est[3],
        control_columns=tuple(control_columns) if ctl is not None else (),
        stratify_by=stratify_by,
        n_images=len(lv),
        converged=ok,
    )
