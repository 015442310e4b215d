"""pytest-style fairness assertions and the ``medaudit`` pytest plugin.

Use in a test::

    from medaudit.testing import assert_subgroup_gap

    def test_auroc_gap_by_sex(medaudit_predictions):
        p = medaudit_predictions
        assert_subgroup_gap(p.labels, p.score, groups=p.meta["sex"], max_gap=0.05)

The fixture ``medaudit_predictions`` comes from the plugin (entry point ``pytest11``),
configured in ``pyproject.toml`` under ``[tool.medaudit]``.
"""

from medaudit.testing._assertions import (
    FairnessAssertionError,
    assert_group_metric,
    assert_subgroup_gap,
)

__all__ = ["FairnessAssertionError", "assert_group_metric", "assert_subgroup_gap"]
