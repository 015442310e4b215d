"""Batches of a cohort's images for a device: in-process, or decoded in worker processes.

In-memory cohorts (and ``workers=0``) use :meth:`Cohort.batches` directly. Disk-backed
cohorts with ``workers > 0`` decode and resize images in a torch ``DataLoader``'s
worker processes, so that reading PNG/DICOM files keeps pace with a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from medaudit._errors import param_error

__all__ = ["iter_batches"]


class _ImageDataset:
    """Map-style dataset: row index → (index, float32 image tensor at the model's size)."""

    def __init__(self, cohort: Any, image_size: int | None, channels: int | None) -> None:
        self.cohort = cohort
        self.image_size = image_size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.cohort)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        _, x = next(
            self.cohort.batches(1, indices=[i], image_size=self.image_size, channels=self.channels)
        )
        return i, x[0]


def iter_batches(
    cohort: Any,
    batch_size: int,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[np.ndarray, Any]]:
    """Yield ``(indices, tensor)`` batches as :meth:`Cohort.batches` does.

    Parameters
    ----------
    cohort : Cohort
    batch_size : int
    indices : array-like of int, optional
        Rows, in this order (default: all).
    image_size, channels : int, optional
        Resize / channel-match as the model expects.
    workers : int, default 0
        Decode disk-backed images in this many worker processes.
    pin_memory : bool, default False
        Page-lock batches for fast, non-blocking copies to a GPU.
    """
    import torch

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise param_error("workers", "iter_batches", "an int >= 0", workers)
    order = np.arange(len(cohort)) if indices is None else np.asarray(indices)
    if workers > 0 and cohort.images is None and image_size is None:
        # Batches need one size: bring every image to the first one's (as Cohort.batches
        # does); non-square images keep the in-process path.
        _, h, w = cohort.image_shape
        image_size = h if h == w else None
    if workers == 0 or cohort.images is not None or image_size is None:
        for idx, x in cohort.batches(
            batch_size, indices=order, image_size=image_size, channels=channels
        ):
            yield idx, (x.pin_memory() if pin_memory else x)
        return
    chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    loader: Any = torch.utils.data.DataLoader(
        _ImageDataset(cohort, image_size, channels),  # type: ignore[arg-type]
        batch_sampler=chunks,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    for idx, x in loader:
        yield idx.numpy(), x
