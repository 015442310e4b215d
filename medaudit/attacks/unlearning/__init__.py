"""Machine unlearning with verification (``medaudit unlearn``): can a patient be forgotten.

Forget requests at every level of a cohort's hierarchy (site, patients, studies, single
images); methods behind a registry (retrain from scratch, fine-tune on the retained data,
gradient ascent, random labels, SCRUB), all trained by the one training loop;
verification against retrained references (AUROC, the membership attack on the forget
set, a KS forget-quality score and a CI-based verdict); and a relearning attack.
"""

from medaudit.attacks.unlearning._methods import (
    MSG_UNKNOWN_METHOD,
    UnlearningMethod,
    UnlearnSettings,
    get_method,
    list_methods,
    register_method,
)
from medaudit.attacks.unlearning._relearn import RELEARN_TIERS, relearning_curve, relearning_tiers
from medaudit.attacks.unlearning._request import (
    LEVELS,
    MSG_BAD_SPEC,
    MSG_FORGET_ALL,
    MSG_IDS_NOT_FOUND,
    MSG_NO_COLUMN,
    ForgetRequest,
    parse_forget,
    read_forget_file,
)
from medaudit.attacks.unlearning._unlearn import UnlearningResult, save_unlearned, unlearn
from medaudit.attacks.unlearning._verify import (
    INDISTINGUISHABLE,
    Verification,
    verify_unlearning,
    weighted_ks,
)

__all__ = [
    "INDISTINGUISHABLE",
    "LEVELS",
    "MSG_BAD_SPEC",
    "MSG_FORGET_ALL",
    "MSG_IDS_NOT_FOUND",
    "MSG_NO_COLUMN",
    "MSG_UNKNOWN_METHOD",
    "RELEARN_TIERS",
    "ForgetRequest",
    "UnlearnSettings",
    "UnlearningMethod",
    "UnlearningResult",
    "Verification",
    "get_method",
    "list_methods",
    "parse_forget",
    "read_forget_file",
    "register_method",
    "relearning_curve",
    "relearning_tiers",
    "save_unlearned",
    "unlearn",
    "verify_unlearning",
    "weighted_ks",
]
