"""The shortcut audit: features of any module, the used/where tests, the audit, the CLI.

Power and false alarms without training: a hand-built model that reads the site marker's
corners (a shortcut) and one that reads the image centre (no shortcut) are audited on
synthetic hospitals, where every planted effect is a column.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.cli.app import run
from medaudit.data import generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, load_checkpoint, train_model
from medaudit.report import Policy, validate_audit_json
from medaudit.shortcuts import (
    MSG_NO_PENULTIMATE,
    MSG_UNKNOWN_LAYER,
    FeatureTap,
    aligned_conflicting,
    audit_shortcuts,
    counterfactual_swap,
    dann_lambda,
    disentangle_hooks,
    estimate_region,
    find_penultimate_layer,
    grad_reverse,
    occlusion_maps,
    parse_region,
    predict_with_features,
    summarise_map,
    train_disentangled,
)
from medaudit.shortcuts._disentangle import MSG_SINGLE_LEVEL, LeastSquaresAdversary
from medaudit.shortcuts._examine import ASSOCIATION_ALPHA, MSG_NOT_ASSOCIATED
from medaudit.shortcuts._occlusion import occlusion_windows
from medaudit.shortcuts._usage import MSG_REGION, Region

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = {"settings": {"shortcuts": {"probe_resamples": 20}}}


# ------------------------------------------------------------------ toy models
class CornerReader(nn.Module):
    """Scores an image by its brightest corner patch: reads the site marker, not disease."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.k = max(8, size // 4)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0], [12.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, -12.0 * 0.75]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k
        corners = [x[..., :k, :k], x[..., :k, -k:], x[..., -k:, :k], x[..., -k:, -k:]]
        brightest = torch.stack([c.amax(dim=(1, 2, 3)) for c in corners], dim=1).amax(dim=1)
        return self.fc(torch.stack([brightest, x.mean(dim=(1, 2, 3))], dim=1))


class CentreReader(nn.Module):
    """Scores an image by the brightness of its centre: no use of the corners."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0], [20.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, -8.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1]
        c = x[..., h // 4 : 3 * h // 4, h // 4 : 3 * h // 4]
        f = torch.stack([c.mean(dim=(1, 2, 3)), c.std(dim=(1, 2, 3))], dim=1)
        return self.fc(f)


@pytest.fixture(scope="module")
def hospitals():
    """Synthetic hospitals with a strong marker shortcut (the marker is a column).

    Two training sites tie the marker to the label at strength 0.9; in the held-out site it
    is independent of the label, so both classes have images with and without it.
    """
    return generate_hospitals(
        n_sites=3, patients_per_site=70, image_size=32, shortcut_strength=0.9, seed=5
    )


# ----------------------------------------------------------------------- features
def test_penultimate_layer_error_lists_candidates_word_for_word():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.Linear(2, 2))
    with pytest.raises(InvalidInputError) as exc:
        find_penultimate_layer(net, 2)
    assert str(exc.value) == MSG_NO_PENULTIMATE.format(
        cls="Sequential",
        why="several linear layers could produce the logits (1, 2)",
        example="1",
        candidates="2 (Linear), 1 (Linear), 0 (Flatten)",
    )
    assert 'feature_layer="..."' in str(exc.value)
    conv_head = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(InvalidInputError, match="it has no linear layer producing the logits"):
        find_penultimate_layer(conv_head, 2)
    with pytest.raises(InvalidInputError) as exc:
        FeatureTap(conv_head, "nope")
    assert str(exc.value) == MSG_UNKNOWN_LAYER.format(
        cls="Sequential",
        name="nope",
        candidates="2 (Flatten), 1 (AdaptiveAvgPool2d), 0 (Conv2d)",
    )


def test_features_of_any_module_by_hook_equal_a_manual_pass(hospitals):
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    sub = hospitals.subset(np.arange(40))
    preds = predict_with_features(net, sub, batch_size=16)
    x = torch.from_numpy(sub.load_all())
    with torch.no_grad():
        manual = net[:4](x).numpy()
    np.testing.assert_allclose(preds.features, manual, atol=1e-6)
    # A named 4-d layer is averaged over its spatial dimensions.
    named = predict_with_features(net, sub, feature_layer="1")
    with torch.no_grad():
        np.testing.assert_allclose(named.features, net[:2](x).mean(dim=(2, 3)).numpy(), atol=1e-6)
    # A zoo model keeps its own features/head pass.
    zoo = build_model("small_cnn", random_state=0).eval()
    np.testing.assert_allclose(
        predict_with_features(zoo, sub).features, predict(zoo, sub).features, atol=1e-6
    )


# ---------------------------------------------------------------- disentanglement
def test_gradient_reversal_and_schedule():
    x = torch.ones(4, requires_grad=True)
    (grad_reverse(x, 2.0) * torch.arange(4.0)).sum().backward()
    assert x.grad.tolist() == [-0.0, -2.0, -4.0, -6.0]
    lams = [dann_lambda(p / 10, weight=3.0) for p in range(11)]
    assert lams[0] == 0.0 and lams[-1] == pytest.approx(3.0, abs=1e-3)
    assert all(a < b for a, b in zip(lams, lams[1:], strict=False))


def test_least_squares_adversary_reads_within_class_and_not_the_label():
    torch.manual_seed(0)
    codes = torch.randint(0, 3, (512,))
    labels = torch.randint(0, 2, (512,))
    planted = torch.randn(512, 8) + 4.0 * nn.functional.one_hot(codes, 8).float()
    adv = LeastSquaresAdversary(3)
    loss, acc = adv.loss(
        planted[:64], codes[:64], labels[:64], planted[64:], codes[64:], labels[64:]
    )
    assert acc > 0.9
    # The attribute is read only through the label (site prevalence): class-conditional,
    # the adversary finds nothing (chance accuracy 1/3, squared error 1 - sum p^2 = 2/3).
    codes = torch.where(labels == 1, torch.randint(0, 2, (512,)), torch.randint(1, 3, (512,)))
    f = torch.randn(512, 8) + 3.0 * labels[:, None].float()
    loss, acc = adv.loss(f[:256], codes[:256], labels[:256], f[256:], codes[256:], labels[256:])
    assert float(loss) > 0.45 and acc < 0.65


def test_disentangle_hooks_plug_into_the_training_loop(hospitals):
    train = hospitals.subset(np.random.default_rng(0).permutation(len(hospitals))[:96])
    model = build_model("small_cnn", random_state=0)
    norm = {"mean": 0.4, "std": 0.2}
    d = disentangle_hooks(model, train, "site,sex", epochs=2, batch_size=32, **norm)
    bn = model.body[1]
    res = train_model(model, train, epochs=2, batch_size=32, hooks=d.hooks, **norm)
    # The reference passes leave BatchNorm alone: it tracked exactly the batches a plain
    # run of the same recipe tracks (the loop may hand back an earlier epoch's weights).
    plain = build_model("small_cnn", random_state=0)
    train_model(plain, train, epochs=2, batch_size=32, **norm)
    assert int(bn.num_batches_tracked) == int(plain.body[1].num_batches_tracked) > 0
    assert res.steps == len(d.history) == 6
    assert d.history[0]["lambda"] == 0.0 < d.history[-1]["lambda"] < 1.0
    assert {"site_loss", "sex_loss", "site_accuracy"} <= set(d.history[-1])
    one_site = train.subset(train.meta["site"].to_numpy() == train.meta["site"].iat[0])
    with pytest.raises(InvalidInputError) as exc:
        disentangle_hooks(model, one_site, ["site"], epochs=1, **norm)
    assert str(exc.value) == MSG_SINGLE_LEVEL.format(name="site")
    with pytest.raises(InvalidInputError, match=r"column\(s\) nosuch not found"):
        disentangle_hooks(model, train, ["nosuch"], epochs=1, **norm)


def test_disentangle_any_module_through_a_forward_hook(hospitals):
    train = hospitals.subset(np.random.default_rng(1).permutation(len(hospitals))[:64])
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    out = train_disentangled(net, train, attributes="site", epochs=1, batch_size=16)
    assert len(out.disentangler.history) == 4 and "site_loss" in out.disentangler.history[-1]
    assert not net[4]._forward_pre_hooks  # the tap is removed after training


def test_train_disentangled_returns_the_averaged_weights(hospitals):
    train = hospitals.subset(np.random.default_rng(2).permutation(len(hospitals))[:64])
    kw = {"attributes": "site", "epochs": 2, "batch_size": 16, "mean": 0.4, "std": 0.2}
    out = train_disentangled(build_model("small_cnn", random_state=0), train, **kw)
    d, model = out.disentangler, out.result.model
    assert (
        d.average == 0.99
        and d.alpha == 3.0
        and set(d.averaged) == {n for n, _ in model.named_parameters()}
    )
    for name, p in model.named_parameters():
        assert torch.equal(p, d.averaged[name]), name
    assert not model.training
    last = train_disentangled(build_model("small_cnn", random_state=0), train, average=None, **kw)
    assert not last.disentangler.averaged
    assert not torch.equal(last.result.model.head.weight, model.head.weight)
    norm = {"mean": 0.4, "std": 0.2}
    for bad in ({"average": 1.0}, {"average": True}, {"alpha": 0.0}):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            disentangle_hooks(build_model("small_cnn"), train, "site", epochs=1, **norm, **bad)


# ------------------------------------------------------------------- used / where
def test_class_wise_shift_tells_a_shortcut_from_a_harder_subgroup():
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.4
    a = np.where(rng.random(n) < 0.8, y, ~y).astype(int)  # associated with the label
    # Harder subgroup: the disease is fainter where a == 0; negatives are unaffected.
    hard = y * np.where(a == 1, 2.0, 0.8) + rng.normal(0, 1, n)
    r = aligned_conflicting(y, hard, a, np.arange(n), np.array([-1, 1]))
    assert r.auroc_aligned.value - r.auroc_conflicting.value > 0.05  # a naive gap
    assert r.shift_negative.ci()[1] < 0.6 and r.shift_ci()[1] < 0.6  # not a shortcut
    shortcut = y * 1.0 + 1.5 * a + rng.normal(0, 1, n)
    r = aligned_conflicting(y, shortcut, a, np.arange(n), np.array([-1, 1]))
    assert r.shift_ci()[0] > 0.7


def test_region_is_estimated_for_a_marker_and_not_for_a_diffuse_difference():
    rng = np.random.default_rng(2)
    imgs = rng.normal(0.4, 0.05, (200, 1, 32, 32)).astype(np.float32)
    present = rng.random(200) < 0.5
    imgs[present, :, 2:6, 25:29] = 0.92
    box = estimate_region(imgs, present)
    assert box is not None
    assert (box.x0, box.y0, box.x1, box.y1) == (25 / 32, 2 / 32, 29 / 32, 6 / 32)
    diffuse = rng.normal(0.4, 0.05, (200, 1, 32, 32)).astype(np.float32)
    diffuse[present] += 0.02  # brighter everywhere (acquisition, anatomy)
    assert estimate_region(diffuse, present) is None


def test_parse_region_messages():
    assert parse_region("auto") == "auto" and parse_region(" NONE ") == "none"
    assert parse_region("0,0,0.5,0.25") == Region(0.0, 0.0, 0.5, 0.25)
    for bad in ("0,0,1", "a,b,c,d", "0.5,0,0.4,1", "0,0,1.5,1"):
        with pytest.raises(InvalidInputError) as exc:
            parse_region(bad)
        assert str(exc.value) == MSG_REGION.format(text=bad)


def test_counterfactual_swap_flips_a_region_reader_and_not_others():
    rng = np.random.default_rng(3)
    imgs = rng.uniform(0, 0.3, (60, 1, 16, 16)).astype(np.float32)
    present = np.arange(60) < 30
    imgs[present, :, :4, :4] = 1.0
    region = Region(0, 0, 0.25, 0.25)
    partners = imgs[np.r_[np.arange(30, 60), np.arange(0, 30)]]

    def reader(transform, rows):
        x = transform(torch.from_numpy(imgs[rows]), np.arange(len(rows)))
        return x[:, 0, :4, :4].mean(dim=(1, 2)).numpy()

    score = imgs[:, 0, :4, :4].mean(axis=(1, 2))
    res = counterfactual_swap(
        reader, partners, np.arange(60), present, score, np.arange(60), [region] * 60
    )
    assert res.flipped.value == 1.0 and res.change_removed.value < -0.5
    assert res.change_added.value > 0.5

    def centre(transform, rows):
        x = transform(torch.from_numpy(imgs[rows]), np.arange(len(rows)))
        return x[:, 0, 6:10, 6:10].mean(dim=(1, 2)).numpy() + 0.5

    res = counterfactual_swap(
        centre,
        partners,
        np.arange(60),
        present,
        imgs[:, 0, 6:10, 6:10].mean((1, 2)) + 0.5,
        np.arange(60),
        [region] * 60,
    )
    assert res.flipped.value == 0.0 and res.change_added.value == pytest.approx(0.0, abs=1e-6)


def test_occlusion_maps_agree_with_a_hand_made_occlusion_loop():
    # Reference: the definition (Zeiler & Fergus) computed by hand, window by window.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 12 * 12, 2)
    ).eval()
    x = np.random.default_rng(4).random((5, 1, 12, 12)).astype(np.float32)
    mean, std = [0.5], [0.25]
    occ = occlusion_maps(net, x, np.ones(5, int), mean=mean, std=std, grid=3, batch_size=4)
    assert occ.window == (4, 4) and occ.stride == (4, 4)
    xn = torch.from_numpy((x - 0.5) / 0.25)
    with torch.no_grad():
        base = torch.softmax(net(xn), 1)[:, 1]
        want = np.zeros((5, 12, 12), np.float32)
        for r in range(0, 12, 4):
            for c in range(0, 12, 4):
                xo = xn.clone()
                xo[:, :, r : r + 4, c : c + 4] = 0.0
                want[:, r : r + 4, c : c + 4] = (base - torch.softmax(net(xo), 1)[:, 1])[
                    :, None, None
                ].numpy()
    np.testing.assert_allclose(occ.maps, want, atol=1e-6)


def test_occlusion_windows_cover_every_pixel_and_map_summaries():
    for side in (16, 32, 50, 64, 224):
        w, s = occlusion_windows(side, 4)
        starts = list(range(0, side - w + 1, s))
        assert len(starts) == 4 and starts[-1] + w == side
    m = np.zeros((16, 16))
    m[6:10, 6:10] = 1.0  # centre only
    s = summarise_map(m, band=0.125, window=(4, 4), stride=(4, 4), n=10)
    assert s.border_share == 0.0 and s.pattern == "localised"
    flat = summarise_map(np.ones((16, 16)), band=0.125, window=(4, 4), stride=(4, 4), n=10)
    assert flat.border_share == pytest.approx(flat.border_area) and flat.pattern == "diffuse"


# ------------------------------------------------------------------- the audit
def _audit(model, cohort, attributes, **settings):
    pol = Policy.from_mapping(
        {"settings": {"shortcuts": {**QUIET["settings"]["shortcuts"], **settings}}}
    )
    return audit_shortcuts(model, cohort, attributes=attributes, policy=pol)


def test_audit_finds_a_model_reading_the_marker(hospitals):
    sec = _audit(CornerReader(32), hospitals, "marker,site")
    checks = {c.id: c for c in sec.checks}
    used = checks["shortcuts.marker.used"]
    assert used.status == "fail" and used.severity == "major"
    assert "flips" in used.reason and "conflicts" in used.reason
    cf = sec.tables["counterfactual"].set_index("swap").loc["both"]
    assert cf["flipped_low"] > 0.3
    assert checks["shortcuts.marker.encoded"].status == "fail"
    assert checks["shortcuts.marker.encoded"].severity == "info"
    verdict = sec.tables["verdicts"].set_index("attribute").loc["marker", "verdict"]
    assert "the model uses it" in verdict and "flips" in verdict
    assert "marker" in sec.summary


def test_audit_is_quiet_for_a_model_that_ignores_the_marker(hospitals):
    sec = _audit(CentreReader(), hospitals, "marker")
    used = {c.id: c for c in sec.checks}["shortcuts.marker.used"]
    assert used.status == "pass", used
    cf = sec.tables["counterfactual"].set_index("swap").loc["both"]
    assert cf["flipped"] < 0.05


def test_audit_section_tables_maps_and_json(hospitals, tmp_path):
    sec = _audit(CornerReader(32), hospitals, None, occlusion_images=12)
    assert {
        "verdicts",
        "probes",
        "occlusion",
        "matched_gaps",
        "ks_tests",
    } <= set(sec.tables)
    # None of the default attributes is tied to the label here: no aligned/conflicting
    # split is made, and "used" passes on that evidence, saying why.
    assert "aligned_conflicting" not in sec.tables
    for c in sec.checks:
        if c.id.endswith(".used"):
            attr = c.id.split(".")[1]
            assert c.status == "pass" and c.value is None, c
            assert c.reason == MSG_NOT_ASSOCIATED.format(
                name=attr, ref="the audited data", alpha=ASSOCIATION_ALPHA
            )
    assert list(sec.tables["verdicts"]["attribute"]) == ["site", "sex", "age_group", "insurance"]
    assert "occlusion_maps" in sec.figures and "data:image/png;base64," in (
        sec.figures["occlusion_maps"].svg
    )
    assert "occlusion_per_image" not in sec.figures  # patients' maps only when asked
    from medaudit.report import Report

    rep = Report(sections=[sec], meta={})
    rep.save(tmp_path)
    doc = json.loads((tmp_path / "audit.json").read_text())
    validate_audit_json(doc)
    assert "Shortcuts" in (tmp_path / "index.html").read_text()


def test_probe_reports_insurance_as_encoded_only_through_site_and_age():
    # Features that carry exactly the site and the age (a model that sees the acquisition
    # and the anatomy): insurance, planted through site and age only, is encoded but not
    # beyond the site/age control.
    c = generate_hospitals(n_sites=4, patients_per_site=250, image_size=16, seed=2)
    meta = c.meta
    rng = np.random.default_rng(0)
    site = pd.get_dummies(meta["site"]).to_numpy(float) * 2
    feats = np.column_stack([site, (meta["age"] - 55) / 15, rng.normal(size=(len(meta), 5))])
    feats = feats + rng.normal(0, 0.3, feats.shape)

    from medaudit.shortcuts._attributes import code_attribute, control_matrix, patient_codes
    from medaudit.shortcuts._probe import attribute_probe

    a = code_attribute(meta, "insurance")
    ctl, cols = control_matrix(meta, ["site", "age", "sex", "label"])
    r = attribute_probe(
        feats,
        a.codes,
        patient_codes(meta),
        n_levels=2,
        control=ctl,
        control_columns=tuple(cols),
        strata=meta["site"].to_numpy(),
        n_resamples=30,
    )
    assert r.probe.ci()[0] > 0.6 and not r.beyond_metadata()


def test_bad_settings_are_refused_at_once(hospitals):
    with pytest.raises(InvalidInputError, match="--marker-region must be"):
        Policy.from_mapping({"settings": {"shortcuts": {"marker_region": "0,0,2,2"}}})
    with pytest.raises(InvalidInputError, match=r"column\(s\) nosuch not found"):
        audit_shortcuts(CentreReader(), hospitals, attributes="nosuch")


# --------------------------------------------------------------------------- CLI
def test_cli_audit_shortcuts_flags_and_compare_to(synth_dir, trained_checkpoint, tmp_path):
    man = synth_dir / "manifest.csv"
    args = [
        "audit",
        "--model",
        str(trained_checkpoint),
        "--data",
        str(man),
        "--audits",
        "shortcuts",
        "--shortcut-attributes",
        "marker,site",
        "--marker-region",
        "0,0,0.25,0.25",
        "--compare-to",
        str(trained_checkpoint),
        "--set",
        "shortcuts.probe_resamples=10",
        "--no-progress",
    ]
    code = run([*args, "--out", str(tmp_path / "r")])
    assert code in (0, 1)
    sec = json.loads((tmp_path / "r" / "audit.json").read_text())["sections"]["shortcuts"]
    ids = [c["id"] for c in sec["checks"]]
    assert ids == [
        "shortcuts.marker.encoded",
        "shortcuts.marker.used",
        "shortcuts.site.encoded",
        "shortcuts.site.used",
    ]
    compare = pd.DataFrame(sec["tables"]["compare"])
    assert (compare["change"].abs() < 1e-12).all()  # the same checkpoint: no change
    region = pd.DataFrame(sec["tables"]["counterfactual"])["region"].iat[0]
    assert region == "*: 0,0,0.25,0.25"


def test_cli_audit_bad_region_is_exit_2(synth_dir, trained_checkpoint, tmp_path, capsys):
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(synth_dir / "manifest.csv"),
            "--audits",
            "shortcuts",
            "--marker-region",
            "left",
            "--out",
            str(tmp_path / "x"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and MSG_REGION.format(text="left") in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_train_disentangle_writes_a_checkpoint_that_says_so(synth_dir, tmp_path):
    out = tmp_path / "dis.safetensors"
    code = run(
        [
            "train",
            "--data",
            str(synth_dir / "manifest.csv"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--disentangle",
            "site,sex",
            "--disentangle-weight",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert load_checkpoint(out).extra == {
        "disentangled": ["site", "sex"],
        "disentangle_weight": 2.0,
    }


def test_cli_train_disentangle_with_dp_is_exit_2(synth_dir, tmp_path, capsys):
    from medaudit.cli.train import MSG_DP_DISENTANGLE

    out = tmp_path / "dis.safetensors"
    manifest = str(synth_dir / "manifest.csv")
    code = run(["train", "--data", manifest, "--out", str(out), "--dp", "--disentangle", "site"])
    err = capsys.readouterr().err
    assert code == 2 and MSG_DP_DISENTANGLE in err and "Traceback" not in err
    assert not out.exists()
