"""Gradient inversion: metrics, label inference, defences, the attack and its CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit._errors import InvalidInputError
from medaudit.attacks.reconstruction import (
    MSG_DP_LOCAL_STEPS,
    MSG_NO_GRADIENT_ACCESS,
    Defence,
    ObservedUpdate,
    batch_gradient,
    dp_defence,
    infer_labels,
    match_images,
    observe_update,
    psnr,
    reconstruction_attack,
    reconstruction_section,
    ssim,
    trainable_parameters,
)
from medaudit.cli.app import run
from medaudit.models import build_model, save_checkpoint
from medaudit.privacy import compute_epsilon

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_psnr_and_ssim_by_hand():
    assert psnr(np.full((8, 8), 0.5), np.full((8, 8), 0.6))[0] == pytest.approx(20.0)
    x = np.random.default_rng(0).random((2, 1, 16, 16))
    assert np.allclose(ssim(x, x), 1.0)
    # Constant images c1, c2: SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1) (Wang et al. eq. 13).
    c1, c2, k1 = 0.2, 0.6, 0.01**2
    want = (2 * c1 * c2 + k1) / (c1**2 + c2**2 + k1)
    assert ssim(np.full((16, 16), c1), np.full((16, 16), c2))[0] == pytest.approx(want)
    noise = np.random.default_rng(1).random((1, 1, 32, 32))
    assert ssim(noise, x[:1, :, :16, :16].repeat(2, 2).repeat(2, 3))[0] < 0.2
    with pytest.raises(InvalidInputError, match="same shape"):
        ssim(np.zeros((1, 16, 16)), np.zeros((1, 16, 17)))


def test_matching_undoes_a_permutation():
    x = np.random.default_rng(2).random((4, 1, 16, 16))
    m = match_images(x[[2, 0, 3, 1]], x)
    assert m.order.tolist() == [1, 3, 0, 2]
    assert np.allclose(m.ssim, 1.0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn").eval()


def test_label_inference_from_the_last_layer():
    model = _model()
    x = torch.rand(1, 1, 32, 32)
    for label in (0, 1):
        g = batch_gradient(model, x, torch.tensor([label]))
        assert infer_labels(model, ObservedUpdate(g, 1, Defence("none"))).tolist() == [label]
    # A batch: counts from n (1/C - g_c), as Geng et al.; a balanced batch of 8.
    y = torch.tensor([0, 1] * 4)
    g = batch_gradient(model, torch.rand(8, 1, 32, 32), y)
    got = infer_labels(model, ObservedUpdate(g, 8, Defence("b", batch_size=8)))
    assert len(got) == 8 and abs(int((got == 1).sum()) - 4) <= 1


def test_one_local_step_equals_the_batch_gradient():
    model = _model()
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 1, 0])
    kw = {"mean": [0.5], "std": [0.25]}
    direct = observe_update(model, x, y, defence=Defence("b", batch_size=4), **kw)
    # Through medaudit.models.local_update with SGD: -update / lr after one step.
    two = observe_update(model, x, y, defence=Defence("s", batch_size=4, local_steps=2), **kw)
    cos = sum((a * b).sum() for a, b in zip(direct.gradients, two.gradients, strict=True)) / (
        torch.sqrt(sum((a * a).sum() for a in direct.gradients))
        * torch.sqrt(sum((b * b).sum() for b in two.gradients))
    )
    assert 0.9 < float(cos) < 1.0  # two steps: close to, not equal to, the gradient


def test_dp_defence_uses_the_privacy_calibration():
    d = dp_defence(8.0, dataset_size=200, batch_size=1, accountant="rdp")
    eps = compute_epsilon(
        noise_multiplier=d.noise_multiplier,
        sample_rate=1 / 200,
        steps=200,
        delta=1 / 200**1.1,
        accountant="rdp",
    )
    assert 7.9 < eps <= 8.0
    with pytest.raises(InvalidInputError) as e:
        Defence("x", local_steps=3, clip=1.0)
    assert str(e.value) == MSG_DP_LOCAL_STEPS.format(steps=3)
    # The noise is on the clipped sum: one image's update is almost all noise.
    model = _model()
    x = torch.rand(1, 1, 32, 32)
    obs = observe_update(model, x, torch.tensor([1]), defence=d, mean=[0.5], std=[0.25])
    norm = float(torch.sqrt(sum((g * g).sum() for g in obs.gradients)))
    n_params = sum(p.numel() for p in model.parameters())
    assert norm == pytest.approx(d.noise_multiplier * np.sqrt(n_params), rel=0.1)


def test_restarts_keep_the_start_that_matches_the_gradient_best():
    from medaudit.attacks.reconstruction import InversionSettings, invert_gradients

    model = _model()
    kw = {"mean": [0.5], "std": [0.25]}
    obs = observe_update(
        model, torch.rand(1, 1, 32, 32), torch.tensor([1]), defence=Defence("none"), **kw
    )

    def attack(restarts: int):
        settings = InversionSettings(steps=5, tv=0.0, restarts=restarts)
        return invert_gradients(model, obs, image_shape=(1, 32, 32), settings=settings, **kw)

    runs = {r: attack(r) for r in (1, 3)}
    # Without the prior the objective is the gradient distance; the first start is shared,
    # so three starts can only match the gradient as well as one or better.
    assert runs[3].gradient_similarity >= runs[1].gradient_similarity - 1e-6
    assert runs[1].images.shape == runs[3].images.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="restarts"):
        InversionSettings(restarts=0)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # writing the archive only
def test_no_gradient_access_is_refused(tmp_path, capsys):
    frozen = torch.jit.freeze(torch.jit.script(_model()))
    with pytest.raises(InvalidInputError) as e:
        trainable_parameters(frozen)
    assert str(e.value) == MSG_NO_GRADIENT_ACCESS.format(what="the model")
    path = tmp_path / "frozen.pt"
    torch.jit.save(frozen, str(path))
    pd.DataFrame({"path": ["a.png"], "label": [0]}).to_csv(tmp_path / "m.csv", index=False)
    code = run(
        ["attack", "reconstruct", "--model", str(path), "--data", str(tmp_path / "m.csv"),
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs gradient access" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_defence_spec_exits_2(tmp_path, capsys):
    ckpt = save_checkpoint(
        _model(), tmp_path / "m.safetensors", arch="small_cnn", in_channels=1, num_classes=2,
        image_size=32, class_names=["n", "p"], mean=[0.5], std=[0.25],
    )  # fmt: skip
    pd.DataFrame({"path": ["a.png"], "label": [0]}).to_csv(tmp_path / "m.csv", index=False)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    code = run(
        ["attack", "reconstruct", "--model", str(ckpt), "--data", str(tmp_path / "m.csv"),
         "--out", str(tmp_path / "o"), "--defences", "none,batch:x"]
    )  # fmt: skip
    assert code == 2 and "batch:x" in capsys.readouterr().err


def test_cli_reconstruct_runs_on_a_manifest_and_reports_reidentification(tmp_path, capsys):
    import json

    from medaudit.data import write_synthetic

    manifest = write_synthetic(
        tmp_path / "data", n_sites=1, patients_per_site=8, image_size=32, heldout_site=None
    )
    ckpt = save_checkpoint(
        _model(), tmp_path / "m.safetensors", arch="small_cnn", in_channels=1, num_classes=2,
        image_size=32, class_names=["negative", "positive"], mean=[0.5], std=[0.25],
    )  # fmt: skip
    code = run(
        ["attack", "reconstruct", "--model", str(ckpt), "--data", str(manifest),
         "--out", str(tmp_path / "out"), "--defences", "none,dp:8", "--steps", "3",
         "--restarts", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code in (0, 1) and "among" in out and "Report written" in out
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    rows = doc["sections"]["reconstruction"]["tables"]["defences"]
    assert {r["defence"] for r in rows} == {"none", "DP eps=8"}
    n = len(pd.read_csv(manifest))
    for r in rows:  # the attacked images (2 clients of 1) are not their own decoys
        assert r["reid_candidates"] == min(256, n - 2 + 1)
        assert 0.0 <= r["reidentified"] <= 1.0


@pytest.mark.slow
def test_inversion_breaks_batch_one_and_the_defences_hold():
    """Batch 1 undefended: recovered and re-identified; DP eps=8 holds; batch 32 still leaks.

    Batch 1 is attacked as Geiping et al. do: 1000 steps, the better of 2 random starts,
    8 clients. Measured (training seeds 0-5, 1 thread; seeds 0 and 3, 2 threads): undefended
    mean SSIM 0.60-0.71 (single images 0.50-0.84), 75-100% re-identified. With 3 clients and
    one start it ranged 0.43-0.68 and a CI machine once drew 0.48, hence 8 clients.
    Batch 32 is attacked with the default 300 steps and 3 clients to keep the test short:
    SSIM 0.17-0.23 (0.28 with 1000 steps in reports/reconstruction, so issue 15's "< 0.2" is
    not met) while 7-13% of its images are re-identified among 256 (chance 0.4%).
    """
    from medaudit.attacks.reconstruction import InversionSettings
    from medaudit.data import generate_hospitals
    from medaudit.models import train_model

    c = generate_hospitals(n_sites=2, patients_per_site=60, image_size=32, seed=0)
    res = train_model(build_model("small_cnn"), c.split("train"), epochs=2, batch_size=32)
    kw = {"mean": res.mean, "std": res.std, "seed": 0}
    defences = [Defence("none"), dp_defence(8.0, dataset_size=len(c.split("train")))]
    strong = InversionSettings(steps=1000, restarts=2)
    r = reconstruction_attack(res.model, c, defences=defences, settings=strong, trials=8, **kw)
    big = reconstruction_attack(
        res.model, c, defences=[Defence("batch 32", batch_size=32)], trials=3, **kw
    )
    table = pd.concat([r.table, big.table], ignore_index=True).set_index("defence")
    assert table.loc["none", "mean_ssim"] >= 0.5
    assert table.loc["none", "label_accuracy"] == 1.0
    assert table.loc["none", "reidentified"] >= 0.5
    assert table.loc["DP eps=8", "mean_ssim"] < 0.2
    assert table.loc["DP eps=8", "reidentified"] <= 1 / 8
    chance = table.loc["batch 32", "reid_chance"]
    assert chance == pytest.approx(1 / 256)
    assert table.loc["batch 32", "reidentified"] >= 5 * chance  # a larger batch still leaks
    sec = reconstruction_section(r)
    status = {c.id: c.status for c in sec.checks}
    assert status["reconstruction.none.ssim"] == "fail"
    assert status["reconstruction.dp_eps_8.ssim"] == "pass"
    assert "the defences that held: DP eps=8" in sec.summary
    assert "among 256 cohort images: none" in sec.summary
    assert sec.figures == {}  # patients' images only on request
    assert "reconstructions" in reconstruction_section(r, show_images=True).figures


@pytest.mark.slow
def test_reconstruction_scenario_smoke(tmp_path, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "attacks" / "reconstruction" / "run.py"
    spec = importlib.util.spec_from_file_location("rec_run", script)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rec_run", mod)  # dataclasses look it up
    spec.loader.exec_module(mod)
    monkeypatch.setattr(
        mod, "defences", lambda n: [Defence("none"), dp_defence(8.0, dataset_size=n)]
    )
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["defence"]) == ["none", "DP eps=8"]
    assert "held" in (tmp_path / "results.md").read_text()
