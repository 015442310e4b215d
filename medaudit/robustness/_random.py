"""Per-image random streams: each image draws from its own generator, keyed by its row.

A corruption that needs randomness (noise, a blur angle, where a bubble lands) draws it
from :class:`ImageRandom`. Image ``i`` of a batch gets a generator seeded by
``(seed, stream, index[i])``, where ``index`` is the image's row in the cohort, so the
corrupted image does not depend on which other images share its batch, on the batch size
or on the order of the batches. The stream is the corruption's name and not its severity:
the five severities of one corruption reuse the same draws (common random numbers), so
that the difference between two severities is the severity, not a new noise pattern.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from medaudit._errors import param_error

__all__ = ["ImageRandom", "image_keys"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014), vectorised on uint64."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def image_keys(index: np.ndarray | Sequence[int], *, seed: int = 0, stream: str = "") -> np.ndarray:
    """64-bit seed of every image's generator, from ``(seed, stream, index)``.

    Parameters
    ----------
    index : array-like of int, shape (n_images,)
        Row of each image in its cohort.
    seed : int
        The run's seed.
    stream : str
        Names the use (a corruption's name), so two corruptions draw independently.

    Returns
    -------
    ndarray of uint64, shape (n_images,)

    Examples
    --------
    >>> a = image_keys([0, 1, 2], seed=0, stream="gaussian_noise")
    >>> b = image_keys([2], seed=0, stream="gaussian_noise")
    >>> bool(a[2] == b[0]), bool(a[0] == a[1])
    (True, False)
    """
    digest = hashlib.blake2b(f"{int(seed)}\x1f{stream}".encode(), digest_size=8).digest()
    base = np.uint64(int.from_bytes(digest, "little"))
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    return _splitmix64(_splitmix64(idx ^ base) + base)


class ImageRandom:
    """Random draws for a batch, one independent generator per image.

    Every method returns a tensor of shape ``(n_images, *shape)`` on ``device``; row
    ``i`` comes from image ``i``'s own generator, in the order the methods are called.

    Parameters
    ----------
    index : array-like of int, shape (n_images,)
        Row of each image in its cohort.
    seed : int
    stream : str
        Usually the corruption's name.
    device : str or torch.device
        Where the draws are made (a CUDA generator on a GPU).

    Examples
    --------
    >>> r1 = ImageRandom([3, 4], seed=1, stream="demo")
    >>> r2 = ImageRandom([4], seed=1, stream="demo")
    >>> bool((r1.normal(2, 2)[1] == r2.normal(2, 2)[0]).all())
    True
    """

    def __init__(
        self,
        index: np.ndarray | Sequence[int],
        *,
        seed: int = 0,
        stream: str = "",
        device: Any = "cpu",
    ) -> None:
        import torch

        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.seed = int(seed)
        self.stream = str(stream)
        self.device = torch.device(device)
        self._keys = image_keys(self.index, seed=self.seed, stream=self.stream)
        self._generators: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def generators(self) -> list[Any]:
        """One ``torch.Generator`` per image (created on first use)."""
        if self._generators is None:
            import torch

            self._generators = [
                torch.Generator(device=self.device).manual_seed(int(k)) for k in self._keys
            ]
        return self._generators

    def _fill(self, shape: tuple[int, ...], method: str, *args: float) -> Any:
        import torch

        out = torch.empty((len(self), *shape), device=self.device)
        for row, g in zip(out, self.generators, strict=True):
            getattr(row, method)(*args, generator=g)
        return out

    def normal(self, *shape: int) -> Any:
        """Standard normal draws, shape ``(n_images, *shape)``."""
        return self._fill(tuple(shape), "normal_", 0.0, 1.0)

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> Any:
        """Uniform draws on ``[low, high)``, shape ``(n_images, *shape)``."""
        return self._fill(tuple(shape), "uniform_", float(low), float(high))

    def poisson(self, rates: Any, *, unit: float = 0.125) -> Any:
        """Poisson draws with the given rates, a tensor of shape ``(n_images, ...)``.

        Exact inversion of each image's uniforms on a grid of rates of step ``unit``
        (see :func:`~medaudit.robustness._poisson.poisson_from_uniforms`): one uniform
        per element, a second only where a rate lies off the grid, and torch's sampler
        with the image's generator for rates beyond the table.
        """
        import torch

        from medaudit.robustness._poisson import poisson_from_uniforms

        if rates.shape[0] != len(self):
            raise param_error("rates", "ImageRandom.poisson", f"{len(self)} rows", rates.shape[0])
        shape = tuple(rates.shape[1:])

        def large(excess: Any) -> Any:
            return torch.stack(
                [
                    torch.poisson(r, generator=g)
                    for r, g in zip(excess, self.generators, strict=True)
                ]
            )

        counts = poisson_from_uniforms(
            rates, self.uniform(*shape), lambda: self.uniform(*shape), unit=unit, large=large
        )
        return counts.to(rates.dtype)

    def integers(self, low: int, high: int, *shape: int) -> Any:
        """Integers in ``[low, high)``, shape ``(n_images, *shape)``, dtype int64."""
        import torch

        out = torch.empty((len(self), *shape), dtype=torch.int64, device=self.device)
        for row, g in zip(out, self.generators, strict=True):
            row.random_(int(low), int(high), generator=g)
        return out
