"""`medaudit train --dp` writes the ledger into the checkpoint; privacy_budget shows it."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from medaudit._errors import InvalidInputError
from medaudit.cli.app import run
from medaudit.models import build_model, load_checkpoint, save_checkpoint
from medaudit.pipeline import run_audits
from medaudit.privacy import PrivacyLedger, compute_epsilon
from medaudit.privacy._audit import NO_LEDGER_REASON, NO_LEDGER_SUMMARY
from medaudit.privacy._inputs import MSG_BUDGET_ARGS, MSG_DELTA, MSG_EPSILON
from medaudit.report import Policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REQUIRED = {"epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "accountant"}


def _train(synth_dir, out, *extra):
    return run(
        [
            "train",
            "--data",
            str(synth_dir / "manifest.csv"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def dp_checkpoint(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dp") / "dp.safetensors"
    assert _train(synth_dir, out, "--dp", "--epsilon", "8", "--delta", "1e-5") == 0
    return out


def _metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_train_dp_writes_the_ledger_under_the_privacy_key(dp_checkpoint):
    raw = json.loads(_metadata(dp_checkpoint)["privacy"])
    assert set(raw) >= REQUIRED
    assert raw["accountant"] == "prv" and raw["delta"] == 1e-5
    assert 0.9 * 8 <= raw["epsilon"] <= 8  # the target is met, not undershot by much
    assert raw["epsilon"] == compute_epsilon(
        noise_multiplier=raw["noise_multiplier"],
        sample_rate=raw["sample_rate"],
        steps=raw["steps"],
        delta=raw["delta"],
        accountant="prv",
    )
    loaded = load_checkpoint(dp_checkpoint)
    assert loaded.arch == "small_cnn_dp" and loaded.privacy == raw


@pytest.mark.slow
@pytest.mark.parametrize("target", ["1", "3"])
def test_train_dp_meets_smaller_budgets(synth_dir, tmp_path, target):
    out = tmp_path / "m.safetensors"
    assert _train(synth_dir, out, "--dp", "--epsilon", target) == 0
    raw = json.loads(_metadata(out)["privacy"])
    assert 0.9 * float(target) <= raw["epsilon"] <= float(target)
    assert raw["delta"] * raw["n_samples"] <= 0.1  # the default delta


@pytest.mark.slow
def test_train_dp_with_a_chosen_noise_multiplier_and_accountant(synth_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["--dp", "--noise-multiplier", "1.3", "--accountant", "rdp", "--max-grad-norm", "0.5"]
    assert _train(synth_dir, out, *args) == 0
    raw = json.loads(_metadata(out)["privacy"])
    assert (raw["noise_multiplier"], raw["accountant"], raw["max_grad_norm"]) == (1.3, "rdp", 0.5)
    assert raw["target_epsilon"] is None and raw["epsilon"] > 0


def test_audit_shows_the_ledger_and_its_curve(dp_checkpoint, synth_dir, tmp_path):
    out = tmp_path / "report"
    code = run(
        [
            "audit",
            "--model",
            str(dp_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--audits",
            "privacy_budget",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    doc = json.loads((out / "audit.json").read_text())
    sec = doc["sections"]["privacy_budget"]
    ledger = json.loads(_metadata(dp_checkpoint)["privacy"])
    assert sec["tables"]["ledger"][0]["epsilon"] == ledger["epsilon"]
    assert [r["steps"] for r in sec["tables"]["epsilon_curve"]] == [
        s for s, _ in ledger["epsilon_curve"]
    ]
    statuses = {c["id"]: c["status"] for c in sec["checks"]}
    assert statuses == {
        "privacy_budget.epsilon": "pass",
        "privacy_budget.delta_times_n": "pass",
        "privacy_budget.epsilon_recomputed_ratio": "pass",
        "privacy_budget.epsilon_over_target": "pass",
    }
    assert doc["meta"]["model"]["privacy"]["epsilon"] == ledger["epsilon"]
    html = (out / "index.html").read_text()
    assert "Privacy budget" in html and "<svg" in html


def test_a_model_without_ledger_gets_a_skipped_section(trained_checkpoint, synth_dir, tmp_path):
    out = tmp_path / "report"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--audits",
            "privacy_budget",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    sec = json.loads((out / "audit.json").read_text())["sections"]["privacy_budget"]
    assert sec["summary"] == NO_LEDGER_SUMMARY
    assert [(c["status"], c["reason"]) for c in sec["checks"]] == [("skipped", NO_LEDGER_REASON)]


def _run_with_ledger(tiny_preds, ledger):
    test, preds, model = tiny_preds
    return run_audits(
        preds,
        test,
        audits=["privacy_budget"],
        model=model,
        model_info={"privacy": ledger},
        policy=Policy.default(),
    )


@pytest.fixture(scope="module")
def tiny_preds(synth_dir):
    from medaudit.data import load_cohort
    from medaudit.inference import predict

    test = load_cohort(synth_dir / "manifest.csv")
    model = build_model("small_cnn_gn", random_state=0).eval()
    return test, predict(model, test, image_size=16), model


def _statuses(rep):
    return {c.id: c.status for c in rep.section("privacy_budget").checks}


def test_an_understated_or_overspent_ledger_fails(tiny_preds):
    # sigma = 1, q = 0.05, 200 steps: RDP epsilon 5.37 at delta 1e-5, 2.78 at delta 1e-2
    kw = {
        "noise_multiplier": 1.0,
        "sample_rate": 0.05,
        "steps": 200,
        "max_grad_norm": 1.0,
        "accountant": "rdp",
        "n_samples": 1000,
    }
    good = PrivacyLedger.compute(delta=1e-5, target_epsilon=6.0, **kw).to_dict()
    rep = _run_with_ledger(tiny_preds, good)
    assert set(_statuses(rep).values()) == {"pass"} and rep.passed
    lie = dict(good, epsilon=good["epsilon"] / 2)  # understated: recomputation disagrees
    rep = _run_with_ledger(tiny_preds, lie)
    assert _statuses(rep)["privacy_budget.epsilon_recomputed_ratio"] == "fail"
    assert not rep.passed  # a critical failure
    over = PrivacyLedger.compute(delta=1e-2, target_epsilon=2.0, **kw).to_dict()
    status = _statuses(_run_with_ledger(tiny_preds, over))
    assert status["privacy_budget.delta_times_n"] == "fail"  # 1e-2 x 1000 = 10
    assert status["privacy_budget.epsilon_over_target"] == "fail"  # 2.78 > 2
    assert status["privacy_budget.epsilon"] == "pass"


def test_a_damaged_ledger_is_bad_input(tiny_preds):
    with pytest.raises(InvalidInputError, match="invalid 'steps'"):
        _run_with_ledger(
            tiny_preds,
            {
                "epsilon": 1.0,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "sample_rate": 0.1,
                "steps": -3.5,
                "accountant": "prv",
            },
        )


def test_checkpoints_keep_the_ledger_and_refuse_a_damaged_one(tmp_path):
    path = tmp_path / "m.safetensors"
    led = {
        "epsilon": 2.0,
        "delta": 1e-5,
        "noise_multiplier": 1.0,
        "sample_rate": 0.1,
        "steps": 10,
        "accountant": "prv",
    }
    kw = {
        "arch": "small_cnn_gn",
        "in_channels": 1,
        "num_classes": 2,
        "image_size": 16,
        "class_names": ["a", "b"],
        "mean": 0.5,
        "std": 0.25,
    }
    save_checkpoint(build_model("small_cnn_gn"), path, privacy=led, **kw)
    assert load_checkpoint(path).privacy == led
    save_checkpoint(build_model("small_cnn_gn"), path, **kw)
    assert load_checkpoint(path).privacy is None
    from safetensors.torch import load_file, save_file

    meta = _metadata(path)
    save_file(load_file(str(path)), str(path), metadata={**meta, "privacy": "[1, 2]"})
    with pytest.raises(InvalidInputError, match="damaged medaudit metadata"):
        load_checkpoint(path)


# ------------------------------------------------------------------ CLI bad input: exit 2
def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("medaudit: error:") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err[len("medaudit: error: ") :]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dp", "--epsilon", "0"], MSG_EPSILON.format(got=0.0)),
        (["--dp", "--epsilon", "-2"], MSG_EPSILON.format(got=-2.0)),
        (["--dp", "--epsilon", "8", "--delta", "1"], MSG_DELTA.format(got=1.0)),
        (["--dp"], MSG_BUDGET_ARGS.format(got="neither")),
        (["--epsilon", "8"], "--epsilon, --delta and --noise-multiplier need --dp."),
    ],
)
def test_bad_dp_arguments_exit_2_with_one_clear_line(synth_dir, tmp_path, capsys, args, message):
    out = tmp_path / "m.safetensors"
    assert _train(synth_dir, out, *args) == 2
    assert _one_line_error(capsys) == " ".join(message.split())
    assert not out.exists()


def test_a_batchnorm_architecture_lists_every_layer_and_the_fix(synth_dir, tmp_path, capsys):
    assert (
        _train(
            synth_dir, tmp_path / "m.safetensors", "--dp", "--epsilon", "8", "--arch", "small_cnn"
        )
        == 2
    )
    err = _one_line_error(capsys)
    assert err.startswith("The model has 4 layer(s) that DP-SGD cannot train: body.1 (BatchN")
    assert "body.13 (BatchNorm2d)" in err and err.endswith("such as --arch small_cnn_dp.")
