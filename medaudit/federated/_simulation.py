"""Simulate a federation on one machine with Flower's simulation engine (Ray backend).

The cohort is partitioned into sites; each site's rows are written once to a shard on
disk (images as ``.npy``, metadata as CSV) so that every Ray worker loads only the sites
it serves, once, instead of receiving all images with every message. The apps are the
same :func:`make_client_app` / :func:`make_server_app` a real deployment runs.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medaudit._errors import InvalidInputError
from medaudit.data import Cohort, SitePartition, partition_by_site
from medaudit.federated._client import make_client_app
from medaudit.federated._rounds import FederatedRun, FederatedRunError, RoundRecord
from medaudit.federated._server import Arm, make_server_app
from medaudit.federated._settings import FederatedSettings
from medaudit.federated._sites import FaultPlan, SiteData, prepare_site
from medaudit.federated._strategies import build_strategy, get_strategy

__all__ = [
    "FL_INSTALL_HINT",
    "SiteShard",
    "check_sites",
    "prepare_sites",
    "require_flower",
    "simulate",
    "simulate_sites",
]

#: The exact command that installs Flower with its simulation engine.
FL_INSTALL_HINT = 'pip install "medaudit[fl]"'
MSG_NO_FLOWER = (
    "Federated training needs Flower with its simulation engine, which is not installed: "
    + FL_INSTALL_HINT
)
MSG_BAD_SITE = "site {name!r} has {reason}"

# Environment Flower and Ray read at start-up: no telemetry, no update check, and Ray's
# notice about accelerator variables (a FutureWarning) turned off.
FLOWER_ENV: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}


def require_flower() -> None:
    """Raise one clear error naming the install command when Flower is missing."""
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        raise InvalidInputError(MSG_NO_FLOWER) from exc


def prepare_sites(
    cohort: Cohort,
    partition: SitePartition,
    *,
    settings: FederatedSettings,
    sensitive: Sequence[str] | None = None,
) -> dict[str, SiteData]:
    """Each site's training and test data (split by patient, within the site)."""
    return {
        name: prepare_site(
            sub,
            name,
            test_fraction=settings.test_fraction,
            seed=settings.seed,
            sensitive=sensitive,
        )
        for name, sub in partition.cohorts(cohort).items()
    }


def check_sites(sites: Mapping[str, SiteData], settings: FederatedSettings) -> dict[str, str]:
    """Sites that cannot take part, with why; raises when the user chose ``stop``.

    The server checks the same again from what the sites report (a deployment's server
    sees no data); checking here first fails fast, before Ray starts.
    """
    bad = {}
    for name, site in sites.items():
        c = site.counts
        if c["n_train"] == 0:
            bad[name] = "no training images"
        elif c["n_positive"] == 0:
            bad[name] = "no positive images"
        elif c["n_positive"] == c["n"]:
            bad[name] = "no negative images"
    text = "; ".join(MSG_BAD_SITE.format(name=n, reason=r) for n, r in bad.items())
    if bad and settings.on_bad_site == "stop":
        raise FederatedRunError(
            f"Stopping as asked (--on-bad-site stop): {text}. Fix those sites' data, or use "
            "--on-bad-site skip to train without them."
        )
    if len(sites) - len(bad) < 2:
        raise FederatedRunError(
            f"Fewer than two usable sites remain: {text}. A federation needs at least two."
        )
    return bad


@dataclass(frozen=True)
class SiteShard:
    """Where one simulated site's data lies on disk (what a Ray worker is given)."""

    name: str
    folder: str
    sensitive: tuple[str, ...]
    split_source: str
    class_names: tuple[str, ...]


def _write_shard(root: Path, index: int, site: SiteData, image_size: int | None) -> SiteShard:
    folder = root / f"site-{index}"
    folder.mkdir()
    for part in ("train", "test"):
        cohort: Cohort = getattr(site, part)
        c, h, w = cohort.image_shape if len(cohort) else (1, 1, 1)
        images = (
            cohort.load_all(image_size=image_size)
            if len(cohort)
            else np.zeros((0, c, h, w), np.float32)
        )
        np.save(folder / f"{part}.npy", images)
        cohort.meta.drop(columns=["path"], errors="ignore").to_csv(
            folder / f"{part}.csv", index=False
        )
    return SiteShard(
        site.name,
        str(folder),
        tuple(site.sensitive),
        site.split_source,
        tuple(site.train.class_names),
    )


@lru_cache(maxsize=64)
def load_shard(shard: SiteShard) -> SiteData:
    """A site's data from its shard, loaded once per worker process."""
    folder = Path(shard.folder)

    def part(name: str) -> Cohort:
        meta = pd.read_csv(folder / f"{name}.csv", keep_default_na=True)
        images = np.load(folder / f"{name}.npy", mmap_mode="r")
        return Cohort(
            meta, images=images, class_names=list(shard.class_names), name=f"{shard.name}:{name}"
        )

    return SiteData(shard.name, part("train"), part("test"), shard.sensitive, shard.split_source)


@contextmanager
def _flower_environment(verbose: bool) -> Iterator[None]:
    """Flower/Ray environment variables, and Flower's logger quiet unless ``verbose``.

    Quiet means errors only: Flower logs every round at INFO and announces that
    ``run_simulation`` is deprecated in favour of ``flwr run`` (which medaudit's
    deployment app uses) at WARNING.
    """
    old_env = {k: os.environ.get(k) for k in FLOWER_ENV}
    for k, v in FLOWER_ENV.items():
        os.environ.setdefault(k, v)
    logger = logging.getLogger("flwr")
    old_level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old_level)
        for k, old in old_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def simulate(
    cohort: Cohort,
    *,
    settings: FederatedSettings | None = None,
    partition: SitePartition | None = None,
    site_column: str = "site",
    sensitive: Sequence[str] | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    model_fn: Callable[[Any], torch.nn.Module] | None = None,
    faults: FaultPlan | None = None,
    audit_only: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    cpus: int | None = None,
    verbose: bool = False,
) -> FederatedRun:
    """Run a federation of the cohort's sites with Flower's simulation engine.

    Parameters
    ----------
    cohort : Cohort
        All sites' images and metadata (simulation only: a real federation never pools).
    settings : FederatedSettings, optional
    partition : SitePartition, optional
        Which rows each site holds (default: one site per value of ``site_column``).
    site_column : str, default "site"
    sensitive : sequence of str, optional
        Attribute columns of the federated audit (default: the demographic columns).
    initial_state : mapping, optional
        Initial weights (a pretrained checkpoint), or the audited model with ``audit_only``.
    model_fn : callable, optional
        ``model_fn(config) -> torch.nn.Module`` instead of the zoo architecture.
    faults : FaultPlan, optional
        Faults to inject at chosen sites.
    audit_only : bool, default False
    on_round, on_stage : callable, optional
        Progress hooks.
    cpus : int, optional
        CPUs Ray may use (default: all); each site's worker uses one.
    verbose : bool, default False
        Show Flower's and Ray's logs.

    Returns
    -------
    FederatedRun

    Examples
    --------
    >>> from medaudit.data import generate_hospitals
    >>> c = generate_hospitals(n_sites=3, patients_per_site=20, image_size=32)
    >>> run = simulate(c, settings=FederatedSettings(rounds=1))  # doctest: +SKIP
    >>> [s.name for s in run.included]  # doctest: +SKIP
    ['site_A', 'site_B', 'site_C']
    """
    settings = settings or FederatedSettings()
    partition = partition or partition_by_site(cohort, column=site_column)
    sites = prepare_sites(cohort, partition, settings=settings, sensitive=sensitive)
    return simulate_sites(
        sites,
        settings=settings,
        initial_state=initial_state,
        model_fn=model_fn,
        faults=faults,
        audit_only=audit_only,
        on_round=on_round,
        on_stage=on_stage,
        cpus=cpus,
        verbose=verbose,
    )


def simulate_sites(
    sites: Mapping[str, SiteData],
    *,
    settings: FederatedSettings,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    model_fn: Callable[[Any], torch.nn.Module] | None = None,
    model_config: Mapping[str, Any] | None = None,
    faults: FaultPlan | None = None,
    audit_only: bool = False,
    arms: Sequence[Arm] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    cpus: int | None = None,
    verbose: bool = False,
) -> FederatedRun:
    """:func:`simulate` on sites already split (:func:`prepare_sites`).

    ``model_config`` fixes the architecture, input size and normalisation (a
    checkpoint's); by default the server agrees them from the sites' descriptions.
    ``arms`` are several training runs sharing the sites and one Ray start-up
    (:class:`~medaudit.federated.Arm`).
    """
    require_flower()
    for name in {*settings.strategies, *(a.strategy for a in arms)}:
        get_strategy(name)  # an unknown name fails here, not after Ray has started
    if not audit_only:
        n_sites = len(sites) - len(check_sites(sites, settings))
        for name in {*settings.strategies, *(a.strategy for a in arms)}:
            build_strategy(name, settings, n_sites)  # e.g. a trim of no site, before Ray
    from flwr.simulation import run_simulation

    with _flower_environment(verbose):
        return _run(
            run_simulation,
            sites,
            settings,
            {
                "initial_state": initial_state,
                "model_fn": model_fn,
                "model_config": model_config,
                "audit_only": audit_only,
                "arms": tuple(arms),
                "on_round": on_round,
                "on_stage": on_stage,
            },
            faults,
            model_fn,
            cpus,
        )


def _run(
    run_simulation: Callable[..., None],
    sites: Mapping[str, SiteData],
    settings: FederatedSettings,
    server_options: dict[str, Any],
    faults: FaultPlan | None,
    model_fn: Callable[[Any], torch.nn.Module] | None,
    cpus: int | None,
) -> FederatedRun:
    root = Path(tempfile.mkdtemp(prefix="medaudit-fl-"))
    try:
        shards = [
            _write_shard(root, i, site, settings.image_size)
            for i, site in enumerate(sites.values())
        ]

        def load_site(context: Any) -> SiteData:
            return load_shard(shards[int(context.node_config["partition-id"])])

        out: dict[str, Any] = {}
        server = make_server_app(
            settings,
            expected_sites=len(shards),
            on_result=lambda run: out.__setitem__("run", run),
            on_error=lambda exc: out.__setitem__("error", exc),
            torch_threads=1,
            **server_options,
        )
        client = make_client_app(load_site, model_fn=model_fn, faults=faults)
        n_cpus = max(1, min(cpus or os.cpu_count() or 1, len(shards)))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # Ray leaves files (/dev/null) and helper processes to the garbage collector;
            # collect them here, where their ResourceWarnings are expected and harmless.
            warnings.simplefilter("ignore", ResourceWarning)
            run_simulation(
                server_app=server,
                client_app=client,
                num_supernodes=len(shards),
                backend_config={
                    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                    "init_args": {
                        "num_cpus": n_cpus,
                        "num_gpus": 0,
                        "logging_level": "ERROR",
                        "log_to_driver": False,
                        "include_dashboard": False,
                    },
                },
            )
            gc.collect()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "error" in out:
        raise out["error"]
    if "run" not in out:
        raise FederatedRunError("The federated simulation ended without a result; see its log.")
    run: FederatedRun = out["run"]
    return _with_wall_time(run, wall)


def _with_wall_time(run: FederatedRun, wall: float) -> FederatedRun:
    from dataclasses import replace

    return replace(run, timings={**run.timings, "simulation_wall_s": round(wall, 3)})
