"""The corruption registry: properties every registered corruption must have, hand-computed
cases, the per-image seeding, the presets, and bad input.

The property tests run over the whole registry (as scikit-learn's ``test_common`` runs
over every metric), with Hypothesis drawing shapes, dtypes, severities and seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medaudit import InvalidInputError
from medaudit.data import generate_hospitals
from medaudit.robustness import (
    PRESETS,
    SEVERITIES,
    ImageRandom,
    corrupt,
    get_corruption,
    list_corruptions,
    plan_sweep,
    register_corruption,
    unregister_corruption,
)
from medaudit.robustness._digital import jpeg_tables
from medaudit.robustness._filters import border_index, filter2d, separable_filter
from medaudit.robustness._presets import MSG_UNKNOWN_ITEM, valid_choices
from medaudit.robustness._registry import (
    MSG_DUPLICATE,
    MSG_RGB_ONLY,
    MSG_SEVERITY,
    MSG_UNKNOWN_CORRUPTION,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUILTIN = list_corruptions()
PROPERTY_SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _channels_for(name: str) -> int:
    return 3 if get_corruption(name).rgb_only else 1


@st.composite
def batches(draw, name: str):
    channels = (
        _channels_for(name) if get_corruption(name).rgb_only else draw(st.sampled_from([1, 3]))
    )
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    x = torch.from_numpy(np.random.default_rng(seed).random((n, channels, h, w))).to(dtype)
    return x, draw(st.sampled_from(SEVERITIES)), draw(st.integers(0, 1000))


@pytest.fixture(scope="module")
def chest_images():
    """16 realistic grayscale images (64 x 64), and RGB versions tinted per channel."""
    c = generate_hospitals(n_sites=2, patients_per_site=8, image_size=64, seed=2)
    gray = torch.from_numpy(c.images[:16].astype(np.float32) / 255.0)
    tint = torch.tensor([0.9, 0.6, 0.8]).view(1, 3, 1, 1)
    return gray, (0.1 + 0.85 * gray.expand(-1, 3, -1, -1) * tint).contiguous()


def test_the_registry_holds_every_corruption_of_the_issue():
    expected = {
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
        "defocus_blur", "gaussian_blur", "motion_blur", "zoom_blur",
        "brightness_up", "brightness_down", "contrast_up", "contrast_down",
        "gamma_up", "gamma_down", "pixelate", "jpeg_compression", "downsample",
        "bias_field", "ghosting", "ct_streaks", "collimation", "black_corners",
        "burned_in_text", "stain_shift", "bubbles",
    }  # fmt: skip
    assert expected <= set(BUILTIN)
    assert {n for n in BUILTIN if get_corruption(n).rgb_only} == {"stain_shift", "bubbles"}
    for name in BUILTIN:
        c = get_corruption(name)
        assert len(c.severities) == 5 and c.source, name
        assert c.fn.__doc__ and "Severity parameter" in c.fn.__doc__, name


@pytest.mark.parametrize("name", BUILTIN)
def test_shape_dtype_range_and_determinism(name):
    @PROPERTY_SETTINGS
    @given(batches(name))
    def check(args):
        x, severity, seed = args
        y = corrupt(x, name, severity, seed=seed)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.equal(corrupt(x, name, severity, seed=seed), y)  # same seed, same result
        # An image's result does not depend on the batch it is in: its row decides.
        k = x.shape[0] - 1
        alone = corrupt(x[k:].clone(), name, severity, seed=seed, index=[k])
        torch.testing.assert_close(alone[0], y[k], atol=1e-5, rtol=0)

    check()


@pytest.mark.parametrize("name", [n for n in BUILTIN if not get_corruption(n).rgb_only])
def test_grayscale_stays_one_channel(name, chest_images):
    gray, _ = chest_images
    for sev in SEVERITIES:
        assert corrupt(gray[:2], name, sev).shape[1] == 1


@pytest.mark.parametrize("name", BUILTIN)
def test_mean_distance_to_the_clean_image_grows_with_severity(name, chest_images):
    gray, rgb = chest_images
    x = rgb if get_corruption(name).rgb_only else gray
    d = [float((corrupt(x, name, s, seed=1) - x).abs().mean()) for s in SEVERITIES]
    assert all(b > a for a, b in zip(d, d[1:], strict=False)), d
    assert d[0] > 0


def test_random_corruptions_depend_on_the_seed_and_rows_not_the_batch(chest_images):
    gray, _ = chest_images
    a = corrupt(gray, "gaussian_noise", 3, seed=0)
    b = corrupt(gray, "gaussian_noise", 3, seed=1)
    assert not torch.equal(a, b)
    # reversed batch order, rows given: the same images come out
    rev = corrupt(gray.flip(0), "gaussian_noise", 3, seed=0, index=np.arange(16)[::-1])
    torch.testing.assert_close(rev.flip(0), a, atol=0, rtol=0)
    # the five severities of a corruption share their draws (common random numbers)
    mid = gray.sub(0.5).abs() < 0.2
    z1 = (corrupt(gray, "gaussian_noise", 1, seed=0) - gray)[mid]
    z2 = (corrupt(gray, "gaussian_noise", 2, seed=0) - gray)[mid]
    ratio = (z2 / z1)[z1.abs() > 1e-3]
    assert float(ratio.median()) == pytest.approx(0.12 / 0.08, rel=1e-3)


def test_image_random_streams_are_independent_per_image_and_stream():
    r = ImageRandom([0, 1, 2], seed=5, stream="a")
    z = r.normal(1000)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.05
    assert not torch.allclose(z[0], z[1])
    assert not torch.equal(ImageRandom([0], seed=5, stream="b").normal(1000)[0], z[0])
    u = ImageRandom([7], seed=0).uniform(5000, low=-2, high=3)
    assert float(u.min()) >= -2 and float(u.max()) < 3
    k = ImageRandom([7], seed=0).integers(2, 5, 3000)
    assert set(k.unique().tolist()) == {2, 3, 4}


# ----------------------------------------------------------------------- hand-computed
def test_intensity_corruptions_by_hand():
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    torch.testing.assert_close(corrupt(x, "brightness_up", 1), (x + 0.1).clamp(0, 1))
    torch.testing.assert_close(corrupt(x, "brightness_down", 5), (x - 0.5).clamp(0, 1))
    # (x - mean) * 0.4 + mean with mean 0.5
    torch.testing.assert_close(
        corrupt(x, "contrast_down", 1), torch.tensor([[[[0.38, 0.46], [0.54, 0.62]]]])
    )
    torch.testing.assert_close(corrupt(x, "gamma_up", 5), x**1.6)


def test_noise_statistics_match_their_definitions():
    x = torch.full((4, 1, 64, 64), 0.5)
    g = corrupt(x, "gaussian_noise", 1, seed=3) - 0.5  # sigma 0.08, no clipping at 0.5
    assert float(g.std()) == pytest.approx(0.08, rel=0.03)
    s = corrupt(x, "shot_noise", 3, seed=3)  # Poisson(0.5 * 12) / 12: mean 0.5, var 0.5/12
    assert float(s.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(s.var()) == pytest.approx(0.5 / 12, rel=0.05)
    i = corrupt(x, "impulse_noise", 5, seed=3)  # 27% of pixels flipped, half to 0, half to 1
    assert float((i == 0).float().mean()) == pytest.approx(0.135, abs=0.01)
    assert float((i == 1).float().mean()) == pytest.approx(0.135, abs=0.01)
    sp = corrupt(x, "speckle_noise", 2, seed=3) - 0.5  # x * sigma * z: std 0.5 * 0.2
    assert float(sp.std()) == pytest.approx(0.1, rel=0.03)


def test_acquisition_corruptions_by_hand():
    x = torch.full((1, 1, 64, 64), 0.5)
    corners = corrupt(x, "black_corners", 5)  # radius 0.95 * 32 around (31.5, 31.5)
    yy, xx = np.mgrid[0:64, 0:64]
    inside = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= (0.95 * 32) ** 2
    np.testing.assert_array_equal(corners[0, 0].numpy() > 0, inside)
    ghost = corrupt(
        torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)), "ghosting", 3
    )
    assert float(ghost.mean()) == pytest.approx(0.5, abs=0.02)  # k-space centre kept
    assert float(corrupt(x, "bias_field", 1).std()) > 0  # a non-uniform field
    col = corrupt(x, "collimation", 5)
    assert float(col[0, 0, 0].max()) == 0 and float(col[0, 0, 32, 32]) == 0.5


def test_jpeg_tables_follow_the_ijg_scaling():
    luma, chroma = jpeg_tables(50)  # quality 50 = the T.81 Annex K tables
    assert luma[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert chroma[0, :4].tolist() == [17, 18, 24, 47]
    assert jpeg_tables(100)[0].max() == 1  # every step 1
    assert jpeg_tables(1)[0].min() == 255  # baseline clamp


def test_filters_reproduce_scipy_border_rules():
    from scipy.ndimage import correlate, correlate1d

    rng = np.random.default_rng(0)
    img = rng.random((1, 1, 9, 11))
    k2 = rng.random((5, 7))
    ours = filter2d(torch.from_numpy(img), k2, "reflect")[0, 0].numpy()
    # SciPy's "mirror" is OpenCV's BORDER_REFLECT_101 (SciPy reference implementation).
    np.testing.assert_allclose(ours, correlate(img[0, 0], k2, mode="mirror"), atol=1e-10)
    k1 = rng.random(5)
    sep = separable_filter(torch.from_numpy(img), k1, k1, "nearest")[0, 0].numpy()
    ref = correlate1d(correlate1d(img[0, 0], k1, axis=0, mode="nearest"), k1, 1, mode="nearest")
    np.testing.assert_allclose(sep, ref, atol=1e-10)
    assert border_index(3, 5, 0, "reflect").tolist() == [1, 0, 1, 2, 1, 0, 1, 2]


# ------------------------------------------------------------------------- registry
def test_register_corruption_and_its_rules():
    c = register_corruption("halve", lambda x, f, rng: x * f, (0.9, 0.8, 0.7, 0.6, 0.5))
    try:
        assert "halve" in list_corruptions() and c.parameter(5) == 0.5
        x = torch.ones(1, 1, 8, 8)
        assert float(corrupt(x, "halve", 5).max()) == 0.5
        with pytest.raises(ValueError) as exc:
            register_corruption("halve", lambda x, f, rng: x, (1, 1, 1, 1, 1))
        assert str(exc.value) == MSG_DUPLICATE.format(name="halve")
        register_corruption("halve", lambda x, f, rng: x * 0, (1, 1, 1, 1, 1), force=True)
        assert float(corrupt(x, "halve", 1).max()) == 0.0
    finally:
        unregister_corruption("halve")
    assert "halve" not in list_corruptions()
    with pytest.raises(ValueError, match="a sequence of 5 parameters"):
        register_corruption("short", lambda x, f, rng: x, (1, 2, 3))
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        register_corruption("bad.name", lambda x, f, rng: x, (1, 2, 3, 4, 5))


def test_bad_input_lists_the_valid_choices():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(InvalidInputError) as exc:
        corrupt(x, "fog", 1)
    assert str(exc.value) == MSG_UNKNOWN_CORRUPTION.format(
        name="fog", choices=", ".join(list_corruptions())
    )
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(InvalidInputError) as exc:
            corrupt(x, "gaussian_noise", bad)
        assert str(exc.value) == MSG_SEVERITY.format(choices=[1, 2, 3, 4, 5], got=bad)
    with pytest.raises(InvalidInputError) as exc:
        corrupt(x, "bubbles", 1)
    assert str(exc.value) == MSG_RGB_ONLY.format(
        name="bubbles", channels=1, choices=", ".join(list_corruptions(channels=1))
    )
    assert "bubbles" not in list_corruptions(channels=1)
    with pytest.raises(ValueError, match="float tensor of shape"):
        corrupt(np.zeros((1, 1, 8, 8)), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="float tensor of shape"):
        corrupt(torch.zeros((1, 8, 8)), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="'index' parameter"):
        corrupt(x, "gaussian_noise", 1, index=[1, 2])


def test_presets_resolve_per_channel_count():
    for name, preset in PRESETS.items():
        for c in preset.corruptions:
            assert c in BUILTIN, (name, c)
        for params in preset.corruptions.values():
            assert params is None or len(params) == 5
    gray = plan_sweep(["path"], channels=1)
    assert "stain_shift" not in gray.names and any("stain_shift" in s for s in gray.left_out)
    assert "stain_shift" in plan_sweep(["path"], channels=3).names
    assert len(plan_sweep(["all"], channels=1).names) == len(list_corruptions(channels=1)) >= 15
    both = plan_sweep(["core", "gaussian_noise", "motion_blur"], channels=1)
    assert both.names[-1] == "motion_blur"
    assert both.corruptions[0].parameters == PRESETS["core"].corruptions["gaussian_noise"]
    with pytest.raises(InvalidInputError) as exc:
        plan_sweep(["chest", "fog"], channels=1)
    assert MSG_UNKNOWN_ITEM.format(names=["fog"], choices=valid_choices()) in str(exc.value)
    with pytest.raises(InvalidInputError, match="needs RGB images"):
        plan_sweep(["stain_shift"], channels=1)


def test_docstring_examples_run():
    import doctest
    import importlib

    modules = (
        "_random", "_poisson", "_registry", "_filters", "_digital", "_blur", "_presets", "_metrics",
    )  # fmt: skip
    for name in modules:
        module = importlib.import_module(f"medaudit.robustness.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, name


def test_resampled_auroc_equals_the_stats_module_and_sklearn():
    from sklearn.metrics import roc_auc_score

    from medaudit.robustness._metrics import resampled_auroc
    from medaudit.stats import bootstrap_counts, weighted_auroc

    rng = np.random.default_rng(0)
    for n, ties in ((50, False), (400, True)):
        y = rng.random(n) < 0.3
        s = rng.normal(y * 1.0, 1.0)
        if ties:
            s = np.round(s, 1)  # many tied scores, across the classes
        W = bootstrap_counts(y.astype(int), n_boot=200, random_state=1)
        np.testing.assert_allclose(resampled_auroc(y, s, W), weighted_auroc(y, s, W), atol=1e-12)
        # scikit-learn's roc_auc_score on the expanded resample (reference implementation)
        rows = np.repeat(np.arange(n), W[3].astype(int))
        assert resampled_auroc(y, s, W[3:4])[0] == pytest.approx(roc_auc_score(y[rows], s[rows]))
    assert np.isnan(resampled_auroc(np.zeros(5, bool), np.arange(5.0), np.ones((1, 5)))[0])
