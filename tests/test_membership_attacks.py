"""Membership attacks: hand-computed scores on tiny cases, and checks over the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.attacks.membership import (
    RMIA,
    CalibratedLossAttack,
    LiRA,
    LossAttack,
    MembershipSignals,
    get_attack,
    list_attacks,
    register_attack,
)
from medaudit.attacks.membership._attacks import (
    MSG_NEEDS_ONLINE,
    MSG_TOO_FEW_REFERENCES,
    MSG_UNKNOWN_ATTACK,
)


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, from the error function."""
    return math.log(0.5 * (1 + math.erf(x / math.sqrt(2))))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- hand-computed cases
def test_lira_offline_scores_by_hand():
    # 3 images, 3 OUT reference models. Medians: 1, 1, -1. Every image's deviations from
    # its mean square-sum to 2 over 2 degrees of freedom: pooled sigma = 1.
    s = MembershipSignals.from_arrays(
        [3.0, 0.0, -1.0],
        [[1.0, 0.0, -2.0], [2.0, 1.0, -1.0], [0.0, 2.0, 0.0]],
    )
    want = [_log_phi(2.0), _log_phi(-1.0), _log_phi(0.0)]
    np.testing.assert_allclose(LiRA().run(s), want, rtol=1e-12)
    # per-image variances are all 1 here as well
    np.testing.assert_allclose(LiRA(fix_variance=False).run(s), want, rtol=1e-12)


def test_lira_offline_per_image_variance_by_hand():
    # image 0: OUT values 0, 2 (median 1, sd 1.4142); image 1: 0, 0.5 (median 0.25, sd 0.3536)
    s = MembershipSignals.from_arrays([2.0, 1.0], [[0.0, 0.0], [2.0, 0.5]])
    want = [_log_phi((2 - 1) / math.sqrt(2)), _log_phi((1 - 0.25) / math.sqrt(0.125))]
    np.testing.assert_allclose(LiRA(fix_variance=False).run(s), want, rtol=1e-12)
    # pooled: (2 + 0.125) / 2 = 1.0625
    pooled = math.sqrt(1.0625)
    np.testing.assert_allclose(
        LiRA(fix_variance=True).run(s),
        [_log_phi(1 / pooled), _log_phi(0.75 / pooled)],
        rtol=1e-12,
    )


def test_lira_online_scores_by_hand():
    # image 0 IN models 0, 1; image 1 IN models 2, 3.
    s = MembershipSignals.from_arrays(
        [3.0, 0.0],
        [[4.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 5.0]],
        reference_in=[[True, False], [True, False], [False, True], [False, True]],
    )
    # IN medians 3 and 4, OUT medians 0.5 and 0.5; pooled variance (2 + .5 + 2 + .5) / 4.
    # score = ((t - mu_out)^2 - (t - mu_in)^2) / (2 sigma^2)
    np.testing.assert_allclose(LiRA(online=True).run(s), [6.25 / 2.5, -15.75 / 2.5], rtol=1e-12)


def test_rmia_scores_by_hand():
    p_x, p_ref_x = [0.8, 0.5], [0.5, 0.5]
    p_z, p_ref_z = [0.6, 0.9, 0.5, 0.3], [0.6, 0.5, 0.5, 0.5]
    s = MembershipSignals.from_arrays(
        [_logit(p) for p in p_x],
        [[_logit(p) for p in p_ref_x]],
        population_target=[_logit(p) for p in p_z],
        population_reference=[[_logit(p) for p in p_ref_z]],
    )
    # offline p(x) = (1.3 p_ref + 0.7) / 2: ratios x = 1.1852, 0.7407;
    # z = 0.8108, 1.3333, 0.7407, 0.4444. Count of z with LR(x, z) > gamma:
    assert RMIA().run(s).tolist() == [0.75, 0.25]  # the tie at 0.7407 is not counted
    assert RMIA(gamma=2.0).run(s).tolist() == [0.25, 0.0]
    # a = 1: p(x) is the OUT average itself; ratios x = 1.6, 1.0; z = 1, 1.8, 1, 0.6
    assert RMIA(a=1.0).run(s).tolist() == [0.75, 0.25]


def test_rmia_online_averages_in_and_out_models():
    s = MembershipSignals.from_arrays(
        [0.0],
        [[0.0], [_logit(0.9)]],
        reference_in=[[False], [True]],
        population_target=[0.0, 0.0],
        population_reference=[[0.0, 0.0], [_logit(0.7), _logit(0.2)]],
    )
    # p(x) = (0.5 + 0.9) / 2 = 0.7 -> ratio 0.714; z: p = 0.6, 0.35 -> ratios 0.833, 1.429
    assert RMIA(online=True).run(s).tolist() == [0.0]


def test_loss_and_calibrated_loss_by_hand():
    s = MembershipSignals.from_arrays([0.0, 2.0], [[0.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(
        LossAttack().run(s), [-math.log(2), -math.log1p(math.exp(-2))], rtol=1e-12
    )
    ref_loss_1 = (math.log1p(math.exp(-4)) + math.log(2)) / 2
    np.testing.assert_allclose(
        CalibratedLossAttack().run(s),
        [0.0, ref_loss_1 - math.log1p(math.exp(-2))],
        rtol=1e-12,
        atol=1e-15,
    )


def test_offline_attacks_use_only_out_models():
    # model 1 trained on image 0: its confidence there must not enter the OUT statistics
    base = [[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]]
    rin = [[False, False], [True, False], [False, False]]
    s = MembershipSignals.from_arrays([1.0, 1.0], base, reference_in=rin)
    scores = CalibratedLossAttack().run(s)
    assert scores[0] == pytest.approx(scores[1])


# ---------------------------------------------------------------- every registered attack
def _signals(attack, n=40, m=30, seed=0):
    rng = np.random.default_rng(seed)
    k = 4
    rin = np.zeros((k, n), bool)
    if attack.online:
        rin[:2, : n // 2] = True
        rin[2:, n // 2 :] = True
    return MembershipSignals.from_arrays(
        rng.normal(size=n),
        rng.normal(size=(k, n)),
        reference_in=rin,
        population_target=rng.normal(size=m),
        population_reference=rng.normal(size=(k, m)),
    )


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_scores_each_image_once_and_is_permutation_equivariant(name):
    attack = get_attack(name)
    s = _signals(attack)
    scores = attack.run(s)
    assert scores.shape == (40,) and np.all(np.isfinite(scores))
    perm = np.random.default_rng(1).permutation(40)
    ps = MembershipSignals.from_arrays(
        s.target[perm],
        s.reference[:, perm],
        reference_in=s.reference_in[:, perm],
        population_target=s.population_target,
        population_reference=s.population_reference,
    )
    np.testing.assert_allclose(attack.run(ps), scores[perm], rtol=1e-12)


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_says_how_many_reference_models_it_needs(name):
    attack = get_attack(name)
    if attack.min_references == 0:
        assert attack.run(MembershipSignals.from_arrays([0.0, 1.0])).shape == (2,)
        return
    too_few = MembershipSignals.from_arrays([0.0, 1.0], np.zeros((attack.min_references - 1, 2)))
    what = " (half of them trained on each audited image)" if attack.online else ""
    msg = MSG_TOO_FEW_REFERENCES.format(
        name=attack.name, need=attack.min_references, what=what, got=attack.min_references - 1
    )
    with pytest.raises(InvalidInputError) as e:
        attack.run(too_few)
    assert str(e.value) == msg


def test_online_attack_refuses_offline_reference_models():
    s = MembershipSignals.from_arrays([0.0], np.zeros((4, 1)))
    with pytest.raises(InvalidInputError) as e:
        get_attack("lira_online").run(s)
    assert str(e.value) == MSG_NEEDS_ONLINE.format(name="lira_online")


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(InvalidParameterError, match="already registered"):
        register_attack("loss", LossAttack)
    with pytest.raises(InvalidInputError) as e:
        get_attack("nosuch")
    assert str(e.value) == MSG_UNKNOWN_ATTACK.format(
        names="nosuch", known=", ".join(list_attacks())
    )
    register_attack("bogus", lambda: "not an attack")
    try:
        with pytest.raises(InvalidParameterError, match="not a MembershipAttack"):
            get_attack("bogus")
    finally:
        from medaudit.attacks.membership._attacks import _REGISTRY

        _REGISTRY.pop("bogus")


def test_bad_hyperparameters_and_signals_are_refused():
    with pytest.raises(InvalidParameterError, match="'a' parameter of RMIA"):
        RMIA(a=1.5)
    with pytest.raises(InvalidParameterError, match="'gamma' parameter of RMIA"):
        RMIA(gamma=0)
    with pytest.raises(InvalidParameterError, match="'online' parameter of LiRA"):
        LiRA(online="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="signals must be finite"):
        MembershipSignals.from_arrays([np.inf])
    with pytest.raises(InvalidInputError, match="reference must have shape"):
        MembershipSignals(
            np.zeros(2), np.zeros((1, 3)), np.zeros((1, 3), bool), np.zeros(0), np.zeros((1, 0))
        )
    s = MembershipSignals.from_arrays([0.0], [[0.0]])
    with pytest.raises(InvalidInputError, match="needs population images"):
        RMIA().run(s)
    with pytest.raises(InvalidInputError, match="per-image variance needs at least two"):
        LiRA(fix_variance=False).run(
            MembershipSignals.from_arrays([0.0], [[0.0], [1.0]], reference_in=[[True], [False]])
        )
