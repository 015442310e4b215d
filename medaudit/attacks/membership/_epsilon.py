"""Empirical privacy: lower bounds on epsilon from what an attack achieves.

Two lower bounds, each holding with the stated confidence:

- **Clopper-Pearson** (Jagielski et al. 2020; Nasr et al. 2021): an (epsilon, delta)-DP
  training algorithm forces every membership test to satisfy
  ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``. A threshold
  on the attack scores is chosen on one half of the audited units and the exact
  binomial bounds of its TPR and FPR on the other half give
  ``eps >= max(log((TPR_lo - delta) / FPR_hi), log((1 - FPR_hi - delta) / (1 - TPR_lo)))``.
  Like the papers, it counts each audited unit as one trial.
- **One run** (Steinke, Nasr & Jagielski 2023): when each of ``m`` canaries entered
  training independently with probability 1/2, an auditor that guesses IN for the ``k+``
  highest scores and OUT for the ``k-`` lowest cannot be right much more often than
  randomised response with ``epsilon`` allows; the bound inverts the paper's p-value
  (Theorem 3.1 with its delta term, Algorithm 2 of the paper). A small grid of
  ``(k+, k-)`` is tried with a Bonferroni correction, so the best of them is still a
  valid bound.

A checkpoint's claimed epsilon (its privacy ledger) that is below such a bound is
contradicted by the attack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "ONE_RUN_GUESS_FRACTIONS",
    "EpsilonBound",
    "PrivacyClaim",
    "clopper_pearson",
    "epsilon_from_rates",
    "one_run_epsilon",
    "one_run_pvalue",
    "threshold_epsilon",
]

#: Shares of the canaries guessed IN (k+ / m) that the one-run audit tries, each once
#: with no OUT guess and once with as many OUT guesses (k- = k+).
ONE_RUN_GUESS_FRACTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def clopper_pearson(
    k: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) interval for a binomial proportion, vectorised.

    Parameters
    ----------
    k, n : int or ndarray
        Successes and trials (NaN where ``n == 0``).
    confidence : float, default 0.95
        Two-sided level; each one-sided bound alone holds with ``(1 + confidence) / 2``.

    Returns
    -------
    (low, high) : tuple of ndarray

    References
    ----------
    .. [1] Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated
           in the case of the binomial. Biometrika 26(4):404-413, 1934.

    Examples
    --------
    >>> lo, hi = clopper_pearson(5, 10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.1871, 0.8129)
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise param_error("confidence", "clopper_pearson", "a float in (0, 1)", confidence)
    if not 0 < confidence < 1:
        raise param_error("confidence", "clopper_pearson", "a float in (0, 1)", confidence)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = (1 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, sps.beta.ppf(a, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, sps.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


@dataclass(frozen=True)
class EpsilonBound:
    """A lower bound on epsilon that an attack establishes.

    Attributes
    ----------
    epsilon : float
        The bound (0 when the attack proves nothing).
    method : {"clopper_pearson", "one_run"}
    attack : str
        Which attack's scores.
    delta : float
        The delta the bound is for.
    confidence : float
        Probability that the bound holds (after any Bonferroni correction).
    details : dict
        Counts behind the bound (``tp``, ``fp``, ``n_members``, ... or ``m``, ``r``,
        ``v``, ``k_pos``, ``k_neg``).
    """

    epsilon: float
    method: str
    attack: str = ""
    delta: float = 0.0
    confidence: float = 0.95
    details: dict[str, Any] = field(default_factory=dict)


def epsilon_from_rates(tpr_low: Any, fpr_high: Any, delta: float = 0.0) -> np.ndarray:
    """The epsilon a (TPR, FPR) pair forces under (epsilon, delta)-DP, vectorised.

    ``max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR)))``, clipped at 0;
    pass a lower bound of TPR and an upper bound of FPR to get a lower bound.

    Examples
    --------
    >>> round(float(epsilon_from_rates(0.5, 0.1)), 4)  # log(0.5 / 0.1)
    1.6094
    >>> round(float(epsilon_from_rates(0.9, 0.5)), 4)  # log(0.5 / 0.1), the other tail
    1.6094
    """
    t = np.asarray(tpr_low, dtype=np.float64)
    f = np.asarray(fpr_high, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.log(np.maximum(t - delta, 0.0) / f)
        b = np.log(np.maximum(1 - f - delta, 0.0) / (1 - t))
    out = np.fmax(np.nan_to_num(a, nan=0.0, neginf=0.0), np.nan_to_num(b, nan=0.0, neginf=0.0))
    return np.maximum(out, 0.0)


def _units(n: int, units: np.ndarray | None) -> np.ndarray:
    if units is None:
        return np.arange(n)
    u = np.asarray(units)
    if len(u) != n:
        raise InvalidInputError("units must have one entry per audited image.")
    return np.unique(u.astype(str), return_inverse=True)[1].ravel()


def _bounds_per_threshold(
    y: np.ndarray, s: np.ndarray, delta: float, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score t (guess member when score >= t): eps bound, t, tp, fp."""
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])
    tp = np.cumsum(yy)[ends]
    fp = np.cumsum(~yy)[ends]
    npos, nneg = int(y.sum()), int((~y).sum())
    # Each one-sided bound at (1 - confidence) / 2, so both hold jointly at `confidence`.
    tlo, _ = clopper_pearson(tp, npos, confidence)
    _, fhi = clopper_pearson(fp, nneg, confidence)
    return epsilon_from_rates(tlo, fhi, delta), ss[ends], tp, fp


def threshold_epsilon(
    is_member: np.ndarray,
    scores: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
    units: np.ndarray | None = None,
    attack: str = "",
    random_state: int = 0,
) -> EpsilonBound:
    """Clopper-Pearson lower bound on epsilon from one threshold on the attack scores.

    The units (patients; images without ``units``) are split in half at random; the
    threshold that gives the highest bound on the first half is applied to the second
    half, whose exact binomial bounds on TPR and FPR give the reported bound (the
    threshold is never chosen on the data that bound it).

    Parameters
    ----------
    is_member, scores : array-like of shape (n,)
    delta : float, default 0
    confidence : float, default 0.95
    units : array-like of shape (n,), optional
        Unit of each image (a patient): kept together in one half.
    attack : str
        Name recorded in the result.
    random_state : int, default 0

    Returns
    -------
    EpsilonBound

    References
    ----------
    .. [1] Jagielski M, Ullman J, Oprea A. Auditing differentially private machine
           learning: how private is private SGD? NeurIPS 2020.
    .. [2] Nasr M, Song S, Thakurta A, Papernot N, Carlini N. Adversary instantiation:
           lower bounds for differentially private machine learning. IEEE S&P 2021.

    Examples
    --------
    >>> y = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    >>> b = threshold_epsilon(y, y.astype(float))  # a perfect attack on 250 + 250 trials
    >>> round(b.epsilon, 2)
    4.22
    """
    y, s = _check(is_member, scores, "threshold_epsilon")
    _check_delta_conf(delta, confidence, "threshold_epsilon")
    u = _units(len(y), units)
    rng = np.random.default_rng(random_state)
    first = rng.permutation(u.max() + 1)[: (u.max() + 1) // 2]
    sel = np.isin(u, first)
    ev = ~sel
    if not (y[sel].any() and (~y[sel]).any() and y[ev].any() and (~y[ev]).any()):
        return EpsilonBound(
            0.0, "clopper_pearson", attack, delta, confidence, {"reason": "too few"}
        )
    eps_sel, thr, _, _ = _bounds_per_threshold(y[sel], s[sel], delta, confidence)
    t = float(thr[int(np.argmax(eps_sel))])
    guess = s[ev] >= t
    tp, fp = int((guess & y[ev]).sum()), int((guess & ~y[ev]).sum())
    npos, nneg = int(y[ev].sum()), int((~y[ev]).sum())
    tlo, _ = clopper_pearson(tp, npos, confidence)
    _, fhi = clopper_pearson(fp, nneg, confidence)
    eps = float(epsilon_from_rates(tlo, fhi, delta))
    details = {
        "threshold": t,
        "tp": tp,
        "fp": fp,
        "n_members": npos,
        "n_non_members": nneg,
        "tpr_low": float(tlo),
        "fpr_high": float(fhi),
    }
    return EpsilonBound(eps, "clopper_pearson", attack, float(delta), confidence, details)


def one_run_pvalue(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P-value of ``v`` correct guesses out of ``r`` if training were (epsilon, delta)-DP.

    Parameters
    ----------
    m : int
        Canaries, each included independently with probability 1/2.
    r : int
        Guesses made (the auditor abstains on the other ``m - r``).
    v : int
        Correct guesses.
    epsilon, delta : float
        The DP guarantee of the null hypothesis.

    Returns
    -------
    float
        ``P[Binomial(r, q) >= v] + 2 m delta max_i P[v > Binomial(r, q) >= v - i] / i``
        with ``q = e^eps / (1 + e^eps)``, capped at 1.

    References
    ----------
    .. [1] Steinke T, Nasr M, Jagielski M. Privacy auditing with one (1) training run.
           NeurIPS 2023 (Theorem 3.1 and Algorithm 2).

    Examples
    --------
    >>> round(one_run_pvalue(100, 10, 10, 0.0), 6)  # 10 right out of 10 by chance
    0.000977
    """
    if not (0 <= v <= r <= m):
        raise InvalidInputError(f"one_run_pvalue needs 0 <= v <= r <= m; got {v}, {r}, {m}.")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(sps.binom.sf(v - 1, r, q))
    alpha = 0.0
    if delta > 0 and v > 0:
        tail = np.cumsum(sps.binom.pmf(v - np.arange(1, v + 1), r, q))
        alpha = float(np.max(tail / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def _one_run_eps(m: int, r: int, v: int, delta: float, p: float) -> float:
    """Largest epsilon whose one-run p-value stays below ``p``.

    Without delta the p-value is a binomial tail, ``P[Bin(r, q) >= v] = I_q(v, r-v+1)``,
    increasing in ``q``: the answer is the logit of its ``p`` quantile. With delta, the
    p-value is bisected as in the paper's code.
    """
    if delta == 0:
        if v == 0:
            return 0.0
        q = float(sps.beta.ppf(p, v, r - v + 1))
        return max(0.0, math.log(q / (1 - q))) if q < 1 else float("inf")
    return _one_run_eps_bisect(m, r, v, delta, p)


def _one_run_eps_bisect(m: int, r: int, v: int, delta: float, p: float) -> float:
    if one_run_pvalue(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_pvalue(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2
        if hi > 1e3:  # below p for any epsilon: the guesses alone bound nothing more
            return float(lo)
    for _ in range(40):
        mid = (lo + hi) / 2
        if one_run_pvalue(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_epsilon(
    is_member: np.ndarray,
    scores: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
    fractions: Sequence[float] = ONE_RUN_GUESS_FRACTIONS,
    attack: str = "",
) -> EpsilonBound:
    """Epsilon lower bound of the one-run audit (canaries included with probability 1/2).

    Valid when each audited image (canary) entered training by an independent fair coin
    flip. Guesses IN for the ``k+`` highest scores and OUT for the ``k-`` lowest, for
    every ``k+ = f m`` of ``fractions`` with ``k- = 0`` and with ``k- = k+``; the best
    bound over these choices is reported with a Bonferroni correction.

    Parameters
    ----------
    is_member, scores : array-like of shape (m,)
    delta : float, default 0
    confidence : float, default 0.95
    fractions : sequence of float in (0, 0.5]
    attack : str

    Returns
    -------
    EpsilonBound

    References
    ----------
    .. [1] Steinke T, Nasr M, Jagielski M. Privacy auditing with one (1) training run.
           NeurIPS 2023.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random(1000) < 0.5
    >>> one_run_epsilon(y, rng.random(1000)).epsilon  # a blind attack proves nothing
    0.0
    >>> round(one_run_epsilon(y, y + 0.0).epsilon, 2)  # a perfect one, 1000 canaries
    4.28
    """
    y, s = _check(is_member, scores, "one_run_epsilon")
    _check_delta_conf(delta, confidence, "one_run_epsilon")
    m = len(y)
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    choices = []
    for f in fractions:
        if not 0 < f <= 0.5:
            raise param_error("fractions", "one_run_epsilon", "floats in (0, 0.5]", fractions)
        k = max(1, int(f * m))
        choices += [(k, 0), (k, k)]
    choices = sorted(set(choices))
    p = (1 - confidence) / len(choices)
    results = []
    for kp, kn in choices:
        v = int(ys[:kp].sum()) + (int((~ys[m - kn :]).sum()) if kn else 0)
        results.append((_one_run_eps(m, kp + kn, v, delta, p), kp, kn, v))
    eps, kp, kn, v = max(results, key=lambda t: t[0])
    r = kp + kn
    details = {"m": m, "k_pos": kp, "k_neg": kn, "r": r, "v": v, "n_choices": len(choices)}
    return EpsilonBound(float(eps), "one_run", attack, float(delta), confidence, details)


def _check(is_member: Any, scores: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise InvalidInputError(f"{func}: is_member and scores must be 1-d of the same length.")
    if not np.all(np.isfinite(s)):
        raise InvalidInputError(f"{func}: scores contain NaN or infinite values.")
    return y, s


def _check_delta_conf(delta: Any, confidence: Any, func: str) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise param_error("delta", func, "a float in [0, 1)", delta)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise param_error("confidence", func, "a float in (0, 1)", confidence)
    if not 0 < confidence < 1:
        raise param_error("confidence", func, "a float in (0, 1)", confidence)


# -- the claim -----------------------------------------------------------------------------
MSG_BAD_CLAIM = (
    "The checkpoint's 'privacy' metadata cannot be read as a DP claim ({why}); expected "
    'JSON like {{"epsilon": 8.0, "delta": 1e-05, ...}}.'
)


@dataclass(frozen=True)
class PrivacyClaim:
    """The (epsilon, delta) a DP checkpoint claims (its privacy ledger).

    Attributes
    ----------
    epsilon : float
    delta : float
    ledger : dict
        Everything the ``privacy`` metadata holds (noise multiplier, sample rate, ...).
    """

    epsilon: float
    delta: float
    ledger: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, value: Any) -> PrivacyClaim | None:
        """Read the ``privacy`` metadata (a mapping or its JSON text); None when absent.

        Examples
        --------
        >>> PrivacyClaim.from_metadata('{"epsilon": 1.0, "delta": 1e-5, "steps": 90}')
        PrivacyClaim(epsilon=1.0, delta=1e-05, ledger={'epsilon': 1.0, 'delta': 1e-05, \
'steps': 90})
        >>> PrivacyClaim.from_metadata(None) is None
        True
        """
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(MSG_BAD_CLAIM.format(why=f"not JSON: {exc}")) from None
        if not isinstance(value, Mapping):
            raise InvalidInputError(MSG_BAD_CLAIM.format(why=f"a {type(value).__name__}"))
        try:
            eps = float(value["epsilon"])
            delta = float(value.get("delta", 0.0) or 0.0)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(MSG_BAD_CLAIM.format(why=f"bad or missing {exc}")) from None
        if not (eps > 0 and math.isfinite(eps)) or not 0 <= delta < 1:
            raise InvalidInputError(
                MSG_BAD_CLAIM.format(why=f"epsilon={eps!r}, delta={delta!r} out of range")
            )
        return cls(eps, delta, dict(value))

    def for_groups(self, k: int) -> PrivacyClaim:
        """What the claim implies for groups of ``k`` records (a patient's images).

        Group privacy: ``(k eps, k e^((k - 1) eps) delta)``.

        Examples
        --------
        >>> c = PrivacyClaim(1.0, 1e-5).for_groups(2)
        >>> c.epsilon, round(c.delta, 10)
        (2.0, 5.43656e-05)
        """
        if k <= 1:
            return self
        delta = min(k * math.exp((k - 1) * self.epsilon) * self.delta, 1.0)
        return PrivacyClaim(k * self.epsilon, delta, self.ledger)
