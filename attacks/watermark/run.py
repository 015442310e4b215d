"""Red team: embed a watermark -> run each removal attack -> verify ownership again.

    python attacks/watermark/run.py            # the committed run (about 15 min on 1 core)
    python attacks/watermark/run.py --smoke    # a tiny run (CI)

The SoK on watermark robustness (Lukas et al., IEEE S&P 2022) found that most schemes
fall to fine-tuning or pruning, so robustness is measured here, never claimed. On the
synthetic hospitals (32 x 32, three sites, no held-out site) this script

1. trains an unmarked small_cnn (the owner's finished model) and independently trained
   unmarked "null" models (other seeds) that never see a key;
2. embeds the trigger-set and the harmless watermark by fine-tuning the finished model
   through the training loop's hooks, and reports for each: the ownership p-value, the
   clean test AUROC change with its patient-bootstrap CI, the top-1 agreement on the
   triggers (harmless) and the p-values of the null models (false claims);
3. runs every registered removal attack (fine-tuning on 10% and 20% of the clean data,
   global magnitude pruning 20-50%, 8- and 4-bit weight quantisation, and DP
   fine-tuning when medaudit.privacy is installed) on each marked model and re-verifies;
   an attack setting counts only while test accuracy stays within 5 points (the SoK's
   criterion);
4. protects the training images with ``protect_images``' default (adversarial
   perturbations on each image's significant pixels, SALM's sparse masking) and trains the
   same model on the protected and on the original images (clean test AUROC of each), with
   the PSNR/SSIM of the protected images.

Writes ``robustness.csv`` and ``summary.md`` into this folder and a medaudit report
(index.html + audit.json) into ``reports/watermark/``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaudit.data import generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, compute_normalization, train_model
from medaudit.report import Policy, Report
from medaudit.watermark import (
    DEFAULT_TRIGGERS,
    AttackData,
    WatermarkKey,
    as_scorer,
    assess_robustness,
    embed_watermark,
    list_removal_attacks,
    protect_images,
    protection_evidence,
    protection_section,
    robustness_section,
    utility_change,
    verify_watermark,
    watermark_section,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass(frozen=True)
class Settings:
    """Sizes of the run (``smoke()``: the tiny CI run)."""

    patients_per_site: int = 150
    image_size: int = 32
    epochs: int = 15
    null_models: int = 5
    null_epochs: int = 8
    steps: int = 150
    attack_epochs: int = 10
    protect_patients: int = 80
    protect_epochs: int = 10
    seed: int = 0

    @classmethod
    def smoke(cls) -> Settings:
        """A run of seconds that exercises every step."""
        return cls(
            patients_per_site=20,
            image_size=16,
            epochs=1,
            null_models=1,
            null_epochs=1,
            steps=4,
            attack_epochs=1,
            protect_patients=10,
            protect_epochs=1,
        )


def _data(s: Settings, patients: int):
    c = generate_hospitals(
        n_sites=3,
        patients_per_site=patients,
        image_size=s.image_size,
        seed=s.seed,
        heldout_site=None,
        split_fractions=(0.6, 0.1, 0.3),
    )
    return c.split("train"), c.split("test")


def _train(train, s: Settings, seed: int, epochs: int, opts: dict):
    model = build_model("small_cnn", random_state=seed)
    train_model(
        model,
        train,
        None,
        epochs=epochs,
        seed=seed,
        patience=None,
        mean=opts["mean"],
        std=opts["std"],
        image_size=s.image_size,
    )
    return model.eval()


def _scores(model, cohort, opts):
    return predict(model, cohort, features=False, **opts).scores


def run(s: Settings, out_dir: Path, table_dir: Path) -> Report:
    """Embed, attack, verify and protect; write the report and the tables."""
    torch.set_num_threads(1)
    t0 = time.time()
    train, test = _data(s, s.patients_per_site)
    mean, std = compute_normalization(train)
    opts = {"image_size": s.image_size, "in_channels": 1, "mean": mean, "std": std}
    base = _train(train, s, s.seed, s.epochs, opts)
    nulls = [_train(train, s, s.seed + 1 + i, s.null_epochs, opts) for i in range(s.null_models)]
    policy = Policy.default()
    pid = test.meta["patient_id"].to_numpy()
    sections, rows, headline = [], [], []
    data = AttackData(
        train=train,
        image_size=s.image_size,
        mean=mean,
        std=std,
        seed=s.seed,
        epochs=s.attack_epochs,
    )
    for i, kind in enumerate(("trigger", "harmless")):
        key = WatermarkKey(
            20261130 + i, n_triggers=DEFAULT_TRIGGERS[kind], image_size=s.image_size, kind=kind
        )
        emb = embed_watermark(
            copy.deepcopy(base),
            train,
            key,
            epochs=1,
            max_steps=s.steps,
            mean=mean,
            std=std,
            seed=s.seed,
        )
        v = verify_watermark(as_scorer(emb.model, **opts), key)
        null_p = [verify_watermark(as_scorer(m, **opts), key).p_value for m in nulls]
        u = utility_change(
            test.labels,
            _scores(base, test, opts),
            _scores(emb.model, test, opts),
            patient_ids=pid,
            random_state=s.seed,
        )
        agree = None
        if kind == "harmless":
            agree = (int(round(emb.top1_agreement * key.n_triggers)), key.n_triggers)
        sec = watermark_section(
            v,
            policy=policy,
            utility=u,
            top1_agreement=agree,
            name=f"watermark_{kind}",
            title=f"Ownership: the {kind} watermark",
            notes=[
                f"Unmarked models trained independently (seeds {s.seed + 1}-"
                f"{s.seed + s.null_models}) give p-values "
                + ", ".join(f"{p:.2g}" for p in null_p)
                + "."
            ],
        )
        sec.tables["null_models"] = pd.DataFrame(
            {"null_model_seed": [s.seed + 1 + j for j in range(len(nulls))], "p_value": null_p}
        )
        sec.table_titles["null_models"] = "Independently trained unmarked models (false claims)"
        sections.append(sec)
        rob = assess_robustness(emb.model, key, data=data, test=test)
        sections.append(robustness_section(rob, policy=policy))
        rows.append(rob.table.assign(watermark=kind))
        headline.append(
            {
                "watermark": kind,
                "p_value": v.p_value,
                "verified": v.verified,
                "trigger_fit": emb.trigger_fit,
                "top1_agreement": emb.top1_agreement,
                "auroc_before": u.auroc_before,
                "auroc_after": u.auroc_after,
                "auroc_change": u.auroc_change,
                "ci_low": u.auroc_change_ci[0],
                "ci_high": u.auroc_change_ci[1],
                "max_null_p": max(null_p),
                "min_null_p": min(null_p),
            }
        )
    ptrain, ptest = _data(s, s.protect_patients)
    prot = protect_images(ptrain, seed=s.seed)
    ev = protection_evidence(ptrain, prot, ptest, epochs=s.protect_epochs, seed=s.seed)
    sections.append(protection_section(prot, ev, policy=policy))
    report = Report(
        sections=sections,
        meta={
            "title": "Ownership watermarks and data protection: red-team run",
            "command": "python attacks/watermark/run.py",
            "seed": s.seed,
            "settings": s.__dict__,
            "attacks": list_removal_attacks(),
            "seconds": round(time.time() - t0, 1),
        },
    )
    report.save(out_dir)
    table = pd.concat(rows, ignore_index=True)
    table_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_dir / "robustness.csv", index=False, float_format="%.6g")
    _summary(pd.DataFrame(headline), table, prot, ev, table_dir / "summary.md")
    return report


def _summary(head, table, prot, ev, path: Path) -> None:
    lines = ["# Watermark red-team run", "", "## Ownership and clean utility", ""]
    lines += _markdown(head)
    lines += ["", "## Removal attacks (verdict per setting)", ""]
    cols = ["watermark", "attack", "setting", "p_value", "verified", "accuracy_change", "verdict"]
    lines += _markdown(table[cols])
    s = prot.summary()
    lines += [
        "",
        "## Data protection",
        "",
        f"Method {s['method']}: PSNR min {s['psnr_min']:.2f} dB "
        f"(mean {s['psnr_mean']:.2f}), SSIM min "
        f"{s['ssim_min']:.4f}; test AUROC trained on originals {ev.auroc_clean_trained:.3f} "
        f"[{ev.auroc_clean_ci[0]:.3f}, {ev.auroc_clean_ci[1]:.3f}], on protected images "
        f"{ev.auroc_protected_trained:.3f} [{ev.auroc_protected_ci[0]:.3f}, "
        f"{ev.auroc_protected_ci[1]:.3f}]; drop {ev.auroc_drop:.3f} "
        f"[{ev.auroc_drop_ci[0]:.3f}, {ev.auroc_drop_ci[1]:.3f}].",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _markdown(df: pd.DataFrame) -> list[str]:
    def fmt(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            return f"{v:.3g}"
        return str(v)

    out = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--smoke`` for the tiny run, ``--out`` / ``--tables`` for where."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "watermark")
    ap.add_argument("--tables", type=Path, default=HERE)
    args = ap.parse_args(argv)
    s = Settings.smoke() if args.smoke else Settings()
    run(s, args.out, args.tables)
    print(f"Wrote {args.out / 'index.html'} and {args.tables / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
