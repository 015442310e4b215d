"""Ownership watermarks (embed, verify, removal attacks) and data protection."""

from medaudit.watermark._key import (
    KEY_SCHEMA,
    KINDS,
    TriggerSet,
    WatermarkKey,
    load_key,
    make_triggers,
    save_key,
)
from medaudit.watermark._query import ModelScorer, as_scorer
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
    "KEY_SCHEMA",
    "KINDS",
    "MSG_CLASSES",
    "MSG_TOO_FEW_QUERIES",
    "ModelScorer",
    "TriggerSet",
    "UtilityChange",
    "WatermarkKey",
    "WatermarkVerification",
    "as_scorer",
    "binomial_sf",
    "load_key",
    "make_triggers",
    "null_model_rate",
    "pair_wins",
    "queries_needed",
    "save_key",
    "trigger_matches",
    "utility_change",
    "verify_watermark",
]
