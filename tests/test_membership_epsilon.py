"""Empirical epsilon: Clopper-Pearson and one-run bounds against references and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medaudit import InvalidInputError
from medaudit.attacks.membership import (
    PrivacyClaim,
    clopper_pearson,
    epsilon_from_rates,
    one_run_epsilon,
    one_run_pvalue,
    threshold_epsilon,
)
from medaudit.attacks.membership._epsilon import MSG_BAD_CLAIM, _one_run_eps, _one_run_eps_bisect


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 200), (57, 113)])
@pytest.mark.parametrize("conf", [0.9, 0.95, 0.99])
def test_clopper_pearson_equals_scipy_exact_interval(k, n, conf):
    # Reference: scipy.stats.binomtest(...).proportion_ci(method="exact") (Clopper-Pearson).
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=conf, method="exact")
    lo, hi = clopper_pearson(k, n, conf)
    assert float(lo) == pytest.approx(ref.low, abs=1e-10)
    assert float(hi) == pytest.approx(ref.high, abs=1e-10)


@pytest.mark.parametrize("n", [20, 100, 500])
def test_clopper_pearson_coverage_is_at_least_nominal_exactly(n):
    # Coverage computed exactly by summing the binomial pmf over every outcome k.
    k = np.arange(n + 1)
    lo, hi = clopper_pearson(k, n, 0.95)
    for p in np.linspace(0.005, 0.995, 67):
        covered = (lo <= p) & (p <= hi)
        assert stats.binom.pmf(k, n, p)[covered].sum() >= 0.95 - 1e-9


def test_epsilon_from_rates_recovers_randomised_response():
    # eps-randomised response: TPR = e^eps / (1 + e^eps), FPR = 1 / (1 + e^eps).
    for eps in (0.1, 1.0, 3.0):
        q = math.exp(eps) / (1 + math.exp(eps))
        assert float(epsilon_from_rates(q, 1 - q)) == pytest.approx(eps, abs=1e-12)
    assert float(epsilon_from_rates(0.3, 0.5)) == 0.0  # worse than chance proves nothing
    # delta: TPR <= e^eps FPR + delta
    assert float(epsilon_from_rates(0.5, 0.1, 0.1)) == pytest.approx(math.log(4.0))


def _paper_pvalue(m, r, v, eps, delta):
    """Algorithm of Steinke, Nasr & Jagielski (2023), written out with a Python loop."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, total / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize(
    "m,r,v,eps,delta",
    [
        (1000, 100, 80, 1.0, 0.0),
        (1000, 100, 80, 1.0, 1e-5),
        (500, 40, 40, 2.0, 1e-3),
        (200, 200, 120, 0.5, 1e-4),
        (50, 10, 0, 1.0, 1e-5),
    ],
)
def test_one_run_pvalue_matches_the_papers_algorithm(m, r, v, eps, delta):
    assert one_run_pvalue(m, r, v, eps, delta) == pytest.approx(
        _paper_pvalue(m, r, v, eps, delta), rel=1e-10, abs=1e-14
    )


@pytest.mark.parametrize("r,v", [(100, 80), (400, 400), (50, 30), (1000, 900)])
def test_one_run_bound_without_delta_has_a_closed_form(r, v):
    # delta = 0: P[Bin(r, q) >= v] < p  <=>  q < beta.ppf(p, v, r - v + 1); eps = logit(q),
    # the same as bisecting the paper's p-value.
    p = 0.05
    assert _one_run_eps(1000, r, v, 0.0, p) == pytest.approx(
        _one_run_eps_bisect(1000, r, v, 0.0, p), abs=1e-9
    )
    assert _one_run_eps(1000, r, v, 1e-5, p) <= _one_run_eps(1000, r, v, 0.0, p)


def _randomised_response(rng, member, eps):
    q = math.exp(eps) / (1 + math.exp(eps))
    return np.where(rng.random(len(member)) < q, member, ~member).astype(float)


def test_a_perfect_attack_proves_a_large_epsilon_and_a_blind_one_none():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.5
    assert one_run_epsilon(y, y + 0.0).epsilon > 3
    assert threshold_epsilon(y, y + 0.0).epsilon > 3
    s = rng.random(2000)
    assert one_run_epsilon(y, s).epsilon == 0.0
    assert threshold_epsilon(y, s).epsilon < 0.3


def test_bounds_exceed_a_true_epsilon_rarely_and_come_close_to_it():
    # An attack on eps-DP randomised response (the worst case for eps-DP): the 95% lower
    # bounds must exceed eps in at most ~5% of runs. Measured at eps = 1 over 200 runs:
    # 0.5% (threshold) and 2.5% (one run), medians 0.74 and 0.80.
    rng = np.random.default_rng(0)
    eps = 1.0
    thr, one = [], []
    for r in range(200):
        y = np.r_[np.ones(500, bool), np.zeros(500, bool)]
        thr.append(threshold_epsilon(y, _randomised_response(rng, y, eps), random_state=r).epsilon)
        y2 = rng.random(1000) < 0.5  # canaries included by a fair coin
        one.append(one_run_epsilon(y2, _randomised_response(rng, y2, eps)).epsilon)
    thr, one = np.array(thr), np.array(one)
    assert (thr > eps).mean() <= 0.06 and (one > eps).mean() <= 0.06
    assert np.median(thr) > 0.6 and np.median(one) > 0.6


def test_patients_stay_in_one_half_of_the_threshold_split():
    y = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    units = np.repeat(np.arange(20), 4)
    b = threshold_epsilon(y, y + 0.0, units=units)
    assert b.details["n_members"] % 4 == 0 and b.details["n_non_members"] % 4 == 0


def test_privacy_claim_is_read_and_bad_claims_are_refused_with_one_message():
    c = PrivacyClaim.from_metadata({"epsilon": 8, "delta": 1e-5, "noise_multiplier": 1.1})
    assert (c.epsilon, c.delta, c.ledger["noise_multiplier"]) == (8.0, 1e-5, 1.1)
    assert PrivacyClaim.from_metadata(None) is None
    assert PrivacyClaim.from_metadata("") is None
    with pytest.raises(InvalidInputError) as e:
        PrivacyClaim.from_metadata('{"delta": 1e-5}')
    assert str(e.value) == MSG_BAD_CLAIM.format(why="bad or missing 'epsilon'")
    with pytest.raises(InvalidInputError, match="epsilon=-1.0, delta=0.0 out of range"):
        PrivacyClaim.from_metadata({"epsilon": -1})
    with pytest.raises(InvalidInputError, match="not JSON"):
        PrivacyClaim.from_metadata("{epsilon: 1")
    g = PrivacyClaim(1.0, 1e-5).for_groups(3)
    assert g.epsilon == 3.0 and g.delta == pytest.approx(3 * math.exp(2) * 1e-5)
