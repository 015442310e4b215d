"""Images per second through `medaudit.inference.predict`, against a bare `model(x)` loop.

Usage: python benchmarks/inference.py [--images 48] [--batch-size 16] [--threads 1]
       [--workers 2] [--repeats 3] [--archs resnet18,densenet121] [--device cpu]

For each architecture at 224x224 (one channel, random initialisation) it times, on the
same images and with the same batch size and torch threads:

- ``bare``: ``model(x)`` over float tensors already normalised and in memory (the peer:
  what the hardware does with no data path at all);
- ``predict (in-memory)``: :func:`medaudit.inference.predict` on a Cohort holding uint8
  images (scaling, normalisation, features + head, softmax, per-sample loss, hashes);
- ``predict (disk, workers=0)`` and ``predict (disk, workers=N)``: the same images as
  PNG files of a manifest, decoded in-process or in N DataLoader worker processes.

After a warm-up pass of each, the variants run in ``--repeats`` interleaved rounds and
the fastest round of each counts (the least disturbed by other processes); the
in-process variants are also timed by this process's CPU time, which other processes'
load hardly changes. The goal (issue 7): ``predict`` at >= 0.9x
the bare loop, i.e. the pipeline adds nothing that matters.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaudit.data import Cohort, load_cohort
from medaudit.inference import predict
from medaudit.models import build_model

SIZE = 224
MEAN, STD = 0.45, 0.25


def _time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Best wall and process-CPU seconds of each function, run in interleaved rounds.

    Interleaving spreads other processes' load evenly over the variants; the fastest
    round of each is the least disturbed. Process CPU time counts this process only
    (not DataLoader workers), so it is reported for the in-process variants.
    """
    for fn in fns.values():
        fn()  # warm-up: allocator, oneDNN primitives, worker start-up paths
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def _write_pngs(images: np.ndarray, root: Path) -> Path:
    from PIL import Image

    (root / "img").mkdir(parents=True)
    names = []
    for i, img in enumerate(images[:, 0]):
        names.append(f"img/{i:04d}.png")
        Image.fromarray(img).save(root / names[-1])
    labels = np.arange(len(images)) % 2
    pd.DataFrame({"path": names, "label": labels}).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def bench_arch(
    arch: str, images: np.ndarray, disk: Cohort, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    model = build_model(arch, in_channels=1, num_classes=2, random_state=0).eval()
    model = model.to(args.device)
    labels = np.arange(len(images)) % 2
    mem = Cohort(pd.DataFrame({"label": labels}), images=images, name="in-memory")
    x_all = ((torch.from_numpy(images).float() / 255.0 - MEAN) / STD).to(args.device)
    bs = args.batch_size

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(x_all), bs):
                model(x_all[i : i + bs])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(cohort: Cohort, workers: int) -> Callable[[], object]:
        return lambda: predict(
            model,
            cohort,
            batch_size=bs,
            mean=MEAN,
            std=STD,
            device=args.device,
            workers=workers,
        )

    fns = {
        "bare model(x)": bare,
        "predict (in-memory)": run(mem, 0),
        "predict (disk, workers=0)": run(disk, 0),
        f"predict (disk, workers={args.workers})": run(disk, args.workers),
    }
    n = len(images)
    return {
        k: (n / wall, n / cpu) for k, (wall, cpu) in _time_interleaved(fns, args.repeats).items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--archs", default="resnet18,densenet121")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 1, SIZE, SIZE), dtype=np.uint8)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"device {args.device}; {args.images} images {SIZE}x{SIZE}x1, "
        f"batch {args.batch_size}, best of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        disk = load_cohort(_write_pngs(images, Path(tmp)))
        for arch in args.archs.split(","):
            rates = bench_arch(arch, images, disk, args)
            bare_wall, bare_cpu = rates["bare model(x)"]
            print(f"{arch}:  (images/s by wall time; by this process's CPU time)")
            for name, (wall, cpu) in rates.items():
                line = f"  {name:<27} {wall:8.1f} img/s"
                if not name.startswith("bare"):
                    line += f"  {wall / bare_wall:.2f}x bare"
                if "workers=0" in name or "in-memory" in name or name.startswith("bare"):
                    line += f"   | CPU {cpu:8.1f} img/s"
                    if not name.startswith("bare"):
                        line += f"  {cpu / bare_cpu:.2f}x bare"
                print(line, flush=True)


if __name__ == "__main__":
    main()
