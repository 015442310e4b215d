"""Fairness gates for CI: run `pytest` in this folder (medaudit's plugin gives the fixtures).

Each assertion fails with a table of groups, n, value and 95% CI, and the threshold. With
``ci=True`` it decides as the report does: it fails when the CI lies beyond the threshold and
raises ``FairnessInconclusiveError`` ("inconclusive: ... about N patients per group would
decide it") when the CI straddles it.
"""

import pytest

from medaudit.testing import assert_group_metric, assert_subgroup_gap


def test_auroc_gap_by_sex(medaudit_predictions):
    p = medaudit_predictions
    # Point estimate gate (a CI gate needs more data per group for a 0.05 margin).
    assert_subgroup_gap(p.labels, p.score, groups=p.meta["sex"], max_gap=0.05, ci=False)


@pytest.mark.parametrize("attribute", ["sex", "age_group"])
def test_auroc_gap_upper_bound(medaudit_predictions, attribute):
    p = medaudit_predictions
    # The data must *show* the gap is below 0.10: the upper 95% CI bound is judged.
    assert_subgroup_gap(p.labels, p.score, groups=p.meta[attribute], max_gap=0.10, ci=True)


def test_underdiagnosis_gap(medaudit_predictions):
    p = medaudit_predictions
    assert_subgroup_gap(
        p.labels,
        p.score,
        groups=p.meta["age_group"],
        metric="underdiagnosis_rate",
        max_gap=0.15,
        ci=False,
        threshold=0.5,
    )


def test_every_group_auroc_at_least_080(medaudit_predictions, medaudit_sensitive):
    p = medaudit_predictions
    for attribute in medaudit_sensitive:
        assert_group_metric(
            p.labels,
            p.score,
            groups=p.meta[attribute],
            metric="auroc",
            min_value=0.80,
            patient_id=p.meta["patient_id"],
        )
