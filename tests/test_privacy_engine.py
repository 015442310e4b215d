"""make_private / train_private: one result object, honest step counting, clear refusals."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset, WeightedRandomSampler

from medaudit._errors import InvalidInputError
from medaudit.data import Cohort
from medaudit.models import (
    ClassBalancedSampler,
    PoissonSampler,
    Step,
    TrainHooks,
    build_model,
    train_model,
)
from medaudit.privacy import (
    PrivacyWarning,
    PrivateTraining,
    fix_model,
    incompatible_layers,
    make_private,
    train_private,
)
from medaudit.privacy._engine import (
    MSG_HOOK_CONFLICT,
    MSG_INPLACE,
    MSG_OTHER_MODEL,
    MSG_TORCH_HOOK_WARNING,
)
from medaudit.privacy._inputs import (
    MSG_BUDGET_ARGS,
    MSG_DELTA,
    MSG_EMPTY,
    MSG_EPSILON,
    MSG_LOADER_SAMPLER,
    MSG_NOT_POISSON,
    MSG_OPTIMIZER_PARAMS,
    MSG_WEIGHTED_SAMPLER,
)
from medaudit.privacy._validate import (
    FIX_HINT,
    MSG_BATCHNORM,
    MSG_INCOMPATIBLE,
    MSG_STATISTICS_LOST,
    NO_FIX_HINT,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # torch's note on Opacus's hook of the first layer (train_private silences it itself)
    pytest.mark.filterwarnings(f"ignore:{MSG_TORCH_HOOK_WARNING}:UserWarning"),
]


def _cohort(n=200, side=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.random((n, side, side), dtype=np.float32)
    images[labels == 1, 2:5, 2:5] += 0.8  # a learnable lesion
    return Cohort(pd.DataFrame({"label": labels}), images=np.clip(images, 0, 1))


@pytest.fixture
def data():
    return _cohort()


def _model(seed=0):
    return build_model("small_cnn_gn", random_state=seed)


# ----------------------------------------------------------------------- the result object
def test_one_frozen_result_whatever_the_arguments(data):
    a = make_private(_model(), None, data, noise_multiplier=1.0, batch_size=20)
    b = make_private(
        _model(),
        None,
        data,
        target_epsilon=3.0,
        target_delta=1e-3,
        accountant="rdp",
        batch_size=20,
        epochs=2,
    )
    loader = DataLoader(TensorDataset(torch.zeros(200, 1, 8, 8)), batch_size=25, shuffle=True)
    c = make_private(_model(), None, loader, noise_multiplier=1.0)
    for priv in (a, b, c):
        assert isinstance(priv, PrivateTraining)
        with pytest.raises(dataclasses.FrozenInstanceError):
            priv.sample_rate = 0.5  # type: ignore[misc]
    assert (a.sample_rate, a.planned_steps, a.loader) == (0.1, 10, None)
    assert b.planned_steps == 20 and b.target_epsilon == 3.0 and b.ledger.epsilon == 0.0
    assert c.sample_rate == 1 / 8 and type(c.loader).__name__ == "DPDataLoader"
    assert isinstance(a.sampler, PoissonSampler)
    assert any("inplace=False" in n for n in a.notes)  # small_cnn_gn's ReLU(inplace=True)


def test_ledger_equals_opacus_privacy_engine_on_the_same_run(data):
    """The same model, data size, sample rate and sigma through raw Opacus give the same eps."""
    from opacus import PrivacyEngine

    for accountant in ("prv", "rdp"):
        res = train_private(
            _model(),
            data,
            noise_multiplier=1.0,
            target_delta=1e-3,
            epochs=2,
            batch_size=20,
            accountant=accountant,
        )
        model = _model()
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        with warnings.catch_warnings():  # "Secure RNG turned off": neither side uses one
            warnings.simplefilter("ignore", UserWarning)
            engine = PrivacyEngine(accountant=accountant)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = DataLoader(
            TensorDataset(torch.rand(200, 1, 8, 8), torch.zeros(200).long()), batch_size=20
        )
        gsm, dpo, dl = engine.make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0
        )
        for _ in range(2):
            for x, y in dl:
                dpo.zero_grad()
                nn.functional.cross_entropy(gsm(x), y).backward()
                dpo.step()
        assert engine.accountant.history == [(1.0, 0.1, 20)]
        assert res.ledger.steps == res.training.steps == 20
        assert res.ledger.epsilon == engine.get_epsilon(1e-3)


# ---------------------------------------------------------------------- counting every step
def test_empty_poisson_batches_are_noise_steps_the_accountant_counts():
    small = _cohort(n=40)
    priv = make_private(_model(), None, small, noise_multiplier=1.0, batch_size=1, epochs=2)
    gen = torch.Generator().manual_seed(0)
    batches = [b for _ in range(2) for b in priv.sampler.epoch(small.labels, gen)]
    n_empty = sum(len(b) == 0 for b in batches)
    assert n_empty > 10  # q = 1/40: about a third of the batches are empty
    before = [p.detach().clone() for p in priv.module.parameters()]
    priv.hooks.on_empty(
        Step(
            priv.model,
            torch.zeros(0, 1, 1, 1),
            torch.zeros(0).long(),
            np.zeros(0, int),
            1,
            0,
            optimizer=priv.optimizer,
        )
    )
    assert priv.steps == 1  # counted, and the weights moved by the noise alone
    assert any(
        not torch.equal(a, b) for a, b in zip(before, priv.module.parameters(), strict=False)
    )
    res = train_private(_model(), small, noise_multiplier=1.0, batch_size=1, epochs=2)
    assert res.training.steps == res.ledger.steps == 80
    assert res.ledger.epochs == 2 and len(res.ledger.epsilon_curve) == 2


def test_early_stopping_counts_the_steps_of_discarded_epochs(data):
    val = _cohort(n=60, seed=1)
    res = train_private(
        _model(),
        data,
        val,
        noise_multiplier=0.8,
        target_delta=1e-3,
        epochs=8,
        batch_size=20,
        patience=1,
        accountant="rdp",
        lr=0.01,
    )
    hist = res.training.history
    assert res.training.best_epoch < len(hist)  # some epochs' weights were discarded
    assert res.ledger.steps == res.training.steps == int(hist["steps"].iloc[-1])
    assert res.ledger.steps == 10 * len(hist)


def test_physical_batches_give_the_logical_batch_step(data):
    """Chunks of 7 rows clip and sum as one batch: same weights, same steps, same eps."""
    runs = [
        train_private(
            _model(),
            data,
            noise_multiplier=1.0,
            target_delta=1e-3,
            epochs=1,
            batch_size=40,
            max_physical_batch_size=m,
            accountant="rdp",
            seed=3,
        )
        for m in (None, 7)
    ]
    a, b = (dict(r.model.state_dict()) for r in runs)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
    assert runs[0].ledger == runs[1].ledger and runs[1].ledger.steps == 5


def test_plain_training_with_physical_batches_matches_whole_batches(data):
    models = []
    for m in (None, 6):
        model = _model()
        train_model(
            model,
            data,
            epochs=1,
            batch_size=32,
            seed=0,
            lr=0.01,
            hooks=TrainHooks(max_physical_batch_size=m),
        )
        models.append(model.state_dict())
    for k in models[0]:
        torch.testing.assert_close(models[0][k], models[1][k], atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="'max_physical_batch_size' parameter of TrainHooks"):
        TrainHooks(max_physical_batch_size=0)


# ------------------------------------------------------------------------ model validation
class _Counter(nn.Module):
    """A trainable layer that keeps a statistic of the data in a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x):
        return x * self.w


def _bad_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8, affine=False),  # no parameters: Opacus's validator misses it
        nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
        _Counter(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def test_every_incompatible_layer_is_listed_at_once_with_the_fix(data):
    with pytest.raises(InvalidInputError) as err:
        make_private(_bad_model(), None, data, noise_multiplier=1.0)
    probs = incompatible_layers(_bad_model())
    assert [(p.name, p.layer) for p in probs] == [
        ("1", "BatchNorm2d"),
        ("3", "BatchNorm2d"),
        ("4", "InstanceNorm2d"),
        ("5", "_Counter"),
    ]
    assert str(err.value) == MSG_INCOMPATIBLE.format(
        n=4, layers="; ".join(str(p) for p in probs), fix=FIX_HINT
    )
    assert f"1 (BatchNorm2d): {MSG_BATCHNORM}" in str(err.value)


def test_fix_swaps_batchnorm_for_groupnorm_and_reports_what_it_cannot_fix(data):
    model = _bad_model()
    with pytest.raises(InvalidInputError) as err:
        make_private(model, None, data, noise_multiplier=1.0, fix=True, groups=2)
    assert str(err.value).endswith(NO_FIX_HINT) and "5 (_Counter)" in str(err.value)
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_groups == 2
    assert isinstance(model[3], nn.GroupNorm) and not model[3].affine
    assert model[4].track_running_stats is False
    # fixable only: it trains, and the notes say what was replaced
    model = build_model("small_cnn", random_state=0)
    priv = make_private(model, None, data, noise_multiplier=1.0, fix=True)
    assert priv.notes[0] == "Replaced body.1: BatchNorm2d -> GroupNorm(16, 16)."
    assert "body.13: BatchNorm2d -> GroupNorm(32, 64)" in priv.notes[3]
    assert not incompatible_layers(model)


def test_fix_warns_that_trained_batchnorm_statistics_are_lost(data):
    model = build_model("small_cnn", random_state=0)
    train_model(model, data, epochs=1, batch_size=50)
    with pytest.warns(PrivacyWarning) as rec:
        fix_model(model, groups=1024)
    names = "body.1, body.5, body.9, body.13"
    assert str(rec[0].message) == MSG_STATISTICS_LOST.format(n=4, names=names)
    assert [m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)] == [
        16,
        32,
        48,
        64,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh model has no statistics to lose
        fix_model(build_model("small_cnn"))


def test_a_forward_pass_that_writes_in_place_is_a_clear_error(data):
    model = build_model("resnet18", random_state=0)
    with pytest.raises(InvalidInputError) as err:
        make_private(model, None, data, noise_multiplier=1.0, fix=True)
    assert str(err.value) == MSG_INPLACE


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        ("balanced", MSG_WEIGHTED_SAMPLER.format(what="The class-balanced sampler")),
        (ClassBalancedSampler(8), MSG_WEIGHTED_SAMPLER.format(what="The class-balanced sampler")),
        ("shuffle", MSG_NOT_POISSON.format(what="The 'shuffle' sampler")),
    ],
)
def test_samplers_the_accountant_would_misjudge_are_refused(data, sampler, message):
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, data, noise_multiplier=1.0, sampler=sampler)
    assert str(err.value) == message


def test_weighted_or_subset_dataloaders_are_refused():
    ds = TensorDataset(torch.zeros(100, 1, 8, 8))
    weighted = DataLoader(ds, batch_size=10, sampler=WeightedRandomSampler([1.0] * 100, 100))
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, weighted, noise_multiplier=1.0)
    assert str(err.value) == MSG_WEIGHTED_SAMPLER.format(
        what="The DataLoader's WeightedRandomSampler"
    )
    subset = DataLoader(ds, batch_size=10, sampler=SubsetRandomSampler(range(50)))
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, subset, noise_multiplier=1.0)
    assert str(err.value) == MSG_LOADER_SAMPLER.format(kind="SubsetRandomSampler")


@pytest.mark.parametrize("eps", [0, -1.0, float("nan"), float("inf"), "8"])
def test_epsilon_must_be_positive_and_finite(data, eps):
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, data, target_epsilon=eps)
    assert str(err.value) == MSG_EPSILON.format(got=eps)


@pytest.mark.parametrize("delta", [1, 1.5, 0.0, -1e-5])
def test_delta_must_lie_in_the_open_unit_interval(data, delta):
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, data, target_epsilon=8.0, target_delta=delta)
    assert str(err.value) == MSG_DELTA.format(got=delta)


def test_budget_arguments_empty_data_and_large_delta(data):
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, data)
    assert str(err.value) == MSG_BUDGET_ARGS.format(got="neither")
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, data, target_epsilon=1.0, noise_multiplier=1.0)
    assert str(err.value) == MSG_BUDGET_ARGS.format(got="target_epsilon and noise_multiplier")
    empty = Cohort(pd.DataFrame({"label": np.zeros(0, int)}), images=np.zeros((0, 8, 8)))
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), None, empty, target_epsilon=1.0)
    assert str(err.value) == MSG_EMPTY
    with pytest.warns(PrivacyWarning, match=r"delta=0\.01 is not below 1/N = 0\.005"):
        priv = make_private(_model(), None, data, noise_multiplier=1.0, target_delta=0.01)
    assert priv.delta == 0.01
    assert make_private(_model(), None, data, noise_multiplier=1.0).delta == 1e-4  # < 0.1/N


def test_optimizer_must_hold_the_models_parameters(data):
    other = torch.optim.SGD(_model(seed=1).parameters(), lr=0.1)
    with pytest.raises(InvalidInputError) as err:
        make_private(_model(), other, data, noise_multiplier=1.0)
    assert str(err.value) == MSG_OPTIMIZER_PARAMS
    model = build_model("small_cnn", random_state=0)
    built_before_fix = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    priv = make_private(model, built_before_fix, data, noise_multiplier=1.0, fix=True)
    assert priv.optimizer.original_optimizer.defaults["momentum"] == 0.5
    assert "rebuilt" in priv.notes[-1]


def test_hooks_belong_to_their_model_and_compose_with_others(data):
    priv = make_private(_model(), None, data, noise_multiplier=1.0, batch_size=50)
    with pytest.raises(InvalidInputError) as err:
        train_model(_model(seed=2), data, epochs=1, sampler=priv.sampler, hooks=priv.hooks)
    assert str(err.value) == MSG_OTHER_MODEL
    with pytest.raises(InvalidInputError) as err:
        train_private(_model(), data, noise_multiplier=1.0, hooks=TrainHooks(on_empty=print))
    assert str(err.value) == MSG_HOOK_CONFLICT.format(name="on_empty")
    seen = []
    res = train_private(
        _model(),
        data,
        noise_multiplier=1.0,
        epochs=1,
        batch_size=50,
        hooks=TrainHooks(on_step=(lambda s: seen.append(s.step),)),
    )
    assert seen == list(range(res.ledger.steps))
