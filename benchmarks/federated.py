"""Wall time of a federated simulation against centralised training for the same epochs.

    python benchmarks/federated.py                  # 4 sites x 150 patients, 5 rounds
    python benchmarks/federated.py --rounds 3 --patients 60 --size 32

The peer is centralised training on the pooled data with the same training loop for the
same total epochs (rounds x local epochs), on the same machine, in the same run, with one
torch thread and with one per CPU (the faster of the two is the peer). Flower's
simulation engine runs one Ray worker per CPU; each site trains in one of them. Reported:

- Ray start-up: from the call to Flower's ``run_simulation`` until every site has
  described its data (Ray, its workers, torch and medaudit imported in each);
- the training rounds (local training, aggregation and each site's evaluation);
- the final site reports and the federated audit;
- ratio = training rounds / centralised training (goal <= 3x), and the same with
  everything but Ray's start-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from medaudit.data import load_cohort, partition_by_site
from medaudit.data.synthetic import write_synthetic
from medaudit.federated import FederatedSettings, concat_cohorts, prepare_sites, simulate_sites
from medaudit.models import build_model, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--patients", type=int, default=150, help="patients per site")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_synthetic(
            tmp,
            n_sites=args.sites,
            patients_per_site=args.patients,
            image_size=args.size,
            heldout_site=None,
            seed=0,
        )
        cohort = load_cohort(manifest)
        settings = FederatedSettings(
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            local_baseline=False,
            n_bootstrap=100,
        )
        sites = prepare_sites(cohort, partition_by_site(cohort), settings=settings)
        n_train = sum(s.counts["n_train"] for s in sites.values())
        print(
            f"sites={args.sites} images={len(cohort)} (train {n_train}) size={args.size} "
            f"rounds={args.rounds} local_epochs={args.local_epochs} cpus={args.cpus}"
        )
        t0 = time.perf_counter()
        run = simulate_sites(sites, settings=settings, cpus=args.cpus)
        wall = time.perf_counter() - t0

        # The peer: the same loop on the pooled training data in one process, with one
        # torch thread and with one per CPU; the faster of the two is the peer.
        mc = run.model_config
        pooled = concat_cohorts([s.train for s in sites.values()], name="pooled")
        central_by_threads = {}
        for threads in sorted({1, args.cpus}):
            torch.set_num_threads(threads)
            model = build_model(
                str(mc["arch"]),
                in_channels=int(mc["in-channels"]),
                num_classes=int(mc["num-classes"]),
                random_state=0,
            )
            t0 = time.perf_counter()
            train_model(
                model,
                pooled,
                None,
                epochs=args.rounds * args.local_epochs,
                patience=None,
                batch_size=settings.batch_size,
                lr=settings.lr,
                image_size=int(mc["image-size"]),
                in_channels=int(mc["in-channels"]),
                mean=list(mc["mean"]),
                std=list(mc["std"]),
            )
            central_by_threads[threads] = time.perf_counter() - t0
        central = min(central_by_threads.values())

    t = run.timings
    startup, rounds = float(t["connect_s"]), float(t["rounds_s"])
    after = wall - startup
    print(f"  Ray start-up (until every site described its data): {startup:7.1f} s")
    print(f"  federated training rounds (train + aggregate + eval): {rounds:7.1f} s")
    print(f"  site reports + federated audit:                       {after - rounds:7.1f} s")
    print(f"  simulation wall time:                                 {wall:7.1f} s")
    for threads, secs in central_by_threads.items():
        print(
            f"  centralised training, {args.rounds * args.local_epochs} epochs, "
            f"{threads} torch thread(s):      {secs:7.1f} s"
        )
    print(f"federated rounds / centralised (the faster): {rounds / central:.2f}x (goal <= 3x)")
    print(f"simulation without Ray start-up / centralised: {after / central:.2f}x")


if __name__ == "__main__":
    main()
