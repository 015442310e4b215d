"""Time the full privacy audit with 1 and with 8 reference models against one training run.

The peer is the target model's own training: a reference model costs about one training
run of the target (same architecture, recipe and training-set size), so the full audit
with K reference models should cost about K training runs divided by the worker
processes, plus the attacks' forward passes. Also times a second audit that finds every
reference model in the cache.

Usage: python benchmarks/membership.py [--image-size 64] [--patients 200] [--epochs 10]
       [--workers 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from medaudit.attacks.membership import MembershipAudit, MembershipSettings
from medaudit.data import generate_hospitals
from medaudit.models import build_model, compute_normalization, train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patients", type=int, default=200, help="member patients (~3 images)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.image_size, args.patients, args.epochs = 32, 40, 2
    torch.set_num_threads(1)
    n_sites = 4
    c = generate_hospitals(
        n_sites=n_sites,
        patients_per_site=args.patients,
        image_size=args.image_size,
        heldout_site=None,
        seed=0,
    )
    units = np.asarray(sorted(c.meta["patient_id"].unique()), dtype=object)
    np.random.default_rng(0).shuffle(units)
    pid = c.meta["patient_id"].to_numpy()
    q = len(units) // 4
    members = c.subset(np.isin(pid, units[:q]))
    non_members = c.subset(np.isin(pid, units[q : 2 * q]))
    population = c.subset(np.isin(pid, units[2 * q :]))  # pool half = as many as members
    mean, std = compute_normalization(members)

    t0 = time.perf_counter()
    model = build_model("small_cnn", random_state=0)
    train_model(
        model,
        members,
        None,
        epochs=args.epochs,
        batch_size=32,
        seed=0,
        patience=None,
        mean=mean,
        std=std,
    )
    t_train = time.perf_counter() - t0

    audit = MembershipAudit(
        model,
        members,
        non_members,
        population,
        arch="small_cnn",
        image_size=args.image_size,
        mean=mean,
        std=std,
    )
    training = audit.reference_training(epochs=args.epochs, batch_size=32)
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        for k in (1, 8):
            t0 = time.perf_counter()
            res = audit.run(
                MembershipSettings(reference_models=k),
                training=training,
                cache_dir=os.path.join(cache, str(k)),
                workers=args.workers,
            )
            times[k] = time.perf_counter() - t0
            refs = res.references
        t0 = time.perf_counter()
        audit.run(
            MembershipSettings(reference_models=8),
            training=training,
            cache_dir=os.path.join(cache, "8"),
            workers=args.workers,
        )
        t_warm = time.perf_counter() - t0
    print(
        f"cores: {os.cpu_count()}  backend (K=8): {refs['backend']}  "
        f"members {len(members)}, non-members {len(non_members)}, population "
        f"{len(population)}, {args.image_size}x{args.image_size}, {args.epochs} epochs"
    )
    print(f"one training run of the target:   {t_train:8.1f} s  (1.00x)")
    for k, t in times.items():
        print(f"full privacy audit, K = {k}:        {t:8.1f} s  ({t / t_train:.2f}x)")
    print(f"again, K = 8, all from the cache:  {t_warm:8.1f} s  ({t_warm / t_train:.2f}x)")


if __name__ == "__main__":
    main()
