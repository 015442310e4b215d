"""Batch samplers of the one training loop: which rows make up each step of an epoch.

One verb: ``sampler.epoch(labels, generator)`` yields the row indices of each batch.

- :class:`ShuffleSampler` — a fresh random permutation per epoch in fixed-size batches
  (a final batch of one image is dropped: BatchNorm cannot train on it).
- :class:`PoissonSampler` — every row joins each batch independently with probability
  ``sample_rate`` (batches vary in size and may be empty). This is the sampling that
  DP-SGD's privacy accounting assumes (Abadi et al. 2016; Mironov et al. 2019).
- :class:`ClassBalancedSampler` — rows drawn with replacement, each class equally likely.
  Not valid for DP accounting (the sample rate differs per row), and the DP wrapper
  refuses it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch

from medaudit._errors import param_error

__all__ = [
    "BatchSampler",
    "ClassBalancedSampler",
    "PoissonSampler",
    "ShuffleSampler",
    "make_sampler",
]


class BatchSampler(ABC):
    """Decides the rows of every batch of an epoch."""

    #: True when batch membership is an independent Bernoulli draw per row (DP accounting).
    poisson: bool = False

    @abstractmethod
    def epoch(self, labels: np.ndarray, generator: torch.Generator) -> Iterator[np.ndarray]:
        """Yield the row indices of each batch of one epoch over ``len(labels)`` rows."""

    @abstractmethod
    def steps_per_epoch(self, n: int) -> int:
        """Number of batches one epoch yields for ``n`` rows."""


class ShuffleSampler(BatchSampler):
    """A random permutation per epoch, cut into batches of ``batch_size``.

    Examples
    --------
    >>> s = ShuffleSampler(4)
    >>> [len(b) for b in s.epoch(np.zeros(9), torch.Generator().manual_seed(0))]
    [4, 4]
    """

    def __init__(self, batch_size: int) -> None:
        _check_int(batch_size, "batch_size", "ShuffleSampler")
        self.batch_size = int(batch_size)

    def epoch(self, labels: np.ndarray, generator: torch.Generator) -> Iterator[np.ndarray]:
        n = len(labels)
        perm = torch.randperm(n, generator=generator).numpy()
        if n % self.batch_size == 1 and n > 1:
            perm = perm[:-1]
        for start in range(0, len(perm), self.batch_size):
            yield perm[start : start + self.batch_size]

    def steps_per_epoch(self, n: int) -> int:
        bs = self.batch_size
        return n // bs + (1 if n % bs > 1 else 0) or 1


class PoissonSampler(BatchSampler):
    """Each row joins each batch independently with probability ``sample_rate``.

    An epoch has ``round(1 / sample_rate)`` steps, so each row is seen once per epoch on
    average; batches vary in size and can be empty (the loop then takes no step, and the
    privacy accountant still counts the step: the DP wrapper sees every step).

    Parameters
    ----------
    sample_rate : float in (0, 1]
        Probability that a row is in a given batch (Opacus's ``sample_rate``).

    Examples
    --------
    >>> s = PoissonSampler(0.25)
    >>> batches = list(s.epoch(np.zeros(1000), torch.Generator().manual_seed(0)))
    >>> len(batches), 200 < len(batches[0]) < 300
    (4, True)
    """

    poisson = True

    def __init__(self, sample_rate: float) -> None:
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not 0 < sample_rate <= 1
        ):
            raise param_error("sample_rate", "PoissonSampler", "a float in (0, 1]", sample_rate)
        self.sample_rate = float(sample_rate)

    def epoch(self, labels: np.ndarray, generator: torch.Generator) -> Iterator[np.ndarray]:
        n = len(labels)
        for _ in range(self.steps_per_epoch(n)):
            mask = torch.rand(n, generator=generator) < self.sample_rate
            yield torch.nonzero(mask).flatten().numpy()

    def steps_per_epoch(self, n: int) -> int:
        return max(1, round(1.0 / self.sample_rate))


class ClassBalancedSampler(BatchSampler):
    """Batches of ``batch_size`` rows drawn with replacement, every class equally likely.

    An epoch has ``ceil(n / batch_size)`` batches. For data sets where the positive class
    is rare; not for DP training (see the module notes).
    """

    def __init__(self, batch_size: int) -> None:
        _check_int(batch_size, "batch_size", "ClassBalancedSampler")
        self.batch_size = int(batch_size)

    def epoch(self, labels: np.ndarray, generator: torch.Generator) -> Iterator[np.ndarray]:
        labels = np.asarray(labels)
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
        bs = max(2, self.batch_size)  # never a batch of one (BatchNorm)
        for _ in range(self.steps_per_epoch(len(labels))):
            yield torch.multinomial(weights, bs, replacement=True, generator=generator).numpy()

    def steps_per_epoch(self, n: int) -> int:
        return max(1, math.ceil(n / self.batch_size))


def make_sampler(sampler: str | BatchSampler, batch_size: int, n: int) -> BatchSampler:
    """A sampler from its name (``"shuffle"``, ``"poisson"``, ``"balanced"``) or itself.

    ``"poisson"`` uses ``sample_rate = batch_size / n`` (expected batch ``batch_size``).
    """
    if isinstance(sampler, BatchSampler):
        return sampler
    if sampler == "shuffle":
        return ShuffleSampler(batch_size)
    if sampler == "poisson":
        return PoissonSampler(min(1.0, batch_size / max(n, 1)))
    if sampler == "balanced":
        return ClassBalancedSampler(batch_size)
    raise param_error(
        "sampler",
        "train_model",
        "'shuffle', 'poisson', 'balanced' or a BatchSampler",
        sampler,
    )


def _check_int(v: object, name: str, func: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise param_error(name, func, "an int >= 1", v)
