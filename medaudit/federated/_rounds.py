"""What a federated run records: the sites, every round of every strategy, the outcome.

:class:`RoundRecorder` wraps any Flower strategy. Flower's strategies aggregate whatever
replies arrive and only log failures; the recorder notes, for every round, which sites
replied, which failed (with their error) and which timed out, refuses to aggregate below
``min_sites``, and keeps each site's training loss and evaluation AUROC, so that the
report can name who dropped and when.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medaudit._errors import InvalidInputError
from medaudit.federated._accounting import FederatedPrivacy, SampleLevelPrivacy
from medaudit.federated._settings import FederatedSettings
from medaudit.federated._stats import ClusterMoments, SufficientStatistics

__all__ = [
    "FederatedRun",
    "FederatedRunError",
    "RoundRecord",
    "RoundRecorder",
    "SiteInfo",
    "StrategyRun",
    "short_reason",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: ``package.module.SomeError: message`` on a line of its own (a traceback's last line).
_EXC_LINE = re.compile(r"^\s*(?:\w+\.)*([A-Z]\w*): (\S.*?)'?>?\s*$", re.M)
_MAX_REASON = 300


def short_reason(reason: str) -> str:
    r"""``Name: message`` of the exception a site's client app raised, from Flower's error.

    Flower wraps a client's exception differently in a deployment (``<class ...>:<'...'>``)
    and on Ray (the actor's whole traceback); the report wants the root cause in one line.

    Examples
    --------
    >>> short_reason("<class 'x.InjectedFault'>:<'site crashed'>")
    'InjectedFault: site crashed'
    >>> short_reason("Traceback ...\nmedaudit.x.InjectedFault: site 'B' crashed\nmore")
    "InjectedFault: site 'B' crashed"
    """
    text = _ANSI.sub("", str(reason)).replace("\\n", "\n")
    m = re.fullmatch(r"<class '(?:[\w.]+\.)?([A-Za-z]\w*)'>:<'(.*)'>", text.strip(), re.S)
    if m and "\n" not in m.group(2):
        return f"{m.group(1)}: {m.group(2)}"[:_MAX_REASON]
    hit = _EXC_LINE.search(text)
    if hit:
        return f"{hit.group(1)}: {hit.group(2)}"[:_MAX_REASON]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else text)[:_MAX_REASON]


class FederatedRunError(InvalidInputError):
    """A federated run that cannot go on (too few sites, a bad site with ``stop``)."""


@dataclass(frozen=True)
class SiteInfo:
    """What a site said about its data, and whether it takes part."""

    node_id: int
    name: str
    counts: Mapping[str, Any]
    included: bool = True
    reason: str = ""


@dataclass
class RoundRecord:
    """One round of one strategy: who took part and how it went.

    Attributes
    ----------
    strategy : str
        Name of the arm (the strategy, or e.g. ``"fedavg_pretrained"``).
    round : int
    sent : tuple of str
        Sites asked to train.
    replied : tuple of str
        Sites whose training reply arrived without error.
    failed : dict of str to str
        Site → error reported by its client app.
    timed_out : tuple of str
        Sites with no reply within the round timeout.
    aggregated : bool
        Whether the global model changed this round.
    note : str
        Why it was not aggregated, when it was not.
    train_loss : dict of str to float
    eval_auroc : dict of str to float
        Each site's AUROC of the global model after this round (its test split).
    eval_dropped : tuple of str
        Sites that did not return their evaluation.
    effective_noise : float or None
        σ of this round's DP release (client-level DP only).
    dp_steps : dict of str to (float, int)
        Site → (sample rate, DP-SGD steps) of its local training (sample-level DP only).
    seconds : float
    """

    strategy: str
    round: int
    sent: tuple[str, ...] = ()
    replied: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    timed_out: tuple[str, ...] = ()
    aggregated: bool = False
    note: str = ""
    train_loss: dict[str, float] = field(default_factory=dict)
    eval_auroc: dict[str, float] = field(default_factory=dict)
    eval_dropped: tuple[str, ...] = ()
    effective_noise: float | None = None
    dp_steps: dict[str, tuple[float, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def dropped(self) -> tuple[str, ...]:
        """Sites that failed or timed out in training this round."""
        return tuple(sorted({*self.failed, *self.timed_out}))


@dataclass(frozen=True)
class StrategyRun:
    """The outcome of one arm (a strategy from given weights): weights, rounds, reports, audit.

    ``name`` is the arm's name, ``strategy`` the registered strategy it ran.

    ``stats`` and ``moments`` are summed over the sites; ``site_stats`` keeps each
    site's own statistics (what it sent).
    """

    name: str
    strategy: str
    state: dict[str, torch.Tensor]
    rounds: tuple[RoundRecord, ...]
    site_reports: Mapping[str, Mapping[str, float]]
    report_failures: Mapping[str, str]
    stats: SufficientStatistics | None
    moments: ClusterMoments | None
    audit_failures: Mapping[str, str]
    privacy: FederatedPrivacy | None = None
    seconds: float = 0.0
    site_stats: Mapping[str, SufficientStatistics] = field(default_factory=dict)
    sample_privacy: SampleLevelPrivacy | None = None

    def privacy_record(self) -> dict[str, Any] | None:
        """The checkpoint's and report's ``privacy`` record (None without DP).

        Client-level DP's record, with sample-level DP's under ``sample_level`` when both
        were used; sample-level DP's alone otherwise.
        """
        client = None if self.privacy is None else self.privacy.to_dict()
        sample = None if self.sample_privacy is None else self.sample_privacy.to_dict()
        if client is not None and sample is not None:
            return {**client, "sample_level": sample}
        return client if client is not None else sample


@dataclass(frozen=True)
class FederatedRun:
    """Everything the server learned in a run (what the report is built from).

    Attributes
    ----------
    sites : tuple of SiteInfo
    strategies : tuple of StrategyRun
        In the order of ``settings.strategies`` (empty for an audit-only run).
    audit : StrategyRun or None
        The audit-only run's statistics (``--audit-only``).
    model_config : dict
        ``arch``, ``in-channels``, ``num-classes``, ``image-size``, ``mean``, ``std``.
    initial_state : dict of str to Tensor
    settings : FederatedSettings
    timings : dict of str to float
        ``connect_s`` (until every site had described its data; for the simulation
        this is dominated by starting Ray), ``total_s``, ``rounds_s``.
    """

    sites: tuple[SiteInfo, ...]
    strategies: tuple[StrategyRun, ...]
    model_config: Mapping[str, Any]
    initial_state: Mapping[str, torch.Tensor]
    settings: FederatedSettings
    timings: Mapping[str, float]
    audit: StrategyRun | None = None

    @property
    def included(self) -> list[SiteInfo]:
        """The sites that took part."""
        return [s for s in self.sites if s.included]


class RoundRecorder:
    """Wraps any Flower strategy: records every round and enforces ``min_sites``.

    Parameters
    ----------
    inner : flwr.serverapp.strategy.Strategy
    name : str
    sites : mapping of int to str
        Node id → site name.
    min_sites : int
        Fewest successful training replies to aggregate a round.
    noise_multiplier : float, optional
        σ of client-level DP (for the effective σ of each release).
    on_round : callable, optional
        Called with each finished :class:`RoundRecord`.
    """

    def __init__(
        self,
        inner: Any,
        name: str,
        sites: Mapping[int, str],
        min_sites: int,
        *,
        noise_multiplier: float | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.sites = dict(sites)
        self.min_sites = min_sites
        self.noise_multiplier = noise_multiplier
        self.on_round = on_round
        self.rounds: list[RoundRecord] = []
        self.arrays: Any = None
        self._current: RoundRecord | None = None
        self._t0 = 0.0

    def _site(self, node_id: int) -> str:
        return self.sites.get(node_id, f"node {node_id}")

    # -- the Strategy interface (duck-typed: Flower's start() calls these) ----------------
    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        msgs = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._t0 = time.perf_counter()
        self._current = RoundRecord(
            self.name,
            server_round,
            sent=tuple(sorted(self._site(m.metadata.dst_node_id) for m in msgs)),
        )
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> Any:
        rec = self._current or RoundRecord(self.name, server_round)
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        rec.failed = {
            self._site(r.metadata.src_node_id): short_reason(str(r.error.reason))
            for r in replies
            if r.has_error()
        }
        got = {self._site(r.metadata.src_node_id) for r in replies}
        rec.timed_out = tuple(s for s in rec.sent if s not in got)
        rec.replied = tuple(sorted(self._site(r.metadata.src_node_id) for r in ok))
        for r in ok:
            m = next(iter(r.content.metric_records.values()))
            site = self._site(r.metadata.src_node_id)
            rec.train_loss[site] = float(m.get("train-loss", np.nan))
            if "dp-steps" in m:
                rec.dp_steps[site] = (float(m["dp-sample-rate"]), int(m["dp-steps"]))
        if len(ok) < self.min_sites:
            self.inner.aggregate_train(server_round, [])  # lets a DP wrapper close its round
            rec.note = (
                f"not aggregated: {len(ok)} of {len(rec.sent)} sites replied "
                f"(minimum {self.min_sites})"
            )
            return None, None
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        rec.aggregated = arrays is not None
        if arrays is None:
            rec.note = "not aggregated by the strategy (a DP wrapper skips a round with a failure)"
        elif self.noise_multiplier is not None:
            rec.effective_noise = self.noise_multiplier * len(ok) / max(len(self.sites), 1)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        rec = self._current or RoundRecord(self.name, server_round)
        replies = list(replies)
        got = set()
        for r in replies:
            site = self._site(r.metadata.src_node_id)
            if r.has_error():
                continue
            got.add(site)
            m = next(iter(r.content.metric_records.values()))
            rec.eval_auroc[site] = float(m.get("auroc", np.nan))
        rec.eval_dropped = tuple(s for s in sorted(self.sites.values()) if s not in got)
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()

    def end_of_round(self, server_round: int, arrays: Any) -> None:
        """Close a round (Flower calls this as its server-side ``evaluate_fn``)."""
        self.arrays = arrays
        if server_round == 0 or self._current is None:
            return None
        rec = self._current
        rec.seconds = time.perf_counter() - self._t0
        self.rounds.append(rec)
        self._current = None
        if self.on_round is not None:
            self.on_round(rec)
        return None
