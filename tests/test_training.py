"""The training loop: learns a planted signal, stops early, restores the best weights,
is deterministic, and validates its inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.data import Cohort
from medaudit.inference import predict
from medaudit.models import (
    TrainResult,
    _training,
    build_model,
    compute_normalization,
    macro_ovr_auroc,
    train_model,
)

# Tiny models train fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def square_task(n=200, side=16, seed=0, strength=0.4):
    """Label 1: a bright square (side/4 wide) somewhere. Label 0: the same added brightness
    on as many scattered pixels, so mean intensity does not give the label away; only local
    structure does."""
    rng = np.random.default_rng(seed)
    imgs = rng.normal(0.3, 0.1, (n, side, side)).astype(np.float32)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    sq = side // 4
    for i in range(n):
        if labels[i]:
            r, c = rng.integers(0, side - sq, 2)
            imgs[i, r : r + sq, c : c + sq] += strength
        else:
            imgs[i].flat[rng.choice(side * side, sq * sq, replace=False)] += strength
    return Cohort(pd.DataFrame({"label": labels}), images=np.clip(imgs, 0, 1), name="squares")


@pytest.fixture(scope="module")
def task():
    c = square_task()
    return c.subset(np.arange(150), name="train"), c.subset(np.arange(150, 200), name="val")


def _fresh(arch="small_cnn", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(arch, **kw)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- learning, early stopping, best weights --------------------------------------------------
def test_small_cnn_learns_the_planted_square_and_stops_early(task):
    train, val = task
    states = {}
    model = _fresh()

    def keep_state(epoch, metrics):
        states[epoch] = _state(model)

    res = train_model(
        model,
        train,
        val,
        epochs=30,
        batch_size=32,
        lr=3e-3,
        patience=2,
        callbacks=[keep_state],
        monitor="val_auroc",
    )
    assert isinstance(res, TrainResult)
    assert res.best_val_auroc > 0.9
    # Early stopping: training ended `patience` epochs after the best one, well before 30.
    assert res.stopped_early
    assert len(res.history) == res.best_epoch + 2 < 30
    assert res.history["epoch"].tolist() == list(range(1, len(res.history) + 1))
    assert res.history.columns.tolist() == [
        "epoch",
        "steps",
        "train_loss",
        "val_auroc",
        "val_loss",
        "val_ece",
        "seconds",
    ]
    assert res.best_val_auroc == res.history["val_auroc"].max()
    assert res.history["val_auroc"].iloc[res.best_epoch - 1] == res.best_val_auroc
    # The best epoch's weights are restored, not the last epoch's.
    assert _same(_state(res.model), states[res.best_epoch])
    assert not _same(_state(res.model), states[len(res.history)])
    assert not res.model.training
    # The restored model scores the validation set as recorded (same normalisation).
    preds = predict(res.model, val, mean=res.mean, std=res.std)
    assert preds.labels.tolist() == val.labels.tolist()
    assert macro_ovr_auroc(preds.labels, preds.scores) == pytest.approx(res.best_val_auroc)


def test_training_is_deterministic(task):
    train, val = task
    kw = {"epochs": 2, "batch_size": 32, "augment": True}
    a = train_model(_fresh(), train, val, seed=5, **kw)
    b = train_model(_fresh(), train, val, seed=5, **kw)
    c = train_model(_fresh(), train, val, seed=6, **kw)
    assert _same(_state(a.model), _state(b.model))
    pd.testing.assert_frame_equal(
        a.history.drop(columns="seconds"), b.history.drop(columns="seconds")
    )
    assert not _same(_state(a.model), _state(c.model))
    assert a.seed == 5 and c.seed == 6


def test_global_rng_is_left_as_it_was(task):
    train, _ = task
    model = _fresh()
    before = torch.get_rng_state()
    train_model(model, train, epochs=1, batch_size=64)
    assert torch.equal(before, torch.get_rng_state())


def test_streaming_and_in_memory_batches_agree(task, monkeypatch):
    train, val = task
    kw = {"epochs": 2, "batch_size": 32, "seed": 3}
    in_memory = train_model(_fresh(), train, val, **kw)
    monkeypatch.setattr(_training, "_PRELOAD_BYTES", 0)
    streamed = train_model(_fresh(), train, val, **kw)
    assert _same(_state(in_memory.model), _state(streamed.model))


def test_without_validation_runs_every_epoch(task):
    train, _ = task
    res = train_model(_fresh(), train, epochs=3, batch_size=64)
    assert len(res.history) == 3 and res.best_epoch == 3
    assert res.history["val_auroc"].isna().all() and np.isnan(res.best_val_auroc)
    assert not res.stopped_early


def test_patience_none_never_stops_early_but_restores_best(task):
    train, val = task
    res = train_model(_fresh(), train, val, epochs=4, batch_size=64, patience=None)
    assert len(res.history) == 4 and not res.stopped_early
    # The default monitor is the validation loss: the kept epoch has the lowest.
    assert res.best_epoch == res.history["val_loss"].idxmin() + 1
    assert res.best_val_auroc == res.history["val_auroc"].iloc[res.best_epoch - 1]
    res = train_model(
        _fresh(), train, val, epochs=4, batch_size=64, patience=None, monitor="val_auroc"
    )
    assert res.best_val_auroc == res.history["val_auroc"].max()


# -- hooks: optimizer factory, callbacks ----------------------------------------------------
def test_optimizer_factory_replaces_adamw(task):
    train, _ = task
    model = build_model("small_cnn_gn")  # no BatchNorm running statistics to move
    before = _state(model)
    made = []

    def frozen_sgd(params):
        opt = torch.optim.SGD(params, lr=0.0)
        made.append(opt)
        return opt

    train_model(model, train, epochs=1, batch_size=64, optimizer_factory=frozen_sgd)
    assert len(made) == 1
    assert _same(before, _state(model))  # lr 0: nothing moved


def test_callbacks_see_every_epoch_and_can_stop(task):
    train, val = task
    seen = []

    def record(epoch, metrics):
        seen.append((epoch, sorted(metrics)))

    def stop_after_two(epoch, metrics):
        return epoch == 2

    res = train_model(
        _fresh(), train, val, epochs=10, batch_size=64, callbacks=[stop_after_two, record]
    )
    assert len(res.history) == 2
    keys = ["epoch", "seconds", "steps", "train_loss", "val_auroc", "val_ece", "val_loss"]
    assert seen == [(1, keys), (2, keys)]  # `record` ran in epoch 2 although stop was asked


# -- input handling -------------------------------------------------------------------------
def test_normalisation_is_computed_from_train_when_not_given(task):
    train, _ = task
    res = train_model(_fresh(), train, epochs=1, batch_size=64)
    assert (res.mean, res.std) == compute_normalization(train)
    res = train_model(_fresh(), train, epochs=1, batch_size=64, mean=0.0, std=1.0)
    assert (res.mean, res.std) == ([0.0], [1.0])
    assert (res.image_size, res.in_channels) == (16, 1)


def test_channels_and_size_follow_the_model(task):
    train, val = task
    model = _fresh(in_channels=3)
    res = train_model(model, train, val, epochs=1, batch_size=64, image_size=8)
    assert (res.in_channels, res.image_size) == (3, 8)
    assert len(res.mean) == 3 and np.isfinite(res.best_val_auroc)


def test_multiclass_and_single_logit_models_train():
    rng = np.random.default_rng(0)
    imgs = rng.random((60, 8, 8), dtype=np.float32)
    labels = np.arange(60) % 3
    cohort = Cohort(pd.DataFrame({"label": labels}), images=imgs)
    res = train_model(_fresh(num_classes=3), cohort, cohort, epochs=2, batch_size=16)
    assert np.isfinite(res.history["val_auroc"]).all()

    class OneLogit(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 1)

        def forward(self, x):
            return self.lin(x.flatten(1))

    binary = Cohort(pd.DataFrame({"label": labels % 2}), images=imgs)
    res = train_model(OneLogit(), binary, binary, epochs=2, batch_size=16)
    assert np.isfinite(res.best_val_auroc)


def test_a_final_batch_of_one_is_dropped_so_batchnorm_trains():
    rng = np.random.default_rng(0)
    cohort = Cohort(
        pd.DataFrame({"label": np.arange(33) % 2}), images=rng.random((33, 32, 32), np.float32)
    )
    calls = []
    res = train_model(
        _fresh("resnet18"),
        cohort,
        epochs=1,
        batch_size=16,
        callbacks=[lambda e, m: calls.append(m["train_loss"])],
    )
    assert len(calls) == 1 and np.isfinite(calls[0]) and res.best_epoch == 1


def test_validation_with_one_class_is_refused(task):
    train, val = task
    one_class = val.subset(val.labels == 1)
    with pytest.raises(InvalidInputError) as err:
        train_model(_fresh(), train, one_class, epochs=1)
    assert str(err.value) == _training.VAL_SINGLE_CLASS.format(name=one_class.name)


def test_labels_beyond_the_model_outputs_are_refused():
    cohort = Cohort(
        pd.DataFrame({"label": [0, 1, 2, 1]}), images=np.zeros((4, 8, 8), np.float32), name="c"
    )
    with pytest.raises(InvalidInputError) as err:
        train_model(_fresh(num_classes=2), cohort, epochs=1)
    assert str(err.value) == (
        "The cohort 'c' has label 2 but the model outputs 2 classes; build the model "
        "with num_classes=3."
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"epochs": 0},
            "The 'epochs' parameter of train_model must be an int >= 1. Got 0 instead.",
        ),
        (
            {"lr": -1.0},
            "The 'lr' parameter of train_model must be a finite float >= 0. Got -1.0 instead.",
        ),
        (
            {"patience": 0},
            "The 'patience' parameter of train_model must be an int >= 1. Got 0 instead.",
        ),
        (
            {"std": [0.0]},
            "The 'std' parameter of train_model must be positive floats. Got [0.0] instead.",
        ),
        (
            {"mean": [0.1, 0.2], "std": 1.0},
            "The 'mean' parameter of train_model must be one or 1 "
            "(in_channels) values. Got [0.1, 0.2] instead.",
        ),
        (
            {"callbacks": [1]},
            "The 'callbacks' parameter of train_model must be a sequence of "
            "callables. Got (1,) instead.",
        ),
    ],
)
def test_parameters_are_validated(task, kwargs, message):
    train, _ = task
    with pytest.raises(InvalidParameterError) as err:
        train_model(_fresh(), train, **kwargs)
    assert str(err.value) == message


def test_train_must_be_a_cohort():
    with pytest.raises(InvalidParameterError, match="'train' parameter of train_model"):
        train_model(_fresh(), np.zeros((4, 1, 8, 8)))


# -- augmentation ---------------------------------------------------------------------------
def test_augment_keeps_shape_range_and_is_seeded():
    x = torch.rand(5, 1, 16, 16)
    a = _training._augment(x, torch.Generator().manual_seed(0))
    b = _training._augment(x, torch.Generator().manual_seed(0))
    c = _training._augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # A shift moves content: a single bright pixel stays a single bright pixel nearby.
    dot = torch.zeros(1, 1, 16, 16)
    dot[0, 0, 8, 8] = 1.0
    moved = _training._augment(dot, torch.Generator().manual_seed(2))
    r, cc = divmod(int(moved.flatten().argmax()), 16)
    assert abs(r - 8) <= 1 and abs(cc - 8) <= 1


# -- statistics helpers ---------------------------------------------------------------------
def test_compute_normalization_matches_numpy():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 3, 5, 6), dtype=np.uint8)
    cohort = Cohort(pd.DataFrame({"label": np.arange(7) % 2}), images=imgs)
    mean, std = compute_normalization(cohort, batch_size=3)
    # Cohort scales uint8 to [0, 1] in float32; the sums are then accumulated in float64.
    ref = (imgs.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)
    gray_mean, _ = compute_normalization(cohort, channels=1)
    assert gray_mean == pytest.approx([ref.mean()], abs=1e-6)


def test_compute_normalization_of_constant_images():
    cohort = Cohort(pd.DataFrame({"label": [0, 1]}), images=np.full((2, 4, 4), 0.25, np.float32))
    assert compute_normalization(cohort) == ([0.25], [1.0])


def test_validation_auroc_agrees_with_sklearn():
    # Reference: sklearn.metrics.roc_auc_score (binary, and multi_class="ovr" macro average).
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    s = rng.dirichlet(np.ones(4), 300)
    s[np.arange(300), y] += 0.3 * rng.random(300)
    s /= s.sum(axis=1, keepdims=True)
    assert macro_ovr_auroc(y, s) == pytest.approx(
        roc_auc_score(y, s, multi_class="ovr", average="macro"), abs=1e-9
    )
    yb = y % 2
    sb = np.stack([1 - s[:, 1], s[:, 1]], axis=1)
    assert macro_ovr_auroc(yb, sb) == pytest.approx(roc_auc_score(yb, sb[:, 1]), abs=1e-9)


# -- slow: the documented speed claim -------------------------------------------------------
@pytest.mark.slow
def test_small_cnn_trains_on_64px_grayscale_in_seconds():
    import time

    c = square_task(n=600, side=64, seed=1, strength=0.3)
    train, val = c.subset(np.arange(500)), c.subset(np.arange(500, 600))
    t0 = time.perf_counter()
    res = train_model(_fresh(), train, val, epochs=8, batch_size=64, lr=3e-3, patience=2)
    seconds = time.perf_counter() - t0
    assert res.best_val_auroc > 0.9
    assert seconds < 120
