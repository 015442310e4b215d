"""Privacy accounting across federated rounds (Flower's DP wrappers report no ε by default).

Client-level DP releases, each round, the average of the sites' clipped updates plus
Gaussian noise: a Gaussian mechanism with noise multiplier σ on the participation of one
site. Every site takes part in every round, so there is no amplification by sampling;
the rounds compose. A round in which fewer sites replied than the noise was calibrated
for has a smaller effective σ (the noise is σ·C/n but one site now moves the mean by
C/k), and is accounted with it; a round that released nothing (the wrapper skips
aggregation when a site failed) costs nothing.

ε at δ comes from Google's dp-accounting library: its Rényi-DP accountant (Mironov 2017)
or its privacy-loss-distribution accountant (tighter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medaudit._errors import param_error

__all__ = ["FederatedPrivacy", "SampleLevelPrivacy", "client_level_epsilon"]


def client_level_epsilon(
    noise_multipliers: Sequence[float], *, delta: float, accountant: str = "rdp"
) -> float:
    """ε after releases with the given (effective) noise multipliers, at ``delta``.

    Parameters
    ----------
    noise_multipliers : sequence of float > 0
        σ of each release, in order.
    delta : float in (0, 1)
    accountant : {"rdp", "pld"}, default "rdp"

    Returns
    -------
    float
        0.0 for no release.

    References
    ----------
    .. [1] Mironov I. Rényi differential privacy. CSF 2017.
    .. [2] Google differential privacy team. dp-accounting (Python library), 2022.

    Examples
    --------
    >>> round(client_level_epsilon([1.0, 1.0, 1.0], delta=1e-5), 2)
    9.01
    """
    func = "client_level_epsilon"
    sig = [float(s) for s in noise_multipliers]
    if any(not math.isfinite(s) or s <= 0 for s in sig):
        raise param_error("noise_multipliers", func, "finite floats > 0", noise_multipliers)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise param_error("delta", func, "a float in (0, 1)", delta)
    if accountant not in ("rdp", "pld"):
        raise param_error("accountant", func, "'rdp' or 'pld'", accountant)
    if not sig:
        return 0.0
    import dp_accounting
    from dp_accounting import pld, rdp

    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    for s in sig:
        acc.compose(dp_accounting.GaussianDpEvent(s))
    return float(acc.get_epsilon(delta))


@dataclass(frozen=True)
class FederatedPrivacy:
    """The privacy ledger of a federated run with client-level DP.

    Attributes
    ----------
    epsilon, delta : float
        The (ε, δ) guarantee for the participation of any one site.
    noise_multiplier : float
        σ the noise was calibrated with.
    clipping_norm : float
        L2 bound on each site's model update.
    steps : int
        Releases (aggregated rounds) accounted.
    accountant : {"rdp", "pld"}
    effective_noise : tuple of float
        σ of each release (lower than σ in a round where sites dropped).
    epsilon_curve : tuple of (int, float)
        ε after each release.
    clipping : {"server", "client"}
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    clipping_norm: float
    steps: int
    accountant: str
    effective_noise: tuple[float, ...] = ()
    epsilon_curve: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    clipping: str = "server"

    @classmethod
    def compute(
        cls,
        effective_noise: Sequence[float],
        *,
        noise_multiplier: float,
        clipping_norm: float,
        delta: float,
        accountant: str = "rdp",
        clipping: str = "server",
    ) -> FederatedPrivacy:
        """Account the releases of a run."""
        sig = tuple(float(s) for s in effective_noise)
        curve = tuple(
            (k, client_level_epsilon(sig[:k], delta=delta, accountant=accountant))
            for k in range(1, len(sig) + 1)
        )
        return cls(
            epsilon=curve[-1][1] if curve else 0.0,
            delta=float(delta),
            noise_multiplier=float(noise_multiplier),
            clipping_norm=float(clipping_norm),
            steps=len(sig),
            accountant=accountant,
            effective_noise=sig,
            epsilon_curve=curve,
            clipping=clipping,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record stored under the checkpoint metadata key ``privacy``.

        Carries the keys every medaudit privacy ledger has (``epsilon``, ``delta``,
        ``noise_multiplier``, ``sample_rate``, ``steps``, ``accountant``), with
        ``level = "client"``: the protected unit is a site, a step is a round.
        """
        return {
            "level": "client",
            "unit": "site",
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": 1.0,
            "steps": self.steps,
            "accountant": f"dp_accounting.{self.accountant}",
            "clipping_norm": self.clipping_norm,
            "clipping": self.clipping,
            "effective_noise": list(self.effective_noise),
            "epsilon_curve": [list(p) for p in self.epsilon_curve],
        }


@dataclass(frozen=True)
class SampleLevelPrivacy:
    """The privacy ledger of a federated run with sample-level DP (DP-SGD at every site).

    Each site's local training in each round is DP-SGD on its own data (Poisson
    sampling at rate ``q``, noise multiplier σ); the updates it sends over the rounds
    compose, so its ε counts all its DP-SGD steps of the run, through
    :func:`medaudit.privacy.compute_epsilon` (Opacus's accountant). A reply the server
    never read (a site that failed or timed out) released nothing and costs nothing.

    Attributes
    ----------
    epsilon : float
        The largest ε over the sites (the guarantee for any one image of any site).
    delta, noise_multiplier, max_grad_norm : float
    accountant : {"rdp", "prv"}
    sites : mapping of str to dict
        Site → ``epsilon``, ``sample_rate``, ``steps``, ``rounds`` (updates sent).
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    accountant: str
    sites: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def compute(
        cls,
        site_steps: Mapping[str, Sequence[tuple[float, int]]],
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
        accountant: str = "rdp",
    ) -> SampleLevelPrivacy:
        """Account each site's ``(sample_rate, steps)`` of every round it sent an update."""
        from medaudit.privacy import compute_epsilon

        sites: dict[str, dict[str, Any]] = {}
        for name, history in site_steps.items():
            rates = {round(float(q), 12) for q, _ in history}
            if len(rates) > 1:  # a site's training set does not change between rounds
                raise param_error("site_steps", "SampleLevelPrivacy.compute", "one rate", rates)
            q = rates.pop() if rates else 0.0
            steps = int(sum(int(k) for _, k in history))
            eps = (
                compute_epsilon(
                    noise_multiplier=noise_multiplier,
                    sample_rate=q,
                    steps=steps,
                    delta=delta,
                    accountant=accountant,
                )
                if steps
                else 0.0
            )
            sites[name] = {"epsilon": eps, "sample_rate": q, "steps": steps, "rounds": len(history)}
        return cls(
            epsilon=max((v["epsilon"] for v in sites.values()), default=0.0),
            delta=float(delta),
            noise_multiplier=float(noise_multiplier),
            max_grad_norm=float(max_grad_norm),
            accountant=accountant,
            sites=sites,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``privacy`` record: medaudit's ledger keys, ``level = "sample"``.

        ``sample_rate`` and ``steps`` are those of the site with the largest ε.
        """
        worst = max(self.sites.values(), key=lambda v: v["epsilon"], default={})
        return {
            "level": "sample",
            "unit": "image",
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": float(worst.get("sample_rate", 0.0)),
            "steps": int(worst.get("steps", 0)),
            "accountant": f"opacus.{self.accountant}",
            "max_grad_norm": self.max_grad_norm,
            "sites": {k: dict(v) for k, v in self.sites.items()},
        }
