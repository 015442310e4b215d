"""Membership inference and empirical privacy: the ``privacy`` audit.

Does the model give away who was in its training set, and does a claimed epsilon hold
up? Attacks (LOSS, difficulty-calibrated loss, LiRA offline and online, RMIA) run
behind one interface and a registry; reference models train with the one training
loop, are cached by content hash and trained in parallel; metrics follow the field's
standard form (TPR at low FPR, log-log ROC), with subgroup exposure and empirical
epsilon lower bounds checked against a DP checkpoint's claim.
"""

from medaudit.attacks.membership._attacks import (
    RMIA,
    CalibratedLossAttack,
    LiRA,
    LossAttack,
    MembershipAttack,
    get_attack,
    list_attacks,
    register_attack,
)
from medaudit.attacks.membership._audit import CHECKS, SETTINGS, SPEC, audit
from medaudit.attacks.membership._data import MSG_SHARED_PATIENTS
from medaudit.attacks.membership._epsilon import (
    EpsilonBound,
    PrivacyClaim,
    clopper_pearson,
    epsilon_from_rates,
    one_run_epsilon,
    one_run_pvalue,
    threshold_epsilon,
)
from medaudit.attacks.membership._metrics import (
    FPR_LEVELS,
    AttackMetrics,
    attack_metrics,
    balanced_accuracy,
    most_exposed,
    roc_points,
    subgroup_exposure,
    tpr_at_fpr,
)
from medaudit.attacks.membership._reference import (
    ReferenceModels,
    ReferenceTraining,
    balanced_inclusion,
    default_cache_dir,
    random_inclusion,
    train_reference_models,
)
from medaudit.attacks.membership._run import (
    DEFAULT_ATTACKS,
    AttackOutcome,
    MembershipAudit,
    MembershipResult,
    MembershipSettings,
)
from medaudit.attacks.membership._section import membership_section
from medaudit.attacks.membership._signals import MembershipSignals, logit_confidence

__all__ = [
    "CHECKS",
    "DEFAULT_ATTACKS",
    "FPR_LEVELS",
    "MSG_SHARED_PATIENTS",
    "RMIA",
    "SETTINGS",
    "SPEC",
    "AttackMetrics",
    "AttackOutcome",
    "CalibratedLossAttack",
    "EpsilonBound",
    "LiRA",
    "LossAttack",
    "MembershipAttack",
    "MembershipAudit",
    "MembershipResult",
    "MembershipSettings",
    "MembershipSignals",
    "PrivacyClaim",
    "ReferenceModels",
    "ReferenceTraining",
    "attack_metrics",
    "audit",
    "balanced_accuracy",
    "balanced_inclusion",
    "clopper_pearson",
    "default_cache_dir",
    "epsilon_from_rates",
    "get_attack",
    "list_attacks",
    "logit_confidence",
    "membership_section",
    "most_exposed",
    "one_run_epsilon",
    "one_run_pvalue",
    "random_inclusion",
    "register_attack",
    "roc_points",
    "subgroup_exposure",
    "threshold_epsilon",
    "tpr_at_fpr",
    "train_reference_models",
]
