"""Which torch device to run on, and how to feed it fast.

``--device auto`` picks CUDA when present, else Apple's MPS, else the CPU. On CUDA,
inference runs under autocast (bfloat16 where the GPU supports it, else float16),
with ``channels_last`` memory format and pinned-memory, non-blocking transfers.
"""

from __future__ import annotations

from typing import Any

from medaudit._errors import InvalidInputError

__all__ = ["DEVICES", "autocast_dtype", "resolve_device"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: Any = "auto") -> str:
    """The concrete device for ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Raises one clear error when the requested accelerator is not available.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise InvalidInputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}.")
    if kind == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "--device cuda was asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or auto."
        )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError("--device mps was asked for but MPS is not available.")
    return name


def autocast_dtype(device: str) -> Any:
    """The mixed-precision dtype for inference on ``device`` (None: full precision)."""
    import torch

    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
