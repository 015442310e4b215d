"""Model performance: AUROC with its CI, operating point, confusion matrix, calibration, per site.

Every headline number carries a 95% bootstrap CI (whole patients resampled within each
site, and within their class profile for AUROC, sensitivity and specificity; see
:func:`medaudit.stats.resampling_strata`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medaudit._errors import param_error
from medaudit.inference import Predictions
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Check, Figure, Policy, Section, Threshold
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
        "<=", 0.10, "minor", help="Largest AUROC difference between sites."
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
    operating_threshold: float = 0.5,
    n_bins: int = 10,
) -> Section:
    """Model performance with 95% CIs: the report's "Model performance" section.

    Parameters
    ----------
    predictions : Predictions
        One clean pass of the model over the audited cohort.
    policy : Policy, optional
        Thresholds (``performance.auroc``, ``performance.ece``,
        ``performance.site_auroc_gap``) and bootstrap settings.
    operating_threshold : float
        Positive-class score at or above which an image is called positive.
    n_bins : int
        Calibration bins.

    Returns
    -------
    Section
        Named ``"performance"``.
    """
    policy = policy or Policy.default()
    if not isinstance(predictions, Predictions):
        raise param_error(
            "predictions", "performance_section", "a Predictions", type(predictions).__name__
        )
    if not 0 < operating_threshold < 1:
        raise param_error(
            "operating_threshold", "performance_section", "a float in (0, 1)", operating_threshold
        )
    if not predictions.is_binary:
        return _multiclass_section(predictions, policy)
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
        auc = float("nan")
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
    sens, _ = metric(
        "Sensitivity (TPR)", float(_rate(ones, pred_pos, y)[0]), _rate(boot.W, pred_pos, y), n_pos
    )
    spec, _ = metric(
        "Specificity (TNR)",
        float(_rate(ones, ~pred_pos, ~y)[0]),
        _rate(boot.W, ~pred_pos, ~y),
        n_neg,
    )
    n_flag = int(pred_pos.sum())
    metric("PPV", float(_rate(ones, y, pred_pos)[0]), _rate(boot.W_mix, y, pred_pos), n_flag)
    metric(
        "NPV",
        float(_rate(ones, ~y, ~pred_pos)[0]),
        _rate(boot.W_mix, ~y, ~pred_pos),
        len(y) - n_flag,
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
    tables = {"overall": overall, "confusion_matrix": cm, "calibration": calib}

    site_table, site_check = _per_site(predictions, boot, policy, min_class)
    if site_table is not None:
        tables["per_site"] = site_table
    if site_check is not None:
        checks.append(site_check)

    figures = _figures(y, s, calib, site_table)
    auc_txt = (
        "could not be computed"
        if not np.isfinite(auc)
        else (
            f"{auc:.2f} (95% CI {overall.iloc[0]['ci_low']:.2f}–{overall.iloc[0]['ci_high']:.2f})"
        )
    )
    summary = (
        f"On {len(y)} images ({n_pos} with disease) the model's AUROC is {auc_txt}; at the "
        f"operating threshold {operating_threshold:g} it finds {sens:.0%} of diseased images "
        f"and clears {spec:.0%} of healthy ones."
    )
    return Section(
        name="performance",
        title="Model performance",
        summary=summary,
        tables=tables,
        figures=figures,
        checks=checks,
        notes=[
            f"95% CIs: percentile bootstrap with {n_boot} resamples of whole "
            + ("patients" if clusters is not None else "images")
            + " within each site, and within class profile for AUROC, sensitivity and "
            "specificity; the ECE is debiased, with a basic bootstrap interval; the site "
            "AUROC gap's interval is simultaneous over every pair of sites.",
            "Calibration is shown for the positive-class probability in equal-width bins.",
        ],
        references=REFERENCES,
        methods=(
            "AUROC (ties count one half), sensitivity, specificity, PPV and NPV at the operating "
            "threshold, the confusion matrix, a reliability table with expected calibration "
            "error, and AUROC per acquisition site; every rate with a patient-level "
            "bootstrap 95% CI (Wilson with the bootstrap's design effect for rates, "
            "logit-scale basic for AUROC)."
        ),
    )


def _per_site(
    predictions: Predictions, boot: _Boot, policy: Policy, min_class: int
) -> tuple[pd.DataFrame | None, Check | None]:
    meta = predictions.meta
    if "site" not in meta.columns or meta["site"].nunique() < 2:
        return None, None
    y = predictions.labels.astype(bool)
    s = predictions.score
    min_n = int(policy.setting("min_group_size"))
    rows = []
    aucs: dict[str, tuple[float, np.ndarray]] = {}
    for site in sorted(meta["site"].astype(str).unique()):
        mask = meta["site"].astype(str).to_numpy() == site
        n, npos = int(mask.sum()), int(y[mask].sum())
        row = {
            "site": site,
            "n": n,
            "n_positive": npos,
            "auroc": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "status": "ok",
            "reason": "",
        }
        if n < min_n or min(npos, n - npos) < min_class:
            row["status"] = "skipped"
            row["reason"] = (
                f"group too small (n={n}, positives={npos}; minimum n={min_n} and "
                f"{min_class} per class)"
            )
        else:
            point = float(weighted_auroc(y[mask], s[mask], np.ones((1, n)))[0])
            samples = pseudo_replicates(
                "logit",
                np.array([point]),
                weighted_auroc(y[mask], s[mask], boot.W[:, mask])[:, None],
            )[:, 0]
            lo, hi = boot.ci(point, samples, "percentile")
            row.update(auroc=point, ci_low=lo, ci_high=hi)
            aucs[site] = (point, samples)
        rows.append(row)
    table = pd.DataFrame(rows)
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


def _figures(
    y: np.ndarray, s: np.ndarray, calib: pd.DataFrame, site_table: pd.DataFrame | None
) -> dict[str, Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figs: dict[str, Figure] = {}
    del site_table  # per-site AUROCs with CIs are in the table; one ROC curve keeps it legible
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.5, 3.4))
    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, s)
        ax1.plot(fpr, tpr, color="#1f5f8b", lw=2, label="all images")
    ax1.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
    ax1.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve")
    c = calib.dropna(subset=["mean_predicted"])
    ax2.plot([0, 1], [0, 1], ls="--", color="#999", lw=1, label="perfect calibration")
    ax2.plot(c["mean_predicted"], c["observed_rate"], marker="o", color="#b5452b", label="model")
    ax2.set(
        xlabel="Mean predicted probability",
        ylabel="Observed disease rate",
        title="Calibration",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    figs["roc_and_calibration"] = Figure.from_matplotlib(
        fig,
        alt="Left: ROC curve of the model on the audited cohort. Right: reliability diagram "
        "comparing mean predicted probability with the observed disease rate per bin.",
    )
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
    return performance_section(ctx.predictions, policy=ctx.policy)


SPEC = register_audit(
    AuditSpec(
        name="performance",
        title="how well the model discriminates and how calibrated it is, overall and per site",
        audit=audit,
        checks=CHECKS,
    )
)
