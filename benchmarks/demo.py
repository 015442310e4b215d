"""Time the main job (`medaudit demo`) end to end and per stage.

Usage: python benchmarks/demo.py [--quick]
Target (issue #2): under 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from medaudit.demo import DemoSettings, run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_demo(tmp, seed=args.seed, settings=settings, progress=False)
        total = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(tmp, "index.html"))
    stages = res.report.meta["timings_seconds"]
    print(f"cores: {os.cpu_count()}  torch threads: {__import__('torch').get_num_threads()}")
    for k, v in stages.items():
        print(f"  {k:<12} {v:8.2f} s")
    print(f"demo total: {total:.1f} s (target < 180 s): {180 / total:.1f}x under budget")
    print(f"index.html: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
