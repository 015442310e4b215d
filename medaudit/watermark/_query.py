"""Black-box access: anything that returns class scores for a batch of images.

Verification only ever sees the scores a model returns, so the same code verifies a
checkpoint on disk, a loaded model, or a wrapper around a remote endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error

__all__ = ["ModelScorer", "as_scorer"]

MSG_SCORES_SHAPE = (
    "The model returned scores of shape {shape} for {n} images; expected (n_images, "
    "n_classes) (or (n_images,) positive-class scores of a binary model)."
)
MSG_SCORES_FINITE = "The model returned NaN or infinite scores."
MSG_NOT_A_MODEL = (
    "The 'model' parameter of {func} must be a checkpoint path, a LoadedModel, a "
    "torch.nn.Module or a callable images -> scores. Got {got} instead."
)


@dataclass
class ModelScorer:
    """Class scores for images, from a model queried as a black box.

    Call it with float32 images of shape (n, C, H, W) in [0, 1]; it returns an array of
    shape (n, n_classes). ``num_classes`` is known up front for a checkpoint and learnt
    from the first answer otherwise. ``queries`` counts the images sent so far.
    """

    fn: Callable[[np.ndarray], Any]
    num_classes: int | None = None
    description: str = "model"
    queries: int = field(default=0, init=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Scores of shape (n, n_classes) for ``images`` of shape (n, C, H, W)."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        out = self.fn(x)
        if hasattr(out, "detach"):  # a torch tensor from a user's callable
            out = out.detach().cpu().numpy()
        s = np.asarray(out, dtype=np.float64)
        if s.ndim == 1 and len(s) == len(x):
            s = np.column_stack([1.0 - s, s])
        if s.ndim != 2 or s.shape[0] != len(x) or s.shape[1] < 2:
            raise InvalidInputError(MSG_SCORES_SHAPE.format(shape=s.shape, n=len(x)))
        if not np.all(np.isfinite(s)):
            raise InvalidInputError(MSG_SCORES_FINITE)
        self.queries += len(x)
        if self.num_classes is None:
            self.num_classes = int(s.shape[1])
        return s


def as_scorer(
    model: Any,
    *,
    image_size: int | None = None,
    in_channels: int | None = None,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    func: str = "as_scorer",
) -> ModelScorer:
    """Wrap a model so that it can be queried with images and answers with scores.

    Parameters
    ----------
    model : path, LoadedModel, torch.nn.Module or callable
        A checkpoint (loaded safely with :func:`medaudit.models.load_checkpoint`, its
        input size and normalisation from its metadata), a loaded one, a module (give its
        input size and normalisation here), or any callable taking float32 images of
        shape (n, C, H, W) in [0, 1] and returning scores of shape (n, n_classes), e.g. a
        wrapper around a REST endpoint.
    image_size, in_channels, mean, std : optional
        What a bare module expects (ignored for checkpoints, which carry their own).
    batch_size : int, default 256
    device : str, default "cpu"

    Returns
    -------
    ModelScorer

    Examples
    --------
    >>> s = as_scorer(lambda x: np.tile([0.3, 0.7], (len(x), 1)))
    >>> s(np.zeros((2, 1, 8, 8))).shape, s.num_classes
    ((2, 2), 2)
    """
    if isinstance(model, ModelScorer):
        return model
    if isinstance(model, (str, os.PathLike)):
        from medaudit.models import load_checkpoint

        model = load_checkpoint(model)
    from medaudit.models import LoadedModel

    if isinstance(model, LoadedModel):
        return _module_scorer(
            model.model,
            num_classes=model.num_classes,
            options=model.inference_options(),
            batch_size=batch_size,
            device=device,
            description=f"{model.arch} checkpoint",
        )
    import torch

    if isinstance(model, torch.nn.Module):
        opts = {"image_size": image_size, "in_channels": in_channels, "mean": mean, "std": std}
        return _module_scorer(
            model,
            num_classes=None,
            options=opts,
            batch_size=batch_size,
            device=device,
            description=type(model).__name__,
        )
    if callable(model):
        return ModelScorer(model, description=getattr(model, "__name__", "callable"))
    raise InvalidInputError(MSG_NOT_A_MODEL.format(func=func, got=type(model).__name__))


def _module_scorer(
    module: Any,
    *,
    num_classes: int | None,
    options: dict[str, Any],
    batch_size: int,
    device: str,
    description: str,
) -> ModelScorer:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise param_error("batch_size", "as_scorer", "a positive int", batch_size)

    def scores(images: np.ndarray) -> np.ndarray:
        from medaudit.data import Cohort
        from medaudit.inference import predict

        cohort = Cohort(pd.DataFrame({"label": np.zeros(len(images), np.int64)}), images=images)
        preds = predict(
            module, cohort, batch_size=batch_size, device=device, features=False, **options
        )
        return preds.scores

    return ModelScorer(scores, num_classes=num_classes, description=description)
