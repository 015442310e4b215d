"""Removal attacks: pruning and quantisation against references, the registry, the table."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit import InvalidParameterError
from medaudit.data import Cohort
from medaudit.models import build_model
from medaudit.watermark import (
    AttackData,
    RemovalAttack,
    WatermarkKey,
    assess_robustness,
    get_removal_attack,
    list_removal_attacks,
    make_triggers,
    prune_weights,
    quantise_weights,
    register_removal_attack,
)
from medaudit.watermark._attacks import _ATTACKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_builtin_attacks_cover_the_issue():
    names = list_removal_attacks()
    assert {"finetune", "prune", "quantise", "dp_finetune"} <= set(names)
    assert get_removal_attack("finetune").strengths == (0.1, 0.2)
    assert all(0.2 <= s <= 0.5 for s in get_removal_attack("prune").strengths)


@pytest.mark.parametrize("fraction", [0.2, 0.35, 0.5])
def test_pruning_agrees_with_torch_global_l1_pruning(fraction):
    # Reference: torch.nn.utils.prune.global_unstructured with L1Unstructured.
    from torch.nn.utils import prune

    model = build_model("small_cnn", random_state=0)
    ref = copy.deepcopy(model)
    prune_weights(model, fraction)
    params = [
        (m, "weight") for m in ref.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=fraction)
    for (m_ref, _), m in zip(
        params,
        [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))],
        strict=True,
    ):
        torch.testing.assert_close(m.weight, m_ref.weight)
    total = sum(m.weight.numel() for m, _ in params)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    assert zeros == round(fraction * total)


def test_folding_batchnorm_keeps_the_function_and_lets_dp_sgd_train():
    # Reference: torch.nn.utils.fusion.fuse_conv_bn_eval on each conv/BN pair, and the
    # eval-mode outputs of the unfolded model.
    from medaudit.privacy import incompatible_layers
    from medaudit.watermark import fold_batchnorm

    model = build_model("small_cnn", random_state=0)
    x = torch.rand(64, 1, 16, 16)
    model.train()
    model(x)  # non-trivial running statistics
    model.eval()
    before = model(x).detach()
    assert incompatible_layers(model)
    fold_batchnorm(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-4)
    assert not incompatible_layers(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantised_weights_take_at_most_2_to_the_bits_levels_per_channel(bits):
    model = build_model("small_cnn", random_state=1)
    before = copy.deepcopy(model)
    quantise_weights(model, bits)
    for m, b in zip(model.modules(), before.modules(), strict=True):
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.detach().view(m.weight.shape[0], -1)
            wb = b.weight.detach().view(b.weight.shape[0], -1)
            scale = wb.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
            assert (w - wb).abs().le(scale / 2 + 1e-7).all()
            for row in w:
                assert len(torch.unique(row)) <= 2**bits - 1


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(InvalidParameterError, match="already registered"):
        register_removal_attack(get_removal_attack("prune"))
    with pytest.raises(InvalidParameterError, match="names from"):
        get_removal_attack("laundering")


def test_robustness_table_gives_every_setting_a_verdict():
    """An owner-perfect callable stands in for a marked model; a 'wipe' attack removes it."""
    rng = np.random.default_rng(0)
    test = Cohort(
        pd.DataFrame({"label": rng.integers(0, 2, 40)}),
        images=rng.random((40, 16, 16), dtype=np.float32),
    )
    key = WatermarkKey(4, n_triggers=32, image_size=16)
    t = make_triggers(key)

    class Memoriser(torch.nn.Module):
        """Answers each trigger with its key label (nearest trigger), others by mean pixel."""

        def __init__(self) -> None:
            super().__init__()
            self.trig = torch.nn.Parameter(
                torch.from_numpy(t.images).flatten(1), requires_grad=False
            )
            self.lab = torch.from_numpy(t.labels)
            self.on = torch.nn.Parameter(torch.ones(()), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = torch.cdist(x.flatten(1), self.trig, compute_mode="donot_use_mm_for_euclid_dist")
            hit = (d.min(dim=1).values < 1e-3) & (self.on > 0)
            base = torch.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], 1)
            trig = torch.nn.functional.one_hot(self.lab[d.argmin(1)], 2).float() * 10
            return torch.where(hit[:, None], trig, base)

    def wipe(model, data, s):
        with torch.no_grad():
            model.on.fill_(0.0 if s > 0.5 else 1.0)
        return model

    register_removal_attack(RemovalAttack("wipe", "forget the triggers", (0.2, 0.9), wipe))
    try:
        data = AttackData(train=test, image_size=16)
        res = assess_robustness(Memoriser(), key, data=data, test=test, attacks=["wipe"])
    finally:
        _ATTACKS.pop("wipe")
    assert res.table["verdict"].tolist() == ["survives", "removed"]
    assert res.table["accuracy_kept"].all()
    assert not bool(res.summary["robust"].iat[0])
    assert res.marked_p_value == pytest.approx(0.5**32)
