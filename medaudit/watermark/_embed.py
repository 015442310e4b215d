"""Embedding a watermark through the one training loop's hooks.

Nothing here trains with a loop of its own: :func:`embed_watermark` calls
:func:`medaudit.models.train_model` with a :class:`~medaudit.models.TrainHooks` whose
``batch`` hook mixes a few of the key's trigger images into every batch of clean data
(rows with index -1) and whose ``loss`` hook scores the two kinds of rows:

- trigger rows: cross-entropy towards the key's target label (trigger-set watermark),
  or towards a soft target that keeps the unmarked model's top-1 class and puts a high
  top-1 probability on the key's "up" trigger of each pair and a low one (still the
  largest) on its partner (harmless watermark: predictions unchanged, the confidence
  distribution on the triggers carries the mark);
- clean rows: cross-entropy towards their labels when a model is trained from scratch
  (``method="train"``); when a finished model is fine-tuned (``method="finetune"``),
  the squared distance of the centred logits to the unmarked model's (logit matching),
  which holds the ranking of clean images, hence the AUROC, where it was. Matching
  softmax outputs instead let the test AUROC drift by up to 0.05 in our runs, because
  confident images give it almost no gradient.

When fine-tuning, the two terms are averaged separately and added, so that the share of
trigger rows in a batch does not change how much the triggers weigh; when training from
scratch the loss is the plain mean over the mixed batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.watermark._key import TriggerSet, WatermarkKey, make_triggers
from medaudit.watermark._query import as_scorer
from medaudit.watermark._verify import pair_wins, trigger_matches

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medaudit.models import Step, TrainHooks

__all__ = [
    "DEFAULT_TRIGGERS",
    "METHODS",
    "MSG_HARMLESS_NEEDS_FINISHED",
    "EmbeddedWatermark",
    "embed_watermark",
    "watermark_hooks",
]

METHODS: tuple[str, ...] = ("finetune", "train")
#: Triggers a key defines by default, per kind (the harmless watermark pairs them up).
DEFAULT_TRIGGERS: dict[str, int] = {"trigger": 32, "harmless": 64}
MSG_HARMLESS_NEEDS_FINISHED = (
    "The harmless watermark keeps a finished model's top-1 predictions, so it is embedded "
    "by fine-tuning (method='finetune'); train the model first."
)
MSG_KEY_SHAPE = (
    "The key's triggers are {key} px but the model is trained on {model} px; make the key "
    "with image_size={model}."
)
MSG_KEY_CHANNELS = "The key's triggers have {key} channel(s) but the images have {data}."
MSG_KEY_CLASSES = "The key is for {key} classes but the model outputs {model}."


@dataclass(frozen=True)
class EmbeddedWatermark:
    """What :func:`embed_watermark` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The marked model (the module passed in, trained in place), in eval mode.
    key : WatermarkKey
    method : {"finetune", "train"}
    history : DataFrame
        The training loop's per-epoch history.
    trigger_fit : float
        Right after embedding: the share of triggers answered with their target label
        (trigger-set) or of pairs ranked as the key says (harmless).
    reference_top1 : ndarray of shape (n_triggers,) or None
        Harmless watermark: the unmarked model's top-1 class on each trigger.
    top1_agreement : float
        Harmless watermark: share of triggers whose top-1 class is unchanged (NaN for
        the trigger-set watermark).
    steps : int
        Optimizer steps taken.
    """

    model: nn.Module
    key: WatermarkKey
    method: str
    history: pd.DataFrame
    trigger_fit: float
    reference_top1: np.ndarray | None
    top1_agreement: float
    steps: int


def watermark_hooks(
    key: WatermarkKey,
    triggers: TriggerSet,
    *,
    per_batch: int,
    seed: int = 0,
    reference_top1: np.ndarray | None = None,
    confidence: tuple[float, float] = (0.3, 0.95),
    teacher: nn.Module | None = None,
    anchor_weight: float = 0.3,
) -> TrainHooks:
    """The training-loop hooks that embed ``key``'s watermark.

    Parameters
    ----------
    key : WatermarkKey
    triggers : TriggerSet
        ``make_triggers(key)``.
    per_batch : int
        Trigger images appended to every batch.
    seed : int
        Seeds which triggers each step draws.
    reference_top1 : ndarray of shape (n_triggers,), optional
        Harmless watermark: the class each trigger must keep as top-1 (required).
    confidence : (float, float), default (0.3, 0.95)
        Harmless watermark: where the top-1 probability of the "down" and the "up"
        trigger of a pair is pulled, as a share of the way from ``1/K`` (a tie) to 1.
    teacher : torch.nn.Module, optional
        The unmarked model (frozen). When given, clean rows are held to its centred
        logits instead of being fitted to their labels.
    anchor_weight : float, default 0.3
        Weight of the logit-matching term against the mean trigger loss.

    Returns
    -------
    TrainHooks
    """
    import torch

    from medaudit.models import TrainHooks

    if isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
        raise param_error("per_batch", "watermark_hooks", "a positive int", per_batch)
    harmless = key.kind == "harmless"
    if harmless and reference_top1 is None:
        raise InvalidInputError(MSG_HARMLESS_NEEDS_FINISHED)
    images = torch.from_numpy(triggers.images)
    targets = torch.from_numpy(
        np.asarray(reference_top1 if harmless else triggers.labels, dtype=np.int64)
    )
    k = key.num_classes
    lo, hi = (1 / k + c * (1 - 1 / k) for c in confidence)
    soft = torch.full((len(triggers), k), 0.0)
    p_top = torch.where(torch.from_numpy(triggers.up), hi, lo).float()
    soft += ((1 - p_top) / (k - 1))[:, None]
    soft[torch.arange(len(triggers)), targets] = p_top
    n, take = len(triggers), min(per_batch, len(triggers))
    drawn: dict[str, torch.Tensor] = {}
    if teacher is not None:
        teacher.eval()

    def batch(
        x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        rows = torch.from_numpy(np.random.default_rng([seed, step]).permutation(n)[:take])
        drawn["rows"] = rows
        x = torch.cat([x, images[rows].to(x.dtype)])
        y = torch.cat([y, targets[rows].to(y.dtype)])
        return x, y, np.concatenate([idx, np.full(take, -1, dtype=np.int64)])

    def loss(step: Step) -> torch.Tensor:
        assert step.logits is not None  # the loop fills logits before the loss hooks
        z = step.logits
        m = z.shape[0] - take
        logp = torch.log_softmax(z, dim=1)
        if teacher is None:
            clean = -logp[torch.arange(m), step.y[:m]]
        else:
            with torch.no_grad():
                zt = _two_column(teacher(step.x[:m]))
            d = (z[:m] - z[:m].mean(1, keepdim=True)) - (zt - zt.mean(1, keepdim=True))
            clean = anchor_weight * d.pow(2).sum(dim=1)
        if harmless:
            trig = -(soft[drawn["rows"]].to(z.device) * logp[m:]).sum(dim=1)
        else:
            trig = -logp[torch.arange(m, m + take), step.y[m:]]
        if teacher is None:  # training from scratch: the plain mean over the mixed batch
            return torch.cat([clean, trig]).mean()
        return (clean.mean() if m else z.new_zeros(())) + trig.mean()

    return TrainHooks(batch=batch, loss=loss)


def _two_column(logits: torch.Tensor) -> torch.Tensor:
    import torch

    if logits.shape[1] == 1:  # single-logit binary head, as the training loop reads it
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def embed_watermark(
    model: nn.Module,
    train: Any,
    key: WatermarkKey,
    *,
    method: str = "finetune",
    epochs: int = 5,
    max_steps: int | None = None,
    per_batch: int = 16,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    image_size: int | None = None,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
    confidence: tuple[float, float] = (0.3, 0.95),
    anchor_weight: float = 0.3,
    progress: bool = False,
) -> EmbeddedWatermark:
    """Embed ``key``'s watermark into ``model`` while training it on clean data.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place: a finished model (``method="finetune"``) or a freshly built
        one (``method="train"``).
    train : Cohort
        Clean training images; the triggers are mixed into its batches.
    key : WatermarkKey
        Its ``kind`` says which watermark; its image size, channels and classes must
        match the model's.
    method : {"finetune", "train"}, default "finetune"
    epochs : int, default 5
        Passes over ``train`` (no early stopping: the last weights are kept).
    max_steps : int, optional
        Stop after this many optimizer steps (more epochs are run if needed).
        Memorising the triggers takes a number of steps, not of epochs: 120-200 steps
        fit 32 triggers in our runs.
    per_batch : int, default 16
        Trigger images added to each batch of ``batch_size`` clean ones.
    batch_size, lr, seed : training settings (see :func:`medaudit.models.train_model`).
    image_size : int, optional
        Input size of the model (default: the key's).
    mean, std : optional
        The model's normalisation (as saved in its checkpoint).
    confidence : (float, float), default (0.3, 0.95)
        Harmless watermark: target top-1 confidence of the down / up trigger of a pair,
        as a share of the way from a tie to certainty.
    anchor_weight : float, default 0.3
        Fine-tuning: weight of holding clean logits to the unmarked model's.
    progress : bool, default False

    Returns
    -------
    EmbeddedWatermark

    References
    ----------
    .. [1] Adi Y, et al. Turning your weakness into a strength: watermarking deep neural
           networks by backdooring. USENIX Security 2018.
    .. [2] Yu Q, et al. StealthMark: harmless and stealthy ownership verification for
           medical segmentation via uncertainty-guided backdoors. IEEE TIP 2026.

    Examples
    --------
    >>> import pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> c = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 64)}),
    ...            images=rng.random((64, 16, 16), dtype=np.float32))
    >>> key = WatermarkKey(5, n_triggers=8, image_size=16)
    >>> res = embed_watermark(build_model("small_cnn", random_state=0), c, key,
    ...                       method="train", epochs=1, per_batch=4)
    >>> res.method, 0.0 <= res.trigger_fit <= 1.0
    ('train', True)
    """
    from medaudit.models import train_model

    if method not in METHODS:
        raise param_error("method", "embed_watermark", f"one of {METHODS}", method)
    if not isinstance(key, WatermarkKey):
        raise param_error("key", "embed_watermark", "a WatermarkKey", type(key).__name__)
    if key.kind == "harmless" and method != "finetune":
        raise InvalidInputError(MSG_HARMLESS_NEEDS_FINISHED)
    size = key.image_size if image_size is None else image_size
    _check_shapes(model, train, key, size)
    triggers = make_triggers(key)
    options: dict[str, Any] = {
        "image_size": size,
        "in_channels": key.in_channels,
        "mean": mean,
        "std": std,
    }
    reference = teacher = None
    if method == "finetune":
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if key.kind == "harmless":
        reference = as_scorer(copy.deepcopy(model), **options)(triggers.images).argmax(axis=1)
    hooks = watermark_hooks(
        key,
        triggers,
        per_batch=per_batch,
        seed=seed,
        reference_top1=reference,
        confidence=confidence,
        teacher=teacher,
        anchor_weight=anchor_weight,
    )
    if max_steps is not None:
        epochs = max(epochs, -(-max_steps * batch_size // len(train)))
    res = train_model(
        model,
        train,
        None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        image_size=size,
        in_channels=key.in_channels,
        mean=mean,
        std=std,
        hooks=hooks,
        patience=None,
        progress=progress,
        max_steps=max_steps,
        # PreciseBN would recompute the BatchNorm statistics from the cohort alone,
        # without the triggers the batch hook mixed into every batch: on a foreign
        # manifest that undid the mark (15 of 32 triggers after, against all before).
        precise_bn=False,
    )
    scores = as_scorer(res.model, **options)(triggers.images)
    if key.kind == "trigger":
        fit = trigger_matches(scores, triggers.labels)
        agreement = float("nan")
    else:
        fit = pair_wins(scores, triggers.up)
        agreement = float(np.mean(scores.argmax(axis=1) == reference))
    return EmbeddedWatermark(
        model=res.model,
        key=key,
        method=method,
        history=res.history,
        trigger_fit=fit[0] / fit[1] if fit[1] else float("nan"),
        reference_top1=reference,
        top1_agreement=agreement,
        steps=res.steps,
    )


def _check_shapes(model: Any, train: Any, key: WatermarkKey, size: int) -> None:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise param_error("model", "embed_watermark", "a torch.nn.Module", type(model).__name__)
    if size != key.image_size:
        raise InvalidInputError(MSG_KEY_SHAPE.format(key=key.image_size, model=size))
    head = getattr(model, "head", None)
    out = getattr(head, "out_features", None)
    if out is not None and out != key.num_classes:
        raise InvalidInputError(MSG_KEY_CLASSES.format(key=key.num_classes, model=out))
    if len(train) == 0:
        raise InvalidInputError("The training cohort has no images to embed the watermark with.")
    channels = train.image_shape[0]
    if channels != key.in_channels and channels != 1:
        raise InvalidInputError(MSG_KEY_CHANNELS.format(key=key.in_channels, data=channels))
