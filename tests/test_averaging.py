"""WeightAverage: the EMA of the weights agrees with torch's AveragedModel, and loads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medaudit._errors import InvalidParameterError
from medaudit.data import Cohort
from medaudit.models import TrainHooks, WeightAverage, build_model, train_model


def _cohort(n: int = 48, seed: int = 0) -> Cohort:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    imgs = rng.random((n, 8, 8), dtype=np.float32) * 0.5
    imgs[y == 1, 2:6, 2:6] += 0.5
    return Cohort(pd.DataFrame({"label": y}), images=imgs)


def test_average_equals_torch_averaged_model() -> None:
    model = build_model("small_cnn", random_state=0)
    torch_avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    ours = WeightAverage(model, decay=0.9, start=2)

    def torch_hook(step) -> None:  # the same steps as ours: from step 2 on
        if step.step >= 2:
            torch_avg.update_parameters(model)

    train_model(
        model, _cohort(), epochs=2, batch_size=16, hooks=TrainHooks(on_step=(ours, torch_hook))
    )
    assert ours.count == 4  # 3 steps an epoch, 2 epochs, the first 2 skipped
    theirs = dict(torch_avg.module.named_parameters())
    for name, p in ours.averaged.items():
        torch.testing.assert_close(p, theirs[name].detach(), rtol=1e-6, atol=1e-7)
        # and the average is not simply the last iterate
    last = dict(model.named_parameters())
    assert any(not torch.equal(p, last[n].detach()) for n, p in ours.averaged.items())


def test_load_puts_the_average_in_and_recomputes_batchnorm() -> None:
    model = build_model("small_cnn", random_state=1)
    avg = WeightAverage(model, decay=0.5)
    train_model(model, _cohort(), epochs=1, batch_size=16, hooks=TrainHooks(on_step=(avg,)))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x = torch.from_numpy(np.asarray(_cohort(seed=3).images, dtype=np.float32)).reshape(-1, 1, 8, 8)
    assert avg.load([x[:24], x[24:]])
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), avg.averaged[name])
    assert not torch.allclose(bn.running_mean, before)
    assert not model.training


def test_nothing_kept_nothing_loaded() -> None:
    model = build_model("small_cnn", random_state=0)
    avg = WeightAverage(model, start=10_000)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_model(model, _cohort(), epochs=1, batch_size=16, hooks=TrainHooks(on_step=(avg,)))
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert avg.count == 0 and not avg.load()
    assert all(torch.equal(after[n], p.detach()) for n, p in model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"decay": 1.0}, "decay"),
        ({"decay": True}, "decay"),
        ({"start": -1}, "start"),
        ({"start": 1.5}, "start"),
    ],
)
def test_bad_parameters(kw: dict, name: str) -> None:
    with pytest.raises(InvalidParameterError, match=name):
        WeightAverage(build_model("small_cnn"), **kw)
