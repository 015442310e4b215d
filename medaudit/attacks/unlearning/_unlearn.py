"""``unlearn``: apply one method to a forget request and keep a record of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from medaudit._errors import param_error
from medaudit.attacks.unlearning._methods import (
    UnlearningJob,
    UnlearnSettings,
    get_method,
)
from medaudit.attacks.unlearning._request import ForgetRequest

__all__ = ["UnlearningResult", "save_unlearned", "unlearn"]


@dataclass(frozen=True)
class UnlearningResult:
    """What :func:`unlearn` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The unlearned model, in eval mode.
    method : str
    request : ForgetRequest
    forget_mask : ndarray of shape (n_train,), bool
        Training rows forgotten.
    record : dict
        Identifiers and counts only (what :func:`save_unlearned` stores in the
        checkpoint's metadata under ``unlearning``).
    seconds : float
    """

    model: nn.Module
    method: str
    request: ForgetRequest
    forget_mask: np.ndarray = field(repr=False)
    record: dict[str, Any] = field(repr=False)
    seconds: float = 0.0


def unlearn(
    model: nn.Module,
    train: Any,
    request: ForgetRequest,
    *,
    method: str = "finetune",
    settings: UnlearnSettings | None = None,
    mean: list[float],
    std: list[float],
    image_size: int | None = None,
    in_channels: int = 1,
    num_classes: int = 2,
) -> UnlearningResult:
    """Make ``model`` forget the rows of ``train`` that ``request`` names.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (left unchanged; methods work on a copy).
    train : Cohort
        The data it was trained on.
    request : ForgetRequest
    method : str, default "finetune"
        A registered method (:func:`list_methods`).
    settings : UnlearnSettings, optional
    mean, std : list of float
        The model's input normalisation.
    image_size : int, optional
    in_channels, num_classes : int

    Returns
    -------
    UnlearningResult

    References
    ----------
    .. [1] Bourtoule L, et al. Machine unlearning. IEEE S&P 2021 (retraining as the exact
           reference).
    .. [2] Kurmanji M, Triantafillou P, Hayes J, Triantafillou E. Towards unbounded
           machine unlearning (SCRUB). NeurIPS 2023.
    .. [3] Graves L, Nagisetty V, Ganesh V. Amnesiac machine learning. AAAI 2021
           (random labels).
    """
    if not isinstance(request, ForgetRequest):
        raise param_error("request", "unlearn", "a ForgetRequest", type(request).__name__)
    m = get_method(method)
    s = settings or UnlearnSettings()
    mask = request.mask(train)
    job = UnlearningJob(
        model=model,
        train=train,
        forget_mask=mask,
        settings=s,
        mean=list(mean),
        std=list(std),
        image_size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
    )
    t0 = time.perf_counter()
    net = m.run(job)
    record = {**request.record(int(mask.sum())), "method": m.name, "exact": m.exact}
    return UnlearningResult(
        model=net,
        method=m.name,
        request=request,
        forget_mask=mask,
        record=record,
        seconds=time.perf_counter() - t0,
    )


def save_unlearned(result: UnlearningResult, path: str | Path, loaded: Any) -> Path:
    """Write the unlearned model with the original checkpoint's metadata plus the record.

    ``loaded`` is the :class:`~medaudit.models.LoadedModel` of the original; the record
    (identifiers only) goes under the metadata key ``unlearning``.
    """
    from medaudit.models import save_checkpoint

    return save_checkpoint(
        result.model,
        path,
        arch=loaded.arch,
        in_channels=loaded.in_channels,
        num_classes=loaded.num_classes,
        image_size=loaded.image_size,
        class_names=loaded.class_names,
        mean=loaded.mean,
        std=loaded.std,
        extra={**loaded.extra, "unlearning": result.record},
    )
