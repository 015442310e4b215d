"""Model performance: AUROC with its CI, operating point, confusion matrix, calibration, per site.

Every headline number carries a 95% bootstrap CI (whole patients resampled within each
site, and within their class profile for AUROC, sensitivity and specificity; see
:func:`medaudit.stats.resampling_strata`). The operating point
(:mod:`medaudit.operating_point`) is explicit: sensitivity, specificity and the false
negative rate are reported at it, and an operating point that flags almost every image
or almost none is a finding of its own, not a perfect sensitivity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medaudit._errors import param_error
from medaudit.inference import Predictions
from medaudit.operating_point import (
    OperatingPoint,
    choose_operating_point,
    extreme_selection,
    operating_point_from_policy,
)
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Check, Figure, Policy, RootCause, Section, Threshold, site_cause
from medaudit.report._format import format_value_ci
from medaudit.stats import (
    bootstrap_counts,
    bootstrap_interval,
    calibration_bins,
    calibration_error_interval,
    percentile_ci,
    pseudo_replicates,
    range_interval,
    resampling_strata,
    weighted_auroc,
)

__all__ = ["CHECKS", "SPEC", "audit", "calibration_curve", "performance_section"]

REFERENCES = [
    "Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating "
    "characteristic (ROC) curve. Radiology 1982;143:29-36.",
    "Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural networks. ICML 2017.",
    "Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993.",
]


# The performance audit's checks and built-in thresholds.
CHECKS: dict[str, Threshold] = {
    "performance.auroc": Threshold(">=", 0.75, "major", help="AUROC on the audited data."),
    "performance.ece": Threshold(
        "<=", 0.10, "minor", help="Expected calibration error of the positive-class score."
    ),
    "performance.site_auroc_gap": Threshold(
        "<=", 0.10, "major", help="Largest AUROC difference between sites."
    ),
    "performance.sensitivity": Threshold(
        ">=", 0.80, "major", help="Sensitivity (true positive rate) at the operating point."
    ),
    "performance.operating_point": Threshold(
        ">=",
        0.02,
        "major",
        help="Share of images on the rarer side of the operating threshold: below it, the "
        "threshold flags (almost) every image or none.",
    ),
}


def calibration_curve(y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table: per bin, n, mean predicted probability, observed positive rate."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    b = calibration_bins(p, n_bins)
    df = pd.DataFrame({"bin": b, "y": y, "p": p})
    g = df.groupby("bin").agg(
        n=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean")
    )
    g = g.reindex(range(n_bins))
    g.insert(0, "bin_low", np.arange(n_bins) / n_bins)
    g.insert(1, "bin_high", (np.arange(n_bins) + 1) / n_bins)
    g["n"] = g["n"].fillna(0).astype(int)
    return g.reset_index(drop=True)


@dataclass(frozen=True)
class _Boot:
    """Resampling counts: ``W`` by class profile (class-conditional metrics), ``W_mix`` not."""

    W: np.ndarray
    W_mix: np.ndarray
    confidence: float
    clusters: np.ndarray | None

    def ci(
        self, point: float, samples: np.ndarray, kind: str = "logit", n: float | None = None
    ) -> tuple[float, float]:
        """Wilson-with-design-effect (``kind="proportion"``) or logit-basic interval."""
        return bootstrap_interval(point, samples, kind=kind, n=n, confidence=self.confidence)


def _resampling(
    y: np.ndarray, meta: pd.DataFrame, n_boot: int, seed: int, confidence: float
) -> _Boot:
    """Whole patients within each site; by class profile for class-conditional metrics."""
    clusters = meta["patient_id"].to_numpy() if "patient_id" in meta.columns else None
    site = meta["site"].astype(str).to_numpy() if "site" in meta.columns else None
    counts = [
        bootstrap_counts(
            resampling_strata(
                n_samples=len(y), groups=site, labels=y, by_class=by_class, clusters=clusters
            ),
            n_boot=n_boot,
            random_state=np.random.default_rng([seed, by_class]),
            clusters=clusters,
            rescaled=True,
        )
        for by_class in (True, False)
    ]
    return _Boot(counts[0], counts[1], confidence, clusters)


def _rate(W: np.ndarray, num_mask: np.ndarray, den_mask: np.ndarray) -> np.ndarray:
    den = W @ den_mask.astype(np.float64)
    num = W @ (num_mask & den_mask).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def performance_section(
    predictions: Predictions,
    *,
    policy: Policy | None = None,
    operating_point: OperatingPoint | None = None,
    operating_threshold: float | None = None,
    calibration: Predictions | None = None,
    n_bins: int = 10,
) -> Section:
    """Model performance with 95% CIs: the report's "Model performance" section.

    Parameters
    ----------
    predictions : Predictions
        One clean pass of the model over the audited cohort.
    policy : Policy, optional
        Thresholds (``performance.*``), bootstrap settings and the operating point
        (``operating_point``, ``operating_threshold``, ``target_sensitivity``).
    operating_point : OperatingPoint, optional
        Overrides the policy's operating point.
    operating_threshold : float, optional
        Shorthand for a fixed operating point.
    calibration : Predictions, optional
        The calibration split a Youden or target-sensitivity operating point is chosen on.
    n_bins : int
        Calibration bins.

    Returns
    -------
    Section
        Named ``"performance"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> s = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0, 1)
    >>> p = Predictions(np.c_[1 - s, s], y, np.zeros(400), None, pd.DataFrame(index=range(400)))
    >>> sec = performance_section(p, policy=Policy.from_mapping({"settings": {"n_bootstrap": 50}}))
    >>> [c.id for c in sec.checks][:3]
    ['performance.auroc', 'performance.operating_point', 'performance.sensitivity']
    """
    policy = policy or Policy.default()
    if not isinstance(predictions, Predictions):
        raise param_error(
            "predictions", "performance_section", "a Predictions", type(predictions).__name__
        )
    if operating_threshold is not None:
        if not 0 < operating_threshold < 1:
            raise param_error(
                "operating_threshold",
                "performance_section",
                "a float in (0, 1)",
                operating_threshold,
            )
        operating_point = choose_operating_point(
            [], [], method="fixed", threshold=operating_threshold
        )
    if not predictions.is_binary:
        return _multiclass_section(predictions, policy)
    if operating_point is None:
        operating_point = operating_point_from_policy(predictions, policy, calibration)
    operating_threshold = operating_point.threshold
    y = predictions.labels.astype(bool)
    s = predictions.score
    meta = predictions.meta
    n_boot = int(policy.setting("n_bootstrap"))
    conf = float(policy.setting("confidence"))
    seed = int(policy.setting("seed"))
    min_class = int(policy.setting("min_class_count"))
    boot = _resampling(y.astype(int), meta, n_boot, seed, conf)
    clusters = boot.clusters
    ones = np.ones((1, len(y)))
    pred_pos = s >= operating_threshold

    checks: list[Check] = []
    rows = []

    def metric(
        name: str, point: float, samples: np.ndarray, n: float | None = None
    ) -> tuple[float, tuple[float, float]]:
        ci = boot.ci(point, samples, "logit" if n is None else "proportion", n)
        rows.append({"metric": name, "value": point, "ci_low": ci[0], "ci_high": ci[1]})
        return point, ci

    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if min(n_pos, n_neg) < min_class:
        checks.append(
            policy.skipped(
                "performance.auroc",
                "AUROC on the audited cohort",
                f"too few images of one class ({n_pos} positive, {n_neg} negative; "
                f"minimum {min_class} each)",
            )
        )
        auc, auc_ci = float("nan"), (float("nan"), float("nan"))
    else:
        auc, auc_ci = metric(
            "AUROC", float(weighted_auroc(y, s, ones)[0]), weighted_auroc(y, s, boot.W)
        )
        checks.append(
            policy.judge(
                "performance.auroc",
                "AUROC on the audited cohort",
                auc,
                ci=auc_ci,
                advice="The model does not separate diseased from healthy images well enough: "
                "train longer or on more data, or check the data integrity section first.",
            )
        )
    sens, sens_ci = metric(
        "Sensitivity (TPR)", float(_rate(ones, pred_pos, y)[0]), _rate(boot.W, pred_pos, y), n_pos
    )
    spec, spec_ci = metric(
        "Specificity (TNR)",
        float(_rate(ones, ~pred_pos, ~y)[0]),
        _rate(boot.W, ~pred_pos, ~y),
        n_neg,
    )
    metric(
        "False negative rate",
        float(_rate(ones, ~pred_pos, y)[0]),
        _rate(boot.W, ~pred_pos, y),
        n_pos,
    )
    n_flag = int(pred_pos.sum())
    metric("PPV", float(_rate(ones, y, pred_pos)[0]), _rate(boot.W_mix, y, pred_pos), n_flag)
    metric(
        "NPV",
        float(_rate(ones, ~y, ~pred_pos)[0]),
        _rate(boot.W_mix, ~y, ~pred_pos),
        len(y) - n_flag,
    )
    flagged = float(pred_pos.mean()) if len(y) else float("nan")
    metric(
        "Flagged fraction",
        flagged,
        _rate(boot.W_mix, pred_pos, np.ones(len(y), dtype=bool)),
        len(y),
    )
    extreme = extreme_selection(flagged) if np.isfinite(flagged) else None
    checks += _operating_point_checks(
        policy, operating_point, flagged, extreme, sens, sens_ci, int((y & ~pred_pos).sum()), n_pos
    )
    # Debiased ECE with its basic bootstrap interval (medaudit.stats.calibration_error).
    ece, ece_ci = calibration_error_interval(
        y, s, boot.W_mix, n_bins=n_bins, clusters=clusters, confidence=conf
    )
    rows.append({"metric": "ECE", "value": ece, "ci_low": ece_ci[0], "ci_high": ece_ci[1]})
    checks.append(
        policy.judge(
            "performance.ece",
            f"Expected calibration error ({n_bins} bins)",
            ece,
            ci=ece_ci,
            advice="Scores are not calibrated probabilities: recalibrate (temperature or "
            "isotonic scaling on a validation split) before reading them as risks.",
        )
    )
    overall = pd.DataFrame(rows)
    overall.insert(1, "n", len(y))

    cm = pd.DataFrame(
        {
            "": ["actual positive", "actual negative"],
            "predicted positive": [int((y & pred_pos).sum()), int((~y & pred_pos).sum())],
            "predicted negative": [int((y & ~pred_pos).sum()), int((~y & ~pred_pos).sum())],
        }
    )
    calib = calibration_curve(y, s, n_bins=n_bins)
    op_table = pd.DataFrame([{**operating_point.to_record(), "flagged_fraction": flagged}])
    tables = {
        "operating_point": op_table,
        "overall": overall,
        "confusion_matrix": cm,
        "calibration": calib,
    }

    site_table, site_check = _per_site(predictions, boot, policy, min_class, pred_pos)
    if site_table is not None:
        tables["per_site"] = site_table
    if site_check is not None:
        checks.append(site_check)

    figures = _figures(y, s, boot, operating_point, auc, auc_ci, pred_pos, predictions.meta)
    notes = [
        f"95% CIs: bootstrap with {n_boot} resamples of whole "
        + ("patients" if clusters is not None else "images")
        + " within each site, and within class profile for AUROC, sensitivity and "
        "specificity; the ECE is debiased, with a basic bootstrap interval; the site "
        "AUROC gap's interval is simultaneous over every pair of sites.",
        "Calibration is shown for the positive-class probability in equal-width bins.",
        f"Operating point: {operating_point.description}.",
    ]
    if operating_point.on_audited_data:
        notes.append(
            f"The {operating_point.method} operating point was chosen on the audited images "
            "themselves (no calibration split was given), which flatters sensitivity and "
            "specificity; give a calibration split (--calibration-data) to choose it elsewhere."
        )
    summary = _summary_sentence(len(y), n_pos, auc, auc_ci, operating_point, sens, spec, extreme)
    return Section(
        name="performance",
        title="Model performance",
        summary=summary,
        tables=tables,
        figures=figures,
        checks=checks,
        notes=notes,
        references=REFERENCES,
        methods=(
            "AUROC (ties count one half); sensitivity, specificity, false negative rate, PPV "
            f"and NPV at the operating point ({operating_point.description}); the confusion "
            "matrix; a reliability table with the debiased expected calibration error; AUROC, "
            "sensitivity and specificity per acquisition site; every rate with a patient-level "
            "bootstrap 95% CI (Wilson with the bootstrap's design effect for rates, "
            "logit-scale basic for AUROC, basic for the ECE). The ROC band is the pointwise "
            "percentile band of the bootstrap ROC curves at each false positive rate."
        ),
        root_causes=_root_causes(checks, operating_point, flagged, extreme, site_table),
        table_titles=TABLE_TITLES,
    )


TABLE_TITLES = {
    "operating_point": "Operating point: how the threshold was chosen",
    "overall": "Performance on all audited images",
    "confusion_matrix": "Confusion matrix at the operating point",
    "calibration": "Calibration: predicted probability against observed rate, per bin",
    "per_site": "Performance per acquisition site",
}


def _operating_point_checks(
    policy: Policy,
    op: OperatingPoint,
    flagged: float,
    extreme: str | None,
    sens: float,
    sens_ci: tuple[float, float],
    n_missed: int,
    n_pos: int,
) -> list[Check]:
    rare = min(flagged, 1 - flagged) if np.isfinite(flagged) else float("nan")
    choose = (
        "Choose the operating point on a calibration split: --operating-point youden, or "
        "--operating-point sensitivity --target-sensitivity 0.9, with --calibration-data."
    )
    point = policy.judge(
        "performance.operating_point",
        f"Share of images on the rarer side of the operating threshold {op.threshold:.4g} "
        f"(it flags {flagged:.1%} of images)",
        rare,
        advice=f"The threshold {op.threshold:.4g} flags {flagged:.1%} of the images, so "
        f"sensitivity and specificity at it say nothing about the model. {choose}",
    )
    sens_check = policy.judge(
        "performance.sensitivity",
        f"Sensitivity at the operating point ({n_missed} of {n_pos} diseased images missed)",
        sens,
        ci=sens_ci,
        advice="The model misses too many diseased images at this operating point. If its "
        "AUROC is adequate, a lower threshold reaches the sensitivity the clinical use needs: "
        f"{choose} Otherwise the model itself must improve.",
    )
    if extreme is not None and sens_check.status != "skipped":
        why = (
            f"the operating point flags {extreme} image ({flagged:.1%}), so this sensitivity "
            "says nothing about the model"
        )
        sens_check = dataclasses.replace(sens_check, status="inconclusive", reason=why)
    return [point, sens_check]


def _summary_sentence(
    n: int,
    n_pos: int,
    auc: float,
    auc_ci: tuple[float, float],
    op: OperatingPoint,
    sens: float,
    spec: float,
    extreme: str | None,
) -> str:
    auc_txt = (
        "could not be computed"
        if not np.isfinite(auc)
        else f"{format_value_ci(auc, auc_ci)} (95% CI in brackets)"
    )
    text = f"On {n:,} images ({n_pos:,} with disease) the model's AUROC is {auc_txt}; "
    if extreme is not None:
        return text + (
            f"the operating threshold {op.threshold:.4g} flags {extreme} image, so its "
            "sensitivity and specificity carry no information: choose an operating point."
        )
    return text + (
        f"at the operating threshold {op.threshold:.4g} ({op.method}) it finds {sens:.0%} of "
        f"diseased images and clears {spec:.0%} of healthy ones."
    )


def _root_causes(
    checks: list[Check],
    op: OperatingPoint,
    flagged: float,
    extreme: str | None,
    site_table: pd.DataFrame | None,
) -> list[RootCause]:
    by = {c.id: c for c in checks}
    out = []
    if extreme is not None:
        out.append(
            RootCause(
                "operating_point",
                f"The operating point flags {extreme} image: choose one",
                ("performance.operating_point", "performance.sensitivity"),
                f"At the threshold {op.threshold:.4g} ({op.method}) the model flags "
                f"{flagged:.1%} of the audited images, so every threshold metric in this "
                "report (sensitivity, specificity, error-rate gaps between groups) describes "
                "the threshold, not the model.",
                by["performance.operating_point"].advice,
            )
        )
    elif "performance.sensitivity" in by:
        c = by["performance.sensitivity"]
        out.append(
            RootCause(
                "sensitivity",
                "The model misses diseased images at the operating point",
                ("performance.sensitivity",),
                f"Sensitivity at the threshold {op.threshold:.4g} ({op.method}) is "
                f"{format_value_ci(c.value, c.ci)}"
                + (f" ({c.description.split('(', 1)[1]}" if "(" in c.description else "")
                + (
                    f"; the policy asks for at least {c.threshold:g}."
                    if c.threshold is not None
                    else "."
                ),
                c.advice,
            )
        )
    if "performance.auroc" in by and by["performance.auroc"].value is not None:
        c = by["performance.auroc"]
        out.append(
            RootCause(
                "discrimination",
                "The model separates diseased from healthy images poorly",
                ("performance.auroc",),
                f"AUROC on all audited images is {format_value_ci(c.value, c.ci)}; the policy "
                f"asks for at least {c.threshold:g}.",
                c.advice,
            )
        )
    ece = by.get("performance.ece")
    if ece is not None and ece.value is not None:
        out.append(
            RootCause(
                "calibration",
                "Predicted probabilities do not match observed disease rates",
                ("performance.ece",),
                f"Expected calibration error is {format_value_ci(ece.value, ece.ci)} (the "
                f"policy asks for at most {ece.threshold:g}); see the reliability diagrams.",
                ece.advice,
            )
        )
    gap = by.get("performance.site_auroc_gap")
    if gap is not None and gap.value is not None and site_table is not None:
        out.append(_site_cause(gap, site_table))
    return out


def _site_cause(gap: Check, t: pd.DataFrame) -> RootCause:
    ok = t[t["status"] == "ok"]
    worst = ok.loc[ok["auroc"].idxmin()]
    others = ok[ok["site"] != worst["site"]]
    role = f" ({worst['split']})" if "split" in t.columns and worst["split"] else ""
    rng = (
        f"{others['auroc'].min():.3f}–{others['auroc'].max():.3f}"
        if len(others) > 1
        else f"{others['auroc'].iloc[0]:.3f}"
    )
    return RootCause(
        site_cause(str(worst["site"])),
        f"Performance drops at site {worst['site']}{role}",
        (gap.id,),
        f"AUROC at {worst['site']}{role} is "
        f"{format_value_ci(worst['auroc'], (worst['ci_low'], worst['ci_high']))} on "
        f"{int(worst['n']):,} images, against {rng} at the other sites (largest gap "
        f"{format_value_ci(gap.value, gap.ci)}).",
        gap.advice,
    )


def _site_roles(meta: pd.DataFrame, sites: np.ndarray) -> dict[str, str]:
    """What each site is in the split column (e.g. 'test' or 'external'), when known."""
    if "split" not in meta.columns:
        return {}
    roles = {}
    for site in np.unique(sites):
        vals = sorted(meta.loc[sites == site, "split"].astype(str).unique())
        roles[str(site)] = ", ".join(vals)
    return roles


def _per_site(
    predictions: Predictions, boot: _Boot, policy: Policy, min_class: int, pred_pos: np.ndarray
) -> tuple[pd.DataFrame | None, Check | None]:
    meta = predictions.meta
    if "site" not in meta.columns or meta["site"].nunique() < 2:
        return None, None
    y = predictions.labels.astype(bool)
    s = predictions.score
    min_n = int(policy.setting("min_group_size"))
    sites = meta["site"].astype(str).to_numpy()
    roles = _site_roles(meta, sites)
    rows = []
    aucs: dict[str, tuple[float, np.ndarray]] = {}
    nan = np.nan
    for site in sorted(np.unique(sites)):
        mask = sites == site
        n, npos = int(mask.sum()), int(y[mask].sum())
        row = {"site": site, "split": roles.get(site, ""), "n": n, "n_positive": npos}
        row.update(auroc=nan, ci_low=nan, ci_high=nan, sensitivity=nan)
        row.update(sensitivity_ci_low=nan, sensitivity_ci_high=nan, specificity=nan)
        row.update(specificity_ci_low=nan, specificity_ci_high=nan, status="ok", reason="")
        if n < min_n or min(npos, n - npos) < min_class:
            row["status"] = "skipped"
            row["reason"] = (
                f"group too small (n={n}, positives={npos}; minimum n={min_n} and "
                f"{min_class} per class)"
            )
        else:
            W = boot.W[:, mask]
            point = float(weighted_auroc(y[mask], s[mask], np.ones((1, n)))[0])
            samples = pseudo_replicates(
                "logit",
                np.array([point]),
                weighted_auroc(y[mask], s[mask], boot.W[:, mask])[:, None],
            )[:, 0]
            lo, hi = boot.ci(point, samples, "percentile")
            row.update(auroc=point, ci_low=lo, ci_high=hi)
            for name, num, den in (
                ("sensitivity", pred_pos[mask], y[mask]),
                ("specificity", ~pred_pos[mask], ~y[mask]),
            ):
                v = float(_rate(np.ones((1, n)), num, den)[0])
                c = boot.ci(v, _rate(W, num, den), "proportion", int(den.sum()))
                row.update({name: v, f"{name}_ci_low": c[0], f"{name}_ci_high": c[1]})
            aucs[site] = (point, samples)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not roles:
        table = table.drop(columns="split")
    desc = "Largest AUROC difference between acquisition sites"
    if len(aucs) < 2:
        return table, policy.skipped(
            "performance.site_auroc_gap", desc, "fewer than two sites large enough to compare"
        )
    names = list(aucs)
    # The best and worst sites are picked from the data: a simultaneous interval over
    # every pair of sites allows for it (medaudit.stats.range_interval).
    res = range_interval(
        np.array([aucs[k][0] for k in names]),
        np.stack([aucs[k][1] for k in names], axis=1),
        boot.confidence,
        bounds=(0.0, 1.0),
    )
    best, worst, gap, gap_ci = names[res.high], names[res.low], res.value, res.ci
    return table, policy.judge(
        "performance.site_auroc_gap",
        f"{desc} ({best} vs {worst})",
        gap,
        ci=gap_ci,
        advice=f"Performance drops at {worst}: check its acquisition profile and whether the "
        "model relies on site-specific cues (markers, scanner noise) before deploying there.",
    )


def _roc_band(
    y: np.ndarray, s: np.ndarray, W: np.ndarray, confidence: float, max_curves: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Pointwise percentile band of bootstrap ROC curves on a grid of false positive rates."""
    if W.shape[0] < 2 or not y.any() or y.all():
        return None
    grid = (
        np.unique(s)
        if np.unique(s).size <= 512
        else np.unique(np.quantile(s, np.linspace(0, 1, 513)))
    )
    idx = np.clip(np.searchsorted(grid, s, side="right") - 1, 0, len(grid) - 1)
    fgrid = np.linspace(0, 1, 101)
    curves = []
    for w in W[:max_curves]:
        pos = np.bincount(idx, weights=w * y, minlength=len(grid))[::-1].cumsum()
        neg = np.bincount(idx, weights=w * ~y, minlength=len(grid))[::-1].cumsum()
        if pos[-1] <= 0 or neg[-1] <= 0:
            continue
        tpr, fpr = np.r_[0, pos / pos[-1]], np.r_[0, neg / neg[-1]]
        curves.append(np.interp(fgrid, fpr, tpr))
    if len(curves) < 2:
        return None
    c = np.asarray(curves)
    a = (1 - confidence) / 2
    return fgrid, np.quantile(c, a, axis=0), np.quantile(c, 1 - a, axis=0)


def _figures(
    y: np.ndarray,
    s: np.ndarray,
    boot: _Boot,
    op: OperatingPoint,
    auc: float,
    auc_ci: tuple[float, float],
    pred_pos: np.ndarray,
    meta: pd.DataFrame,
) -> dict[str, Figure]:
    from sklearn.metrics import roc_curve

    from medaudit.report._plots import reliability_figure, roc_band_figure

    figs: dict[str, Figure] = {}
    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, s)
        point = (float(pred_pos[~y].mean()), float(pred_pos[y].mean()))
        figs["roc"] = roc_band_figure(
            fpr,
            tpr,
            _roc_band(y, s, boot.W, boot.confidence),
            point=point,
            point_label=f"(score ≥ {op.threshold:.3g}, {op.method})",
            auroc_text=f"AUROC {format_value_ci(auc, auc_ci)}",
        )
    panels = {"all images": (y, s)}
    if "site" in meta.columns and meta["site"].nunique() >= 2:
        sites = meta["site"].astype(str).to_numpy()
        for site in sorted(np.unique(sites)):
            panels[f"site {site}"] = (y[sites == site], s[sites == site])
    figs["reliability"] = reliability_figure(panels, title="Reliability: all images and each site")
    return figs


def _multiclass_section(predictions: Predictions, policy: Policy) -> Section:
    """One-vs-rest AUROC per class with CIs, and the macro average."""
    y = predictions.labels
    n_boot = int(policy.setting("n_bootstrap"))
    conf = float(policy.setting("confidence"))
    W = _resampling(y, predictions.meta, n_boot, int(policy.setting("seed")), conf).W
    rows, samples_all = [], []
    for k, name in enumerate(predictions.class_names):
        yk = y == k
        point = float(weighted_auroc(yk, predictions.scores[:, k], np.ones((1, len(y))))[0])
        samples = weighted_auroc(yk, predictions.scores[:, k], W)
        samples_all.append(samples)
        lo, hi = bootstrap_interval(point, samples, kind="logit", confidence=conf)
        rows.append(
            {
                "class": name,
                "n_positive": int(yk.sum()),
                "auroc": point,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    table = pd.DataFrame(rows)
    macro = float(np.nanmean(table["auroc"]))
    macro_ci = percentile_ci(np.nanmean(np.stack(samples_all), axis=0), conf)
    check = policy.judge(
        "performance.auroc",
        "Macro one-vs-rest AUROC",
        macro,
        ci=macro_ci,
        advice="Some classes are poorly separated: see the per-class table.",
    )
    return Section(
        name="performance",
        title="Model performance",
        summary=f"Macro one-vs-rest AUROC over {len(rows)} classes is {macro:.2f} "
        f"(95% CI {macro_ci[0]:.2f}–{macro_ci[1]:.2f}).",
        tables={"per_class": table},
        checks=[check],
        references=REFERENCES,
        methods="One-vs-rest AUROC per class with stratified bootstrap 95% CIs; macro average.",
    )


def audit(ctx: AuditContext) -> Section:
    """AUROC, operating point, calibration and per-site AUROC, each with a 95% CI."""
    op = None
    if ctx.predictions.is_binary:
        op = operating_point_from_policy(ctx.predictions, ctx.policy, ctx.calibration)
    return performance_section(ctx.predictions, policy=ctx.policy, operating_point=op)


SPEC = register_audit(
    AuditSpec(
        name="performance",
        title="how well the model discriminates and how calibrated it is, overall and per site",
        audit=audit,
        checks=CHECKS,
    )
)
