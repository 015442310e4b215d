"""Removal attacks and the robustness table: robustness is measured, never claimed.

Each :class:`RemovalAttack` takes a marked model and returns a modified copy at a given
strength; :func:`assess_robustness` runs every registered attack at each of its strengths,
re-verifies the watermark on the attacked model and measures its clean test accuracy.

The SoK's criterion decides each row: a removal attack only counts when the attacked
model keeps its test accuracy within ``max_accuracy_drop`` (5 points) of the marked
model's, since a thief gains nothing from a ruined model. A watermark *survives* an
attack setting when it is still verified there; it is *robust* to an attack when it
survives every setting that kept the accuracy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.watermark._key import WatermarkKey
from medaudit.watermark._query import as_scorer
from medaudit.watermark._verify import verify_watermark

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "AttackData",
    "RemovalAttack",
    "RobustnessResult",
    "assess_robustness",
    "fold_batchnorm",
    "get_removal_attack",
    "list_removal_attacks",
    "prune_weights",
    "quantise_weights",
    "register_removal_attack",
]

DUPLICATE_ATTACK = (
    "A removal attack named {name!r} is already registered. Pass force=True to replace it."
)
VERDICTS: tuple[str, ...] = ("survives", "removed", "accuracy lost", "not marked")


@dataclass(frozen=True)
class AttackData:
    """What an attacker holds besides the marked model.

    Attributes
    ----------
    train : Cohort
        Clean labelled images (attacks that retrain take a fraction of them).
    image_size, in_channels : int
    mean, std : list of float or None
        The model's input normalisation.
    seed : int
    epochs : int
        Passes over the attacker's data for the attacks that retrain.
    lr : float
        Their learning rate.
    """

    train: Any
    image_size: int
    in_channels: int = 1
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int = 0
    epochs: int = 10
    lr: float = 1e-3

    def inference_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~medaudit.watermark.as_scorer` for these models."""
        return {
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "mean": self.mean,
            "std": self.std,
        }


AttackFn = Callable[["nn.Module", AttackData, float], "nn.Module"]


@dataclass(frozen=True)
class RemovalAttack:
    """One removal attack: a name, the strengths to try and how to run it.

    Parameters
    ----------
    name : str
    description : str
        One line for the report.
    strengths : tuple of float
        Settings tried by :func:`assess_robustness`.
    run : callable
        ``run(model, data, strength) -> model``: the attacked model (the input may be
        modified; it is always a copy of the marked model).
    label : str
        How a strength reads in the table, with ``{s}`` for the value
        (``"{s:.0%} of the training data"``).
    """

    name: str
    description: str
    strengths: tuple[float, ...]
    run: AttackFn
    label: str = "{s:g}"


_ATTACKS: dict[str, RemovalAttack] = {}


def register_removal_attack(attack: RemovalAttack, *, force: bool = False) -> RemovalAttack:
    """Add ``attack`` to the registry (raises on a duplicate name unless ``force``)."""
    if not isinstance(attack, RemovalAttack):
        raise param_error("attack", "register_removal_attack", "a RemovalAttack", attack)
    if attack.name in _ATTACKS and not force:
        raise InvalidParameterError(DUPLICATE_ATTACK.format(name=attack.name))
    _ATTACKS[attack.name] = attack
    return attack


def list_removal_attacks() -> list[str]:
    """Names of the registered removal attacks, in registration order."""
    return list(_ATTACKS)


def get_removal_attack(name: str) -> RemovalAttack:
    """The attack registered under ``name``."""
    if name not in _ATTACKS:
        known = ", ".join(repr(a) for a in _ATTACKS)
        raise param_error("attacks", "assess_robustness", f"names from {known}", name)
    return _ATTACKS[name]


# -- the attacks ----------------------------------------------------------------------------
def _finetune(model: nn.Module, data: AttackData, fraction: float) -> nn.Module:
    """Fine-tune every layer on a random ``fraction`` of the clean training data."""
    from medaudit.models import train_model

    subset = data.train.subset(_attack_rows(data, fraction))
    train_model(
        model,
        subset,
        None,
        epochs=data.epochs,
        lr=data.lr,
        seed=data.seed,
        batch_size=min(64, len(subset)),
        image_size=data.image_size,
        in_channels=data.in_channels,
        mean=data.mean,
        std=data.std,
        patience=None,
    )
    return model


def _weights(model: nn.Module) -> list[torch.Tensor]:
    from torch import nn

    return [
        m.weight
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d))
    ]


def prune_weights(model: nn.Module, fraction: float) -> nn.Module:
    """Global magnitude pruning: zero the ``fraction`` of conv/linear weights smallest in |w|.

    One threshold over all layers (as ``torch.nn.utils.prune.global_unstructured`` with
    ``L1Unstructured``), applied in place.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(10, 2)
    >>> _ = prune_weights(m, 0.5)
    >>> int((m.weight == 0).sum())
    10
    """
    import torch

    if not 0 <= fraction < 1:
        raise param_error("fraction", "prune_weights", "a float in [0, 1)", fraction)
    ws = _weights(model)
    if not ws or fraction == 0:
        return model
    mags = torch.cat([w.detach().abs().flatten() for w in ws])
    k = int(round(fraction * mags.numel()))
    if k == 0:
        return model
    # The k-th smallest magnitude: ties at the threshold are broken by position, so exactly
    # k weights are zeroed.
    order = torch.argsort(mags, stable=True)[:k]
    keep = torch.ones_like(mags, dtype=torch.bool)
    keep[order] = False
    start = 0
    with torch.no_grad():
        for w in ws:
            n = w.numel()
            w.mul_(keep[start : start + n].view_as(w).to(w.dtype))
            start += n
    return model


def quantise_weights(model: nn.Module, bits: int) -> nn.Module:
    """Round conv/linear weights to ``bits``-bit signed integers, per output channel.

    Symmetric uniform quantisation with one scale per output channel
    (``max |w| / (2**(bits-1) - 1)``), then de-quantised in place: the model computes
    exactly what an integer-weight deployment of it would, in float.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Linear(4, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = m.weight.copy_(torch.tensor([[1.0, 0.6, 0.26, -0.1]]))
    >>> quantise_weights(m, 2).weight.tolist()
    [[1.0, 1.0, 0.0, -0.0]]
    """
    import torch

    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise param_error("bits", "quantise_weights", "an int in [2, 16]", bits)
    levels = 2 ** (int(bits) - 1) - 1
    with torch.no_grad():
        for w in _weights(model):
            flat = w.view(w.shape[0], -1)
            scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
            flat.copy_(torch.round(flat / scale).clamp(-levels, levels) * scale)
    return model


register_removal_attack(
    RemovalAttack(
        name="finetune",
        description="fine-tune all layers on a fraction of the clean training data",
        strengths=(0.1, 0.2),
        run=_finetune,
        label="{s:.0%} of the training data",
    )
)
register_removal_attack(
    RemovalAttack(
        name="prune",
        description="global magnitude pruning of the conv and linear weights",
        strengths=(0.2, 0.35, 0.5),
        run=lambda m, d, s: prune_weights(m, s),
        label="{s:.0%} of weights zeroed",
    )
)
register_removal_attack(
    RemovalAttack(
        name="quantise",
        description="post-training weight quantisation, per output channel",
        strengths=(8, 4),
        run=lambda m, d, s: quantise_weights(m, int(s)),
        label="{s:.0f}-bit weights",
    )
)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv into that conv, in place.

    In eval mode the folded model computes the same function
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the BatchNorm becomes an
    ``Identity``. DP-SGD cannot train through BatchNorm, so this is how an attacker
    DP-fine-tunes a BatchNorm model without losing what it learned.

    Examples
    --------
    >>> import torch
    >>> from medaudit.models import build_model
    >>> m = build_model("small_cnn", random_state=0).eval()
    >>> x = torch.rand(2, 1, 16, 16)
    >>> before = m(x)
    >>> any(isinstance(l, torch.nn.BatchNorm2d) for l in fold_batchnorm(m).modules())
    False
    >>> torch.allclose(before, m(x), atol=1e-5)
    True
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                was_training = conv.training
                fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
                fused.train(was_training)
                parent._modules[a] = fused
                parent._modules[b] = nn.Identity()
    return model


def _attack_rows(data: AttackData, fraction: float) -> np.ndarray:
    n = len(data.train)
    rng = np.random.default_rng([data.seed, 7])
    return np.sort(rng.choice(n, size=max(2, round(fraction * n)), replace=False))


DP_FRACTION = 0.2


def _dp_finetune(model: nn.Module, data: AttackData, epsilon: float) -> nn.Module:
    """DP-SGD fine-tuning (medaudit.privacy) at ``epsilon`` on 20% of the clean data."""
    import warnings

    from medaudit.privacy import PrivacyWarning, train_private

    subset = data.train.subset(_attack_rows(data, DP_FRACTION))
    fold_batchnorm(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)  # the attacker's budget, not ours
        res = train_private(
            model,
            subset,
            None,
            target_epsilon=float(epsilon),
            target_delta=1.0 / (2 * len(subset)),
            epochs=data.epochs,
            batch_size=min(64, len(subset)),
            accountant="rdp",
            lr=data.lr,
            seed=data.seed,
            image_size=data.image_size,
            in_channels=data.in_channels,
            mean=data.mean,
            std=data.std,
            patience=None,
        )
    return res.model


def _has_privacy() -> bool:
    import importlib.util

    return importlib.util.find_spec("medaudit.privacy") is not None


if _has_privacy():
    register_removal_attack(
        RemovalAttack(
            name="dp_finetune",
            description=(
                "DP-SGD fine-tuning (medaudit.privacy, BatchNorm folded into the convs) "
                f"on {DP_FRACTION:.0%} of the clean training data"
            ),
            strengths=(8.0, 1.0),
            run=_dp_finetune,
            label="epsilon = {s:g}",
        )
    )


# -- the assessment -------------------------------------------------------------------------
@dataclass(frozen=True)
class RobustnessResult:
    """What :func:`assess_robustness` returns.

    Attributes
    ----------
    table : DataFrame
        One row per attack setting: ``attack``, ``setting``, ``strength``, ``p_value``,
        ``verified``, ``success_rate``, ``test_accuracy``, ``accuracy_change`` (points),
        ``accuracy_kept`` (within the allowed drop), ``verdict`` ("survives", "removed",
        "accuracy lost": the attack ruined the model and does not count, or "not marked":
        the marked model itself was not verified, so there was nothing to remove).
    summary : DataFrame
        One row per attack: ``attack``, ``robust`` (survives every setting that kept the
        accuracy), ``settings_counted``, ``settings_survived``.
    marked_accuracy : float
        Test accuracy of the marked model before any attack.
    marked_p_value : float
    max_accuracy_drop : float
    false_claim_rate : float
    kind : str
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    marked_accuracy: float
    marked_p_value: float
    max_accuracy_drop: float
    false_claim_rate: float
    kind: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def assess_robustness(
    model: nn.Module,
    key: WatermarkKey,
    *,
    data: AttackData,
    test: Any,
    attacks: Sequence[str] | None = None,
    kind: str | None = None,
    false_claim_rate: float = 1e-3,
    max_accuracy_drop: float = 0.05,
) -> RobustnessResult:
    """Run removal attacks on a marked model and re-verify its watermark after each.

    Parameters
    ----------
    model : torch.nn.Module
        The marked model (left unchanged: every attack works on a copy).
    key : WatermarkKey
    data : AttackData
        The attacker's clean data and the model's input settings.
    test : Cohort
        Clean labelled test images (accuracy before and after each attack).
    attacks : sequence of str, optional
        Registered attack names (default: all of them).
    kind : {"trigger", "harmless"}, optional
        Default: the key's.
    false_claim_rate : float, default 1e-3
    max_accuracy_drop : float, default 0.05
        An attack setting counts only while the test accuracy falls by at most this much
        (the SoK's 5 points).

    Returns
    -------
    RobustnessResult

    References
    ----------
    .. [1] Lukas N, Jiang E, Li X, Kerschbaum F. SoK: How robust is image classification
           deep neural network watermarking? IEEE S&P 2022.
    """
    names = list_removal_attacks() if attacks is None else [str(a) for a in attacks]
    chosen = [get_removal_attack(a) for a in names]
    if not 0 < max_accuracy_drop < 1:
        raise param_error(
            "max_accuracy_drop", "assess_robustness", "a float in (0, 1)", max_accuracy_drop
        )
    if len(test) == 0:
        raise InvalidInputError("assess_robustness: the test cohort has no images.")
    opts = data.inference_options()
    marked = verify_watermark(
        as_scorer(model, **opts), key, kind=kind, false_claim_rate=false_claim_rate
    )
    acc0 = _accuracy(model, test, opts)
    rows = []
    for attack in chosen:
        for s in attack.strengths:
            attacked = attack.run(copy.deepcopy(model), data, s).eval()
            v = verify_watermark(
                as_scorer(attacked, **opts), key, kind=kind, false_claim_rate=false_claim_rate
            )
            acc = _accuracy(attacked, test, opts)
            kept = acc0 - acc <= max_accuracy_drop + 1e-12
            verdict = _verdict(marked.verified, kept, v.verified)
            rows.append(
                {
                    "attack": attack.name,
                    "setting": attack.label.format(s=s),
                    "strength": float(s),
                    "p_value": v.p_value,
                    "verified": v.verified,
                    "success_rate": v.success_rate,
                    "test_accuracy": acc,
                    "accuracy_change": 100.0 * (acc - acc0),
                    "accuracy_kept": bool(kept),
                    "verdict": verdict,
                }
            )
    table = pd.DataFrame(rows)
    return RobustnessResult(
        table=table,
        summary=_summary(table, names),
        marked_accuracy=acc0,
        marked_p_value=marked.p_value,
        max_accuracy_drop=max_accuracy_drop,
        false_claim_rate=false_claim_rate,
        kind=marked.kind,
    )


def _verdict(marked: bool, kept: bool, verified: bool) -> str:
    if not marked:
        return "not marked"  # nothing to remove: the marked model itself is not verified
    if not kept:
        return "accuracy lost"
    return "survives" if verified else "removed"


def _summary(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    out = []
    for name in names:
        t = table[table["attack"] == name] if len(table) else table
        counted = t[t["verdict"].isin(["survives", "removed"])] if len(t) else t
        survived = int((counted["verdict"] == "survives").sum()) if len(counted) else 0
        out.append(
            {
                "attack": name,
                "robust": bool(len(counted) > 0 and survived == len(counted)),
                "settings_counted": len(counted),
                "settings_survived": survived,
            }
        )
    return pd.DataFrame(out)


def _accuracy(model: nn.Module, test: Any, opts: dict[str, Any]) -> float:
    from medaudit.inference import predict

    p = predict(model, test, features=False, **opts)
    return float(np.mean(p.scores.argmax(axis=1) == p.labels))
