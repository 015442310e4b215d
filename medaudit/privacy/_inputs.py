"""What make_private accepts: its arguments checked, each refusal one clear message.

The data set's size and sampler decide the sample rate the accountant uses, so anything
that would make the reported ε wrong (weighted, class-balanced or shuffled sampling, a
DataLoader whose sampler Opacus would silently replace) is refused with what to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models import BatchSampler, PoissonSampler
from medaudit.privacy._ledger import default_delta, warn_if_delta_large

__all__ = [
    "MSG_BUDGET_ARGS",
    "MSG_DELTA",
    "MSG_EMPTY",
    "MSG_EPSILON",
    "MSG_LOADER_SAMPLER",
    "MSG_NOT_POISSON",
    "MSG_OPTIMIZER_PARAMS",
    "MSG_WEIGHTED_SAMPLER",
    "OptimizerFactory",
    "build_optimizer",
    "check_budget",
    "check_model_arg",
    "check_number",
    "data_size",
    "poisson_sampler",
]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

MSG_EPSILON = (
    "target_epsilon must be a finite number > 0 (got {got!r}): epsilon = 0 would need "
    "infinite noise. Pass the privacy budget you can defend, e.g. target_epsilon=8, or "
    "train without make_private for a non-private model."
)

MSG_DELTA = (
    "target_delta must lie in (0, 1) (got {got!r}): delta is the probability that the "
    "guarantee fails. Leave it unset for the default (a power of ten below 0.1/N) or pass "
    "e.g. target_delta=1e-5."
)

MSG_BUDGET_ARGS = (
    "Give exactly one of target_epsilon (the noise is calibrated to reach it) and "
    "noise_multiplier (epsilon is whatever it spends); got {got}."
)

MSG_EMPTY = (
    "The training data set is empty: DP-SGD needs training samples (and its delta must "
    "lie below 1/N). Check the manifest's train split or the cohort you passed."
)

MSG_WEIGHTED_SAMPLER = (
    "{what} draws samples with unequal probabilities, but the privacy accountant assumes "
    "every sample joins each batch with the same probability (Poisson sampling), so the "
    "epsilon it reported would be wrong. Use sampler='poisson' (the default); for a rare "
    "class, weight the loss instead (per-sample clipping caps what one sample can count)."
)

MSG_NOT_POISSON = (
    "{what} is not Poisson sampling, which the privacy accountant assumes (each sample "
    "joins each batch independently with the same probability). Use sampler='poisson' "
    "(the default)."
)

MSG_LOADER_SAMPLER = (
    "The DataLoader samples with a {kind}; Opacus replaces it with Poisson sampling over "
    "the whole data set, so it would train on other samples or with other weights than "
    "you chose. Pass a DataLoader with shuffle=True (or a Cohort) and select the samples "
    "by subsetting the data set instead."
)

MSG_OPTIMIZER_PARAMS = (
    "The optimizer holds parameters that are not the model's; build it from "
    "model.parameters() (after any layer replacement), or pass a factory "
    "(lambda params: torch.optim.SGD(params, lr=0.1))."
)


def build_optimizer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None,
    *,
    rebuilt: bool,
    notes: list[str],
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        return torch.optim.AdamW(params, lr=1e-3)
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise param_error(
                "optimizer", "make_private", "a torch Optimizer, a factory or None", optimizer
            )
        optimizer = optimizer(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise param_error(
                "optimizer", "make_private", "a factory returning a torch Optimizer", optimizer
            )
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if held - {id(p) for p in model.parameters()}:
        if not rebuilt:
            raise InvalidInputError(MSG_OPTIMIZER_PARAMS)
        optimizer = type(optimizer)(params, **optimizer.defaults)
        notes.append(
            f"The {type(optimizer).__name__} optimizer was rebuilt with its defaults over "
            "the replaced layers' parameters."
        )
    return optimizer


def check_model_arg(model: Any, func: str) -> None:
    if not isinstance(model, nn.Module):
        raise param_error("model", func, "a torch.nn.Module", type(model).__name__)
    from opacus import GradSampleModule

    if isinstance(model, GradSampleModule):
        raise param_error("model", func, "a plain module (not already wrapped)", "GradSampleModule")


def data_size(data: Any, func: str) -> tuple[int, Any]:
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

    from medaudit.data import Cohort

    if isinstance(data, Cohort):
        n, loader = len(data), None
    elif isinstance(data, DataLoader):
        sampler = data.sampler
        if isinstance(sampler, torch.utils.data.WeightedRandomSampler):
            raise InvalidInputError(
                MSG_WEIGHTED_SAMPLER.format(what="The DataLoader's WeightedRandomSampler")
            )
        if not isinstance(sampler, (RandomSampler, SequentialSampler)) or (
            data.batch_sampler is not None
            and type(data.batch_sampler) is not torch.utils.data.BatchSampler
        ):
            raise InvalidInputError(MSG_LOADER_SAMPLER.format(kind=type(sampler).__name__))
        n, loader = len(data.dataset), data  # type: ignore[arg-type]
    else:
        raise param_error(
            "data", func, "a medaudit.data.Cohort or a torch DataLoader", type(data).__name__
        )
    if n == 0:
        raise InvalidInputError(MSG_EMPTY)
    return n, loader


def poisson_sampler(sampler: Any, batch_size: int, n: int) -> PoissonSampler:
    from medaudit.models import ClassBalancedSampler, ShuffleSampler

    if isinstance(sampler, PoissonSampler):
        return sampler
    if sampler == "poisson":
        return PoissonSampler(min(1.0, batch_size / n))
    if sampler == "balanced" or isinstance(sampler, ClassBalancedSampler):
        raise InvalidInputError(MSG_WEIGHTED_SAMPLER.format(what="The class-balanced sampler"))
    if sampler == "shuffle" or isinstance(sampler, (ShuffleSampler, BatchSampler)):
        what = f"The {sampler!r} sampler" if isinstance(sampler, str) else type(sampler).__name__
        raise InvalidInputError(MSG_NOT_POISSON.format(what=what))
    raise param_error("sampler", "make_private", "'poisson' or a PoissonSampler", sampler)


def check_budget(target_epsilon: Any, noise_multiplier: Any, target_delta: Any, n: int) -> float:
    given = [
        k
        for k, v in (("target_epsilon", target_epsilon), ("noise_multiplier", noise_multiplier))
        if v is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(MSG_BUDGET_ARGS.format(got=" and ".join(given) or "neither"))
    if target_epsilon is not None and not (
        _is_number(target_epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0
    ):
        raise InvalidInputError(MSG_EPSILON.format(got=target_epsilon))
    if noise_multiplier is not None:
        check_number(noise_multiplier, "noise_multiplier", "make_private")
    if target_delta is None:
        return default_delta(n)
    if not (_is_number(target_delta) and 0 < target_delta < 1):
        raise InvalidInputError(MSG_DELTA.format(got=target_delta))
    warn_if_delta_large(float(target_delta), n, stacklevel=4)
    return float(target_delta)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_number(v: Any, name: str, func: str) -> None:
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise param_error(name, func, "a finite float > 0", v)
