"""Differential privacy for any torch model (DP-SGD on Opacus) with an honest privacy ledger.

``make_private`` validates the model (every incompatible layer listed at once, with the
fix), refuses samplers whose ε would be wrong, calibrates the noise for the exact steps
of the one training loop's Poisson sampler and returns one :class:`PrivateTraining`;
``train_private`` runs it through :func:`medaudit.models.train_model`. The
:class:`PrivacyLedger` records ε, δ, σ, the sample rate, every step (also those of epochs
that early stopping discarded), the clipping norm, the accountant and the ε curve; it is
stored in checkpoints under the metadata key ``privacy`` and audited by the
``privacy_budget`` audit.

How to use it from another package (federated clients, membership attacks, watermarks)
------------------------------------------------------------------------------------------
- Train privately in one call::

      from medaudit.privacy import train_private
      res = train_private(model, train_cohort, val_cohort, target_epsilon=8.0,
                          target_delta=1e-5, epochs=5, batch_size=64, lr=1e-3, seed=0)
      res.model, res.ledger.epsilon, res.ledger.to_dict()

  Extra ``TrainHooks`` (``batch``, ``loss``, ``extra_losses``, ``on_step``) pass through
  ``hooks=``; DP owns ``wrap`` and ``on_empty``.
- Drive the loop yourself: ``priv = make_private(model, optimizer, cohort, ...)`` then
  ``train_model(model, cohort, sampler=priv.sampler, hooks=priv.hooks,
  max_steps=priv.planned_steps)``; read ``priv.ledger`` any time, ``priv.close()`` at the
  end. With a torch DataLoader as ``data``, ``priv.loader`` is Opacus's Poisson loader
  for a loop of your own.
- Accounting alone: ``compute_epsilon(noise_multiplier=, sample_rate=, steps=, delta=)``
  and ``find_noise_multiplier(target_epsilon=, ...)`` (a federated round with client
  sampling is the same Poisson-subsampled Gaussian mechanism).
- Read a stored ledger: ``PrivacyLedger.from_dict(load_checkpoint(p).privacy)``.

The API (names, fields, the ``privacy`` metadata record) only grows; fields are never
renamed or removed.
"""

from medaudit.privacy._audit import CHECKS, SPEC, audit
from medaudit.privacy._engine import (
    PrivateTraining,
    PrivateTrainResult,
    make_private,
    train_private,
)
from medaudit.privacy._ledger import (
    ACCOUNTANTS,
    PrivacyLedger,
    PrivacyWarning,
    compute_epsilon,
    default_delta,
    find_noise_multiplier,
)
from medaudit.privacy._validate import LayerProblem, fix_model, incompatible_layers

__all__ = [
    "ACCOUNTANTS",
    "CHECKS",
    "SPEC",
    "LayerProblem",
    "PrivacyLedger",
    "PrivacyWarning",
    "PrivateTrainResult",
    "PrivateTraining",
    "audit",
    "compute_epsilon",
    "default_delta",
    "find_noise_multiplier",
    "fix_model",
    "incompatible_layers",
    "make_private",
    "train_private",
]
