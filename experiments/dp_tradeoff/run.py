"""Private, fair and accurate? DP-SGD's cost in AUROC and fairness on synthetic hospitals.

    python experiments/dp_tradeoff/run.py            # the committed run (~15 min, 1 core)
    python experiments/dp_tradeoff/run.py --smoke    # a tiny run (CI)

The seeds' study (Tayebi Arasteh et al., "Private, fair and accurate: training
large-scale, privacy-preserving AI models in medical imaging", arXiv:2302.01622) trains
chest radiograph and abdominal CT models with DP-SGD and reports that DP lowers AUROC but
largely does not amplify unfairness (statistical parity difference, Pearson r of the
error with age, subgroup gaps). This script asks the same questions of medaudit's DP
training on the demo's synthetic hospitals (at 32 x 32), which plant a subgroup (female)
whose lesions are fainter, so a real gap with a known cause exists, and a site-marker
shortcut:

- epsilon in {1, 3, 8, inf} (inf = the same model, start, epochs and learning rate without
  DP, in shuffled batches of 64) x several seeds, and for the pretrained start epsilon = 0
  (the public weights alone, which have seen none of the hospitals' data);
- two starts: ``pretrained`` — weights pretrained without DP on a separate, smaller
  "public" population (other synthetic hospitals, seed 101), then trained privately on
  the hospitals' training split, the usual recipe for DP in imaging (Tramer & Boneh 2021);
  and ``scratch`` — random initialisation;
- per run, on the internal test split: AUROC with a patient-bootstrap 95% CI, the
  statistical parity difference (SPD) female - male at the operating point chosen on
  the validation split (Youden), Pearson r of |label - score| with age, and the subgroup
  AUROC gaps female - male and between the extreme age groups, and the calibration error
  (ECE; each with its CI, the same bootstrap resamples throughout) and the scores' SD.

Writes ``results.csv`` (one row per run), ``summary.md`` (per start and epsilon: mean over
seeds and the range) and ``dp_tradeoff.png`` into this folder, and a medaudit report into
``reports/dp_tradeoff/`` (index.html + audit.json).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaudit.data import Cohort, generate_hospitals
from medaudit.demo import DemoSettings
from medaudit.fairness import youden_threshold
from medaudit.inference import predict
from medaudit.models import build_model, train_model
from medaudit.privacy import train_private
from medaudit.report import Check, Report, Section
from medaudit.stats import (
    auroc,
    bootstrap_counts,
    percentile_ci,
    weighted_auroc,
    weighted_expected_calibration_error,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
INF = math.inf


@dataclass(frozen=True)
class Settings:
    """One run of the study (the defaults are the committed run)."""

    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0, INF)
    seeds: tuple[int, ...] = (0, 1, 2)
    starts: tuple[str, ...] = ("pretrained", "scratch")
    arch: str = "small_cnn_dp"
    image_size: int = 32
    patients_per_site: int = 260  # the demo's hospitals: 4 sites, one held out
    public_patients_per_site: int = 260  # 2 public sites
    public_epochs: int = 5
    epochs: int = 5
    batch_size: int = 256  # DP: expected (Poisson) batch; larger batches mean less noise
    lr: float = 3e-3
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    n_boot: int = 500

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            epsilons=(8.0, INF),
            seeds=(0,),
            patients_per_site=40,
            public_patients_per_site=20,
            public_epochs=1,
            epochs=1,
            batch_size=32,
            image_size=16,
            n_boot=50,
            accountant="rdp",
        )


# -------------------------------------------------------------------------------- training
def pretrained_state(s: Settings, val: Cohort) -> dict[str, torch.Tensor]:
    """Weights learnt without DP on a separate 'public' population (2 other hospitals)."""
    public = generate_hospitals(
        n_sites=2,
        patients_per_site=s.public_patients_per_site,
        image_size=s.image_size,
        seed=101,
        heldout_site=None,
    )
    model = build_model(s.arch, random_state=0)
    train_model(model, public, None, epochs=s.public_epochs, lr=3e-3, seed=0)
    return copy.deepcopy(model.state_dict())


def train_one(
    s: Settings,
    train: Cohort,
    val: Cohort,
    eps: float,
    seed: int,
    start: dict[str, torch.Tensor] | None,
) -> tuple[torch.nn.Module, dict]:
    model = build_model(s.arch, random_state=seed)
    if start is not None:
        model.load_state_dict(start)
    common = {"epochs": s.epochs, "lr": s.lr, "seed": seed, "patience": None}
    if math.isinf(eps):  # the same recipe without DP: shuffled batches of 64
        res = train_model(model, train, val, batch_size=64, **common)
        return res.model, {"steps": res.steps, "epsilon": INF, "noise_multiplier": 0.0}
    out = train_private(
        model,
        train,
        val,
        target_epsilon=eps,
        target_delta=s.delta,
        max_grad_norm=s.max_grad_norm,
        accountant=s.accountant,
        batch_size=s.batch_size,
        **common,
    )
    led = out.ledger
    return out.model, {
        "steps": led.steps,
        "epsilon": led.epsilon,
        "noise_multiplier": led.noise_multiplier,
    }


# ------------------------------------------------------------------------------- metrics
def evaluate(
    y: np.ndarray, score: np.ndarray, meta: pd.DataFrame, threshold: float, n_boot: int
) -> dict[str, float]:
    """Point estimates and patient-bootstrap CIs, all from the same resamples."""
    female = (meta["sex"] == "female").to_numpy()
    age = meta["age"].to_numpy(dtype=float)
    groups = meta["age_group"].astype(str).to_numpy()
    W = bootstrap_counts(
        female * 2 + y, n_boot=n_boot, random_state=0, clusters=meta["patient_id"].to_numpy()
    )
    ones = np.ones((1, len(y)))
    pred = (score >= threshold).astype(float)
    err = np.abs(y - score)

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        ages = sorted(set(groups))
        age_auc = np.stack([weighted_auroc(y, score, w * (groups == g)) for g in ages])
        return {
            "auroc": weighted_auroc(y, score, w),
            "spd_sex": _rate(pred, w * female) - _rate(pred, w * ~female),
            "auroc_gap_sex": weighted_auroc(y, score, w * female)
            - weighted_auroc(y, score, w * ~female),
            "auroc_gap_age": np.nanmax(age_auc, axis=0) - np.nanmin(age_auc, axis=0),
            "r_error_age": _weighted_pearson(err, age, w),
            "ece": weighted_expected_calibration_error(y, score, w),
        }

    point = {k: float(v[0]) for k, v in stats(ones).items()}
    boot = stats(W)
    out: dict[str, float] = {}
    for k, v in point.items():
        lo, hi = percentile_ci(boot[k])
        out.update({k: v, f"{k}_ci_low": lo, f"{k}_ci_high": hi})
    assert abs(out["auroc"] - auroc(y, score)) < 1e-9  # the weighted AUROC is the AUROC
    out["score_sd"] = float(np.std(score))  # spread of the scores (compressed by DP-SGD?)
    return out


def _rate(pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w * pred).sum(axis=1) / w.sum(axis=1)


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    s = w.sum(axis=1, keepdims=True)
    ma, mb = (w * a).sum(1, keepdims=True) / s, (w * b).sum(1, keepdims=True) / s
    cov = (w * (a - ma) * (b - mb)).sum(1)
    return cov / np.sqrt((w * (a - ma) ** 2).sum(1) * (w * (b - mb) ** 2).sum(1))


# ------------------------------------------------------------------------------- the study
def run(s: Settings, *, out_dir: Path, report_dir: Path, progress: bool = True) -> pd.DataFrame:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    t_start = time.perf_counter()
    demo = DemoSettings()  # the demo's hospitals (shortcut, fainter lesions in women)
    cohort = generate_hospitals(
        n_sites=demo.n_sites,
        patients_per_site=s.patients_per_site,
        image_size=s.image_size,
        shortcut_strength=demo.shortcut_strength,
        hard_subgroup=demo.hard_subgroup,
        hard_contrast_factor=demo.hard_contrast_factor,
        seed=0,
    )
    train, val, test = (cohort.split(n) for n in ("train", "val", "test"))
    starts = {k: (pretrained_state(s, val) if k == "pretrained" else None) for k in s.starts}
    rows = []
    for start_name, start in starts.items():
        # epsilon = 0: the public start itself, which has seen none of the hospitals' data
        arms = ([0.0] if start is not None else []) + list(s.epsilons)
        for eps in arms:
            for seed in s.seeds[:1] if eps == 0 else s.seeds:
                t0 = time.perf_counter()
                if eps == 0:
                    model = build_model(s.arch)
                    model.load_state_dict(start)  # type: ignore[arg-type]
                    info = {"steps": 0, "epsilon": 0.0, "noise_multiplier": INF}
                else:
                    model, info = train_one(s, train, val, eps, seed, start)
                kw = {"image_size": s.image_size, "device": "cpu"}
                thr = youden_threshold(val.labels, predict(model, val, **kw).scores[:, 1])
                score = predict(model, test, **kw).scores[:, 1]
                m = evaluate(np.asarray(test.labels), score, test.meta, thr, s.n_boot)
                rows.append(
                    {
                        "start": start_name,
                        "target_epsilon": eps,
                        "seed": seed,
                        **info,
                        "threshold": thr,
                        **m,
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                if progress:
                    r = rows[-1]
                    print(
                        f"{start_name:>10} eps={eps:<4} seed={seed}  AUROC {r['auroc']:.3f}"
                        f"  SPD {r['spd_sex']:+.3f}  sex gap {r['auroc_gap_sex']:+.3f}"
                        f"  ({r['seconds']:.0f} s)",
                        flush=True,
                    )
    results = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    results.to_csv(out_dir / "results.csv", index=False, float_format="%.6g")
    summary = summarise(results)
    (out_dir / "summary.md").write_text(summary_markdown(summary, s))
    fig = plot(summary)
    fig.savefig(out_dir / "dp_tradeoff.png", dpi=120, bbox_inches="tight")
    write_report(results, summary, fig, s, report_dir, time.perf_counter() - t_start)
    return results


METRICS = ("auroc", "spd_sex", "auroc_gap_sex", "auroc_gap_age", "r_error_age", "ece")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    g = results.groupby(["start", "target_epsilon"], sort=False)
    parts = {
        "n_seeds": g.size(),
        "epsilon_spent": g["epsilon"].max(),
        "score_sd": g["score_sd"].mean(),
    }
    for m in METRICS:
        parts[m] = g[m].mean()
        parts[f"{m}_min"] = g[m].min()
        parts[f"{m}_max"] = g[m].max()
        parts[f"{m}_ci_low"] = g[f"{m}_ci_low"].mean()
        parts[f"{m}_ci_high"] = g[f"{m}_ci_high"].mean()
    return pd.DataFrame(parts).reset_index()


def findings(summary: pd.DataFrame) -> list[str]:
    """The finding, stated from the numbers (whatever they are)."""
    out = []
    for start, t in summary.groupby("start", sort=False):
        base = t[np.isinf(t["target_epsilon"])]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, r in t[~np.isinf(t["target_epsilon"])].iterrows():
            if r["target_epsilon"] == 0:
                out.append(
                    f"{start}, epsilon=0 (the public weights alone, before any training on "
                    f"the hospitals): AUROC {r['auroc']:.3f}."
                )
                continue
            d_auc = r["auroc"] - b["auroc"]
            d_gap = abs(r["auroc_gap_sex"]) - abs(b["auroc_gap_sex"])
            d_spd = abs(r["spd_sex"]) - abs(b["spd_sex"])
            out.append(
                f"{start}, epsilon={r['target_epsilon']:g}: AUROC {r['auroc']:.3f} vs "
                f"{b['auroc']:.3f} without DP ({d_auc:+.3f}); |female-male AUROC gap| "
                f"{abs(r['auroc_gap_sex']):.3f} vs {abs(b['auroc_gap_sex']):.3f} "
                f"({d_gap:+.3f}); |SPD| {abs(r['spd_sex']):.3f} vs {abs(b['spd_sex']):.3f} "
                f"({d_spd:+.3f}); r(error, age) {r['r_error_age']:+.3f} vs "
                f"{b['r_error_age']:+.3f}; ECE {r['ece']:.3f} vs {b['ece']:.3f}; score SD "
                f"{r['score_sd']:.3f} vs {b['score_sd']:.3f}."
            )
    return out


def summary_markdown(summary: pd.DataFrame, s: Settings) -> str:
    head = (
        "| start | epsilon | spent | AUROC (seed range) | SPD F-M | AUROC gap F-M | "
        "AUROC gap age | r(error, age) | ECE | score SD |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for _, r in summary.iterrows():
        eps = "inf" if math.isinf(r["target_epsilon"]) else f"{r['target_epsilon']:g}"
        spent = "-" if math.isinf(r["epsilon_spent"]) else f"{r['epsilon_spent']:.2f}"
        cells = [f"{r[m]:+.3f} ({r[m + '_min']:+.3f} to {r[m + '_max']:+.3f})" for m in METRICS]
        cells[0] = cells[0].replace("+", "")
        row = f"| {r['start']} | {eps} | {spent} | " + " | ".join(cells)
        lines.append(row + f" | {r['score_sd']:.3f} |")
    settings = ", ".join(f"{k}={v}" for k, v in asdict(s).items())
    return (
        "# DP trade-off on synthetic hospitals\n\nMean over seeds (min to max). "
        "SPD and gaps are female minus male (gap age: best minus worst age group).\n\n"
        + head
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {f}" for f in findings(summary))
        + f"\n\nSettings: {settings}\n"
    )


def plot(summary: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(16, 3.2))
    labels = {
        "auroc": "AUROC",
        "spd_sex": "SPD female - male",
        "auroc_gap_sex": "AUROC gap female - male",
        "r_error_age": "r(|error|, age)",
        "ece": "ECE",
    }
    eps_all = sorted(set(summary["target_epsilon"]))
    ticks = ["inf" if math.isinf(e) else f"{e:g}" for e in eps_all]
    for ax, (m, title) in zip(axes, labels.items(), strict=True):
        for k, (start, t) in enumerate(summary.groupby("start", sort=False)):
            x = np.array([eps_all.index(e) for e in t["target_epsilon"]]) + 0.08 * (k - 0.5)
            ax.errorbar(
                x,
                t[m],
                yerr=[t[m] - t[f"{m}_ci_low"], t[f"{m}_ci_high"] - t[m]],
                marker="o",
                capsize=3,
                label=start,
            )
        ax.set_xticks(np.arange(len(eps_all)), ticks)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epsilon")
        if m not in ("auroc", "ece"):
            ax.axhline(0, color="grey", lw=0.6)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def write_report(
    results: pd.DataFrame, summary: pd.DataFrame, fig, s: Settings, report_dir: Path, seconds: float
) -> None:
    checks = []
    for _, r in summary.iterrows():
        if math.isinf(r["target_epsilon"]) or r["target_epsilon"] == 0:
            continue
        base = summary[(summary["start"] == r["start"]) & np.isinf(summary["target_epsilon"])]
        if base.empty:
            continue
        loss = float(base["auroc"].iloc[0] - r["auroc"])
        checks.append(
            Check.evaluate(
                f"dp_tradeoff.{r['start']}.auroc_loss_eps{r['target_epsilon']:g}",
                f"AUROC lost to DP at epsilon={r['target_epsilon']:g} ({r['start']} start; "
                "mean over seeds)",
                loss,
                op="<=",
                threshold=0.1,
                severity="info",
            )
        )
    sec = Section(
        name="dp_tradeoff",
        title="Privacy-utility-fairness trade-off of DP-SGD (synthetic hospitals)",
        summary=findings(summary)[0] if findings(summary) else "No DP arm was run.",
        tables={"summary": summary, "runs": results},
        figures={"trade-off": fig},
        checks=checks,
        notes=findings(summary)
        + [
            f"epsilon is per training image at delta={s.delta:g}; inf is the same recipe "
            "without DP (shuffled batches of 64).",
            "CIs resample whole patients (the same 95% bootstrap for every metric); seed "
            "ranges show training variability, which the CIs of one run do not.",
        ],
        references=[
            "Tayebi Arasteh S, et al. Private, fair and accurate: training large-scale, "
            "privacy-preserving AI models in medical imaging. arXiv:2302.01622, 2023.",
            "Abadi M, et al. Deep learning with differential privacy. CCS 2016.",
            "Tramer F, Boneh D. Differentially private learning needs better features (or "
            "much more data). ICLR 2021.",
        ],
        methods=Settings.__doc__ or "",
    )
    meta = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
        "command": " ".join(["python", *sys.argv]),
        "timings_seconds": {"total": round(seconds, 1)},
    }
    Report(sections=[sec], meta=meta).save(report_dir)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny settings (CI)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--report", type=Path, default=ROOT / "reports" / "dp_tradeoff")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds")
    args = ap.parse_args(argv)
    s = Settings.smoke() if args.smoke else Settings()
    if args.seeds:
        s = replace(s, seeds=tuple(range(args.seeds)))
    run(s, out_dir=args.out, report_dir=args.report)


if __name__ == "__main__":
    main()
