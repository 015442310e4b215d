"""Unlearning at every level of the hierarchy, verified against retraining, then relearned.

Synthetic hospitals (3 sites, 32x32); a ``small_cnn`` trained long enough to memorise its
training patients; then, for each level of the hierarchy — a site, patients, one study
of each of several patients, single images — every registered unlearning method
(retrain, finetune, gradient ascent, random labels, SCRUB) is applied and verified
against three models retrained without the forget set (forget/retain/test AUROC, the
loss attack's AUC on the forget set, the KS forget-quality score and the CI verdict).
The relearning attack then fine-tunes each model on progressively related retained
data (same patient → same site → other sites) and records how fast the forget set's
accuracy and confidence come back, against the retrained reference.

Writes ``results.csv``/``results.md`` (method x level), ``relearning.csv``/
``relearning.md`` and a report (``index.html`` + ``audit.json``, one section per level)
into ``--out`` (default ``reports/unlearning``).

Usage::

    python attacks/unlearning/run.py                 # the committed results (~6 min, 2 cores)
    python attacks/unlearning/run.py --quick --out /tmp/unlearning   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medaudit.attacks.unlearning import (
    ForgetRequest,
    UnlearnSettings,
    list_methods,
    relearning_curve,
    unlearn,
    verify_unlearning,
)
from medaudit.data import Cohort, generate_hospitals
from medaudit.models import build_model, train_model
from medaudit.report import Report, Section, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ("site", "patient", "study", "image")


@dataclass(frozen=True)
class Scenario:
    """Sizes and budgets of one run."""

    patients_per_site: int = 50
    image_size: int = 32
    epochs: int = 25
    retrain_epochs: int = 15
    forget_fraction: float = 0.5
    relearn_steps: tuple[int, ...] = (0, 5, 10, 20)
    n_boot: int = 500
    references: int = 3
    seed: int = 0


QUICK = Scenario(
    patients_per_site=12, image_size=16, epochs=2, retrain_epochs=1, relearn_steps=(0, 1),
    n_boot=50,
)  # fmt: skip


def make_data(s: Scenario) -> tuple[Cohort, Cohort]:
    """Training and test cohorts (every site in both; an ``image_id`` per image)."""
    c = generate_hospitals(
        n_sites=3,
        patients_per_site=s.patients_per_site,
        image_size=s.image_size,
        heldout_site=None,
        seed=s.seed,
    )
    c.meta["image_id"] = [f"img{i:05d}" for i in range(len(c))]
    train = c.split("train")
    test = c.subset(c.meta["split"].isin(["val", "test"]).to_numpy(), name="test")
    return train, test


def forget_request(train: Cohort, level: str, s: Scenario) -> ForgetRequest:
    """The forget set of one level: a site, patients, one study each, one image each."""
    rng = np.random.default_rng([s.seed, LEVELS.index(level)])
    meta = train.meta
    if level == "site":
        return ForgetRequest("site", (str(meta["site"].iloc[0]),))
    patients = meta["patient_id"].unique()
    chosen = rng.choice(patients, max(2, int(s.forget_fraction * len(patients))), replace=False)
    rows = meta[meta["patient_id"].isin(chosen)]
    if level == "patient":
        return ForgetRequest("patient_id", tuple(map(str, chosen)))
    if level == "study":
        first = rows.groupby("patient_id")["study_id"].first()
        return ForgetRequest("study_id", tuple(map(str, first)))
    first = rows.groupby("study_id")["image_id"].first()
    return ForgetRequest("image_id", tuple(map(str, first)))


def run_level(
    model: torch.nn.Module, train: Cohort, test: Cohort, level: str, s: Scenario, opts: dict
) -> tuple[pd.DataFrame, pd.DataFrame, Section]:
    """Every method at one level: the results rows, the relearning curve, a section."""
    req = forget_request(train, level, s)
    mask = req.mask(train)
    settings = UnlearnSettings(epochs=s.retrain_epochs, batch_size=32, seed=s.seed + 3)
    refs = [
        unlearn(
            model, train, req, method="retrain",
            settings=dataclasses.replace(settings, seed=s.seed + 101 + k), **opts,
        ).model
        for k in range(s.references)
    ]  # fmt: skip
    vopts = {k: opts[k] for k in ("mean", "std", "image_size", "in_channels")}
    rows, checks, models = [], [], {}
    for method in list_methods():
        res = unlearn(model, train, req, method=method, settings=settings, **opts)
        ver = verify_unlearning(
            res.model, refs, method=method, forget=train.subset(mask),
            retain=train.subset(~mask), test=test, n_boot=s.n_boot, seed=s.seed, **vopts,
        )  # fmt: skip
        models[method] = res.model
        t = ver.table
        for _, r in t.iloc[:2].iterrows():
            rows.append(
                {
                    "level": level,
                    "method": method,
                    "model": r["model"],
                    "forget_images": int(mask.sum()),
                    **{k: r[k] for k in t.columns if k != "model"},
                    "ks_statistic": ver.ks_statistic if r["model"] == method else np.nan,
                    "ks_pvalue": ver.ks_pvalue if r["model"] == method else np.nan,
                    "ks_low": ver.excess_ci[0] if r["model"] == method else np.nan,
                    "ks_high": ver.excess_ci[1] if r["model"] == method else np.nan,
                    "reference_floor": ver.reference_floor if r["model"] == method else np.nan,
                    "verdict": ver.check.status if r["model"] == method else "",
                    "seconds": round(res.seconds, 1) if r["model"] == method else np.nan,
                }
            )
        checks.append(
            dataclasses.replace(ver.check, id=f"unlearning.{level}.{method}.indistinguishable")
        )
    models["retrained reference"] = refs[0]
    curve = relearning_curve(
        models, train, mask, steps=s.relearn_steps, seed=s.seed, batch_size=16, **vopts
    ).assign(level=level)
    table = pd.DataFrame(rows)
    held = [c.id.split(".")[2] for c in checks if c.status == "pass"]
    section = Section(
        name=f"unlearning_{level}",
        title=f"Unlearning at the {level} level ({int(mask.sum())} images forgotten)",
        summary=f"Indistinguishable from retraining at the {level} level: "
        f"{', '.join(held) or 'no method'}.",
        tables={"methods": table, "relearning": curve},
        table_titles={
            "methods": "Each method beside the retrained reference",
            "relearning": "Relearning attack (forget-set accuracy while fine-tuning)",
        },
        checks=checks,
        notes=["The attack AUC is the loss attack, forget set vs test images (patient CI)."],
    )
    return table, curve, section


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the scenario and write its tables and report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "unlearning")
    ap.add_argument("--quick", action="store_true", help="Tiny smoke run.")
    ap.add_argument("--levels", default=",".join(LEVELS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = QUICK if args.quick else Scenario()
    t0 = time.perf_counter()
    train, test = make_data(s)
    torch.manual_seed(s.seed)
    fit = train_model(
        build_model("small_cnn"), train, epochs=s.epochs, batch_size=32, seed=s.seed,
        patience=None,
    )  # fmt: skip
    opts: dict[str, Any] = {
        "mean": fit.mean, "std": fit.std, "image_size": s.image_size, "in_channels": 1,
        "num_classes": 2,
    }  # fmt: skip
    tables, curves, sections = [], [], []
    for level in args.levels.split(","):
        table, curve, section = run_level(fit.model, train, test, level, s, opts)
        tables.append(table)
        curves.append(curve)
        sections.append(section)
        print(f"{level}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results, relearn = pd.concat(tables), pd.concat(curves)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.csv", results.to_csv(index=False))
    atomic_write_text(args.out / "relearning.csv", relearn.to_csv(index=False))
    head = f"Scenario: {dataclasses.asdict(s)}; {time.perf_counter() - t0:.0f} s wall.\n\n"
    keep = ["level", "method", "model", "forget_auroc", "retain_auroc", "test_auroc",
            "attack_auc", "ks_statistic", "ks_pvalue", "ks_low", "ks_high", "reference_floor",
            "verdict"]  # fmt: skip
    atomic_write_text(args.out / "results.md", head + _markdown(results[keep]))
    last = relearn[relearn.steps == max(s.relearn_steps)]
    atomic_write_text(args.out / "relearning.md", head + _markdown(last))
    Report(
        sections=sections,
        meta={"title": "medaudit red team — unlearning", "scenario": dataclasses.asdict(s)},
    ).save(args.out)
    print(results[keep].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
