"""How often the unlearning verifier says what: retraining vs approximate methods, over seeds.

    python experiments/unlearning_verifier/run.py                 # seeds 0-9, forget 20%/50%
    python experiments/unlearning_verifier/run.py --seeds 0,1 --fractions 0.5   # smaller

The verdict *indistinguishable from retraining* (``verify_unlearning``; pass when the
whole patient-bootstrap CI of the calibrated KS distance lies below the 0.3 margin) is an
equivalence decision, so its two error rates are measured where the truth is known:

* **null** — the "unlearned" model *is* a model retrained without the forget set (another
  seed): the verdict should be pass, and must almost never be fail;
* **alternatives** — fine-tuning on the retained data, gradient ascent and random labels,
  which all keep measurable traces of the forget set: the verdict must almost never be
  pass (a false claim of forgetting).

Each run: three synthetic hospitals (50 patients each, 32x32, a fresh seed), a
``small_cnn`` trained 25 epochs without early stopping (it memorises), a share of the
training patients forgotten (whole patients: clustered images), two retrained references
(seeds 1 and 2), and each method verified against them (patient-bootstrap, 500
replicates). Writes ``results.csv`` (one row per run and method) and ``results.md`` (the
verdict rates) beside this file and prints the table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaudit.attacks.unlearning import ForgetRequest, UnlearnSettings, unlearn, verify_unlearning
from medaudit.data import generate_hospitals
from medaudit.models import build_model, train_model
from medaudit.report import atomic_write_text

HERE = Path(__file__).resolve().parent
#: Method name -> (unlearning method, settings overrides). "retrain" is the null.
METHODS = {
    "retrain": ("retrain", {"seed": 3}),
    "finetune": ("finetune", {"seed": 3}),
    "gradient_ascent": ("gradient_ascent", {"ascent_steps": 20, "ascent_lr": 1e-3}),
    "random_labels": ("random_labels", {}),
}


def one_run(
    seed: int, fraction: float, references: int = 2, patients_per_site: int = 50
) -> list[dict[str, object]]:
    """Train, forget ``fraction`` of the training patients, verify every method."""
    c = generate_hospitals(
        n_sites=3, patients_per_site=patients_per_site, image_size=32, heldout_site=None,
        seed=seed,
    )  # fmt: skip
    train = c.split("train")
    test = c.subset(c.meta["split"].isin(["val", "test"]).to_numpy())
    torch.manual_seed(seed)
    fit = train_model(
        build_model("small_cnn"), train, epochs=25, batch_size=32, patience=None, seed=seed
    )
    opts = {"mean": fit.mean, "std": fit.std, "image_size": 32, "in_channels": 1}
    patients = train.meta["patient_id"].unique()
    chosen = np.random.default_rng([seed, 1]).choice(
        patients, max(1, round(len(patients) * fraction)), replace=False
    )
    req = ForgetRequest("patient_id", tuple(chosen))
    base = UnlearnSettings(epochs=15, batch_size=32)

    def model(method: str, overrides: dict[str, object]) -> torch.nn.Module:
        s = base.__class__(**{**base.__dict__, **overrides})
        out = unlearn(fit.model, train, req, method=method, settings=s, num_classes=2, **opts)
        return out.model

    # Reference seeds 1, 2, 4, 5, ...: seed 3 is the null's "unlearned" model.
    refs = [model("retrain", {"seed": k if k < 3 else k + 1}) for k in range(1, references + 1)]
    mask = req.mask(train)
    rows = []
    for name, (method, overrides) in METHODS.items():
        v = verify_unlearning(
            model(method, overrides), refs, method=name, forget=train.subset(mask),
            retain=train.subset(~mask), test=test, seed=seed, **opts,
        )  # fmt: skip
        rows.append(
            {
                "seed": seed,
                "fraction": fraction,
                "references": references,
                "forget_images": int(mask.sum()),
                "forget_patients": len(chosen),
                "method": name,
                "excess_ks": v.excess,
                "ks_low": v.excess_ci[0],
                "ks_high": v.excess_ci[1],
                "attack_auc": float(v.table["attack_auc"].iloc[0]),
                "verdict": v.check.status,
            }
        )
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Verdict rates per method and forget fraction."""
    g = df.groupby(["references", "fraction", "method"], sort=False)
    out = g["verdict"].value_counts(normalize=True).unstack(fill_value=0.0)
    for col in ("pass", "inconclusive", "fail"):
        if col not in out:
            out[col] = 0.0
    out = out[["pass", "inconclusive", "fail"]]
    out.insert(0, "runs", g.size())
    out["median_ks"] = g["excess_ks"].median()
    out["median_forget_images"] = g["forget_images"].median()
    return out.reset_index()


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (shares as percentages)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for r in table.itertuples(index=False):
        cells = [
            f"{v:.0%}"
            if c in ("pass", "inconclusive", "fail")
            else f"{v:.3g}"
            if isinstance(v, float)
            else str(v)
            for c, v in zip(table.columns, r, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write its tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--fractions", default="0.2,0.5")
    ap.add_argument("--references", default="2,3", help="Retrained references per run.")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for k in [int(r) for r in args.references.split(",")]:
        for frac in [float(f) for f in args.fractions.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                rows += one_run(seed, frac, references=k)
                done = f"{time.perf_counter() - t0:.0f} s"
                print(f"references {k} fraction {frac} seed {seed}: {done}", file=sys.stderr)
    df = pd.DataFrame(rows)
    table = summarise(df)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.csv", df.to_csv(index=False))
    head = (
        f"{len(df)} verifications on {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - t0:.0f} s on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, one thread.\n"
        "Verdict shares per method (retrain is the null: the truth is 'forgotten').\n\n"
    )
    atomic_write_text(args.out / "results.md", head + markdown(table) + "\n")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
