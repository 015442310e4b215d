"""Which layers DP-SGD cannot train, all listed at once, and the fix for the fixable ones.

DP-SGD clips every sample's own gradient, so no layer may mix the samples of a batch or
keep statistics of the training data outside the privacy mechanism. BatchNorm does both
(batch statistics in training, running statistics in its buffers) — also when frozen or
without affine weights, which Opacus's own validator lets through. The fix swaps it for
GroupNorm, as Opacus's ``ModuleValidator.fix`` does; the other layers Opacus can replace
(InstanceNorm with running statistics, LSTM/GRU/RNN, MultiheadAttention) are replaced by
Opacus's fixers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.privacy._ledger import PrivacyWarning

__all__ = ["LayerProblem", "fix_model", "incompatible_layers"]

MSG_INCOMPATIBLE = "The model has {n} layer(s) that DP-SGD cannot train: {layers}. {fix}"
FIX_HINT = (
    "Pass fix=True to make_private to replace them (BatchNorm becomes GroupNorm), or build "
    "the model with GroupNorm; on the command line choose a GroupNorm architecture such as "
    "--arch small_cnn_dp."
)
NO_FIX_HINT = "Replace these layers by hand: medaudit cannot swap them for you."
MSG_BATCHNORM = (
    "BatchNorm normalises each sample with statistics of its whole batch and keeps running "
    "statistics of the training data, so no per-sample gradient exists; use GroupNorm"
)
MSG_NO_PARAMETERS = "The model has no trainable parameters; there is nothing to train privately."
MSG_STATISTICS_LOST = (
    "fix=True replaced {n} trained BatchNorm layer(s) ({names}) by GroupNorm: their "
    "pretrained running statistics and affine weights are lost, so the model must be "
    "trained (privately) before its predictions mean anything again."
)


@dataclass(frozen=True)
class LayerProblem:
    """One layer DP-SGD cannot train.

    Attributes
    ----------
    name : str
        Qualified name in the model (``"body.1"``).
    layer : str
        Class name (``"BatchNorm2d"``).
    problem : str
        Why, and what would fix it.
    fixable : bool
        Whether ``fix_model`` replaces it.
    """

    name: str
    layer: str
    problem: str
    fixable: bool

    def __str__(self) -> str:
        return f"{self.name or '<model>'} ({self.layer}): {self.problem}"


def incompatible_layers(model: nn.Module) -> list[LayerProblem]:
    """Every layer of ``model`` that DP-SGD cannot train (empty when it can train all).

    Checks, for every named submodule: BatchNorm of any kind (even frozen or without
    affine weights: it still mixes the samples of a batch in training mode), the
    validators Opacus registers (InstanceNorm tracking running statistics, LSTM, GRU,
    RNN, MultiheadAttention), and any other trainable layer holding buffers (data
    statistics outside the privacy mechanism; Opacus's ``GradSampleModule.validate``).

    Examples
    --------
    >>> from medaudit.models import build_model
    >>> probs = incompatible_layers(build_model("small_cnn"))
    >>> [(p.name, p.layer, p.fixable) for p in probs][:2]
    [('body.1', 'BatchNorm2d', True), ('body.5', 'BatchNorm2d', True)]
    >>> incompatible_layers(build_model("small_cnn_gn"))
    []
    """
    if not isinstance(model, nn.Module):
        raise param_error("model", "incompatible_layers", "a torch.nn.Module", type(model).__name__)
    from opacus.validators import ModuleValidator

    problems: list[LayerProblem] = []
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            problems.append(LayerProblem(name, kind, MSG_BATCHNORM, True))
            continue
        trainable = any(p.requires_grad for p in mod.parameters(recurse=False))
        if not trainable:
            continue
        validator = ModuleValidator.VALIDATORS.get(type(mod))
        errors = validator(mod) if validator is not None else []
        if errors:
            text = " ".join(str(errors[0]).split())
            fixable = type(mod) in ModuleValidator.FIXERS
            problems.append(LayerProblem(name, kind, _first_sentence(text), fixable))
        elif list(mod.buffers(recurse=False)):
            problems.append(
                LayerProblem(
                    name,
                    kind,
                    "a trainable layer with buffers keeps statistics of the training data "
                    "outside the privacy mechanism",
                    False,
                )
            )
    return problems


def check_model(model: nn.Module) -> None:
    """Raise one :class:`InvalidInputError` listing every incompatible layer, with the fix."""
    if not any(p.requires_grad for p in model.parameters()):
        raise InvalidInputError(MSG_NO_PARAMETERS)
    problems = incompatible_layers(model)
    if problems:
        fix = FIX_HINT if any(p.fixable for p in problems) else NO_FIX_HINT
        raise InvalidInputError(
            MSG_INCOMPATIBLE.format(
                n=len(problems), layers="; ".join(str(p) for p in problems), fix=fix
            )
        )


def fix_model(model: nn.Module, *, groups: int | None = None) -> list[str]:
    """Replace, in place, every layer of ``model`` that DP-SGD cannot train but Opacus can fix.

    BatchNorm with C channels becomes ``GroupNorm(G, C)`` with fresh affine weights,
    ``G = gcd(32, C)`` by default (Opacus's fixer) or the largest divisor of C not above
    ``groups``; InstanceNorm stops
    tracking running statistics; LSTM, GRU, RNN and MultiheadAttention become Opacus's
    DP versions. Layers nothing can fix are left for :func:`check_model` to report.
    A :class:`~medaudit.privacy.PrivacyWarning` says when trained BatchNorm statistics
    were discarded.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    groups : int, optional
        Most GroupNorm groups per layer (default: Opacus's ``gcd(32, C)``). One group
        per channel (``groups`` >= the widest layer) trained best on the synthetic
        hospitals.

    Returns
    -------
    list of str
        One line per replaced layer: ``"body.1: BatchNorm2d -> GroupNorm(16, 16)"``.

    Examples
    --------
    >>> from medaudit.models import build_model
    >>> fix_model(build_model("small_cnn"), groups=8)[:2]
    ['body.1: BatchNorm2d -> GroupNorm(8, 16)', 'body.5: BatchNorm2d -> GroupNorm(8, 32)']
    """
    if groups is not None and (
        isinstance(groups, bool) or not isinstance(groups, int) or groups < 1
    ):
        raise param_error("groups", "make_private", "an int >= 1 or None", groups)
    from opacus.validators import ModuleValidator

    replaced: list[str] = []
    trained_bn: list[str] = []
    for p in incompatible_layers(model):
        if not p.fixable:
            continue
        old = model.get_submodule(p.name)
        if isinstance(old, nn.modules.batchnorm._BatchNorm):
            c = old.num_features
            new: nn.Module = nn.GroupNorm(_num_groups(c, groups), c, affine=old.affine)
            tracked = getattr(old, "num_batches_tracked", None)
            if tracked is not None and int(tracked) > 0:
                trained_bn.append(p.name)
        else:
            new = ModuleValidator.FIXERS[type(old)](old)
        ref = next(iter([*old.parameters(), *old.buffers()]), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        _replace(model, p.name, new)
        replaced.append(f"{p.name}: {p.layer} -> {_describe(new)}")
    if trained_bn:
        warnings.warn(
            MSG_STATISTICS_LOST.format(n=len(trained_bn), names=", ".join(trained_bn)),
            PrivacyWarning,
            stacklevel=2,
        )
    return replaced


def _num_groups(channels: int, groups: int | None) -> int:
    """Opacus's ``gcd(32, C)`` by default; else the largest divisor of C not above ``groups``."""
    if groups is None:
        return math.gcd(32, channels)
    return max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.GroupNorm):
        return f"GroupNorm({m.num_groups}, {m.num_channels})"
    return type(m).__name__


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head.rstrip(".")
