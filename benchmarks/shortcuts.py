"""Cost of the shortcut audit against the clean inference pass it builds on (issue 12).

    python benchmarks/shortcuts.py            # demo data, small_cnn trained 2 epochs
    python benchmarks/shortcuts.py --repeats 5

Target: the shortcut audit (probes with controls, aligned/conflicting, the counterfactual
marker swap, captum occlusion maps, matching and KS tests, the section with its figure)
costs at most 2x one clean inference pass over the same audited images. Both are timed in
the same process on one torch thread, after a warm-up run (imports and first-call costs
excluded from both), and the median of ``--repeats`` runs is reported. The clean pass is
``medaudit.inference.predict`` (scores and features, no cache).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medaudit.demo import DemoSettings
from medaudit.inference import predict
from medaudit.models import build_model, compute_normalization, train_model
from medaudit.registry import AuditContext, get_audit
from medaudit.report import Policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = DemoSettings()
    cohort = s.cohort(0)
    train, val = cohort.split("train"), cohort.split("val")
    audited = cohort.subset(cohort.meta["split"].isin(["test", "external"]).to_numpy())
    mean, std = compute_normalization(train)
    model = build_model(s.arch, random_state=0)
    train_model(model, train, val, epochs=args.epochs, batch_size=s.batch_size, mean=mean, std=std)
    # As `medaudit demo` runs it: the planted marker is examined too.
    attrs = ["site", "marker", "sex", "age_group", "insurance"]
    policy = Policy.from_mapping(
        {"settings": {"n_bootstrap": s.n_bootstrap, "shortcuts": {"attributes": attrs}}}
    )
    spec = get_audit("shortcuts")
    info = {"arch": s.arch, "image_size": s.image_size, "in_channels": 1, "mean": mean, "std": std}

    def clean() -> object:
        return predict(model, audited, mean=mean, std=std)

    preds = clean()

    def shortcut_audit() -> object:
        ctx = AuditContext(
            predictions=preds,
            cohort=audited,
            policy=policy,
            sensitive=["sex", "age_group", "insurance"],
            train=train,
            model=model,
            model_info=info,
        )
        return spec.audit(ctx)

    shortcut_audit()  # warm-up: imports (captum, scipy.stats) and first calls
    t_clean, t_audit = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        clean()
        t_clean.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sec = shortcut_audit()
        t_audit.append(time.perf_counter() - t0)
    c, a = statistics.median(t_clean), statistics.median(t_audit)
    print(f"audited images: {len(audited)} of {s.image_size}x{s.image_size}, arch {s.arch}")
    print(f"  clean inference pass (predict):   {c:6.2f} s  (runs: {_fmt(t_clean)})")
    print(f"  shortcut audit:                   {a:6.2f} s  (runs: {_fmt(t_audit)})")
    print(f"  checks: {len(sec.checks)}, tables: {len(sec.tables)}, figures: {len(sec.figures)}")  # type: ignore[attr-defined]
    print(f"shortcuts / clean pass: {a / c:.2f}x (target <= 2.00x)")


def _fmt(ts: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in ts)


if __name__ == "__main__":
    main()
