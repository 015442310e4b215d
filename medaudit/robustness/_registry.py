"""The corruption registry: every corruption is a batched function with five severities.

A corruption is ``fn(x, param, rng) -> x``: ``x`` a float tensor of shape (N, C, H, W)
in [0, 1], ``param`` the parameter of one severity, ``rng`` an :class:`ImageRandom` whose
draws are seeded per image by the image's row. :func:`corrupt` validates the input, looks
the parameter up, clamps the result to [0, 1] and keeps the dtype, so a registered
function only says what the corruption does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.robustness._random import ImageRandom

__all__ = [
    "FAMILIES",
    "MSG_RGB_ONLY",
    "MSG_SEVERITY",
    "MSG_UNKNOWN_CORRUPTION",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "get_corruption",
    "list_corruptions",
    "register_corruption",
    "unregister_corruption",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
FAMILIES: tuple[str, ...] = ("noise", "blur", "intensity", "digital", "acquisition", "colour")

MSG_UNKNOWN_CORRUPTION = "Unknown corruption {name!r}; valid choices: {choices}."
MSG_SEVERITY = "Severity must be one of {choices}; got {got!r}."
MSG_RGB_ONLY = (
    "The {name!r} corruption needs RGB images (3 channels) but the images have {channels} "
    "channel(s); valid choices for these images: {choices}."
)
MSG_DUPLICATE = "A corruption named {name!r} is already registered; pass force=True to replace it."

CorruptionFn = Callable[[Any, Any, ImageRandom], Any]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Parameters
    ----------
    name : str
        Registry key (``"gaussian_noise"``); also the check id's middle part.
    fn : callable
        ``fn(x, param, rng) -> x`` on a float tensor of shape (N, C, H, W) in [0, 1].
    severities : tuple of 5
        The parameter of severities 1 to 5, mildest first.
    family : str
        ``noise``, ``blur``, ``intensity``, ``digital``, ``acquisition``, ``colour`` or
        anything a user chooses.
    rgb_only : bool
        True when the corruption needs three colour channels.
    source : str
        Where its definition and severities come from (ImageNet-C, MedMNIST-C, ...).
    """

    name: str
    fn: CorruptionFn
    severities: tuple[Any, ...]
    family: str = "custom"
    rgb_only: bool = False
    source: str = ""

    def parameter(self, severity: int) -> Any:
        """The parameter of ``severity`` (1-5)."""
        return self.severities[check_severity(severity) - 1]

    def __call__(
        self, x: Any, severity: int, *, seed: int = 0, index: Any = None, param: Any = None
    ) -> Any:
        """Corrupt ``x`` at ``severity``; see :func:`corrupt`."""
        return corrupt(x, self, severity, seed=seed, index=index, param=param)


_CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(
    name: str,
    fn: CorruptionFn,
    severities: Sequence[Any],
    *,
    family: str = "custom",
    rgb_only: bool = False,
    source: str = "",
    force: bool = False,
) -> Corruption:
    """Register a corruption under ``name``; raises on a duplicate unless ``force``.

    Parameters
    ----------
    name : str
        A new name (letters, digits and underscores).
    fn : callable
        ``fn(x, param, rng) -> x``: ``x`` float (N, C, H, W) in [0, 1]; ``param`` one
        entry of ``severities``; ``rng`` an :class:`ImageRandom` (draw every random
        number from it, so results are deterministic and independent of batching).
    severities : sequence of 5
        Parameters of severities 1-5, mildest first.
    family, rgb_only, source
        See :class:`Corruption`.
    force : bool, default False
        Replace an existing corruption of the same name.

    Returns
    -------
    Corruption

    Examples
    --------
    >>> import torch
    >>> c = register_corruption("darken", lambda x, f, rng: x * f, (0.9, 0.8, 0.7, 0.6, 0.5))
    >>> float(c(torch.ones(1, 1, 4, 4), 2).max())
    0.800000011920929
    >>> unregister_corruption("darken")
    """
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise param_error("name", "register_corruption", "letters, digits and underscores", name)
    if not callable(fn):
        raise param_error("fn", "register_corruption", "a callable fn(x, param, rng)", fn)
    sev = tuple(severities) if isinstance(severities, Sequence) else ()
    if len(sev) != len(SEVERITIES):
        raise param_error(
            "severities", "register_corruption", "a sequence of 5 parameters", severities
        )
    if name in _CORRUPTIONS and not force:
        raise InvalidParameterError(MSG_DUPLICATE.format(name=name))
    c = Corruption(name, fn, sev, family=family, rgb_only=bool(rgb_only), source=source)
    _CORRUPTIONS[name] = c
    return c


def unregister_corruption(name: str) -> None:
    """Remove a corruption (tests registering a throw-away one clean up with this)."""
    _CORRUPTIONS.pop(name, None)


def list_corruptions(*, channels: int | None = None, family: str | None = None) -> list[str]:
    """Registered corruption names, in registration order.

    Parameters
    ----------
    channels : int, optional
        Leave out corruptions these images cannot take (RGB-only ones unless 3).
    family : str, optional
        Only this family.
    """
    return [
        c.name
        for c in _CORRUPTIONS.values()
        if (channels is None or channels == 3 or not c.rgb_only)
        and (family is None or c.family == family)
    ]


def get_corruption(name: str) -> Corruption:
    """The corruption registered as ``name``; an error listing the valid choices otherwise."""
    if name not in _CORRUPTIONS:
        raise InvalidInputError(
            MSG_UNKNOWN_CORRUPTION.format(name=name, choices=", ".join(list_corruptions()))
        )
    return _CORRUPTIONS[name]


def check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise InvalidInputError(MSG_SEVERITY.format(choices=list(SEVERITIES), got=severity))
    if int(severity) not in SEVERITIES:
        raise InvalidInputError(MSG_SEVERITY.format(choices=list(SEVERITIES), got=severity))
    return int(severity)


def check_channels(c: Corruption, channels: int) -> None:
    """Raise the RGB-only error when ``c`` cannot corrupt images with ``channels``."""
    if c.rgb_only and channels != 3:
        raise InvalidInputError(
            MSG_RGB_ONLY.format(
                name=c.name,
                channels=channels,
                choices=", ".join(list_corruptions(channels=channels)),
            )
        )


def corrupt(
    x: Any,
    corruption: str | Corruption,
    severity: int,
    *,
    seed: int = 0,
    index: Any = None,
    param: Any = None,
) -> Any:
    """Corrupt a batch of images.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W)
        Floating-point images in [0, 1] on any device.
    corruption : str or Corruption
        A registered name (see :func:`list_corruptions`).
    severity : int
        1 (mildest) to 5.
    seed : int, default 0
        Seeds every image's random draws together with its row in ``index``.
    index : array-like of int of shape (N,), optional
        Each image's row in its cohort (default ``0..N-1``). An image corrupted with the
        same ``(seed, index)`` is the same whatever batch it is in.
    param : object, optional
        Use this parameter instead of the severity's registered one (presets do).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``, values in [0, 1].

    Examples
    --------
    >>> import torch
    >>> x = torch.full((2, 1, 32, 32), 0.5)
    >>> y = corrupt(x, "gaussian_noise", 3, seed=0)
    >>> y.shape, y.dtype, bool((y >= 0).all() and (y <= 1).all())
    (torch.Size([2, 1, 32, 32]), torch.float32, True)
    >>> bool(torch.equal(corrupt(x[1:], "gaussian_noise", 3, index=[1]), y[1:]))
    True
    """
    import torch

    c = corruption if isinstance(corruption, Corruption) else get_corruption(corruption)
    sev = check_severity(severity)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.dtype.is_floating_point:
        what = (
            f"{type(x).__name__}"
            if not isinstance(x, torch.Tensor)
            else f"{x.dtype} {tuple(x.shape)}"
        )
        raise param_error("x", "corrupt", "a float tensor of shape (N, C, H, W)", what)
    check_channels(c, int(x.shape[1]))
    idx = np.arange(x.shape[0]) if index is None else np.asarray(index).reshape(-1)
    if len(idx) != x.shape[0]:
        raise param_error("index", "corrupt", f"{x.shape[0]} row numbers", len(idx))
    return apply_corruption(c, x, c.severities[sev - 1] if param is None else param, idx, seed)


def apply_corruption(c: Corruption, x: Any, param: Any, index: np.ndarray, seed: int) -> Any:
    """Run ``c`` on a validated batch (the sweep's hot path): no checks, clamp, keep dtype."""
    import torch

    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    rng = ImageRandom(index, seed=seed, stream=c.name, device=x.device)
    out = c.fn(work, param, rng)
    if out.untyped_storage().data_ptr() == work.untyped_storage().data_ptr():
        out = out.clone()  # never clamp (or hand back) the caller's tensor in place
    return out.clamp_(0.0, 1.0).to(x.dtype)
