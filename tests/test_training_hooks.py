"""The seams of the one training loop: samplers, wrap/batch/loss/step hooks, local updates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit import InvalidInputError, InvalidParameterError
from medaudit._device import resolve_device
from medaudit.data import Cohort
from medaudit.models import (
    ClassBalancedSampler,
    PoissonSampler,
    ShuffleSampler,
    TrainHooks,
    build_model,
    local_update,
    train_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cohort(n=64, seed=0, prevalence=0.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    imgs = rng.random((n, 8, 8), dtype=np.float32) * 0.2
    imgs[y == 1, 2:6, 2:6] += 0.6  # a learnable square
    return Cohort(pd.DataFrame({"label": y}), images=imgs)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ samplers
def test_poisson_sampler_includes_each_row_independently_at_the_rate():
    q, n = 0.05, 2000
    s = PoissonSampler(q)
    assert s.steps_per_epoch(n) == 20
    counts = np.zeros(n)
    sizes = []
    for _ in range(10):
        for b in s.epoch(np.zeros(n), _gen(len(sizes))):
            counts[b] += 1
            sizes.append(len(b))
            assert len(np.unique(b)) == len(b)  # no row twice in one batch
    # 200 batches: mean size q*n = 100 (sd 9.7 per batch -> 0.7 for the mean of 200)
    assert abs(np.mean(sizes) - q * n) < 4
    assert abs(np.var(sizes) - n * q * (1 - q)) < 0.35 * n * q * (1 - q)
    # per-row inclusion ~ Binomial(200, q): mean 10
    assert abs(counts.mean() - 10) < 0.5
    a = [b.tolist() for b in s.epoch(np.zeros(50), _gen(1))]
    assert a == [b.tolist() for b in s.epoch(np.zeros(50), _gen(1))]  # seeded


def test_class_balanced_sampler_balances_a_rare_class():
    y = np.r_[np.zeros(950), np.ones(50)].astype(int)
    drawn = np.concatenate(list(ClassBalancedSampler(64).epoch(y, _gen())))
    assert 0.44 < y[drawn].mean() < 0.56


def test_shuffle_sampler_keeps_the_old_behaviour():
    s = ShuffleSampler(4)
    batches = list(s.epoch(np.zeros(9), _gen()))
    assert [len(b) for b in batches] == [4, 4] and s.steps_per_epoch(9) == 2
    assert len(set(np.concatenate(batches))) == 8  # eight distinct rows, one left out


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, True, "x"])
def test_poisson_rate_is_validated(bad):
    with pytest.raises(InvalidParameterError, match="sample_rate"):
        PoissonSampler(bad)


def test_unknown_sampler_name_is_refused():
    with pytest.raises(InvalidParameterError, match="'sampler' parameter of train_model"):
        train_model(build_model("small_cnn_gn"), _cohort(), epochs=1, sampler="weighted")


# -------------------------------------------------------------------------------- hooks
def test_poisson_training_counts_steps_and_reports_empty_batches():
    c = _cohort(n=20)
    empties = []
    hooks = TrainHooks(on_empty=lambda step: empties.append(step.step))
    res = train_model(
        build_model("small_cnn_gn"),
        c,
        epochs=3,
        batch_size=1,  # q = 1/20: about a third of the batches are empty
        sampler="poisson",
        hooks=hooks,
        mean=0.0,
        std=1.0,
    )
    assert res.steps == 60 and res.history["steps"].tolist() == [20, 40, 60]
    assert 5 < len(empties) < 40


def test_wrap_batch_loss_and_step_hooks_are_used():
    c = _cohort()
    calls = {"wrap": 0, "batch": 0, "extra": 0, "step": []}

    class Doubling(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 2

    def wrap(model, opt):
        calls["wrap"] += 1
        return Doubling(model), opt

    def batch(x, y, idx, step):
        calls["batch"] += 1
        extra = torch.ones((1, *x.shape[1:]))
        return torch.cat([x, extra]), torch.cat([y, torch.tensor([1])]), np.r_[idx, -1]

    def extra(step):
        calls["extra"] += 1
        assert step.idx[-1] == -1 and step.x.shape[0] == len(step.idx)
        assert isinstance(step.model, Doubling)
        return step.logits.sum() * 0.0

    hooks = TrainHooks(
        wrap=wrap,
        batch=batch,
        extra_losses=(extra,),
        on_step=(lambda s: calls["step"].append(s.step),),
    )
    res = train_model(build_model("small_cnn_gn"), c, epochs=2, batch_size=16, hooks=hooks)
    assert calls["wrap"] == 1
    assert calls["batch"] == calls["extra"] == res.steps == 8
    assert calls["step"] == list(range(8))


def test_loss_hook_replaces_cross_entropy():
    c = _cohort()
    model = build_model("small_cnn_gn", random_state=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero = TrainHooks(loss=lambda step: step.logits.sum() * 0.0)
    opt = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731 - no weight decay
    train_model(model, c, epochs=1, batch_size=16, hooks=zero, optimizer_factory=opt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # a zero loss moves nothing


def test_features_are_given_to_hooks_when_asked():
    shapes = []
    hooks = TrainHooks(
        want_features=True, extra_losses=(lambda s: shapes.append(s.features.shape) or 0.0,)
    )
    train_model(build_model("small_cnn"), _cohort(), epochs=1, batch_size=32, hooks=hooks)
    assert shapes and shapes[0][0] == 32 and len(shapes[0]) == 2


def test_steps_include_those_of_discarded_epochs():
    c, v = _cohort(seed=1), _cohort(seed=2)
    res = train_model(build_model("small_cnn"), c, v, epochs=8, batch_size=16, patience=1)
    assert res.steps == 4 * len(res.history) and res.best_epoch <= len(res.history)


def test_max_steps_stops_mid_epoch():
    res = train_model(build_model("small_cnn_gn"), _cohort(), epochs=5, batch_size=16, max_steps=6)
    assert res.steps == 6 and len(res.history) == 2


def test_local_update_is_trained_minus_initial():
    c = _cohort()
    model = build_model("small_cnn_gn", random_state=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    up = local_update(model, c, steps=5, batch_size=8, mean=0.0, std=1.0, seed=3)
    assert up.steps == 5 and up.n_examples == 64
    for k, d in up.update.items():
        torch.testing.assert_close(init[k] + d, up.state[k])
    # from the same initial state and seed, the update is reproducible
    again = local_update(
        model, c, steps=5, batch_size=8, mean=0.0, std=1.0, seed=3, initial_state=init
    )
    for k in up.update:
        torch.testing.assert_close(up.update[k], again.update[k])


def test_validation_reports_loss_and_ece():
    c, v = _cohort(n=128, seed=1), _cohort(n=128, seed=2)
    res = train_model(build_model("small_cnn"), c, v, epochs=3, batch_size=16)
    h = res.history
    assert h["val_loss"].notna().all() and h["val_ece"].between(0, 1).all()


# ------------------------------------------------------------------------------- device
def test_device_auto_and_unavailable_accelerators():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InvalidInputError, match="Unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            resolve_device("cuda")
