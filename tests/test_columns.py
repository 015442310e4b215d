"""Issue 17: data as users have it — their column names, string labels, tiny groups,
uncertain labels; one-line exit-2 errors for bad mappings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medaudit._errors import InvalidInputError, MedauditError
from medaudit.cli.app import run
from medaudit.data import ColumnMap, load_manifest
from medaudit.data._chexpert import FINDINGS, write_chexpert_style
from medaudit.data._columns import (
    MSG_POSITIVE_ABSENT,
    MSG_UNCERTAIN_ABSENT,
    MSG_UNKNOWN_COLUMN,
    label_text,
)
from medaudit.data._readers import REASON_NO_LABEL, REASON_UNCERTAIN
from medaudit.fairness import read_predictions

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest_plugins = ["pytester"]

POLICY = '[settings]\nn_bootstrap = 40\n[settings.fairness]\np_method = "none"\n'


def thyroid_like(n=300, seed=0):
    """A logistic-regression-style export: one age group holds a single patient."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "patient_id": np.arange(n).astype(str),
            "sex": rng.choice(["F", "M"], n),
            "age_group": rng.choice(["18-40", "40-60", "60+"], n),
            "label": (rng.random(n) < 0.35).astype(int),
        }
    )
    df["score"] = (1 / (1 + np.exp(-(rng.normal(1.8 * df["label"], 1) - 0.9)))).round(6)
    df.loc[0, ["age_group", "label"]] = ["unknown", 0]
    return df


def check_json(tmp_path, capsys, csv, *extra):
    """``medaudit check --format json`` (the audit.json document, on stdout)."""
    pol = tmp_path / "policy.toml"
    pol.write_text(POLICY)
    cmd = ["check", "--predictions", str(csv), "--policy", str(pol), "--no-intersections"]
    code = run([*cmd, "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)["sections"]["fairness"]


def numbers(section):
    """What an audit.json says in numbers: checks and tables, not file names."""
    return {"checks": section["checks"], "tables": section["tables"]}


@pytest.mark.slow  # two `check` runs: the fairness figures take most of it
def test_single_patient_group_is_skipped_with_reason_and_others_unchanged(tmp_path, capsys):
    df = thyroid_like()
    df.to_csv(tmp_path / "with.csv", index=False)
    df.iloc[1:].to_csv(tmp_path / "without.csv", index=False)
    code, sec = check_json(tmp_path, capsys, tmp_path / "with.csv", "--sensitive", "sex,age_group")
    assert code in (0, 1)
    _, ref = check_json(tmp_path, capsys, tmp_path / "without.csv", "--sensitive", "sex,age_group")
    t = pd.DataFrame(sec["tables"]["groups_age_group"]).set_index("group")
    r = pd.DataFrame(ref["tables"]["groups_age_group"]).set_index("group")
    assert t.at["unknown", "status"] == "skipped"
    assert t.at["unknown", "reason"].startswith("n=1 < min_group_size=30")
    assert any("age_group=unknown (n=1 < min_group_size=30" in n for n in sec["notes"])
    # The other groups' numbers are those of the file without the single patient: the
    # point estimates exactly (their bootstrap CIs draw another random stream).
    point = ["n", "n_pos", "auroc", "true_positive_rate", "false_positive_rate", "ece"]
    pd.testing.assert_frame_equal(t.loc[r.index, point], r[point])
    assert (t.loc[r.index, "auroc_ci_low"] <= t.loc[r.index, "auroc"]).all()


@pytest.mark.slow  # two `check` runs: the fairness figures take most of it
def test_mapped_names_and_positive_label_give_the_canonical_numbers(tmp_path, capsys):
    df = thyroid_like(seed=1).iloc[1:]
    df.to_csv(tmp_path / "canon.csv", index=False)
    df.rename(columns={"label": "y_true", "score": "prob", "patient_id": "Patient"}).to_csv(
        tmp_path / "user.csv", index=False
    )
    yes = df.assign(label=np.where(df["label"] == 1, "yes", "no"))
    yes.to_csv(tmp_path / "yes.csv", index=False)
    _, canon = check_json(tmp_path, capsys, tmp_path / "canon.csv", "--sensitive", "sex")
    _, user = check_json(
        tmp_path,
        capsys,
        tmp_path / "user.csv",
        *("--sensitive", "sex", "--label-column", "y_true", "--score-column", "prob"),
        *("--patient-column", "Patient"),
    )
    _, pos = check_json(
        tmp_path, capsys, tmp_path / "yes.csv", "--sensitive", "sex", "--positive-label", "yes"
    )
    assert numbers(user) == numbers(canon)
    assert numbers(pos) == numbers(canon)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--label-column", "Effusion"],
            MSG_UNKNOWN_COLUMN.format(
                source="Predictions file {p}",
                name="Effusion",
                flag="label-column",
                cols="y_true, prob, sex",
            ),
        ),
        (
            ["--label-column", "y_true", "--score-column", "p"],
            MSG_UNKNOWN_COLUMN.format(
                source="Predictions file {p}",
                name="p",
                flag="score-column / --score-columns",
                cols="y_true, prob, sex",
            ),
        ),
        (
            ["--label-column", "y_true", "--score-column", "prob", "--positive-label", "Yes"],
            MSG_POSITIVE_ABSENT.format(
                value="Yes", col="y_true", source="predictions file {p}", values="'no', 'yes'"
            ),
        ),
    ],
)
def test_bad_mapping_exits_2_with_one_line(tmp_path, capsys, args, message):
    p = tmp_path / "p.csv"
    p.write_text("y_true,prob,sex\nyes,0.9,F\nno,0.2,M\n")
    assert run(["check", "--predictions", str(p), *args]) == 2
    err = capsys.readouterr().err
    assert err == f"medaudit: error: {message.format(p=p)}\n"


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    d = tmp_path_factory.mktemp("chx")
    return write_chexpert_style(
        d, n_sites=2, patients_per_site=25, image_size=16, uncertain_rate=0.1, seed=3
    )


def chex_map(**kw):
    base = {"label_column": FINDINGS[0], "path_column": "Path", "patient_column": "Patient"}
    return ColumnMap.from_options(**{**base, **kw})


def test_chexpert_manifest_under_each_uncertain_policy(chexpert):
    raw = pd.read_csv(chexpert)[FINDINGS[0]]
    n_unc, n_blank = int((raw == -1).sum()), int(raw.isna().sum())
    n_pos = int((raw == 1).sum())
    assert n_unc == round(0.1 * len(raw)) and n_blank > 0
    got = {}
    for policy in ("ignore", "zeros", "ones"):
        c = load_manifest(chexpert, columns=chex_map(uncertain_label="-1", uncertain_policy=policy))
        got[policy] = c
        reasons = c.dropped["reason"].value_counts().to_dict()
        assert reasons[REASON_NO_LABEL] == n_blank
        assert reasons.get(REASON_UNCERTAIN, 0) == (n_unc if policy == "ignore" else 0)
        assert len(c.uncertain) == n_unc and "patient_id" in c.meta.columns
    assert len(got["ignore"]) == len(raw) - n_blank - n_unc
    assert got["zeros"].labels.sum() == n_pos
    assert got["ones"].labels.sum() == n_pos + n_unc
    assert got["ones"].meta["label_uncertain"].sum() == n_unc


def test_chexpert_errors_are_one_line(chexpert):
    with pytest.raises(InvalidInputError) as e:
        load_manifest(chexpert, columns=chex_map(uncertain_label="-2"))
    assert str(e.value) == MSG_UNCERTAIN_ABSENT.format(
        value="-2", col=FINDINGS[0], source=f"manifest {chexpert}", values="'-1', '0', '1'"
    )  # the values the file holds, blanks left out
    with pytest.raises(InvalidInputError, match=r"has no column 'Effusion' \(--label-column\); "):
        load_manifest(chexpert, columns=chex_map(label_column="Effusion"))
    cols = ", ".join(pd.read_csv(chexpert, nrows=0).columns)
    assert cols in str(
        pytest.raises(
            InvalidInputError, load_manifest, chexpert, columns=chex_map(path_column="p")
        ).value
    )


def test_label_text_and_config_keys():
    text, blank = label_text(pd.Series(["yes ", None, 1.0, -1]))
    assert text.tolist() == ["yes", "", "1", "-1"] and blank.tolist() == [False, True, False, False]
    m = ColumnMap.from_config(
        {"label_column": "y", "score_columns": ["a", "b"], "uncertain_label": -1, "other": 1}
    )
    assert (m.label, m.scores, m.uncertain_label, m.uncertain_policy) == (
        "y",
        ("a", "b"),
        "-1",
        "ignore",
    )
    with pytest.raises(MedauditError, match="uncertain_policy"):
        ColumnMap.from_options(uncertain_policy="maybe")


def test_score_columns_for_several_classes(tmp_path):
    p = tmp_path / "mc.csv"
    p.write_text("truth,pa,pb,pc,sex\n0,0.7,0.2,0.1,F\n2,0.1,0.2,0.7,M\n1,0.2,0.6,0.2,F\n")
    m = ColumnMap.from_options(label_column="truth", score_columns="pa,pb,pc")
    preds = read_predictions(p, columns=m)
    assert preds.class_names == ["pa", "pb", "pc"] and preds.labels.tolist() == [0, 2, 1]


@pytest.mark.slow
def test_plugin_config_maps_columns_and_a_single_class_group_skips(pytester):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    sex = np.where(np.arange(n) < 40, "X", rng.choice(["F", "M"], n))
    y[sex == "X"] = 0  # a group with negatives only
    s = np.clip(0.5 * y + rng.uniform(0, 0.5, n), 0, 1).round(6)
    pd.DataFrame({"y_true": np.where(y == 1, "yes", "no"), "prob": s, "sex": sex}).to_csv(
        pytester.path / "preds.csv", index=False
    )
    pytester.makefile(
        ".toml",
        pyproject='[tool.medaudit]\npredictions = "preds.csv"\nlabel_column = "y_true"\n'
        'score_column = "prob"\npositive_label = "yes"\n',
    )
    pytester.makepyfile(
        test_ci=f"""
        from medaudit.testing import assert_group_metric, assert_subgroup_gap

        def test_mapped(medaudit_predictions):
            p = medaudit_predictions
            assert p.labels.sum() == {int(y.sum())} and p.class_names == ["negative", "positive"]
            t = assert_group_metric(p.labels, p.score, groups=p.meta["sex"], min_value=0.5,
                                    n_boot=50)
            assert t.set_index("group").at["X", "status"] == "skipped"

        def test_gap_of_one_group_left_is_skipped(medaudit_predictions):
            p = medaudit_predictions
            keep = p.meta["sex"].isin(["X", "F"]).to_numpy()
            assert_subgroup_gap(p.labels[keep], p.score[keep], groups=p.meta["sex"][keep],
                                n_boot=50)
        """
    )
    # In a subprocess: an in-process run re-imports matplotlib under later tests' feet.
    res = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-rs")
    res.assert_outcomes(passed=1, skipped=1)
    res.stdout.fnmatch_lines(["*skipped: subgroup_gap: attribute 'sex' has fewer than two*"])


def test_cli_train_with_an_absent_uncertain_value_exits_2_with_one_line(chexpert, capsys):
    cmd = ["train", "--data", str(chexpert), "--out", str(chexpert.parent / "m.safetensors")]
    cmd += ["--label-column", FINDINGS[0], "--path-column", "Path", "--uncertain-label", "-2"]
    assert run(cmd) == 2
    err = capsys.readouterr().err
    values = "'-1', '0', '1'"
    assert (
        err
        == "medaudit: error: "
        + MSG_UNCERTAIN_ABSENT.format(
            value="-2", col=FINDINGS[0], source=f"manifest {chexpert}", values=values
        )
        + "\n"
    )


def test_other_label_messages(tmp_path):
    from medaudit.data._columns import MSG_UNCERTAIN_TEXT
    from medaudit.data._readers import MSG_NO_DEFINITE, MSG_NPZ_COLUMNS, load_cohort

    np.save(tmp_path / "a.npy", np.zeros((4, 4), np.uint8))
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.npy"] * 3, "y": ["yes", "?", "no"]}).to_csv(m, index=False)
    with pytest.raises(InvalidInputError) as e:
        load_manifest(m, columns=ColumnMap.from_options(label_column="y", uncertain_label="?"))
    assert str(e.value) == MSG_UNCERTAIN_TEXT.format(col="y", source=f"manifest {m}")
    pd.DataFrame({"path": ["a.npy"] * 2, "y": [-1, None]}).to_csv(m, index=False)
    with pytest.raises(InvalidInputError) as e:
        load_manifest(m, columns=ColumnMap.from_options(label_column="y", uncertain_label=-1))
    assert str(e.value) == MSG_NO_DEFINITE.format(path=m, col="y")
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(InvalidInputError) as e:
        load_cohort(tmp_path / "d.npz", columns=ColumnMap.from_options(label_column="y"))
    assert str(e.value) == MSG_NPZ_COLUMNS.format(path=tmp_path / "d.npz")
    # String labels with a positive label and an uncertain value resolve to 0/1.
    pd.DataFrame({"path": ["a.npy"] * 3, "y": ["yes", "?", "no"]}).to_csv(m, index=False)
    cm = ColumnMap.from_options(
        label_column="y", positive_label="yes", uncertain_label="?", uncertain_policy="ones"
    )
    assert load_manifest(m, columns=cm).labels.tolist() == [1, 1, 0]
