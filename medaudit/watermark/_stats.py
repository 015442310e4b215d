"""The tests behind an ownership claim: exact binomial tails and the queries they need.

Both watermarks reduce verification to counting successes among independent fair trials
under the null hypothesis "this model was made without the key":

- trigger-set: a trigger's target label was drawn uniformly, independently of the image,
  so any model independent of the key matches it with probability exactly ``1/K``;
- harmless: which trigger of a pair should be the more confident one was decided by a
  fair coin, independently of the images, so any model independent of the key ranks the
  pair "right" with probability exactly 1/2 (tied pairs are dropped, as in the sign test).

The p-value is the exact binomial upper tail; being discrete it is conservative: the
false-claim rate is at most the level asked for.

References
----------
.. [1] Adi Y, Baum C, Cisse M, Pinkas B, Keshet J. Turning your weakness into a strength:
       watermarking deep neural networks by backdooring. USENIX Security 2018.
.. [2] Lukas N, Jiang E, Li X, Kerschbaum F. SoK: How robust is image classification deep
       neural network watermarking? IEEE S&P 2022.
"""

from __future__ import annotations

import math

import numpy as np

from medaudit._errors import param_error
from medaudit.stats import wilson_interval

__all__ = ["binomial_sf", "null_model_rate", "queries_needed"]


def binomial_sf(k: int, n: int, p: float) -> float:
    """Exact upper tail ``P(X >= k)`` of ``X ~ Binomial(n, p)``.

    Summed in log space, so tails far below 1e-300 come out as 0.0 rather than NaN and
    tails near 1 keep full precision.

    Parameters
    ----------
    k : int
        Observed successes.
    n : int
        Trials (0 gives 1.0).
    p : float in [0, 1]
        Success probability under the null.

    Returns
    -------
    float

    Examples
    --------
    >>> round(binomial_sf(3, 3, 0.5), 12)
    0.125
    >>> binomial_sf(0, 10, 0.3)
    1.0
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise param_error("n", "binomial_sf", "an int >= 0", n)
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise param_error("p", "binomial_sf", "a float in [0, 1]", p)
    k = int(k)
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    # log C(n, j) from the exact integer: no Stirling error for any n.
    terms = [math.log(math.comb(n, j)) + j * lp + (n - j) * lq for j in range(k, n + 1)]
    top = max(terms)
    return float(min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms)))


def queries_needed(false_claim_rate: float, p0: float, per_trial: int = 1) -> int:
    """Fewest queries with which even a perfect score reaches ``p <= false_claim_rate``.

    With ``m`` trials of null success probability ``p0`` the smallest possible p-value is
    ``p0 ** m``; fewer queries can never show ownership at that rate.

    Parameters
    ----------
    false_claim_rate : float in (0, 1)
    p0 : float in (0, 1)
        Null success probability of one trial (``1/K``, or 1/2 for a pair).
    per_trial : int, default 1
        Queries one trial costs (2 for a pair of the harmless watermark).

    Examples
    --------
    >>> queries_needed(1e-6, 0.5)
    20
    >>> queries_needed(1e-3, 0.5, per_trial=2)
    20
    """
    if not isinstance(false_claim_rate, (int, float)) or not 0 < false_claim_rate < 1:
        raise param_error(
            "false_claim_rate", "queries_needed", "a float in (0, 1)", false_claim_rate
        )
    if not 0 < p0 < 1:
        raise param_error("p0", "queries_needed", "a float in (0, 1)", p0)
    m = max(1, math.ceil(math.log(false_claim_rate) / math.log(p0) - 1e-9))
    while p0**m > false_claim_rate:  # guard against rounding in the logarithms
        m += 1
    return per_trial * m


def null_model_rate(successes: np.ndarray, trials: np.ndarray, p_design: float) -> float:
    """The null success probability to test against, estimated from null models.

    The rate pooled over independently trained models that never saw the key, taken at
    its one-sided 95% upper Wilson bound and never below the design's exact ``p_design``:
    the p-value computed with it is never smaller than the exact one, so the test keeps
    its level, and it becomes stricter when the null models agree with the key more often
    than chance (the decision threshold of the SoK's null models, made conservative).

    Examples
    --------
    >>> null_model_rate(np.array([50, 52]), np.array([100, 100]), 0.5) > 0.5
    True
    """
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    if s.size == 0 or t.sum() <= 0:
        return float(p_design)
    _, hi = wilson_interval(s.sum(), t.sum(), confidence=0.90)
    return float(max(p_design, float(hi)))
