"""Unlearning: forget requests, methods through the one loop, verification, relearning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats as sps

from medaudit._errors import InvalidInputError
from medaudit.attacks.unlearning import (
    MSG_FORGET_ALL,
    MSG_IDS_NOT_FOUND,
    ForgetRequest,
    UnlearnSettings,
    list_methods,
    parse_forget,
    read_forget_file,
    relearning_curve,
    relearning_tiers,
    unlearn,
    verify_unlearning,
    weighted_ks,
)
from medaudit.cli.app import run
from medaudit.data import Cohort
from medaudit.models import build_model, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cohort(n_patients: int = 12, size: int = 16, seed: int = 0) -> Cohort:
    """Two sites, patients with two studies of two images each; label planted as a bright blob."""
    rng = np.random.default_rng(seed)
    rows, imgs = [], []
    for p in range(n_patients):
        label = p % 2
        for s in range(2):
            for i in range(2):
                img = rng.random((size, size)).astype(np.float32) * 0.5
                if label:
                    img[4:9, 4:9] += 0.5
                imgs.append(img)
                rows.append(
                    {
                        "label": label,
                        "patient_id": f"P{p}",
                        "study_id": f"P{p}-S{s}",
                        "image_id": f"P{p}-S{s}-I{i}",
                        "site": f"site_{'AB'[p % 4 // 2]}",
                    }
                )
    return Cohort(pd.DataFrame(rows), images=np.stack(imgs), name="tiny")


def test_parse_forget_and_file(tmp_path):
    r = parse_forget("patient_id=P1, P2,P1")
    assert (r.column, r.ids, r.level) == ("patient_id", ("P1", "P2"), "patient")
    assert parse_forget("site=site_A").level == "site"
    assert parse_forget("study_id=x").level == "study"
    assert parse_forget("image_id=x").level == "image"
    f = tmp_path / "ids.csv"
    f.write_text("study_id\nP1-S0\nP2-S1\n")
    assert read_forget_file(f) == ForgetRequest("study_id", ("P1-S0", "P2-S1"))
    for bad in ("P1,P2", "=P1", "patient_id="):
        with pytest.raises(InvalidInputError, match="COLUMN=ID1"):
            parse_forget(bad)


def test_mask_every_level_and_bad_requests():
    c = _cohort()
    assert ForgetRequest("site", ("site_A",)).mask(c).sum() == 24
    assert ForgetRequest("patient_id", ("P1", "P2")).mask(c).sum() == 8
    assert ForgetRequest("study_id", ("P1-S0",)).mask(c).sum() == 2
    assert ForgetRequest("image_id", ("P1-S0-I1",)).mask(c).sum() == 1
    with pytest.raises(InvalidInputError) as e:
        ForgetRequest("patient_id", ("P1", "nobody")).mask(c)
    assert str(e.value) == MSG_IDS_NOT_FOUND.format(
        n=1, column="patient_id", name="tiny", ids="nobody"
    )
    with pytest.raises(InvalidInputError) as e:
        ForgetRequest("site", ("site_A", "site_B")).mask(c)
    assert str(e.value) == MSG_FORGET_ALL.format(n=48, name="tiny", column="site")


def test_weighted_ks_agrees_with_scipy():
    # Reference: scipy.stats.ks_2samp (two-sample KS statistic), with unit weights.
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.normal(size=40), rng.normal(0.5, size=40)
        got = weighted_ks(a, b, np.ones((1, 40)))[0]
        assert got == pytest.approx(sps.ks_2samp(a, b).statistic, abs=1e-12)
    # Integer weights = repeating the rows.
    w = rng.integers(0, 3, 40).astype(float)
    rep = np.repeat(np.arange(40), w.astype(int))
    assert weighted_ks(a, b, w[None])[0] == pytest.approx(
        sps.ks_2samp(a[rep], b[rep]).statistic, abs=1e-12
    )
    # Several reference models pooled into one distribution, with and without weights.
    bb = rng.normal(0.2, size=(3, 40))
    got = weighted_ks(a, bb, np.ones((1, 40)))[0]
    assert got == pytest.approx(sps.ks_2samp(a, bb.ravel()).statistic, abs=1e-12)
    assert weighted_ks(a, bb, w[None])[0] == pytest.approx(
        sps.ks_2samp(a[rep], bb[:, rep].ravel()).statistic, abs=1e-12
    )


def test_relearning_tiers_follow_the_hierarchy():
    c = _cohort()
    study = ForgetRequest("study_id", ("P1-S0",)).mask(c)
    t = relearning_tiers(c, study)
    assert list(t) == ["same patient", "same site", "other sites"]
    assert t["same patient"].sum() == 2  # P1's other study
    site = ForgetRequest("site", ("site_A",)).mask(c)
    assert list(relearning_tiers(c, site)) == ["other sites"]


@pytest.mark.parametrize("method", list_methods())
def test_every_method_runs_through_the_loop_and_records_ids(method):
    c = _cohort()
    torch.manual_seed(0)
    model = build_model("small_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    req = ForgetRequest("patient_id", ("P1", "P2"))
    res = unlearn(
        model,
        c,
        req,
        method=method,
        settings=UnlearnSettings(epochs=1, finetune_epochs=1, ascent_steps=2, batch_size=16),
        mean=[0.5],
        std=[0.25],
        image_size=16,
    )
    assert res.record == {
        "column": "patient_id",
        "level": "patient",
        "ids": ["P1", "P2"],
        "n_images": 8,
        "method": method,
        "exact": method == "retrain",
    }
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed = any(not torch.equal(before[k], v) for k, v in res.model.state_dict().items())
    assert changed


def test_verification_needs_two_references_and_relearning_curve_shape():
    c = _cohort()
    mask = ForgetRequest("patient_id", ("P1",)).mask(c)
    m = build_model("small_cnn").eval()
    opts = {"mean": [0.5], "std": [0.25], "image_size": 16, "in_channels": 1}
    with pytest.raises(InvalidInputError, match="at least two retrained"):
        verify_unlearning(m, [m], method="x", forget=c.subset(mask), retain=c, **opts)
    df = relearning_curve({"x": m, "retrained reference": m}, c, mask, steps=(0, 1), **opts)
    assert set(df.tier) == {"same site", "other sites"}
    assert (df[df.steps == 0].recovery == 0).all()
    assert np.allclose(df.excess_recovery, 0.0)  # the same model twice


class _ConstantLogits(torch.nn.Module):
    """Logits (0, b) for every image: confidence b in the positive class."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.head = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([0.0, b]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(1, 2, 3))[:, None])


def test_references_that_disagree_turn_a_fail_into_inconclusive(monkeypatch):
    import medaudit.attacks.unlearning._verify as V

    c = _cohort()
    mask = ForgetRequest("patient_id", ("P1", "P2", "P3", "P4")).mask(c)
    opts = {"mean": [0.5], "std": [0.25], "image_size": 16, "in_channels": 1}
    kw = {"method": "x", "forget": c.subset(mask), "retain": c.subset(~mask), **opts}
    u, r = _ConstantLogits(5.0), _ConstantLogits(0.0)
    # Two identical pooled references: no disagreement, and u is far from them.
    v = verify_unlearning(u, [r, _ConstantLogits(0.0), r], **kw)
    assert v.reference_floor == 0.0 and v.check.status == "fail"
    assert verify_unlearning(u, [r, r], **kw).check.status == "fail"  # floor NaN: as before
    # References that disagree by more than the CI's lower limit: not failed.
    monkeypatch.setattr(V, "_reference_floor", lambda pooled: 0.99)
    v = verify_unlearning(u, [r, r, r], **kw)
    assert v.check.status == "inconclusive"
    assert "differ from each other by KS 0.99" in v.check.reason
    # ... and a pass is not a pass when the references are further apart than the margin.
    assert verify_unlearning(r, [r, r, r], **kw).check.status == "inconclusive"
    monkeypatch.setattr(V, "_reference_floor", lambda pooled: 0.0)
    assert verify_unlearning(r, [r, r, r], **kw).check.status == "pass"


def test_reference_floor_is_the_largest_pairwise_ks():
    from medaudit.attacks.unlearning._verify import _reference_floor

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(3, 30)) + np.array([[0.0], [0.3], [1.0]])
    want = max(sps.ks_2samp(rows[i], rows[j]).statistic for i, j in ((0, 1), (0, 2), (1, 2)))
    assert _reference_floor(rows) == pytest.approx(want, abs=1e-12)
    assert np.isnan(_reference_floor(rows[:1]))


def _png_manifest(tmp_path, c: Cohort):
    """A manifest medaudit did not write: PNGs via PIL, CSV via plain pandas."""
    (tmp_path / "img").mkdir()
    meta = c.meta.drop(columns=["image_id"]).copy()
    paths = []
    for i, img in enumerate(c.images[:, 0]):
        p = f"img/{i}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(tmp_path / p)
        paths.append(p)
    meta.insert(0, "path", paths)
    meta.to_csv(tmp_path / "train.csv", index=False)
    ckpt = save_checkpoint(
        build_model("small_cnn"),
        tmp_path / "m.safetensors",
        arch="small_cnn",
        in_channels=1,
        num_classes=2,
        image_size=16,
        class_names=["negative", "positive"],
        mean=[0.5],
        std=[0.25],
    )
    return tmp_path / "train.csv", ckpt


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    data, ckpt = _png_manifest(tmp_path, _cohort(n_patients=4))
    base = ["unlearn", "--model", str(ckpt), "--data", str(data), "--out"]
    cases = {
        "ids": (["--forget", "patient_id=P1,ghost"], "not in the training data"),
        "all": (["--forget", "patient_id=P0,P1,P2,P3"], "nothing would be retained"),
        "both": (["--forget", "site=site_A", "--forget-file", str(data)], "exactly one"),
        "method": (["--forget", "patient_id=P1", "--method", "nope"], "Unknown unlearning"),
    }
    for name, (extra, msg) in cases.items():
        out = tmp_path / name
        assert run([*base, str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.slow
def test_cli_unlearn_on_a_foreign_manifest(tmp_path, capsys):
    data, ckpt = _png_manifest(tmp_path, _cohort(n_patients=8))
    out = tmp_path / "out"
    code = run(
        [
            "unlearn", "--model", str(ckpt), "--data", str(data), "--forget", "patient_id=P1,P2",
            "--method", "finetune", "--out", str(out), "--epochs", "1",
            "--finetune-epochs", "1", "--relearn-steps", "0,1",
        ]
    )  # fmt: skip
    assert code in (0, 1)
    loaded = load_checkpoint(out / "model.safetensors")
    assert loaded.extra["unlearning"]["ids"] == ["P1", "P2"]
    assert loaded.extra["unlearning"]["method"] == "finetune"
    import json

    doc = json.loads((out / "audit.json").read_text())
    table = doc["sections"]["unlearning"]["tables"]["verification"]
    assert [r["model"] for r in table][:2] == ["finetune", "retrained reference"]
    html = (out / "index.html").read_text()
    assert "retrained reference" in html and "P1" not in html
