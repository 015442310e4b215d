"""The CLI end to end on a small synthetic data set, and exit code 2 on each bad input."""

import json
import pickle

import pandas as pd
import pytest
import torch

from medaudit.cli.app import run
from medaudit.inference import FORWARD_PASSES


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("medaudit: error:"), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _audit(model, data, out, *extra):
    """Exit code of ``medaudit audit --model M --data D --out O [extra...]``."""
    return run(["audit", "--model", str(model), "--data", str(data), "--out", str(out), *extra])


def test_audit_end_to_end_runs_the_model_once(tmp_path, synth_dir, trained_checkpoint, capsys):
    out = tmp_path / "report"
    before = FORWARD_PASSES["count"]
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--sensitive",
            "sex,age_group",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, 1)
    doc = json.loads((out / "audit.json").read_text())
    # every audit reused one clean pass; the robustness sweep adds one pass per cell
    cells = len(doc["sections"]["robustness"]["tables"]["sweep"])
    assert FORWARD_PASSES["count"] == before + 1 + cells
    assert doc["schema"] == "medaudit.audit/1"
    assert {"integrity", "performance", "fairness"} <= set(doc["sections"])
    assert doc["passed"] == (code == 0)
    html = (out / "index.html").read_text()
    assert "<html" in html.lower()
    # identifiers stay out of the page by default
    manifest = pd.read_csv(synth_dir / "manifest.csv")
    assert manifest["patient_id"].iloc[0] not in html
    assert manifest["path"].iloc[0] not in html


def test_predict_writes_the_check_input(tmp_path, synth_dir, trained_checkpoint):
    out = tmp_path / "preds.csv"
    assert (
        run(
            [
                "predict",
                "--model",
                str(trained_checkpoint),
                "--data",
                str(synth_dir / "manifest.csv"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    df = pd.read_csv(out)
    assert {"label", "score", "sex"} <= set(df.columns)
    assert df["score"].between(0, 1).all()


def test_missing_manifest(tmp_path, trained_checkpoint, capsys):
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "not found" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_unknown_sensitive_column(tmp_path, synth_dir, trained_checkpoint, capsys):
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--sensitive",
            "shoe_size",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "shoe_size" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_unknown_audit_and_bad_policy(tmp_path, synth_dir, trained_checkpoint, capsys):
    base = [
        "audit",
        "--model",
        str(trained_checkpoint),
        "--data",
        str(synth_dir / "manifest.csv"),
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    assert run([*base, "--audits", "performance,astrology"]) == 2
    assert "astrology" in _one_line_error(capsys)
    pol = tmp_path / "p.toml"
    pol.write_text("[settings]\nn_bootstrap = 0\n")
    assert run([*base, "--policy", str(pol)]) == 2
    assert "n_bootstrap" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_pickled_checkpoint_is_refused(tmp_path, synth_dir, capsys):
    from medaudit.models import build_model

    bad = tmp_path / "model.pt"
    torch.save(build_model("small_cnn"), bad)  # a whole pickled module
    code = _audit(bad, synth_dir / "manifest.csv", tmp_path / "r", "--arch", "small_cnn")
    assert code == 2
    assert "pickle" in _one_line_error(capsys).lower()


def test_untrusted_pickle_never_runs(tmp_path, synth_dir, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    code = _audit(bad, synth_dir / "manifest.csv", tmp_path / "r", "--arch", "small_cnn")
    assert code == 2 and not marker.exists()
    _one_line_error(capsys)


def test_nan_labels_and_unreadable_manifest(tmp_path, trained_checkpoint, synth_dir, capsys):
    df = pd.read_csv(synth_dir / "manifest.csv")
    df.loc[0, "label"] = None
    df["path"] = [str(synth_dir / p) for p in df["path"]]
    bad = tmp_path / "nan.csv"
    df.to_csv(bad, index=False)
    base = ["audit", "--model", str(trained_checkpoint), "--out", str(tmp_path / "r")]
    assert run([*base, "--data", str(bad)]) == 2
    assert "label" in _one_line_error(capsys).lower()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert run([*base, "--data", str(empty)]) == 2
    _one_line_error(capsys)


def test_train_rejects_wrong_suffix_and_usage_errors(tmp_path, synth_dir, capsys):
    assert (
        run(["train", "--data", str(synth_dir / "manifest.csv"), "--out", str(tmp_path / "m.pkl")])
        == 2
    )
    assert "safetensors" in _one_line_error(capsys)
    assert run(["audit", "--model"]) == 2  # usage error
    _one_line_error(capsys)


@pytest.mark.parametrize("debug", [True])
def test_debug_shows_traceback(tmp_path, trained_checkpoint, capsys, debug):
    run(
        [
            "--debug",
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert "Traceback" in capsys.readouterr().err


def test_calibration_split_gives_the_mitigation_suggestion(tmp_path, synth_dir, trained_checkpoint):
    manifest = pd.read_csv(synth_dir / "manifest.csv")
    manifest["path"] = [str(synth_dir / p) for p in manifest["path"]]
    val = tmp_path / "val.csv"
    manifest[manifest["split"].isin(["train", "val"])].to_csv(val, index=False)
    test = tmp_path / "test.csv"
    manifest[~manifest["split"].isin(["train", "val"])].to_csv(test, index=False)
    out = tmp_path / "r"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(test),
            "--calibration-data",
            str(val),
            "--sensitive",
            "sex",
            "--audits",
            "fairness",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, 1)
    doc = json.loads((out / "audit.json").read_text())
    fairness = doc["sections"]["fairness"]
    assert "mitigation" in fairness["tables"] or any(
        "Mitigation" in n for n in fairness["notes"]
    ), fairness["notes"]
