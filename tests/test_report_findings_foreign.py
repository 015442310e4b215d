"""Findings on a data set medaudit did not generate: PNGs and a manifest written here.

Lesions are Gaussian blobs on noisy backgrounds; in the planted data set they are fainter
for one sex. ``medaudit train`` and ``medaudit audit`` run as a user runs them; the first
finding of ``audit.json`` must be about that attribute and fail, and on the same data
without the planted effect no finding about it may fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.cli.app import run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SIZE = 32


def _write_images(folder: Path, n: int, *, faint: float, seed: int, prefix: str) -> pd.DataFrame:
    """``n`` patients, one image each; lesions in ``faint`` of their strength for women."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rows = []
    for i in range(n):
        sex = "F" if rng.random() < 0.5 else "M"
        label = int(rng.random() < 0.4)
        img = 0.45 + 0.06 * rng.standard_normal((SIZE, SIZE))
        img += 0.08 * np.sin(xx / 5 + rng.uniform(0, 6))  # anatomy-like stripes
        if label:
            cy, cx = rng.uniform(8, SIZE - 8, 2)
            amp = 0.35 * (faint if sex == "F" else 1.0)
            img += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
        png = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        name = f"img/{prefix}{i:05d}.png"
        Image.fromarray(png).save(folder / name)
        rows.append(
            {
                "path": name,
                "label": label,
                "patient_id": f"{prefix}{i:05d}",
                "sex": sex,
                "age_group": str(rng.choice(["<50", "50-69", "70+"])),
            }
        )
    return pd.DataFrame(rows)


def _audit_findings(tmp_path: Path, faint: float) -> list[dict]:
    data = tmp_path / "data"
    _write_images(data, 1000, faint=faint, seed=1, prefix="tr").to_csv(
        data / "train.csv", index=False
    )
    _write_images(data, 800, faint=faint, seed=2, prefix="te").to_csv(
        data / "test.csv", index=False
    )
    ckpt = tmp_path / "model.safetensors"
    args = ["train", "--data", str(data / "train.csv"), "--out", str(ckpt), "--epochs", "6"]
    assert run([*args, "--no-progress"]) == 0
    policy = tmp_path / "policy.toml"
    policy.write_text("[settings]\nn_bootstrap = 300\n")
    out = tmp_path / "report"
    code = run(
        [
            "audit", "--model", str(ckpt), "--data", str(data / "test.csv"),
            "--sensitive", "sex,age_group", "--policy", str(policy), "--out", str(out),
            "--no-progress",
        ]
    )  # fmt: skip
    assert code in (0, 1)
    return json.loads((out / "audit.json").read_text(encoding="utf-8"))["summary"]["findings"]


def _about_sex(f: dict) -> bool:
    return f["cause"].startswith("group:sex") or "sex" in f["title"]


def test_planted_faint_lesions_are_the_first_finding(tmp_path):
    findings = _audit_findings(tmp_path, faint=0.3)
    first = findings[0]
    assert first["status"] == "fail", findings[:3]
    assert any(c.startswith("fairness.sex.") for c in first["checks"]), first
    assert first["cause"] == "group:sex=F", first


def test_no_failing_finding_about_sex_without_the_planted_effect(tmp_path):
    findings = _audit_findings(tmp_path, faint=1.0)
    failing = [f for f in findings if _about_sex(f) and f["status"] == "fail"]
    assert not failing, failing
