"""The secret key of a watermark and the trigger images it generates.

A key is an integer seed plus the shape of what it marks (classes, image size, channels,
number of triggers). Everything verification needs is regenerated from it: the owner keeps
the key file, never the images. Each component is drawn from its own random stream,
``numpy.random.default_rng([seed, stream])``, one trigger after the other, so that

- the first ``m`` triggers are the same whatever ``n_triggers`` is (a verifier may query
  fewer of them), and
- the target labels (trigger-set watermark) and the pair roles (harmless watermark) are
  independent of the images. That independence is what makes the verification nulls exact:
  a model that never saw the key agrees with a uniformly drawn label with probability
  exactly ``1 / num_classes``, whatever it predicts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "KEY_SCHEMA",
    "KINDS",
    "TriggerSet",
    "WatermarkKey",
    "load_key",
    "make_triggers",
    "save_key",
]

#: ``schema`` field of a key file.
KEY_SCHEMA = "medaudit.watermark-key/1"
#: The two watermarks: ``trigger`` (triggers mapped to key-drawn labels) and ``harmless``
#: (top-1 unchanged; the key shifts the confidence on triggers).
KINDS: tuple[str, ...] = ("trigger", "harmless")

MSG_KEY_FILE = "Watermark key file {path} is not a medaudit key ({why})."
MSG_KEY_MISSING = "Watermark key not found: {path} (give a key file written by embed, or an int)."

# Random streams of a key (the second entry of the seed sequence).
_PATTERN, _CARRIER, _LABEL, _PAIR, _WAVE = 0, 1, 2, 3, 4
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class WatermarkKey:
    """A watermark's secret: the seed and the shape of the triggers it generates.

    Parameters
    ----------
    seed : int
        The secret, in [0, 2**63).
    num_classes : int, default 2
        Classes of the marked model; target labels are drawn from ``range(num_classes)``.
    n_triggers : int, default 100
        Trigger images the key defines (verification may query the first few only).
    image_size : int, default 32
        Side of the square trigger images (the marked model's input size).
    in_channels : int, default 1
    kind : {"trigger", "harmless"}, default "trigger"
        Which watermark was embedded with this key.

    Examples
    --------
    >>> WatermarkKey(7, n_triggers=4, image_size=16).kind
    'trigger'
    """

    seed: int
    num_classes: int = 2
    n_triggers: int = 100
    image_size: int = 32
    in_channels: int = 1
    kind: str = "trigger"

    def __post_init__(self) -> None:
        func = "WatermarkKey"
        if not _is_int(self.seed) or not 0 <= self.seed <= _MAX_SEED:
            raise param_error("seed", func, "an int in [0, 2**63)", self.seed)
        for name, lo in (("num_classes", 2), ("n_triggers", 2), ("image_size", 8)):
            v = getattr(self, name)
            if not _is_int(v) or v < lo:
                raise param_error(name, func, f"an int >= {lo}", v)
        if not _is_int(self.in_channels) or self.in_channels not in (1, 3):
            raise param_error("in_channels", func, "1 or 3", self.in_channels)
        if self.kind not in KINDS:
            raise param_error("kind", func, f"one of {KINDS}", self.kind)

    def to_dict(self) -> dict[str, Any]:
        """The key file's content."""
        return {"schema": KEY_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "mapping") -> WatermarkKey:
        """Inverse of :meth:`to_dict`; one clear error for anything else."""
        if not isinstance(doc, dict) or doc.get("schema") != KEY_SCHEMA:
            raise InvalidInputError(
                MSG_KEY_FILE.format(path=source, why=f"its schema is not {KEY_SCHEMA!r}")
            )
        fields = {k: doc[k] for k in ("seed", *_OPTIONAL) if k in doc}
        if "seed" not in fields:
            raise InvalidInputError(MSG_KEY_FILE.format(path=source, why="it has no seed"))
        try:
            return cls(**fields)
        except ValueError as exc:
            raise InvalidInputError(MSG_KEY_FILE.format(path=source, why=str(exc))) from None


_OPTIONAL = ("num_classes", "n_triggers", "image_size", "in_channels", "kind")


def save_key(key: WatermarkKey, path: str | os.PathLike[str]) -> Path:
    """Write ``key`` as JSON (atomically). Keep the file secret: it proves ownership."""
    from medaudit.report import atomic_write_text

    if not isinstance(key, WatermarkKey):
        raise param_error("key", "save_key", "a WatermarkKey", type(key).__name__)
    p = Path(path)
    atomic_write_text(p, json.dumps(key.to_dict(), indent=2) + "\n")
    return p


def load_key(path: str | os.PathLike[str]) -> WatermarkKey:
    """Read a key file written by :func:`save_key`."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(MSG_KEY_MISSING.format(path=p))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(MSG_KEY_FILE.format(path=p, why=f"not JSON: {exc}")) from None
    return WatermarkKey.from_dict(doc, source=str(p))


@dataclass(frozen=True)
class TriggerSet:
    """The trigger images of a key and what the watermark makes of them.

    Attributes
    ----------
    images : ndarray of shape (n, C, H, W)
        float32 in [0, 1]: a key-drawn carrier image with the key's pattern stamped on it.
    labels : ndarray of shape (n,)
        Target label of each trigger (trigger-set watermark), uniform on the classes.
    up : ndarray of shape (n,)
        Harmless watermark: True for the trigger of each pair (0-1, 2-3, ...) whose
        top-1 confidence the watermark raises; its partner's is lowered. One fair coin
        per pair.
    pattern : ndarray of shape (H, W)
        The stamp (NaN outside it), the same on every trigger of the key.
    """

    images: np.ndarray
    labels: np.ndarray
    up: np.ndarray
    pattern: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def make_triggers(key: WatermarkKey, n: int | None = None) -> TriggerSet:
    """Generate the first ``n`` trigger images of ``key`` (default: all of them).

    Carriers are two random gratings (orientation, 2-8 cycles per image, phase) over a
    smooth random field, scaled into [0.1, 0.9]; the pattern is a binary glyph of side
    ``max(4, size * 3 / 16)`` at a key-drawn position, stamped at full contrast.

    Parameters
    ----------
    key : WatermarkKey
    n : int, optional
        How many triggers (at most ``key.n_triggers``).

    Returns
    -------
    TriggerSet

    Examples
    --------
    >>> t = make_triggers(WatermarkKey(7, n_triggers=6, image_size=16))
    >>> t.images.shape, t.labels.tolist()[:3] == make_triggers(
    ...     WatermarkKey(7, n_triggers=3, image_size=16)).labels.tolist()
    ((6, 1, 16, 16), True)
    """
    if not isinstance(key, WatermarkKey):
        raise param_error("key", "make_triggers", "a WatermarkKey", type(key).__name__)
    n = key.n_triggers if n is None else n
    if not _is_int(n) or not 1 <= n <= key.n_triggers:
        raise param_error("n", "make_triggers", f"an int in [1, {key.n_triggers}]", n)
    size = key.image_size
    pattern = _pattern(key.seed, size)
    stamp = ~np.isnan(pattern)
    images = _carriers(key.seed, n, size)
    images[:, stamp] = pattern[stamp]
    images = np.repeat(images[:, None], key.in_channels, axis=1)
    labels = _stream(key.seed, _LABEL).integers(key.num_classes, size=n).astype(np.int64)
    first_up = _stream(key.seed, _PAIR).random((n + 1) // 2) < 0.5
    up = np.zeros(n, dtype=bool)
    up[0::2] = first_up[: len(up[0::2])]
    up[1::2] = ~first_up[: len(up[1::2])]
    return TriggerSet(images=images, labels=labels, up=up, pattern=pattern)


def _carriers(seed: int, n: int, size: int) -> np.ndarray:
    """Carriers 0..n-1: two random gratings over a smooth field, scaled into [0.1, 0.9].

    Gratings of random orientation and frequency give every carrier its own local
    texture, which a convolutional network tells apart even after global pooling. Each
    batch is computed at once.
    """
    knots = _stream(seed, _CARRIER).standard_normal((n, 4, 4))
    lo_w, hi_w = np.array([0.0, 2.0, 0.0]), np.array([np.pi, 8.0, 2 * np.pi])
    waves = lo_w + (hi_w - lo_w) * _stream(seed, _WAVE).random((n, 2, 3))
    coarse = _interp_matrix(size, 4)
    field = np.einsum("hk,nkl,wl->nhw", coarse, knots, coarse)
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta, freq, phase = (waves[..., j][..., None, None] for j in range(3))
    field += np.cos(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase).sum(1)
    lo = field.min(axis=(1, 2), keepdims=True)
    hi = field.max(axis=(1, 2), keepdims=True)
    return (0.1 + 0.8 * (field - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def _stream(seed: int, stream: int) -> np.random.Generator:
    """The key's random stream ``stream`` (sequential: the first m of n draws ignore n)."""
    return np.random.default_rng([seed, stream])


def _pattern(seed: int, size: int) -> np.ndarray:
    """The key's stamp: a (size, size) array, 0/1 inside the glyph's square, NaN outside."""
    rng = np.random.default_rng([seed, _PATTERN])
    side = max(4, round(size * 3 / 16))
    glyph = rng.random((side, side)) < 0.5
    glyph[0, 0], glyph[-1, -1] = True, False  # never blank, never solid
    r0, c0 = (int(v) for v in rng.integers(1, size - side, size=2))
    out = np.full((size, size), np.nan, np.float32)
    out[r0 : r0 + side, c0 : c0 + side] = glyph.astype(np.float32)
    return out


def _interp_matrix(size: int, n_knots: int) -> np.ndarray:
    """(size, n_knots) bilinear weights: a smooth field is two small matrix products."""
    pos = (np.arange(size) + 0.5) / size * (n_knots - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_knots - 2)
    w = pos - lo
    m = np.zeros((size, n_knots))
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] = w
    return m


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
