"""medaudit.testing: fairness assertions and the pytest plugin."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from medaudit._errors import InvalidInputError
from medaudit.testing import (
    FairnessAssertionError,
    FairnessInconclusiveError,
    assert_group_metric,
    assert_subgroup_gap,
    patients_to_decide,
)
from medaudit.testing._plugin import MSG_NOT_CONFIGURED

pytest_plugins = ["pytester"]


def data(n=4000, hard=0.0, seed=0):
    rng = np.random.default_rng(seed)
    g = np.tile(["F", "M"], n // 2)
    y = (rng.random(n) < 0.3).astype(int)
    d = np.where(g == "F", 1.8 - hard, 1.8)
    s = 1 / (1 + np.exp(-(rng.normal(d * y, 1.0) - 0.9)))
    return y, s, g


def test_subgroup_gap_passes_and_returns_result():
    y, s, g = data()
    r = assert_subgroup_gap(y, s, groups=g, max_gap=0.08, n_boot=300)
    assert r.ci[1] <= 0.08 and r.metric == "auroc"


def test_subgroup_gap_failure_prints_table_and_threshold():
    y, s, g = data(hard=0.8)
    with pytest.raises(FairnessAssertionError) as e:
        assert_subgroup_gap(y, s, groups=pd.Series(g, name="sex"), max_gap=0.05, n_boot=300)
    msg = str(e.value)
    assert msg.startswith("AUROC difference across 'sex' is 0.")
    assert "Threshold: max_gap = 0.05 (upper CI bound must be <= 0.05)" in msg
    lines = msg.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("group"))
    assert lines[header].split() == ["group", "n", "n_pos", "AUROC", "95%", "CI", "status"]
    assert lines[header + 1].startswith("F ") and "[0." in lines[header + 1]
    assert e.value.result.worst_group == "F"
    assert isinstance(e.value, AssertionError)


def test_ci_true_says_inconclusive_and_how_much_data_would_decide():
    y, s, g = data(n=400, seed=1)  # small groups: the CI straddles 0.05
    r = assert_subgroup_gap(y, s, groups=g, max_gap=0.05, ci=False, n_boot=200)
    assert r.value <= 0.05
    with pytest.raises(FairnessInconclusiveError) as e:
        assert_subgroup_gap(y, s, groups=g, max_gap=0.05, ci=True, n_boot=200)
    msg = str(e.value)
    assert msg.startswith("inconclusive: AUROC difference across 'group' is 0.")
    assert "the CI is too wide to show it" in msg
    assert "images per group (now 200) would decide it" in msg
    assert e.value.needed > 200 and isinstance(e.value, FairnessAssertionError)
    n_needed = e.value.needed
    assert f"About {n_needed:,}"[:8] in msg or "About " in msg
    # With patient ids the unit is patients; "skip" skips, "pass" returns the result.
    pid = np.arange(len(y))
    with pytest.raises(FairnessInconclusiveError, match="patients per group"):
        assert_subgroup_gap(y, s, groups=g, max_gap=0.05, patient_id=pid, n_boot=200)
    got = assert_subgroup_gap(y, s, groups=g, max_gap=0.05, n_boot=200, inconclusive="pass")
    assert got.ci[0] <= 0.05 <= got.ci[1]
    with pytest.raises(pytest.skip.Exception, match="^inconclusive: "):
        assert_subgroup_gap(y, s, groups=g, max_gap=0.05, n_boot=200, inconclusive="skip")


def test_patients_to_decide_hand_computed():
    # Half-width 0.08 above 0.01, distance 0.04 to the threshold: (0.08 / 0.04)^2 = 4
    # times the data, times ((1.96 + 0.84) / 1.96)^2 = 2.04 for 80% power.
    assert patients_to_decide(0.01, (0.0, 0.09), 0.05, 500) == 4087
    assert patients_to_decide(0.08, (0.06, 0.12), 0.05, 100) == 91  # beyond: lower side
    assert patients_to_decide(0.05, (0.0, 0.1), 0.05, 100) is None  # on the threshold


def test_group_metric_bounds():
    y, s, g = data(hard=0.8)
    t = assert_group_metric(y, s, groups=g, metric="auroc", min_value=0.7, n_boot=200)
    assert list(t["group"]) == ["F", "M"]
    with pytest.raises(FairnessAssertionError) as e:
        assert_group_metric(y, s, groups=g, metric="auroc", min_value=0.85, n_boot=200)
    msg = str(e.value)
    assert msg.startswith(
        "AUROC is out of bounds in 1 group(s) of 'group': F (whole CI below 0.85: 0."
    )
    assert "Threshold: AUROC >= 0.85 (whole 95% CI)." in msg
    with pytest.raises(
        FairnessAssertionError,
        match=r"FNR is out of bounds in 2 group\(s\) of 'group': F \(value 0\.",
    ):
        assert_group_metric(
            y, s, groups=g, metric="false_negative_rate", max_value=0.01, ci=False, n_boot=0
        )


def test_assertions_reject_bad_input():
    y, s, g = data(n=400)
    g2 = g.copy()
    g2[y == 1] = "M"  # every F is negative: F is skipped, one group is left
    with pytest.raises(pytest.skip.Exception) as e:
        assert_subgroup_gap(y, s, groups=g2)
    assert str(e.value.msg).startswith("skipped: subgroup_gap: attribute 'group' has fewer")
    assert "F: negatives" not in str(e.value.msg) or "min_class_count" in str(e.value.msg)
    s2 = s.copy()
    s2[5] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        assert_subgroup_gap(y, s2, groups=g)
    with pytest.raises(InvalidInputError, match="give min_value, max_value or both"):
        assert_group_metric(y, s, groups=g)


# ----------------------------------------------------------------------------- plugin
@pytest.fixture
def project(pytester):
    y, s, g = data(n=2000)
    pd.DataFrame({"label": y, "score": s.round(6), "sex": g}).to_csv(
        pytester.path / "preds.csv", index=False
    )
    pytester.makefile(
        ".toml",
        pyproject=textwrap.dedent("""
        [tool.medaudit]
        predictions = "preds.csv"
        sensitive = ["sex"]
        [tool.pytest.ini_options]
        filterwarnings = ["error"]
    """),
    )
    return pytester


def test_plugin_fixture_loads_predictions(project):
    project.makepyfile(
        test_ci="""
        from medaudit.testing import assert_subgroup_gap

        def test_gap(medaudit_predictions, medaudit_sensitive, medaudit_policy):
            p = medaudit_predictions
            assert len(p) == 2000 and medaudit_sensitive == ["sex"]
            assert_subgroup_gap(p.labels, p.score, groups=p.meta["sex"], max_gap=0.1, n_boot=100)

        def test_fails_readably(medaudit_predictions):
            p = medaudit_predictions
            assert_subgroup_gap(p.labels, p.score, groups=p.meta["sex"], max_gap=0.0, n_boot=100)
    """
    )
    res = project.runpytest("-q")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(
        [
            "*FairnessInconclusiveError: inconclusive: AUROC difference across 'sex'*",
            "*Threshold: max_gap = 0; the CI straddles it*",
            "*group*n_pos*AUROC*95% CI*status*",
        ]
    )


def test_plugin_without_configuration_explains(pytester):
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n")
    pytester.makepyfile(test_x="def test_x(medaudit_predictions):\n    pass\n")
    res = pytester.runpytest("-q")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*" + MSG_NOT_CONFIGURED.splitlines()[0] + "*"])


def test_plugin_command_line_override(project, tmp_path):
    other = tmp_path / "other.csv"
    pd.DataFrame(
        {"label": [0, 1, 0, 1], "score": [0.1, 0.9, 0.2, 0.8], "sex": list("FFMM")}
    ).to_csv(other, index=False)
    project.makepyfile(
        test_n="def test_n(medaudit_predictions):\n    assert len(medaudit_predictions) == 4\n"
    )
    project.runpytest("-q", f"--medaudit-predictions={other}").assert_outcomes(passed=1)
