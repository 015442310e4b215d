"""``medaudit watermark embed|verify`` and ``medaudit protect`` on data medaudit did not make.

The manifest and PNGs are written with plain numpy/PIL/pandas, as a user's would be.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.cli.app import run
from medaudit.models import build_model, save_checkpoint
from medaudit.watermark import MSG_CLASSES, WatermarkKey, save_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("medaudit: error:"), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _foreign_manifest(root, n_patients=120, size=32, seed=0):
    """A user's own data set: noise images, 'lesion' ones carry a bright disc."""
    rng = np.random.default_rng(seed)
    (root / "png").mkdir(parents=True)
    rows = []
    yy, xx = np.mgrid[0:size, 0:size]
    for p in range(n_patients):
        sick = rng.random() < 0.5
        for k in range(2):
            img = 90 + 25 * rng.standard_normal((size, size))
            if sick:
                cy, cx = rng.integers(8, size - 8, 2)
                img += 70 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
            name = f"png/p{p:03d}_{k}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows.append(
                {
                    "path": name,
                    "label": "lesion" if sick else "normal",
                    "patient_id": f"P{p:03d}",
                    "split": "test" if p % 5 == 0 else "train",
                }
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _checkpoint(path, num_classes=2, size=32):
    model = build_model("small_cnn", num_classes=num_classes, random_state=0)
    names = [f"c{i}" for i in range(num_classes)]
    save_checkpoint(
        model.eval(),
        path,
        arch="small_cnn",
        in_channels=1,
        num_classes=num_classes,
        image_size=size,
        class_names=names,
        mean=[0.4],
        std=[0.2],
    )
    return path


# -- bad input: exit 2, one line ------------------------------------------------------------
def test_a_model_with_other_classes_than_the_key_is_bad_input(tmp_path, capsys):
    model = _checkpoint(tmp_path / "three.safetensors", num_classes=3)
    key = save_key(WatermarkKey(5, num_classes=2, n_triggers=32), tmp_path / "k.key.json")
    assert run(["watermark", "verify", "--model", str(model), "--key", str(key)]) == 2
    assert _one_line_error(capsys) == "medaudit: error: " + MSG_CLASSES.format(got=3, want=2)


def test_too_few_queries_is_bad_input_and_says_how_many(tmp_path, capsys):
    model = _checkpoint(tmp_path / "m.safetensors")
    key = save_key(WatermarkKey(5, n_triggers=32), tmp_path / "k.key.json")
    code = run(
        [
            "watermark",
            "verify",
            "--model",
            str(model),
            "--key",
            str(key),
            "--queries",
            "12",
            "--false-claim-rate",
            "1e-6",
        ]
    )
    assert code == 2
    err = _one_line_error(capsys)
    assert "at least 20 queries are needed" in err and "12 queries" in err


def test_other_bad_inputs_exit_2(tmp_path, capsys):
    model = _checkpoint(tmp_path / "m.safetensors")
    base = ["watermark", "verify", "--model", str(model)]
    assert run([*base, "--key", str(tmp_path / "missing.key.json")]) == 2
    assert "not found" in _one_line_error(capsys)
    assert run([*base, "--key", "not-a-key"]) == 2
    assert "key file" in _one_line_error(capsys)
    (tmp_path / "junk.json").write_text("{}")
    assert run([*base, "--key", str(tmp_path / "junk.json")]) == 2
    assert "schema" in _one_line_error(capsys)
    assert (
        run(
            [
                "watermark",
                "embed",
                "--data",
                str(tmp_path / "nope.csv"),
                "--key",
                "1",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert ".safetensors" in _one_line_error(capsys)
    assert run(["protect", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "p")]) == 2
    assert "not found" in _one_line_error(capsys)
    assert not (tmp_path / "p").exists()


def test_verify_writes_json_with_p_value_and_verified(tmp_path, capsys):
    model = _checkpoint(tmp_path / "m.safetensors")
    key = save_key(WatermarkKey(5, n_triggers=32), tmp_path / "k.key.json")
    code = run(
        [
            "watermark",
            "verify",
            "--model",
            str(model),
            "--key",
            str(key),
            "--out",
            str(tmp_path / "v"),
        ]
    )
    doc = json.loads((tmp_path / "v" / "verification.json").read_text())
    assert code == (0 if doc["verified"] else 1)
    assert 0 <= doc["p_value"] <= 1 and isinstance(doc["verified"], bool)
    assert "seed" not in doc  # the secret never leaves the key file
    assert (tmp_path / "v" / "index.html").is_file()
    assert "p = " in capsys.readouterr().out


def test_the_watermark_audit_plugs_into_medaudit_audit(tmp_path, synth_dir, trained_checkpoint):
    key = save_key(WatermarkKey(5, n_triggers=32, image_size=32), tmp_path / "k.key.json")
    out = tmp_path / "report"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--audits",
            "watermark",
            "--watermark-key",
            str(key),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    doc = json.loads((out / "audit.json").read_text())
    checks = {c["id"]: c for c in doc["sections"]["watermark"]["checks"]}
    assert checks["watermark.p_value"]["status"] == "fail"  # never marked with this key
    assert code == 1


# -- end to end: embed then verify (slow) ---------------------------------------------------
@pytest.mark.slow
def test_embed_then_verify_on_a_foreign_manifest(tmp_path, capsys):
    manifest = _foreign_manifest(tmp_path / "data")
    unmarked = tmp_path / "unmarked.safetensors"
    assert (
        run(
            [
                "train",
                "--data",
                str(manifest),
                "--out",
                str(unmarked),
                "--epochs",
                "8",
                "--no-progress",
            ]
        )
        == 0
    )
    marked = tmp_path / "marked.safetensors"
    assert (
        run(
            [
                "watermark",
                "embed",
                "--data",
                str(manifest),
                "--model",
                str(unmarked),
                "--key",
                "1234",
                "--out",
                str(marked),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "clean test AUROC" in capsys.readouterr().out
    key = tmp_path / "marked.key.json"
    assert key.is_file()

    def verify(model, k, *extra):
        return run(["watermark", "verify", "--model", str(model), "--key", str(k), *extra])

    assert verify(marked, key, "--out", str(tmp_path / "v")) == 0
    doc = json.loads((tmp_path / "v" / "verification.json").read_text())
    assert doc["verified"] is True and doc["p_value"] < 1e-3
    other = save_key(WatermarkKey(999, n_triggers=32), tmp_path / "other.key.json")
    assert verify(marked, other) == 1
    assert verify(marked, "999") == 1
    assert verify(unmarked, key) == 1
    # Fewer queries than triggers still suffice at the default false-claim rate.
    assert verify(marked, key, "--queries", "16") == 0


@pytest.mark.parametrize("method", ["adversarial", "error-minimising"])
def test_protect_writes_protected_images_manifest_and_evidence(tmp_path, capsys, method):
    manifest = _foreign_manifest(tmp_path / "data", n_patients=30, size=24)
    out = tmp_path / "protected"
    args = ["protect", "--data", str(manifest), "--out", str(out), "--method", method]
    code = run([*args, "--epochs", "1", "--rounds", "1", "--no-progress"])
    assert code in (0, 1)  # 1: a check of the evidence failed (one epoch learns little)
    written = pd.read_csv(out / "manifest.csv")
    assert len(written) == 60 and (out / written["path"].iloc[0]).is_file()
    doc = json.loads((out / "protection.json").read_text())
    assert doc["method"] == method.replace("-", "_")
    assert "evidence" in json.dumps(doc)
    sections = json.loads((out / "report" / "audit.json").read_text())["sections"]
    assert "data_protection" in sections
    assert "drop" in capsys.readouterr().out


def test_protect_refuses_an_unknown_method(tmp_path, capsys):
    manifest = _foreign_manifest(tmp_path / "data", n_patients=4, size=24)
    args = ["protect", "--data", str(manifest), "--out", str(tmp_path / "p")]
    assert run([*args, "--method", "unlearnable"]) == 2
    assert "method" in _one_line_error(capsys).lower()
    assert not (tmp_path / "p").exists()
