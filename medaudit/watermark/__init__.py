"""Ownership watermarks (embed, verify, removal attacks) and data protection."""

from medaudit._stats._image import psnr, ssim
from medaudit.watermark._attacks import (
    AttackData,
    RemovalAttack,
    RobustnessResult,
    assess_robustness,
    fold_batchnorm,
    get_removal_attack,
    list_removal_attacks,
    prune_weights,
    quantise_weights,
    register_removal_attack,
)
from medaudit.watermark._audit import SPEC, audit
from medaudit.watermark._embed import (
    DEFAULT_TRIGGERS,
    METHODS,
    MSG_HARMLESS_NEEDS_FINISHED,
    EmbeddedWatermark,
    embed_watermark,
    watermark_hooks,
)
from medaudit.watermark._key import (
    KEY_SCHEMA,
    KINDS,
    TriggerSet,
    WatermarkKey,
    load_key,
    make_triggers,
    save_key,
)
from medaudit.watermark._protect import ProtectedImages, protect_images
from medaudit.watermark._protect_evidence import (
    ProtectionEvidence,
    protection_evidence,
    write_protected,
)
from medaudit.watermark._query import ModelScorer, as_scorer
from medaudit.watermark._section import (
    CHECKS,
    protection_section,
    robustness_section,
    watermark_section,
)
from medaudit.watermark._stats import binomial_sf, null_model_rate, queries_needed
from medaudit.watermark._utility import UtilityChange, utility_change
from medaudit.watermark._verify import (
    MSG_CLASSES,
    MSG_TOO_FEW_QUERIES,
    WatermarkVerification,
    pair_wins,
    trigger_matches,
    verify_watermark,
)

__all__ = [
    "CHECKS",
    "DEFAULT_TRIGGERS",
    "KEY_SCHEMA",
    "KINDS",
    "METHODS",
    "MSG_CLASSES",
    "MSG_HARMLESS_NEEDS_FINISHED",
    "MSG_TOO_FEW_QUERIES",
    "SPEC",
    "AttackData",
    "EmbeddedWatermark",
    "ModelScorer",
    "ProtectedImages",
    "ProtectionEvidence",
    "RemovalAttack",
    "RobustnessResult",
    "TriggerSet",
    "UtilityChange",
    "WatermarkKey",
    "WatermarkVerification",
    "as_scorer",
    "assess_robustness",
    "audit",
    "binomial_sf",
    "embed_watermark",
    "fold_batchnorm",
    "get_removal_attack",
    "list_removal_attacks",
    "load_key",
    "make_triggers",
    "null_model_rate",
    "pair_wins",
    "protect_images",
    "protection_evidence",
    "protection_section",
    "prune_weights",
    "psnr",
    "quantise_weights",
    "queries_needed",
    "register_removal_attack",
    "robustness_section",
    "save_key",
    "ssim",
    "trigger_matches",
    "utility_change",
    "verify_watermark",
    "watermark_hooks",
    "watermark_section",
    "write_protected",
]
