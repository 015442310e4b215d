"""The aggregation strategies a federated run can use: a registry over Flower's strategies.

Each entry builds a Flower Message-API strategy (``flwr.serverapp.strategy``) from the
run's settings and the number of sites. Client-level DP wraps the built strategy in
Flower's fixed-clipping DP wrapper (composition, not another subclass).
"""

from __future__ import annotations

import math
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
    "multikrum_selected",
    "register_strategy",
]

#: The MetricRecord key strategies weight by: a site's training images, or 1 under
#: client-level DP (the DP wrappers' noise assumes an unweighted mean).
STRATEGY_WEIGHT_KEY = "num-examples"

MSG_UNKNOWN_STRATEGY = "Unknown strategy {name!r}; available: {known}."
MSG_DUPLICATE = "A strategy named {name!r} is already registered; pass force=True to replace it."
MSG_TRIMS_NOTHING = (
    "FedTrimmedAvg with --trimmed-beta {beta:g} trims no site of {n} (it drops "
    "floor(beta x sites) = 0 at each end, which is plain unweighted averaging): use "
    "--trimmed-beta {need:.3g} or more to drop one site at each end."
)
MSG_CANNOT_TRIM = (
    "FedTrimmedAvg cannot trim with {n} sites (dropping one at each end leaves none); "
    "use fedmedian, or --trimmed-beta 0 for plain unweighted averaging."
)
MSG_KRUM_TOO_FEW = (
    "{name} with --krum-malicious {f} needs more than {f} sites; {n} take part. "
    "Lower --krum-malicious or add sites."
)

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


def _check_krum(name: str, settings: FederatedSettings, n_sites: int) -> None:
    if n_sites <= settings.krum_malicious:
        raise InvalidInputError(
            MSG_KRUM_TOO_FEW.format(name=name, f=settings.krum_malicious, n=n_sites)
        )


def _krum(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import Krum

    _check_krum("Krum", settings, n_sites)
    return Krum(**_common(settings, n_sites), num_malicious_nodes=settings.krum_malicious)


def multikrum_selected(settings: FederatedSettings, n_sites: int) -> int:
    """Updates Multi-Krum averages: ``krum_select``, or ``n_sites - krum_malicious`` when 0.

    The default keeps every update but the ``f`` that Krum's score ranks as most
    isolated, so that with no attacker Multi-Krum is close to FedAvg, and with ``f``
    attackers it averages the honest sites.

    References
    ----------
    .. [1] Blanchard P, El Mhamdi EM, Guerraoui R, Stainer J. Machine learning with
           adversaries: Byzantine tolerant gradient descent. NeurIPS 2017 (Multi-Krum).

    Examples
    --------
    >>> from medaudit.federated import FederatedSettings
    >>> multikrum_selected(FederatedSettings(krum_malicious=1), 4)
    3
    >>> multikrum_selected(FederatedSettings(krum_select=2), 4)
    2
    """
    k = settings.krum_select or n_sites - settings.krum_malicious
    return max(1, min(k, n_sites))


def _multikrum(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import MultiKrum

    _check_krum("Multi-Krum", settings, n_sites)
    return MultiKrum(
        **_common(settings, n_sites),
        num_malicious_nodes=settings.krum_malicious,
        num_nodes_to_select=multikrum_selected(settings, n_sites),
    )


def _trimmed(settings: FederatedSettings, n_sites: int) -> Any:
    from flwr.serverapp.strategy import FedTrimmedAvg

    beta = settings.trimmed_beta
    if beta > 0 and int(beta * n_sites) == 0:
        # Flower would silently average everything (its default beta 0.2 does so below
        # five sites): the user asked for trimming, so say it would not happen.
        need = math.ceil(1000 / n_sites) / 1000  # the smallest 3-decimal beta that trims one
        if need >= 0.5:
            raise InvalidInputError(MSG_CANNOT_TRIM.format(n=n_sites))
        raise InvalidInputError(MSG_TRIMS_NOTHING.format(beta=beta, n=n_sites, need=need))
    return FedTrimmedAvg(**_common(settings, n_sites), beta=beta)


for _spec in (
    StrategySpec("fedavg", _fedavg, False, "FedAvg: mean of the sites' weights by size."),
    StrategySpec(
        "fedprox", _fedprox, False, "FedProx: FedAvg with a proximal term at the sites (mu)."
    ),
    StrategySpec("fedmedian", _fedmedian, True, "FedMedian: coordinate-wise median."),
    StrategySpec("krum", _krum, True, "Krum: the one site update closest to its neighbours."),
    StrategySpec(
        "fedtrimmedavg", _trimmed, True, "FedTrimmedAvg: coordinate-wise trimmed mean (beta)."
    ),
    StrategySpec(
        "multikrum",
        _multikrum,
        True,
        "Multi-Krum: FedAvg of the updates Krum ranks best (all but --krum-malicious).",
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
