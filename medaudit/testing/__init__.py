"""pytest-style fairness assertions and the ``medaudit`` pytest plugin.

Use in a test::

    from medaudit.testing import assert_subgroup_gap

    def test_auroc_gap_by_sex(medaudit_predictions):
        p = medaudit_predictions
        assert_subgroup_gap(p.labels, p.score, groups=p.meta["sex"], max_gap=0.05)

With ``ci=True`` (the default) an assertion decides as the report does: it fails when the
CI lies beyond the threshold, passes when it lies within, and raises
:class:`FairnessInconclusiveError` ("inconclusive: ... about N patients per group would
decide it") when the CI straddles the threshold.

The fixture ``medaudit_predictions`` comes from the plugin (entry point ``pytest11``),
configured in ``pyproject.toml`` under ``[tool.medaudit]``.
"""

from medaudit.testing._assertions import (
    FairnessAssertionError,
    FairnessInconclusiveError,
    assert_group_metric,
    assert_subgroup_gap,
    patients_to_decide,
)

__all__ = [
    "FairnessAssertionError",
    "FairnessInconclusiveError",
    "assert_group_metric",
    "assert_subgroup_gap",
    "patients_to_decide",
]
