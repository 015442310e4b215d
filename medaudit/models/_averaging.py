"""Weight averaging as a step hook of the one training loop (Polyak-Ruppert averaging).

SGD's last iterate wanders: two runs that differ only in their seed (or in how a sum is
split across threads) stop at different points of the same basin, and a model that sits
between two cues (a lesion and a shortcut) lands on either side from run to run. An
exponential moving average of the weights over the late steps averages that wander
away [1]_ [2]_. :class:`WeightAverage` keeps it as an ``on_step`` hook of
:func:`~medaudit.models.train_model`, so no second loop is needed; :meth:`WeightAverage.load`
puts the average into the model and re-estimates the BatchNorm statistics at the averaged
weights (the running statistics of the last iterate do not belong to them).

The parameters follow ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn(decay)``: the first averaged step copies the weights, every later
one sets ``avg = decay * avg + (1 - decay) * w`` (checked equal in the tests). Buffers are
not averaged: BatchNorm statistics are recomputed instead, as ``swa_utils.update_bn`` does.

References
----------
.. [1] Polyak BT, Juditsky AB. Acceleration of stochastic approximation by averaging.
       SIAM J Control Optim 30(4), 1992.
.. [2] Izmailov P, Podoprikhin D, Garipov T, Vetrov D, Wilson AG. Averaging weights leads
       to wider optima and better generalization. UAI 2018.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from medaudit._errors import param_error
from medaudit.models._batchnorm import precise_batchnorm
from medaudit.models._hooks import Step

__all__ = ["WeightAverage"]


@dataclass
class WeightAverage:
    """An exponential moving average of ``model``'s parameters, updated after each step.

    Pass it in ``TrainHooks(on_step=(average,))``; after training,
    :meth:`load` puts the averaged weights into ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (the unwrapped one: its parameter names are the keys).
    decay : float in (0, 1), default 0.99
        Weight of the running average at each step (0.99: about the last 100 steps).
    start : int, default 0
        Optimizer steps (0-based, counting every epoch) before averaging begins; e.g. half
        the planned steps averages the second half of training.

    Attributes
    ----------
    averaged : dict of str to Tensor
        The averaged parameters (empty until averaging starts).
    count : int
        Steps averaged so far.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> from medaudit.models import TrainHooks, build_model, train_model
    >>> rng = np.random.default_rng(0)
    >>> cohort = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 40)}),
    ...                 images=rng.random((40, 8, 8), dtype=np.float32))
    >>> model = build_model("small_cnn")
    >>> avg = WeightAverage(model, decay=0.9, start=3)
    >>> _ = train_model(model, cohort, epochs=2, batch_size=16,
    ...                 hooks=TrainHooks(on_step=(avg,)))
    >>> avg.count, avg.load()
    (3, True)
    """

    model: nn.Module
    decay: float = 0.99
    start: int = 0
    averaged: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        d = self.decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1:
            raise param_error("decay", "WeightAverage", "a float in (0, 1)", d)
        s = self.start
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise param_error("start", "WeightAverage", "an int >= 0", s)

    def __call__(self, step: Step) -> None:
        """The ``on_step`` hook: fold the weights after this step into the average."""
        if step.step < self.start:
            return
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name not in self.averaged:
                    self.averaged[name] = p.detach().clone()
                else:
                    self.averaged[name].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        self.count += 1

    def load(self, batches: Iterable[torch.Tensor] | None = None) -> bool:
        """Put the averaged weights into the model; False (no change) when none was kept.

        ``batches``: normalised training inputs on the model's device, as in training;
        when given, every BatchNorm layer's statistics are recomputed on them at the
        averaged weights (:func:`~medaudit.models.precise_batchnorm`). Without them a
        model with BatchNorm keeps the statistics of the last iterate.
        """
        if not self.averaged:
            return False
        training = self.model.training
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.averaged:
                    p.copy_(self.averaged[name])
        if batches is not None:
            precise_batchnorm(self.model, batches)
        self.model.train(training)
        return True
