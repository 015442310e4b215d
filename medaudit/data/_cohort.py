"""Cohort: images (in memory or lazily from disk) plus one metadata table.

Reserved metadata columns: ``label``, ``patient_id``, ``study_id``, ``site``, ``split``
(and ``path`` for images on disk). Every other column is an attribute (``sex``,
``age``, ``age_group``, ...). The hierarchy is site → patient → study → image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error

__all__ = ["RESERVED_COLUMNS", "Cohort"]

RESERVED_COLUMNS: tuple[str, ...] = (
    "label",
    "patient_id",
    "study_id",
    "site",
    "split",
    "path",
    "label_uncertain",
)

# A function path -> float32 (C, H, W) in [0, 1].
ImageReader = Callable[[Path], np.ndarray]


def _default_reader(path: Path) -> np.ndarray:
    from medaudit.data._images import read_image

    return read_image(path)


class Cohort:
    """Images plus a metadata table, one row per image.

    Parameters
    ----------
    meta : DataFrame of shape (n_images, n_columns)
        Must contain ``label`` (integer class index). Other reserved columns are optional.
    images : ndarray of shape (n_images, H, W) or (n_images, C, H, W), optional
        Images in memory: uint8 (0–255) or float in [0, 1]. Exactly one of ``images``
        and a ``path`` column must be given.
    root : path, optional
        Folder that relative ``path`` values are resolved against.
    class_names : sequence of str, optional
        Names of the classes; default ``["negative", "positive"]`` for two classes.
    dropped : DataFrame, optional
        Rows that could not be used (missing or unreadable files), with a ``reason``
        column; the integrity audit reports them.
    name : str
        Short name shown in reports (e.g. the manifest's file name).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> c = Cohort(pd.DataFrame({"label": [0, 1]}), images=np.zeros((2, 8, 8), np.uint8))
    >>> len(c), c.image_shape
    (2, (1, 8, 8))
    """

    def __init__(
        self,
        meta: pd.DataFrame,
        *,
        images: np.ndarray | None = None,
        root: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        dropped: pd.DataFrame | None = None,
        name: str = "cohort",
        reader: ImageReader | None = None,
    ) -> None:
        if not isinstance(meta, pd.DataFrame):
            raise param_error("meta", "Cohort", "a pandas DataFrame", type(meta).__name__)
        if "label" not in meta.columns:
            raise InvalidInputError(
                f"The metadata of {name!r} has no 'label' column "
                f"(columns: {', '.join(map(str, meta.columns))})."
            )
        has_path = "path" in meta.columns
        if (images is None) == (not has_path):
            raise InvalidInputError(
                "A Cohort needs exactly one image source: an `images` array or a 'path' column."
            )
        meta = meta.reset_index(drop=True)
        if images is not None:
            images = np.asarray(images)
            if images.ndim == 3:
                images = images[:, None]
            if images.ndim != 4 or images.shape[0] != len(meta):
                raise InvalidInputError(
                    f"images must have shape (n, H, W) or (n, C, H, W) with n = {len(meta)} "
                    f"rows of metadata; got {images.shape}."
                )
        self.meta = meta
        self.images = images
        self.root = Path(root) if root is not None else None
        labels = meta["label"].to_numpy()
        n_classes = int(labels.max()) + 1 if len(labels) else 2
        if class_names is None:
            class_names = (
                ["negative", "positive"]
                if n_classes <= 2
                else [f"class_{i}" for i in range(n_classes)]
            )
        self.class_names = [str(c) for c in class_names]
        self.dropped = dropped if dropped is not None else pd.DataFrame(columns=["path", "reason"])
        self.name = name
        #: Rows whose label is uncertain (``load_manifest(..., columns=...)``), or None.
        self.uncertain: Cohort | None = None
        self._reader = reader or _default_reader
        self._shape: tuple[int, int, int] | None = (
            tuple(images.shape[1:]) if images is not None else None
        )

    # -- basic facts ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        return (
            f"Cohort(name={self.name!r}, n={len(self)}, classes={self.class_names}, "
            f"attributes={self.attributes})"
        )

    @property
    def labels(self) -> np.ndarray:
        """Integer class index per image, shape (n_images,)."""
        return self.meta["label"].to_numpy(dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def attributes(self) -> list[str]:
        """Metadata columns that are not reserved (candidate sensitive attributes)."""
        return [c for c in self.meta.columns if c not in RESERVED_COLUMNS]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the first image (all images are brought to this size)."""
        if self._shape is None:
            c, h, w = self.image(0).shape
            self._shape = (c, h, w)
        return self._shape

    def resolve(self, path: str | Path) -> Path:
        """Absolute location of a ``path`` value."""
        p = Path(path)
        return p if p.is_absolute() or self.root is None else self.root / p

    # -- images --------------------------------------------------------------------------
    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 of shape (C, H, W) in [0, 1]."""
        if self.images is not None:
            return _to_float(self.images[i])
        return self._reader(self.resolve(self.meta["path"].iat[i]))

    def batches(
        self,
        batch_size: int = 256,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        image_size: int | None = None,
        channels: int | None = None,
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(indices, tensor)`` batches, tensor float32 of shape (B, C, H, W).

        Images are resized to ``image_size`` (bilinear) and their channels repeated or
        averaged to ``channels`` when given, so any model sees what it was trained on.
        """
        import torch
        import torch.nn.functional as F

        idx_all = np.arange(len(self)) if indices is None else np.asarray(indices)
        for start in range(0, len(idx_all), batch_size):
            idx = idx_all[start : start + batch_size]
            if self.images is not None:
                x = torch.from_numpy(_to_float(self.images[idx]))
            else:
                arrs = [self.image(int(i)) for i in idx]
                x = torch.from_numpy(np.stack(_common_shape(arrs)))
            if channels is not None and x.shape[1] != channels:
                if x.shape[1] == 1:
                    x = x.expand(-1, channels, -1, -1)
                elif channels == 1:
                    x = x.mean(dim=1, keepdim=True)
                else:
                    raise InvalidInputError(
                        f"Images have {x.shape[1]} channels but the model expects {channels}."
                    )
            if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
                x = F.interpolate(
                    x, size=(image_size, image_size), mode="bilinear", align_corners=False
                )
            yield idx, x.contiguous()

    def load_all(self, *, image_size: int | None = None, channels: int | None = None) -> np.ndarray:
        """All images as one float32 array of shape (n, C, H, W)."""
        parts = [x.numpy() for _, x in self.batches(512, image_size=image_size, channels=channels)]
        if not parts:
            c, h, w = self.image_shape if len(self) else (channels or 1, 1, 1)
            return np.zeros((0, c, h, w), np.float32)
        return np.concatenate(parts)

    # -- subsets and identity ------------------------------------------------------------
    def subset(
        self, rows: np.ndarray | Sequence[int] | pd.Series, *, name: str | None = None
    ) -> Cohort:
        """A cohort of the given rows (positional indices or a boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if len(rows) != len(self):
                raise InvalidInputError("A boolean mask must have one entry per image.")
            rows = np.flatnonzero(rows)
        return Cohort(
            self.meta.iloc[rows].reset_index(drop=True),
            images=None if self.images is None else self.images[rows],
            root=self.root,
            class_names=self.class_names,
            dropped=self.dropped,
            name=name or self.name,
            reader=self._reader,
        )

    def split(self, name: str) -> Cohort:
        """Rows whose ``split`` column equals ``name``."""
        if "split" not in self.meta.columns:
            raise InvalidInputError(f"{self.name!r} has no 'split' column.")
        return self.subset(self.meta["split"].to_numpy() == name, name=f"{self.name}:{name}")

    def content_hash(self) -> str:
        """SHA-256 of the metadata and every image's bytes (the inference cache key)."""
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.meta.astype(str), index=False).values.tobytes())
        h.update(",".join(self.class_names).encode())
        if self.images is not None:
            h.update(str(self.images.dtype).encode() + str(self.images.shape).encode())
            h.update(np.ascontiguousarray(self.images).tobytes())
        else:
            for p in self.meta["path"]:
                try:
                    h.update(self.resolve(p).read_bytes())
                except OSError:
                    h.update(b"<unreadable>")
        return h.hexdigest()


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return a.astype(np.float32, copy=False)


def _common_shape(arrs: list[np.ndarray]) -> list[np.ndarray]:
    """Bring images of different sizes to the first one's size (bilinear)."""
    shape = arrs[0].shape
    if all(a.shape == shape for a in arrs):
        return arrs
    import torch
    import torch.nn.functional as F

    out = []
    for a in arrs:
        if a.shape[1:] != shape[1:]:
            a = F.interpolate(
                torch.from_numpy(a)[None], size=shape[1:], mode="bilinear", align_corners=False
            )[0].numpy()
        if a.shape[0] != shape[0]:
            a = np.repeat(a[:1], shape[0], axis=0) if a.shape[0] == 1 else a.mean(0, keepdims=True)
        out.append(a)
    return out
