"""Audit a CheXpert-style label file: uncertain (-1) and blank labels, the user's names.

CheXpert and MIMIC-CXR ship ``Path``, ``Sex``, ``Age`` and one column per finding holding
1 / 0 / -1 (uncertain) / blank. This example writes such a file from the synthetic
hospitals with uncertain labels planted at a known rate (10% of the images, 80% of them
true positives), then, from the command line as a user would:

1. trains one model with uncertain labels left out (``--uncertain-policy ignore``) and
   one with them counted negative (``zeros``);
2. audits each with ``--uncertain-label -1`` over two findings (``--findings``): every
   report has a "Label uncertainty" section per finding with the uncertain counts per
   group and the sensitivity table (headline metrics and subgroup gaps under ignore,
   zeros and ones, and which gap verdicts depend on the policy);
3. writes ``results.md``: each model's metrics under each policy.

Run: ``python examples/chexpert_uncertain/run.py --out /tmp/chexpert`` (about a minute on
one core).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from medaudit.cli.app import run
from medaudit.data._chexpert import FINDINGS, write_chexpert_style

POLICY = "[settings]\nn_bootstrap = 200\n[settings.fairness]\nintersections = false\n"


def main(out: Path, *, patients_per_site: int = 120, epochs: int = 8) -> pd.DataFrame:
    torch.set_num_threads(1)
    csv = write_chexpert_style(
        out,
        n_sites=3,
        patients_per_site=patients_per_site,
        image_size=32,
        heldout_site=None,
        uncertain_rate=0.10,
        uncertain_positive_share=0.8,
    )
    (out / "policy.toml").write_text(POLICY)
    cols = ["--path-column", "Path", "--patient-column", "Patient", "--uncertain-label", "-1"]
    rows = []
    for trained in ("ignore", "zeros"):
        model = out / f"model_{trained}.safetensors"
        code = run(
            ["train", "--data", str(csv), "--out", str(model), "--epochs", str(epochs)]
            + ["--label-column", FINDINGS[0], "--uncertain-policy", trained, "--no-progress"]
            + cols
        )
        if code != 0:
            raise SystemExit(code)
        report = out / f"report_{trained}"
        run(
            ["audit", "--model", str(model), "--data", str(csv), "--out", str(report)]
            + ["--audits", "performance,fairness,labels", "--sensitive", "Sex"]
            + ["--policy", str(out / "policy.toml"), "--findings", ",".join(FINDINGS)]
            + ["--no-progress"]
            + cols
        )
        doc = json.loads((report / "audit.json").read_text())
        sec = doc["sections"][f"labels[{FINDINGS[0]}]"]
        head = pd.DataFrame(sec["tables"]["sensitivity_headline"])
        rows += [{"trained_with": trained, **r} for r in head.to_dict("records")]
    table = pd.DataFrame(rows).rename(columns={"policy": "audited_with"})
    cols_out = ["trained_with", "audited_with", "n", "n_pos", "auroc", "sensitivity", "specificity"]
    shown = table[cols_out].round(3).astype(str)
    lines = ["| " + " | ".join(cols_out) + " |", "|" + "---|" * len(cols_out)]
    lines += ["| " + " | ".join(r) + " |" for r in shown.to_numpy().tolist()]
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return table


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("chexpert_example"))
    ap.add_argument("--quick", action="store_true", help="Tiny settings (a smoke run).")
    args = ap.parse_args()
    if args.quick:
        main(args.out, patients_per_site=20, epochs=1)
    else:
        main(args.out)
