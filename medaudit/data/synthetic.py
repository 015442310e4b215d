"""Synthetic hospitals: chest-radiograph-like images with a ground truth for every effect.

No data set can be downloaded at run time, so medaudit's default data is generated here.
Images come from ``n_sites`` hospitals; each hospital has patients, each patient 1-3
studies and each study 1-2 images (site → patient → study → image). Every effect an
audit looks for is planted at a known strength and written to a metadata column:

========================  ==========================================================
column                    planted effect
========================  ==========================================================
``label``                 disease: 1 = one or more lesions (soft bright opacities) in
                          the lung fields, 0 = none
``severity``              0 (no disease) or 1-3: lesion size and brightness
``n_lesions``             number of lesions in the image (0 for label 0)
``lesion_contrast``       lesion brightness multiplier (0 for label 0); lower in the
                          hard subgroup by ``hard_contrast_factor``
``lesion_row/col``        pixel centre of the largest lesion (-1 for label 0)
``sex``, ``age``,         anatomy: body width, lung size, heart size, bone density,
``age_group``             breast shadow
``insurance``             "public"/"private": depends on site and age, never on disease
``marker``                a small bright site token in a site-specific corner (1 =
                          present); tied to the label in the training sites by
                          ``shortcut_strength``, independent of it in the held-out site
``acq_noise``,            the site's acquisition profile: Gaussian noise sigma, gamma,
``acq_gamma``,            blur sigma (pixels) and intensity offset
``acq_blur``,
``acq_offset``
========================  ==========================================================

Sites also differ in disease prevalence and in their sex and age mix (non-IID), as
:func:`site_profiles` lists.

Rendering is vectorised with numpy over whole batches of images; there is no per-pixel
Python loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import param_error
from medaudit.data._cohort import Cohort
from medaudit.data._folder import write_image_folder
from medaudit.data._splits import _check_fractions, patient_split

__all__ = [
    "AGE_GROUPS",
    "SEXES",
    "SiteProfile",
    "generate_hospitals",
    "site_profiles",
    "write_synthetic",
]

SEXES: tuple[str, ...] = ("female", "male")
AGE_GROUPS: tuple[str, ...] = ("18-39", "40-59", "60-79", "80+")
_AGE_EDGES = np.array([40, 60, 80])
MAX_SITES = 26
MAX_LESIONS = 4
# Peak lesion brightness as a fraction of the intensity range:
#   contrast * (base + per_grade * severity).
# Chosen so that small_cnn learns the disease within the demo's budget (the first value,
# 0.10 + 0.05 s, left it on a loss plateau) while a lesion at reduced contrast (the hard
# subgroup) stays measurably harder to see.
LESION_AMPLITUDE: tuple[float, float] = (0.16, 0.06)
_CORNERS = ("top-left", "top-right", "bottom-right", "bottom-left")
# 4x4 site tokens, letter-like so that sites can be told apart by the token alone.
_GLYPHS = np.array(
    [
        [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],  # block
        [[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]],  # L
        [[1, 1, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]],  # T
        [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]],  # X
        [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]],  # O
        [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]],  # dot
    ],
    dtype=bool,
)
_MARKER_VALUE = 0.92  # burned-in token brightness, before the site's noise
_CHUNK = 512  # images rendered at once (bounds memory at large image sizes)

_FUNC = "generate_hospitals"


@dataclass(frozen=True)
class SiteProfile:
    """What makes one synthetic hospital different from the others.

    Attributes
    ----------
    name : str
        Site name, ``"site_A"``, ``"site_B"``, ...
    prevalence : float
        Probability that a patient has the disease.
    female_fraction : float
        Share of female patients.
    age_mean : float
        Mean patient age in years (normal with sd 15, clipped to 18-90).
    private_logit : float
        Log-odds of private insurance at age 55 (older patients are more often public).
    acq_noise : float
        Sigma of the additive Gaussian noise, in intensity units of [0, 1].
    acq_gamma : float
        Gamma applied to intensities (``I ** gamma``).
    acq_blur : float
        Gaussian blur sigma in pixels at 64 x 64 (scaled with the image size).
    acq_offset : float
        Added to every intensity after the gamma.
    marker_corner : str
        Corner of the site token: one of "top-left", "top-right", "bottom-right",
        "bottom-left".
    marker_glyph : int
        Index of the 4 x 4 token shape.
    """

    name: str
    prevalence: float
    female_fraction: float
    age_mean: float
    private_logit: float
    acq_noise: float
    acq_gamma: float
    acq_blur: float
    acq_offset: float
    marker_corner: str
    marker_glyph: int


def _site_name(i: int) -> str:
    return f"site_{chr(ord('A') + i)}"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # One independent stream per (seed, purpose, site): changing one site's size does
    # not change what another site draws.
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _check_int(value: object, name: str, lo: int, hi: int, func: str = _FUNC) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise param_error(name, func, f"an int in [{lo}, {hi}]", value)
    return int(value)


def _check_unit(value: object, name: str, func: str = _FUNC) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
        or not 0.0 <= float(value) <= 1.0
    ):
        raise param_error(name, func, "a float in [0, 1]", value)
    return float(value)


def _check_range(value: object, name: str, func: str = _FUNC) -> tuple[float, float]:
    """A (low, high) pair of floats in [0, 1] with low <= high."""
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        lo, hi = float("nan"), float("nan")
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 1.0):
        raise param_error(name, func, "two floats (low, high) with 0 <= low <= high <= 1", value)
    return lo, hi


def site_profiles(
    *,
    n_sites: int = 4,
    seed: int = 0,
    female_fraction: Sequence[float] = (0.30, 0.70),
    insurance_spread: float = 1.2,
) -> tuple[SiteProfile, ...]:
    """The per-site prevalence, demographics and acquisition profiles for a seed.

    Each property is spread evenly over a fixed range across the sites and the spread is
    shuffled by ``seed``, so every pair of sites differs in every property.

    Parameters
    ----------
    n_sites : int
        Number of hospitals, 1-26.
    seed : int
        Seed; the profiles used by :func:`generate_hospitals` with the same seed.
    female_fraction : (float, float), default (0.30, 0.70)
        Range over which the sites' share of female patients is spread.
    insurance_spread : float >= 0, default 1.2
        The sites' log-odds of private insurance (at age 55) are spread over
        ``[-insurance_spread, insurance_spread]``.

    Returns
    -------
    tuple of SiteProfile
        One profile per site, in site order.

    Examples
    --------
    >>> p = site_profiles(n_sites=3, seed=0)
    >>> [s.name for s in p]
    ['site_A', 'site_B', 'site_C']
    >>> len({s.prevalence for s in p})
    3
    """
    n = _check_int(n_sites, "n_sites", 1, MAX_SITES, "site_profiles")
    seed = _check_int(seed, "seed", 0, 2**63 - 1, "site_profiles")
    female_lo, female_hi = _check_range(female_fraction, "female_fraction", "site_profiles")
    spread_ins = _check_spread(insurance_spread, "site_profiles")
    rng = _rng(seed, 0)

    def spread(lo: float, hi: float) -> np.ndarray:
        values = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
        return np.round(rng.permutation(values), 4)

    prevalence = spread(0.15, 0.45)
    female = spread(female_lo, female_hi)
    age_mean = spread(42.0, 66.0)
    private = spread(-spread_ins, spread_ins)
    noise = spread(0.015, 0.05)
    gamma = spread(0.80, 1.25)
    blur = spread(0.0, 1.2)
    offset = spread(-0.05, 0.05)
    return tuple(
        SiteProfile(
            name=_site_name(i),
            prevalence=float(prevalence[i]),
            female_fraction=float(female[i]),
            age_mean=float(age_mean[i]),
            private_logit=float(private[i]),
            acq_noise=float(noise[i]),
            acq_gamma=float(gamma[i]),
            acq_blur=float(blur[i]),
            acq_offset=float(offset[i]),
            marker_corner=_CORNERS[i % len(_CORNERS)],
            marker_glyph=i % len(_GLYPHS),
        )
        for i in range(n)
    )


# -- metadata ------------------------------------------------------------------------------


def _site_table(
    profile: SiteProfile,
    site_index: int,
    *,
    n_patients: int,
    image_size: int,
    shortcut: float,
    heldout: bool,
    hard_subgroup: str | None,
    hard_factor: float,
    lesion_amplitude: tuple[float, float],
    seed: int,
    occult: float = 0.0,
    hard_occult: float = 0.0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Metadata of one site (one row per image) and the hidden rendering parameters."""
    rng = _rng(seed, 1, site_index)
    f32 = np.float32

    # Patients.
    female = rng.random(n_patients) < profile.female_fraction
    age = np.clip(np.round(rng.normal(profile.age_mean, 15.0, n_patients)), 18, 90).astype(int)
    age_group = np.asarray(AGE_GROUPS, dtype=object)[np.searchsorted(_AGE_EDGES, age, "right")]
    p_private = 1.0 / (1.0 + np.exp(-(profile.private_logit + 0.06 * (55.0 - age))))
    private = rng.random(n_patients) < p_private
    diseased = rng.random(n_patients) < profile.prevalence
    severity_p = rng.integers(1, 4, n_patients)
    n_studies = rng.integers(1, 4, n_patients)
    onset = np.floor(rng.random(n_patients) * n_studies).astype(int)
    sex = np.where(female, "female", "male").astype(object)
    if hard_subgroup is None:
        hard = np.zeros(n_patients, dtype=bool)
    else:
        hard = (sex == hard_subgroup) | (age_group == hard_subgroup)
    # Anatomy: men have wider bodies and larger lungs; older patients larger hearts,
    # slightly hyperinflated lungs and less dense bone (more so in women).
    older = np.clip(age - 40, 0, None)
    body_w = np.where(female, 0.66, 0.72) + 0.0008 * older + rng.normal(0, 0.025, n_patients)
    lung_s = np.where(female, 0.92, 1.0) + 0.0012 * older + rng.normal(0, 0.03, n_patients)
    heart_s = 1.0 + 0.004 * (age - 50) + rng.normal(0, 0.05, n_patients)
    bone = 1.05 - np.where(female, 0.009, 0.005) * older + rng.normal(0, 0.04, n_patients)
    texture_p = rng.standard_normal((n_patients, 6, 6))

    # Studies: a diseased patient is positive from a random onset study on.
    s_patient = np.repeat(np.arange(n_patients), n_studies)
    s_index = np.arange(len(s_patient)) - np.repeat(np.cumsum(n_studies) - n_studies, n_studies)
    n_st = len(s_patient)
    s_label = diseased[s_patient] & (s_index >= onset[s_patient])
    s_severity = np.where(s_label, severity_p[s_patient], 0)
    s_n_lesions = np.where(
        s_label, np.minimum(1 + np.floor(rng.random(n_st) * (s_severity + 1)), MAX_LESIONS), 0
    ).astype(int)
    s_contrast = np.where(
        s_label,
        rng.uniform(0.8, 1.2, n_st) * np.where(hard[s_patient], hard_factor, 1.0),
        0.0,
    )
    if occult > 0 or hard_occult > 0:  # own stream: the defaults draw exactly as before
        p_occult = 1 - (1 - occult) * (1 - np.where(hard[s_patient], hard_occult, 0.0))
        s_contrast[_exact_share(_rng(seed, 4, site_index), s_label, p_occult)] = 0.0
    # Lesions in lung coordinates: side (0 = image left), u across, v down; the largest
    # first. On the heart side (image right) lesions stay lateral, clear of the heart.
    side = rng.integers(0, 2, (n_st, MAX_LESIONS))
    v = rng.uniform(-0.45, 0.55, (n_st, MAX_LESIONS))
    u = rng.uniform(-0.5, 0.5, (n_st, MAX_LESIONS))
    heart_side = side == 1
    v = np.where(heart_side, np.minimum(v, 0.25), v)
    u = np.where(heart_side, 0.2 + 0.6 * np.abs(u), u)
    u = u * (0.45 + 0.55 * np.sqrt((v + 1) / 2))  # the lung narrows towards the apex
    radius = np.sort(rng.uniform(0.8, 1.2, (n_st, MAX_LESIONS)), axis=1)[:, ::-1]
    radius = radius * (0.10 + 0.035 * s_severity)[:, None] * np.array([1.0, 0.8, 0.7, 0.6])

    # Images.
    n_img_s = rng.integers(1, 3, n_st)
    i_study = np.repeat(np.arange(n_st), n_img_s)
    i_patient = s_patient[i_study]
    n = len(i_study)
    label = s_label[i_study].astype(int)
    if heldout:
        p_marker = np.full(n, 0.5)
    else:
        p_marker = np.where(label == 1, (1 + shortcut) / 2, (1 - shortcut) / 2)
    marker = (rng.random(n) < p_marker).astype(int)
    dx = rng.normal(0, 0.025, n)
    dy = rng.normal(0, 0.025, n)
    scale = 1.0 + rng.normal(0, 0.015, n)
    texture = texture_p[i_patient] + 0.35 * rng.standard_normal((n, 6, 6))

    # Geometry per image in normalised coordinates ([-1, 1] across the image).
    bw = body_w[i_patient] * scale
    ls = lung_s[i_patient] * scale
    lung_cx = np.stack([dx - 0.34 * bw / 0.72, dx + 0.34 * bw / 0.72], axis=1)
    lung_cy = dy - 0.10
    lung_ax = 0.36 * ls * bw / 0.72
    lung_ay = 0.62 * ls
    st = i_study
    les_side = side[st]
    les_x = np.take_along_axis(lung_cx, les_side, axis=1) + u[st] * lung_ax[:, None]
    les_y = lung_cy[:, None] + v[st] * lung_ay[:, None]
    n_les = s_n_lesions[st]

    def to_px(t: np.ndarray) -> np.ndarray:
        return np.round((t + 1.0) / 2.0 * image_size - 0.5).astype(int)

    lesion_row = np.where(label == 1, to_px(les_y[:, 0]), -1)
    lesion_col = np.where(label == 1, to_px(les_x[:, 0]), -1)

    patient_ids = np.array([f"{profile.name}-P{j:05d}" for j in range(n_patients)], dtype=object)
    study_ids = np.array(
        [f"{patient_ids[p]}-S{k + 1}" for p, k in zip(s_patient, s_index, strict=True)],
        dtype=object,
    )
    blur_px = round(profile.acq_blur * image_size / 64.0, 4)
    meta = pd.DataFrame(
        {
            "label": label,
            "patient_id": patient_ids[i_patient],
            "study_id": study_ids[i_study],
            "site": profile.name,
            "split": "",
            "sex": sex[i_patient],
            "age": age[i_patient],
            "age_group": age_group[i_patient],
            "insurance": np.where(private[i_patient], "private", "public"),
            "severity": s_severity[i_study].astype(int),
            "n_lesions": n_les,
            "lesion_contrast": np.round(s_contrast[i_study], 4),
            "lesion_row": lesion_row,
            "lesion_col": lesion_col,
            "marker": marker,
            "acq_noise": profile.acq_noise,
            "acq_gamma": profile.acq_gamma,
            "acq_blur": blur_px,
            "acq_offset": profile.acq_offset,
        }
    )
    base, per_grade = lesion_amplitude
    amp = (meta["lesion_contrast"].to_numpy() * (base + per_grade * meta["severity"].to_numpy()))[
        :, None
    ] * np.array([1.0, 0.85, 0.75, 0.7])
    hidden = {
        "cx": dx.astype(f32),
        "cy": dy.astype(f32),
        "body_w": bw.astype(f32),
        "lung_cx": lung_cx.astype(f32),
        "lung_cy": lung_cy.astype(f32),
        "lung_ax": lung_ax.astype(f32),
        "lung_ay": lung_ay.astype(f32),
        "heart_s": (heart_s[i_patient] * scale).astype(f32),
        "bone": np.clip(bone[i_patient], 0.5, 1.15).astype(f32),
        "breast": female[i_patient].astype(f32),
        "texture": texture.astype(f32),
        "les_x": les_x.astype(f32),
        "les_y": les_y.astype(f32),
        "les_r": radius[st].astype(f32),
        "les_amp": amp.astype(f32),
        "n_les": n_les,
        "marker": marker.astype(bool),
    }
    return meta, hidden


# -- rendering -----------------------------------------------------------------------------


def _ramp(a: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place: a cheap soft edge (no exp)."""
    return np.clip(a, 0.0, 1.0, out=a)


def _interp_matrix(size: int, n_knots: int) -> np.ndarray:
    """(size, n_knots) linear-interpolation weights: smooth fields as two small matmuls."""
    pos = (np.arange(size) + 0.5) / size * (n_knots - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_knots - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((size, n_knots), np.float32)
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] = w
    return m


def _exact_share(rng: np.random.Generator, eligible: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A random ``round(p * n)`` of the ``n`` eligible rows of each stratum of equal ``p``.

    Planted shares (occult disease) are exact at each site rather than drawn row by row,
    so that what a seed changes is which patients carry them, not how many: a binomial
    draw moved the held-out site's share of occult positives by +-0.07 from seed to seed,
    and the demo's AUROC with it.
    """
    out = np.zeros(len(p), dtype=bool)
    for value in np.unique(p[eligible]):
        rows = np.flatnonzero(eligible & (p == value))
        k = int(np.floor(value * len(rows) + 0.5))
        out[rng.permutation(rows)[:k]] = True
    return out


def _marker_mask(size: int, corner: str, glyph: int) -> np.ndarray:
    """Boolean (size, size) mask of a site token in its corner."""
    k = max(1, round(size / 64))
    token = np.kron(_GLYPHS[glyph], np.ones((k, k), dtype=bool))
    m = token.shape[0]
    margin = max(2, size // 16)
    r0 = margin if corner.startswith("top") else size - margin - m
    c0 = margin if corner.endswith("left") else size - margin - m
    mask = np.zeros((size, size), dtype=bool)
    mask[r0 : r0 + m, c0 : c0 + m] = token
    return mask


def _render(
    h: dict[str, np.ndarray],
    rows: slice,
    size: int,
    profile: SiteProfile,
    blur_px: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render images ``rows`` of one site as uint8 of shape (B, size, size)."""
    from scipy.ndimage import gaussian_filter

    f32 = np.float32
    b = len(h["cx"][rows])
    t = ((np.arange(size, dtype=f32) + 0.5) / size * 2 - 1).astype(f32)
    x = t[None, None, :]  # (1, 1, W)
    y = t[None, :, None]  # (1, H, 1)

    def col(name: str) -> np.ndarray:
        return h[name][rows][:, None, None]

    cx, cy, bw, bone = col("cx"), col("cy"), col("body_w"), col("bone")
    xr = x - cx  # (B, 1, W)

    # Body: a rounded torso, wider at the shoulders, filling the image height.
    yc = y - cy  # (B, H, 1)
    bw_y = bw * (1.0 + 0.08 * _ramp(-yc - 0.45) - 0.10 * _ramp(yc - 0.5))
    # np.square twice: ``** 4`` takes numpy's slow general power path (100x slower).
    body = np.square(np.square(xr / bw_y))  # (B, H, W)
    np.subtract(1.0, body, out=body)
    _ramp(np.multiply(body, 6.0, out=body))

    # Lungs: ellipses narrower at the apex, darker laterally, cut out by the mediastinum
    # and the heart.
    ay, lcy = col("lung_ay"), col("lung_cy")
    yn = (y - lcy) / ay  # (B, H, 1), -1 at apex, +1 at base
    width = col("lung_ax") * (0.45 + 0.55 * np.sqrt(np.clip((yn + 1) / 2, 0, 1)))
    lungs = np.zeros((b, size, size), f32)
    for s in range(2):
        lx = h["lung_cx"][rows, s][:, None, None]
        lung = 1.0 - ((x - lx) / width) ** 2 - yn**2
        np.maximum(lungs, lung, out=lungs)
    _ramp(np.multiply(lungs, 5.0, out=lungs))
    lungs *= _ramp((np.abs(xr) - 0.07) * 14.0)
    hs = col("heart_s")
    heart = 1.0 - ((x - cx - 0.10) / (0.30 * hs)) ** 2 - ((yc - 0.30) / (0.22 * hs)) ** 2
    _ramp(np.multiply(heart, 5.0, out=heart))
    lungs *= 1.0 - heart
    lungs *= body

    # Lung markings: a patient-specific smooth field (two small matmuls per image).
    m = _interp_matrix(size, 6)
    texture = m @ h["texture"][rows] @ m.T  # (B, H, W)
    lateral = 0.72 + 0.28 * _ramp(np.abs(xr) / (0.7 * bw))  # hila are less dark

    img = 0.05 + 0.47 * body * (1.0 - 0.3 * (xr / bw) ** 2)  # thinner tissue laterally
    img -= lungs * (0.33 * lateral - 0.03 * texture)
    img += 0.04 * heart
    # Abdomen below the diaphragm, breast shadow over the lower lung fields of women.
    img += (0.05 * body) * _ramp((y - lcy - 0.75 * ay) * 6.0)
    breast = col("breast")
    if breast.any():
        sh = 1.0 - (np.abs(xr) - 0.40) ** 2 / 0.06 - (yc - 0.40) ** 2 / 0.05
        img += (0.05 * breast) * _ramp(sh * 3.0) * body
    # Bones: spine (seen through the mediastinum), ribs (arching over the lungs) and
    # clavicles.
    spine = _ramp(1.0 - np.abs(xr) / 0.05) * (0.8 + 0.2 * np.cos(y * 40.0)) ** 2
    img += (0.10 * bone) * spine * body
    ribs = np.cos((yc + 0.45 * xr**2) * 34.0)
    _ramp(ribs)
    ribs *= np.square(ribs)
    ribs *= 0.25 + 0.75 * lungs
    img += (0.07 * bone) * ribs * _ramp((0.55 - np.abs(yc + 0.1)) * 5.0)
    clav = _ramp(1.0 - np.abs(y - cy + 0.74 - 0.22 * np.abs(xr)) / 0.04)
    clav *= (np.abs(xr) > 0.07) & (np.abs(xr) < 0.62)
    img += (0.12 * bone) * clav

    # Lesions: soft bright blobs in the lung fields, only for images that have them.
    n_les = h["n_les"][rows]
    for k in range(MAX_LESIONS):
        idx = np.flatnonzero(n_les > k)
        if idx.size == 0:
            break
        sel = np.arange(rows.start, rows.stop)[idx]
        lx = h["les_x"][sel, k][:, None, None]
        ly = h["les_y"][sel, k][:, None, None]
        r2 = (h["les_r"][sel, k] ** 2)[:, None, None]
        blob = 1.0 - ((x - lx) ** 2 + (y - ly) ** 2) / r2
        _ramp(blob)
        blob **= 2
        img[idx] += h["les_amp"][sel, k][:, None, None] * blob

    # Acquisition: blur, gamma, offset, burned-in marker, noise.
    if blur_px > 0:
        img = gaussian_filter(img, sigma=(0, blur_px, blur_px), mode="nearest", truncate=3.0)
    _ramp(img)
    if profile.acq_gamma != 1.0:
        np.power(img, f32(profile.acq_gamma), out=img)
    img += f32(profile.acq_offset)
    has_marker = h["marker"][rows]
    if has_marker.any():
        mask = _marker_mask(size, profile.marker_corner, profile.marker_glyph)
        sub = img[has_marker]
        sub[:, mask] = _MARKER_VALUE
        img[has_marker] = sub
    img += rng.standard_normal(img.shape, dtype=f32) * f32(profile.acq_noise)
    img *= 255.0
    img += 0.5
    return _ramp_u8(img)


def _ramp_u8(a: np.ndarray) -> np.ndarray:
    np.clip(a, 0.0, 255.0, out=a)
    return a.astype(np.uint8)


# -- public API ----------------------------------------------------------------------------


def _check_spread(value: object, func: str = _FUNC) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(float(value)) and 0 <= float(value) <= 10):  # type: ignore[arg-type]
        raise param_error("insurance_spread", func, "a float in [0, 10]", value)
    return float(value)  # type: ignore[arg-type]


def _check_amplitude(value: object) -> tuple[float, float]:
    try:
        base, per_grade = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        base, per_grade = float("nan"), float("nan")
    if not (math.isfinite(base) and math.isfinite(per_grade) and min(base, per_grade) >= 0) or (
        base + 3 * per_grade > 1.0
    ):
        raise param_error(
            "lesion_amplitude",
            _FUNC,
            "two floats (base, per_grade) >= 0 with base + 3 * per_grade <= 1",
            value,
        )
    return base, per_grade


def _validate(
    n_sites: Any,
    patients_per_site: Any,
    image_size: Any,
    shortcut_strength: Any,
    hard_subgroup: Any,
    hard_contrast_factor: Any,
    heldout_site: Any,
    split_fractions: Any,
    seed: Any,
    lesion_amplitude: Any = LESION_AMPLITUDE,
    female_fraction: Any = (0.30, 0.70),
    heldout_shift: Any = 0.0,
    hard_occult_fraction: Any = 0.0,
    insurance_spread: Any = 1.2,
    profile_seed: Any = None,
    heldout_patients: Any = None,
) -> dict[str, Any]:
    n = _check_int(n_sites, "n_sites", 1, MAX_SITES)
    out: dict[str, Any] = {
        "n_sites": n,
        "patients_per_site": _check_int(patients_per_site, "patients_per_site", 1, 1_000_000),
        "image_size": _check_int(image_size, "image_size", 16, 1024),
        "shortcut_strength": _check_unit(shortcut_strength, "shortcut_strength"),
        "hard_contrast_factor": _check_unit(hard_contrast_factor, "hard_contrast_factor"),
        "split_fractions": _check_fractions(split_fractions, _FUNC, "split_fractions"),
        "seed": _check_int(seed, "seed", 0, 2**63 - 1),
        "female_fraction": _check_range(female_fraction, "female_fraction"),
        "lesion_amplitude": _check_amplitude(lesion_amplitude),
        "heldout_shift": _check_unit(heldout_shift, "heldout_shift"),
        "hard_occult_fraction": _check_unit(hard_occult_fraction, "hard_occult_fraction"),
        "insurance_spread": _check_spread(insurance_spread),
        "profile_seed": None
        if profile_seed is None
        else _check_int(profile_seed, "profile_seed", 0, 2**63 - 1),
        "heldout_patients": None
        if heldout_patients is None
        else _check_int(heldout_patients, "heldout_patients", 1, 1_000_000),
    }
    if len(out["split_fractions"]) != 3:
        raise param_error(
            "split_fractions",
            _FUNC,
            "3 non-negative numbers (train, val, test) summing to 1",
            split_fractions,
        )
    groups = SEXES + AGE_GROUPS
    if hard_subgroup is not None and hard_subgroup not in groups:
        raise param_error(
            "hard_subgroup", _FUNC, f"None or one of {', '.join(map(repr, groups))}", hard_subgroup
        )
    out["hard_subgroup"] = hard_subgroup
    names = [_site_name(i) for i in range(n)]
    if heldout_site is None:
        out["heldout_site"] = None
    elif heldout_site == "last" and n >= 2:
        out["heldout_site"] = names[-1]
    elif isinstance(heldout_site, str) and heldout_site in names and n >= 2:
        out["heldout_site"] = heldout_site
    else:
        expected = (
            f"None, 'last' or one of the site names ({names[0]}..{names[-1]}), "
            "with at least one site left for training"
        )
        raise param_error("heldout_site", _FUNC, expected, heldout_site)
    return out


def generate_hospitals(
    *,
    n_sites: int = 4,
    patients_per_site: int = 200,
    image_size: int = 64,
    shortcut_strength: float = 0.0,
    hard_subgroup: str | None = "female",
    hard_contrast_factor: float = 0.5,
    heldout_site: str | None = "last",
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    lesion_amplitude: Sequence[float] = LESION_AMPLITUDE,
    female_fraction: Sequence[float] = (0.30, 0.70),
    heldout_shift: float = 0.0,
    hard_occult_fraction: float = 0.0,
    insurance_spread: float = 1.2,
    profile_seed: int | None = None,
    heldout_patients: int | None = None,
) -> Cohort:
    """Generate chest-radiograph-like images from several hospitals, with ground truth.

    Parameters
    ----------
    n_sites : int
        Number of hospitals, 1-26 (``site_A``, ``site_B``, ...).
    patients_per_site : int
        Patients per hospital; each has 1-3 studies of 1-2 images (about 3 images per
        patient on average).
    image_size : int
        Height and width in pixels, 16-1024.
    shortcut_strength : float in [0, 1]
        How strongly the site token (``marker``) is tied to the label in the training
        sites: P(marker | y=1) = (1 + s) / 2 and P(marker | y=0) = (1 - s) / 2. In the
        held-out site the token is independent of the label (P = 0.5). 0 = no shortcut.
    hard_subgroup : str or None
        A value of ``sex`` or ``age_group`` whose lesions have lower contrast, so that a
        real performance gap with a known cause exists; None for none.
    hard_contrast_factor : float in [0, 1]
        Lesion contrast multiplier in the hard subgroup.
    heldout_site : str or None
        Site kept out of training (``split`` = "external"): "last", a site name, or None.
    split_fractions : sequence of 3 float
        Train/val/test shares of the patients of every training site (patient-grouped,
        stratified by the patient's max label).
    seed : int
        Same seed → identical images and metadata.
    lesion_amplitude : (float, float), default (0.16, 0.06)
        Peak lesion brightness, as a fraction of the intensity range, is
        ``lesion_contrast * (base + per_grade * severity)``; a lower ``base`` makes
        severity-1 lesions subtle for everyone.
    female_fraction : (float, float), default (0.30, 0.70)
        Range over which the sites' share of female patients is spread
        (:func:`site_profiles`).
    heldout_shift : float in [0, 1], default 0
        Spectrum shift of the held-out site: 0 draws it like the others; ``s > 0`` makes
        it a screening population in which a share ``s`` of the diseased studies show no
        visible lesion yet (occult disease: labelled positive, contrast 0), seen on the
        training sites' average scanner (mean noise, blur, gamma and offset) with their
        average share of women. Its AUROC then drops because of its patients, by about
        the same amount for every seed and model, not because a new scanner's
        intensities move the scores up or down. The demo uses 0.4.
    hard_occult_fraction : float in [0, 1], default 0
        Share of the hard subgroup's diseased studies whose lesion is hidden (contrast
        0, e.g. behind breast tissue), on top of ``hard_contrast_factor``: a gap that
        no model can train away. The demo uses 0.8. Both occult shares are exact at each
        site (a random ``round(share * n)`` of its diseased studies in the subgroup, and
        of the others), not drawn study by study.
    insurance_spread : float in [0, 10], default 1.2
        How strongly insurance depends on the site: the sites' log-odds of private
        insurance are spread over ``[-s, s]`` (:func:`site_profiles`); insurance never
        depends on the disease or the image. Only the insurance column changes with it.
    profile_seed : int or None, default None
        Seed of the site profiles (:func:`site_profiles`: each site's prevalence,
        demographics, insurance mix and scanner); None uses ``seed``. Fixing it keeps the
        same hospitals while ``seed`` redraws their patients, images and splits (the
        demo fixes it at 0).
    heldout_patients : int or None, default None
        Patients at the held-out site (None: ``patients_per_site``). A larger held-out
        population measures its AUROC more precisely without changing the training
        data (the demo uses 800).

    Returns
    -------
    Cohort
        ``images`` uint8 of shape (n, 1, image_size, image_size) and the metadata table
        described in this module's docstring.

    See Also
    --------
    site_profiles : the per-site prevalence, demographics and acquisition profiles.
    write_synthetic : the same data written as PNG files and a manifest.

    References
    ----------
    .. [1] DeGrave AJ, Janizek JD, Lee S-I. AI for radiographic COVID-19 detection selects
           shortcuts over signal. Nature Machine Intelligence 3:610-619, 2021.
    .. [2] Seyyed-Kalantari L, et al. Underdiagnosis bias of artificial intelligence
           algorithms applied to chest radiographs in under-served patient populations.
           Nature Medicine 27:2176-2182, 2021.

    Examples
    --------
    >>> c = generate_hospitals(n_sites=2, patients_per_site=10, image_size=32, seed=1)
    >>> c.images.shape[1:], c.images.dtype
    ((1, 32, 32), dtype('uint8'))
    >>> sorted(c.meta["split"].unique())
    ['external', 'test', 'train', 'val']
    """
    meta, images = _generate(
        n_sites=n_sites,
        patients_per_site=patients_per_site,
        image_size=image_size,
        shortcut_strength=shortcut_strength,
        hard_subgroup=hard_subgroup,
        hard_contrast_factor=hard_contrast_factor,
        heldout_site=heldout_site,
        split_fractions=split_fractions,
        seed=seed,
        lesion_amplitude=lesion_amplitude,
        female_fraction=female_fraction,
        heldout_shift=heldout_shift,
        hard_occult_fraction=hard_occult_fraction,
        insurance_spread=insurance_spread,
        profile_seed=profile_seed,
        heldout_patients=heldout_patients,
    )
    return Cohort(meta, images=images, name="synthetic-hospitals")


def _generate(**kwargs: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Validated metadata and uint8 images (n, 1, H, W) of :func:`generate_hospitals`."""
    p = _validate(**kwargs)
    size = p["image_size"]
    profiles = site_profiles(
        n_sites=p["n_sites"],
        seed=p["seed"] if p["profile_seed"] is None else p["profile_seed"],
        female_fraction=p["female_fraction"],
        insurance_spread=p["insurance_spread"],
    )
    if p["heldout_site"] is not None and p["heldout_shift"] > 0:
        profiles = _shift_heldout(profiles, p["heldout_site"])
    metas, images = [], []
    for i, prof in enumerate(profiles):
        heldout = prof.name == p["heldout_site"]
        meta, hidden = _site_table(
            prof,
            i,
            n_patients=p["patients_per_site"]
            if not heldout or p["heldout_patients"] is None
            else p["heldout_patients"],
            image_size=size,
            shortcut=p["shortcut_strength"],
            heldout=heldout,
            hard_subgroup=p["hard_subgroup"],
            hard_factor=p["hard_contrast_factor"],
            lesion_amplitude=p["lesion_amplitude"],
            seed=p["seed"],
            occult=p["heldout_shift"] if heldout else 0.0,
            hard_occult=p["hard_occult_fraction"],
        )
        if heldout:
            meta["split"] = "external"
        else:
            meta["split"] = patient_split(
                meta,
                fractions=p["split_fractions"],
                stratify="label",
                random_state=int(_rng(p["seed"], 3, i).integers(2**31)),
            )
        rng = _rng(p["seed"], 2, i)
        blur_px = float(meta["acq_blur"].iat[0])
        site_images = np.empty((len(meta), 1, size, size), np.uint8)
        for start in range(0, len(meta), _CHUNK):
            rows = slice(start, min(start + _CHUNK, len(meta)))
            site_images[rows, 0] = _render(hidden, rows, size, prof, blur_px, rng)
        metas.append(meta)
        images.append(site_images)
    return pd.concat(metas, ignore_index=True), np.concatenate(images)


def _shift_heldout(profiles: tuple[SiteProfile, ...], name: str) -> tuple[SiteProfile, ...]:
    """The held-out site as a screening site: training sites' average scanner and sex mix."""
    train = [p for p in profiles if p.name != name]
    new: dict[str, Any] = {
        k: round(float(np.mean([getattr(p, k) for p in train])), 4)
        for k in ("acq_noise", "acq_blur", "acq_gamma", "acq_offset", "female_fraction")
    }
    return tuple(dataclasses.replace(p, **new) if p.name == name else p for p in profiles)


def write_synthetic(out_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Generate synthetic hospitals and write them as PNG files plus ``manifest.csv``.

    Writes ``out_dir/images/img_000000.png`` ... (8-bit grayscale) and
    ``out_dir/manifest.csv`` with ``path`` (relative to ``out_dir``), ``label`` and all
    the metadata of :func:`generate_hospitals`. Everything is written to a temporary
    folder first and moved into place at the end, manifest last, so a failure never
    leaves a manifest that points at missing or stale images. An existing
    ``manifest.csv`` and ``images/`` in ``out_dir`` are replaced; other files are kept.

    Parameters
    ----------
    out_dir : path
        Output folder (created if needed).
    **kwargs
        Keyword arguments of :func:`generate_hospitals`.

    Returns
    -------
    Path
        The path of ``manifest.csv``. Same arguments → byte-identical files.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> with tempfile.TemporaryDirectory() as d:
    ...     m = write_synthetic(d, n_sites=2, patients_per_site=3, image_size=32)
    ...     pd.read_csv(m)["path"].iloc[0]
    'images/img_000000.png'
    """
    unknown = sorted(set(kwargs) - set(generate_hospitals.__kwdefaults__ or {}))
    if unknown:
        raise param_error(
            unknown[0], "write_synthetic", "a keyword argument of generate_hospitals", unknown[0]
        )
    if not isinstance(out_dir, (str, os.PathLike)):
        raise param_error("out_dir", "write_synthetic", "a path", out_dir)
    meta, images = _generate(**{**(generate_hospitals.__kwdefaults__ or {}), **kwargs})
    return write_image_folder(out_dir, images[:, 0], meta, prefix=".synth-", func="write_synthetic")
