"""Client-level DP accounting across rounds, and the settings of a federated run."""

from __future__ import annotations

import math

import pytest

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.federated import ClientDP, FederatedPrivacy, FederatedSettings, client_level_epsilon
from medaudit.federated._settings import MSG_DP_NEEDS_FEDAVG


def test_epsilon_agrees_with_flower_and_opacus_accountants():
    # Reference 1: Flower's own RDP accountant for its fixed-clipping DP wrappers
    # (flwr.supercore.privacy_accounting.rdp_accountant), 3 releases at sigma = 1.
    pytest.importorskip("flwr")
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    cfg = PrivacyConfig(
        target_delta=1e-5,
        population_size=4,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    flower = RdpAccountant(cfg)
    flower.compose(GaussianPrivacyEvent(noise_multiplier=1.0, sample_size=4, population_size=4), 3)
    ours = client_level_epsilon([1.0] * 3, delta=1e-5)
    assert ours == pytest.approx(flower.get_epsilon(1e-5), rel=1e-9)
    assert round(ours, 2) == 9.01  # the value APIS.md records for Flower
    # Reference 2: Opacus's RDP accountant with sample rate 1 (its own order grid).
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = compute_rdp(q=1.0, noise_multiplier=1.0, steps=3, orders=orders)
    opacus_eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    assert ours == pytest.approx(float(opacus_eps), rel=0.02)


def test_pld_is_tighter_than_rdp_and_below_the_classic_bound():
    rdp = client_level_epsilon([1.5] * 10, delta=1e-6)
    pld = client_level_epsilon([1.5] * 10, delta=1e-6, accountant="pld")
    # The classic RDP-to-DP conversion (Mironov 2017): min over a of
    # T a / (2 sigma^2) + log(1/delta) / (a - 1).
    classic = min(
        10 * a / (2 * 1.5**2) + math.log(1e6) / (a - 1)
        for a in [1 + k / 100 for k in range(1, 5000)]
    )
    assert pld < rdp <= classic


def test_the_ledger_counts_releases_and_lower_noise_costs_more():
    full = FederatedPrivacy.compute(
        [1.0, 1.0, 1.0], noise_multiplier=1.0, clipping_norm=0.5, delta=1e-5
    )
    dropped = FederatedPrivacy.compute(
        [1.0, 2 / 3, 1.0], noise_multiplier=1.0, clipping_norm=0.5, delta=1e-5
    )
    assert full.steps == 3 and [k for k, _ in full.epsilon_curve] == [1, 2, 3]
    eps = [e for _, e in full.epsilon_curve]
    assert eps == sorted(eps) and len(set(eps)) == 3
    assert dropped.epsilon > full.epsilon
    d = full.to_dict()
    for key in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "accountant"):
        assert key in d
    assert d["level"] == "client" and d["steps"] == 3
    assert client_level_epsilon([], delta=1e-5) == 0.0


def test_settings_refuse_bad_values_with_the_one_template():
    with pytest.raises(InvalidParameterError) as err:
        FederatedSettings(rounds=0)
    assert str(err.value) == (
        "The 'rounds' parameter of FederatedSettings must be an int >= 1. Got 0 instead."
    )
    with pytest.raises(InvalidParameterError, match="'n_bins' parameter of FederatedSettings"):
        FederatedSettings(n_bins=1000)
    with pytest.raises(InvalidParameterError, match="'on_bad_site' parameter"):
        FederatedSettings(on_bad_site="ignore")
    with pytest.raises(InvalidParameterError, match="'noise_multiplier' parameter of ClientDP"):
        ClientDP(noise_multiplier=0.0, clipping_norm=1.0)
    with pytest.raises(InvalidInputError) as err:
        FederatedSettings(strategies="fedmedian", client_dp=ClientDP(1.0, 0.5))
    assert str(err.value) == MSG_DP_NEEDS_FEDAVG.format(name="fedmedian")
    s = FederatedSettings(strategies="fedavg", client_dp=ClientDP(1.0, 0.5))
    assert s.strategies == ("fedavg",)
    assert FederatedSettings.from_dict(s.to_dict()) == s


def test_the_app_run_config_defaults_are_the_settings_defaults_and_carry_dp():
    """The shipped app's [tool.flwr.app.config] gives FederatedSettings' defaults."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from medaudit.federated import APP_DIR, SampleDP
    from medaudit.federated._deploy import settings_from_run_config

    cfg = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    s = settings_from_run_config(cfg)
    assert s.replace(rounds=5) == FederatedSettings()  # the app runs 3 rounds by default
    dp = settings_from_run_config(
        {**cfg, "arch": "small_cnn_gn", "sample-dp-noise": 1.2, "client-dp-noise": 0.8}
    )
    assert dp.sample_dp == SampleDP(1.2, 1.0, delta=1e-5)
    assert dp.client_dp == ClientDP(0.8, 1.0, delta=1e-5)
