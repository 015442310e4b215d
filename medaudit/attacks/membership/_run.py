"""The membership audit of one model: sets → reference models → signals → attacks → metrics.

:class:`MembershipAudit` is constructed with what is audited (the model and its
members, non-members and population) and ``run`` with how (which attacks, how many
reference models, the bootstrap); it returns one :class:`MembershipResult`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.attacks.membership._attacks import (
    RMIA,
    MembershipAttack,
    get_attack,
    list_attacks,
)
from medaudit.attacks.membership._data import (
    AuditedSets,
    concat_cohorts,
    patient_units,
    prepare_sets,
)
from medaudit.attacks.membership._epsilon import (
    EpsilonBound,
    PrivacyClaim,
    one_run_epsilon,
    threshold_epsilon,
)
from medaudit.attacks.membership._metrics import (
    AttackMetrics,
    attack_metrics,
    exposure_attributes,
    most_exposed,
    subgroup_exposure,
)
from medaudit.attacks.membership._reference import (
    ReferenceModels,
    ReferenceTraining,
    balanced_inclusion,
    random_inclusion,
    train_reference_models,
)
from medaudit.attacks.membership._signals import MembershipSignals, logit_confidence

__all__ = [
    "DEFAULT_ATTACKS",
    "AttackOutcome",
    "MembershipAudit",
    "MembershipResult",
    "MembershipSettings",
]

#: Attacks run when none are named (those the reference models allow).
DEFAULT_ATTACKS: tuple[str, ...] = ("loss", "calibrated_loss", "rmia", "lira")

MSG_NOT_ZOO = (
    "the target's architecture {arch!r} is not in the model zoo, so no reference model "
    "can be built like it (name one with the reference_arch setting)"
)


@dataclass(frozen=True)
class MembershipSettings:
    """How the membership audit runs.

    Attributes
    ----------
    attacks : tuple of str or None
        Attack names (:func:`list_attacks`); None: :data:`DEFAULT_ATTACKS`. Attacks the
        reference models cannot feed are left out with the reason (an error when none
        can run).
    strict : bool
        A named attack that cannot run is an error instead of being left out.
    reference_models : int
        K reference models (0: only attacks that need none).
    reference_fraction : float
        Each reference model trains on this share of the population pool (at most as
        many images as the target's members).
    population_fraction : float
        Without population data, this share of the non-members' patients is held out as
        population (and not scored).
    z_fraction : float
        Share of the population's patients kept out of every reference model's training
        data as RMIA's comparison samples.
    max_samples : int
        At most this many members and this many non-members are scored (a random subset).
    rmia_a, rmia_gamma : float
        RMIA's offline scaling and pairwise threshold.
    delta : float
        Delta of the empirical epsilon bounds when the checkpoint claims none.
    n_bootstrap : int
    confidence : float
    min_group_size : int
        Subgroups with fewer members or non-members get no exposure number.
    n_exposed : int
        How many of the most exposed members to list.
    seed : int
    """

    attacks: tuple[str, ...] | None = None
    strict: bool = False
    reference_models: int = 1
    reference_fraction: float = 0.5
    population_fraction: float = 0.5
    z_fraction: float = 0.5
    max_samples: int = 5000
    rmia_a: float = 0.3
    rmia_gamma: float = 1.0
    delta: float = 1e-5
    n_bootstrap: int = 1000
    confidence: float = 0.95
    min_group_size: int = 30
    n_exposed: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        f = "MembershipSettings"
        for name, lo in (
            ("reference_models", 0),
            ("max_samples", 2),
            ("n_bootstrap", 1),
            ("min_group_size", 1),
            ("n_exposed", 0),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise param_error(name, f, f"an int >= {lo}", v)
        for name in ("reference_fraction", "population_fraction", "z_fraction", "confidence"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise param_error(name, f, "a float in (0, 1)", v)
        if self.attacks is not None:
            known = list_attacks()
            bad = [a for a in self.attacks if a not in known]
            if bad or not self.attacks:
                raise InvalidInputError(
                    f"Unknown membership attack(s) {', '.join(bad) or '(none given)'}; "
                    f"available: {', '.join(known)}."
                )
        RMIA(a=self.rmia_a, gamma=self.rmia_gamma)  # validates them


@dataclass(frozen=True)
class AttackOutcome:
    """One attack's scores and what they show.

    Attributes
    ----------
    name : str
    scores : ndarray of shape (n,)
        Higher = more likely a member; members first, then non-members.
    metrics : AttackMetrics
    epsilon_threshold, epsilon_one_run : EpsilonBound
        Empirical epsilon lower bounds (each at the Bonferroni-adjusted confidence).
    """

    name: str
    scores: np.ndarray = field(repr=False)
    metrics: AttackMetrics
    epsilon_threshold: EpsilonBound
    epsilon_one_run: EpsilonBound


@dataclass(frozen=True)
class MembershipResult:
    """What :meth:`MembershipAudit.run` returns.

    Attributes
    ----------
    outcomes : dict of str to AttackOutcome
        The attacks that ran, in order.
    not_run : dict of str to str
        Attacks that were left out, with why.
    is_member : ndarray of shape (n,), bool
    strongest : str
        The attack with the highest AUC (the checks report it).
    exposure : DataFrame
        Attack AUC per subgroup (:func:`subgroup_exposure`) of the strongest attack.
    most_exposed : DataFrame
        The most exposed members by row index (:func:`most_exposed`).
    claim : PrivacyClaim or None
        The checkpoint's DP claim.
    group_size : int
        Most images of one patient among the members: a per-image claim covers a whole
        patient only as ``group_size`` records (group privacy).
    references : dict
        K, design (offline/online), how many came from the cache, seconds, backend,
        training settings.
    population_source : str
    settings : MembershipSettings
    notes : list of str
    timings : dict of str to float
    """

    outcomes: dict[str, AttackOutcome]
    not_run: dict[str, str]
    is_member: np.ndarray = field(repr=False)
    strongest: str
    exposure: pd.DataFrame = field(repr=False)
    most_exposed: pd.DataFrame = field(repr=False)
    claim: PrivacyClaim | None
    group_size: int
    references: dict[str, Any]
    population_source: str
    settings: MembershipSettings
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def epsilon_lower_bound(self) -> EpsilonBound:
        """The highest empirical epsilon bound of any attack and method."""
        bounds = [
            b for o in self.outcomes.values() for b in (o.epsilon_threshold, o.epsilon_one_run)
        ]
        return max(bounds, key=lambda b: b.epsilon)

    def table(self) -> pd.DataFrame:
        """One row per attack: AUC with CI, balanced accuracy, TPR at low FPR, epsilon."""
        rows = []
        for name, o in self.outcomes.items():
            m = o.metrics
            rows.append(
                {
                    "attack": name,
                    "auc": m.auc,
                    "auc_ci_low": m.auc_ci[0],
                    "auc_ci_high": m.auc_ci[1],
                    "balanced_accuracy": m.balanced_accuracy,
                    "tpr_at_1pct_fpr": m.tpr[0.01],
                    "tpr_at_0.1pct_fpr": m.tpr[0.001],
                    "tpr_at_0pct_fpr": m.tpr[0.0],
                    "epsilon_lower_clopper_pearson": o.epsilon_threshold.epsilon,
                    "epsilon_lower_one_run": o.epsilon_one_run.epsilon,
                }
            )
        return pd.DataFrame(rows)


class MembershipAudit:
    """Membership inference against one trained model.

    Parameters
    ----------
    model : torch.nn.Module
        The target model.
    members : Cohort
        Images it trained on.
    non_members : Cohort
        Images from the same source it never saw (no patient in common with
        ``members``).
    population : Cohort, optional
        More images from the same source that neither set contains: reference models
        train on part of them and RMIA compares against the rest. Without it, part of
        the non-members' patients is held out (see
        :attr:`MembershipSettings.population_fraction`).
    arch : str, optional
        Zoo architecture of the target (reference models are built like it).
    image_size, in_channels : int, optional
    mean, std : sequence of float, optional
        The target's input normalisation.
    claim : PrivacyClaim or mapping, optional
        The DP claim of the checkpoint (its ``privacy`` metadata).
    batch_size : int, default 256
    device : str, default "cpu"

    References
    ----------
    .. [1] Carlini N, et al. Membership inference attacks from first principles.
           IEEE S&P 2022.
    .. [2] Zarifzadeh S, Liu P, Nguyen C, Shokri R. Low-cost high-power membership
           inference attacks. ICML 2024.
    .. [3] Steinke T, Nasr M, Jagielski M. Privacy auditing with one (1) training run.
           NeurIPS 2023.

    Examples
    --------
    >>> from medaudit.data import generate_hospitals
    >>> from medaudit.models import build_model
    >>> c = generate_hospitals(n_sites=2, patients_per_site=30, image_size=16, seed=0)
    >>> audit = MembershipAudit(build_model("small_cnn", random_state=0), c.split("train"),
    ...                         c.split("test"), c.split("val"), arch="small_cnn")
    >>> res = audit.run(MembershipSettings(attacks=("loss",), n_bootstrap=20,
    ...                                    reference_models=0))
    >>> list(res.outcomes), 0.0 <= res.outcomes["loss"].metrics.auc <= 1.0
    (['loss'], True)
    """

    def __init__(
        self,
        model: Any,
        members: Any,
        non_members: Any,
        population: Any | None = None,
        *,
        arch: str | None = None,
        image_size: int | None = None,
        in_channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        claim: PrivacyClaim | Any = None,
        batch_size: int = 256,
        device: str = "cpu",
    ) -> None:
        from medaudit.data import Cohort

        for name, c in (("members", members), ("non_members", non_members)):
            if not isinstance(c, Cohort):
                raise param_error(name, "MembershipAudit", "a Cohort", type(c).__name__)
        if population is not None and not isinstance(population, Cohort):
            raise param_error("population", "MembershipAudit", "a Cohort or None", population)
        self.model = model
        self.members, self.non_members, self.population = members, non_members, population
        self.arch = arch
        self.image_size = image_size
        self.in_channels = in_channels or _first_conv_channels(model) or 1
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.claim = (
            claim
            if isinstance(claim, PrivacyClaim) or claim is None
            else (PrivacyClaim.from_metadata(claim))
        )
        self.batch_size, self.device = batch_size, device

    # -- how ------------------------------------------------------------------------------
    def reference_training(self, **overrides: Any) -> ReferenceTraining:
        """The reference recipe: the target's architecture and inputs, plus ``overrides``."""
        arch = overrides.pop("arch", None) or self.arch
        return ReferenceTraining(
            arch=str(arch),
            in_channels=int(self.in_channels),
            num_classes=max(2, len(self.members.class_names)),
            image_size=self.image_size,
            class_names=tuple(self.members.class_names),
            mean=self.mean,
            std=self.std,
            **overrides,
        )

    def run(
        self,
        settings: MembershipSettings | None = None,
        *,
        training: ReferenceTraining | None = None,
        cache_dir: Any = None,
        cache: bool = True,
        workers: int = 0,
        backend: str = "auto",
        sensitive: Sequence[str] = (),
        progress: bool = False,
    ) -> MembershipResult:
        """Run the attacks and measure them.

        Parameters
        ----------
        settings : MembershipSettings, optional
        training : ReferenceTraining, optional
            Default: :meth:`reference_training` (the target's architecture, 10 epochs).
        cache_dir, cache, workers, backend
            Where reference models are cached and how they are trained
            (:func:`train_reference_models`).
        sensitive : sequence of str
            Attributes to report exposure by, besides ``site`` (and age bands).
        progress : bool
        """
        s = settings or MembershipSettings()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        sets = prepare_sets(
            self.members,
            self.non_members,
            self.population,
            population_fraction=s.population_fraction,
            z_fraction=s.z_fraction,
            max_samples=s.max_samples,
            seed=s.seed,
        )
        training = training or self.reference_training()
        attacks, not_run = self._choose_attacks(s, sets, training.arch)
        refs = self._references(
            attacks, s, sets, training, cache_dir, cache, workers, backend, progress
        )
        timings["reference_models"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        signals = self._signals(sets, refs)
        timings["signals"] = round(time.perf_counter() - t1, 3)
        t2 = time.perf_counter()
        result = self._measure(attacks, not_run, signals, sets, refs, s, sensitive)
        timings["attacks_and_metrics"] = round(time.perf_counter() - t2, 3)
        result.timings.update(timings)
        return result

    # -- steps ----------------------------------------------------------------------------
    def _choose_attacks(
        self, s: MembershipSettings, sets: AuditedSets, arch: str
    ) -> tuple[list[MembershipAttack], dict[str, str]]:
        strict = s.strict and s.attacks is not None
        names = list(s.attacks) if s.attacks is not None else list(DEFAULT_ATTACKS)
        chosen, not_run = [], {}
        for name in names:
            a = get_attack(name)
            if isinstance(a, RMIA):
                a = RMIA(a=s.rmia_a, gamma=s.rmia_gamma, online=a.online)
            why = _why_not(a, s, sets, arch)
            if why and strict:
                raise InvalidInputError(f"The {name} attack cannot run: {why}.")
            if why:
                not_run[name] = why
            else:
                chosen.append(a)
        if not chosen:
            raise InvalidInputError(
                "No membership attack can run: "
                + "; ".join(f"{k}: {v}" for k, v in not_run.items())
            )
        return chosen, not_run

    def _references(
        self,
        attacks: list[MembershipAttack],
        s: MembershipSettings,
        sets: AuditedSets,
        training: ReferenceTraining,
        cache_dir: Any,
        cache: bool,
        workers: int,
        backend: str,
        progress: bool,
    ) -> tuple[ReferenceModels | None, np.ndarray, bool]:
        n_audit = len(sets.members) + len(sets.non_members)
        need = max(a.min_references for a in attacks)
        if need == 0 or s.reference_models == 0:
            return None, np.zeros((0, n_audit), bool), False
        online = any(a.online for a in attacks)
        t = training
        k = s.reference_models
        size = min(len(sets.members), max(1, round(s.reference_fraction * len(sets.pool))))
        pool_units = patient_units(sets.pool)
        inc_pool = random_inclusion(len(sets.pool), k, size, units=pool_units, random_state=s.seed)
        pool, audited_in = sets.pool, np.zeros((k, n_audit), bool)
        if online:
            units = np.r_[patient_units(sets.members, "m:"), patient_units(sets.non_members, "n:")]
            audited_in = balanced_inclusion(n_audit, k, units=units, random_state=s.seed + 1)
            pool = concat_cohorts(
                [sets.pool, sets.members, sets.non_members],
                image_size=t.image_size,
                channels=t.in_channels,
            )
            inc_pool = np.hstack([inc_pool, audited_in])
        refs = train_reference_models(
            pool,
            inc_pool,
            t,
            seed=s.seed,
            cache_dir=cache_dir,
            cache=cache,
            workers=workers,
            backend=backend,
            progress=progress,
        )
        return refs, audited_in, online

    def _phi(self, model: Any, cohort: Any) -> np.ndarray:
        return logit_confidence(
            model,
            cohort,
            image_size=self.image_size,
            in_channels=self.in_channels,
            mean=self.mean,
            std=self.std,
            batch_size=self.batch_size,
            device=self.device,
        )

    def _signals(self, sets: AuditedSets, refs: tuple[Any, np.ndarray, bool]) -> MembershipSignals:
        models, audited_in, _ = refs
        ref_models = [] if models is None else models.models
        n, n_z = len(sets.members) + len(sets.non_members), len(sets.z)

        def both(m: Any) -> np.ndarray:
            return np.r_[self._phi(m, sets.members), self._phi(m, sets.non_members)]

        def z(m: Any) -> np.ndarray:
            return self._phi(m, sets.z) if n_z else np.zeros(0)

        reference = np.zeros((len(ref_models), n))
        population_reference = np.zeros((len(ref_models), n_z))
        for k, m in enumerate(ref_models):
            reference[k], population_reference[k] = both(m), z(m)
        return MembershipSignals(
            target=both(self.model),
            reference=reference,
            reference_in=audited_in,
            population_target=z(self.model),
            population_reference=population_reference,
        )

    def _measure(
        self,
        attacks: list[MembershipAttack],
        not_run: dict[str, str],
        signals: MembershipSignals,
        sets: AuditedSets,
        refs: tuple[Any, np.ndarray, bool],
        s: MembershipSettings,
        sensitive: Sequence[str],
    ) -> MembershipResult:
        nm, nn = len(sets.members), len(sets.non_members)
        is_member = np.r_[np.ones(nm, bool), np.zeros(nn, bool)]
        patients = np.r_[patient_units(sets.members, "m:"), patient_units(sets.non_members, "n:")]
        group_size = int(pd.Series(patients[:nm]).value_counts().max())
        one = _one_image_per_patient(patients, s.seed)
        claim = self.claim.for_groups(group_size) if self.claim is not None else None
        # A group claim with delta near 1 says nothing; the bounds then prove nothing either.
        delta = min(claim.delta, 1 - 1e-9) if claim is not None else s.delta
        conf_each = 1 - (1 - s.confidence) / (2 * len(attacks))  # Bonferroni: attacks x 2
        outcomes = {}
        for a in attacks:
            scores = a.run(signals)
            m = attack_metrics(
                is_member,
                scores,
                patients=patients,
                n_boot=s.n_bootstrap,
                confidence=s.confidence,
                random_state=s.seed,
            )
            outcomes[a.name] = AttackOutcome(
                a.name,
                scores,
                m,
                threshold_epsilon(
                    is_member[one],
                    scores[one],
                    delta=delta,
                    confidence=conf_each,
                    attack=a.name,
                    random_state=s.seed,
                ),
                one_run_epsilon(
                    is_member[one], scores[one], delta=delta, confidence=conf_each, attack=a.name
                ),
            )
        strongest = max(outcomes, key=lambda n: outcomes[n].metrics.auc)
        meta = pd.concat([sets.members.meta, sets.non_members.meta], ignore_index=True)
        exposure = subgroup_exposure(
            is_member,
            outcomes[strongest].scores,
            exposure_attributes(meta, sensitive),
            patients=patients,
            min_group_size=s.min_group_size,
            n_boot=s.n_bootstrap,
            confidence=s.confidence,
            random_state=s.seed,
        )
        rows = np.r_[sets.member_rows, sets.non_member_rows]
        exposed = most_exposed(is_member, outcomes[strongest].scores, rows, top=s.n_exposed)
        models, _, online = refs
        return MembershipResult(
            outcomes=outcomes,
            not_run=not_run,
            is_member=is_member,
            strongest=strongest,
            exposure=exposure,
            most_exposed=exposed,
            claim=self.claim,
            group_size=group_size,
            references=_reference_summary(models, online, s),
            population_source=sets.population_source,
            settings=s,
            notes=_notes(sets, len(one), nm + nn),
        )


def _why_not(a: MembershipAttack, s: MembershipSettings, sets: AuditedSets, arch: str) -> str:
    """Why attack ``a`` cannot run here ("" when it can)."""
    from medaudit.models import list_architectures

    k = s.reference_models
    if a.min_references == 0:
        return ""
    if k < a.min_references:
        return f"needs at least {a.min_references} reference model(s), {k} requested"
    if a.online and k % 2:
        return f"needs an even number of reference models, {k} requested"
    if arch not in list_architectures():
        return MSG_NOT_ZOO.format(arch=arch)
    if len(sets.pool) == 0:
        return "the population is too small to train reference models on"
    if isinstance(a, RMIA) and len(sets.z) == 0:
        return "the population is too small to keep comparison samples"
    return ""


def _reference_summary(models: ReferenceModels | None, online: bool, s: MembershipSettings) -> dict:
    if models is None:
        return {"k": 0}
    return {
        "k": len(models),
        "design": "online" if online else "offline",
        "from_cache": models.from_cache,
        "trained": len(models) - models.from_cache,
        "seconds": round(models.seconds, 3),
        "backend": models.backend,
        "images_per_model": int(models.inclusion.sum(axis=1).mean()),
    }


def _notes(sets: AuditedSets, n_units: int, n: int) -> list[str]:
    notes = [f"Population: {sets.population_source}."]
    if not sets.patients_checked:
        notes.append(
            "The sets have no patient_id column, so shared patients could not be ruled out; "
            "each image counts as its own patient."
        )
    if n_units < n:
        notes.append(
            f"The empirical epsilon bounds use one image per patient ({n_units} of {n} "
            "images), so that each trial is a different patient."
        )
    return notes


def _one_image_per_patient(patients: np.ndarray, seed: int) -> np.ndarray:
    """Index of one randomly chosen image of each patient, in image order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    _, first = np.unique(patients[order], return_index=True)
    return np.sort(order[first])


def _first_conv_channels(model: Any) -> int | None:
    from torch import nn

    for mod in getattr(model, "modules", lambda: [])():
        if isinstance(mod, nn.Conv2d):
            return int(mod.in_channels)
    return None
