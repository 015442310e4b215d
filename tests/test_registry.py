"""The audit plug-in seam: registration, declared checks/settings, the context, the CLI.

A throw-away audit is registered from this test file with no other edit, and then works
from the Python API, the CLI (its own flag), the policy file and ``policy show``. Every
registered audit runs on a tiny cohort and its section validates against the schema.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medaudit import InvalidInputError
from medaudit.cli.app import run
from medaudit.data import Cohort, generate_hospitals
from medaudit.inference import FORWARD_PASSES, predict
from medaudit.models import build_model
from medaudit.pipeline import run_audits
from medaudit.registry import (
    AuditContext,
    AuditSpec,
    get_audit,
    list_audits,
    register_audit,
    unregister_audit,
)
from medaudit.report import Policy, Report, Section, Setting, Threshold, validate_audit_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_audit(ctx: AuditContext) -> Section:
    level = ctx.setting("toy.level")
    mean_score = float(np.mean(ctx.predictions.scores[:, 1]))
    return Section(
        name="toy",
        title="Toy",
        summary=f"level {level}",
        checks=[ctx.policy.judge("toy.mean_score", "Mean score", mean_score)],
    )


TOY = AuditSpec(
    name="toy",
    title="a throw-away audit registered by a test",
    audit=_toy_audit,
    checks={"toy.mean_score": Threshold("<=", 2.0, "major", help="Mean positive score.")},
    settings=(Setting("level", 1, "How hard to look.", "int", minimum=1, flag="--toy-level"),),
    default=False,
)


@pytest.fixture
def toy():
    register_audit(TOY)
    yield TOY
    unregister_audit("toy")


@pytest.fixture(scope="module")
def tiny():
    """A tiny cohort, an untrained zoo model and its clean predictions."""
    import torch

    cohort = generate_hospitals(n_sites=3, patients_per_site=25, image_size=32, seed=3)
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=2, random_state=0)
    test = cohort.subset(cohort.meta["split"].isin(["test", "external"]).to_numpy())
    train = cohort.split("train")
    preds = predict(model, test)
    return test, train, cohort.split("val"), model, preds


def test_a_test_audit_plugs_in_without_other_edits(toy, tiny):
    test, _, _, model, preds = tiny
    assert "toy" in list_audits() and "toy" not in list_audits(default_only=True)
    pol = Policy.from_mapping({"settings": {"toy": {"level": 4}}})
    rep = run_audits(preds, test, audits=["toy"], policy=pol, model=model)
    assert rep.section("toy").summary == "level 4"
    assert rep.section("toy").checks[0].status == "pass"
    # its check and setting are in the policy, with their help
    text = Policy.default().to_toml()
    assert "[settings.toy]" in text and "# How hard to look." in text
    assert '[checks."toy.mean_score"]' in text
    # a bad value of its setting is refused like any other
    with pytest.raises(InvalidInputError, match="'toy.level' must be >= 1"):
        Policy.from_mapping({"settings": {"toy": {"level": 0}}})


def test_default_audits_run_and_report_what_did_not(tiny):
    test, *_, preds = tiny
    rep = run_audits(preds, test, policy=Policy.from_mapping({"settings": {"n_bootstrap": 20}}))
    ran = [s.name for s in rep.sections]
    assert ran[:3] == ["integrity", "performance", "fairness"]
    for row in rep.meta["audits_not_run"]:
        assert row["reason"] and row["audit"] not in ran
    needs_model = [n for n in list_audits(default_only=True) if "model" in get_audit(n).needs]
    assert {r["audit"] for r in rep.meta["audits_not_run"]} >= set(needs_model)


def test_a_named_audit_whose_inputs_are_missing_is_refused(toy, tiny):
    test, *_, preds = tiny
    needy = AuditSpec("needy", "needs training data", _toy_audit, needs=("train", "model"))
    register_audit(needy)
    try:
        with pytest.raises(InvalidInputError, match=r"needy audit needs the training data"):
            run_audits(preds, test, audits=["needy"])
    finally:
        unregister_audit("needy")
    with pytest.raises(InvalidInputError, match="Unknown audit.*nosuch.*available: integrity"):
        run_audits(preds, test, audits=["nosuch"])


def test_registration_is_validated(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_audit(TOY)
    clash = AuditSpec(
        "other", "t", _toy_audit, settings=(Setting("x", 1, "h", "int", flag="--toy-level"),)
    )
    with pytest.raises(ValueError, match="already used by 'toy'"):
        register_audit(clash)
    with pytest.raises(ValueError, match="ids starting with 'bad.'"):
        AuditSpec("bad", "t", _toy_audit, checks={"fairness.x": Threshold("<=", 1)})
    with pytest.raises(ValueError, match="keys of"):
        AuditSpec("bad", "t", _toy_audit, needs=("gpu",))


def _tiny_audit_report(name: str, tiny) -> Report:
    test, train, val, model, preds = tiny
    pol = Policy.from_mapping({"settings": {"n_bootstrap": 20}})
    return run_audits(
        preds,
        test,
        audits=[name],
        policy=pol,
        train=train,
        population=val,
        model=model,
        model_info={"arch": "small_cnn", "image_size": 32, "in_channels": 1},
    )


@pytest.mark.parametrize("name", list_audits())
def test_every_registered_audit_runs_on_a_tiny_cohort_and_validates(name, tiny):
    rep = _tiny_audit_report(name, tiny)
    sec = rep.section(name)
    assert sec.title and sec.summary
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False, default=str))
    validate_audit_json(doc)
    spec = get_audit(name)
    pol = Policy.default()
    for c in sec.checks:
        assert c.id.startswith(f"{name}."), c.id
        pol.threshold(c.id)  # every check the audit emits is declared (no KeyError)
    assert all(s.name for s in spec.settings)


def test_predict_transformed_streams_once_per_key_and_never_reruns_the_clean_pass(tiny):
    test, *_, model, preds = tiny
    ctx = AuditContext(predictions=preds, cohort=test, policy=Policy.default(), model=model)
    seen_batches = []

    def darken(x, idx):
        seen_batches.append(len(idx))
        return x * 0.5

    before = FORWARD_PASSES["count"]
    a = ctx.predict_transformed(darken, key="darken")
    b = ctx.predict_transformed(darken, key="darken")
    assert a is b and FORWARD_PASSES["count"] == before + 1
    assert max(seen_batches) <= ctx.batch_size and sum(seen_batches) == len(test)
    direct = predict(model, Cohort(test.meta, images=test.load_all() * 0.5))
    np.testing.assert_allclose(a.scores, direct.scores, atol=1e-6)
    assert not np.allclose(a.scores, preds.scores)
    sub = ctx.predict_transformed(darken, key="darken", rows=np.arange(5))
    assert len(sub) == 5


def test_context_lazy_train_predictions_and_clear_needs(tiny):
    test, train, _, model, preds = tiny
    ctx = AuditContext(predictions=preds, cohort=test, policy=Policy.default())
    with pytest.raises(InvalidInputError, match="needs the training data"):
        _ = ctx.train_predictions
    ctx = AuditContext(
        predictions=preds, cohort=test, policy=Policy.default(), model=model, train=train
    )
    before = FORWARD_PASSES["count"]
    tp = ctx.train_predictions
    assert ctx.train_predictions is tp and FORWARD_PASSES["count"] == before + 1
    assert len(tp) == len(train)


# --------------------------------------------------------------------------------- CLI
def test_cli_audit_takes_a_registered_audits_flag_and_set(
    toy, synth_dir, trained_checkpoint, tmp_path, capsys
):
    man = synth_dir / "manifest.csv"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(man),
            "--out",
            str(tmp_path / "r"),
            "--audits",
            "toy",
            "--toy-level",
            "7",
            "--no-progress",
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert doc["sections"]["toy"]["summary"] == "level 7"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(man),
            "--out",
            str(tmp_path / "r2"),
            "--audits",
            "toy",
            "--set",
            "toy.level=5",
            "--no-progress",
        ]
    )
    assert code == 0
    assert (
        json.loads((tmp_path / "r2" / "audit.json").read_text())["sections"]["toy"]["summary"]
        == "level 5"
    )
    capsys.readouterr()
    for bad, words in (
        (["--toy-levle", "3"], "Unknown option '--toy-levle'"),
        (["--toy-level", "zero"], "--toy-level must be an int"),
        (["--toy-level", "0"], "'toy.level' must be >= 1"),
        (["--set", "toy.nope=1"], "Unknown setting 'toy.nope'"),
        (["--audits", "toy,nosuch"], "Unknown audit(s) nosuch"),
    ):
        code = run(
            [
                "audit",
                "--model",
                str(trained_checkpoint),
                "--data",
                str(man),
                "--out",
                str(tmp_path / "bad"),
                "--audits",
                "toy",
                *bad,
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and words in err, (bad, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_cli_audit_help_lists_the_registered_audits(capsys):
    assert run(["audit", "--help"]) == 0
    out = capsys.readouterr().out
    for name in list_audits():
        assert f"{name}:" in out


def test_policy_show_json_has_every_setting_with_help(capsys):
    assert run(["policy", "show", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["fairness.p_adjust"]["help"]
    assert all(v["help"] for v in doc["settings"].values())


def test_data_layer_does_not_import_the_report():
    code = (
        "import medaudit.data, sys; "
        "assert 'medaudit.report' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
