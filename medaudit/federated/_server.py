"""The server's side of a federation: a Flower ``ServerApp`` that trains, audits and reports.

:func:`make_server_app` returns a ``ServerApp`` whose main

1. waits for the sites, asks each to describe its data (``query.describe``), leaves out
   (or stops on) sites that cannot take part, and agrees one normalisation;
2. runs each requested strategy with Flower's ``strategy.start`` from the same initial
   weights, wrapped in a :class:`~medaudit.federated._rounds.RoundRecorder` (who
   replied, failed or timed out in every round; no aggregation below ``min_sites``),
   and accounts the privacy of client-level DP releases;
3. asks every site for its report on the final model (and a local-only baseline) and for
   the federated audit's sufficient statistics, in two passes;
4. hands a :class:`FederatedRun` to ``on_result``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.federated._accounting import FederatedPrivacy, SampleLevelPrivacy
from medaudit.federated._records import (
    arrays_to_state,
    moments_from_records,
    state_to_arrays,
    stats_from_records,
    stats_to_records,
)
from medaudit.federated._rounds import (
    FederatedRun,
    FederatedRunError,
    RoundRecord,
    RoundRecorder,
    SiteInfo,
    StrategyRun,
)
from medaudit.federated._settings import FederatedSettings
from medaudit.federated._stats import (
    ClusterMoments,
    SufficientStatistics,
    aggregate_moments,
    aggregate_statistics,
)
from medaudit.federated._strategies import build_strategy, get_strategy

__all__ = ["Arm", "ServerPlan", "make_server_app", "run_server"]

MSG_TOO_FEW_CONNECTED = (
    "Only {n} of {expected} sites connected within {timeout:g} s; check that every "
    "SuperNode runs and reaches the SuperLink."
)
MSG_BAD_SITES_STOP = (
    "Stopping as asked (--on-bad-site stop): {sites}. Fix those sites' data, or use "
    "--on-bad-site skip to train without them."
)
MSG_TOO_FEW_SITES = (
    "Only {n} usable site(s) remain ({names}); a federation needs at least {need} "
    "(--min-sites). Left out: {bad}."
)
MSG_DUPLICATE_SITES = "Two or more sites share a name: {names}. Give every site its own name."
MSG_CHANNELS = "Sites have images with different channel counts: {detail}."


class _SiteGrid:
    """A view of a Flower ``Grid`` in which only the admitted sites' nodes exist."""

    def __init__(self, grid: Any, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = set(node_ids)

    def get_node_ids(self) -> list[int]:
        return [i for i in self._grid.get_node_ids() if i in self._ids]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _model_config(sites: list[SiteInfo], settings: FederatedSettings) -> dict[str, Any]:
    """One architecture, input size and normalisation every site uses."""
    channels = {s.name: int(s.counts["channels"]) for s in sites}
    if len(set(channels.values())) > 1 and not set(channels.values()) <= {1, 3}:
        raise FederatedRunError(MSG_CHANNELS.format(detail=channels))
    c = max(channels.values())
    w = np.array([float(s.counts["pixels"]) for s in sites])
    means = np.array([_per_channel(s.counts["mean"], c) for s in sites])
    stds = np.array([_per_channel(s.counts["std"], c) for s in sites])
    mean = (w[:, None] * means).sum(0) / w.sum()
    # Pooled variance: within-site variance plus the spread of the site means.
    var = (w[:, None] * (stds**2 + (means - mean) ** 2)).sum(0) / w.sum()
    size = settings.image_size or int(sites[0].counts["height"])
    return {
        "arch": settings.arch,
        "in-channels": c,
        "num-classes": max(2, max(int(s.counts["num-classes"]) for s in sites)),
        "image-size": size,
        "mean": [float(v) for v in mean],
        "std": [float(max(v, 1e-12) ** 0.5) if v > 0 else 1.0 for v in var],
    }


def _per_channel(values: Any, c: int) -> list[float]:
    vals = [float(v) for v in values]
    return vals * c if len(vals) == 1 and c > 1 else vals


def _bad_reason(counts: Mapping[str, Any]) -> str:
    if int(counts["n-train"]) == 0:
        return "no training images"
    if int(counts["n-positive"]) == 0:
        return "no positive images"
    if int(counts["n-negative"]) == 0:
        return "no negative images"
    return ""


@dataclass(frozen=True)
class Arm:
    """One training run inside a federated run: a strategy and the weights it starts from.

    Several arms share the sites and the start-up (one Ray session in a simulation), so
    that e.g. FedAvg from a random and from a pretrained initialisation, or FedAvg and
    FedMedian under the same attack, are compared on exactly the same data.

    Parameters
    ----------
    name : str
        Names the arm in the report (``"fedavg"``, ``"fedavg_pretrained"``).
    strategy : str
        A registered strategy (:func:`~medaudit.federated.list_strategies`).
    initial_state : mapping of str to Tensor, optional
        Starting weights (default: the run's initial weights).
    """

    name: str
    strategy: str
    initial_state: Mapping[str, torch.Tensor] | None = None


@dataclass
class ServerPlan:
    """What the server app does: the settings plus the inputs a run needs."""

    settings: FederatedSettings
    expected_sites: int
    initial_state: Mapping[str, torch.Tensor] | None = None
    model_fn: Callable[[Mapping[str, Any]], torch.nn.Module] | None = None
    audit_only: bool = False
    torch_threads: int = 0
    model_config: Mapping[str, Any] | None = None
    arms: tuple[Arm, ...] = ()

    def __post_init__(self) -> None:
        if not self.arms:
            self.arms = tuple(Arm(n, n) for n in self.settings.strategies)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise FederatedRunError(f"Arm names must differ; got {names}.")
        for a in self.arms:
            get_strategy(a.strategy)


def make_server_app(
    settings: FederatedSettings,
    *,
    expected_sites: int,
    on_result: Callable[[FederatedRun], None],
    initial_state: Mapping[str, torch.Tensor] | None = None,
    model_fn: Callable[[Mapping[str, Any]], torch.nn.Module] | None = None,
    audit_only: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    torch_threads: int = 0,
    model_config: Mapping[str, Any] | None = None,
    arms: Sequence[Arm] = (),
) -> Any:
    """A Flower ``ServerApp`` running a federated training and audit (see module notes).

    Parameters
    ----------
    settings : FederatedSettings
    expected_sites : int
        Sites to wait for (SuperNodes in a deployment, virtual nodes in a simulation).
    on_result : callable
        Called with the :class:`FederatedRun` at the end.
    initial_state : mapping of str to Tensor, optional
        Initial weights (e.g. a pretrained checkpoint: the "pretrained init"); default
        a fresh model seeded with ``settings.seed``. With ``audit_only`` the model audited.
    model_fn : callable, optional
        ``model_fn(config) -> torch.nn.Module`` (default: the zoo architecture
        ``settings.arch``); must match the sites' ``model_fn``.
    audit_only : bool, default False
        Skip training: run the federated audit of ``initial_state`` only.
    on_round, on_stage : callable, optional
        Progress hooks: each finished round, and each stage's description.
    on_error : callable, optional
        Called with the exception that ended the run (default: raise it in the app).
    torch_threads : int, default 0
        Threads each site's torch may use (0: its default).
    model_config : mapping, optional
        ``arch``, ``in-channels``, ``num-classes``, ``image-size``, ``mean``, ``std`` of a
        given model (a checkpoint's); default: agreed from the sites' descriptions.
    arms : sequence of Arm, optional
        The training runs to make (default: one per strategy of ``settings``, all from
        the initial weights).

    Returns
    -------
    flwr.serverapp.ServerApp
    """
    from flwr.serverapp import ServerApp

    plan = ServerPlan(
        settings,
        expected_sites,
        initial_state,
        model_fn,
        audit_only,
        torch_threads,
        model_config,
        tuple(arms),
    )
    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        try:
            result = run_server(grid, plan, on_round=on_round, on_stage=on_stage)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)
            return
        on_result(result)

    return app


def run_server(
    grid: Any,
    plan: ServerPlan,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> FederatedRun:
    """The server app's main on a Flower ``Grid`` (for a ``ServerApp`` of one's own)."""
    return _Run(plan, grid, on_round, on_stage).execute()


def _sample_dp_config(s: FederatedSettings) -> dict[str, Any]:
    """The sites' DP-SGD settings (``sample-dp-noise`` 0: no sample-level DP)."""
    dp = s.sample_dp
    if dp is None:
        return {"sample-dp-noise": 0.0}
    return {
        "sample-dp-noise": dp.noise_multiplier,
        "sample-dp-clip": dp.max_grad_norm,
        "sample-dp-delta": dp.delta,
        "sample-dp-accountant": dp.accountant,
    }


class _Run:
    """One execution of the server app's main, split into short steps."""

    def __init__(
        self,
        plan: ServerPlan,
        grid: Any,
        on_round: Callable[[RoundRecord], None] | None,
        on_stage: Callable[[str], None] | None,
    ) -> None:
        self.plan = plan
        self.s = plan.settings
        self.grid = grid
        self.on_round = on_round
        self.stage = on_stage or (lambda text: None)
        self.t0 = time.perf_counter()

    # -- messaging ----------------------------------------------------------------------
    def _ask(
        self,
        node_ids: Iterable[int],
        message_type: str,
        records: Mapping[str, Any],
        timeout: float | None = None,
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """Send one message per node and collect the replies (errors and silence apart).

        ``timeout`` defaults to the round timeout; the final reports, during which each
        site may also train its local-only model, get at least 10 minutes.
        """
        from flwr.app import Message, RecordDict

        ids = list(node_ids)
        msgs = [
            Message(RecordDict(dict(records)), dst_node_id=i, message_type=message_type)
            for i in ids
        ]
        timeout = self.s.round_timeout if timeout is None else timeout
        replies = self.grid.send_and_receive(msgs, timeout=timeout)
        ok, failed = {}, {}
        for r in replies:
            if r.has_error():
                failed[r.metadata.src_node_id] = str(r.error.reason)
            else:
                ok[r.metadata.src_node_id] = r.content
        for i in ids:
            if i not in ok and i not in failed:
                failed[i] = f"no reply within {timeout:g} s"
        return ok, failed

    def _config(self, model_config: Mapping[str, Any], **extra: Any) -> Any:
        from flwr.app import ConfigRecord

        s = self.s
        return ConfigRecord(
            {
                **dict(model_config),
                "seed": s.seed,
                "batch-size": s.batch_size,
                "lr": s.lr,
                "local-epochs": s.local_epochs,
                "torch-threads": self.plan.torch_threads,
                "uniform-weights": s.client_dp is not None,
                **_sample_dp_config(s),
                **extra,
            }
        )

    @property
    def _report_timeout(self) -> float:
        return max(self.s.round_timeout, 600.0)

    # -- steps --------------------------------------------------------------------------
    def _wait_for_sites(self) -> list[int]:
        deadline = time.monotonic() + self.s.connect_timeout
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= self.plan.expected_sites:
                return ids
            if time.monotonic() > deadline:
                raise FederatedRunError(
                    MSG_TOO_FEW_CONNECTED.format(
                        n=len(ids),
                        expected=self.plan.expected_sites,
                        timeout=self.s.connect_timeout,
                    )
                )
            time.sleep(0.5)

    def _describe(self) -> list[SiteInfo]:
        self.stage("Waiting for the sites to describe their data")
        ids = self._wait_for_sites()
        ok, failed = self._ask(ids, "query.describe", {}, self.s.connect_timeout)
        if failed:
            raise FederatedRunError(
                "Site(s) could not describe their data: "
                + "; ".join(f"node {i}: {why}" for i, why in failed.items())
            )
        sites = []
        for node_id, content in ok.items():
            counts = dict(content["site"])
            reason = _bad_reason(counts) if not self.plan.audit_only else ""
            sites.append(SiteInfo(node_id, str(counts["name"]), counts, not reason, reason))
        sites.sort(key=lambda s: s.name)
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise FederatedRunError(MSG_DUPLICATE_SITES.format(names=", ".join(names)))
        return self._admit(sites)

    def _admit(self, sites: list[SiteInfo]) -> list[SiteInfo]:
        bad = [s for s in sites if not s.included]
        bad_text = "; ".join(f"site {s.name!r} has {s.reason}" for s in bad) or "none"
        if bad and self.s.on_bad_site == "stop":
            raise FederatedRunError(MSG_BAD_SITES_STOP.format(sites=bad_text))
        good = [s for s in sites if s.included]
        need = 1 if self.plan.audit_only else max(2, min(self.s.min_sites, len(sites)))
        if len(good) < need:
            raise FederatedRunError(
                MSG_TOO_FEW_SITES.format(
                    n=len(good),
                    names=", ".join(s.name for s in good) or "none",
                    need=need,
                    bad=bad_text,
                )
            )
        return sites

    def _initial_state(self, model_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.plan.initial_state is not None:
            return {k: v.detach().clone() for k, v in self.plan.initial_state.items()}
        if self.plan.model_fn is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.s.seed)
                model = self.plan.model_fn(model_config)
        else:
            from medaudit.models import build_model

            model = build_model(
                str(model_config["arch"]),
                in_channels=int(model_config["in-channels"]),
                num_classes=int(model_config["num-classes"]),
                random_state=self.s.seed,
            )
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def execute(self) -> FederatedRun:
        sites = self._describe()
        t_connect = time.perf_counter() - self.t0
        included = [s for s in sites if s.included]
        model_config = dict(self.plan.model_config or _model_config(included, self.s))
        initial = self._initial_state(model_config)
        grid = _SiteGrid(self.grid, [s.node_id for s in included])
        runs: list[StrategyRun] = []
        audit = None
        if self.plan.audit_only:
            audit = self._finish(
                Arm("audit", "fedavg"), initial, (), included, model_config, initial, None
            )
        else:
            for arm in self.plan.arms:
                start = initial if arm.initial_state is None else dict(arm.initial_state)
                runs.append(self._strategy(arm, grid, included, model_config, start, runs))
        return FederatedRun(
            sites=tuple(sites),
            strategies=tuple(runs),
            model_config=model_config,
            initial_state=initial,
            settings=self.s,
            timings={
                "connect_s": round(t_connect, 3),
                "total_s": round(time.perf_counter() - self.t0, 3),
                "rounds_s": round(sum(r.seconds for sr in runs for r in sr.rounds), 3),
            },
            audit=audit,
        )

    def _strategy(
        self,
        arm: Arm,
        grid: Any,
        sites: list[SiteInfo],
        model_config: Mapping[str, Any],
        initial: Mapping[str, torch.Tensor],
        earlier: list[StrategyRun],
    ) -> StrategyRun:
        name = arm.name
        self.stage(f"Training: {name}")
        t0 = time.perf_counter()
        dp = self.s.client_dp
        rec = RoundRecorder(
            build_strategy(arm.strategy, self.s, len(sites)),
            name,
            {s.node_id: s.name for s in sites},
            self.s.min_sites,
            noise_multiplier=None if dp is None else dp.noise_multiplier,
            on_round=self.on_round,
        )
        config = self._config(model_config, arm=name)
        start_arrays = state_to_arrays(initial)
        from flwr.serverapp.strategy import Strategy

        # Flower's start() drives any object with the Strategy methods; the recorder
        # forwards each to the real strategy after noting who replied.
        Strategy.start(
            rec,  # type: ignore[arg-type]
            grid,
            start_arrays,
            num_rounds=self.s.rounds,
            timeout=self.s.round_timeout,
            train_config=config,
            evaluate_config=self._config(model_config, arm=name),
            evaluate_fn=rec.end_of_round,
        )
        final = {**initial, **arrays_to_state(rec.arrays or start_arrays)}
        privacy = None
        if dp is not None:
            noise = [r.effective_noise for r in rec.rounds if r.effective_noise is not None]
            privacy = FederatedPrivacy.compute(
                noise,
                noise_multiplier=dp.noise_multiplier,
                clipping_norm=dp.clipping_norm,
                delta=dp.delta,
                accountant=dp.accountant,
                clipping=dp.clipping,
            )
        out = self._finish(
            arm,
            final,
            tuple(rec.rounds),
            sites,
            model_config,
            initial,
            privacy,
            train_local=self.s.local_baseline and not earlier,
            t0=t0,
        )
        sdp = self.s.sample_dp
        if sdp is None:
            return out
        steps: dict[str, list[tuple[float, int]]] = {s.name: [] for s in sites}
        for r in rec.rounds:
            for site, qk in r.dp_steps.items():
                steps.setdefault(site, []).append(qk)
        sample = SampleLevelPrivacy.compute(
            steps,
            noise_multiplier=sdp.noise_multiplier,
            max_grad_norm=sdp.max_grad_norm,
            delta=sdp.delta,
            accountant=sdp.accountant,
        )
        return dataclasses.replace(out, sample_privacy=sample)

    def _finish(
        self,
        arm: Arm,
        state: Mapping[str, torch.Tensor],
        rounds: tuple[RoundRecord, ...],
        sites: list[SiteInfo],
        model_config: Mapping[str, Any],
        initial: Mapping[str, torch.Tensor],
        privacy: FederatedPrivacy | None,
        *,
        train_local: bool = False,
        t0: float | None = None,
    ) -> StrategyRun:
        """The sites' reports on the final model, then the audit's second pass."""
        t0 = time.perf_counter() if t0 is None else t0
        ids = {s.node_id: s.name for s in sites}
        self.stage(f"Site reports and federated audit ({arm.name})")
        s = self.s
        config = self._config(
            model_config,
            arm=arm.name,
            **{
                "train-local": train_local,
                "local-only-epochs": s.rounds * s.local_epochs,
                "n-bootstrap": s.n_bootstrap,
                "threshold": s.threshold,
                "n-bins": s.n_bins,
                "noise-epsilon": -1.0 if s.audit_noise is None else s.audit_noise,
                "audit-split": "all" if self.plan.audit_only else "test",
            },
        )
        arrays = state_to_arrays(state)
        records = {"arrays": arrays, "initial": state_to_arrays(initial), "config": config}
        ok, failed = self._ask(ids, "query.site_report", records, self._report_timeout)
        failures = {ids[i]: why for i, why in failed.items()}
        site_stats = {
            ids[i]: stats_from_records(c["stats"], c["stats-config"]) for i, c in ok.items()
        }
        pooled = aggregate_statistics(list(site_stats.values())) if ok else None
        moments = None
        if pooled is not None and s.audit_noise is None:  # moments would leak what noise hides
            moments, more = self._moments(list(ok), ids, arrays, config, pooled)
            failures.update(more)
        return StrategyRun(
            name=arm.name,
            strategy=arm.strategy,
            state=dict(state),
            rounds=rounds,
            site_reports={ids[i]: dict(c["metrics"]) for i, c in ok.items()},
            report_failures=failures,
            stats=pooled,
            moments=moments,
            audit_failures=failures,
            privacy=privacy,
            seconds=round(time.perf_counter() - t0, 3),
            site_stats=site_stats,
        )

    def _moments(
        self,
        node_ids: list[int],
        ids: Mapping[int, str],
        arrays: Any,
        config: Any,
        pooled: SufficientStatistics,
    ) -> tuple[ClusterMoments | None, dict[str, str]]:
        """The second pass: each site's per-patient sums, relative to the pooled histograms."""
        p_arrays, p_config = stats_to_records(pooled)
        ok, failed = self._ask(
            node_ids,
            "query.audit_moments",
            {"arrays": arrays, "config": config, "pooled": p_arrays, "pooled-config": p_config},
            self._report_timeout,
        )
        failures = {ids[i]: why for i, why in failed.items()}
        if failed:  # clustered moments must cover the same sites as the counts
            return None, failures
        moments = aggregate_moments(
            [moments_from_records(c["moments"], c["moments-config"]) for c in ok.values()]
        )
        return moments, failures


def describe_json(run: FederatedRun) -> str:
    """A compact JSON summary of a run (for logs of a deployment)."""
    return json.dumps(
        {
            "sites": [s.name for s in run.included],
            "left_out": {s.name: s.reason for s in run.sites if not s.included},
            "strategies": [r.name for r in run.strategies],
            "timings": dict(run.timings),
        }
    )
