"""Membership inference attacks behind one interface, and their registry.

An attack is constructed with its hyperparameters and ``run`` on
:class:`MembershipSignals`; it returns one score per audited image, higher meaning
"more likely a member". Attacks that need reference models say how many
(:attr:`MembershipAttack.min_references`) and whether some of them must have trained on
the audited images (:attr:`MembershipAttack.online`).

Registered by name: ``loss``, ``calibrated_loss``, ``lira`` (offline), ``lira_online``
and ``rmia``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.attacks.membership._signals import MembershipSignals, confidence, loss_from_phi

__all__ = [
    "RMIA",
    "CalibratedLossAttack",
    "LiRA",
    "LossAttack",
    "MembershipAttack",
    "get_attack",
    "list_attacks",
    "register_attack",
]

MSG_TOO_FEW_REFERENCES = (
    "The {name} attack needs at least {need} reference model(s){what}; got {got}."
)
MSG_NEEDS_ONLINE = (
    "The {name} attack needs online reference models (each audited image in the training "
    "data of some of them); these reference models never saw an audited image."
)
MSG_DUPLICATE_ATTACK = (
    "An attack named {name!r} is already registered; pass force=True to replace it."
)
MSG_UNKNOWN_ATTACK = "Unknown membership attack(s) {names}; available: {known}."


class MembershipAttack(abc.ABC):
    """One membership inference attack: ``run(signals) -> scores``.

    Attributes
    ----------
    name : str
        Registry name.
    min_references : int
        Reference models the attack needs (0: none).
    online : bool
        Whether it needs reference models that trained on the audited images.
    """

    name: str = ""
    min_references: int = 0
    online: bool = False

    def check(self, signals: MembershipSignals) -> None:
        """Raise a clear error when ``signals`` cannot feed this attack."""
        if not isinstance(signals, MembershipSignals):
            raise param_error("signals", f"{self.name}.run", "MembershipSignals", signals)
        if signals.n_reference < self.min_references:
            what = " (half of them trained on each audited image)" if self.online else ""
            raise InvalidInputError(
                MSG_TOO_FEW_REFERENCES.format(
                    name=self.name, need=self.min_references, what=what, got=signals.n_reference
                )
            )
        if self.online and not signals.online:
            raise InvalidInputError(MSG_NEEDS_ONLINE.format(name=self.name))

    def run(self, signals: MembershipSignals) -> np.ndarray:
        """Membership scores of the audited images, shape (n,); higher = more likely member."""
        self.check(signals)
        return np.asarray(self._scores(signals), dtype=np.float64)

    @abc.abstractmethod
    def _scores(self, signals: MembershipSignals) -> np.ndarray: ...


def _out_mask(signals: MembershipSignals) -> np.ndarray:
    """(K, n) True where reference k did not train on image i."""
    return ~signals.reference_in


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of ``values`` where ``mask``; NaN where no entry is selected."""
    count = mask.sum(axis=0)
    total = np.where(mask, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _require_each(mask: np.ndarray, name: str, what: str) -> None:
    if mask.shape[0] and not mask.any(axis=0).all():
        raise InvalidInputError(
            f"The {name} attack needs at least one {what} reference model for every audited "
            f"image; {int((~mask.any(axis=0)).sum())} image(s) have none."
        )


class LossAttack(MembershipAttack):
    """The loss attack: members have lower loss (Yeom et al. 2018).

    Score: ``-loss`` of the target model.

    References
    ----------
    .. [1] Yeom S, Giacomelli I, Fredrikson M, Jha S. Privacy risk in machine learning:
           analyzing the connection to overfitting. IEEE CSF 2018.

    Examples
    --------
    >>> s = MembershipSignals.from_arrays([0.0, 2.0])
    >>> np.round(LossAttack().run(s), 4).tolist()
    [-0.6931, -0.1269]
    """

    name = "loss"

    def _scores(self, signals: MembershipSignals) -> np.ndarray:
        return -loss_from_phi(signals.target)


class CalibratedLossAttack(MembershipAttack):
    """Difficulty-calibrated loss: the target's loss against the reference models' loss.

    Score: ``mean_k loss_ref_k(x) - loss_target(x)`` over the reference models that did
    not train on ``x``: an image that is hard for every model is not mistaken for a
    non-member, nor an easy one for a member.

    References
    ----------
    .. [1] Watson L, Guo C, Cormode G, Sablayrolles A. On the importance of difficulty
           calibration in membership inference attacks. ICLR 2022.

    Examples
    --------
    >>> s = MembershipSignals.from_arrays([0.0, 2.0], [[0.0, 4.0]])
    >>> np.round(CalibratedLossAttack().run(s), 4).tolist()
    [0.0, -0.1088]
    """

    name = "calibrated_loss"
    min_references = 1

    def _scores(self, signals: MembershipSignals) -> np.ndarray:
        out = _out_mask(signals)
        _require_each(out, self.name, "OUT")
        ref_loss = _masked_mean(loss_from_phi(signals.reference), out)
        return ref_loss - loss_from_phi(signals.target)


class LiRA(MembershipAttack):
    """The likelihood-ratio attack: Gaussian fits of each image's logit-scaled confidence.

    For each audited image, the reference models' logit-scaled confidences are modelled
    as Gaussian: ``N(mu_out, sigma_out^2)`` over the models that did not train on it and,
    online, ``N(mu_in, sigma_in^2)`` over those that did. Means are medians over the
    models (as the authors' code). Scores:

    - offline: ``log Phi((phi_target - mu_out) / sigma_out)``, the one-sided test of
      the paper (how much higher the target's confidence is than an OUT model's);
    - online: ``log N(phi_target; mu_in, sigma_in^2) - log N(phi_target; mu_out,
      sigma_out^2)``.

    ``fix_variance=True`` uses one global ``sigma``: the within-image variance pooled
    over images and over IN and OUT (each image's variance with ``ddof=1``), which the
    paper recommends below 64 reference models; ``None`` chooses it then. Otherwise each
    image gets its own ``sigma`` (``ddof=1``).

    Parameters
    ----------
    online : bool, default False
    fix_variance : bool or None, default None

    References
    ----------
    .. [1] Carlini N, Chien S, Nasr M, Song S, Terzis A, Tramer F. Membership inference
           attacks from first principles. IEEE S&P 2022.

    Examples
    --------
    >>> s = MembershipSignals.from_arrays([1.0, 0.0], [[0.0, 0.0], [2.0, 0.0]])
    >>> np.round(LiRA().run(s), 4).tolist()  # mu_out = (1, 0), sigma = 1
    [-0.6931, -0.6931]
    """

    def __init__(self, *, online: bool = False, fix_variance: bool | None = None) -> None:
        if not isinstance(online, bool):
            raise param_error("online", "LiRA", "a bool", online)
        if fix_variance is not None and not isinstance(fix_variance, bool):
            raise param_error("fix_variance", "LiRA", "a bool or None", fix_variance)
        self.online = online
        self.fix_variance = fix_variance
        self.name = "lira_online" if online else "lira"
        # Online: two IN and two OUT models per image; offline: two OUT models.
        self.min_references = 4 if online else 2

    def _scores(self, signals: MembershipSignals) -> np.ndarray:
        phi, k = signals.reference, signals.n_reference
        out = _out_mask(signals)
        groups = [out, ~out] if self.online else [out]
        for g, what in zip(groups, ("OUT", "IN"), strict=False):
            _require_each(g, self.name, what)
        fixed = k < 64 if self.fix_variance is None else self.fix_variance
        mus = [_masked_median(phi, g) for g in groups]
        if fixed:
            sd = _pooled_sd(phi, groups, mus)
            sds = [np.full(phi.shape[1], sd)] * len(groups)
        else:
            sds = [_masked_sd(phi, g, mu) for g, mu in zip(groups, mus, strict=True)]
        t = signals.target
        if not self.online:
            return sps.norm.logcdf(t, loc=mus[0], scale=sds[0])
        return sps.norm.logpdf(t, loc=mus[1], scale=sds[1]) - sps.norm.logpdf(
            t, loc=mus[0], scale=sds[0]
        )


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmedian(np.where(mask, values, np.nan), axis=0)


def _masked_sd(values: np.ndarray, mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=0)
    if (count < 2).any():
        raise InvalidInputError(
            "LiRA with a per-image variance needs at least two reference models on each "
            "side of every audited image; use fix_variance=True or more reference models."
        )
    dev = np.where(mask, values - _masked_mean(values, mask), 0.0)
    sd = np.sqrt((dev**2).sum(axis=0) / (count - 1))
    return np.maximum(sd, _MIN_SD)


# A floor on sigma: an image every reference model scores identically would otherwise
# get an infinitely sharp Gaussian.
_MIN_SD = 1e-6


def _pooled_sd(values: np.ndarray, groups: list[np.ndarray], mus: list[np.ndarray]) -> float:
    """Square root of the within-image variance pooled over images and groups."""
    ss, dof = 0.0, 0
    for g in groups:
        count = g.sum(axis=0)
        mean = _masked_mean(values, g)
        dev = np.where(g, values - mean, 0.0)
        ss += float((dev**2).sum())
        dof += int(np.maximum(count - 1, 0).sum())
    if dof == 0:
        raise InvalidInputError(
            "LiRA needs at least two reference models on one side of some audited image to "
            "estimate a variance."
        )
    return max(float(np.sqrt(ss / dof)), _MIN_SD)


class RMIA(MembershipAttack):
    """Robust membership inference: a pairwise likelihood ratio against population images.

    For an audited image ``x`` and a population image ``z`` (which no model trained on),

        LR(x, z) = [p(x | target) / p(x)] / [p(z | target) / p(z)],

    where ``p(. | target)`` is the target's confidence in the true label and ``p(.)``
    its average over reference models. The score is the fraction of population images
    with ``LR(x, z) > gamma``. Offline (no reference model trained on ``x``),
    ``p(x) = ((1 + a) p_out(x) + (1 - a)) / 2`` approximates the average over IN and OUT
    models from the OUT ones. Works with a single reference model.

    Parameters
    ----------
    a : float in [0, 1], default 0.3
        Offline scaling (the authors' default); ignored online.
    gamma : float > 0, default 1.0
        Likelihood-ratio threshold of the pairwise test. The ranking of the audited
        images, and so the ROC, does not depend on it except through ties.
    online : bool, default False
        Average ``p(x)`` over all reference models, IN and OUT (needs online
        reference models).

    References
    ----------
    .. [1] Zarifzadeh S, Liu P, Nguyen C, Shokri R. Low-cost high-power membership
           inference attacks. ICML 2024.

    Examples
    --------
    >>> s = MembershipSignals.from_arrays(
    ...     [2.0, -1.0], [[0.0, 0.0]], population_target=[0.0, 1.0],
    ...     population_reference=[[0.0, 0.0]])
    >>> RMIA().run(s).tolist()
    [1.0, 0.0]
    """

    def __init__(self, *, a: float = 0.3, gamma: float = 1.0, online: bool = False) -> None:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise param_error("a", "RMIA", "a float in [0, 1]", a)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise param_error("gamma", "RMIA", "a float > 0", gamma)
        self.a, self.gamma, self.online = float(a), float(gamma), bool(online)

    name = "rmia"
    min_references = 1

    def _marginal(self, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.online:
            return ref.mean(axis=0)
        p_out = _masked_mean(ref, mask)
        return (1 + self.a) / 2 * p_out + (1 - self.a) / 2

    def _scores(self, signals: MembershipSignals) -> np.ndarray:
        if len(signals.population_target) == 0:
            raise InvalidInputError(
                "The rmia attack needs population images (z samples) that no model trained on."
            )
        out = _out_mask(signals)
        if not self.online:
            _require_each(out, self.name, "OUT")
        p_x = self._marginal(confidence(signals.reference), out)
        p_z = self._marginal(
            confidence(signals.population_reference),
            np.ones(signals.population_reference.shape, dtype=bool),
        )
        ratio_x = confidence(signals.target) / p_x
        ratio_z = confidence(signals.population_target) / p_z
        # Fraction of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma:
        # one sort and a binary search instead of the n x m matrix of ratios.
        sorted_z = np.sort(ratio_z)
        below = np.searchsorted(sorted_z, ratio_x / self.gamma, side="left")
        return below / len(sorted_z)


# -- registry ----------------------------------------------------------------------------
AttackFactory = Callable[[], MembershipAttack]
_REGISTRY: dict[str, AttackFactory] = {}


def register_attack(name: str, factory: AttackFactory, *, force: bool = False) -> None:
    """Register a membership attack under ``name``.

    Parameters
    ----------
    name : str
    factory : callable
        ``factory() -> MembershipAttack`` with the attack's default hyperparameters.
    force : bool, default False
        Replace an existing entry instead of raising.

    Examples
    --------
    >>> register_attack("loss2", LossAttack)
    >>> "loss2" in list_attacks()
    True
    >>> register_attack("loss2", LossAttack)
    Traceback (most recent call last):
    ...
    medaudit._errors.InvalidParameterError: An attack named 'loss2' is already registered; \
pass force=True to replace it.
    >>> _ = _REGISTRY.pop("loss2")
    """
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise param_error("name", "register_attack", "a non-empty str without commas", name)
    if not callable(factory):
        raise param_error("factory", "register_attack", "a callable", factory)
    if name in _REGISTRY and not force:
        raise InvalidParameterError(MSG_DUPLICATE_ATTACK.format(name=name))
    _REGISTRY[name] = factory


def list_attacks() -> list[str]:
    """Registered attack names, in registration order.

    Examples
    --------
    >>> list_attacks()[:5]
    ['loss', 'calibrated_loss', 'rmia', 'lira', 'lira_online']
    """
    return list(_REGISTRY)


def get_attack(name: str) -> MembershipAttack:
    """A new instance of the attack registered as ``name``.

    Examples
    --------
    >>> get_attack("lira_online").online
    True
    """
    if name not in _REGISTRY:
        raise InvalidInputError(
            MSG_UNKNOWN_ATTACK.format(names=name, known=", ".join(list_attacks()))
        )
    attack = _REGISTRY[name]()
    if not isinstance(attack, MembershipAttack):
        raise InvalidParameterError(
            f"The factory of attack {name!r} returned a {type(attack).__name__}, "
            "not a MembershipAttack."
        )
    return attack


register_attack("loss", LossAttack)
register_attack("calibrated_loss", CalibratedLossAttack)
register_attack("rmia", RMIA)
register_attack("lira", LiRA)
register_attack("lira_online", lambda: LiRA(online=True))
