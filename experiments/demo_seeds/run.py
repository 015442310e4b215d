"""The demo's planted findings over seeds and torch thread counts (issue 7, item 5).

    python experiments/demo_seeds/run.py                      # seeds 0-9 on 1 thread,
                                                              # seed 0 on 2 (~15 min)
    python experiments/demo_seeds/run.py --seeds 0,1 --threads 1   # a smaller run
    python experiments/demo_seeds/run.py --jobs 2             # two demos at a time

For each run: ``medaudit demo``'s pipeline (``medaudit.demo.run_demo``) with that seed and
``DemoSettings.torch_threads``; recorded are the performance AUROC, the hard subgroup's
AUROC gap (``fairness.sex.auroc_gap``) and the held-out site's AUROC gap
(``performance.site_auroc_gap``) with their status, and the failed checks. Writes
``results.csv`` and ``results.md`` beside this file (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from medaudit.demo import DemoSettings, run_demo
from medaudit.report import Report, atomic_write_text

HERE = Path(__file__).resolve().parent
CHECKS = {
    "sex_gap": "fairness.sex.auroc_gap",
    "site_gap": "performance.site_auroc_gap",
    "marker_used": "shortcuts.marker.used",
}
# The audits the planted findings are read from (the sweep skips the others' cost).
AUDITS = ("performance", "fairness", "shortcuts")


def one_run(seed: int, threads: int, audits: tuple[str, ...] | None = AUDITS) -> dict[str, object]:
    """Run the demo pipeline once and return the numbers the demo's findings rest on."""
    settings = dataclasses.replace(DemoSettings(), torch_threads=threads, audits=audits)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_demo(tmp, seed=seed, settings=settings, progress=False)
    return row_of(res.report, seed, threads, time.perf_counter() - t0)


def row_of(rep: Report, seed: int, threads: int, seconds: float) -> dict[str, object]:
    """The performance AUROC and the planted findings' checks of one demo report."""
    perf = rep.section("performance").tables["overall"]
    row: dict[str, object] = {
        "seed": seed,
        "threads": threads,
        "auroc": float(perf.loc[perf["metric"] == "AUROC", "value"].iloc[0]),
    }
    by_id = {c.id: c for c in rep.checks}
    for name, cid in CHECKS.items():
        c = by_id.get(cid)
        row[name] = float(c.value) if c is not None and c.value is not None else float("nan")
        row[f"{name}_status"] = c.status if c is not None else "absent"
    row["failed"] = ", ".join(c.id for c in rep.checks if c.status == "fail")
    row["seconds"] = round(seconds, 1)
    return row


def summarise(rows: list[dict[str, object]] | pd.DataFrame) -> dict[str, object]:
    """In how many runs each planted finding failed its check, and the AUROC spread."""
    df = pd.DataFrame(rows)
    out: dict[str, object] = {
        "runs": len(df),
        "auroc_spread": float(df["auroc"].max() - df["auroc"].min()),
    }
    for name in CHECKS:
        out[f"{name}_failed"] = int((df[f"{name}_status"] == "fail").sum())
    return out


def sweep(seeds: list[int], threads: list[int], jobs: int = 1) -> pd.DataFrame:
    """Every seed on the first thread count, seed ``seeds[0]`` on the others.

    ``jobs`` runs that many demos at a time, each in its own process (a run's numbers do
    not depend on it; its seconds do).
    """
    plan = [(s, threads[0]) for s in seeds] + [(seeds[0], t) for t in threads[1:]]
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for row in pool.map(one_run, *zip(*plan, strict=True)):
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    cols = ["seed", "threads", "auroc", "sex_gap", "sex_gap_status", "site_gap"]
    cols += ["site_gap_status", "marker_used", "marker_used_status", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        d = r._asdict()
        lines.append(
            "| "
            + " | ".join(f"{d[c]:.3f}" if isinstance(d[c], float) else str(d[c]) for c in cols)
            + " |"
        )
    spread = df["auroc"].max() - df["auroc"].min()
    return (
        "# The demo's findings over seeds and thread counts\n\n"
        f"`python experiments/demo_seeds/run.py` on {platform.machine()} "
        f"({platform.processor() or 'unknown CPU'}), Python {platform.python_version()}.\n\n"
        + "\n".join(lines)
        + f"\n\nPerformance AUROC range {df['auroc'].min():.3f}-{df['auroc'].max():.3f} "
        f"(spread {spread:.3f}); sex AUROC gap failed in "
        f"{int((df['sex_gap_status'] == 'fail').sum())} of {len(df)} runs, held-out-site "
        f"gap in {int((df['site_gap_status'] == 'fail').sum())} of {len(df)}, site marker "
        f"used in {int((df['marker_used_status'] == 'fail').sum())} of {len(df)}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--jobs", type=int, default=1, help="demos run at a time (default 1)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    df = sweep(seeds, [int(t) for t in a.threads.split(",")], jobs=a.jobs)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "results.csv", df.to_csv(index=False))
    text = markdown(df)
    atomic_write_text(a.out / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
