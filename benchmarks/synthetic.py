"""Throughput of the synthetic hospitals generator on ONE CPU core.

Peer: the project's target of 2,000 images of 64 x 64 per second on one core. Prints the
best-of-N rate of ``generate_hospitals`` (in-memory Cohort) and of ``write_synthetic``
(PNG files + manifest), each as a ratio against the target.

    python benchmarks/synthetic.py [--patients 400] [--size 64] [--repeats 3] [--json] [--no-write]
"""

from __future__ import annotations

import os

# One core: pin the process and keep BLAS/OpenMP single-threaded before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from medaudit.data.synthetic import generate_hospitals, write_synthetic  # noqa: E402

TARGET = 2000.0  # images per second, 64 x 64, one core


def _best(fn, repeats: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=400, help="patients per site (4 sites)")
    ap.add_argument("--size", type=int, default=64, help="image size in pixels")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    ap.add_argument("--no-write", action="store_true", help="skip the write_synthetic run")
    args = ap.parse_args()
    kwargs = {"patients_per_site": args.patients, "image_size": args.size, "seed": 0}

    generate_hospitals(patients_per_site=5, image_size=args.size)  # warm imports
    gen_s, n = _best(lambda: len(generate_hospitals(**kwargs)), args.repeats)

    def write() -> int:
        with tempfile.TemporaryDirectory() as d:
            write_synthetic(d, **kwargs)
        return n

    write_s = float("nan") if args.no_write else _best(write, max(1, args.repeats - 1))[0]
    gen_rate, write_rate = n / gen_s, n / write_s
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"synthetic hospitals: {n} images of {args.size}x{args.size}, {cores} core(s)")
    print(
        f"  generate_hospitals: {gen_rate:8.0f} images/s  "
        f"({gen_rate / TARGET:.2f}x the {TARGET:.0f}/s target)"
    )
    if not args.no_write:
        print(
            f"  write_synthetic   : {write_rate:8.0f} images/s  "
            f"({write_rate / TARGET:.2f}x the {TARGET:.0f}/s target; includes PNG encoding)"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "images": n,
                    "image_size": args.size,
                    "images_per_second": round(gen_rate, 1),
                    "write_images_per_second": None if args.no_write else round(write_rate, 1),
                    "ratio_vs_target": round(gen_rate / TARGET, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
