"""Federated training and federated audits on Flower (Message API), for any torch model.

- :func:`make_client_app` / :func:`make_server_app` — the Flower ``ClientApp`` and
  ``ServerApp``: sites train through medaudit's one training loop, the server runs
  FedAvg, FedProx, FedMedian, Krum or FedTrimmedAvg (:func:`list_strategies`), records
  who dropped in every round, and audits the final model from per-site sufficient
  statistics (no score or image leaves a site).
- :func:`simulate` — all sites on one machine with Flower's simulation engine (Ray).
- :data:`APP_DIR` — a Flower app folder (``pyproject.toml`` with ``[tool.flwr.app]``)
  that runs the same apps with ``flwr run`` on a SuperLink and one SuperNode per site.
- :func:`site_statistics`, :func:`aggregate_statistics`, :func:`subgroup_metrics` —
  the federated audit's statistics, usable without Flower.

Flower is an optional dependency: ``pip install "medaudit[fl]"``.
"""

from pathlib import Path

from medaudit.federated._accounting import (
    FederatedPrivacy,
    SampleLevelPrivacy,
    client_level_epsilon,
)
from medaudit.federated._audit import SETTINGS, SPEC, audit
from medaudit.federated._client import make_client_app
from medaudit.federated._federate import FederationResult, concat_cohorts, federate
from medaudit.federated._rounds import (
    FederatedRun,
    FederatedRunError,
    RoundRecord,
    RoundRecorder,
    SiteInfo,
    StrategyRun,
)
from medaudit.federated._section import (
    CHECKS,
    CentralisedComparison,
    audit_section,
    federated_section,
)
from medaudit.federated._server import Arm, make_server_app
from medaudit.federated._settings import BAD_SITE_POLICIES, ClientDP, FederatedSettings, SampleDP
from medaudit.federated._simulation import (
    FL_INSTALL_HINT,
    check_sites,
    prepare_sites,
    require_flower,
    simulate,
    simulate_sites,
)
from medaudit.federated._sites import FaultPlan, InjectedFault, SiteData, paired_auroc, prepare_site
from medaudit.federated._stats import (
    DEFAULT_BINS,
    MIN_BINS,
    ClusterMoments,
    SufficientStatistics,
    add_laplace_noise,
    aggregate_moments,
    aggregate_statistics,
    auroc_from_histograms,
    cluster_moments,
    score_bins,
    site_statistics,
    subgroup_metrics,
)
from medaudit.federated._strategies import (
    StrategySpec,
    build_strategy,
    get_strategy,
    list_strategies,
    multikrum_selected,
    register_strategy,
)

#: The Flower app folder shipped with medaudit (``flwr run APP_DIR <superlink>``).
APP_DIR: Path = Path(__file__).resolve().parent / "app"

__all__ = [
    "APP_DIR",
    "Arm",
    "BAD_SITE_POLICIES",
    "CHECKS",
    "DEFAULT_BINS",
    "FL_INSTALL_HINT",
    "SETTINGS",
    "SPEC",
    "MIN_BINS",
    "CentralisedComparison",
    "ClientDP",
    "ClusterMoments",
    "FaultPlan",
    "FederatedPrivacy",
    "FederatedRun",
    "FederatedRunError",
    "FederatedSettings",
    "FederationResult",
    "InjectedFault",
    "RoundRecord",
    "SampleDP",
    "SampleLevelPrivacy",
    "RoundRecorder",
    "SiteData",
    "SiteInfo",
    "StrategyRun",
    "StrategySpec",
    "SufficientStatistics",
    "add_laplace_noise",
    "aggregate_moments",
    "aggregate_statistics",
    "audit",
    "audit_section",
    "auroc_from_histograms",
    "build_strategy",
    "check_sites",
    "client_level_epsilon",
    "cluster_moments",
    "concat_cohorts",
    "federate",
    "federated_section",
    "get_strategy",
    "list_strategies",
    "multikrum_selected",
    "make_client_app",
    "make_server_app",
    "paired_auroc",
    "prepare_site",
    "prepare_sites",
    "register_strategy",
    "require_flower",
    "score_bins",
    "simulate",
    "simulate_sites",
    "site_statistics",
    "subgroup_metrics",
]
