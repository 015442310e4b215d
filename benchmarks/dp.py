"""Cost of differential privacy, and of medaudit's DP wrapper against raw Opacus.

    python benchmarks/dp.py                 # 64x64 synthetic hospitals, 3 repeats
    python benchmarks/dp.py --size 32 --repeats 1

One run prints two ratios, each measured in the same process on the same data:

1. one training epoch of small_cnn_gn with DP-SGD (medaudit.privacy.train_private,
   Poisson batches of 64 expected, sigma = 1) / without (medaudit.models.train_model,
   shuffled batches of 64). Goal: <= 3x.
2. one DP epoch through medaudit (make_private's hooks in the one training loop) / the
   same model, optimizer, sigma and clipping through raw Opacus
   (PrivacyEngine.make_private + a plain DataLoader loop over the same normalised tensor).
   Goal: <= 1.05x.

Epoch times exclude validation and set-up; each is the fastest of ``--repeats`` runs (the
minimum is the least disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch import nn

from medaudit.data import generate_hospitals
from medaudit.models import build_model, compute_normalization, train_model
from medaudit.privacy import train_private
from medaudit.privacy._engine import MSG_TORCH_HOOK_WARNING


def plain_epoch(train, mean, std) -> float:
    res = train_model(
        build_model("small_cnn_gn", random_state=0),
        train,
        epochs=1,
        batch_size=64,
        mean=mean,
        std=std,
        seed=0,
    )
    return float(res.history["seconds"].iloc[0])


def medaudit_dp_epoch(train, mean, std) -> float:
    res = train_private(
        build_model("small_cnn_gn", random_state=0),
        train,
        epochs=1,
        batch_size=64,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        mean=mean,
        std=std,
        seed=0,
        accountant="rdp",
    )
    return float(res.training.history["seconds"].iloc[0])


def opacus_dp_epoch(x: torch.Tensor, y: torch.Tensor) -> float:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = build_model("small_cnn_gn", random_state=0)
    for m in model.modules():  # as medaudit does: Opacus's hooks refuse in-place ReLUs
        if isinstance(m, nn.ReLU):
            m.inplace = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # secure RNG off; torch's hook note
        engine = PrivacyEngine(accountant="rdp")
        gsm, dp_opt, dp_loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )
        gsm.train()
        t0 = time.perf_counter()
        for xb, yb in dp_loader:
            dp_opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(gsm(xb), yb).backward()
            dp_opt.step()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--patients-per-site", type=int, default=260)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", MSG_TORCH_HOOK_WARNING, UserWarning)

    cohort = generate_hospitals(
        patients_per_site=args.patients_per_site, image_size=args.size, seed=0
    )
    train = cohort.split("train")
    mean, std = compute_normalization(train)
    x = (torch.from_numpy(train.load_all()) - mean[0]) / std[0]
    y = torch.tensor(np.asarray(train.labels), dtype=torch.int64)
    print(
        f"small_cnn_gn, {len(train)} training images of {args.size}x{args.size}, "
        f"1 thread, best of {args.repeats}"
    )

    times: dict[str, list[float]] = {"plain": [], "medaudit_dp": [], "opacus_dp": []}
    for _ in range(args.repeats):  # interleaved, so that load changes hit all three
        times["plain"].append(plain_epoch(train, mean, std))
        times["medaudit_dp"].append(medaudit_dp_epoch(train, mean, std))
        times["opacus_dp"].append(opacus_dp_epoch(x, y))
    best = {k: min(v) for k, v in times.items()}
    for k, v in best.items():
        print(f"  {k:<12} epoch {v:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[k])})")
    print(
        f"DP / non-DP epoch (medaudit):   {best['medaudit_dp'] / best['plain']:.2f}x  (goal <= 3x)"
    )
    print(
        f"medaudit DP / raw Opacus epoch: {best['medaudit_dp'] / best['opacus_dp']:.2f}x  "
        "(goal <= 1.05x)"
    )


if __name__ == "__main__":
    main()
