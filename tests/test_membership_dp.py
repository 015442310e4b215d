"""A DP model at epsilon = 1: every attack near chance, and the claim holds (slow).

The target is trained by ``medaudit.privacy.train_private`` (DP-SGD on Opacus); its
ledger is the claim the privacy audit checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from medaudit.attacks.membership import (
    MembershipAudit,
    MembershipSettings,
    list_attacks,
    membership_section,
)
from medaudit.data import generate_hospitals
from medaudit.models import build_model, compute_normalization

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_a_dp_model_at_epsilon_1_leaks_nothing_measurable_and_its_claim_holds(tmp_path):
    privacy = pytest.importorskip("medaudit.privacy")
    c = generate_hospitals(
        n_sites=3, patients_per_site=350, image_size=32, seed=3, heldout_site=None
    )
    one = c.subset(~c.meta["patient_id"].duplicated().to_numpy())  # one image per patient
    rng = np.random.default_rng(3)
    order = rng.permutation(len(one))
    canaries, population = order[:800], order[800:]
    coin = rng.random(800) < 0.5  # each canary trained on with probability 1/2
    members = one.subset(np.sort(canaries[coin]))
    non_members = one.subset(np.sort(canaries[~coin]))
    mean, std = compute_normalization(members)
    model = build_model("small_cnn_dp", random_state=0)
    res = privacy.train_private(
        model,
        members,
        None,
        target_epsilon=1.0,
        target_delta=1e-5,
        epochs=10,
        batch_size=32,
        seed=0,
        mean=mean,
        std=std,
    )
    claim = res.ledger.to_dict()
    assert claim["epsilon"] <= 1.0
    audit = MembershipAudit(
        res.model,
        members,
        non_members,
        one.subset(np.sort(population)),
        arch="small_cnn_dp",
        image_size=32,
        mean=mean,
        std=std,
        claim=claim,
    )
    result = audit.run(
        MembershipSettings(attacks=tuple(list_attacks()), reference_models=4, n_bootstrap=200),
        training=audit.reference_training(epochs=5, batch_size=32),
        cache_dir=tmp_path,
        workers=1,
    )
    for name, o in result.outcomes.items():
        assert o.metrics.auc <= 0.56, (name, o.metrics.auc)
    assert result.group_size == 1
    assert result.epsilon_lower_bound.epsilon < claim["epsilon"]
    check = next(
        ch for ch in membership_section(result).checks if ch.id == "privacy.dp.epsilon_excess"
    )
    assert check.status == "pass", check
