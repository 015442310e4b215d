"""Issue 8's table, pinned: coverage and level of medaudit's intervals and tests (slow).

Each test runs a cell of experiments/coverage/harness.py with fewer draws and bootstrap
resamples than the committed run (docs/statistics.md), so its bounds leave room for the
Monte-Carlo error (about 3 standard errors). Clustered patients (4 images each, both
classes), 2 to 8 groups, unequal sizes and a prevalence of 4% are all in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "coverage"))

import harness as h  # noqa: E402

pytestmark = pytest.mark.slow

BOOT = 300
TRUTH = 300_000  # images per group for the true values (the committed run: 2 million)


def _rates(cells):
    return {c.quantity: c for c in cells}


def test_issue_case_rates_prevalence_ppv_brier_ece_cover():
    # Prevalence 0.5 / 0.35, AUROC 0.95, 300 images per group: the selection rate covered
    # 82% when the bootstrap fixed each group's class counts.
    cells = _rates(
        h.coverage(
            h.ISSUE_CASE,
            ("selection_rate", "ppv", "brier_score", "ece", "prevalence"),
            gaps=("demographic_parity_difference",),
            draws=50,
            n_boot=BOOT,
            truth_images=TRUTH,
        )
    )
    for q in ("selection_rate CI", "ppv CI", "brier_score CI", "ece CI", "prevalence CI"):
        assert cells[q].rate >= 0.88, cells[q]
    assert cells["demographic_parity_difference gap CI (simultaneous)"].rate >= 0.88


def test_auroc_covers_when_patients_have_both_classes():
    for sc in (h.MIXED_A, h.MIXED_B):  # measured 0.853 and 0.983 before
        cell = h.coverage(sc, ("auroc",), draws=50, n_boot=BOOT, truth_images=TRUTH)[0]
        assert 0.88 <= cell.rate <= 1.0, cell


def test_auroc_near_one_covers_without_absurd_lower_limits():
    # Many resamples rank perfectly here; reflecting them on the logit scale gave lower
    # limits near 0 (site AUROC 0.984 [0.004, 0.995] in the demo) until replicates were
    # kept a quarter of the point's distance from the bound. Measured: 0.94 (200 CIs).
    cell = h.coverage(h.NEAR_ONE, ("auroc",), draws=50, n_boot=BOOT, truth_images=TRUTH)[0]
    assert 0.88 <= cell.rate <= 1.0, cell
    rng = np.random.default_rng(1)
    df = h.NEAR_ONE.draw(rng)
    gm = h._gm(df, h.NEAR_ONE, 1, BOOT)
    w = gm.by_group("group")
    assert (w["auroc_ci_low"] > 0.85).all(), w[["auroc", "auroc_ci_low", "auroc_ci_high"]]


def test_low_prevalence_unequal_groups_cover():
    cells = _rates(
        h.coverage(
            h.LOW_PREVALENCE,
            ("auroc", "true_positive_rate", "ppv", "prevalence"),
            draws=20,
            n_boot=BOOT,
            truth_images=TRUTH,
        )
    )
    pooled = sum(c.rate * c.n for c in cells.values()) / sum(c.n for c in cells.values())
    assert pooled >= 0.90, cells


@pytest.mark.parametrize("n_groups", [2, 8])
def test_null_gap_intervals_and_pvalues_keep_their_level(n_groups):
    # Excluded 0 in 3.5% (2 groups) and 46% (8 groups) of null draws before; the
    # bootstrap-p of a clustered null was below 0.05 in 24.5%.
    cells = h.null_gaps(n_groups, draws=50, n_boot=BOOT)
    for c in cells:
        if c.row == "CI and p-value of the same gap":
            assert c.rate == 0.0, c  # never disagree
        else:
            assert c.rate <= 0.10, c


def test_patient_permutation_keeps_its_level():
    cells = h.null_gaps(2, draws=40, n_boot=BOOT, p_method="permutation")
    assert all(c.rate <= 0.125 for c in cells), cells


def test_calibrated_model_ece_is_valid_and_quiet():
    # Before: the group CI contained the true 0 in 0 of 150 draws, ece_gap warned in 61%.
    cells = _rates(h.calibrated_ece(h.CALIBRATED, draws=30, n_boot=BOOT))
    assert cells["group ECE CI contains the true 0"].rate >= 0.9
    assert cells["ECE-gap CI excludes 0"].rate <= 0.1
    assert cells["ece_gap check warns (fail or inconclusive)"].rate <= 0.1


def test_default_decision_rule_has_few_false_alarms():
    cells = _rates(h.decision_rule(4, draws=25, n_boot=BOOT))
    assert cells['an attribute fails a check (default, decision = "ci")'].rate <= 0.08
    assert cells['an attribute fails a check (old, decision = "estimate")'].rate >= 0.3


def test_fair_model_assertion_says_inconclusive_with_a_size():
    cells = _rates(h.assertion(draws=12, n_boot=BOOT))
    assert cells["fails (CI wholly above max_gap)"].rate == 0.0
    said = [c for q, c in cells.items() if q.startswith("inconclusive messages")]
    assert not said or said[0].rate == 1.0


def test_skipped_group_consistent_with_fairlearn():
    assert h.skipped_group()[0].rate == 1.0
