"""``make_private`` and ``train_private``: DP-SGD on Opacus through the one training loop.

Opacus provides the per-sample gradients (``GradSampleModule``), the clipping and noise
(``DPOptimizer``) and the accounting; medaudit checks what Opacus takes on trust (every
incompatible layer at once, samplers whose ε would be wrong, δ against 1/N), plans the
noise for the exact number of steps its Poisson sampler takes, and plugs all of it into
:func:`medaudit.models.train_model` through a :class:`~medaudit.models.TrainHooks`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medaudit._errors import InvalidInputError, param_error
from medaudit.models import BatchSampler, PoissonSampler, Step, TrainHooks, TrainResult
from medaudit.privacy._inputs import (
    OptimizerFactory,
    build_optimizer,
    check_budget,
    check_model_arg,
    check_number,
    data_size,
    poisson_sampler,
)
from medaudit.privacy._ledger import ACCOUNTANTS, PrivacyLedger, find_noise_multiplier
from medaudit.privacy._validate import check_model, fix_model

__all__ = ["PrivateTrainResult", "PrivateTraining", "make_private", "train_private"]

#: torch's warning about Opacus's hook on the first layer (its input needs no gradient).
MSG_TORCH_HOOK_WARNING = "Full backward hook is firing when gradients are computed"

MSG_OTHER_MODEL = (
    "These DP hooks were made for another model; pass the model given to make_private "
    "to train_model."
)
MSG_HISTORY_CHANGED = (
    "The noise multiplier or sample rate changed during training ({history}); the ledger "
    "records one of each. Keep optimizer.noise_multiplier fixed."
)
MSG_INPLACE = (
    "The model's forward pass changes a layer's output in place (e.g. `out += identity` "
    "in torchvision's ResNet blocks), which Opacus's per-sample gradient hooks cannot "
    "follow. Write such operations out of place (out = out + identity), or use a model "
    "without them such as small_cnn_dp."
)
MSG_HOOK_CONFLICT = (
    "hooks.{name} is already set; DP training uses its own {name} hook. Combine other "
    "hooks (batch, loss, extra_losses, on_step) freely."
)


@dataclass(frozen=True)
class PrivateTraining:
    """What :func:`make_private` returns: everything DP-SGD training needs, and its ledger.

    Train with :func:`medaudit.models.train_model` passing ``sampler=priv.sampler``,
    ``hooks=priv.hooks`` and ``max_steps=priv.planned_steps`` (what
    :func:`train_private` does), or drive ``priv.model`` / ``priv.optimizer`` over
    ``priv.loader`` in a loop of your own when a DataLoader was given.

    Attributes
    ----------
    model : opacus.GradSampleModule
        The model, wrapped so that backward passes compute per-sample gradients.
    optimizer : opacus.optimizers.DPOptimizer
        Clips per-sample gradients to ``max_grad_norm``, adds the noise, and reports
        each step to ``accountant``.
    sampler : PoissonSampler
        The batch sampler the accounting assumes (for ``train_model``).
    loader : opacus.data_loader.DPDataLoader or None
        Poisson-sampling DataLoader when ``data`` was a DataLoader, else None.
    hooks : TrainHooks
        ``wrap`` (swaps in ``model`` and ``optimizer``), ``on_empty`` (a noise-only step
        for an empty Poisson batch, which the accountant counts) and
        ``max_physical_batch_size``.
    accountant : opacus.accountants.IAccountant
        Opacus's accountant, counting every optimizer step.
    noise_multiplier, sample_rate, delta, max_grad_norm : float
    accountant_name : {"prv", "rdp"}
    n_samples : int
        Training samples N.
    planned_steps : int
        Steps of ``epochs`` epochs; the noise was calibrated for exactly these.
    target_epsilon : float or None
    notes : tuple of str
        What was changed (replaced layers) or assumed.
    """

    model: nn.Module
    optimizer: Any
    sampler: PoissonSampler
    loader: Any
    hooks: TrainHooks
    accountant: Any
    noise_multiplier: float
    sample_rate: float
    delta: float
    max_grad_norm: float
    accountant_name: str
    n_samples: int
    planned_steps: int
    target_epsilon: float | None = None
    notes: tuple[str, ...] = ()
    _cache: dict[int, PrivacyLedger] = field(default_factory=dict, repr=False, compare=False)

    @property
    def module(self) -> nn.Module:
        """The unwrapped model (what to save, evaluate and pass to ``train_model``)."""
        return self.model._module  # type: ignore[return-value]

    @property
    def steps(self) -> int:
        """Optimizer steps the accountant has counted so far."""
        return int(sum(n for _, _, n in self.accountant.history))

    @property
    def ledger(self) -> PrivacyLedger:
        """The privacy spent so far (a fresh snapshot; ε is 0 before the first step)."""
        steps = self.steps
        if steps not in self._cache:
            changed = [
                h
                for h in self.accountant.history
                if (h[0], h[1]) != (self.noise_multiplier, self.sample_rate)
            ]
            if changed:
                raise InvalidInputError(MSG_HISTORY_CHANGED.format(history=self.accountant.history))
            self._cache[steps] = PrivacyLedger.compute(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
                steps=steps,
                delta=self.delta,
                max_grad_norm=self.max_grad_norm,
                accountant=self.accountant_name,
                n_samples=self.n_samples,
                target_epsilon=self.target_epsilon,
            )
        return self._cache[steps]

    def close(self) -> nn.Module:
        """Remove Opacus's hooks and per-sample gradients; return the plain trained model."""
        self.model.remove_hooks()  # type: ignore[operator]
        for p in self.module.parameters():
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)
        return self.module


@dataclass(frozen=True)
class PrivateTrainResult:
    """What :func:`train_private` returns.

    Attributes
    ----------
    training : TrainResult
        The training loop's result (``training.model`` is the trained, plain model).
    ledger : PrivacyLedger
        The privacy spent: every step taken, including discarded epochs.
    notes : tuple of str
    """

    training: TrainResult
    ledger: PrivacyLedger
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> nn.Module:
        """The trained model (best epoch's weights, eval mode, Opacus hooks removed)."""
        return self.training.model


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None,
    data: Any,
    *,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    target_delta: float | None = None,
    epochs: int = 1,
    max_grad_norm: float = 1.0,
    accountant: str = "prv",
    batch_size: int = 64,
    sampler: str | BatchSampler = "poisson",
    max_physical_batch_size: int | None = None,
    fix: bool = False,
    groups: int | None = None,
) -> PrivateTraining:
    """Make ``model`` and ``optimizer`` train with DP-SGD, on Opacus, with an honest ledger.

    Parameters
    ----------
    model : torch.nn.Module
        Validated first: every layer DP-SGD cannot train is listed in one error, with
        the fix. Modified in place by ``fix=True``.
    optimizer : torch.optim.Optimizer, callable or None
        The optimizer over ``model.parameters()``; or a factory ``params -> Optimizer``
        (called after ``fix``); None for ``AdamW(lr=1e-3)``. An optimizer built before
        ``fix`` replaced layers is rebuilt with its class and defaults.
    data : Cohort or torch.utils.data.DataLoader
        The training data; only its size N (and a DataLoader's sampler) is used here.
    target_epsilon : float > 0, optional
        Calibrate the noise so that ε after ``epochs`` epochs is at most this (and
        within 0.01 of it). Exactly one of ``target_epsilon`` and ``noise_multiplier``.
    noise_multiplier : float > 0, optional
        σ, when chosen directly.
    target_delta : float in (0, 1), optional
        δ; default :func:`~medaudit.privacy.default_delta` (a power of ten at or below
        0.1/N). A δ at or above 1/N gives a :class:`~medaudit.privacy.PrivacyWarning`.
    epochs : int, default 1
        Epochs planned: ``epochs * round(1 / sample_rate)`` steps.
    max_grad_norm : float > 0, default 1.0
        Per-sample clipping norm C.
    accountant : {"prv", "rdp"}, default "prv"
        Opacus's accountant (PRV: tight numerical composition; RDP: a looser bound).
    batch_size : int, default 64
        Expected (logical) batch size: ``sample_rate = batch_size / N`` (a Cohort), or
        Opacus's ``1 / len(loader)`` (a DataLoader).
    sampler : "poisson" or PoissonSampler, default "poisson"
        Anything else is refused: a weighted or class-balanced sampler, or shuffling,
        would make the reported ε wrong.
    max_physical_batch_size : int, optional
        Largest chunk run through the model at once: memory no longer depends on the
        logical batch (Opacus's ``BatchMemoryManager``, done inside the training loop).
    fix : bool, default False
        Replace fixable layers first (:func:`~medaudit.privacy.fix_model`): BatchNorm
        becomes GroupNorm, losing any pretrained BatchNorm statistics (a warning says so).
    groups : int, optional
        Most GroupNorm groups per replaced layer (default: Opacus's ``gcd(32, C)``).

    Returns
    -------
    PrivateTraining
        One object (model, optimizer, sampler, loader, hooks, accountant, ledger),
        whatever the arguments: never a tuple whose length changes.

    Raises
    ------
    InvalidInputError
        Incompatible layers (all of them listed), an empty data set, a weighted or
        non-Poisson sampler, a budget no noise level reaches.
    InvalidParameterError
        Any argument of the wrong type or range (ε <= 0, δ outside (0, 1), ...).

    Notes
    -----
    The noise comes from torch's default generator (Opacus without ``secure_mode``),
    seeded by ``train_model``'s ``seed``: reproducible, but not a cryptographically
    secure source; the floating-point attacks ``secure_mode`` defends against are out of
    this guarantee's scope. Activations with ``inplace=True`` are switched to out of
    place (same results; Opacus's hooks require it), which ``notes`` records.

    References
    ----------
    .. [1] Abadi M, et al. Deep learning with differential privacy. CCS 2016.
    .. [2] Yousefpour A, et al. Opacus: user-friendly differential privacy library in
           PyTorch. arXiv:2109.12298, 2021.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> data = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 200)}),
    ...               images=rng.random((200, 8, 8), dtype=np.float32))
    >>> priv = make_private(build_model("small_cnn_gn"), None, data, target_epsilon=3.0,
    ...                     target_delta=1e-3, epochs=2, batch_size=20, accountant="rdp")
    >>> priv.sample_rate, priv.planned_steps, priv.ledger.epsilon
    (0.1, 20, 0.0)
    """
    func = "make_private"
    check_model_arg(model, func)
    n, loader_in = data_size(data, func)
    delta = check_budget(target_epsilon, noise_multiplier, target_delta, n)
    check_number(max_grad_norm, "max_grad_norm", func)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise param_error(name, func, "an int >= 1", v)
    if accountant not in ACCOUNTANTS:
        raise param_error("accountant", func, f"one of {ACCOUNTANTS}", accountant)
    if not isinstance(fix, bool):
        raise param_error("fix", func, "True or False", fix)
    hooks_probe = TrainHooks(max_physical_batch_size=max_physical_batch_size)  # validates it
    poisson = poisson_sampler(sampler, batch_size, n)

    replaced = fix_model(model, groups=groups) if fix else []
    notes = [f"Replaced {line}." for line in replaced]
    check_model(model)
    notes += _out_of_place(model)
    model.train()
    opt = build_optimizer(model, optimizer, rebuilt=bool(replaced), notes=notes)

    from opacus import GradSampleModule
    from opacus.accountants import create_accountant
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizer

    loader = None
    if loader_in is not None:
        loader = DPDataLoader.from_data_loader(loader_in, distributed=False)
        poisson = PoissonSampler(1.0 / len(loader_in))
    q = poisson.sample_rate
    steps = epochs * poisson.steps_per_epoch(n)
    sigma = (
        float(noise_multiplier)
        if noise_multiplier is not None
        else find_noise_multiplier(
            target_epsilon=float(target_epsilon),  # type: ignore[arg-type]
            delta=delta,
            sample_rate=q,
            steps=steps,
            accountant=accountant,
        )
    )
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    dp_opt = DPOptimizer(
        opt,
        noise_multiplier=sigma,
        max_grad_norm=float(max_grad_norm),
        expected_batch_size=max(1, round(q * n)),
        loss_reduction="mean",
    )
    if loader_in is None:
        _probe(gsm, dp_opt, data)
    acc = create_accountant(mechanism=accountant)
    dp_opt.attach_step_hook(acc.get_optimizer_hook_fn(sample_rate=q))
    hooks = TrainHooks(
        wrap=_wrap_hook(model, gsm, dp_opt),
        on_empty=_noise_step_hook(dp_opt),
        max_physical_batch_size=hooks_probe.max_physical_batch_size,
    )
    return PrivateTraining(
        model=gsm,
        optimizer=dp_opt,
        sampler=poisson,
        loader=loader,
        hooks=hooks,
        accountant=acc,
        noise_multiplier=sigma,
        sample_rate=q,
        delta=delta,
        max_grad_norm=float(max_grad_norm),
        accountant_name=accountant,
        n_samples=n,
        planned_steps=steps,
        target_epsilon=None if target_epsilon is None else float(target_epsilon),
        notes=tuple(notes),
    )


def train_private(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    target_delta: float | None = None,
    epochs: int = 10,
    max_grad_norm: float = 1.0,
    accountant: str = "prv",
    batch_size: int = 64,
    max_physical_batch_size: int | None = None,
    fix: bool = False,
    groups: int | None = None,
    **train_kwargs: Any,
) -> PrivateTrainResult:
    """Train ``model`` with DP-SGD: :func:`make_private` + :func:`~medaudit.models.train_model`.

    The privacy arguments are :func:`make_private`'s; ``train_kwargs`` go to
    ``train_model`` (``lr``, ``weight_decay``, ``optimizer_factory``, ``patience``,
    ``seed``, ``image_size``, ``mean``, ``std``, ``augment``, ``device``, ``progress``,
    ``callbacks``, ``hooks`` without ``wrap``/``on_empty``). Training stops after the
    planned steps at the latest; early stopping may end it sooner, and every step taken
    is in the ledger, including those of the epochs whose weights were discarded.

    Returns
    -------
    PrivateTrainResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import build_model
    >>> rng = np.random.default_rng(0)
    >>> data = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 200)}),
    ...               images=rng.random((200, 8, 8), dtype=np.float32))
    >>> res = train_private(build_model("small_cnn_gn"), data, target_epsilon=3.0,
    ...                     target_delta=1e-3, epochs=2, batch_size=20, accountant="rdp")
    >>> res.training.steps == res.ledger.steps == 20, 2.99 < res.ledger.epsilon <= 3.0
    (True, True)
    """
    lr = train_kwargs.pop("lr", 1e-3)
    weight_decay = train_kwargs.pop("weight_decay", 1e-4)
    factory = train_kwargs.pop("optimizer_factory", None) or (
        lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    )
    user_hooks = train_kwargs.pop("hooks", None) or TrainHooks()
    if not isinstance(user_hooks, TrainHooks):
        raise param_error("hooks", "train_private", "a TrainHooks or None", user_hooks)
    for name in ("wrap", "on_empty"):
        if getattr(user_hooks, name) is not None:
            raise InvalidInputError(MSG_HOOK_CONFLICT.format(name=name))
    priv = make_private(
        model,
        factory,
        train,
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        target_delta=target_delta,
        epochs=epochs,
        max_grad_norm=max_grad_norm,
        accountant=accountant,
        batch_size=batch_size,
        sampler=train_kwargs.pop("sampler", "poisson"),
        max_physical_batch_size=max_physical_batch_size,
        fix=fix,
        groups=groups,
    )
    hooks = dataclasses.replace(
        user_hooks,
        wrap=priv.hooks.wrap,
        on_empty=priv.hooks.on_empty,
        max_physical_batch_size=priv.hooks.max_physical_batch_size,
    )
    max_steps = train_kwargs.pop("max_steps", None)
    from medaudit.models import train_model

    try:
        with warnings.catch_warnings():
            # torch warns that the first layer's full backward hook (Opacus's) fires without
            # input gradients; Opacus needs only the output gradients, so it is harmless.
            warnings.filterwarnings("ignore", MSG_TORCH_HOOK_WARNING, UserWarning)
            result = train_model(
                priv.module,
                train,
                val,
                epochs=epochs,
                batch_size=batch_size,
                sampler=priv.sampler,
                hooks=hooks,
                max_steps=min(priv.planned_steps, max_steps or priv.planned_steps),
                **train_kwargs,
            )
    finally:
        priv.close()
    return PrivateTrainResult(training=result, ledger=priv.ledger, notes=priv.notes)


# -- helpers ---------------------------------------------------------------------------------
def _out_of_place(model: nn.Module) -> list[str]:
    """Turn off ``inplace`` on activations: Opacus's backward hooks forbid in-place changes.

    An in-place activation right after a hooked layer (``Conv -> GroupNorm -> ReLU(inplace=
    True)``) makes autograd refuse the backward pass; out of place, the results are the same.
    """
    names = [
        name
        for name, mod in model.named_modules()
        if getattr(mod, "inplace", False) is True and not list(mod.parameters(recurse=False))
    ]
    for name in names:
        model.get_submodule(name).inplace = False  # type: ignore[assignment]
    if not names:
        return []
    return [
        f"Set inplace=False on {len(names)} activation layer(s) ({', '.join(names[:4])}"
        f"{', ...' if len(names) > 4 else ''}): Opacus's per-sample gradient hooks forbid "
        "in-place changes of a layer's output; the results are unchanged."
    ]


def _probe(gsm: nn.Module, dp_opt: Any, cohort: Any) -> None:
    """One forward/backward pass on two blank images: an in-place write fails here, clearly.

    Other failures (a wrong input size, ...) are left to the training loop to report.
    """
    first_conv = next((m for m in gsm.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else cohort.image_shape[0]
    _, h, w = cohort.image_shape
    ref = next(gsm.parameters())
    x = torch.zeros((2, channels, h, w), dtype=ref.dtype, device=ref.device)
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", MSG_TORCH_HOOK_WARNING, UserWarning)
            gsm(x).float().sum().backward()
    except RuntimeError as exc:
        if "inplace" in str(exc) or "in-place" in str(exc):
            raise InvalidInputError(MSG_INPLACE) from exc
    finally:
        dp_opt.zero_grad(set_to_none=True)


def _wrap_hook(model: nn.Module, gsm: nn.Module, dp_opt: Any) -> Callable[..., Any]:
    def wrap(net: nn.Module, _optimizer: Any) -> tuple[nn.Module, Any]:
        if net is not model:
            raise InvalidInputError(MSG_OTHER_MODEL)
        return gsm, dp_opt

    return wrap


def _noise_step_hook(dp_opt: Any) -> Callable[[Step], None]:
    """An empty Poisson batch still releases a noisy update, as DP-SGD's analysis assumes."""

    def on_empty(step: Step) -> None:
        dp_opt.zero_grad(set_to_none=True)
        for p in dp_opt.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        dp_opt.step()

    return on_empty
