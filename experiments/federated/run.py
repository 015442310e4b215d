"""Federated learning across hospitals of very different sizes: local vs FedAvg vs FedAvg
from a pretrained initialisation, per site.

The structure of the seeds' study ("Boosting multi-demographic federated learning for chest
radiograph analysis using general-purpose self-supervised representations"): federated
training helps the small sites, may not help (or may hurt) the large one, and a good
initialisation recovers it. Here on medaudit's synthetic hospitals (four sites whose
acquisition, prevalence and demographics differ, with very different sizes), with
Flower's simulation engine:

- ``local``: each site trains alone for the federation's total epochs;
- ``fedavg``: FedAvg from a random initialisation;
- ``fedavg_pretrained``: FedAvg from a model pretrained on a fifth, public hospital that
  takes no part in the federation (the study's general-purpose representation).

Each site's test AUROC (patient bootstrap CI at the site) for every seed goes to
``results.csv``; ``results.md`` summarises them and states the finding, whatever it is;
the report of the first seed (``federate``'s own report, both arms) goes to
``reports/federated/``.

    python experiments/federated/run.py --seeds 2       # the committed results
    python experiments/federated/run.py --smoke --out /tmp/fl-smoke   # CI smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaudit.data import Cohort, SitePartition, generate_hospitals
from medaudit.federated import Arm, FederatedSettings, federate
from medaudit.models import build_model, compute_normalization, train_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def hospitals(sizes: list[int], size: int, seed: int) -> tuple[Cohort, SitePartition, Cohort]:
    """Four federation sites of ``sizes`` patients, and a fifth (public) hospital."""
    c = generate_hospitals(
        n_sites=len(sizes) + 1,
        patients_per_site=max(sizes),
        image_size=size,
        heldout_site=None,
        hard_subgroup="female",
        seed=seed,
    )
    meta = c.meta.drop(columns=["split"])
    c = Cohort(meta, images=c.images, name="synthetic-hospitals")
    names = sorted(meta["site"].unique())
    rng = np.random.default_rng(seed)
    keep = []
    for name, n in zip(names, sizes, strict=False):
        patients = meta.loc[meta["site"] == name, "patient_id"].unique()
        chosen = rng.choice(patients, size=n, replace=False)
        keep.append(np.flatnonzero(meta["patient_id"].isin(chosen).to_numpy()))
    rows = np.sort(np.concatenate(keep))
    fed = c.subset(rows, name="federation")
    site = fed.meta["site"].to_numpy()
    part = SitePartition(
        tuple(names[: len(sizes)]),
        tuple(np.flatnonzero(site == n) for n in names[: len(sizes)]),
        "column:site",
    )
    public = c.subset(np.flatnonzero(meta["site"].to_numpy() == names[-1]), name="public")
    return fed, part, public


def pretrain(public: Cohort, epochs: int, seed: int) -> dict[str, torch.Tensor]:
    """A small_cnn trained on the public hospital (no federation site's data)."""
    model = build_model("small_cnn", random_state=seed)
    mean, std = compute_normalization(public)
    train_model(model, public, None, epochs=epochs, patience=None, seed=seed, mean=mean, std=std)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_seed(args: argparse.Namespace, seed: int, report_dir: Path | None) -> pd.DataFrame:
    fed, part, public = hospitals(args.sizes, args.size, seed)
    init = pretrain(public, args.pretrain_epochs, seed)
    settings = FederatedSettings(
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        n_bootstrap=args.n_bootstrap,
        seed=seed,
    )
    res = federate(
        fed,
        settings=settings,
        partition=part,
        arms=[Arm("fedavg", "fedavg"), Arm("fedavg_pretrained", "fedavg", init)],
        out=report_dir,
        title="medaudit experiment — local vs FedAvg vs FedAvg from a pretrained init",
        cpus=args.cpus,
    )
    sites = res.report.section("federated").tables["sites"].set_index("site")
    pre = dict(res.run.strategies[1].site_reports)
    rows = []
    for name in part.names:
        s = sites.loc[name]
        p = pre.get(name, {})
        rows.append(
            {
                "seed": seed,
                "site": name,
                "n_train": int(s["n_train"]),
                "n_test": int(s["n_test"]),
                "auroc_local": s["auroc_local"],
                "auroc_local_low": s["auroc_local_low"],
                "auroc_local_high": s["auroc_local_high"],
                "auroc_fedavg": s["auroc_federated"],
                "auroc_fedavg_low": s["auroc_federated_low"],
                "auroc_fedavg_high": s["auroc_federated_high"],
                "auroc_fedavg_pretrained": p.get("auroc_federated", np.nan),
                "auroc_fedavg_pretrained_low": p.get("auroc_federated_low", np.nan),
                "auroc_fedavg_pretrained_high": p.get("auroc_federated_high", np.nan),
            }
        )
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> str:
    """Mean AUROC per site over the seeds, and the finding in words."""
    cols = ["auroc_local", "auroc_fedavg", "auroc_fedavg_pretrained"]
    g = table.groupby("site", sort=False)
    mean = g[cols].mean()
    sd = g[cols].std(ddof=1) if table["seed"].nunique() > 1 else mean * np.nan
    n_train = g["n_train"].mean()
    lines = [
        "| site | training images | local | FedAvg | FedAvg, pretrained init |",
        "|---|---|---|---|---|",
    ]
    for site in mean.index:
        cells = [
            f"{mean.loc[site, c]:.3f} ± {sd.loc[site, c]:.3f}"
            if np.isfinite(sd.loc[site, c])
            else f"{mean.loc[site, c]:.3f}"
            for c in cols
        ]
        lines.append(f"| {site} | {n_train[site]:.0f} | " + " | ".join(cells) + " |")
    largest, smallest = n_train.idxmax(), n_train.idxmin()
    gain = mean["auroc_fedavg"] - mean["auroc_local"]
    gain_pre = mean["auroc_fedavg_pretrained"] - mean["auroc_local"]
    finding = (
        f"FedAvg changed the smallest site's ({smallest}) AUROC by {gain[smallest]:+.3f} and "
        f"the largest site's ({largest}) by {gain[largest]:+.3f} against training alone; from "
        f"the pretrained initialisation by {gain_pre[smallest]:+.3f} and "
        f"{gain_pre[largest]:+.3f}. Sites where FedAvg from a random start was worse than "
        f"local training: {', '.join(s for s in gain.index if gain[s] < 0) or 'none'}; "
        "of those, recovered by the pretrained start: "
        + (", ".join(s for s in gain.index if gain[s] < 0 and gain_pre[s] >= 0) or "none")
        + "."
    )
    return "\n".join(lines) + "\n\n" + finding + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--sizes", type=int, nargs=4, default=[320, 120, 50, 25], help="patients per site"
    )
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--n-bootstrap", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE, help="folder of results.csv/.md")
    ap.add_argument("--report", type=Path, default=ROOT / "reports" / "federated")
    ap.add_argument("--smoke", action="store_true", help="tiny settings for CI")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.sizes, args.size, args.rounds = 1, [30, 14, 10, 8], 16, 1
        args.pretrain_epochs, args.n_bootstrap = 1, 20
        args.report = args.out / "report"
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tables = [
        one_seed(args, seed, args.report if seed == 0 else None) for seed in range(args.seeds)
    ]
    table = pd.concat(tables, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv", index=False, float_format="%.4f")
    text = (
        "# Local vs FedAvg vs FedAvg from a pretrained initialisation\n\n"
        f"`python experiments/federated/run.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
        f" — {args.seeds} seed(s), sites of {args.sizes} patients, {args.size}×{args.size} "
        f"images, {args.rounds} rounds × {args.local_epochs} local epoch(s); test AUROC per "
        f"site, mean ± SD over seeds ({time.perf_counter() - t0:.0f} s).\n\n" + summarise(table)
    )
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
