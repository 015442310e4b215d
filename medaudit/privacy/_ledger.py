"""The privacy ledger: what a DP-SGD run spent, computed by Opacus's accountants.

The accounting assumes the Poisson-subsampled Gaussian mechanism of DP-SGD (Abadi et al.
2016): every step each training sample joins the batch independently with probability
``sample_rate``, the per-sample gradients are clipped to ``max_grad_norm`` and Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` is added to their sum.
ε for ``steps`` such steps at a given δ comes from Opacus's PRV accountant (Gopi et al.
2021, numerical composition, tight; the default) or its RDP accountant (Mironov et al.
2019, an upper bound a little looser).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "ACCOUNTANTS",
    "PrivacyLedger",
    "PrivacyWarning",
    "compute_epsilon",
    "default_delta",
    "find_noise_multiplier",
]

#: The accountants a ledger may use (Opacus's names). Opacus's "gdp" is left out: it is
#: an asymptotic approximation that underestimates ε for few steps.
ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")

#: Above this RDP epsilon the PRV accountant is not run (its memory grows with epsilon) and
#: the RDP upper bound is reported instead.
PRV_MAX_EPSILON = 50.0

#: At most this many points on a ledger's ε curve (each point is one accountant call).
MAX_CURVE_POINTS = 20

MSG_DELTA_LARGE = (
    "delta={delta:g} is not below 1/N = {inv_n:.3g} for N = {n} training samples: a "
    "mechanism that publishes one random sample's data outright satisfies (0, 1/N)-DP, so "
    "this guarantee says little. Use delta <= {suggest:g} (the default)."
)
MSG_BUDGET_TOO_SMALL = (
    "target_epsilon={epsilon:g} cannot be reached with sample_rate={q:.4g} over {steps} "
    "steps (the noise multiplier would exceed {max_sigma:g}). Train for fewer epochs, use "
    "a smaller batch size, or allow a larger epsilon."
)
MSG_LEDGER_FIELD = (
    "The privacy ledger is missing or has an invalid {field!r} ({value!r}); it must hold "
    "epsilon, delta, noise_multiplier, sample_rate, steps and accountant."
)

_MAX_SIGMA = 1e4


class PrivacyWarning(UserWarning):
    """A DP setting that is allowed but weakens the guarantee (e.g. δ ≥ 1/N)."""


def default_delta(n_samples: int) -> float:
    """The δ used when none is given: the power of ten at or below ``0.1 / n_samples``.

    δ must be well below 1/N: a mechanism that publishes a random sample's record
    outright is (0, 1/N)-DP (Dwork & Roth 2014, §2.3).

    Examples
    --------
    >>> default_delta(1400), default_delta(60000), default_delta(1)
    (1e-05, 1e-06, 0.1)
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise param_error("n_samples", "default_delta", "an int >= 1", n_samples)
    return float(10.0 ** math.floor(math.log10(0.1 / n_samples) + 1e-12))


def warn_if_delta_large(delta: float, n_samples: int, *, stacklevel: int = 3) -> None:
    """Warn (:class:`PrivacyWarning`) when ``delta >= 1 / n_samples``."""
    if delta * n_samples >= 1:
        msg = MSG_DELTA_LARGE.format(
            delta=delta, inv_n=1 / n_samples, n=n_samples, suggest=default_delta(n_samples)
        )
        warnings.warn(msg, PrivacyWarning, stacklevel=stacklevel)


def _accountant(name: str) -> Any:
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def _check_accountant(name: Any, func: str) -> str:
    if name not in ACCOUNTANTS:
        raise param_error("accountant", func, f"one of {ACCOUNTANTS}", name)
    return str(name)


def compute_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> float:
    """ε spent by ``steps`` Poisson-subsampled Gaussian steps, from Opacus's accountant.

    Parameters
    ----------
    noise_multiplier : float > 0
        σ: the noise standard deviation divided by the clipping norm.
    sample_rate : float in (0, 1]
        Probability that a sample joins a batch.
    steps : int >= 0
    delta : float in (0, 1)
    accountant : {"prv", "rdp"}, default "prv"

    Returns
    -------
    float
        0.0 for zero steps. PRV returns its upper bound on ε (Opacus's choice); where the
        RDP bound exceeds :data:`PRV_MAX_EPSILON` (50), that bound is returned instead
        (PRV's memory grows with ε).

    References
    ----------
    .. [1] Gopi S, Lee YT, Wutschitz L. Numerical composition of differential privacy.
           NeurIPS 2021.
    .. [2] Mironov I, Talwar K, Zhang L. Rényi differential privacy of the sampled
           Gaussian mechanism. arXiv:1908.10530, 2019.

    Examples
    --------
    >>> round(compute_epsilon(noise_multiplier=1.1, sample_rate=0.05, steps=600,
    ...                       delta=1e-5, accountant="rdp"), 2)
    7.61
    """
    func = "compute_epsilon"
    _check_positive(noise_multiplier, "noise_multiplier", func)
    _check_rate(sample_rate, func)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise param_error("steps", func, "an int >= 0", steps)
    _check_delta(delta, func)
    name = _check_accountant(accountant, func)
    return _epsilon(name, [(float(noise_multiplier), float(sample_rate), steps)], delta)


def _epsilon(name: str, history: Sequence[tuple[float, float, int]], delta: float) -> float:
    history = [h for h in history if h[2] > 0]
    if not history:
        return 0.0
    if name == "prv":
        bound = _epsilon("rdp", history, delta)
        if bound > PRV_MAX_EPSILON:
            # PRV's discretisation domain grows with epsilon (gigabytes at sigma ~ 0.05);
            # RDP's value is a valid upper bound, and no one relies on an epsilon this large.
            return bound
    acc = _accountant(name)
    acc.history = list(history)
    # Full-batch steps (sample rate 1) make Opacus's PRV take log(1 - q) = log(0); the
    # -inf it gives is the right limit (every t exceeds it), so numpy's warning is noise.
    with _quiet_rdp_orders(), np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def _epsilon_curve(
    name: str, sigma: float, q: float, steps: Sequence[int], delta: float
) -> list[float]:
    """ε after each of ``steps`` steps: the accountant's value, computed once per point.

    RDP composes linearly, so one step's RDP curve times k is exactly what Opacus's
    ``RDPAccountant`` computes for k steps (``compute_rdp`` multiplies by ``steps``).
    """
    if name != "rdp":
        return [_epsilon(name, [(sigma, q, k)], delta) for k in steps]
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    orders = RDPAccountant.DEFAULT_ALPHAS
    one = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    out = []
    with _quiet_rdp_orders():
        for k in steps:
            eps, _ = analysis.get_privacy_spent(orders=orders, rdp=0 + one * k, delta=delta)
            out.append(float(eps) if k > 0 else 0.0)
    return out


@contextlib.contextmanager
def _quiet_rdp_orders() -> Iterator[None]:
    """Silence Opacus's note that RDP's best order lies at the edge of its grid.

    The bound stays valid there, only a little looser (and PRV uses RDP merely to size
    its discretisation domain).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Optimal order is the", UserWarning)
        yield


def find_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    tolerance: float = 0.01,
) -> float:
    """The smallest noise multiplier (to ``tolerance`` in ε) whose ε after ``steps`` is ≤ target.

    Bisection on σ with Opacus's accountant (as ``opacus.accountants.utils.
    get_noise_multiplier``, but for an exact number of steps): the returned σ gives
    ``target_epsilon - tolerance < ε <= target_epsilon``.

    Examples
    --------
    >>> s = find_noise_multiplier(target_epsilon=3.0, delta=1e-5, sample_rate=0.02,
    ...                           steps=500, accountant="rdp")
    >>> e = compute_epsilon(noise_multiplier=s, sample_rate=0.02, steps=500, delta=1e-5,
    ...                     accountant="rdp")
    >>> 2.99 < e <= 3.0
    True
    """
    func = "find_noise_multiplier"
    _check_positive(target_epsilon, "target_epsilon", func)
    _check_delta(delta, func)
    _check_rate(sample_rate, func)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise param_error("steps", func, "an int >= 1", steps)
    name = _check_accountant(accountant, func)

    def eps(sigma: float) -> float:
        return _epsilon(name, [(sigma, sample_rate, steps)], delta)

    # Bracket: lo spends more than the target, hi at most the target.
    lo, e_lo, hi = 0.0, math.inf, 1.0
    e_hi = eps(hi)
    while e_hi > target_epsilon:
        lo, e_lo, hi = hi, e_hi, 2 * hi
        if hi > _MAX_SIGMA:
            raise InvalidInputError(
                MSG_BUDGET_TOO_SMALL.format(
                    epsilon=target_epsilon, q=sample_rate, steps=steps, max_sigma=_MAX_SIGMA
                )
            )
        e_hi = eps(hi)
    # Illinois regula falsi on 1/sigma (epsilon is close to linear in it), falling back
    # to bisection: a handful of accountant calls instead of bisection's dozen.
    for i in range(100):
        if target_epsilon - e_hi <= tolerance or hi - lo < 1e-9:
            break
        if math.isfinite(e_lo) and lo > 0 and i % 3 != 2:
            a, b = 1 / lo, 1 / hi
            x = b + (a - b) * (target_epsilon - tolerance / 2 - e_hi) / (e_lo - e_hi)
            mid = min(max(1 / x, lo + 0.05 * (hi - lo)), hi - 0.05 * (hi - lo))
        else:
            mid = (lo + hi) / 2
        e_mid = eps(mid)
        if e_mid <= target_epsilon:
            hi, e_hi = mid, e_mid
        else:
            lo, e_lo = mid, e_mid
    return hi


@dataclass(frozen=True)
class PrivacyLedger:
    """What a differentially private training run spent, and under which assumptions.

    Attributes
    ----------
    epsilon : float
        ε of the (ε, δ)-DP guarantee after ``steps`` steps.
    delta : float
        δ of the guarantee.
    noise_multiplier : float
        σ: noise standard deviation / clipping norm.
    sample_rate : float
        Poisson sampling probability of each sample per step.
    steps : int
        Optimizer steps counted, including empty batches and the steps of epochs that
        early stopping discarded.
    epochs : int
        Epochs those steps span (the last may be partial).
    max_grad_norm : float
        Per-sample clipping norm C.
    accountant : {"prv", "rdp"}
        Opacus accountant that computed ε.
    n_samples : int
        Training samples N (δ is judged against 1/N).
    epsilon_curve : tuple of (int, float)
        ``(steps, epsilon)`` at the end of each epoch (at most 20 points, the last at
        ``steps``).
    target_epsilon : float or None
        The budget the noise was calibrated for (None: σ was given).
    sampling : str
        ``"poisson"``: the only sampling the accounting is valid for.

    Examples
    --------
    >>> led = PrivacyLedger(epsilon=7.6, delta=1e-5, noise_multiplier=1.1,
    ...                     sample_rate=0.05, steps=600, epochs=30, max_grad_norm=1.0,
    ...                     accountant="rdp", n_samples=2000)
    >>> PrivacyLedger.from_dict(led.to_dict()) == led
    True
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: int
    max_grad_norm: float
    accountant: str
    n_samples: int
    epsilon_curve: tuple[tuple[int, float], ...] = ()
    target_epsilon: float | None = None
    sampling: str = "poisson"

    @classmethod
    def compute(
        cls,
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        delta: float,
        max_grad_norm: float,
        accountant: str,
        n_samples: int,
        target_epsilon: float | None = None,
    ) -> PrivacyLedger:
        """The ledger of ``steps`` steps, with its ε curve (one point per epoch)."""
        per_epoch = max(1, round(1.0 / sample_rate))
        ends = list(range(per_epoch, steps, per_epoch)) + ([steps] if steps else [])
        if len(ends) > MAX_CURVE_POINTS:
            pick = [
                round(i * (len(ends) - 1) / (MAX_CURVE_POINTS - 1)) for i in range(MAX_CURVE_POINTS)
            ]
            ends = [ends[i] for i in sorted(set(pick))]
        compute_epsilon(  # validates the arguments
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=0,
            delta=delta,
            accountant=accountant,
        )
        eps = _epsilon_curve(accountant, noise_multiplier, sample_rate, ends, delta)
        curve = tuple(zip(ends, eps, strict=False))
        return cls(
            epsilon=curve[-1][1] if curve else 0.0,
            delta=float(delta),
            noise_multiplier=float(noise_multiplier),
            sample_rate=float(sample_rate),
            steps=int(steps),
            epochs=-(-int(steps) // per_epoch),
            max_grad_norm=float(max_grad_norm),
            accountant=accountant,
            n_samples=int(n_samples),
            epsilon_curve=curve,
            target_epsilon=None if target_epsilon is None else float(target_epsilon),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (what checkpoints store under the metadata key ``privacy``)."""
        d = asdict(self)
        d["epsilon_curve"] = [[int(s), float(e)] for s, e in self.epsilon_curve]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`; raises :class:`InvalidInputError` on a damaged record.

        Records written by others need only ``epsilon``, ``delta``, ``noise_multiplier``,
        ``sample_rate``, ``steps`` and ``accountant``.
        """
        if not isinstance(d, Mapping):
            raise InvalidInputError(MSG_LEDGER_FIELD.format(field="ledger", value=d))
        out: dict[str, Any] = {}
        for key, kind in (
            ("epsilon", float),
            ("delta", float),
            ("noise_multiplier", float),
            ("sample_rate", float),
            ("steps", int),
            ("accountant", str),
        ):
            out[key] = _field(d, key, kind)
        q = out["sample_rate"]
        if not (0 < q <= 1 and 0 < out["delta"] < 1 and out["steps"] >= 0):
            raise InvalidInputError(MSG_LEDGER_FIELD.format(field="sample_rate", value=q))
        per_epoch = max(1, round(1.0 / q))
        try:
            curve = tuple((int(s), float(e)) for s, e in d.get("epsilon_curve") or ())
            target = d.get("target_epsilon")
            return cls(
                **out,
                epochs=int(d.get("epochs", -(-out["steps"] // per_epoch))),
                max_grad_norm=float(d.get("max_grad_norm", float("nan"))),
                n_samples=int(d.get("n_samples", 0)),
                epsilon_curve=curve,
                target_epsilon=None if target is None else float(target),
                sampling=str(d.get("sampling", "poisson")),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                MSG_LEDGER_FIELD.format(field="epsilon_curve", value=d.get("epsilon_curve"))
            ) from exc


def _field(d: Mapping[str, Any], key: str, kind: type) -> Any:
    v: Any = d.get(key)
    if kind is str:
        ok = isinstance(v, str)
    else:
        ok = _is_number(v) and math.isfinite(v) and (kind is float or int(v) == v)
    if not ok:
        raise InvalidInputError(MSG_LEDGER_FIELD.format(field=key, value=v))
    return kind(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_positive(v: Any, name: str, func: str) -> None:
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise param_error(name, func, "a finite float > 0", v)


def _check_rate(v: Any, func: str) -> None:
    if not _is_number(v) or not 0 < v <= 1:
        raise param_error("sample_rate", func, "a float in (0, 1]", v)


def _check_delta(v: Any, func: str) -> None:
    if not _is_number(v) or not 0 < v < 1:
        raise param_error("delta", func, "a float in (0, 1)", v)
