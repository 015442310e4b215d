"""Corruption robustness: batched, grayscale-native, seeded corruptions and severity sweeps.

``corrupt(x, "gaussian_noise", 3)`` corrupts a (N, C, H, W) float tensor in [0, 1] on any
device; :func:`register_corruption` adds a user's own; :data:`PRESETS` hold each
modality's list (after MedMNIST-C). The ``robustness`` audit streams every (corruption,
severity) through the model and reports AUROC, balanced error, ECE, CE / mCE and the AUROC
drop per patient group.
"""

from medaudit.robustness import _builtins  # noqa: F401  (registers the corruptions)
from medaudit.robustness._audit import CHECKS, SETTINGS, SPEC, audit
from medaudit.robustness._export import write_corrupted
from medaudit.robustness._metrics import Estimate, corruption_error
from medaudit.robustness._presets import PRESETS, PlannedCorruption, Preset, SweepPlan, plan_sweep
from medaudit.robustness._random import ImageRandom, image_keys
from medaudit.robustness._registry import (
    FAMILIES,
    SEVERITIES,
    Corruption,
    corrupt,
    get_corruption,
    list_corruptions,
    register_corruption,
    unregister_corruption,
)
from medaudit.robustness._section import SweepInputs, robustness_section
from medaudit.robustness._sweep import CorruptionTransform, SweepResult, score_sweep

__all__ = [
    "CHECKS",
    "FAMILIES",
    "PRESETS",
    "SETTINGS",
    "SEVERITIES",
    "SPEC",
    "Corruption",
    "CorruptionTransform",
    "Estimate",
    "ImageRandom",
    "PlannedCorruption",
    "Preset",
    "SweepInputs",
    "SweepPlan",
    "SweepResult",
    "audit",
    "corrupt",
    "corruption_error",
    "get_corruption",
    "image_keys",
    "list_corruptions",
    "plan_sweep",
    "register_corruption",
    "robustness_section",
    "score_sweep",
    "unregister_corruption",
    "write_corrupted",
]
