"""Reading one image file: float32 (C, H, W) in [0, 1], or why it cannot be read.

* PNG / JPEG / TIFF through Pillow: 8-bit values are divided by 255, 16-bit by 65535;
  RGB stays three channels, RGBA drops its alpha, a palette image becomes grayscale
  (``L``) when its palette is gray and RGB otherwise, 32-bit float TIFFs must already
  lie in [0, 1].
* DICOM (``.dcm``) through pydicom: ``RescaleSlope``/``RescaleIntercept`` are applied,
  ``MONOCHROME1`` is inverted (so bright always means dense), then each image is
  min-max scaled to [0, 1] (see :mod:`medaudit.data._readers` for why).
* NumPy ``.npy``: 2-D, (C, H, W) or (H, W, C) with C in {1, 3}; uint8 and uint16 are
  scaled like PNG, floats must already lie in [0, 1] and be finite.

Also the threaded check that decodes every file of a manifest once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medaudit._errors import InvalidInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "PIL_SUFFIXES",
    "REASON_MISSING_FILE",
    "REASON_UNREADABLE",
    "REASON_UNSUPPORTED",
    "read_image",
]

T = TypeVar("T")
R = TypeVar("R")

PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGE_SUFFIXES: tuple[str, ...] = (*PIL_SUFFIXES, ".dcm", ".npy")

REASON_MISSING_FILE = "file not found"
REASON_UNREADABLE = "unreadable image"
REASON_UNSUPPORTED = "unsupported extension"


class _ReadFailure(Exception):
    """Why one image could not be read: a category (``reason``) and the details."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = " ".join(detail.split())  # one line: the CLI prints one line on stderr
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- one image -----------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file as float32 of shape (C, H, W) with values in [0, 1].

    Parameters
    ----------
    path : str or path-like
        A ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.dcm`` or ``.npy`` file.

    Returns
    -------
    ndarray of shape (C, H, W), float32
        C is 1 (grayscale) or 3 (RGB).

    Raises
    ------
    InvalidInputError
        The file does not exist, has an unsupported extension, or cannot be decoded;
        the message names the file and the reason.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(f, np.array([[0, 255]], dtype=np.uint8))
    >>> read_image(f)
    array([[[0., 1.]]], dtype=float32)
    """
    try:
        return _read(Path(path))
    except _ReadFailure as exc:
        raise InvalidInputError(f"Cannot read image {path}: {exc.reason} ({exc.detail}).") from None


def _read(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise _ReadFailure(
            REASON_UNSUPPORTED, f"{suffix or 'no extension'}; expected one of {IMAGE_SUFFIXES}"
        )
    if not path.is_file():
        raise _ReadFailure(REASON_MISSING_FILE, "no such file")
    if suffix in PIL_SUFFIXES:
        arr = _read_pil(path)
    elif suffix == ".dcm":
        arr = _read_dicom(path)
    else:
        arr = _read_npy(path)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = _normalise_mode(img)
            a = np.asarray(img)
    except Exception as exc:  # Pillow raises many types for a bad file; all mean unreadable.
        raise _ReadFailure(REASON_UNREADABLE, f"{type(exc).__name__}: {exc}") from None
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    return _scale_array(a, f"{img.mode} image", int32_as_16bit=img.mode == "I")


def _normalise_mode(img: Any) -> Any:
    """Bring a Pillow image to one of L, RGB, I;16, I or F."""
    mode = img.mode
    if mode in ("L", "RGB", "I;16", "I", "F"):
        return img
    if mode in ("I;16B", "I;16L", "I;16N"):
        return img  # numpy reads these as (big/little-endian) uint16
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode in ("P", "PA"):
        # A gray palette (the usual case for medical PNGs) becomes L; a colour one RGB,
        # so that colour is never thrown away silently.
        rgb = np.asarray(img.convert("RGB"))
        gray = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
        return img.convert("L") if gray else img.convert("RGB")
    # RGBA, RGBa, CMYK, YCbCr, LAB, HSV, ...
    return img.convert("RGB")


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds:
            raise _ReadFailure(REASON_UNREADABLE, "the DICOM file has no pixel data")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise _ReadFailure(
                REASON_UNREADABLE, f"multi-frame DICOM ({frames} frames) is not supported"
            )
        pixels = np.asarray(ds.pixel_array)
    except _ReadFailure:
        raise
    except Exception as exc:  # pydicom: invalid file, missing decoder plugin, bad tags.
        raise _ReadFailure(REASON_UNREADABLE, f"{type(exc).__name__}: {exc}") from None
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    v = pixels.astype(np.float64) * slope + intercept
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # In MONOCHROME1 the lowest value is displayed white; invert so bright = dense.
        v = -v
    if v.ndim == 3 and v.shape[-1] in (3, 4):
        v = np.moveaxis(v[..., :3], -1, 0)
    elif v.ndim == 2:
        v = v[None]
    else:
        raise _ReadFailure(REASON_UNREADABLE, f"unexpected DICOM pixel shape {pixels.shape}")
    if not np.all(np.isfinite(v)):
        raise _ReadFailure(REASON_UNREADABLE, "the DICOM pixels contain NaN or infinite values")
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        return (v - lo) / (hi - lo)
    return np.zeros_like(v)


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _ReadFailure(REASON_UNREADABLE, "it holds a pickled object array") from None
        raise _ReadFailure(REASON_UNREADABLE, f"ValueError: {exc}") from None
    except Exception as exc:
        raise _ReadFailure(REASON_UNREADABLE, f"{type(exc).__name__}: {exc}") from None
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[0] in (1, 3):
        pass
    elif a.ndim == 3 and a.shape[-1] in (1, 3):
        a = np.moveaxis(a, -1, 0)
    else:
        raise _ReadFailure(
            REASON_UNREADABLE,
            f"array of shape {a.shape}; expected (H, W), (C, H, W) or (H, W, C) with C in {{1, 3}}",
        )
    return _scale_array(a, "array")


def _scale_array(a: np.ndarray, what: str, *, int32_as_16bit: bool = False) -> np.ndarray:
    """Integer images to [0, 1] by their bit depth; float images checked, not rescaled."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        return a.astype(np.float32) / 65535.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if int32_as_16bit and a.dtype.kind == "i":
        # Pillow's 32-bit integer mode: accepted when the values fit 16 bits.
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _ReadFailure(
                REASON_UNREADABLE,
                f"32-bit integer image with values in [{a.min()}, {a.max()}], outside 16 bits",
            )
        return a.astype(np.float32) / 65535.0
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise _ReadFailure(REASON_UNREADABLE, f"the {what} contains NaN or infinite values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise _ReadFailure(
                REASON_UNREADABLE,
                f"float {what} with values in [{lo:.6g}, {hi:.6g}]; float images must lie "
                "in [0, 1] (store uint8/uint16, or scale it first)",
            )
        return np.clip(a, 0.0, 1.0).astype(np.float32)
    raise _ReadFailure(
        REASON_UNREADABLE, f"{what} of dtype {a.dtype}; use uint8, uint16 or float in [0, 1]"
    )


def _try_read(path: Path) -> tuple[str, str] | None:
    """None when ``path`` decodes, else ``(reason, detail)``."""
    try:
        _read(path)
    except _ReadFailure as exc:
        return exc.reason, exc.detail
    return None


def _map_in_threads(
    fn: Callable[[T], R], items: Sequence[T], *, threads: bool = True, chunk: int = 128
) -> Iterator[R]:
    """``map(fn, items)`` in order; with ``threads``, a thread pool runs chunks of ``items``.

    Pillow/zlib decoding and file I/O release the GIL, so threads pay off for large
    images (about 1.7x on 2 cores for 512x512 PNGs); for small files the Python overhead
    dominates and threads only contend, so callers pass ``threads=_large_files(paths)``.
    """
    workers = min(8, os.cpu_count() or 1)
    if not threads or workers == 1 or len(items) <= chunk:
        yield from map(fn, items)
        return
    parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for res in pool.map(lambda part: [fn(x) for x in part], parts):
            yield from res


def _large_files(paths: Sequence[Path], *, min_bytes: int = 64 * 1024) -> bool:
    """Whether the first few existing files average at least ``min_bytes``."""
    sizes = []
    for q in paths[:16]:
        try:
            sizes.append(q.stat().st_size)
        except OSError:
            continue
    return bool(sizes) and sum(sizes) / len(sizes) >= min_bytes


def _check_all(paths: Sequence[Path], *, progress: bool) -> list[tuple[str, str] | None]:
    """Decode every file once; ``None`` per readable file, else ``(reason, detail)``."""
    from medaudit._progress import progress_bar

    out: list[tuple[str, str] | None] = []
    with progress_bar("Checking image files", total=len(paths), enabled=progress) as advance:
        for res in _map_in_threads(_try_read, paths, threads=_large_files(paths)):
            out.append(res)
            advance(1)
    return out
