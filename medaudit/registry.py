"""The audit plug-in seam: the registry, each audit's declaration, and the AuditContext.

An audit is a package that exposes ``audit(ctx) -> Section`` and registers one
:class:`AuditSpec` at import, declaring its checks (thresholds with help) and settings
(defaults, validation, help, an optional command-line flag). :data:`AUDIT_MODULES` is the
one place the built-in audit packages are wired, as ``cli/app.py``'s ``COMMAND_MODULES``
wires the commands; a user's own audit registers the same way from their code.

This module sits below the audits and above ``report/``, ``inference``, ``models`` and
``data``: it imports no audit; it imports the modules named in :data:`AUDIT_MODULES` by
name, on first use of the registry.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.report._model import Section
from medaudit.report._policy import Setting, Threshold

if TYPE_CHECKING:
    from medaudit.data import Cohort
    from medaudit.inference import Predictions, Transform
    from medaudit.report._policy import Policy

__all__ = [
    "AUDIT_MODULES",
    "NEEDS",
    "AuditContext",
    "AuditSpec",
    "check_audit_names",
    "declared_checks",
    "declared_settings",
    "get_audit",
    "list_audits",
    "known_settings",
    "register_audit",
    "setting_flags",
    "unregister_audit",
]

# The built-in audit packages, in the order they run and appear in the report. Each
# registers its AuditSpec when imported.
AUDIT_MODULES: tuple[str, ...] = (
    "medaudit.integrity",
    "medaudit.performance",
    "medaudit.fairness",
    "medaudit.fairness._uncertainty",
    "medaudit.shortcuts",
    "medaudit.robustness",
    "medaudit.privacy",
    "medaudit.attacks.membership",
    "medaudit.watermark",
    "medaudit.federated",
)

# What an audit may need beyond the clean predictions, and how a user provides it.
NEEDS: dict[str, str] = {
    "model": "a model checkpoint (--model); a predictions file alone is not enough",
    "train": "the training data (--train-data)",
    "population": "population data disjoint from the training data (--population)",
    "features": "penultimate-layer features (a zoo model, or feature_layer=...)",
}

MSG_UNKNOWN_AUDIT = "Unknown audit(s) {names}; available: {known}."
MSG_NEEDS = "The {audit} audit needs {what}."


@dataclass(frozen=True)
class AuditSpec:
    """One audit's declaration.

    Parameters
    ----------
    name : str
        Key of the audit (``--audits NAME``) and the prefix of its check ids and settings.
    title : str
        One line saying what it audits (``medaudit audit --help``).
    audit : callable
        ``audit(ctx: AuditContext) -> Section``.
    checks : mapping of str to Threshold
        Built-in thresholds: check id or fnmatch pattern → :class:`Threshold`.
    settings : sequence of Setting
        The audit's settings; their full ids are ``"<name>.<setting>"``.
    needs : tuple of str
        Inputs beyond the clean predictions (keys of :data:`NEEDS`).
    default : bool, default True
        Whether it runs when ``--audits`` is not given.
    """

    name: str
    title: str
    audit: Callable[[AuditContext], Section]
    checks: Mapping[str, Threshold] = field(default_factory=dict)
    settings: Sequence[Setting] = ()
    needs: tuple[str, ...] = ()
    default: bool = True

    def __post_init__(self) -> None:
        if not self.name or "." in self.name:
            raise param_error("name", "AuditSpec", "a non-empty name without dots", self.name)
        if not callable(self.audit):
            raise param_error("audit", "AuditSpec", "a callable", self.audit)
        bad = [n for n in self.needs if n not in NEEDS]
        if bad:
            raise param_error("needs", "AuditSpec", f"keys of {sorted(NEEDS)}", bad)
        foreign = [c for c in self.checks if not c.startswith(f"{self.name}.")]
        if foreign:
            raise param_error("checks", "AuditSpec", f"ids starting with '{self.name}.'", foreign)


_AUDITS: dict[str, AuditSpec] = {}
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in AUDIT_MODULES:
            importlib.import_module(module)


def register_audit(spec: AuditSpec, *, force: bool = False) -> AuditSpec:
    """Register ``spec``; raises on a duplicate name (or flag) unless ``force``.

    Returns the spec, so a module can write ``SPEC = register_audit(AuditSpec(...))``.
    """
    if not isinstance(spec, AuditSpec):
        raise param_error("spec", "register_audit", "an AuditSpec", type(spec).__name__)
    if spec.name in _AUDITS and not force:
        raise InvalidParameterError(
            f"An audit named {spec.name!r} is already registered; pass force=True to replace it."
        )
    taken = {
        s.flag: a.name
        for a in _AUDITS.values()
        if a.name != spec.name
        for s in a.settings
        if s.flag
    }
    clash = [s.flag for s in spec.settings if s.flag in taken]
    if clash:
        raise InvalidParameterError(
            f"Flag(s) {clash} of audit {spec.name!r} are already used by {taken[clash[0]]!r}."
        )
    _AUDITS[spec.name] = spec
    return spec


def unregister_audit(name: str) -> None:
    """Remove an audit (tests registering a throw-away audit clean up with this)."""
    _AUDITS.pop(name, None)


def list_audits(*, default_only: bool = False) -> list[str]:
    """Registered audit names, in the order they run."""
    _ensure_loaded()

    def rank(item: tuple[int, AuditSpec]) -> tuple[int, int]:
        i, spec = item
        mod = getattr(spec.audit, "__module__", "") or ""
        for k, m in enumerate(AUDIT_MODULES):  # built-ins in the tuple's order
            if mod == m or mod.startswith(m + "."):
                return (k, i)
        return (len(AUDIT_MODULES), i)  # then users' audits, as registered

    ordered = sorted(enumerate(_AUDITS.values()), key=rank)
    return [s.name for _, s in ordered if s.default or not default_only]


def get_audit(name: str) -> AuditSpec:
    """The spec registered under ``name``; exit-2 error naming the known ones otherwise."""
    _ensure_loaded()
    if name not in _AUDITS:
        raise InvalidInputError(MSG_UNKNOWN_AUDIT.format(names=name, known=", ".join(_AUDITS)))
    return _AUDITS[name]


def check_audit_names(names: Sequence[str]) -> list[str]:
    """``names`` if every one is registered; one error naming all unknown ones otherwise."""
    _ensure_loaded()
    unknown = [n for n in names if n not in _AUDITS]
    if unknown:
        raise InvalidInputError(
            MSG_UNKNOWN_AUDIT.format(names=", ".join(unknown), known=", ".join(list_audits()))
        )
    return list(names)


def declared_checks() -> dict[str, Threshold]:
    """Every registered audit's built-in thresholds."""
    _ensure_loaded()
    return {cid: t for spec in _AUDITS.values() for cid, t in spec.checks.items()}


def declared_settings() -> dict[str, Setting]:
    """Every registered audit's settings, keyed by full id ``"<audit>.<name>"``."""
    _ensure_loaded()
    return {f"{spec.name}.{s.name}": s for spec in _AUDITS.values() for s in spec.settings}


def known_settings() -> dict[str, Setting]:
    """Core settings (no prefix) and every registered audit's settings, by full id."""
    from medaudit.report._policy import CORE_SETTINGS

    return {**{s.name: s for s in CORE_SETTINGS}, **declared_settings()}


def setting_flags() -> dict[str, tuple[str, Setting]]:
    """Command-line flag → (full setting id, setting), for ``medaudit audit``."""
    _ensure_loaded()
    return {
        s.flag: (f"{spec.name}.{s.name}", s)
        for spec in _AUDITS.values()
        for s in spec.settings
        if s.flag
    }


@dataclass
class AuditContext:
    """Everything an audit may use; built once per run, each derived thing computed once.

    Attributes
    ----------
    predictions : Predictions
        The clean pass of the model over ``cohort`` (computed exactly once).
    cohort : Cohort
        The audited images and metadata.
    policy : Policy
        Thresholds and settings (``ctx.setting("robustness.severity")``).
    sensitive : list of str
        Resolved sensitive attribute columns (:func:`medaudit.data.resolve_sensitive`).
    train : Cohort or None
        The training cohort (patient overlap, membership inference).
    population : Cohort or None
        Data from the same distribution, disjoint from the training data (reference
        models of the membership attacks).
    calibration : Predictions or None
        Predictions on a calibration split (operating points, mitigation suggestions).
    model : torch.nn.Module or None
        None for a predictions-only run.
    model_info : dict
        ``arch``, ``image_size``, ``in_channels``, ``mean``, ``std``, ``class_names`` and
        where the model came from (``checkpoint``).
    device : str
        Torch device for any further forward pass.
    batch_size : int
    cache_dir : path or None
        Where derived predictions may be cached on disk.
    progress : bool
        Show progress bars.
    """

    predictions: Predictions
    cohort: Cohort
    policy: Policy
    sensitive: list[str] = field(default_factory=list)
    train: Cohort | None = None
    population: Cohort | None = None
    calibration: Predictions | None = None
    model: Any = None
    model_info: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 256
    cache_dir: str | os.PathLike[str] | None = None
    progress: bool = False
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def setting(self, name: str) -> Any:
        """A policy setting, e.g. ``"n_bootstrap"`` or ``"robustness.severity"``."""
        return self.policy.setting(name)

    def missing(self, needs: Sequence[str]) -> list[str]:
        """Which of ``needs`` this context cannot provide."""
        have = {
            "model": self.model is not None,
            "train": self.train is not None,
            "population": self.population is not None,
            "features": self.predictions.features is not None,
        }
        return [n for n in needs if not have.get(n, False)]

    def require(self, audit: str, *needs: str) -> None:
        """Raise one clear error when any of ``needs`` is missing."""
        miss = self.missing(needs)
        if miss:
            raise InvalidInputError(
                MSG_NEEDS.format(audit=audit, what=" and ".join(NEEDS[n] for n in miss))
            )

    def _predict_kwargs(self) -> dict[str, Any]:
        info = self.model_info
        return {
            "image_size": info.get("image_size"),
            "in_channels": info.get("in_channels"),
            "mean": info.get("mean"),
            "std": info.get("std"),
            "batch_size": self.batch_size,
            "device": self.device,
        }

    def predict(self, cohort: Cohort, *, key: str) -> Predictions:
        """The model's clean pass over another cohort, computed once per ``key``."""
        memo_key = f"clean:{key}"
        if memo_key not in self._memo:
            from medaudit.inference import predict

            self.require("this", "model")
            self._memo[memo_key] = predict(
                self.model, cohort, cache_dir=self.cache_dir, **self._predict_kwargs()
            )
        return self._memo[memo_key]

    @property
    def train_predictions(self) -> Predictions:
        """Predictions on the training members (needs ``train`` and ``model``)."""
        self.require("this", "train", "model")
        assert self.train is not None  # for mypy: require() raised otherwise
        return self.predict(self.train, key="train")

    @property
    def population_predictions(self) -> Predictions:
        """Predictions on the population cohort (needs ``population`` and ``model``)."""
        self.require("this", "population", "model")
        assert self.population is not None
        return self.predict(self.population, key="population")

    def predict_transformed(
        self,
        transform: Transform,
        *,
        key: str,
        cohort: Cohort | None = None,
        rows: np.ndarray | None = None,
        features: bool = False,
    ) -> Predictions:
        """Predictions on transformed images, streamed batch by batch, computed once per key.

        Parameters
        ----------
        transform : callable
            ``transform(x, idx) -> x``: ``x`` a float tensor of shape (B, C, H, W) in
            [0, 1] at the model's input size (before normalisation), ``idx`` the cohort
            row of each image (seed per-image randomness with it). Never sees more than
            one batch: the transformed data set is never materialised.
        key : str
            Names the transform (``"gaussian_noise/3"``): a second call with the same key
            returns the first result.
        cohort : Cohort, optional
            Default: the audited cohort.
        rows : ndarray, optional
            Only these rows of the cohort.
        features : bool, default False
            Also collect penultimate features.
        """
        rows_key = None if rows is None else hash(np.asarray(rows).tobytes())
        memo_key = f"transformed:{key}:{id(cohort)}:{rows_key}"
        if memo_key not in self._memo:
            from medaudit.inference import predict

            self.require("this", "model")
            c = self.cohort if cohort is None else cohort
            if rows is not None:
                c = c.subset(rows)
            self._memo[memo_key] = predict(
                self.model, c, transform=transform, features=features, **self._predict_kwargs()
            )
        return self._memo[memo_key]

    def load_model(self, path: str | os.PathLike[str]) -> Any:
        """Load another checkpoint (a reference or baseline model) with safe loading."""
        from medaudit.models import load_checkpoint

        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(f"Checkpoint not found: {p}")
        return load_checkpoint(p)
