"""Settings of a federated run: one frozen dataclass, validated once, sent as Flower config.

The same settings drive the simulation (``medaudit federate``) and a real deployment
(the shipped Flower app reads them from its run config), so a run is described by one
object wherever it executes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "BAD_SITE_POLICIES",
    "MSG_DP_NEEDS_FEDAVG",
    "MSG_SAMPLE_DP_ARCH",
    "MSG_SAMPLE_DP_FEDPROX",
    "ClientDP",
    "FederatedSettings",
    "SampleDP",
]

#: What to do with a site that cannot take part (no positives or no negatives, no data).
BAD_SITE_POLICIES: tuple[str, ...] = ("skip", "stop")
MSG_DP_NEEDS_FEDAVG = (
    "Client-level DP needs plain averaging: Flower's DP wrappers bound a site's influence "
    "on the unweighted mean only. Use --strategy fedavg with --client-dp-noise (got {name!r})."
)
MSG_SAMPLE_DP_FEDPROX = (
    "Sample-level DP cannot train with FedProx: DP-SGD clips and noises per-image "
    "gradients, and the proximal term is not one. Use another strategy with --sample-dp-noise."
)
MSG_SAMPLE_DP_ARCH = (
    "Sample-level DP (DP-SGD) cannot train architecture {arch!r}: {layers}. "
    "Use --arch small_cnn_gn (GroupNorm instead of BatchNorm)."
)
_FUNC = "FederatedSettings"


@dataclass(frozen=True)
class ClientDP:
    """Client-level differential privacy through Flower's DP strategy wrappers.

    Each round every site's model update is clipped to L2 norm ``clipping_norm`` and
    Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / n_sites``
    is added to their unweighted average (McMahan et al. 2018), which protects the
    participation of any one site. medaudit accounts ε over the rounds that released an
    aggregate (Flower's wrappers report none by default).

    Parameters
    ----------
    noise_multiplier : float > 0
    clipping_norm : float > 0
    delta : float in (0, 1), default 1e-5
    clipping : {"server", "client"}, default "server"
        Where updates are clipped: on the server (it sees raw updates; Flower's
        ``DifferentialPrivacyServerSideFixedClipping``) or at each site before sending
        (``DifferentialPrivacyClientSideFixedClipping`` with ``fixedclipping_mod``).
    accountant : {"rdp", "pld"}, default "rdp"
        dp-accounting's Rényi or privacy-loss-distribution accountant.

    References
    ----------
    .. [1] McMahan HB, Ramage D, Talwar K, Zhang L. Learning differentially private
           recurrent language models. ICLR 2018.
    """

    noise_multiplier: float
    clipping_norm: float
    delta: float = 1e-5
    clipping: str = "server"
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        func = "ClientDP"
        for name in ("noise_multiplier", "clipping_norm"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v <= 0:
                raise param_error(name, func, "a finite float > 0", v)
        if not _is_number(self.delta) or not 0 < self.delta < 1:
            raise param_error("delta", func, "a float in (0, 1)", self.delta)
        if self.clipping not in ("server", "client"):
            raise param_error("clipping", func, "'server' or 'client'", self.clipping)
        if self.accountant not in ("rdp", "pld"):
            raise param_error("accountant", func, "'rdp' or 'pld'", self.accountant)


@dataclass(frozen=True)
class SampleDP:
    """Sample-level differential privacy: DP-SGD in every site's local training.

    Each round every site trains through :func:`medaudit.privacy.train_private`
    (Opacus: per-image gradients clipped to ``max_grad_norm``, Gaussian noise of
    ``noise_multiplier * max_grad_norm``, Poisson batches of expected size ``batch_size``),
    which protects any one image of the site. Its rounds compose: medaudit accounts
    each site's ε over all its DP-SGD steps of the run (the same sampled Gaussian
    mechanism), and the run's ε is the largest over the sites.

    Parameters
    ----------
    noise_multiplier : float > 0
    max_grad_norm : float > 0, default 1.0
    delta : float in (0, 1), default 1e-5
    accountant : {"rdp", "prv"}, default "rdp"
        medaudit.privacy's (Opacus's) accountant.

    References
    ----------
    .. [1] Abadi M, et al. Deep learning with differential privacy. CCS 2016.
    """

    noise_multiplier: float
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        func = "SampleDP"
        for name in ("noise_multiplier", "max_grad_norm"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or v <= 0:
                raise param_error(name, func, "a finite float > 0", v)
        if not _is_number(self.delta) or not 0 < self.delta < 1:
            raise param_error("delta", func, "a float in (0, 1)", self.delta)
        if self.accountant not in ("rdp", "prv"):
            raise param_error("accountant", func, "'rdp' or 'prv'", self.accountant)


@dataclass(frozen=True)
class FederatedSettings:
    """How a federated run trains, aggregates, tolerates faults and audits.

    Parameters
    ----------
    rounds : int >= 1, default 5
        Federated rounds (each: local training at every site, aggregation, evaluation).
    strategies : tuple of str, default ("fedavg",)
        Aggregation strategies (:func:`~medaudit.federated.list_strategies`). Several
        run one after another from the same initial weights and are compared in the
        report; the first one's model is the result.
    local_epochs : int >= 1, default 1
        Passes over its training data a site makes per round.
    batch_size : int >= 1, default 32
    lr : float > 0, default 1e-3
        AdamW learning rate at the sites.
    arch : str, default "small_cnn"
        Zoo architecture (ignored when the apps are given a model builder).
    image_size : int, optional
        Train at this size (default: the first site's image size).
    proximal_mu : float >= 0, default 0.01
        FedProx's proximal weight μ (used by ``fedprox`` only).
    trimmed_beta : float in [0, 0.5), default 0.25
        Fraction trimmed at each end by ``fedtrimmedavg`` (0.25 trims one of four sites).
    krum_malicious : int >= 0, default 1
        Sites ``krum`` and ``multikrum`` assume may be malicious (Krum's ``f``).
    krum_select : int >= 0, default 0
        Updates ``multikrum`` averages; 0: all but ``krum_malicious`` (``krum`` keeps one).
    min_sites : int >= 1, default 2
        A round is aggregated only when at least this many sites replied; otherwise the
        global model is kept and the round is reported as not aggregated.
    round_timeout : float > 0, default 600
        Seconds to wait for the sites' replies in a round; a site that has not replied
        by then is reported as dropped for that round.
    connect_timeout : float > 0, default 300
        Seconds to wait for every site to connect before the run starts.
    on_bad_site : {"skip", "stop"}, default "skip"
        A site without positives or negatives (or without training data): leave it out
        and say so in the report, or stop the run with an error naming it.
    test_fraction : float in (0, 1), default 0.2
        Share of each site's patients held out for evaluation when the data has no
        ``split`` column with ``train`` and ``test`` rows for that site.
    local_baseline : bool, default True
        Also train a local-only model at every site (same epochs) for the report's
        local vs federated comparison.
    threshold : float in [0, 1], default 0.5
        Operating threshold of the federated audit (score >= threshold is positive).
    n_bins : int >= 4096, default 65536
        Histogram bins of the federated audit's score histograms (logit scale).
    audit_noise : float > 0, optional
        ε of the Laplace noise each site adds to its audit statistics (a DP release).
    n_bootstrap : int >= 1, default 1000
        Patient bootstrap resamples behind each site's AUROC interval.
    client_dp : ClientDP, optional
        Client-level differential privacy (only with ``fedavg``).
    sample_dp : SampleDP, optional
        Sample-level differential privacy (DP-SGD at every site; not with ``fedprox``,
        and only for models DP-SGD can train, e.g. ``small_cnn_gn``).
    seed : int >= 0, default 0
    """

    rounds: int = 5
    strategies: tuple[str, ...] = ("fedavg",)
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    arch: str = "small_cnn"
    image_size: int | None = None
    proximal_mu: float = 0.01
    trimmed_beta: float = 0.25
    krum_malicious: int = 1
    krum_select: int = 0
    min_sites: int = 2
    round_timeout: float = 600.0
    connect_timeout: float = 300.0
    on_bad_site: str = "skip"
    test_fraction: float = 0.2
    local_baseline: bool = True
    threshold: float = 0.5
    n_bins: int = 65536
    audit_noise: float | None = None
    n_bootstrap: int = 1000
    client_dp: ClientDP | None = None
    sample_dp: SampleDP | None = None
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.strategies, str):
            object.__setattr__(self, "strategies", (self.strategies,))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        self._check_ints()
        self._check_floats()
        if not self.strategies or not all(isinstance(s, str) and s for s in self.strategies):
            raise param_error("strategies", _FUNC, "a non-empty sequence of names", self.strategies)
        if self.on_bad_site not in BAD_SITE_POLICIES:
            raise param_error("on_bad_site", _FUNC, f"one of {BAD_SITE_POLICIES}", self.on_bad_site)
        if self.client_dp is not None and not isinstance(self.client_dp, ClientDP):
            raise param_error("client_dp", _FUNC, "a ClientDP or None", self.client_dp)
        other = [n for n in self.strategies if n != "fedavg"]
        if self.client_dp is not None and other:
            raise InvalidInputError(MSG_DP_NEEDS_FEDAVG.format(name=other[0]))
        if not isinstance(self.local_baseline, bool):
            raise param_error("local_baseline", _FUNC, "a bool", self.local_baseline)
        self._check_sample_dp()

    def _check_sample_dp(self) -> None:
        if self.sample_dp is None:
            return
        if not isinstance(self.sample_dp, SampleDP):
            raise param_error("sample_dp", _FUNC, "a SampleDP or None", self.sample_dp)
        if "fedprox" in self.strategies:
            raise InvalidInputError(MSG_SAMPLE_DP_FEDPROX)
        from medaudit.models import build_model, list_architectures
        from medaudit.privacy import incompatible_layers

        if self.arch in list_architectures():  # a model builder of the user's is checked
            problems = incompatible_layers(build_model(self.arch))  # at its first round
            if problems:
                layers = "; ".join(f"{p.name} ({p.layer})" for p in problems)
                raise InvalidInputError(MSG_SAMPLE_DP_ARCH.format(arch=self.arch, layers=layers))

    def _check_ints(self) -> None:
        for name, lo in (
            ("rounds", 1),
            ("local_epochs", 1),
            ("batch_size", 1),
            ("krum_malicious", 0),
            ("krum_select", 0),
            ("min_sites", 1),
            ("n_bins", 4096),
            ("n_bootstrap", 1),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise param_error(name, _FUNC, f"an int >= {lo}", v)
        if self.image_size is not None and (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or self.image_size < 8
        ):
            raise param_error("image_size", _FUNC, "an int >= 8 or None", self.image_size)

    def _check_floats(self) -> None:
        checks: tuple[tuple[str, str, Any], ...] = (
            ("lr", "a finite float > 0", lambda v: v > 0),
            ("proximal_mu", "a finite float >= 0", lambda v: v >= 0),
            ("trimmed_beta", "a float in [0, 0.5)", lambda v: 0 <= v < 0.5),
            ("round_timeout", "a finite float > 0", lambda v: v > 0),
            ("connect_timeout", "a finite float > 0", lambda v: v > 0),
            ("test_fraction", "a float in (0, 1)", lambda v: 0 < v < 1),
            ("threshold", "a float in [0, 1]", lambda v: 0 <= v <= 1),
        )
        for name, expected, ok in checks:
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or not ok(v):
                raise param_error(name, _FUNC, expected, v)
        a = self.audit_noise
        if a is not None and (not _is_number(a) or not math.isfinite(a) or a <= 0):
            raise param_error("audit_noise", _FUNC, "a finite float > 0 or None", a)

    def replace(self, **changes: Any) -> FederatedSettings:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the report's ``meta.federated.settings``)."""
        d = dataclasses.asdict(self)
        d["strategies"] = list(self.strategies)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FederatedSettings:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        d = dict(d)
        dp = d.pop("client_dp", None)
        sdp = d.pop("sample_dp", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise param_error(unknown[0], "FederatedSettings.from_dict", "a known setting", d)
        if "strategies" in d:
            d["strategies"] = tuple(d["strategies"])
        return cls(
            **d,
            client_dp=ClientDP(**dp) if dp else None,
            sample_dp=SampleDP(**sdp) if sdp else None,
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
