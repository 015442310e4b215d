"""Checkpoint I/O: round trips of every format, refusal of pickles, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import torch
from safetensors import safe_open

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.models import (
    CHECKPOINT_FORMAT,
    LoadedModel,
    _checkpoint,
    build_model,
    list_architectures,
    load_checkpoint,
    save_checkpoint,
)

# Tiny models train fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIDE = 32


def _model(arch="small_cnn", in_channels=1, num_classes=2, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, in_channels=in_channels, num_classes=num_classes).eval()


def _outputs(model, in_channels=1, side=SIDE):
    x = torch.rand(4, in_channels, side, side, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return model.eval()(x)


def _save(model, path, **overrides):
    kwargs = {
        "arch": "small_cnn",
        "in_channels": 1,
        "num_classes": 2,
        "image_size": 64,
        "class_names": ["normal", "effusion"],
        "mean": [0.45],
        "std": [0.22],
    }
    kwargs.update(overrides)
    return save_checkpoint(model, path, **kwargs)


class _CreatesMarker:
    """A pickle payload: unpickling it calls os.mkdir(marker), creating a directory."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# -- safetensors ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list_architectures())
def test_safetensors_round_trip_every_architecture(tmp_path, arch):
    model = _model(arch, in_channels=3, num_classes=3)
    path = save_checkpoint(
        model,
        tmp_path / "m.safetensors",
        arch=arch,
        in_channels=3,
        num_classes=3,
        image_size=SIDE,
        class_names=["a", "b", "c"],
        mean=[0.1, 0.2, 0.3],
        std=0.5,
        extra={"seed": 7, "epsilon": 3.5},
    )
    loaded = load_checkpoint(path)
    assert isinstance(loaded, LoadedModel)
    assert loaded.format == "safetensors"
    assert (loaded.arch, loaded.in_channels, loaded.num_classes, loaded.image_size) == (
        arch,
        3,
        3,
        SIDE,
    )
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.mean == [0.1, 0.2, 0.3] and loaded.std == [0.5]
    assert loaded.extra == {"seed": 7, "epsilon": 3.5}
    assert not loaded.model.training
    assert torch.equal(_outputs(model, 3), _outputs(loaded.model, 3))
    assert loaded.inference_options() == {
        "image_size": SIDE,
        "in_channels": 3,
        "mean": [0.1, 0.2, 0.3],
        "std": [0.5],
    }


def test_safetensors_metadata_is_strings_with_json_lists(tmp_path):
    path = _save(_model(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == CHECKPOINT_FORMAT
    assert meta["arch"] == "small_cnn"
    assert json.loads(meta["class_names"]) == ["normal", "effusion"]
    assert json.loads(meta["mean"]) == [0.45]
    assert json.loads(meta["image_size"]) == 64
    assert all(isinstance(v, str) for v in meta.values())


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "m.safetensors"
    _save(_model(seed=0), path)
    before = path.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]

    import safetensors.torch

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(_model(seed=1), path)
    # The old checkpoint is intact and the partial file is gone.
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]


def test_safetensors_arguments_that_contradict_metadata(tmp_path):
    path = _save(_model(), tmp_path / "m.safetensors")
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path, arch="resnet18")
    assert str(err.value) == _checkpoint.METADATA_CONFLICT.format(
        path=path, name="arch", saved="small_cnn", given="resnet18"
    )
    with pytest.raises(InvalidInputError, match="num_classes=2"):
        load_checkpoint(path, num_classes=3)
    # image_size overrides the saved value (resizing the input is legitimate).
    assert load_checkpoint(path, image_size=128).image_size == 128


def test_safetensors_with_unregistered_arch(tmp_path, monkeypatch):
    path = _save(_model(), tmp_path / "m.safetensors")
    from medaudit.models import _zoo

    monkeypatch.setattr(_zoo, "_REGISTRY", {"resnet18": _zoo.ResNet18})
    monkeypatch.setattr(_checkpoint, "_REGISTRY", _zoo._REGISTRY)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path)
    assert str(err.value) == _checkpoint.UNKNOWN_ARCH.format(
        path=path, arch="small_cnn", known="'resnet18'"
    )


def test_plain_safetensors_without_metadata_is_a_state_dict(tmp_path):
    from safetensors.torch import save_file

    model = _model()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_checkpoint(path, arch="small_cnn")
    assert loaded.format == "safetensors"
    assert torch.equal(_outputs(model), _outputs(loaded.model))
    with pytest.raises(InvalidInputError, match="no architecture"):
        load_checkpoint(path)


# -- state dicts ----------------------------------------------------------------------------
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict", "module_prefix"])
def test_state_dict_round_trip(tmp_path, wrapper):
    model = _model(num_classes=3)
    sd = model.state_dict()
    if wrapper == "module_prefix":  # saved from DataParallel
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrapper is not None:
        obj = {wrapper: sd, "epoch": 12, "best_auroc": 0.91}
    else:
        obj = sd
    path = tmp_path / "m.pt"
    torch.save(obj, path)
    loaded = load_checkpoint(path, arch="small_cnn", image_size=SIDE)
    assert loaded.format == "state_dict"
    # in_channels and num_classes are read off the weights' shapes.
    assert (loaded.in_channels, loaded.num_classes, loaded.image_size) == (1, 3, SIDE)
    assert loaded.class_names == ["class_0", "class_1", "class_2"]
    assert loaded.mean is None and loaded.std is None
    assert torch.equal(_outputs(model), _outputs(loaded.model))


def test_state_dict_of_torchvision_densenet_loads_with_arch(tmp_path):
    from torchvision.models import densenet121

    torch.manual_seed(0)
    tv = densenet121(weights=None, num_classes=2)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    loaded = load_checkpoint(path, arch="densenet121")
    assert loaded.in_channels == 3
    assert torch.allclose(_outputs(tv, 3), _outputs(loaded.model, 3), atol=1e-6)


def test_state_dict_needs_arch(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} holds bare weights with no architecture; pass the architecture "
        "(arch=... / --arch), one of: 'densenet121', 'resnet18', 'small_cnn', 'small_cnn_dp', "
        "'small_cnn_gn'."
    )


def test_state_dict_with_wrong_arch_lists_the_problems(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path, arch="resnet18")
    msg = str(err.value)
    assert msg.startswith(f"The weights in {path} do not fit architecture 'resnet18'")
    # Every resnet18 entry is missing, except BatchNorm's num_batches_tracked, which torch
    # fills in by itself for backward compatibility.
    n_resnet = sum(
        not k.endswith("num_batches_tracked") for k in build_model("resnet18").state_dict()
    )
    n_small = len(_model().state_dict())
    assert f"Missing key(s) in state_dict ({n_resnet})" in msg
    assert f"Unexpected key(s) in state_dict ({n_small})" in msg
    assert "\n" not in msg


def test_state_dict_shape_mismatch(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_model(num_classes=2).state_dict(), path)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path, arch="small_cnn", num_classes=4)
    msg = str(err.value)
    assert "num_classes=4" in msg
    assert "size mismatch (2): head.weight: copying a param with shape" in msg


def test_unknown_arch_for_state_dict(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(InvalidInputError, match="'vgg16', which is not registered"):
        load_checkpoint(path, arch="vgg16")


# -- TorchScript ----------------------------------------------------------------------------
# torch >= 2.9 deprecates torch.jit.script/trace/save (FutureWarning); users still have such
# archives, and load_checkpoint itself must not warn (filterwarnings=error would catch it).
TS_WRITE_OK = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@TS_WRITE_OK
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_round_trip_infers_num_classes(tmp_path, how):
    model = _model(num_classes=3)
    example = torch.rand(1, 1, SIDE, SIDE)
    if how == "script":
        ts = torch.jit.script(model)
    else:
        with warnings.catch_warnings():
            # GroupNorm's batch-size check makes the tracer warn (TracerWarning); harmless here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            ts = torch.jit.trace(model, example)
    path = tmp_path / "m.pt"  # the suffix does not decide the format
    torch.jit.save(ts, str(path))
    loaded = load_checkpoint(path, image_size=SIDE)
    assert loaded.format == "torchscript"
    assert (loaded.arch, loaded.in_channels, loaded.num_classes) == ("torchscript", 1, 3)
    assert loaded.image_size == SIDE
    assert torch.equal(_outputs(model), _outputs(loaded.model))


@TS_WRITE_OK
def test_torchscript_with_explicit_metadata(tmp_path):
    model = _model(in_channels=3)
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = load_checkpoint(path, arch="small_cnn", in_channels=3, num_classes=2)
    assert (loaded.arch, loaded.in_channels, loaded.num_classes) == ("small_cnn", 3, 2)
    assert torch.equal(_outputs(model, 3), _outputs(loaded.model, 3))


# -- refusing pickled objects ---------------------------------------------------------------
def test_payload_would_run_if_unpickled(tmp_path):
    # Control for the tests below: the payload really does create its marker when unpickled.
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_CreatesMarker(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch_save", "pickle_dump", "legacy_torch_save"])
def test_pickled_object_is_refused_and_no_code_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"state_dict": _CreatesMarker(marker)}
    if writer == "torch_save":
        torch.save(payload, path)
    elif writer == "legacy_torch_save":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path, arch="small_cnn")
    assert str(err.value) == _checkpoint.PICKLED_OBJECT_REFUSED.format(path=path)
    assert not marker.exists()


def test_pickled_full_module_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_model(), path)
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(path, arch="small_cnn")
    assert str(err.value) == (
        f"{path} is a pickled Python object; loading it could run code. Save a state dict or "
        "safetensors instead: torch.save(model.state_dict(), 'model.pt') or "
        "medaudit.models.save_checkpoint(model, 'model.safetensors', ...)."
    )


# -- bad files and parameters ---------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError) as err:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert str(err.value) == f"No checkpoint file at {tmp_path / 'nope.safetensors'}."


@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(range(64)), b"not a checkpoint"]
)
def test_unrecognised_file(tmp_path, content):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="not a checkpoint medaudit can read"):
        load_checkpoint(path, arch="small_cnn")


def test_truncated_safetensors(tmp_path):
    path = _save(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_non_tensor_state_dict_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"a": 1, "b": [1, 2]}, path)
    with pytest.raises(InvalidInputError, match="not a plain state dict"):
        load_checkpoint(path, arch="small_cnn")


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"arch": "vgg"}, "arch"),
        ({"class_names": ["only-one"]}, "class_names"),
        ({"std": [0.0]}, "std"),
        ({"mean": [0.1, 0.2]}, "mean"),  # 2 values for 1 channel
        ({"extra": {"obj": object()}}, "extra"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_save_validates(tmp_path, overrides, name):
    path = tmp_path / "m.safetensors"
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of save_checkpoint"):
        _save(_model(), path, **overrides)
    assert not path.exists()


def test_save_unwraps_a_wrapper_module(tmp_path):
    class Wrapper(torch.nn.Module):  # like Opacus' GradSampleModule
        def __init__(self, m):
            super().__init__()
            self._module = m

    model = _model()
    path = _save(Wrapper(model), tmp_path / "m.safetensors")
    assert torch.equal(_outputs(model), _outputs(load_checkpoint(path).model))


def test_load_validates_parameters(tmp_path):
    with pytest.raises(InvalidParameterError, match="'num_classes' parameter of load_checkpoint"):
        load_checkpoint(tmp_path / "x.pt", num_classes=1)
    with pytest.raises(InvalidParameterError, match="'path' parameter"):
        load_checkpoint(42)


def test_nothing_writes_next_to_the_checkpoint_on_load(tmp_path):
    path = _save(_model(), tmp_path / "m.safetensors")
    load_checkpoint(path)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_damaged_metadata(tmp_path):
    from safetensors.torch import save_file

    path = _save(_model(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata={**meta, "in_channels": '"one"'})
    with pytest.raises(InvalidInputError, match="has damaged medaudit metadata"):
        load_checkpoint(path)


def test_loaded_model_feeds_predict(tmp_path):
    import numpy as np
    import pandas as pd

    from medaudit.data import Cohort
    from medaudit.inference import predict

    path = _save(_model(), tmp_path / "m.safetensors", image_size=16)
    loaded = load_checkpoint(path)
    cohort = Cohort(pd.DataFrame({"label": [0, 1, 0]}), images=np.zeros((3, 24, 24), np.uint8))
    preds = predict(loaded.model, cohort, **loaded.inference_options())
    assert preds.scores.shape == (3, 2) and preds.features.shape == (3, 64)
