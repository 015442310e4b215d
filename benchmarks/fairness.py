"""Speed of medaudit's fairness statistics against Fairlearn and a plain numpy/sklearn loop.

    python benchmarks/fairness.py                      # Fairlearn timed at 5 and 20 resamples
    python benchmarks/fairness.py --fairlearn-boot 200 # Fairlearn's full 200 resamples
    python benchmarks/fairness.py --csv                # also `medaudit check` on a 10M-row CSV

1. 100,000 rows x 2 attributes (sex: 2 groups, site: 4 groups) x 200 bootstrap resamples,
   the same 13 metrics on all sides (``medaudit.fairness.metricframe`` builds the
   equivalent MetricFrame), one MetricFrame per attribute as medaudit reports each.

   What is compared, honestly:

   - **Fairlearn** ``MetricFrame(n_boot=...)`` resamples rows of the whole table without
     stratification (group and class sizes vary between resamples) and recomputes every
     metric per resample in a Python loop. Its cost is ``setup + n_boot * per_resample``;
     both are measured from two runs (``--fairlearn-boot`` and a quarter of it) and only
     the per-resample part is scaled to 200, so the one-off setup (validation, grouping,
     point estimates) is counted once.
   - **medaudit** resamples rows (every row is a patient here: no patient ids) within each
     group, and within each class for the class-conditional metrics (Rao-Wu rescaled),
     and evaluates all resamples at once on score histograms; it also computes the
     simultaneous gap intervals and their p-values, which the others do not.
   - **plain loop**: the same stratified design as medaudit, written as the obvious
     numpy/scikit-learn loop (draw indices per group, compute the 13 metrics with
     ``sklearn.metrics`` per group per resample); timed on a few resamples and scaled.

   Point estimates are compared with Fairlearn's (max absolute difference printed).
2. 10,000,000 rows x 2 attributes x 1,000 resamples (binned bootstrap), with and without
   permutation p-values; wall and CPU seconds (the target, <= 60 s, is for 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from medaudit.fairness import group_metrics, metricframe
from medaudit.stats import calibration_error


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


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def fairlearn_time(y, s, groups, n_boot: int) -> tuple[float, pd.DataFrame]:
    """Seconds for one MetricFrame per attribute with ``n_boot`` resamples (0: none)."""
    total, frames = 0.0, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fairlearn/sklearn warnings are not what is timed
        for attr in groups.columns:
            kw = (
                {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": 0}
                if n_boot
                else {}
            )
            mf, t = _timed(lambda a=attr, k=kw: metricframe(y, s, groups[a], **k))
            total += t
            frames[attr] = mf.by_group
    return total, pd.concat(frames)


def _metrics(y: np.ndarray, s: np.ndarray, thr: float = 0.5) -> list[float]:
    from sklearn.metrics import (
        balanced_accuracy_score,
        brier_score_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    p = (s >= thr).astype(int)
    tpr = recall_score(y, p, zero_division=np.nan)
    tnr = recall_score(1 - y, 1 - p, zero_division=np.nan)
    return [
        len(y),
        float(np.mean(y)),
        roc_auc_score(y, s),
        tpr,
        tnr,
        1 - tnr,
        1 - tpr,
        precision_score(y, p, zero_division=np.nan),
        float(np.mean(p)),
        balanced_accuracy_score(y, p),
        brier_score_loss(y, s),
        calibration_error(y, s),
        1 - tpr,
    ]


def plain_loop_time(y, s, groups, n_boot: int) -> float:
    """Seconds per resample of the obvious loop (same stratified design as medaudit)."""
    rng = np.random.default_rng(0)
    index = {
        a: [np.flatnonzero((groups[a] == g).to_numpy()) for g in groups[a].cat.categories]
        for a in groups.columns
    }
    t0 = time.perf_counter()
    for _ in range(n_boot):
        for members in index.values():
            for m in members:
                by_class = [m[y[m] == c] for c in (0, 1)]
                draw = np.concatenate([rng.choice(c, len(c)) for c in by_class])
                _metrics(y[draw], s[draw])
    return (time.perf_counter() - t0) / n_boot


def bench_vs_fairlearn(n: int, n_boot: int, fl_boot: int, loop_boot: int) -> None:
    y, s, groups = make(n)
    gm, t_med = _timed(lambda: group_metrics(y, s, groups=groups, n_boot=n_boot))
    lo = max(1, fl_boot // 4)
    t_lo, _ = fairlearn_time(y, s, groups, lo)
    t_hi, theirs = fairlearn_time(y, s, groups, fl_boot)
    per = (t_hi - t_lo) / (fl_boot - lo)
    setup = max(t_lo - lo * per, 0.0)
    t_fl = setup + n_boot * per
    worst = 0.0
    for attr in groups.columns:
        ours = gm.by_group(attr).set_index("group")
        th = theirs.loc[attr]
        th.index = th.index.astype(str)
        worst = max(worst, float((th - ours.loc[th.index, th.columns]).abs().max().max()))
    t_loop = plain_loop_time(y, s, groups, loop_boot) * n_boot
    tag = (
        ""
        if fl_boot == n_boot
        else f" (setup {setup:.2f} s + {n_boot} x {per:.3f} s, measured at {lo} and {fl_boot})"
    )
    print(f"rows={n:,} attributes=2 resamples={n_boot} metrics=13")
    print(f"  medaudit group_metrics (+ gap CIs, p-values): {t_med:8.2f} s")
    print(f"  fairlearn MetricFrame(n_boot):                {t_fl:8.2f} s{tag}")
    print(
        f"  plain numpy/sklearn loop:                     {t_loop:8.2f} s "
        f"(timed on {loop_boot} resamples)"
    )
    print(f"  max |point estimate difference| vs Fairlearn: {worst:.2e}")
    print(f"fairness x fairlearn: {t_fl / t_med:.1f}x")
    print(f"fairness x plain loop: {t_loop / t_med:.1f}x")


def bench_large(n: int, n_boot: int, with_csv: bool) -> None:
    y, s, groups = make(n, seed=1)
    c0 = time.process_time()
    gm, t1 = _timed(lambda: group_metrics(y, s, groups=groups, n_boot=n_boot))
    c1 = time.process_time() - c0
    c0 = time.process_time()
    _, t2 = _timed(
        lambda: group_metrics(
            y, s, groups=groups, n_boot=n_boot, p_method="permutation", n_permutations=1000
        )
    )
    c2 = time.process_time() - c0
    print(f"rows={n:,} attributes=2 resamples={n_boot} exact={gm.exact}")
    print(f"  bootstrap CIs + gap p-values:     {t1:8.2f} s wall, {c1:8.2f} s CPU (target <= 60 s)")
    print(f"  + 1000 permutations (p-values):   {t2:8.2f} s wall, {c2:8.2f} s CPU")
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
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
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
    ap.add_argument("--fairlearn-boot", type=int, default=20)
    ap.add_argument("--loop-boot", type=int, default=5)
    ap.add_argument("--large-rows", type=int, default=10_000_000)
    ap.add_argument("--large-boot", type=int, default=1000)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--csv", action="store_true", help="also time `medaudit check` on a CSV")
    a = ap.parse_args()
    if not a.skip_small:
        bench_vs_fairlearn(a.rows, a.boot, a.fairlearn_boot, a.loop_boot)
    if not a.skip_large:
        bench_large(a.large_rows, a.large_boot, a.csv)


if __name__ == "__main__":
    main()
