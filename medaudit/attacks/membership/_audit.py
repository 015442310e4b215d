"""The ``privacy`` audit's registration: ``audit(ctx)``, its checks and settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medaudit.attacks.membership._attacks import list_attacks
from medaudit.attacks.membership._epsilon import PrivacyClaim
from medaudit.attacks.membership._reference import BACKENDS
from medaudit.attacks.membership._run import DEFAULT_ATTACKS, MembershipAudit, MembershipSettings
from medaudit.attacks.membership._section import (
    CHECK_AUC,
    CHECK_EPSILON,
    CHECK_TPR,
    membership_section,
)
from medaudit.registry import AuditContext, AuditSpec, register_audit
from medaudit.report import Section, Setting, Threshold

__all__ = ["CHECKS", "SETTINGS", "SPEC", "audit"]

CHECKS: dict[str, Threshold] = {
    CHECK_AUC: Threshold(
        "<=",
        0.6,
        "major",
        help="ROC AUC of the strongest membership attack (0.5: the model leaks nothing)",
    ),
    CHECK_TPR: Threshold(
        "<=",
        0.05,
        "major",
        help="Share of training images the strongest attack finds at 1% false positives "
        "(0.01: chance)",
    ),
    CHECK_EPSILON: Threshold(
        "<=",
        0.0,
        "critical",
        help="Empirical epsilon lower bound minus the DP checkpoint's claimed epsilon "
        "(above 0: an attack contradicts the claim)",
    ),
}


def _known_attacks(value: Any) -> str | None:
    bad = [a for a in value if a not in list_attacks()]
    return f"has unknown attack(s) {bad}; available: {list_attacks()}" if bad else None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "attacks",
        list(DEFAULT_ATTACKS),
        "Membership attacks to run (loss, calibrated_loss, rmia, lira, lira_online); those "
        "the reference models cannot feed are listed as not run.",
        "list",
        flag="--attacks",
        check=_known_attacks,
    ),
    Setting(
        "require_attacks",
        False,
        "Stop with an error when a named attack cannot run (instead of listing it as not run).",
        "bool",
    ),
    Setting(
        "reference_models",
        1,
        "Reference models trained on population data (RMIA works with 1; LiRA needs 2, "
        "online LiRA an even number >= 4).",
        "int",
        minimum=0,
        flag="--reference-models",
    ),
    Setting(
        "reference_epochs",
        10,
        "Epochs of each reference model (mirror the target's).",
        "int",
        minimum=1,
    ),
    Setting("reference_batch_size", 64, "Batch size of each reference model.", "int", minimum=1),
    Setting(
        "reference_lr", 1e-3, "AdamW learning rate of each reference model.", "float", minimum=0.0
    ),
    Setting(
        "reference_arch", "", "Architecture of the reference models (default: the target's).", "str"
    ),
    Setting(
        "reference_fraction",
        0.5,
        "Share of the population pool each reference model "
        "trains on (at most as many images as the members).",
        "float",
        minimum=0.01,
        maximum=0.99,
    ),
    Setting(
        "population_fraction",
        0.5,
        "Without --population: share of the non-members' "
        "patients held out as population (and not scored).",
        "float",
        minimum=0.05,
        maximum=0.95,
    ),
    Setting(
        "z_fraction",
        0.5,
        "Share of the population's patients kept as RMIA's "
        "comparison samples (no reference model trains on them).",
        "float",
        minimum=0.05,
        maximum=0.95,
    ),
    Setting(
        "max_samples",
        5000,
        "At most this many members and non-members are scored.",
        "int",
        minimum=2,
    ),
    Setting("rmia_a", 0.3, "RMIA's offline scaling a.", "float", minimum=0.0, maximum=1.0),
    Setting(
        "rmia_gamma",
        1.0,
        "RMIA's pairwise likelihood-ratio threshold gamma.",
        "float",
        minimum=1e-9,
    ),
    Setting(
        "delta",
        1e-5,
        "Delta of the empirical epsilon bounds when the checkpoint claims none.",
        "float",
        minimum=0.0,
        maximum=0.5,
    ),
    Setting(
        "n_exposed", 10, "How many of the most exposed members to list (by row).", "int", minimum=0
    ),
    Setting(
        "workers", 0, "Processes training reference models (0: one per core).", "int", minimum=0
    ),
    Setting(
        "backend",
        "auto",
        "Where reference models train: auto (a running Ray cluster, "
        "else processes), serial, process or ray.",
        "str",
        choices=BACKENDS,
    ),
    Setting(
        "cache", True, "Cache reference models by content hash (a second audit loads them).", "bool"
    ),
)


def settings_from_policy(ctx: AuditContext) -> MembershipSettings:
    """The membership settings of this run (core and ``privacy.*`` settings)."""
    named = "privacy.attacks" in ctx.policy.settings
    return MembershipSettings(
        attacks=tuple(ctx.setting("privacy.attacks")) if named else None,
        strict=bool(ctx.setting("privacy.require_attacks")),
        reference_models=int(ctx.setting("privacy.reference_models")),
        reference_fraction=float(ctx.setting("privacy.reference_fraction")),
        population_fraction=float(ctx.setting("privacy.population_fraction")),
        z_fraction=float(ctx.setting("privacy.z_fraction")),
        max_samples=int(ctx.setting("privacy.max_samples")),
        rmia_a=float(ctx.setting("privacy.rmia_a")),
        rmia_gamma=float(ctx.setting("privacy.rmia_gamma")),
        delta=float(ctx.setting("privacy.delta")),
        n_bootstrap=int(ctx.setting("n_bootstrap")),
        confidence=float(ctx.setting("confidence")),
        min_group_size=int(ctx.setting("min_group_size")),
        n_exposed=int(ctx.setting("privacy.n_exposed")),
        seed=int(ctx.setting("seed")),
    )


def audit(ctx: AuditContext) -> Section:
    """Attack the model's membership on its training data and check any DP claim.

    Members are ``ctx.train``, non-members the audited cohort. Population data come
    from ``ctx.population``; without it, ``privacy.population_fraction`` of the
    non-members' patients is held out as population and not scored.
    """
    ctx.require("privacy", "model", "train")
    assert ctx.train is not None  # for mypy: require() raised otherwise
    info = ctx.model_info
    attack = MembershipAudit(
        ctx.model,
        ctx.train,
        ctx.cohort,
        ctx.population,
        arch=ctx.setting("privacy.reference_arch") or info.get("arch"),
        image_size=info.get("image_size"),
        in_channels=info.get("in_channels"),
        mean=info.get("mean"),
        std=info.get("std"),
        claim=PrivacyClaim.from_metadata(info.get("privacy")),
        batch_size=ctx.batch_size,
        device=ctx.device,
    )
    training = attack.reference_training(
        epochs=int(ctx.setting("privacy.reference_epochs")),
        batch_size=int(ctx.setting("privacy.reference_batch_size")),
        lr=float(ctx.setting("privacy.reference_lr")),
    )
    cache_dir = None if ctx.cache_dir is None else Path(ctx.cache_dir) / "reference-models"
    result = attack.run(
        settings_from_policy(ctx),
        training=training,
        cache_dir=cache_dir,
        cache=bool(ctx.setting("privacy.cache")),
        workers=int(ctx.setting("privacy.workers")),
        backend=str(ctx.setting("privacy.backend")),
        sensitive=ctx.sensitive,
        progress=ctx.progress,
    )
    return membership_section(result, ctx.policy)


SPEC = register_audit(
    AuditSpec(
        name="privacy",
        title="membership inference (LOSS, calibrated loss, RMIA, LiRA) and empirical epsilon "
        "against any DP claim",
        audit=audit,
        checks=CHECKS,
        settings=SETTINGS,
        needs=("model", "train"),
    )
)
