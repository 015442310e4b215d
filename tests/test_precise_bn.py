"""BatchNorm statistics at the kept weights (PreciseBN) and the training loop's use of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medaudit._errors import InvalidParameterError
from medaudit.data import Cohort
from medaudit.models import build_model, train_model
from medaudit.models._batchnorm import batchnorm_layers, precise_batchnorm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.BatchNorm2d(3, momentum=0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_statistics_are_the_sample_weighted_batch_statistics():
    net = _net().train()
    torch.manual_seed(1)
    batches = [2.0 + 3.0 * torch.randn(n, 1, 6, 6) for n in (16, 16, 7, 1)]
    seen_inputs: dict[nn.Module, list[torch.Tensor]] = {}
    dropout_modes = []
    hooks = [
        bn.register_forward_pre_hook(
            lambda mod, args: seen_inputs.setdefault(mod, []).append(args[0].detach())
        )
        for bn in batchnorm_layers(net)
    ]
    hooks.append(net[3].register_forward_pre_hook(lambda m, a: dropout_modes.append(m.training)))
    used = precise_batchnorm(net, batches)
    for h in hooks:
        h.remove()
    assert used == 39  # the batch of one is skipped
    assert dropout_modes == [False, False, False]  # dropout off during the pass
    for bn, xs in seen_inputs.items():
        # Reference, by hand: mean over every (image, pixel); variance = the batches'
        # unbiased variances weighted by their rows (PyTorch's definition of the running
        # variance, here without the moving average).
        flat = [x.transpose(0, 1).reshape(x.shape[1], -1).double() for x in xs]
        rows = torch.tensor([float(x.shape[0]) for x in xs], dtype=torch.float64)
        mean = torch.cat(flat, 1).mean(1)
        var = sum(r * f.var(1, unbiased=True) for r, f in zip(rows, flat, strict=True))
        assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5)
        assert torch.allclose(bn.running_var.double(), var / rows.sum(), rtol=1e-5)
    # Modes and momenta are restored.
    assert net.training and all(m.training for m in net.modules())
    assert [bn.momentum for bn in batchnorm_layers(net)] == [0.1, 0.3]


def test_a_model_without_batchnorm_is_left_alone():
    model = build_model("small_cnn_gn", random_state=0)

    def never():
        raise AssertionError("the batches must not be consumed")
        yield  # pragma: no cover

    assert precise_batchnorm(model, never()) == 0


def _cohort(n=96, seed=0, side=16):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    imgs = rng.normal(0.3, 0.1, (n, side, side)).astype(np.float32)
    imgs[labels == 1, 4:8, 4:8] += 0.4
    return Cohort(pd.DataFrame({"label": labels}), images=np.clip(imgs, 0, 1))


def test_the_weight_trajectory_does_not_depend_on_precise_bn():
    train, val = _cohort(seed=0), _cohort(n=40, seed=1)
    kw = {"epochs": 2, "batch_size": 16, "patience": None, "seed": 3}
    a = train_model(build_model("small_cnn", random_state=0), train, val, precise_bn=True, **kw)
    b = train_model(build_model("small_cnn", random_state=0), train, val, precise_bn=False, **kw)
    params_a = dict(a.model.named_parameters())
    for name, p in b.model.named_parameters():
        assert torch.equal(p, params_a[name]), name
    # ... only the BatchNorm statistics differ (and with them what validation measures).
    bn_a, bn_b = batchnorm_layers(a.model), batchnorm_layers(b.model)
    assert not all(
        torch.equal(x.running_var, y.running_var) for x, y in zip(bn_a, bn_b, strict=True)
    )


@pytest.mark.parametrize("with_val", [True, False])
def test_the_returned_model_carries_the_training_images_statistics(with_val):
    train, val = _cohort(seed=0), _cohort(n=40, seed=1)
    res = train_model(
        build_model("small_cnn", random_state=0),
        train,
        val if with_val else None,
        epochs=2,
        batch_size=16,
        seed=0,
    )
    kept = [bn.running_mean.clone() for bn in batchnorm_layers(res.model)]
    x = (torch.from_numpy(train.load_all()) - res.mean[0]) / res.std[0]
    precise_batchnorm(res.model, x.split(16))
    after = [bn.running_mean for bn in batchnorm_layers(res.model)]
    # The first layer's mean does not depend on how the rows are batched; deeper layers
    # see inputs normalised by batch statistics, so only nearly.
    assert torch.allclose(kept[0], after[0], atol=1e-5)
    for before, now in zip(kept[1:], after[1:], strict=True):
        assert torch.allclose(before, now, atol=1e-2)


def test_monitor_is_validated():
    train = _cohort()
    with pytest.raises(InvalidParameterError) as err:
        train_model(build_model("small_cnn"), train, epochs=1, monitor="auroc")
    assert str(err.value) == (
        "The 'monitor' parameter of train_model must be one of ('val_loss', 'val_auroc'). "
        "Got 'auroc' instead."
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_learnable_synthetic_task_gives_validation_ece_at_most_005(seed):
    # Issue 7 item 6: the model train_model hands out is calibrated enough to audit. Three
    # synthetic hospitals at 32x32 (no hard subgroup, no held-out site), 12 epochs; the kept
    # epoch's validation ECE was 0.032, 0.022, 0.027 for seeds 0-2 here (the old loop,
    # PyTorch's running statistics and AUROC selection: up to 0.44 on this kind of task,
    # experiments/calibration/results.md).
    from medaudit.data import generate_hospitals
    from medaudit.stats import expected_calibration_error

    c = generate_hospitals(
        n_sites=3,
        patients_per_site=150,
        image_size=32,
        hard_subgroup=None,
        heldout_site=None,
        split_fractions=(0.5, 0.4, 0.1),
        seed=seed,
    )
    res = train_model(
        build_model("small_cnn", random_state=seed), c.split("train"), c.split("val"),
        epochs=12, seed=seed,
    )  # fmt: skip
    kept = res.history.set_index("epoch").loc[res.best_epoch]
    assert kept["val_auroc"] > 0.95
    assert kept["val_ece"] <= 0.05, res.history
    # The recorded ECE is the one the returned model gives (eval mode, kept weights).
    from medaudit.inference import predict

    p = predict(res.model, c.split("val"), mean=res.mean, std=res.std)
    assert expected_calibration_error(p.labels, p.score) == pytest.approx(kept["val_ece"], abs=1e-4)
