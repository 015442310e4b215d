"""Agreement with the reference implementation of ImageNet-C, the ``imagecorruptions``
package (Michaelis et al. 2019, https://github.com/bethgelab/imagecorruptions, v1.1.2),
on the corruptions both have, on the same grayscale images at the same severity.

``imagecorruptions`` takes uint8 images of at least 32 x 32 and returns (H, W, 3) uint8:
a gray input is stacked to RGB, corrupted (noise independently per channel) and cast
back with ``np.uint8`` (truncation). Its first channel is compared with medaudit's one.

Tolerances, as a fraction of the corruption's own effect (mean |corrupted - clean|):

* deterministic corruptions — medaudit's output is brought to 8 bits the way the peer
  brings its own (truncation; rounding for the two that return a Pillow image), then the
  mean absolute difference from the peer's output must be below:
  defocus/motion/zoom blur, contrast, brightness 1% (they agree to the last bit but for a
  few pixels); JPEG 4% (libjpeg's integer DCT against medaudit's exact float DCT);
  pixelate 6% (Pillow rounds its horizontal pass to 8 bits before the vertical one and
  rounds halves up; medaudit stays in float).
* noise — independent draws differ pixel by pixel, so their distributions are compared:
  the mean absolute effect must agree within 5% and the Wasserstein-1 distance between
  the two residual distributions (corrupted - clean) must be below 6% of the effect.
  Motion blur draws its angle at random: the peer's angle (its first ``np.random`` draw
  after seeding) is given to medaudit's kernel.
"""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch

from medaudit.data import generate_hospitals
from medaudit.robustness import SEVERITIES, corrupt, get_corruption
from medaudit.robustness._blur import _motion_kernel, motion_blur_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")

with warnings.catch_warnings():
    # imagecorruptions 1.1.2 imports pkg_resources and scipy.ndimage.interpolation, both
    # deprecated; the warnings are the peer's, raised once at its import.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    import imagecorruptions

# medaudit name -> (imagecorruptions name, tolerance, how the peer makes 8 bits)
DETERMINISTIC = {
    "defocus_blur": ("defocus_blur", 0.01, "floor"),
    "motion_blur": ("motion_blur", 0.01, "floor"),
    "zoom_blur": ("zoom_blur", 0.01, "floor"),
    "contrast_down": ("contrast", 0.01, "floor"),
    "brightness_up": ("brightness", 0.01, "floor"),
    "jpeg_compression": ("jpeg_compression", 0.04, "round"),
    "pixelate": ("pixelate", 0.06, "round"),
}
NOISE = {"gaussian_noise": "gaussian_noise", "shot_noise": "shot_noise",
         "impulse_noise": "impulse_noise"}  # fmt: skip
NOISE_EFFECT_TOL, NOISE_W1_TOL = 0.05, 0.06


@pytest.fixture(scope="module")
def gray_images() -> np.ndarray:
    c = generate_hospitals(n_sites=2, patients_per_site=40, image_size=64, seed=0)
    return c.images[:192, 0]


def _peer(name: str, images: np.ndarray, severity: int) -> np.ndarray:
    out = []
    default_rng = np.random.default_rng
    for k, im in enumerate(images):
        np.random.seed(k)
        # impulse noise calls scikit-image's random_noise, which draws from an unseeded
        # np.random.default_rng(); seed it too, so that the peer is reproducible.
        with (
            warnings.catch_warnings(),
            mock.patch("numpy.random.default_rng", lambda seed=None, k=k: default_rng(k)),
        ):
            warnings.simplefilter("ignore")  # the peer's own numerical warnings
            out.append(imagecorruptions.corrupt(im, severity=severity, corruption_name=name))
    return np.stack(out)[..., 0].astype(np.float64) / 255.0


def _ours(name: str, images: np.ndarray, severity: int) -> np.ndarray:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    if name != "motion_blur":
        return corrupt(x, name, severity, seed=0)[:, 0].double().numpy()
    radius, sigma = get_corruption("motion_blur").severities[severity - 1]
    out = []
    for k in range(len(images)):
        np.random.seed(k)
        angle = np.deg2rad(np.random.uniform(-45, 45))  # the peer's first draw
        y = motion_blur_at(
            x[k : k + 1].double(), _motion_kernel(radius, sigma), torch.tensor([angle])
        )
        out.append(y.clamp(0, 1)[0, 0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_corruptions_agree_with_imagecorruptions(name, gray_images):
    peer_name, tol, to8 = DETERMINISTIC[name]
    gray_images = gray_images[:16]  # deterministic: 16 images are plenty
    clean = gray_images / 255.0
    for sev in SEVERITIES:
        theirs = _peer(peer_name, gray_images, sev)
        ours = _ours(name, gray_images, sev) * 255.0
        ours8 = (np.floor(ours + 1e-6) if to8 == "floor" else np.floor(ours + 0.5)) / 255.0
        effect = np.abs(theirs - clean).mean()
        mad = np.abs(ours8 - theirs).mean()
        assert effect > 0.02, (name, sev, effect)
        assert mad <= tol * effect, f"{name} severity {sev}: {mad:.5f} vs effect {effect:.5f}"


@pytest.mark.parametrize("name", list(NOISE))
def test_noise_distributions_agree_with_imagecorruptions(name, gray_images):
    # Dense noise (Gaussian, shot) changes every pixel: 64 images give a Monte Carlo error
    # far below the tolerance. Impulse noise is sparse, so it gets 192 images:
    # at severity 1, 3% impulse noise flips about 24,000 pixels on each side;
    # the relative Monte Carlo error of the difference of the two effects is then about
    # 1.4%, so the 5% tolerance is 3.5 standard errors (the noisiest case; the others
    # are well inside).
    gray_images = gray_images[: 192 if name == "impulse_noise" else 64]
    clean = gray_images / 255.0
    for sev in SEVERITIES:
        theirs = _peer(NOISE[name], gray_images, sev)
        # the peer truncates to 8 bits; compare at its precision
        ours = np.floor(_ours(name, gray_images, sev) * 255.0 + 1e-6) / 255.0
        effect_t, effect_o = np.abs(theirs - clean).mean(), np.abs(ours - clean).mean()
        assert abs(effect_o / effect_t - 1) <= NOISE_EFFECT_TOL, (name, sev, effect_o, effect_t)
        w1 = np.abs(np.sort((ours - clean).ravel()) - np.sort((theirs - clean).ravel())).mean()
        assert w1 <= NOISE_W1_TOL * effect_t, (name, sev, w1, effect_t)
