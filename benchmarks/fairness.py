"""Speed of medaudit's fairness statistics against Fairlearn's MetricFrame bootstrap.

    python benchmarks/fairness.py                      # full: Fairlearn with 200 resamples
    python benchmarks/fairness.py --fairlearn-boot 20  # Fairlearn timed on 20, scaled to 200
    python benchmarks/fairness.py --csv                # also `medaudit check` on a 10M-row CSV

1. 100,000 rows x 2 attributes (sex: 2 groups, site: 4 groups) x 200 bootstrap resamples,
   the same 13 metrics on both sides (medaudit.fairness.metricframe builds the equivalent
   MetricFrame), one MetricFrame per attribute as medaudit reports each attribute.
   Fairlearn's bootstrap cost is linear in n_boot (a Python loop over resamples), so a
   shorter run scaled up is reported as "extrapolated".
2. 10,000,000 rows x 2 attributes x 1,000 resamples (binned bootstrap), with and without
   1,000 permutations for the p-values.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from medaudit.fairness import group_metrics, metricframe


def make(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    groups = pd.DataFrame(
        {
            "sex": pd.Categorical(rng.choice(["F", "M"], n)),
            "site": pd.Categorical(rng.choice(["A", "B", "C", "D"], n)),
        }
    )
    y = (rng.random(n) < 0.3).astype(np.int8)
    s = 1 / (1 + np.exp(-rng.normal(1.6 * y - 0.8, 1.0)))
    return y, s.astype(np.float32).astype(np.float64), groups


def bench_vs_fairlearn(n: int, n_boot: int, fl_boot: int) -> None:
    y, s, groups = make(n)
    t0 = time.perf_counter()
    gm = group_metrics(y, s, groups=groups, n_boot=n_boot, n_permutations=0)
    t_med = time.perf_counter() - t0
    t_fl = 0.0
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fairlearn/sklearn warnings are not what is timed
        for attr in groups.columns:
            t0 = time.perf_counter()
            mf = metricframe(
                y, s, groups[attr], n_boot=fl_boot, ci_quantiles=[0.025, 0.975], random_state=0
            )
            t_fl += time.perf_counter() - t0
            ours = gm.by_group(attr).set_index("group")
            theirs = mf.by_group
            theirs.index = theirs.index.astype(str)
            worst = max(
                worst, float((theirs - ours.loc[theirs.index, theirs.columns]).abs().max().max())
            )
    scaled = t_fl * n_boot / fl_boot
    tag = "" if fl_boot == n_boot else f" (extrapolated from n_boot={fl_boot})"
    print(f"rows={n:,} attributes=2 resamples={n_boot} metrics=13")
    print(f"  medaudit group_metrics:           {t_med:8.2f} s")
    print(f"  fairlearn MetricFrame(n_boot):    {scaled:8.2f} s{tag}")
    print(f"  max |point estimate difference|:  {worst:.2e}")
    print(f"fairness x fairlearn: {scaled / t_med:.1f}x")


def bench_large(n: int, n_boot: int, with_csv: bool) -> None:
    y, s, groups = make(n, seed=1)
    t0 = time.perf_counter()
    gm = group_metrics(y, s, groups=groups, n_boot=n_boot, n_permutations=0)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    group_metrics(y, s, groups=groups, n_boot=n_boot, n_permutations=1000)
    t2 = time.perf_counter() - t0
    print(f"rows={n:,} attributes=2 resamples={n_boot} exact={gm.exact}")
    print(f"  bootstrap CIs only:               {t1:8.2f} s (target <= 60 s)")
    print(f"  + 1000 permutations (p-values):   {t2:8.2f} s")
    if with_csv:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from medaudit.cli.app import run

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "preds.csv")
            tbl = pa.table(
                {
                    "label": y,
                    "score": s,
                    "sex": groups["sex"].astype(str),
                    "site": groups["site"].astype(str),
                }
            )
            pacsv.write_csv(tbl, path)
            t0 = time.perf_counter()
            with open(os.devnull, "w") as devnull:
                import contextlib

                with contextlib.redirect_stdout(devnull):
                    rc = run(["check", "--predictions", path, "--sensitive", "sex,site"])
            t3 = time.perf_counter() - t0
            size = os.path.getsize(path) / 2**20
        print(
            f"  medaudit check on {size:.0f} MiB CSV (read + audit + intersections, "
            f"policy n_bootstrap=1000): {t3:.2f} s, exit {rc}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--fairlearn-boot", type=int, default=200)
    ap.add_argument("--large-rows", type=int, default=10_000_000)
    ap.add_argument("--large-boot", type=int, default=1000)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--csv", action="store_true", help="also time `medaudit check` on a CSV")
    a = ap.parse_args()
    bench_vs_fairlearn(a.rows, a.boot, a.fairlearn_boot)
    if not a.skip_large:
        bench_large(a.large_rows, a.large_boot, a.csv)


if __name__ == "__main__":
    main()
