"""audit.json: schema, validation, round trip."""

from __future__ import annotations

import builtins
import copy
import json

import jsonschema
import pytest
from _report_factory import build_report

from medaudit._errors import InvalidInputError
from medaudit.report import Check, Report, Section
from medaudit.report._json import (
    INVALID_AUDIT,
    SCHEMA_ID,
    audit_schema,
    dumps,
    load_audit_json,
    report_from_dict,
    report_to_dict,
    validate_audit_json,
)


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(dumps(report_to_dict(build_report())))


@pytest.fixture
def no_jsonschema(monkeypatch):
    """Make ``import jsonschema`` fail, as in an installation without the test extra."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "jsonschema" or name.startswith("jsonschema."):
            raise ImportError("No module named 'jsonschema'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = audit_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == SCHEMA_ID


def test_real_report_validates(doc):
    jsonschema.Draft202012Validator(audit_schema()).validate(doc)
    validate_audit_json(doc)


def test_round_trip_is_lossless_at_document_level(doc):
    again = json.loads(dumps(report_to_dict(report_from_dict(doc))))
    assert again == doc
    assert dumps(again) == dumps(doc)


def _broken(doc, edit):
    d = copy.deepcopy(doc)
    edit(d)
    return d


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.update(schema="medaudit.audit/0"), "at schema:"),
        (lambda d: d.pop("meta"), "'meta' is a required property"),
        (lambda d: d["sections"]["performance"].pop("title"), "'title' is a required property"),
        (
            lambda d: d["sections"]["performance"]["checks"][0].update(status="ok"),
            "sections/performance/checks/0/status",
        ),
        (
            lambda d: d["sections"]["performance"]["checks"][0].update(value="0.9"),
            "sections/performance/checks/0/value",
        ),
        (
            lambda d: d["sections"]["fairness"]["checks"][2].update(reason=""),
            "sections/fairness/checks/2/reason",
        ),
        (lambda d: d.update(passed=True), "'passed' is true but check(s)"),
        (
            lambda d: d["sections"]["performance"]["checks"][0].update(ci=[0.1]),
            "sections/performance/checks/0/ci",
        ),
    ],
)
def test_invalid_documents_are_refused_with_where_and_why(doc, edit, fragment):
    with pytest.raises(InvalidInputError) as err:
        validate_audit_json(_broken(doc, edit), source="x.json")
    assert str(err.value).startswith("Invalid audit.json (x.json): ")
    assert fragment in str(err.value)


def test_every_problem_is_reported_at_once(doc):
    def edit(d):
        d.pop("meta")
        d["passed"] = "yes"
        d["sections"]["performance"]["checks"][0]["status"] = "ok"

    with pytest.raises(InvalidInputError) as err:
        validate_audit_json(_broken(doc, edit))
    assert str(err.value) == INVALID_AUDIT.format(
        source="document",
        problems="at (top level): 'meta' is a required property; "
        "at passed: 'yes' is not of type 'boolean'; "
        "at sections/performance/checks/0/status: 'ok' is not one of "
        "['pass', 'fail', 'inconclusive', 'skipped', 'warn']",
    )


def test_passed_false_without_failure_is_refused():
    rep = Report(
        [Section("a", "A", "s", checks=[Check.evaluate("a", "a", 1, op=">=", threshold=0)])]
    )
    d = json.loads(dumps(report_to_dict(rep)))
    d["passed"] = False
    msg = "'passed' is false but no critical or major check failed"
    with pytest.raises(InvalidInputError, match=msg):
        validate_audit_json(d)


def test_validation_without_jsonschema_keeps_the_main_rules(doc, no_jsonschema):
    validate_audit_json(doc)
    with pytest.raises(InvalidInputError, match="at passed: 'yes' is not of type 'boolean'"):
        validate_audit_json(_broken(doc, lambda d: d.update(passed="yes")))
    with pytest.raises(InvalidInputError, match="checks/0/status: 'ok' is not a status"):
        validate_audit_json(
            _broken(doc, lambda d: d["sections"]["performance"]["checks"][0].update(status="ok"))
        )
    with pytest.raises(InvalidInputError, match="'passed' is true but"):
        validate_audit_json(_broken(doc, lambda d: d.update(passed=True)))
    with pytest.raises(InvalidInputError, match="is not of type 'object'"):
        validate_audit_json([1, 2])


def test_load_audit_json_errors(tmp_path, doc):
    with pytest.raises(InvalidInputError, match="audit.json not found"):
        load_audit_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="is not valid JSON"):
        load_audit_json(bad)
    good = tmp_path / "audit.json"
    good.write_text(dumps(doc), encoding="utf-8")
    assert load_audit_json(good) == doc
