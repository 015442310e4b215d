"""Watermark keys and the statistics of the ownership test (fast).

The verification nulls are exact by construction (labels and pair roles are drawn
independently of the images); these tests check it by simulation over many keys with
models that never saw them, check the binomial tail against SciPy, and check the
utility-change CI's coverage with clustered patients.
"""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.watermark import (
    MSG_CLASSES,
    MSG_TOO_FEW_QUERIES,
    WatermarkKey,
    as_scorer,
    binomial_sf,
    load_key,
    make_triggers,
    null_model_rate,
    pair_wins,
    queries_needed,
    save_key,
    trigger_matches,
    utility_change,
    verify_watermark,
)
from medaudit.watermark._key import MSG_KEY_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- keys and triggers ------------------------------------------------------------------------
def test_triggers_are_deterministic_and_prefix_stable():
    a = make_triggers(WatermarkKey(42, n_triggers=10, image_size=16))
    b = make_triggers(WatermarkKey(42, n_triggers=10, image_size=16))
    c = make_triggers(WatermarkKey(42, n_triggers=4, image_size=16))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images[:4], c.images)
    np.testing.assert_array_equal(a.labels[:4], c.labels)
    np.testing.assert_array_equal(a.up[:4], c.up)
    assert a.images.dtype == np.float32 and a.images.min() >= 0 and a.images.max() <= 1
    other = make_triggers(WatermarkKey(43, n_triggers=10, image_size=16))
    assert not np.array_equal(a.images, other.images)


def test_pairs_have_one_up_trigger_each():
    up = make_triggers(WatermarkKey(5, n_triggers=40, image_size=16)).up
    assert np.all(up[0::2] != up[1::2])


def test_every_trigger_carries_the_keys_pattern():
    t = make_triggers(WatermarkKey(9, n_triggers=5, image_size=32, in_channels=3))
    stamp = ~np.isnan(t.pattern)
    assert stamp.sum() == 6 * 6
    for img in t.images:
        for ch in img:
            np.testing.assert_array_equal(ch[stamp], t.pattern[stamp])


def test_labels_are_uniform_and_independent_of_the_images():
    # Pooled over keys, each class is drawn 1/K of the time, whatever the carrier looks like.
    labels, means = [], []
    for seed in range(300):
        t = make_triggers(WatermarkKey(seed, num_classes=3, n_triggers=4, image_size=16))
        labels.append(t.labels)
        means.append(t.images.mean(axis=(1, 2, 3)))
    lab, mu = np.concatenate(labels), np.concatenate(means)
    counts = np.bincount(lab, minlength=3) / len(lab)
    assert np.all(np.abs(counts - 1 / 3) < 0.05)
    # Mean intensity of the carrier does not predict its label.
    assert abs(np.corrcoef(mu, lab == 0)[0, 1]) < 0.1


def test_key_file_round_trip_and_bad_files(tmp_path):
    key = WatermarkKey(123, num_classes=3, n_triggers=50, image_size=64, kind="harmless")
    p = save_key(key, tmp_path / "k.json")
    assert load_key(p) == key
    (tmp_path / "bad.json").write_text(json.dumps({"seed": 1}))
    with pytest.raises(InvalidInputError) as e:
        load_key(tmp_path / "bad.json")
    assert str(e.value) == MSG_KEY_FILE.format(
        path=tmp_path / "bad.json", why="its schema is not 'medaudit.watermark-key/1'"
    )
    with pytest.raises(InvalidParameterError):
        WatermarkKey(-1)
    with pytest.raises(InvalidParameterError):
        WatermarkKey(1, kind="visible")


# -- the binomial test ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, 0.5), (7, 10, 0.5), (30, 32, 0.5), (64, 64, 0.5), (20, 100, 1 / 3), (90, 1000, 0.05)],
)
def test_binomial_tail_agrees_with_scipy(k, n, p):
    # Reference: scipy.stats.binom.sf(k - 1, n, p) = P(X >= k).
    from scipy.stats import binom

    assert binomial_sf(k, n, p) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-10, abs=1e-300)


def test_binomial_tail_hand_computed():
    assert binomial_sf(3, 3, 0.5) == pytest.approx(0.125, rel=1e-12)
    assert binomial_sf(2, 3, 0.5) == pytest.approx(0.5, rel=1e-12)
    assert binomial_sf(4, 3, 0.5) == 0.0


def test_queries_needed_is_the_first_count_a_perfect_answer_can_pass():
    for rate, p0, per in [(1e-6, 0.5, 1), (1e-3, 0.5, 2), (0.01, 1 / 3, 1), (0.05, 0.1, 1)]:
        m = queries_needed(rate, p0, per) // per
        assert p0**m <= rate < p0 ** (m - 1)


def test_trigger_matches_and_pair_wins_by_hand():
    s = np.array([[0.8, 0.2], [0.1, 0.9], [0.6, 0.4], [0.55, 0.45]])
    assert trigger_matches(s, np.array([0, 1, 1, 1])) == (2, 4)
    # Pair 0: up = second (margin 0.8 > 0.6) wins; pair 1: up = first (0.2 > 0.1) wins.
    assert pair_wins(s, np.array([False, True, True, False])) == (2, 2)
    tied = np.array([[0.7, 0.3], [0.3, 0.7]])
    assert pair_wins(tied, np.array([True, False])) == (0, 0)


def _random_scorer(seed: int, k: int = 2):
    """A fixed 'model' that never saw any key: random linear scores of the pixels."""
    w = np.random.default_rng(seed).standard_normal((16 * 16, k)) * 3

    def scores(x):
        z = x.reshape(len(x), -1) @ w[: x[0].size]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return scores


@pytest.mark.parametrize(("kind", "k"), [("trigger", 2), ("trigger", 3), ("harmless", 2)])
def test_false_claims_happen_at_exactly_the_exact_size(kind, k):
    # Over 600 keys, a model made without the key is claimed with the test's exact size
    # (the largest binomial tail <= 0.05), within 3.5 standard errors.
    n, rate = 24, 0.05
    p_vals = []
    model = as_scorer(_random_scorer(1, k))
    for seed in range(600):
        key = WatermarkKey(seed, num_classes=k, n_triggers=n, image_size=16, kind=kind)
        p_vals.append(verify_watermark(model, key, false_claim_rate=rate).p_value)
    p_vals = np.array(p_vals)
    trials = n if kind == "trigger" else n // 2
    p0 = 1 / k if kind == "trigger" else 0.5
    sizes = [binomial_sf(j, trials, p0) for j in range(trials + 2)]
    exact = max(s for s in sizes if s <= rate)
    observed = np.mean(p_vals <= rate)
    se = np.sqrt(exact * (1 - exact) / len(p_vals))
    # Harmless pairs may tie and drop out, which only makes the test more conservative.
    assert observed <= exact + 3.5 * se
    if kind == "trigger":
        assert abs(observed - exact) <= 3.5 * se


def test_null_model_rate_is_never_below_the_design_and_keeps_the_level():
    assert null_model_rate(np.array([40]), np.array([100]), 0.5) == 0.5
    assert null_model_rate(np.array([60, 62]), np.array([100, 100]), 0.5) > 0.6
    # With null models that never saw the key, p-values are at least the binomial ones.
    model = as_scorer(_random_scorer(2))
    nulls = [as_scorer(_random_scorer(s)) for s in (3, 4, 5)]
    for seed in range(20):
        key = WatermarkKey(seed, n_triggers=24, image_size=16)
        plain = verify_watermark(model, key, false_claim_rate=0.05)
        withn = verify_watermark(model, key, false_claim_rate=0.05, null_models=nulls)
        assert withn.p_value >= plain.p_value
        assert withn.null == "null models" and len(withn.null_model_rates) == 3


def test_a_perfect_owner_is_verified_and_a_constant_model_is_not():
    key = WatermarkKey(8, n_triggers=32, image_size=16)
    t = make_triggers(key)
    owner = verify_watermark(lambda x: np.eye(2)[t.labels[: len(x)]], key)
    assert owner.verified and owner.p_value == pytest.approx(0.5**32)
    constant = verify_watermark(lambda x: np.tile([0.9, 0.1], (len(x), 1)), key)
    assert not constant.verified


# -- bad input ------------------------------------------------------------------------------
def test_too_few_queries_says_how_many_are_needed():
    key = WatermarkKey(1, n_triggers=100, image_size=16)
    with pytest.raises(InvalidInputError) as e:
        verify_watermark(
            lambda x: np.full((len(x), 2), 0.5), key, queries=10, false_claim_rate=1e-6
        )
    assert str(e.value) == MSG_TOO_FEW_QUERIES.format(
        n=10, rate=1e-6, k=2, kind="trigger", needed=20
    )


def test_a_model_with_other_classes_is_refused():
    key = WatermarkKey(1, num_classes=2, n_triggers=32, image_size=16)
    with pytest.raises(InvalidInputError) as e:
        verify_watermark(lambda x: np.full((len(x), 3), 1 / 3), key)
    assert str(e.value) == MSG_CLASSES.format(got=3, want=2)


def test_scores_of_the_wrong_shape_are_refused():
    key = WatermarkKey(1, n_triggers=32, image_size=16)
    with pytest.raises(InvalidInputError, match="expected"):
        verify_watermark(lambda x: np.zeros((len(x) + 1, 2)), key)
    with pytest.raises(InvalidInputError, match="NaN"):
        verify_watermark(lambda x: np.full((len(x), 2), np.nan), key)


# -- the utility change and its CI ----------------------------------------------------------
def test_utility_change_by_hand():
    y = np.array([0, 0, 1, 1])
    a = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    b = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    u = utility_change(y, a, b, n_boot=50)
    assert (u.auroc_before, u.auroc_after) == (1.0, 0.75)
    assert (u.accuracy_before, u.accuracy_after) == (1.0, 0.5)
    assert u.auroc_drop == 0.25


def test_utility_change_agrees_with_sklearn():
    # Reference: sklearn.metrics.roc_auc_score on the same scores.
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    a = rng.dirichlet(np.ones(3), 200)
    b = rng.dirichlet(np.ones(3), 200)
    u = utility_change(y, a, b, n_boot=20)
    assert u.auroc_before == pytest.approx(roc_auc_score(y, a, multi_class="ovr"), abs=1e-9)
    assert u.auroc_after == pytest.approx(roc_auc_score(y, b, multi_class="ovr"), abs=1e-9)


def test_utility_change_ci_covers_the_true_difference_with_clustered_patients():
    # Two correlated binormal models, patients with 1-3 images sharing a random effect
    # and a label; the true image-level AUROCs are Phi(d / sqrt(2 (su^2 + 1))).
    rng = np.random.default_rng(11)
    su, d_a, d_b = 0.8, 1.0, 1.4
    phi = NormalDist().cdf
    truth = phi(d_b / np.sqrt(2 * (su**2 + 1))) - phi(d_a / np.sqrt(2 * (su**2 + 1)))
    covered, reps = 0, 200
    for r in range(reps):
        n_pat = 120
        sizes = rng.integers(1, 4, n_pat)
        pid = np.repeat(np.arange(n_pat), sizes)
        y = np.repeat(rng.random(n_pat) < 0.3, sizes).astype(int)
        u = np.repeat(rng.normal(0, su, n_pat), sizes)
        e1 = rng.standard_normal(len(y))
        e2 = 0.6 * e1 + 0.8 * rng.standard_normal(len(y))
        sa, sb = d_a * y + u + e1, d_b * y + u + e2
        two = lambda s: np.column_stack([-s, s])  # noqa: E731
        ch = utility_change(y, two(sa), two(sb), patient_ids=pid, n_boot=400, random_state=r)
        covered += ch.auroc_change_ci[0] <= truth <= ch.auroc_change_ci[1]
    assert 0.90 <= covered / reps <= 0.985
