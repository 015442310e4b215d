"""Safe checkpoint I/O: safetensors (default), state-dict ``.pt``, TorchScript.

Loading a checkpoint never runs Python code from the file: safetensors holds only tensors
and JSON metadata; ``.pt`` files go through ``torch.load(weights_only=True)``, whose
restricted unpickler refuses anything but tensors and plain containers; a pickled module
(``torch.save(model)``) is refused with :data:`PICKLED_OBJECT_REFUSED`. The format is
recognised from the file's content, not its suffix.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models._zoo import _REGISTRY, build_model, list_architectures

__all__ = ["CHECKPOINT_FORMAT", "LoadedModel", "load_checkpoint", "save_checkpoint"]

#: Value of the ``format`` metadata key of the safetensors files medaudit writes.
CHECKPOINT_FORMAT = "medaudit.checkpoint/1"

PICKLED_OBJECT_REFUSED = (
    "{path} is a pickled Python object; loading it could run code. Save a state dict or "
    "safetensors instead: torch.save(model.state_dict(), 'model.pt') or "
    "medaudit.models.save_checkpoint(model, 'model.safetensors', ...)."
)
ARCH_REQUIRED = (
    "{path} holds bare weights with no architecture; pass the architecture "
    "(arch=... / --arch), one of: {known}."
)
UNKNOWN_ARCH = (
    "{path} was saved with architecture {arch!r}, which is not registered "
    "(registered: {known}). Register it with medaudit.models.register_architecture first."
)
METADATA_CONFLICT = "{path} was saved with {name}={saved!r}, but {name}={given!r} was requested."
MISSING_FILE = "No checkpoint file at {path}."

_SAFETENSORS_KEYS = (
    "arch",
    "in_channels",
    "num_classes",
    "image_size",
    "class_names",
    "mean",
    "std",
)


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from a checkpoint, with what it expects of its input.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on the CPU.
    arch : str
        Zoo architecture name (``"torchscript"`` for a TorchScript archive loaded without
        an ``arch`` argument).
    in_channels, num_classes : int
    image_size : int or None
        Side of the square input the model was trained on (None: unknown, use the data's).
    class_names : list of str
    mean, std : list of float or None
        Per-channel normalisation applied after scaling images to [0, 1] (None: none known).
    format : {"safetensors", "state_dict", "torchscript"}
    extra : dict
        The ``extra`` metadata given to :func:`save_checkpoint` (empty otherwise).
    privacy : dict or None
        The differential-privacy ledger stored under the metadata key ``privacy``
        (:meth:`medaudit.privacy.PrivacyLedger.to_dict`); None for a model trained
        without DP.
    """

    model: nn.Module
    arch: str
    in_channels: int
    num_classes: int
    image_size: int | None
    class_names: list[str]
    mean: list[float] | None
    std: list[float] | None
    format: str
    extra: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None

    def inference_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`medaudit.inference.predict` matching this model.

        ``predict(loaded.model, cohort, **loaded.inference_options())``.
        """
        return {
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "mean": self.mean,
            "std": self.std,
        }


# -- save ------------------------------------------------------------------------------------
def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int | None,
    class_names: Sequence[str],
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
    extra: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model's weights and metadata to a ``.safetensors`` file, atomically.

    The file is written to a temporary name in the same folder and renamed into place, so
    ``path`` is either the complete new checkpoint or untouched.

    Parameters
    ----------
    model : torch.nn.Module
        A zoo model (a wrapper with ``_module`` or ``module``, as Opacus and DataParallel
        make, is unwrapped).
    path : path
        Destination, conventionally ending in ``.safetensors``; parent folders are created.
    arch : str
        Registered architecture name; :func:`load_checkpoint` rebuilds the model from it.
    in_channels, num_classes : int
    image_size : int or None
        Side of the square training images.
    class_names : sequence of str of length num_classes
    mean, std : float, sequence of float or None
        Normalisation used in training (one value, or one per channel).
    extra : mapping, optional
        Any JSON-serialisable facts to keep with the weights (e.g. the seed).
    privacy : mapping, optional
        A DP ledger (``PrivacyLedger.to_dict()``), written as JSON under the metadata
        key ``privacy``.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile, os
    >>> from medaudit.models import build_model, load_checkpoint
    >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> _ = save_checkpoint(build_model("small_cnn"), p, arch="small_cnn", in_channels=1,
    ...                     num_classes=2, image_size=64, class_names=["normal", "disease"],
    ...                     mean=0.5, std=0.25)
    >>> loaded = load_checkpoint(p)
    >>> loaded.arch, loaded.image_size, loaded.class_names, loaded.mean, loaded.format
    ('small_cnn', 64, ['normal', 'disease'], [0.5], 'safetensors')
    """
    from safetensors.torch import save_file

    func = "save_checkpoint"
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    if not isinstance(arch, str) or arch not in _REGISTRY:
        known = ", ".join(repr(a) for a in list_architectures())
        raise param_error("arch", func, f"a registered architecture ({known})", arch)
    in_channels = _check_int(in_channels, "in_channels", func, minimum=1)
    num_classes = _check_int(num_classes, "num_classes", func, minimum=2)
    if image_size is not None:
        image_size = _check_int(image_size, "image_size", func, minimum=1)
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise param_error("class_names", func, "a sequence of str", class_names)
    if len(class_names) != num_classes:
        raise param_error(
            "class_names", func, f"a sequence of {num_classes} names (num_classes)", class_names
        )
    meta = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "in_channels": json.dumps(in_channels),
        "num_classes": json.dumps(num_classes),
        "image_size": json.dumps(image_size),
        "class_names": json.dumps([str(c) for c in class_names]),
        "mean": json.dumps(_check_norm(mean, "mean", func, in_channels)),
        "std": json.dumps(_check_norm(std, "std", func, in_channels)),
    }
    try:
        meta["extra"] = json.dumps(dict(extra or {}), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise param_error("extra", func, "a JSON-serialisable mapping", extra) from exc
    if privacy is not None:
        try:
            meta["privacy"] = json.dumps(dict(privacy), allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise param_error("privacy", func, "a JSON-serialisable mapping", privacy) from exc

    model = _unwrap(model)
    # clone(): safetensors refuses tensors that share memory (tied weights, views).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _unwrap(model: nn.Module) -> nn.Module:
    # Opacus' GradSampleModule keeps the model in `_module`, DataParallel in `module`.
    for attr in ("_module", "module"):
        inner = model._modules.get(attr) if len(model._modules) == 1 else None
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def _check_int(v: Any, name: str, func: str, *, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise param_error(name, func, f"an int >= {minimum}", v)
    return int(v)


def _check_norm(v: Any, name: str, func: str, in_channels: int) -> list[float] | None:
    if v is None:
        return None
    vals = [v] if isinstance(v, (int, float)) else v
    try:
        out = [float(x) for x in vals]
    except (TypeError, ValueError) as exc:
        raise param_error(name, func, "a float, a sequence of floats or None", v) from exc
    ok_len = len(out) in (1, in_channels)
    ok_val = all(x == x and abs(x) != float("inf") for x in out) and (
        name != "std" or all(x > 0 for x in out)
    )
    if not (ok_len and ok_val):
        what = "positive" if name == "std" else "finite"
        raise param_error(
            name, func, f"one or {in_channels} (in_channels) {what} floats, or None", v
        )
    return out


# -- load ------------------------------------------------------------------------------------
def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> LoadedModel:
    """Load a checkpoint without running any code stored in it.

    Formats (recognised from the content):

    - ``.safetensors`` written by :func:`save_checkpoint`: the model is rebuilt from the
      metadata and the weights are loaded strictly. Arguments that contradict the metadata
      raise, except ``image_size``, which overrides it. A safetensors file without
      medaudit metadata is treated as a state dict.
    - State dict (``.pt``/``.pth``) via ``torch.load(weights_only=True)``, also wrapped as
      ``{"state_dict": ...}`` or ``{"model_state_dict": ...}``. Needs ``arch``;
      ``in_channels`` and ``num_classes`` default to what the weights' shapes say.
    - TorchScript archive: ``torch.jit.load``. ``in_channels`` defaults to the first conv's
      and ``num_classes`` is found by one forward pass on zeros.

    A pickled module or any other pickled Python object is refused.

    Parameters
    ----------
    path : path
    arch : str, optional
        Registered architecture (required for bare state dicts).
    in_channels, num_classes, image_size : int, optional

    Returns
    -------
    LoadedModel

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, pickled object, unknown architecture, or weights
        that do not fit the architecture (every missing, unexpected and mis-shaped tensor
        is listed).
    """
    func = "load_checkpoint"
    if not isinstance(path, (str, os.PathLike)):
        raise param_error("path", func, "a path", type(path).__name__)
    if arch is not None and not isinstance(arch, str):
        raise param_error("arch", func, "a str or None", arch)
    for name, v, lo in (
        ("in_channels", in_channels, 1),
        ("num_classes", num_classes, 2),
        ("image_size", image_size, 1),
    ):
        if v is not None:
            _check_int(v, name, func, minimum=lo)
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(MISSING_FILE.format(path=path))
    kind = _sniff(path)
    if kind == "torchscript":
        return _load_torchscript(path, arch, in_channels, num_classes, image_size)
    if kind == "safetensors":
        meta, state = _read_safetensors(path)
        if meta.get("format") == CHECKPOINT_FORMAT and "arch" in meta:
            return _from_safetensors_meta(
                path, meta, state, arch, in_channels, num_classes, image_size
            )
        fmt = "safetensors"
    else:
        state = _read_state_dict(path)
        fmt = "state_dict"
    return _from_state_dict(path, state, fmt, arch, in_channels, num_classes, image_size)


def _sniff(path: Path) -> str:
    """'torchscript', 'torch' (zip or legacy pickle), 'safetensors', or raise."""
    with path.open("rb") as f:
        head = f.read(9)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as exc:
            raise InvalidInputError(f"{path} is a damaged zip archive: {exc}") from exc
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 0 < n <= path.stat().st_size - 8:
            return "safetensors"
    # A pickle starts with the PROTO opcode and a protocol number (torch's legacy format too).
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"
    raise InvalidInputError(
        f"{path} is not a checkpoint medaudit can read (safetensors, a PyTorch state dict "
        "or a TorchScript archive)."
    )


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a readable safetensors file: {exc}") from exc
    return meta, state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": the restricted unpickler judges the file anyway.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True refused a global (a class, a function): the file is a pickled
        # Python object such as a whole module. Nothing from it was executed.
        raise InvalidInputError(PICKLED_OBJECT_REFUSED.format(path=path)) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(
            f"{path} is not a readable PyTorch checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InvalidInputError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors); "
            f"it holds a {type(obj).__name__}."
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidInputError(
            f"{path} is not a plain state dict: entries {', '.join(bad[:5])} are not tensors."
        )
    return _strip_wrapper_prefix(dict(obj))


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Weights saved from DataParallel ("module.") or Opacus' GradSampleModule ("_module.").
    for prefix in ("_module.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _require_arch(path: Path, arch: str | None) -> str:
    known = ", ".join(repr(a) for a in list_architectures())
    if arch is None:
        raise InvalidInputError(ARCH_REQUIRED.format(path=path, known=known))
    if arch not in _REGISTRY:
        raise InvalidInputError(UNKNOWN_ARCH.format(path=path, arch=arch, known=known))
    return arch


def _from_safetensors_meta(
    path: Path,
    meta: dict[str, str],
    state: dict[str, torch.Tensor],
    arch: str | None,
    in_channels: int | None,
    num_classes: int | None,
    image_size: int | None,
) -> LoadedModel:
    try:
        raw = {k: (meta[k] if k == "arch" else json.loads(meta[k])) for k in _SAFETENSORS_KEYS}
        extra = json.loads(meta.get("extra", "{}"))
        privacy = json.loads(meta["privacy"]) if "privacy" in meta else None
        if privacy is not None and not isinstance(privacy, dict):
            raise ValueError(f"privacy must be a JSON object, got {privacy!r}")
        saved_channels = _meta_int(raw["in_channels"])
        saved_classes = _meta_int(raw["num_classes"])
        saved_size = None if raw["image_size"] is None else _meta_int(raw["image_size"])
        class_names = [str(c) for c in raw["class_names"]]
        mean = None if raw["mean"] is None else [float(v) for v in raw["mean"]]
        std = None if raw["std"] is None else [float(v) for v in raw["std"]]
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidInputError(f"{path} has damaged medaudit metadata: {exc!r}") from exc
    saved = {"arch": raw["arch"], "in_channels": saved_channels, "num_classes": saved_classes}
    for name, given in (("arch", arch), ("in_channels", in_channels), ("num_classes", num_classes)):
        if given is not None and given != saved[name]:
            raise InvalidInputError(
                METADATA_CONFLICT.format(path=path, name=name, saved=saved[name], given=given)
            )
    saved_arch = _require_arch(path, raw["arch"])
    model = _build_and_load(path, saved_arch, saved_channels, saved_classes, state)
    return LoadedModel(
        model=model,
        arch=saved_arch,
        in_channels=saved_channels,
        num_classes=saved_classes,
        image_size=image_size if image_size is not None else saved_size,
        class_names=class_names,
        mean=mean,
        std=std,
        format="safetensors",
        extra=extra if isinstance(extra, dict) else {},
        privacy=privacy,
    )


def _meta_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


def _from_state_dict(
    path: Path,
    state: dict[str, torch.Tensor],
    fmt: str,
    arch: str | None,
    in_channels: int | None,
    num_classes: int | None,
    image_size: int | None,
) -> LoadedModel:
    arch = _require_arch(path, arch)
    # Zoo models register their stem conv first and their head last, so the first 4-d and
    # the last 2-d tensor tell the channel and class counts; a wrong guess fails loudly in
    # _build_and_load, and explicit arguments always win.
    convs = [v for v in state.values() if v.ndim == 4]
    linears = [v for v in state.values() if v.ndim == 2]
    if in_channels is None:
        in_channels = int(convs[0].shape[1]) if convs else 1
    if num_classes is None:
        num_classes = int(linears[-1].shape[0]) if linears else 2
    num_classes = max(num_classes, 2)
    model = _build_and_load(path, arch, in_channels, num_classes, state)
    return LoadedModel(
        model=model,
        arch=arch,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        class_names=_default_class_names(num_classes),
        mean=None,
        std=None,
        format=fmt,
    )


def _build_and_load(
    path: Path, arch: str, in_channels: int, num_classes: int, state: dict[str, torch.Tensor]
) -> nn.Module:
    model = build_model(arch, in_channels=in_channels, num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"The weights in {path} do not fit architecture {arch!r} with "
            f"in_channels={in_channels}, num_classes={num_classes}: "
            f"{_summarise_load_error(str(exc))}"
        ) from exc
    return model.eval()


def _summarise_load_error(message: str) -> str:
    """One line from torch's load_state_dict error, every kind of problem with a count."""
    parts = []
    mismatches = []
    for line in message.splitlines()[1:]:
        line = line.strip()
        if line.startswith("size mismatch for "):
            mismatches.append(line[len("size mismatch for ") :].rstrip("."))
            continue
        label, _, rest = line.partition(":")
        keys = re.findall(r'"([^"]+)"', rest)
        if keys:
            shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            parts.append(f"{label.strip()} ({len(keys)}): {shown}")
        elif line:
            parts.append(line)
    if mismatches:
        shown = "; ".join(mismatches[:3]) + ("; ..." if len(mismatches) > 3 else "")
        parts.append(f"size mismatch ({len(mismatches)}): {shown}")
    return ". ".join(parts) + "." if parts else " ".join(message.split())


def _default_class_names(num_classes: int) -> list[str]:
    return (
        ["negative", "positive"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]
    )


def _load_torchscript(
    path: Path,
    arch: str | None,
    in_channels: int | None,
    num_classes: int | None,
    image_size: int | None,
) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript; loading existing archives still works
            # and the warning is not something an auditor can act on.
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as exc:
        raise InvalidInputError(
            f"{path} is not a loadable TorchScript archive: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    if in_channels is None:
        convs = [p for p in model.parameters() if p.ndim == 4]
        in_channels = int(convs[0].shape[1]) if convs else 1
    if num_classes is None:
        side = image_size or 64
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, in_channels, side, side))
        except Exception as exc:  # any failure of foreign code becomes one clear message
            raise InvalidInputError(
                f"Could not infer num_classes of TorchScript model {path} from a forward pass "
                f"on a (1, {in_channels}, {side}, {side}) input; pass num_classes "
                f"(and in_channels/image_size): {str(exc).splitlines()[0] if str(exc) else exc!r}"
            ) from exc
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise InvalidInputError(
                f"TorchScript model {path} does not return logits of shape (batch, n_classes)."
            )
        num_classes = max(int(out.shape[1]), 2)
    return LoadedModel(
        model=model,
        arch=arch or "torchscript",
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        class_names=_default_class_names(num_classes),
        mean=None,
        std=None,
        format="torchscript",
    )
