"""Embedding through the training-loop hooks, and data protection (fast, tiny inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.data import Cohort, load_manifest
from medaudit.models import build_model
from medaudit.watermark import (
    MSG_HARMLESS_NEEDS_FINISHED,
    WatermarkKey,
    embed_watermark,
    make_triggers,
    protect_images,
    psnr,
    ssim,
    watermark_hooks,
    write_protected,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cohort(n=48, size=16, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, channels, size, size)
    meta = pd.DataFrame({"label": rng.integers(0, 2, n), "patient_id": np.arange(n) // 2})
    return Cohort(meta, images=rng.integers(0, 256, shape, dtype=np.uint8))


# -- embedding ------------------------------------------------------------------------------
def test_the_batch_hook_appends_triggers_with_index_minus_one():
    key = WatermarkKey(3, n_triggers=10, image_size=16)
    t = make_triggers(key)
    hooks = watermark_hooks(key, t, per_batch=4)
    x, y = torch.zeros(6, 1, 16, 16), torch.zeros(6, dtype=torch.int64)
    x2, y2, idx = hooks.batch(x, y, np.arange(6), step=0)
    assert x2.shape == (10, 1, 16, 16) and idx.tolist()[-4:] == [-1] * 4
    drawn = [
        int(np.flatnonzero((t.images == x2[i].numpy()).all(axis=(1, 2, 3)))[0])
        for i in range(6, 10)
    ]
    assert y2[6:].tolist() == t.labels[drawn].tolist()
    # Same step, same triggers; another step, (usually) others.
    assert hooks.batch(x, y, np.arange(6), step=0)[1].tolist() == y2.tolist()


def test_harmless_needs_a_finished_model():
    key = WatermarkKey(3, n_triggers=8, image_size=16, kind="harmless")
    with pytest.raises(InvalidInputError) as e:
        embed_watermark(build_model("small_cnn"), _cohort(), key, method="train")
    assert str(e.value) == MSG_HARMLESS_NEEDS_FINISHED


def test_key_and_model_must_match():
    with pytest.raises(InvalidInputError, match="3 classes"):
        embed_watermark(
            build_model("small_cnn"),
            _cohort(),
            WatermarkKey(1, num_classes=3, n_triggers=8, image_size=16),
        )
    with pytest.raises(InvalidInputError, match="32 px"):
        embed_watermark(
            build_model("small_cnn"),
            _cohort(),
            WatermarkKey(1, n_triggers=8, image_size=16),
            image_size=32,
        )


def test_finetuning_a_harmless_mark_keeps_the_reference_top1_by_construction():
    c = _cohort(64)
    model = build_model("small_cnn", random_state=0).eval()
    key = WatermarkKey(3, n_triggers=8, image_size=16, kind="harmless")
    res = embed_watermark(model, c, key, max_steps=3, per_batch=4)
    assert res.reference_top1 is not None and len(res.reference_top1) == 8
    assert res.steps == 3 and 0 <= res.top1_agreement <= 1


# -- data protection ------------------------------------------------------------------------
def test_psnr_and_ssim_agree_with_scikit_image():
    # Reference: skimage.metrics.peak_signal_noise_ratio / structural_similarity with
    # gaussian_weights=True, sigma=1.5, use_sample_covariance=False.
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((3, 2, 20, 24))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    ref_s = [
        structural_similarity(
            a[i],
            b[i],
            data_range=1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=0,
        )
        for i in range(3)
    ]
    ref_p = [peak_signal_noise_ratio(a[i], b[i], data_range=1) for i in range(3)]
    np.testing.assert_allclose(ssim(a, b), ref_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(psnr(a, b), ref_p, rtol=1e-12)


@pytest.mark.parametrize("method", ["adversarial", "error_minimising"])
def test_protection_stays_within_budget_and_mask(method):
    c = _cohort(40, size=16)
    p = protect_images(
        c,
        method=method,
        epsilon=8 / 255,
        density=0.25,
        rounds=2,
        train_steps=2,
        pgd_steps=3,
        warmup_steps=2,
    )
    assert p.method == method and p.summary()["method"] == method
    assert p.rounds == (0 if method == "adversarial" else 2)
    diff = p.images.astype(int) - p.original.astype(int)
    assert np.abs(diff).max() <= 8
    assert np.all(diff[~np.broadcast_to(p.mask, diff.shape)] == 0)
    assert np.all(p.mask.reshape(40, -1).sum(axis=1) == 64)  # 25% of 16 x 16
    np.testing.assert_array_equal(p.original, c.images)
    # The budget bounds the PSNR: 10 log10(1 / (0.25 (8/255)^2)) = 36.09 dB.
    assert p.psnr.min() >= 36.09


def test_class_wise_protection_shares_one_pattern_per_class_on_patch_aligned_masks():
    c = _cohort(40, size=16)
    p = protect_images(
        c,
        density=0.25,
        rounds=2,
        train_steps=2,
        pgd_steps=3,
        warmup_steps=2,
        method="error_minimising",
        mode="class",
        patch=4,
    )
    diff = p.images.astype(int) - p.original.astype(int)
    assert np.abs(diff).max() <= 8
    assert np.all(diff[~np.broadcast_to(p.mask, diff.shape)] == 0)
    # 4 of the 16 cells of 4 x 4 pixels, each whole.
    cells = p.mask[:, 0].reshape(40, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(40, 16, 16)
    assert np.all((cells.sum(axis=2) == 0) | (cells.sum(axis=2) == 16))
    assert np.all(cells.all(axis=2).sum(axis=1) == 4)
    # Where two images of a class share an unclipped masked pixel, they moved it alike.
    labels = c.labels
    for k in (0, 1):
        rows = np.flatnonzero(labels == k)
        free = (p.original[rows] >= 8) & (p.original[rows] <= 247)
        on = np.broadcast_to(p.mask[rows], free.shape) & free
        for pix in zip(*np.nonzero(on.sum(axis=0) >= 2), strict=True):
            vals = diff[rows][(slice(None), *pix)][on[(slice(None), *pix)]]
            assert np.ptp(vals) <= 1, (k, pix, vals)  # 8-bit rounding


def test_bad_protection_mode_is_refused():
    with pytest.raises(InvalidParameterError, match="mode"):
        protect_images(_cohort(8), mode="both")
    with pytest.raises(InvalidParameterError, match="fresh_model"):
        protect_images(_cohort(8), fresh_model="yes")
    with pytest.raises(InvalidParameterError, match="method"):
        protect_images(_cohort(8), method="unlearnable")


def test_adversarial_protection_points_the_warm_up_model_to_the_other_class():
    # A task the warm-up model learns: a bright square in the positives.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    imgs = rng.integers(60, 120, (64, 16, 16)).astype(np.uint8)
    imgs[y == 1, 5:11, 5:11] += 30
    c = Cohort(pd.DataFrame({"label": y}), images=imgs)
    kw = {"warmup_steps": 40, "pgd_steps": 10, "epsilon": 16 / 255, "density": 0.5}
    adv = protect_images(c, **kw)
    em = protect_images(c, method="error_minimising", rounds=2, train_steps=5, **kw)
    # Against the model it was computed on, the adversarial set reads as the wrong class;
    # error-minimising noise makes the same labels easier instead.
    assert adv.noise_model_accuracy < 0.2 and em.noise_model_accuracy > 0.8
    assert np.array_equal(adv.mask, em.mask)  # the same warm-up model chose the pixels


def test_fresh_noise_models_change_the_perturbations_not_the_budget():
    kw = {"rounds": 2, "train_steps": 2, "pgd_steps": 2, "warmup_steps": 2, "seed": 3}
    kw["method"] = "error_minimising"
    c = _cohort(16)
    fresh, kept = protect_images(c, **kw), protect_images(c, fresh_model=False, **kw)
    assert fresh.rounds == kept.rounds == 2
    assert np.array_equal(fresh.mask, kept.mask)  # chosen by the warm-up model either way
    assert not np.array_equal(fresh.images, kept.images)
    for p in (fresh, kept):
        diff = np.abs(p.images.astype(int) - p.original.astype(int))
        assert diff.max() <= 8 and not diff[~np.broadcast_to(p.mask, diff.shape)].any()


def test_written_protected_data_reads_back_with_its_labels(tmp_path):
    meta = pd.DataFrame({"label": [0, 1, 1, 0], "site": list("abab"), "patient_id": [1, 2, 3, 4]})
    rng = np.random.default_rng(1)
    c = Cohort(
        meta,
        images=rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8),
        class_names=["normal", "lesion"],
    )
    p = protect_images(c, rounds=1, train_steps=1, pgd_steps=1, warmup_steps=1)
    m = write_protected(tmp_path / "out", c, p, report={"note": "x"})
    back = load_manifest(m)
    assert back.class_names == ["lesion", "normal"] or back.class_names == ["normal", "lesion"]
    assert [back.class_names[i] for i in back.labels] == ["normal", "lesion", "lesion", "normal"]
    assert back.meta["site"].tolist() == list("abab")
    np.testing.assert_array_equal(np.round(back.load_all() * 255).astype(np.uint8), p.images)
    assert not [f for f in (tmp_path / "out").iterdir() if f.name.startswith(".protect-")]


def test_a_failed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    c = _cohort(4)
    p = protect_images(c, rounds=1, train_steps=1, pgd_steps=1, warmup_steps=1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        write_protected(tmp_path / "new", c, p)
    assert not (tmp_path / "new").exists()
