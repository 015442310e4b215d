"""The fast paths behind the corruptions: exact Poisson by table inversion, impulse hits by
geometric gaps, defocus by DCT-I and motion blur from its taps' spectra.

Each is checked against an independent reference: SciPy's Poisson pmf (chi-square
goodness of fit), the Bernoulli process's own moments, SciPy's ``correlate`` with
mirrored borders (``mode="mirror"`` is OpenCV's BORDER_REFLECT_101), and a direct sum of
edge-repeated shifted copies of the image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from medaudit.robustness import corrupt
from medaudit.robustness._blur import _motion_kernel, defocus_kernel, motion_blur_at, shifted_sum
from medaudit.robustness._filters import filter2d
from medaudit.robustness._poisson import max_rows, poisson_from_uniforms, poisson_tables

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _chi2_pvalue(draws: np.ndarray, rate: float) -> float:
    """Chi-square p-value of integer draws against Poisson(rate), sparse tail pooled."""
    top = int(draws.max())
    observed = np.bincount(draws, minlength=top + 1).astype(float)
    expected = stats.poisson.pmf(np.arange(top + 1), rate) * len(draws)
    expected[-1] += stats.poisson.sf(top, rate) * len(draws)
    keep = expected >= 5
    o = np.r_[observed[keep], observed[~keep].sum()]
    e = np.r_[expected[keep], expected[~keep].sum()]
    if e[-1] < 5:
        o, e = np.r_[o[:-2], o[-2:].sum()], np.r_[e[:-2], e[-2:].sum()]
    return float(stats.chisquare(o, e).pvalue)


# (rate, grid step): on the grid (8-bit shot noise), between grid points, far beyond the
# table (torch's sampler adds the excess), and a grid coarser than 1.
POISSON_CASES = [
    (12 * 37 / 255, 12 / 255), (12 * 255 / 255, 12 / 255), (60 * 200 / 255, 60 / 255),
    (0.05, 0.125), (2.7, 0.125), (11.9, 12 / 255), (199.9, 200 / 255), (7.5, 3.0),
    (max_rows(1.0) + 40.5, 1.0),
]  # fmt: skip


def test_table_inversion_draws_poisson_counts():
    g = torch.Generator().manual_seed(0)
    pvalues = []
    for rate, unit in POISSON_CASES:
        r = torch.full((100_000,), rate)
        draws = poisson_from_uniforms(
            r, torch.rand(r.shape, generator=g), lambda r=r: torch.rand(r.shape, generator=g),
            unit=unit,
        )  # fmt: skip
        pvalues.append(_chi2_pvalue(draws.numpy().astype(np.int64), rate))
    # nine independent tests: a Bonferroni level of 0.001 each
    assert min(pvalues) > 0.001 / len(POISSON_CASES), pvalues


def test_poisson_tables_and_their_guide():
    cdf, guide = poisson_tables(0.5, 8)
    lam = 0.5 * np.arange(8)
    np.testing.assert_allclose(cdf[:, :10], stats.poisson.cdf(np.arange(10), lam[:, None]),
                               atol=1e-6)  # fmt: skip
    # every guide entry is the smallest count whose CDF exceeds its bin's lower edge,
    # negative (to be searched from) where a CDF step lies inside the bin
    k = np.where(guide >= 0, guide, -1 - guide).astype(int)
    lower = np.arange(guide.shape[1]) / guide.shape[1]
    assert (np.take_along_axis(cdf, k, 1) > lower).all()
    assert (np.take_along_axis(cdf, np.maximum(k - 1, 0), 1)[k > 0] <= lower[None].repeat(8, 0)
            [k > 0]).all()  # fmt: skip


def test_shot_noise_depends_on_its_own_rows_only():
    x = torch.rand(6, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    x[:3] = torch.round(x[:3] * 255) / 255  # 8-bit rows use one uniform, others two
    y = corrupt(x, "shot_noise", 4, seed=7)
    for k in (1, 4):
        alone = corrupt(x[k : k + 1], "shot_noise", 4, seed=7, index=[k])
        assert torch.equal(alone[0], y[k])


def test_impulse_hits_form_a_bernoulli_process():
    x = torch.full((3000, 1, 8, 8), 0.5)
    y = corrupt(x, "impulse_noise", 3, seed=0)  # amount 0.09
    hit = (y != 0.5).float().view(len(y), -1)
    rate = float(hit.mean())
    se = (0.09 * 0.91 / hit.numel()) ** 0.5
    assert abs(rate - 0.09) < 4 * se
    # neighbouring pixels are hit independently, and salt and pepper are even
    both = float((hit[:, :-1] * hit[:, 1:]).mean())
    assert abs(both - 0.09**2) < 4 * (0.09**2 / hit[:, 1:].numel()) ** 0.5
    salt = float((y == 1).float().sum() / hit.sum())
    assert abs(salt - 0.5) < 4 * (0.25 / float(hit.sum())) ** 0.5


def test_impulse_noise_draws_more_blocks_when_one_runs_out(monkeypatch):
    import medaudit.robustness._noise as noise

    x = torch.full((400, 1, 16, 16), 0.5)
    usual = corrupt(x[:50], "impulse_noise", 5, seed=2)
    monkeypatch.setattr(noise, "IMPULSE_BLOCK_MARGIN", (0.0, 1))  # blocks of mean + 1
    y = corrupt(x, "impulse_noise", 5, seed=2)  # amount 0.27: most images need more
    hit = (y != 0.5).float()
    rate, se = float(hit.mean()), (0.27 * 0.73 / hit.numel()) ** 0.5
    assert abs(rate - 0.27) < 4 * se  # the process continues where a block ended
    assert torch.equal(corrupt(x[7:8], "impulse_noise", 5, seed=2, index=[7])[0], y[7])
    assert not torch.equal(usual, y[:50])  # the smaller blocks did change the draws


@pytest.mark.parametrize("shape", [(64, 64), (9, 11), (2, 7), (40, 17)])
def test_defocus_by_dct_equals_scipy_mirror_correlation(shape):
    from scipy.ndimage import correlate

    rng = np.random.default_rng(0)
    img = rng.random((2, 1, *shape))
    for kernel in (defocus_kernel(3.0, 0.1), defocus_kernel(10.0, 0.5)):
        ours = filter2d(torch.from_numpy(img), kernel, "reflect").numpy()
        ref = np.stack([correlate(im[0], kernel, mode="mirror") for im in img])[:, None]
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_motion_blur_equals_the_sum_of_its_shifted_copies():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((5, 1, 23, 31)))
    angles = torch.tensor([-np.pi / 4, -0.3, 0.0, 0.2, np.pi / 4], dtype=torch.float64)
    kernel = _motion_kernel(15, 5.0)
    ours = motion_blur_at(x, kernel, angles).numpy()
    h, w = x.shape[-2:]
    for b, a in enumerate(angles.tolist()):
        ref = np.zeros((h, w))
        for t, wt in enumerate(kernel):
            dy = -int(np.ceil(t * np.sin(a) - 0.5))
            dx = -int(np.ceil(t * np.cos(a) - 0.5))
            if abs(dy) >= h or abs(dx) >= w:
                break  # the peer stops at the first shift that leaves the image
            rows = np.clip(np.arange(h) - dy, 0, h - 1)
            cols = np.clip(np.arange(w) - dx, 0, w - 1)
            ref += wt * x[b, 0].numpy()[rows][:, cols]
        np.testing.assert_allclose(ours[b, 0], ref, atol=1e-12)
    # taps that all shift left and up read the other borders
    dy = torch.tensor([[0, 2, 3]])
    dx = torch.tensor([[0, 1, 4]])
    wts = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    got = shifted_sum(x[:1], dy, dx, wts)[0, 0].numpy()
    img = x[0, 0].numpy()
    want = sum(
        wt * img[np.clip(np.arange(h) - a, 0, h - 1)][:, np.clip(np.arange(w) - c, 0, w - 1)]
        for a, c, wt in zip([0, 2, 3], [0, 1, 4], [0.5, 0.25, 0.25], strict=True)
    )
    np.testing.assert_allclose(got, want, atol=1e-12)
