"""Why `medaudit train` handed out miscalibrated models, and what fixed it (issue 7, part 6).

Reported: on a foreign manifest (1,067 training images, prevalence 0.4, ``--epochs 5``)
``small_cnn`` reached validation AUROC 0.80 yet scored every test image above 0.5.

This script rebuilds such a manifest without medaudit's generator (speckled,
ultrasound-like PNGs written with numpy and PIL; a positive image holds a faint dark
oval), trains ``small_cnn`` as ``medaudit train`` does (patient-grouped 85/15 split,
AdamW 1e-3, batch 64) with the old and the new training loop, and scores a separate test
manifest. It does the same on a learnable synthetic-hospitals task. Four loops:

- ``old``: BatchNorm running statistics as PyTorch keeps them (moving average, momentum
  0.1) and the epoch with the best validation AUROC kept (what the loop did before);
- ``old+loss``: the same statistics, the epoch with the lowest validation loss kept;
- ``preciseBN+auroc``: statistics re-estimated at each epoch's weights, AUROC selection;
- ``new``: re-estimated statistics and validation-loss selection (the default now);

plus ``new+T``: ``new`` followed by temperature scaling fitted on the validation split
(Guo et al. 2017), applied post hoc here to see whether it would be worth shipping.

First, a diagnosis on the foreign manifest (seed 0, old loop): after every epoch, the
validation scores with the running BatchNorm statistics, with statistics re-estimated
over the training images at that epoch's weights, and with a fresh moving average
(momentum 0.1, one shuffled pass) at those fixed weights; and how far each layer's
running mean is from the re-estimated one, in standard deviations.

Writes ``results.csv`` (one row per dataset x seed x loop), ``results.md`` (means and
ranges) and ``diagnosis.md`` next to this file. Usage::

    python experiments/calibration/run.py            # the committed table (~40 min, 2 cores)
    python experiments/calibration/run.py --quick --out /tmp/cal   # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.optimize import minimize_scalar

from medaudit.data import Cohort, load_cohort, patient_split
from medaudit.data.synthetic import generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, compute_normalization, train_model
from medaudit.models._batchnorm import batchnorm_layers, precise_batchnorm
from medaudit.stats import auroc, expected_calibration_error

HERE = Path(__file__).resolve().parent
LOOPS = {
    "old": {"precise_bn": False, "monitor": "val_auroc"},
    "old+loss": {"precise_bn": False, "monitor": "val_loss"},
    "preciseBN+auroc": {"precise_bn": True, "monitor": "val_auroc"},
    "new": {"precise_bn": True, "monitor": "val_loss"},
}


# -- a manifest medaudit did not generate ----------------------------------------------------
def write_foreign_manifest(
    out: Path, *, n_patients: int, seed: int, size: int = 64, prevalence: float = 0.4
) -> Path:
    """Speckled ultrasound-like grayscale PNGs; label 1 = a faint dark oval somewhere.

    Each patient has 2-4 images and a gain (0.6-1.1) shared by them; ``sex`` is drawn at
    random (an attribute column for audits). Returns the manifest's path.
    """
    rng = np.random.default_rng(seed)
    (out / "img").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows, k = [], 0
    for p in range(n_patients):
        sick = bool(rng.random() < prevalence)
        gain = rng.uniform(0.6, 1.1)
        sex = str(rng.choice(["F", "M"]))
        for _ in range(int(rng.integers(2, 5))):
            field = gain * (0.55 + 0.25 * np.sin(3 * xx + rng.uniform(0, 6)) * np.cos(2 * yy))
            speckle = np.kron(rng.gamma(4.0, 0.25, (size // 4, size // 4)), np.ones((4, 4)))
            img = field * (0.7 + 0.3 * speckle) + rng.normal(0, 0.05, (size, size))
            if sick:
                cy, cx = rng.uniform(0.25, 0.75, 2)
                ry, rx = rng.uniform(0.06, 0.14, 2)
                d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
                img -= 0.18 * rng.uniform(0.5, 1.5) * np.exp(-d)
            name = f"img/{k:05d}.png"
            Image.fromarray(np.clip(img * 200 + 20, 0, 255).astype(np.uint8)).save(out / name)
            rows.append({"path": name, "label": int(sick), "patient_id": f"P{p:04d}", "sex": sex})
            k += 1
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


@dataclass(frozen=True)
class Task:
    name: str
    train: Cohort
    val: Cohort
    test: Cohort
    epochs: int
    batch_size: int


def foreign_task(root: Path, seed: int, n_patients: int, n_test_patients: int) -> Task:
    """The reported setting: ``medaudit train``'s split of one manifest, a second to test."""
    train_m = root / "foreign-train" / "manifest.csv"
    test_m = root / "foreign-test" / "manifest.csv"
    if not train_m.is_file():
        write_foreign_manifest(train_m.parent, n_patients=n_patients, seed=0)
        write_foreign_manifest(test_m.parent, n_patients=n_test_patients, seed=1)
    cohort = load_cohort(train_m)
    names = patient_split(
        cohort.meta, fractions=(0.85, 0.15), names=("train", "val"), random_state=seed
    )
    cohort.meta = cohort.meta.assign(split=names)
    return Task(
        "foreign manifest",
        cohort.split("train"),
        cohort.split("val"),
        load_cohort(test_m),
        5,
        64,
    )


def synthetic_task(seed: int, patients_per_site: int) -> Task:
    """A learnable task: two synthetic hospitals, no shortcut, no hard subgroup, 32x32."""
    c = generate_hospitals(
        n_sites=2,
        patients_per_site=patients_per_site,
        image_size=32,
        hard_subgroup=None,
        heldout_site=None,
        split_fractions=(0.5, 0.25, 0.25),
        seed=seed,
    )
    return Task(
        "synthetic hospitals 32px",
        c.split("train"),
        c.split("val"),
        c.split("test"),
        6,
        32,
    )


# -- evaluation ------------------------------------------------------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _log_loss(y: np.ndarray, z: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    """Temperature T minimising the log loss of sigmoid(z / T) (Guo et al. 2017)."""
    res = minimize_scalar(
        lambda log_t: _log_loss(y, z / np.exp(log_t)), bounds=(-3, 3), method="bounded"
    )
    return float(np.exp(res.x))


def _metrics(prefix: str, y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    s = 1.0 / (1.0 + np.exp(-z))
    return {
        f"{prefix}_auroc": auroc(y == 1, s),
        f"{prefix}_ece": expected_calibration_error(y == 1, s),
        f"{prefix}_log_loss": _log_loss(y, z),
        f"{prefix}_mean_score_neg": float(s[y == 0].mean()),
        f"{prefix}_mean_score_pos": float(s[y == 1].mean()),
        f"{prefix}_frac_above_half": float(np.mean(s > 0.5)),
    }


def run_one(task: Task, seed: int, loop: str) -> list[dict[str, object]]:
    mean, std = compute_normalization(task.train)
    model = build_model("small_cnn", in_channels=1, num_classes=2, random_state=seed)
    t0 = time.perf_counter()
    res = train_model(
        model,
        task.train,
        task.val,
        epochs=task.epochs,
        batch_size=task.batch_size,
        seed=seed,
        mean=mean,
        std=std,
        **LOOPS[loop],  # type: ignore[arg-type]
    )
    seconds = time.perf_counter() - t0
    zs = {}
    for split, cohort in (("val", task.val), ("test", task.test)):
        p = predict(res.model, cohort, mean=mean, std=std, features=False)
        zs[split] = (p.labels.astype(float), _logit(p.score))
    base = {
        "task": task.name,
        "seed": seed,
        "n_train": len(task.train),
        "n_val": len(task.val),
        "n_test": len(task.test),
        "train_prevalence": float(task.train.labels.mean()),
        "epochs": task.epochs,
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "train_seconds": round(seconds, 1),
    }
    out = [{"loop": loop, **base, **_metrics("val", *zs["val"]), **_metrics("test", *zs["test"])}]
    if loop == "new":
        t = fit_temperature(*zs["val"])
        scaled = {k: (y, z / t) for k, (y, z) in zs.items()}
        out.append(
            {
                "loop": "new+T",
                **base,
                "temperature": t,
                **_metrics("val", *scaled["val"]),
                **_metrics("test", *scaled["test"]),
            }
        )
    return out


def diagnose(task: Task, seed: int) -> str:
    """Per epoch of the old loop: what the running BatchNorm statistics do to the scores."""
    mean, std = compute_normalization(task.train)
    model = build_model("small_cnn", in_channels=1, num_classes=2, random_state=seed)
    x_train = (torch.from_numpy(task.train.load_all()) - mean[0]) / std[0]
    x_val = (torch.from_numpy(task.val.load_all()) - mean[0]) / std[0]
    y_val = task.val.labels
    lines = [
        "| epoch | train loss | val mean score: running | re-estimated | fresh moving "
        "average | val ECE: running | re-estimated | moving average | running mean off "
        "by (SD), per layer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def scores(m: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(m.eval()(x_val), 1)[:, 1].numpy().astype(np.float64)

    def moving_average(m: torch.nn.Module) -> torch.nn.Module:
        out = copy.deepcopy(m).train()
        for bn in batchnorm_layers(out):
            bn.reset_running_stats()
        order = torch.from_numpy(np.random.default_rng(1).permutation(len(x_train)))
        with torch.no_grad():
            for chunk in order.split(task.batch_size):
                out(x_train[chunk])
        return out

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        state = copy.deepcopy(model.state_dict())
        precise = copy.deepcopy(model)
        precise_batchnorm(precise, x_train.split(task.batch_size))
        ema = moving_average(model)
        runs = [scores(m) for m in (model, precise, ema)]
        off = [
            float(((a.running_mean - b.running_mean).abs() / b.running_var.sqrt()).mean())
            for a, b in zip(batchnorm_layers(model), batchnorm_layers(precise), strict=True)
        ]
        eces = [expected_calibration_error(y_val == 1, s) for s in runs]
        lines.append(
            f"| {epoch} | {row['train_loss']:.3f} | "
            + " | ".join(f"{s.mean():.2f}" for s in runs)
            + " | "
            + " | ".join(f"{e:.3f}" for e in eces)
            + " | "
            + ", ".join(f"{o:.2f}" for o in off)
            + " |"
        )
        model.load_state_dict(state)
        model.train()

    train_model(
        model,
        task.train,
        task.val,
        epochs=task.epochs,
        batch_size=task.batch_size,
        seed=seed,
        mean=mean,
        std=std,
        patience=None,
        callbacks=[on_epoch],
        **LOOPS["old"],  # type: ignore[arg-type]
    )
    prevalence = float(y_val.mean())
    return (
        f"## Diagnosis: {task.name}, seed {seed}, old loop\n\n"
        f"Validation: {len(y_val)} images, prevalence {prevalence:.2f}. "
        "'re-estimated': BatchNorm statistics over the training images at the epoch's "
        "weights (PreciseBN); 'fresh moving average': PyTorch's own running statistics "
        "recomputed from scratch over one shuffled pass at the same fixed weights.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def summarise(df: pd.DataFrame) -> str:
    cols = [
        "val_auroc",
        "val_ece",
        "test_auroc",
        "test_ece",
        "test_log_loss",
        "test_mean_score_neg",
        "test_mean_score_pos",
        "test_frac_above_half",
    ]
    order = [*LOOPS, "new+T"]
    lines = []
    for task, g in df.groupby("task", sort=False):
        n_seeds = g["seed"].nunique()
        first = g.iloc[0]
        lines += [
            f"### {task} ({n_seeds} seeds)",
            "",
            f"`small_cnn`, up to {first['epochs']} epochs; "
            f"train {first['n_train']} images (prevalence {first['train_prevalence']:.2f}), "
            f"validation {first['n_val']}, test {first['n_test']}; mean over seeds "
            "[min, max].",
            "",
            "| loop | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for loop in order:
            sub = g[g["loop"] == loop]
            if sub.empty:
                continue
            cells = [f"{sub[c].mean():.3f} [{sub[c].min():.2f}, {sub[c].max():.2f}]" for c in cols]
            lines.append(f"| {loop} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = range(1 if args.quick else args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        task = foreign_task(Path(tmp), 0, *((40, 20) if args.quick else (430, 140)))
        if args.quick:
            task = Task(task.name, task.train, task.val, task.test, 2, task.batch_size)
        diagnosis = diagnose(task, 0)
        print(diagnosis, flush=True)
        df = pd.DataFrame(_run(Path(tmp), seeds, args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnosis.md").write_text(diagnosis, encoding="utf-8")
    df.to_csv(args.out / "results.csv", index=False, float_format="%.4f")
    header = (
        "# Calibration of `medaudit train`'s models: old vs new training loop\n\n"
        f"`python experiments/calibration/run.py` ({os.cpu_count()} CPU cores, "
        "one torch thread).\n\n"
    )
    (args.out / "results.md").write_text(header + summarise(df), encoding="utf-8")
    print(summarise(df))


def _run(root: Path, seeds: range, quick: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for seed in seeds:
        tasks = [
            foreign_task(root, seed, *((40, 20) if quick else (430, 140))),
            synthetic_task(seed, 30 if quick else 160),
        ]
        for task in tasks:
            if quick:
                task = Task(task.name, task.train, task.val, task.test, 1, task.batch_size)
            for loop in LOOPS:
                rows.extend(run_one(task, seed, loop))
                print(
                    f"{task.name} seed {seed} {loop}: test ECE {rows[-1]['test_ece']:.3f}",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    main()
