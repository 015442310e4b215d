"""The unlearning verifier's error rates, on two seeds of experiments/unlearning_verifier.

The full sweep (10 seeds, forget 20% and 50% of the patients, 2 and 3 references) is
committed in experiments/unlearning_verifier/results.md; this runs two of its cells.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "unlearning_verifier" / "run.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("unlearning_verifier_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["unlearning_verifier_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_retraining_is_never_failed_and_approximate_methods_never_pass(sweep):
    rows = [r for seed in (0, 1) for r in sweep.one_run(seed, 0.5, references=3)]
    verdict = {(r["seed"], r["method"]): r["verdict"] for r in rows}
    for seed in (0, 1):
        assert verdict[seed, "retrain"] != "fail"  # the null: no false alarm
        assert verdict[seed, "finetune"] == "fail"  # power: kept traces are found
        assert verdict[seed, "gradient_ascent"] == "fail"
        assert verdict[seed, "random_labels"] != "pass"  # never a false claim of forgetting
    # Measured: both pass here (CI upper 0.18, 0.20 against the 0.3 margin).
    assert "pass" in {verdict[0, "retrain"], verdict[1, "retrain"]}
    table = sweep.summarise(pd.DataFrame(rows))
    assert set(table.columns) >= {"pass", "inconclusive", "fail", "runs", "median_ks"}
    assert table["runs"].sum() == 8
