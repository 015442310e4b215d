"""The aggregation strategies a federated run can use: a registry over Flower's strategies.

Each entry builds a Flower Message-API strategy (``flwr.serverapp.strategy``) from the
run's settings and the number of sites. Client-level DP wraps the built strategy in
Flower's fixed-clipping DP wrapper (composition, not another subclass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.federated._settings import MSG_DP_NEEDS_FEDAVG, FederatedSettings

__all__ = [
    "STRATEGY_WEIGHT_KEY",
    "StrategySpec",
    "build_strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
]

#: The MetricRecord key strategies weight by: a site's training images, or 1 under
#: client-level DP (the DP wrappers' noise assumes an unweighted mean).
STRATEGY_WEIGHT_KEY = "num-examples"

MSG_UNKNOWN_STRATEGY = "Unknown strategy {name!r}; available: {known}."
MSG_DUPLICATE = "A strategy named {name!r} is already registered; pass force=True to replace it."

StrategyFactory = Callable[[FederatedSettings, int], Any]


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy.

    Attributes
    ----------
    name : str
    factory : callable
        ``factory(settings, n_sites) -> flwr.serverapp.strategy.Strategy``.
    robust : bool
        Whether it is meant to resist corrupted or malicious sites.
    help : str
        One line for ``medaudit federate --help``.
    """

    name: str
    factory: StrategyFactory
    robust: bool
    help: str


_REGISTRY: dict[str, StrategySpec] = {}


def register_strategy(spec: StrategySpec, *, force: bool = False) -> StrategySpec:
    """Add a strategy; raises on a duplicate name unless ``force``."""
    if not isinstance(spec, StrategySpec):
        raise param_error("spec", "register_strategy", "a StrategySpec", type(spec).__name__)
    if spec.name in _REGISTRY and not force:
        raise InvalidParameterError(MSG_DUPLICATE.format(name=spec.name))
    _REGISTRY[spec.name] = spec
    return spec


def list_strategies() -> list[str]:
    """Registered strategy names, in registration order.

    Examples
    --------
    >>> list_strategies()[:5]
    ['fedavg', 'fedprox', 'fedmedian', 'krum', 'fedtrimmedavg']
    """
    return list(_REGISTRY)


def get_strategy(name: str) -> StrategySpec:
    """The spec registered under ``name`` (exit-2 error naming the known ones otherwise)."""
    if name not in _REGISTRY:
        raise InvalidInputError(
            MSG_UNKNOWN_STRATEGY.format(name=name, known=", ".join(list_strategies()))
        )
    return _REGISTRY[name]


def _common(settings: FederatedSettings, n_sites: int) -> dict[str, Any]:
    """Every site trains and evaluates each round; the minimum governs who is waited for."""
    k = min(settings.min_sites, n_sites)
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": k,
        "min_evaluate_nodes": k,
        "min_available_nodes": k,
        "weighted_by_key": STRATEGY_WEIGHT_KEY,
    }


def _fedavg(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import FedAvg

    return FedAvg(**_common(settings, n_sites))


def _fedprox(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import FedProx

    return FedProx(**_common(settings, n_sites), proximal_mu=settings.proximal_mu)


def _fedmedian(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import FedMedian

    return FedMedian(**_common(settings, n_sites))


def _krum(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import Krum

    return Krum(**_common(settings, n_sites), num_malicious_nodes=settings.krum_malicious)


def _trimmed(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import FedTrimmedAvg

    return FedTrimmedAvg(**_common(settings, n_sites), beta=settings.trimmed_beta)


for _spec in (
    StrategySpec("fedavg", _fedavg, False, "FedAvg: mean of the sites' weights by size."),
    StrategySpec(
        "fedprox", _fedprox, False, "FedProx: FedAvg with a proximal term at the sites (mu)."
    ),
    StrategySpec("fedmedian", _fedmedian, True, "FedMedian: coordinate-wise median."),
    StrategySpec("krum", _krum, True, "Krum: the site update closest to its neighbours."),
    StrategySpec(
        "fedtrimmedavg", _trimmed, True, "FedTrimmedAvg: coordinate-wise trimmed mean (beta)."
    ),
):
    register_strategy(_spec)


def build_strategy(name: str, settings: FederatedSettings, n_sites: int) -> Any:
    """The Flower strategy ``name`` for ``n_sites`` sites, DP-wrapped when asked.

    Parameters
    ----------
    name : str
    settings : FederatedSettings
    n_sites : int
        Sites taking part.

    Returns
    -------
    flwr.serverapp.strategy.Strategy
    """
    spec = get_strategy(name)
    strategy = spec.factory(settings, n_sites)
    dp = settings.client_dp
    if dp is None:
        return strategy
    if name != "fedavg":
        raise InvalidInputError(MSG_DP_NEEDS_FEDAVG.format(name=name))
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    wrapper = (
        DifferentialPrivacyServerSideFixedClipping
        if dp.clipping == "server"
        else DifferentialPrivacyClientSideFixedClipping
    )
    return wrapper(
        strategy,
        noise_multiplier=dp.noise_multiplier,
        clipping_norm=dp.clipping_norm,
        num_sampled_clients=n_sites,
    )
