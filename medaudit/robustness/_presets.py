"""Presets: which corruptions, at which severities, suit an imaging modality.

Following MedMNIST-C (Di Salvo et al. 2024), each modality has its own list and its own
severity parameters (a chest X-ray's noise is milder than ImageNet-C's); medaudit adds
the acquisition artefacts of the modality. ``core`` (the audit's default) is a fast
subset of ``chest``: Gaussian noise, Gaussian blur and lowered contrast, 15 passes of the
model. ``all`` is every registered corruption the images can take, and a family name
(``noise``, ``blur``, ``intensity``, ``digital``, ``acquisition``, ``colour``) all of
that family's, at their registered severities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medaudit._errors import InvalidInputError
from medaudit.robustness._registry import (
    Corruption,
    check_channels,
    get_corruption,
    list_corruptions,
)

__all__ = [
    "MSG_UNKNOWN_ITEM",
    "PRESETS",
    "PlannedCorruption",
    "Preset",
    "SweepPlan",
    "plan_sweep",
    "valid_choices",
]

MSG_UNKNOWN_ITEM = (
    "must name presets, families or registered corruptions; unknown: {names}; "
    "valid choices: {choices}"
)
MSG_EMPTY_PLAN = (
    "No corruption to sweep: {items} leave nothing for images with {channels} channel(s)."
)


@dataclass(frozen=True)
class Preset:
    """A modality's corruption list.

    Parameters
    ----------
    name : str
    modality : str
        In words (``"chest X-ray"``).
    corruptions : mapping of str to tuple or None
        Corruption name → its five severity parameters, or None for the registered ones.
    source : str
    """

    name: str
    modality: str
    corruptions: Mapping[str, tuple[Any, ...] | None]
    source: str = ""


def _ks_to_sigma(*kernel_sizes: int) -> tuple[float, ...]:
    # torchvision's gaussian_blur sigma for a kernel size, the rule MedMNIST-C relies on.
    return tuple(round(0.3 * ((k - 1) * 0.5 - 1) + 0.8, 4) for k in kernel_sizes)


_CHEST: dict[str, tuple[Any, ...] | None] = {
    "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
    "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
    "shot_noise": (60, 25, 18, 10, 5),
    "gaussian_blur": _ks_to_sigma(3, 5, 7, 9, 11),
    "brightness_up": None,
    "brightness_down": None,
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    "gamma_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "gamma_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    "collimation": None,
    "burned_in_text": None,
}

PRESETS: dict[str, Preset] = {
    "core": Preset(
        "core",
        "any (the default: noise, blur and contrast at chest X-ray severities)",
        {k: _CHEST[k] for k in ("gaussian_noise", "gaussian_blur", "contrast_down")},
        "a subset of MedMNIST-C's chestmnist list",
    ),
    "chest": Preset("chest", "chest X-ray", _CHEST, "MedMNIST-C chestmnist + medaudit"),
    "ct": Preset(
        "ct",
        "abdominal CT",
        {
            "pixelate": (0.7, 0.6, 0.5, 0.40, 0.35),
            "jpeg_compression": (50, 30, 15, 10, 7),
            "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
            "speckle_noise": (0.05, 0.10, 0.20, 0.30, 0.40),
            "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
            "shot_noise": (200, 100, 50, 25, 15),
            "gaussian_blur": _ks_to_sigma(11, 13, 15, 17, 21),
            "brightness_up": None,
            "brightness_down": None,
            "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
            "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
            "gamma_up": (1.3, 1.4, 1.6, 1.8, 2.0),
            "gamma_down": (0.9, 0.8, 0.7, 0.6, 0.4),
            "ct_streaks": None,
        },
        "MedMNIST-C organamnist + medaudit",
    ),
    "mri": Preset(
        "mri",
        "MRI (MedMNIST has none: medaudit's choice after TorchIO's artefacts)",
        {
            "gaussian_noise": (0.02, 0.04, 0.06, 0.08, 0.12),
            "bias_field": None,
            "ghosting": None,
            "motion_blur": ((3, 1), (5, 2), (7, 3), (9, 4), (11, 5)),
            "downsample": None,
            "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
            "gamma_up": (1.1, 1.2, 1.3, 1.4, 1.6),
            "gamma_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        },
        "medaudit",
    ),
    "fundus": Preset(
        "fundus",
        "retinal fundus photography",
        {
            "pixelate": (0.8, 0.60, 0.50, 0.40, 0.35),
            "jpeg_compression": (30, 25, 20, 10, 5),
            "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
            "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
            "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
            "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
            "brightness_down": None,
            "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        },
        "MedMNIST-C retinamnist",
    ),
    "derm": Preset(
        "derm",
        "dermatoscopy",
        {
            "pixelate": (0.7, 0.5, 0.40, 0.30, 0.25),
            "jpeg_compression": (30, 20, 15, 10, 7),
            "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
            "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
            "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
            "shot_noise": (60, 25, 18, 10, 5),
            "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
            "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
            "zoom_blur": None,
            "brightness_up": None,
            "brightness_down": None,
            "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
            "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
            "black_corners": None,
            "burned_in_text": None,
            "stain_shift": None,
        },
        "MedMNIST-C dermamnist",
    ),
    "path": Preset(
        "path",
        "histopathology",
        {
            "pixelate": (0.8, 0.6, 0.40, 0.30, 0.25),
            "jpeg_compression": (50, 30, 15, 10, 7),
            "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
            "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
            "brightness_up": None,
            "brightness_down": None,
            "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
            "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
            "stain_shift": None,
            "bubbles": None,
        },
        "MedMNIST-C pathmnist",
    ),
}
ALL = "all"


def _families() -> list[str]:
    return list(dict.fromkeys(get_corruption(n).family for n in list_corruptions()))


def valid_choices() -> str:
    """The presets, families and corruption names a sweep accepts, in words."""
    return (
        f"presets {', '.join([*PRESETS, ALL])}; families {', '.join(_families())}; "
        f"corruptions {', '.join(list_corruptions())}"
    )


def check_items(items: Sequence[str]) -> str | None:
    """What is wrong with a ``corruptions`` setting (None when every item is known)."""
    known = {*PRESETS, ALL, *_families(), *list_corruptions()}
    unknown = [i for i in items if i not in known]
    if unknown:
        return MSG_UNKNOWN_ITEM.format(names=unknown, choices=valid_choices())
    if not items:
        return "must name at least one corruption or preset"
    return None


@dataclass(frozen=True)
class PlannedCorruption:
    """One corruption of a sweep with the parameters of its five severities."""

    corruption: Corruption
    parameters: tuple[Any, ...]

    @property
    def name(self) -> str:
        """The corruption's registered name."""
        return self.corruption.name


@dataclass(frozen=True)
class SweepPlan:
    """The corruptions a sweep runs, and what was left out (with why)."""

    corruptions: tuple[PlannedCorruption, ...]
    left_out: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        """Corruption names, in sweep order."""
        return [p.name for p in self.corruptions]


def plan_sweep(items: Sequence[str], *, channels: int) -> SweepPlan:
    """Resolve presets, families and names into the corruptions to sweep.

    A corruption named explicitly that the images cannot take (an RGB-only one on
    grayscale images) is an error listing the valid choices; a preset's RGB-only members
    are left out on grayscale images and listed in ``left_out``. A corruption named twice
    keeps its first parameters.

    Examples
    --------
    >>> plan = plan_sweep(["core"], channels=1)
    >>> plan.names
    ['gaussian_noise', 'gaussian_blur', 'contrast_down']
    >>> plan_sweep(["noise"], channels=1).names
    ['gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise']
    >>> plan.corruptions[0].parameters
    (0.04, 0.08, 0.12, 0.18, 0.26)
    """
    problem = check_items(list(items))
    if problem is not None:
        raise InvalidInputError(f"robustness.corruptions {problem}.")
    chosen: dict[str, tuple[Any, ...]] = {}
    left_out: list[str] = []
    for item in items:
        if item in PRESETS or item == ALL or item in _families():
            entries = (
                PRESETS[item].corruptions
                if item in PRESETS
                else dict.fromkeys(list_corruptions(family=None if item == ALL else item))
            )
            for name, params in entries.items():
                c = get_corruption(name)
                if c.rgb_only and channels != 3:
                    left_out.append(f"{name} (from {item}: needs RGB images)")
                    continue
                chosen.setdefault(name, params if params is not None else c.severities)
        else:
            c = get_corruption(item)
            check_channels(c, channels)
            chosen.setdefault(item, c.severities)
    if not chosen:
        raise InvalidInputError(MSG_EMPTY_PLAN.format(items=list(items), channels=channels))
    return SweepPlan(
        tuple(PlannedCorruption(get_corruption(n), p) for n, p in chosen.items()),
        tuple(dict.fromkeys(left_out)),
    )
