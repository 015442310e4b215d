"""The robustness audit: power, false alarms, subgroups, CE against a reference, the CLI.

A planted "spot detector" (a fixed model that scores the brightest 3 x 3 patch) on images
with a faint spot in the positives gives effects of known direction: noise hides the
spot (power), an identity corruption changes nothing (false alarm), blur erases small
spots but not large ones (the group with small spots loses more).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medaudit.cli.app import run
from medaudit.data import Cohort
from medaudit.inference import FORWARD_PASSES, predict
from medaudit.pipeline import run_audits
from medaudit.registry import AuditContext
from medaudit.report import Policy, validate_audit_json
from medaudit.robustness import (
    SETTINGS,
    list_corruptions,
    register_corruption,
    unregister_corruption,
)
from medaudit.robustness._audit import MSG_REFERENCE_CHANNELS
from medaudit.robustness._presets import MSG_UNKNOWN_ITEM, valid_choices
from medaudit.robustness._registry import MSG_RGB_ONLY, MSG_SEVERITY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SWEEP_COLUMNS = [
    "corruption", "severity", "auroc", "auroc_ci_low", "auroc_ci_high", "balanced_error", "ece",
]  # fmt: skip


class SpotDetector(torch.nn.Module):
    """Logit = 30 * (brightest 3 x 3 mean - 0.5): finds a faint bright spot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = F.avg_pool2d(x, 3, stride=1).amax(dim=(1, 2, 3))
        z = 30.0 * (m - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def spot_cohort(seed: int, *, n_patients: int = 160, size: int = 32, big: str | None = None):
    """Patients of groups A/B with 1-2 images; positives carry a +0.12 spot.

    The spot is 3 x 3, or 9 x 9 in group ``big``.
    """
    rng = np.random.default_rng(seed)
    rows, imgs = [], []
    for p in range(n_patients):
        y = int(rng.random() < 0.4)
        grp = "A" if p % 2 else "B"
        for _ in range(int(rng.integers(1, 3))):
            img = 0.4 + 0.05 * rng.standard_normal((size, size))
            if y:
                r = 4 if grp == big else 1
                cy, cx = rng.integers(r + 2, size - r - 2, 2)
                img[cy - r : cy + r + 1, cx - r : cx + r + 1] += 0.12
            imgs.append(np.clip(img, 0, 1))
            rows.append({"label": y, "patient_id": f"p{p}", "grp": grp})
    return Cohort(pd.DataFrame(rows), images=np.stack(imgs)[:, None].astype(np.float32))


def _audit(cohort, settings, *, model=None, n_boot=200, sensitive=("grp",), seed=0):
    model = model or SpotDetector()
    preds = predict(model, cohort)
    pol = Policy.from_mapping(
        {"settings": {"n_bootstrap": n_boot, "seed": seed, "robustness": settings}}
    )
    rep = run_audits(
        preds,
        cohort,
        audits=["robustness"],
        sensitive=list(sensitive),
        policy=pol,
        model=model,
        model_info={"image_size": cohort.image_shape[1], "in_channels": 1},
    )
    return rep, rep.section("robustness")


@pytest.fixture
def identity():
    register_corruption(
        "identity", lambda x, p, rng: x, (0, 0, 0, 0, 0), family="custom", source="test"
    )
    yield "identity"
    unregister_corruption("identity")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_noise_breaks_the_spot_detector(seed):
    _, sec = _audit(spot_cohort(seed), {"corruptions": ["gaussian_noise"]})
    sweep = sec.tables["sweep"]
    assert list(sweep.columns[: len(SWEEP_COLUMNS)]) != [] and set(SWEEP_COLUMNS) <= set(sweep)
    assert len(sweep) == 5 and sweep["severity"].tolist() == [1, 2, 3, 4, 5]
    check = next(c for c in sec.checks if c.id == "robustness.gaussian_noise.auroc_drop")
    assert check.status == "fail" and check.ci[0] > 0.05, check
    assert sweep["auroc"].iloc[-1] < sweep["auroc"].iloc[0]
    mce = next(c for c in sec.checks if c.id == "robustness.mce")
    assert mce.value > 1 and mce.ci[0] > 1  # errors grow under noise
    assert "gaussian_noise" in sec.summary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_false_alarm_identity_corruption_changes_nothing(identity, seed):
    _, sec = _audit(spot_cohort(seed), {"corruptions": [identity]})
    sweep = sec.tables["sweep"]
    assert (sweep["auroc_drop"] == 0).all()
    assert (sweep["auroc_drop_ci_low"] == 0).all() and (sweep["auroc_drop_ci_high"] == 0).all()
    check = next(c for c in sec.checks if c.id == "robustness.identity.auroc_drop")
    assert check.status == "pass" and check.value == 0
    ce = sec.tables["corruption_errors"].iloc[0]
    assert ce["ce"] == pytest.approx(1.0) and ce["relative_ce"] == pytest.approx(0.0)
    groups = sec.tables["subgroups"]
    assert (groups["status"] == "ok").all()
    assert (groups["verdict"] == "no clear difference").all()
    assert (groups["excess_drop"] == 0).all() and (groups["gap_widening"] == 0).all()


def test_subgroup_with_small_spots_loses_more_under_blur():
    _, sec = _audit(
        spot_cohort(3, n_patients=240, big="B"), {"corruptions": ["gaussian_blur"]}, n_boot=300
    )
    g = sec.tables["subgroups"].set_index("group")
    assert g.loc["A", "auroc_drop"] > g.loc["B", "auroc_drop"]
    assert g.loc["A", "excess_drop_ci_low"] > 0
    assert g.loc["A", "verdict"].startswith("loses more than the rest")
    assert g.loc["B", "verdict"].startswith("loses less than the rest")
    assert "The A group (grp) loses more AUROC than the rest under gaussian_blur" in sec.summary


def test_sweep_is_deterministic_and_independent_of_batch_size(tmp_path):
    cohort = spot_cohort(4, n_patients=60)
    model = SpotDetector()
    preds = predict(model, cohort)
    pol = Policy.from_mapping({"settings": {"n_bootstrap": 50}})
    tables = []
    for bs in (7, 256):
        ctx = AuditContext(
            predictions=preds,
            cohort=cohort,
            policy=pol.with_settings({"robustness.corruptions": ["shot_noise", "motion_blur"]}),
            model=model,
            model_info={"image_size": 32, "in_channels": 1},
            batch_size=bs,
        )
        from medaudit.robustness import audit

        tables.append(audit(ctx).tables["sweep"])
    pd.testing.assert_frame_equal(tables[0], tables[1], atol=1e-6, rtol=0)


def test_grayscale_native_for_a_three_channel_model():
    cohort = spot_cohort(6, n_patients=40)

    class RGBSpot(SpotDetector):
        def forward(self, x):
            assert x.shape[1] == 3
            assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
            return super().forward(x[:, :1])

    model = RGBSpot()
    preds = predict(model, cohort, in_channels=3)
    ctx = AuditContext(
        predictions=preds,
        cohort=cohort,
        policy=Policy.from_mapping(
            {"settings": {"n_bootstrap": 20, "robustness": {"corruptions": ["gaussian_noise"]}}}
        ),
        model=model,
        model_info={"image_size": 32, "in_channels": 3},
    )
    from medaudit.robustness import audit

    # a grayscale image read as RGB is corrupted once, as gray: the channels stay equal
    assert len(audit(ctx).tables["sweep"]) == 5
    # ... and an RGB-only corruption is refused for it, with the valid choices
    ctx.policy = ctx.policy.with_settings({"robustness.corruptions": ["bubbles"]})
    with pytest.raises(ValueError) as exc:
        audit(ctx)
    assert MSG_RGB_ONLY.format(
        name="bubbles", channels=1, choices=", ".join(list_corruptions(channels=1))
    ) in str(exc.value)


def test_image_strip_only_for_synthetic_data_unless_asked():
    cohort = spot_cohort(7, n_patients=40)
    _, sec = _audit(cohort, {"corruptions": ["gaussian_noise"]}, n_boot=20)
    assert "severity_strip" not in sec.figures
    _, sec = _audit(cohort, {"corruptions": ["gaussian_noise"], "show_images": "always"}, n_boot=20)
    assert "severity_strip" in sec.figures
    assert "data:image/png;base64" in sec.figures["severity_strip"].svg


def test_multiclass_models_are_swept():
    cohort = spot_cohort(8, n_patients=90)
    cohort.meta["label"] = np.arange(len(cohort)) % 3
    cohort.class_names = ["a", "b", "c"]

    class Three(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m, -m, 2 * m], dim=1)

    _, sec = _audit(cohort, {"corruptions": ["brightness_up"]}, model=Three(), n_boot=30)
    sweep = sec.tables["sweep"]
    assert sweep["auroc"].notna().all() and sweep["balanced_error"].between(0, 1).all()


def test_settings_declare_flags_and_validate():
    flags = {s.name: s.flag for s in SETTINGS}
    assert flags["corruptions"] == "--corruptions"
    assert flags["reference_model"] == "--reference-model"
    assert flags["severity"] == "--corruption-severity"
    with pytest.raises(ValueError) as exc:
        Policy.from_mapping({"settings": {"robustness": {"corruptions": ["chest", "fog"]}}})
    assert MSG_UNKNOWN_ITEM.format(names=["fog"], choices=valid_choices()) in str(exc.value)
    with pytest.raises(ValueError, match=r"must be one of \[1, 2, 3, 4, 5\], got 6"):
        Policy.from_mapping({"settings": {"robustness": {"severity": 6}}})
    assert MSG_SEVERITY  # the library's own message for corrupt(); the CLI uses the setting's
    assert MSG_REFERENCE_CHANNELS.count("{") == 2


# --------------------------------------------------------------------------------- CLI
def _cli_audit(ckpt, data, out, *extra):
    return run(
        ["audit", "--model", str(ckpt), "--data", str(data), "--out", str(out),
         "--audits", "robustness", "--no-progress", *extra]
    )  # fmt: skip


def test_cli_bad_input_exits_2_with_the_valid_choices(
    tmp_path, synth_dir, trained_checkpoint, capsys
):
    man = synth_dir / "manifest.csv"
    cases = [
        (["--corruptions", "chest,fog"], "valid choices: presets core, chest, ct, mri"),
        (["--corruption-severity", "7"], "must be one of [1, 2, 3, 4, 5], got 7"),
        (["--corruptions", "stain_shift"], "valid choices for these images: gaussian_noise"),
        (["--reference-model", str(tmp_path / "nope.pt")], "Checkpoint not found"),
    ]
    for extra, words in cases:
        capsys.readouterr()
        out = tmp_path / "bad"
        assert _cli_audit(trained_checkpoint, man, out, *extra) == 2, extra
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
        assert not (out / "audit.json").exists()


def test_cli_audit_writes_the_sweep_table_and_ce_against_a_reference(
    tmp_path, synth_dir, trained_checkpoint
):
    out = tmp_path / "r"
    before = FORWARD_PASSES["count"]
    code = _cli_audit(
        trained_checkpoint,
        synth_dir / "manifest.csv",
        out,
        "--corruptions",
        "gaussian_noise,jpeg_compression",
        "--corruption-severity",
        "4",
        "--reference-model",
        str(trained_checkpoint),  # the model itself: every CE must be exactly 1
        "--set",
        "n_bootstrap=50",
    )
    assert code in (0, 1)
    doc = json.loads((out / "audit.json").read_text())
    validate_audit_json(doc)
    sec = doc["sections"]["robustness"]
    sweep = pd.DataFrame(sec["tables"]["sweep"])
    assert set(SWEEP_COLUMNS) <= set(sweep.columns) and len(sweep) == 10
    assert {c["id"] for c in sec["checks"]} == {
        "robustness.mce",
        "robustness.gaussian_noise.auroc_drop",
        "robustness.jpeg_compression.auroc_drop",
    }
    assert all("severity 4" in c["description"] for c in sec["checks"][1:])
    # one clean pass plus exactly one pass per cell, for the model and for the reference
    assert FORWARD_PASSES["count"] == before + 2 * (1 + 10)
    ce = pd.DataFrame(sec["tables"]["corruption_errors"])
    np.testing.assert_allclose(ce["ce"].astype(float), 1.0)
    rce = ce["relative_ce"].dropna().astype(float)  # undefined where errors do not grow
    np.testing.assert_allclose(rce, 1.0)
    assert any("reference model" in n for n in sec["notes"])
    mce = next(c for c in sec["checks"] if c["id"] == "robustness.mce")
    assert mce["value"] == pytest.approx(1.0) and "reference model" in mce["description"]


# ------------------------------------------------------------------ medaudit corrupt
def test_cli_corrupt_writes_copies_and_a_manifest(tmp_path, synth_dir, capsys):
    from medaudit.data import load_cohort
    from medaudit.robustness import corrupt

    out = tmp_path / "noisy"
    args = ["corrupt", "--data", str(synth_dir / "manifest.csv"), "--out", str(out)]
    assert run([*args, "--corruption", "gaussian_noise", "--severity", "2", "--seed", "4"]) == 0
    assert "Wrote gaussian_noise at severity 2" in capsys.readouterr().out
    src, copy = load_cohort(synth_dir / "manifest.csv"), load_cohort(out / "manifest.csv")
    assert len(copy) == len(src) and sorted(p.name for p in out.iterdir()) == [
        "images",
        "manifest.csv",
    ]
    assert {"source_path", "corruption", "severity", "corruption_seed"} <= set(copy.meta.columns)
    assert (copy.meta["label"].to_numpy() == src.labels).all()
    for i in (0, len(src) - 1):  # each image corrupted at its own size, seeded by its row
        x = torch.from_numpy(src.image(i))[None]
        want = corrupt(x, "gaussian_noise", 2, seed=4, index=[i])[0].numpy()
        np.testing.assert_allclose(copy.image(i), np.round(want * 255) / 255, atol=1e-6)
    # 16-bit copies for grayscale images
    out16 = tmp_path / "blur16"
    assert run([*args[:3], "--out", str(out16), "--corruption", "gaussian_blur",
                "--severity", "1", "--bit-depth", "16"]) == 0  # fmt: skip
    from PIL import Image

    with Image.open(out16 / "images" / "000000.png") as im:
        assert im.mode.startswith("I")


def test_cli_corrupt_bad_input_exits_2_and_writes_nothing(tmp_path, synth_dir, capsys):
    man = str(synth_dir / "manifest.csv")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    cases = [
        (["--corruption", "fog", "--severity", "1"], "valid choices: gaussian_noise, shot_noise"),
        (["--corruption", "gaussian_noise", "--severity", "7"], "[1, 2, 3, 4, 5]; got 7"),
        (["--corruption", "bubbles", "--severity", "1"], "valid choices for these images:"),
        (["--corruption", "gaussian_noise", "--severity", "1", "--bit-depth", "12"], "8 or 16"),
    ]
    for extra, words in cases:
        capsys.readouterr()
        assert run(["corrupt", "--data", man, "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    args = ["--corruption", "gaussian_noise", "--severity", "1"]
    assert run(["corrupt", "--data", man, "--out", str(taken), *args]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no half-written folder
    assert run(["corrupt", "--data", str(tmp_path / "none.csv"), "--out", "x", *args]) == 2


def test_summary_names_the_worst_off_group_and_whether_its_gap_widens():
    from medaudit.robustness._section import _subgroup_sentence

    base = {"attribute": "sex", "status": "ok", "severity": 3}
    rows = [
        {**base, "group": "female", "corruption": c, "auroc_clean": 0.7, "gap_clean": 0.1,
         "gap_clean_ci_low": 0.04, "gap_clean_ci_high": 0.16, "excess_drop": e,
         "excess_drop_ci_low": lo, "excess_drop_ci_high": hi, "gap_widening": e,
         "gap_widening_ci_low": lo, "gap_widening_ci_high": hi}
        for c, e, lo, hi in (("noise", 0.08, 0.02, 0.14), ("blur", -0.01, -0.05, 0.03))
    ]  # fmt: skip
    text = " ".join(_subgroup_sentence(pd.DataFrame(rows)))
    assert "The female group (sex) is the worst off on clean images (AUROC 0.70" in text
    assert "its gap widens under noise." in text
    assert "The female group (sex) loses more AUROC than the rest under noise" in text
    for r in rows:  # a clean gap whose CI reaches 0 is not called "worst off"
        r["gap_clean_ci_low"] = -0.01
    assert "worst off" not in " ".join(_subgroup_sentence(pd.DataFrame(rows)))
