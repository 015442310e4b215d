"""Ownership verification: a hypothesis test from black-box queries.

The null hypothesis is "this model was made without the key". The verifier queries the
key's trigger images, counts successes (triggers answered with their target label, or
pairs whose key-chosen trigger gets the larger top-1 margin) and computes the exact
binomial p-value (:mod:`medaudit.watermark._stats`). Ownership is shown when the p-value
is at most the false-claim rate the verifier chose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error
from medaudit.watermark._key import KINDS, TriggerSet, WatermarkKey, make_triggers
from medaudit.watermark._query import as_scorer
from medaudit.watermark._stats import binomial_sf, null_model_rate, queries_needed

__all__ = [
    "MSG_CLASSES",
    "MSG_TOO_FEW_QUERIES",
    "WatermarkVerification",
    "pair_wins",
    "trigger_matches",
    "verify_watermark",
]

MSG_TOO_FEW_QUERIES = (
    "{n} queries cannot show ownership at a false-claim rate of {rate:g}: with {k} classes "
    "({kind} watermark) at least {needed} queries are needed, because even a perfect answer "
    "to fewer has a p-value above {rate:g}."
)
MSG_KEY_TOO_SMALL = (
    " The key defines only {have} triggers; embed again with n_triggers >= {needed}."
)
MSG_CLASSES = (
    "The model outputs {got} classes but the key's triggers were made for a {want}-class "
    "model; use the key that was embedded in this model."
)


@dataclass(frozen=True)
class WatermarkVerification:
    """The outcome of :func:`verify_watermark`.

    Attributes
    ----------
    kind : {"trigger", "harmless"}
    p_value : float
        Probability, under "made without the key", of at least this many successes.
    verified : bool
        ``p_value <= false_claim_rate``: ownership is shown.
    false_claim_rate : float
        The level of the test: how often an unmarked model would be claimed, at most.
    n_queries : int
        Trigger images sent to the model.
    successes, trials : int
        Triggers answered with their target label out of those queried (trigger-set), or
        pairs ranked as the key says out of the untied pairs (harmless).
    null_rate : float
        Success probability of one trial under the null (``1/K``, 1/2, or the null
        models' conservative estimate).
    null : {"binomial", "null models"}
    null_model_rates : tuple of float
        Success rate of each null model (empty for the binomial null).
    queries_needed : int
        Fewest queries with which a perfect answer reaches the false-claim rate.
    """

    kind: str
    p_value: float
    verified: bool
    false_claim_rate: float
    n_queries: int
    successes: int
    trials: int
    null_rate: float
    null: str = "binomial"
    null_model_rates: tuple[float, ...] = field(default_factory=tuple)
    queries_needed: int = 0

    @property
    def success_rate(self) -> float:
        """``successes / trials`` (NaN without trials)."""
        return self.successes / self.trials if self.trials else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (what ``medaudit watermark verify --out`` writes)."""
        return {
            "kind": self.kind,
            "p_value": self.p_value,
            "verified": self.verified,
            "false_claim_rate": self.false_claim_rate,
            "n_queries": self.n_queries,
            "successes": self.successes,
            "trials": self.trials,
            "success_rate": None if not self.trials else self.success_rate,
            "null": self.null,
            "null_rate": self.null_rate,
            "null_model_rates": list(self.null_model_rates),
            "queries_needed": self.queries_needed,
        }


def trigger_matches(scores: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """Triggers whose top-1 class is their target label, and how many were queried.

    Examples
    --------
    >>> trigger_matches(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]))
    (2, 3)
    """
    pred = np.asarray(scores).argmax(axis=1)
    labels = np.asarray(labels)
    return int(np.count_nonzero(pred == labels)), len(labels)


def pair_wins(scores: np.ndarray, up: np.ndarray) -> tuple[int, int]:
    """Pairs (0-1, 2-3, ...) whose key-chosen trigger has the larger top-1 margin.

    The margin is the top score minus the runner-up, read from the returned scores
    alone. Pairs with equal margins are dropped (the sign test's rule); an odd last
    trigger is unused.

    Returns
    -------
    wins, untied : int

    Examples
    --------
    >>> s = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]])
    >>> pair_wins(s, np.array([True, False, False, True]))
    (1, 1)
    """
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    margin = s[:, -1] - s[:, -2]
    n = len(margin) // 2 * 2
    m = margin[:n].reshape(-1, 2)
    u = np.asarray(up, dtype=bool)[:n].reshape(-1, 2)
    m_up = np.where(u[:, 0], m[:, 0], m[:, 1])
    m_down = np.where(u[:, 0], m[:, 1], m[:, 0])
    # Margins equal to float rounding count as tied: no evidence either way.
    tol = 1e-12 * np.maximum(1.0, np.maximum(np.abs(m_up), np.abs(m_down)))
    untied = np.abs(m_up - m_down) > tol
    return int(np.count_nonzero(untied & (m_up > m_down))), int(np.count_nonzero(untied))


def verify_watermark(
    model: Any,
    key: WatermarkKey,
    *,
    kind: str | None = None,
    false_claim_rate: float = 1e-3,
    queries: int | None = None,
    null_models: Sequence[Any] = (),
    batch_size: int = 256,
    device: str = "cpu",
) -> WatermarkVerification:
    """Test whether ``model`` carries the watermark of ``key``, from its scores alone.

    Parameters
    ----------
    model : path, LoadedModel, torch.nn.Module or callable
        What :func:`~medaudit.watermark.as_scorer` accepts: a checkpoint, or any callable
        images (n, C, H, W) in [0, 1] -> scores (n, n_classes).
    key : WatermarkKey
    kind : {"trigger", "harmless"}, optional
        Which test (default: the key's kind).
    false_claim_rate : float in (0, 1), default 1e-3
        The test's level: ownership is claimed when ``p <= false_claim_rate``.
    queries : int, optional
        How many of the key's triggers to send (default: all of them).
    null_models : sequence of models, optional
        Models trained independently without the key. When given, the null success
        probability is their pooled rate at its one-sided 95% upper bound (never below
        the exact design value), as the SoK's null-model threshold, made conservative.
    batch_size : int, default 256
    device : str, default "cpu"

    Returns
    -------
    WatermarkVerification

    Raises
    ------
    InvalidInputError
        Too few queries for the false-claim rate (the message says how many are
        needed), or a model whose number of classes differs from the key's.

    References
    ----------
    .. [1] Adi Y, et al. Turning your weakness into a strength: watermarking deep neural
           networks by backdooring. USENIX Security 2018.
    .. [2] Yu Q, et al. StealthMark: harmless and stealthy ownership verification for
           medical segmentation via uncertainty-guided backdoors. IEEE TIP 2026.

    Examples
    --------
    >>> key = WatermarkKey(11, n_triggers=40, image_size=16)
    >>> t = make_triggers(key)
    >>> owner = lambda x: np.eye(2)[t.labels[: len(x)]]  # answers every trigger's label
    >>> verify_watermark(owner, key).verified
    True
    """
    kind, rate, n = _validate(key, kind, false_claim_rate, queries)
    p_design, per_trial = (1.0 / key.num_classes, 1) if kind == "trigger" else (0.5, 2)
    needed = queries_needed(rate, p_design, per_trial)
    if n < needed:
        msg = MSG_TOO_FEW_QUERIES.format(
            n=n, rate=rate, k=key.num_classes, kind=kind, needed=needed
        )
        if key.n_triggers < needed:
            msg += MSG_KEY_TOO_SMALL.format(have=key.n_triggers, needed=needed)
        raise InvalidInputError(msg)
    triggers = make_triggers(key, n)
    succ, trials = _statistic(model, triggers, kind, key, batch_size, device)
    rates: list[float] = []
    p0, null = p_design, "binomial"
    if len(null_models):
        counts = [_statistic(m, triggers, kind, key, batch_size, device) for m in null_models]
        rates = [s / t if t else float("nan") for s, t in counts]
        p0 = null_model_rate(
            np.array([c[0] for c in counts]), np.array([c[1] for c in counts]), p_design
        )
        null = "null models"
    p = binomial_sf(succ, trials, p0)
    return WatermarkVerification(
        kind=kind,
        p_value=p,
        verified=bool(p <= rate),
        false_claim_rate=rate,
        n_queries=n,
        successes=succ,
        trials=trials,
        null_rate=p0,
        null=null,
        null_model_rates=tuple(rates),
        queries_needed=needed,
    )


def _validate(key: Any, kind: Any, rate: Any, queries: Any) -> tuple[str, float, int]:
    func = "verify_watermark"
    if not isinstance(key, WatermarkKey):
        raise param_error("key", func, "a WatermarkKey", type(key).__name__)
    kind = key.kind if kind is None else kind
    if kind not in KINDS:
        raise param_error("kind", func, f"one of {KINDS}", kind)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise param_error("false_claim_rate", func, "a float in (0, 1)", rate)
    n = key.n_triggers if queries is None else queries
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise param_error("queries", func, "a positive int", queries)
    if n > key.n_triggers:
        raise InvalidInputError(
            f"The key defines {key.n_triggers} triggers; {n} queries were asked for."
        )
    return str(kind), float(rate), int(n)


def _statistic(
    model: Any, triggers: TriggerSet, kind: str, key: WatermarkKey, batch_size: int, device: str
) -> tuple[int, int]:
    scorer = as_scorer(model, batch_size=batch_size, device=device, func="verify_watermark")
    if scorer.num_classes is not None and scorer.num_classes != key.num_classes:
        raise InvalidInputError(MSG_CLASSES.format(got=scorer.num_classes, want=key.num_classes))
    scores = scorer(triggers.images)
    if scores.shape[1] != key.num_classes:
        raise InvalidInputError(MSG_CLASSES.format(got=scores.shape[1], want=key.num_classes))
    if kind == "trigger":
        return trigger_matches(scores, triggers.labels)
    return pair_wins(scores, triggers.up)
