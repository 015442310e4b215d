"""What the membership attacks observe: each model's logit-scaled confidence per image.

Every attack in this package reads one number per (model, image): the logit-scaled
confidence in the true label,

    phi = z_y - logsumexp_{j != y} z_j = log(p_y / (1 - p_y)),

computed from the logits in float64. From ``phi`` follow the loss
(``softplus(-phi)``) and the confidence (``sigmoid(phi)``) without the saturation that
float32 probabilities suffer on memorised images (``p_y`` rounds to 1.0 once the logit
margin passes about 17, and LiRA's Gaussian fits then see infinities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = ["MembershipSignals", "confidence", "logit_confidence", "loss_from_phi"]


def logit_confidence(
    model: Any,
    cohort: Any,
    *,
    image_size: int | None = None,
    in_channels: int | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Logit-scaled confidence in the true label of every image, from one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits of shape (B, n_classes) (a single logit is read as a binary
        model's positive class).
    cohort : Cohort
    image_size, in_channels : int, optional
        What the model expects (images are resized / channel-matched on the fly).
    mean, std : float or sequence of float, optional
        Normalisation after scaling to [0, 1].
    batch_size : int, default 256
    device : str, default "cpu"

    Returns
    -------
    ndarray of shape (n_images,), float64
        ``z_y - logsumexp_{j != y} z_j``.

    References
    ----------
    .. [1] Carlini N, Chien S, Nasr M, Song S, Terzis A, Tramer F. Membership inference
           attacks from first principles. IEEE S&P 2022 (section IV-B: logit scaling).

    Examples
    --------
    >>> import torch, numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> class Fixed(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.tensor([[0.0, 2.0]]).repeat(len(x), 1)
    >>> c = Cohort(pd.DataFrame({"label": [1, 0]}), images=np.zeros((2, 4, 4), np.uint8))
    >>> logit_confidence(Fixed(), c).tolist()
    [2.0, -2.0]
    """
    import torch

    from medaudit.data import Cohort
    from medaudit.data._loader import iter_batches

    if not isinstance(cohort, Cohort):
        raise param_error("cohort", "logit_confidence", "a Cohort", type(cohort).__name__)
    if len(cohort) == 0:
        return np.zeros(0, dtype=np.float64)
    labels = torch.tensor(cohort.labels, dtype=torch.int64)  # a copy: labels may be read-only
    m = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = np.empty(len(cohort), dtype=np.float64)
    model = model.to(device).eval()
    with torch.inference_mode():
        for idx, x in iter_batches(cohort, batch_size, image_size=image_size, channels=in_channels):
            if m is not None:
                x = x - m
            if s is not None:
                x = x / s
            z = model(x.to(device)).detach().to("cpu", torch.float64)
            if z.ndim != 2:
                raise InvalidInputError(
                    f"The model returned logits of shape {tuple(z.shape)}; "
                    "expected (batch, n_classes)."
                )
            if z.shape[1] == 1:  # single-logit binary head: logits (0, z)
                z = torch.cat([torch.zeros_like(z), z], dim=1)
            y = labels[torch.from_numpy(np.asarray(idx))]
            if int(y.max()) >= z.shape[1]:
                raise InvalidInputError(
                    f"Cohort {cohort.name!r} has label {int(y.max())} but the model outputs "
                    f"{z.shape[1]} classes."
                )
            zy = z.gather(1, y[:, None])[:, 0]
            others = z.scatter(1, y[:, None], float("-inf"))
            out[np.asarray(idx)] = (zy - torch.logsumexp(others, dim=1)).numpy()
    return out


def loss_from_phi(phi: np.ndarray) -> np.ndarray:
    """Cross-entropy loss from the logit-scaled confidence: ``softplus(-phi)``.

    Examples
    --------
    >>> float(loss_from_phi(np.array([0.0]))[0]) == float(np.log(2))
    True
    """
    phi = np.asarray(phi, dtype=np.float64)
    return np.logaddexp(0.0, -phi)


def confidence(phi: np.ndarray) -> np.ndarray:
    """Probability of the true label from the logit-scaled confidence: ``sigmoid(phi)``.

    Examples
    --------
    >>> confidence(np.array([0.0])).tolist()
    [0.5]
    """
    phi = np.asarray(phi, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -phi))


@dataclass(frozen=True)
class MembershipSignals:
    """Logit-scaled confidences of the target and the reference models.

    Attributes
    ----------
    target : ndarray of shape (n,)
        The target model on the audited images (members and non-members).
    reference : ndarray of shape (K, n)
        Each reference model on the audited images (K may be 0).
    reference_in : ndarray of shape (K, n), bool
        Whether image ``i`` was in reference model ``k``'s training data (all False for
        offline reference models, trained on population data only).
    population_target : ndarray of shape (m,)
        The target model on population images (RMIA's ``z`` samples), which no model
        trained on.
    population_reference : ndarray of shape (K, m)
        Each reference model on the population images.
    """

    target: np.ndarray
    reference: np.ndarray
    reference_in: np.ndarray
    population_target: np.ndarray
    population_reference: np.ndarray

    def __post_init__(self) -> None:
        n, m = len(self.target), len(self.population_target)
        k = self.reference.shape[0] if self.reference.ndim == 2 else -1
        problems = []
        if self.reference.shape != (k, n):
            problems.append(f"reference must have shape (K, {n}), got {self.reference.shape}")
        if self.reference_in.shape != self.reference.shape:
            problems.append(
                f"reference_in must have the shape of reference, got {self.reference_in.shape}"
            )
        if self.population_reference.shape != (k, m):
            problems.append(
                f"population_reference must have shape ({k}, {m}), "
                f"got {self.population_reference.shape}"
            )
        arrays = (self.target, self.reference, self.population_target, self.population_reference)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            problems.append("signals must be finite")
        if problems:
            raise InvalidInputError("MembershipSignals: " + "; ".join(problems) + ".")

    @property
    def n_reference(self) -> int:
        """Number of reference models K."""
        return int(self.reference.shape[0])

    @property
    def online(self) -> bool:
        """Whether some reference model trained on some audited image (online design)."""
        return bool(self.reference_in.any())

    @classmethod
    def from_arrays(
        cls,
        target: Any,
        reference: Any = None,
        *,
        reference_in: Any = None,
        population_target: Any = None,
        population_reference: Any = None,
    ) -> MembershipSignals:
        """Build from array-likes, filling what is not given with empty arrays.

        Examples
        --------
        >>> s = MembershipSignals.from_arrays([1.0, 2.0], [[0.5, 0.5]])
        >>> s.n_reference, s.online, s.population_target.shape
        (1, False, (0,))
        """
        t = np.asarray(target, dtype=np.float64).ravel()
        ref = (
            np.zeros((0, len(t)))
            if reference is None
            else np.atleast_2d(np.asarray(reference, dtype=np.float64))
        )
        k = ref.shape[0]
        rin = (
            np.zeros(ref.shape, dtype=bool)
            if reference_in is None
            else np.atleast_2d(np.asarray(reference_in, dtype=bool))
        )
        pt = np.zeros(0) if population_target is None else np.asarray(population_target, float)
        pr = (
            np.zeros((k, len(pt)))
            if population_reference is None
            else np.asarray(population_reference, dtype=np.float64).reshape(k, len(pt))
        )
        return cls(t, ref, rin, pt.ravel(), pr)
