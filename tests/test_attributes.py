"""One rule for sensitive attributes at every entry point."""

from __future__ import annotations

import pytest

from medaudit import InvalidInputError
from medaudit.cli.app import run
from medaudit.data import DEMOGRAPHIC_COLUMNS, require_sensitive, resolve_sensitive
from medaudit.data._attributes import MSG_MISSING_ATTRIBUTES, MSG_NO_ATTRIBUTES


def test_default_is_the_demographic_columns_present_matched_loosely():
    cols = ["label", "score", "Sex", "Age Group", "site", "severity", "insurance"]
    assert resolve_sensitive(cols) == ["Sex", "Age Group", "insurance"]
    assert resolve_sensitive(["label", "severity", "marker"]) == []
    assert set(DEMOGRAPHIC_COLUMNS) >= {"sex", "age_group"}


def test_explicit_lists_and_the_empty_list():
    assert resolve_sensitive(["a", "b"], "b, a") == ["b", "a"]
    assert resolve_sensitive(["a", "b"], ["a", "a"]) == ["a"]
    assert resolve_sensitive(["sex"], []) == []


def test_one_message_for_missing_columns_names_all_and_the_existing_ones():
    with pytest.raises(InvalidInputError) as exc:
        resolve_sensitive(["label", "sex"], ["race", "sex", "zip"], source="p.csv")
    assert str(exc.value) == MSG_MISSING_ATTRIBUTES.format(
        missing="race, zip", source="p.csv", available="label, sex"
    )
    with pytest.raises(InvalidInputError) as exc:
        require_sensitive(["label", "score"], source="p.csv")
    assert str(exc.value).startswith(MSG_NO_ATTRIBUTES.split("{")[0])


def test_check_and_audit_give_the_same_message(tmp_path, synth_dir, trained_checkpoint, capsys):
    p = tmp_path / "p.csv"
    p.write_text("label,score,sex\n0,0.1,F\n1,0.9,M\n")
    assert run(["check", "--predictions", str(p), "--sensitive", "race"]) == 2
    err_check = capsys.readouterr().err
    assert "Sensitive attribute column(s) race not found in" in err_check
    man = synth_dir / "manifest.csv"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(man),
            "--out",
            str(tmp_path / "o"),
            "--sensitive",
            "race",
            "--no-progress",
        ]
    )
    err_audit = capsys.readouterr().err
    assert code == 2 and "Sensitive attribute column(s) race not found in" in err_audit
    q = tmp_path / "q.csv"
    q.write_text("label,score,grade\n0,0.1,a\n1,0.9,b\n")
    assert run(["check", "--predictions", str(q)]) == 2
    assert "No sensitive attribute to audit" in capsys.readouterr().err
