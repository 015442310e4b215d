"""The fairness Section: checks, tables, figures, policy, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.fairness import fairness_section, group_metrics, subgroup_gap
from medaudit.fairness._group import MSG_LENGTH, MSG_NONFINITE, MSG_SINGLE_CLASS
from medaudit.fairness._section import MSG_MISSING_ATTR
from medaudit.inference import Predictions
from medaudit.report import Policy, Report
from medaudit.report._json import dumps


def make_predictions(n=3000, seed=0, *, hard_female=0.0, k=2):
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 90, n).astype(float),
            "patient_id": rng.integers(0, n // 2, n),
        }
    )
    meta["age_group"] = pd.cut(
        meta.age, [0, 40, 60, 80, 200], right=False, labels=["<40", "40-59", "60-79", "80+"]
    ).astype(str)
    if k == 2:
        y = (rng.random(n) < 0.3).astype(int)
        d = np.where(meta.sex == "F", 1.6 - hard_female, 1.6)
        s = 1 / (1 + np.exp(-(rng.normal(d * y, 1.0) - 0.8)))
        scores = np.c_[1 - s, s]
        names = ["negative", "positive"]
    else:
        y = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        names = ["No Finding"] + [f"finding_{i}" for i in range(1, k)]
    return Predictions(
        scores=scores, labels=y, loss=np.zeros(n), features=None, meta=meta, class_names=names
    )


FAST = Policy.from_mapping({"settings": {"n_bootstrap": 200}})


@pytest.fixture(scope="module")
def section():
    p = make_predictions(hard_female=0.7)
    cal = make_predictions(seed=1, hard_female=0.7)
    return fairness_section(
        p, sensitive=["sex", "age_group"], policy=FAST, calibration=cal, n_permutations=200
    )


def test_section_shape(section):
    assert section.name == "fairness"
    assert {
        "overall",
        "groups_sex",
        "groups_age_group",
        "groups_sex&age_group",
        "gaps",
        "continuous",
        "mitigation",
    } <= set(section.tables)
    per_attribute = {"roc", "rates", "reliability", "sweep"}
    assert set(section.figures) == {
        f"{kind}_{a}" for kind in per_attribute for a in ("sex", "age_group")
    } | {"forest"}
    assert section.figures["forest"].wide
    assert "ROC curves of each sex group" in section.figures["roc_sex"].alt
    assert section.figures["forest"].alt.startswith("Forest plot of")
    assert section.summary.endswith(".") and "AUROC" in section.summary
    assert section.references and "bootstrap" in section.methods


def test_planted_effect_fails_the_auroc_gap_check(section):
    c = {c.id: c for c in section.checks}["fairness.sex.auroc_gap"]
    assert c.status == "fail"
    assert c.ci is not None and c.ci[0] > 0
    assert "F" in c.description and c.advice.startswith("The model ranks patients less well in F")
    assert "bootstrap p = " in c.reason and "Holm-adjusted" in c.reason


def test_check_ids_and_thresholds(section):
    ids = {c.id for c in section.checks}
    for attr in ("sex", "age_group", "sex&age_group"):
        for suffix in (
            "auroc_gap",
            "worst_group_auroc",
            "underdiagnosis_gap",
            "equalized_odds_difference",
            "demographic_parity_difference",
            "ece_gap",
        ):
            assert f"fairness.{attr}.{suffix}" in ids
    assert "fairness.age.error_abs_pearson_r" in ids
    c = {c.id: c for c in section.checks}["fairness.sex.auroc_gap"]
    assert (c.op, c.threshold) == ("<=", 0.05)


def test_mitigation_is_a_labelled_suggestion(section):
    t = section.tables["mitigation"]
    assert list(t["group"]) == ["F", "M", "(all)"]
    assert {"tpr_before", "tpr_after", "fpr_before", "fpr_after"} <= set(t.columns)
    assert any(n.startswith("SUGGESTION, NOT APPLIED") for n in section.notes)


def test_section_serialises_to_json(section):
    doc = Report(sections=[section]).to_dict()
    text = dumps(doc)
    assert '"fairness.sex.auroc_gap"' in text
    rec = doc["sections"]["fairness"]["tables"]["groups_sex"][0]
    assert {"group", "n", "auroc", "auroc_ci_low", "auroc_ci_high", "status"} <= set(rec)


def test_policy_overrides_threshold_and_settings():
    p = make_predictions(seed=2)
    pol = Policy.from_mapping(
        {
            "settings": {"n_bootstrap": 100, "min_group_size": 1000},
            "checks": {"fairness.sex.auroc_gap": {"op": "<=", "threshold": 0.5}},
        }
    )
    sec = fairness_section(
        p, sensitive=["sex", "age_group"], policy=pol, n_permutations=50, figures=False
    )
    checks = {c.id: c for c in sec.checks}
    assert checks["fairness.sex.auroc_gap"].threshold == 0.5
    # Age groups of <= ~860 < 1000 images are skipped, with the reason, never numbers.
    t = sec.tables["groups_age_group"]
    assert (t["status"] == "skipped").all() and t["auroc"].isna().all()
    assert "min_group_size=1000" in t["reason"].iloc[0]
    assert checks["fairness.age_group.auroc_gap"].status == "skipped"
    assert checks["fairness.age_group.auroc_gap"].reason.startswith("fewer than two groups")


def test_youden_threshold_on_calibration_split():
    p, cal = make_predictions(seed=3), make_predictions(seed=4)
    sec = fairness_section(
        p,
        sensitive=["sex"],
        policy=FAST,
        threshold="youden",
        calibration=cal,
        mitigation=None,
        n_permutations=0,
        figures=False,
    )
    assert any("Youden's J on the calibration split" in n for n in sec.notes)
    sec2 = fairness_section(
        p, sensitive=["sex"], policy=FAST, threshold="sensitivity", n_permutations=0, figures=False
    )
    assert any("flatters" in n for n in sec2.notes)


def test_multiclass_section_has_class_in_ids():
    p = make_predictions(k=3, seed=5)
    sec = fairness_section(p, sensitive=["sex"], policy=FAST, n_permutations=50)
    ids = {c.id for c in sec.checks}
    assert "fairness.sex.No Finding.auroc_gap" in ids
    assert "fairness.sex.finding_2.underdiagnosis_gap" in ids
    assert "class" in sec.tables["groups_sex"].columns
    with pytest.raises(InvalidParameterError, match="'fixed' for a multiclass model"):
        fairness_section(p, sensitive=["sex"], threshold="youden")


# ----------------------------------------------------------------------------- bad input
def test_missing_attribute_message():
    p = make_predictions(n=200)
    with pytest.raises(InvalidInputError) as e:
        fairness_section(p, sensitive=["race"])
    assert str(e.value) == MSG_MISSING_ATTR.format(
        missing=["race"], available="sex, age, patient_id, age_group"
    )


def test_nan_and_infinite_scores():
    y = np.array([0, 1, 0, 1])
    for bad in (np.nan, np.inf):
        s = np.array([0.1, bad, 0.3, 0.9])
        with pytest.raises(InvalidInputError) as e:
            group_metrics(y, s, groups=["a"] * 4)
        assert str(e.value) == MSG_NONFINITE.format(func="group_metrics", n_bad=1, first=1)


def test_length_mismatch():
    with pytest.raises(InvalidInputError) as e:
        group_metrics([0, 1, 0], [0.1, 0.2], groups=["a"] * 3)
    assert str(e.value) == MSG_LENGTH.format(func="group_metrics", n_true=3, n_score=2)


def test_single_class_data_and_groups():
    with pytest.raises(InvalidInputError) as e:
        group_metrics([1, 1, 1], [0.1, 0.2, 0.3], groups=["a"] * 3)
    assert str(e.value) == MSG_SINGLE_CLASS.format(
        func="group_metrics", which="positives", cls="positive"
    )
    # A single-class *group* inside valid data is skipped with its reason...
    rng = np.random.default_rng(0)
    y = np.r_[rng.integers(0, 2, 200), np.zeros(50, int)]
    s = rng.random(250)
    g = np.r_[np.repeat(["A", "B"], 100), np.repeat("C", 50)]
    gm = group_metrics(y, s, groups=g, n_boot=0, n_permutations=0)
    row = gm.by_group("group").set_index("group").loc["C"]
    assert row["status"] == "skipped" and "n_pos=0 < min_class_count=5" in row["reason"]
    assert np.isnan(row["auroc"])
    # ...and subgroup_gap refuses when fewer than two groups remain.
    with pytest.raises(InvalidInputError, match="fewer than two groups large enough"):
        subgroup_gap(y[100:], s[100:], groups=g[100:])


def test_scores_outside_unit_interval_and_bad_labels():
    with pytest.raises(InvalidInputError, match=r"probabilities in \[0, 1\]"):
        group_metrics([0, 1], [-0.5, 2.0], groups=["a", "a"])
    with pytest.raises(InvalidInputError, match="only 0 and 1"):
        group_metrics([0, 2], [0.5, 0.5], groups=["a", "a"])
    with pytest.raises(InvalidInputError, match="sensitive attribute 'group' has 2 rows"):
        group_metrics([0, 1, 1], [0.1, 0.5, 0.6], groups=["a", "a"])


def test_bad_parameters_use_the_template():
    with pytest.raises(InvalidParameterError) as e:
        group_metrics([0, 1], [0.1, 0.9], groups=["a", "a"], n_boot=-1)
    assert str(e.value) == (
        "The 'n_boot' parameter of group_metrics must be an integer >= 0. Got -1 instead."
    )
    with pytest.raises(InvalidParameterError, match="'metric' parameter of subgroup_gap"):
        subgroup_gap([0, 1], [0.1, 0.9], groups=["a", "b"], metric="accuracy")
