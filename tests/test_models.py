"""Architecture zoo: registry behaviour and shared checks over every registered entry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medaudit._errors import InvalidParameterError
from medaudit.models import (
    DenseNet121,
    ResNet18,
    SmallCNN,
    _zoo,
    build_model,
    list_architectures,
    register_architecture,
)

# Tiny models train fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Small inputs keep resnet18 / densenet121 fast; both downsample by 32, so 32 is the minimum.
INPUT_SIDE = {"small_cnn": 16}
DEFAULT_SIDE = 32


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so tests can register without leaking entries."""
    monkeypatch.setattr(_zoo, "_REGISTRY", dict(_zoo._REGISTRY))
    return _zoo._REGISTRY


# -- properties of every registered architecture ---------------------------------------------
@pytest.mark.parametrize("arch", list_architectures())
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 4)])
def test_every_architecture_shares_the_contract(arch, in_channels, num_classes):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=in_channels, num_classes=num_classes).eval()
    side = INPUT_SIDE.get(arch, DEFAULT_SIDE)
    x = torch.rand(3, in_channels, side, side)
    with torch.no_grad():
        f = model.features(x)
        logits = model(x)
        via_head = model.head(f)
    assert f.ndim == 2 and f.shape[0] == 3 and f.shape[1] > 0
    assert logits.shape == (3, num_classes)
    assert torch.equal(logits, via_head)
    assert torch.isfinite(logits).all()
    # The first convolution really takes `in_channels` (not silently averaged).
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels
    with pytest.raises(RuntimeError):
        model(torch.rand(2, in_channels + 1, side, side))


@pytest.mark.parametrize("arch", list_architectures())
def test_every_architecture_trains_a_step_and_is_seeded(arch):
    side = INPUT_SIDE.get(arch, DEFAULT_SIDE)
    torch.manual_seed(1)
    a = build_model(arch)
    torch.manual_seed(1)
    b = build_model(arch)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x, y = torch.rand(4, 1, side, side), torch.tensor([0, 1, 0, 1])
    loss = nn.functional.cross_entropy(a(x), y)
    loss.backward()
    head_grad = next(iter(a.head.parameters())).grad
    first_conv = next(m for m in a.modules() if isinstance(m, nn.Conv2d))
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


# -- specific architectures -----------------------------------------------------------------
def test_builtin_entries_and_classes():
    assert {"small_cnn", "resnet18", "densenet121"} <= set(list_architectures())
    assert list_architectures() == sorted(list_architectures())
    assert isinstance(build_model("small_cnn"), SmallCNN)
    assert isinstance(build_model("resnet18"), ResNet18)


def test_small_cnn_is_small():
    n = sum(p.numel() for p in build_model("small_cnn").parameters())
    assert 30_000 < n < 80_000
    # The GroupNorm variant has no BatchNorm: usable with DP per-sample gradients and
    # federated averaging, and train- and eval-mode outputs agree.
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_model("small_cnn").modules())
    model = build_model("small_cnn_gn")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with pytest.raises(InvalidParameterError, match="'norm' parameter of SmallCNN"):
        SmallCNN(norm="layer")
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.train()(x), model.eval()(x))


def test_resnet18_loads_a_torchvision_state_dict():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    tv = resnet18(weights=None, num_classes=3)
    ours = ResNet18(in_channels=3, num_classes=3)
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), ours.eval()(x))


def test_densenet121_loads_a_torchvision_state_dict():
    from torchvision.models import densenet121

    torch.manual_seed(0)
    tv = densenet121(weights=None, num_classes=2)
    ours = DenseNet121(in_channels=3, num_classes=2)
    ours.load_state_dict(tv.state_dict(), strict=True)  # features.* -> body.*
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(tv.eval()(x), ours.eval()(x), atol=1e-6)


# -- registry -------------------------------------------------------------------------------
def _tiny(*, in_channels, num_classes):
    return SmallCNN(in_channels=in_channels, num_classes=num_classes, widths=(4, 8))


def test_register_and_build_custom(registry):
    register_architecture("tiny", _tiny)
    assert "tiny" in list_architectures()
    m = build_model("tiny", in_channels=2, num_classes=5)
    assert m(torch.rand(1, 2, 8, 8)).shape == (1, 5)


def test_duplicate_registration_raises_unless_forced(registry):
    with pytest.raises(InvalidParameterError) as err:
        register_architecture("small_cnn", _tiny)
    assert str(err.value) == (
        "An architecture named 'small_cnn' is already registered. "
        "Pass force=True to replace it, or choose another name."
    )
    register_architecture("small_cnn", _tiny, force=True)
    assert build_model("small_cnn").feature_dim == 8


def test_factory_without_features_head_is_rejected(registry):
    register_architecture("plain", lambda *, in_channels, num_classes: nn.Linear(1, num_classes))
    with pytest.raises(InvalidParameterError) as err:
        build_model("plain")
    assert str(err.value) == _zoo.MISSING_FEATURES_HEAD.format(name="plain", cls="Linear")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"arch": "vgg"},
            "The 'arch' parameter of build_model must be one of 'densenet121', 'resnet18', "
            "'small_cnn', 'small_cnn_dp', 'small_cnn_gn'. Got 'vgg' instead.",
        ),
        (
            {"arch": "small_cnn", "in_channels": 0},
            "The 'in_channels' parameter of build_model must be a positive int. Got 0 instead.",
        ),
        (
            {"arch": "small_cnn", "num_classes": 1},
            "The 'num_classes' parameter of build_model must be an int >= 2. Got 1 instead.",
        ),
    ],
)
def test_build_model_validates(kwargs, message):
    with pytest.raises(InvalidParameterError) as err:
        build_model(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(("name", "factory"), [("", _tiny), ("x", "not callable")])
def test_register_validates(registry, name, factory):
    with pytest.raises(InvalidParameterError):
        register_architecture(name, factory)


def test_build_model_random_state_fixes_init_and_leaves_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("small_cnn", random_state=5)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched
    b = build_model("small_cnn", random_state=5)
    c = build_model("small_cnn", random_state=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
