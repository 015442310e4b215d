"""Issue 7, item 5: the demo's planted findings over seeds and thread counts (slow).

Seeds 0-4 on one torch thread and seed 0 on two: every run flags the held-out site's
drop, the site marker's use and the hard subgroup's AUROC gap, and the performance AUROC
varies by at most 0.05 (measured: 6 of 6 each, AUROC 0.724-0.749, spread 0.025; over
seeds 0-9 and seed 0 on two threads, 33 of 33 findings and 0.709-0.749, spread 0.040 —
experiments/demo_seeds/results.md). Two threads train other weights than one, but the
averaged model the demo audits is nearly the same (seed 0: 0.742 vs 0.744). Seed 0 on one
thread is the full demo (``full_demo_run``); the others run the three audits the
findings are read from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Loaded under its own name: other tests import experiments' scripts called run.py too.
_PATH = Path(__file__).resolve().parents[1] / "experiments" / "demo_seeds" / "run.py"
_SPEC = importlib.util.spec_from_file_location("demo_seeds_run", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep)

pytestmark = pytest.mark.slow


def test_planted_findings_hold_over_seeds_and_threads(full_demo_run):
    rows = [sweep.row_of(full_demo_run.report, 0, 1, full_demo_run.seconds)]
    rows += [sweep.one_run(seed, 1) for seed in (1, 2, 3, 4)]
    rows.append(sweep.one_run(0, 2))
    for r in rows:
        print({k: r[k] for k in r if k != "failed"})
    s = sweep.summarise(rows)
    assert s["site_gap_failed"] == s["marker_used_failed"] == s["sex_gap_failed"] == 6, s
    assert s["auroc_spread"] <= 0.05, s  # issue 7's bar; measured 0.025
