"""Run audits on one set of predictions and assemble the :class:`~medaudit.report.Report`.

This module sits above the audit modules (like the CLI): it computes the clean
predictions once, hands the same :class:`AuditContext` to every registered audit, and
collects their sections with timings and reproducibility metadata.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medaudit._errors import InvalidInputError, InvalidParameterError, param_error
from medaudit.data import Cohort
from medaudit.inference import Predictions
from medaudit.report import Policy, Report, Section

__all__ = [
    "DEMOGRAPHIC_COLUMNS",
    "AuditContext",
    "default_sensitive",
    "list_audits",
    "register_audit",
    "run_audits",
]

# Attribute columns audited for fairness when the user names none.
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = (
    "sex",
    "gender",
    "age_group",
    "race",
    "ethnicity",
    "insurance",
)


@dataclass
class AuditContext:
    """Everything an audit may use; built once per ``medaudit audit`` run.

    Attributes
    ----------
    predictions : Predictions
        The clean pass of the model over ``cohort`` (computed exactly once).
    cohort : Cohort
        The audited images and metadata.
    policy : Policy
    sensitive : list of str
        Attribute columns to audit for fairness.
    train : Cohort or None
        The training cohort, when known (patient overlap, membership inference).
    model : torch.nn.Module or None
    model_info : dict
        Architecture, image size, normalisation, class names of the model.
    calibration : Predictions or None
        The model's predictions on a calibration split (not the audited cohort): where
        thresholds are chosen and the fairness mitigation suggestion is fitted.
    """

    predictions: Predictions
    cohort: Cohort
    policy: Policy
    sensitive: list[str] = field(default_factory=list)
    train: Cohort | None = None
    model: Any = None
    model_info: dict[str, Any] = field(default_factory=dict)
    calibration: Predictions | None = None


AuditFn = Callable[[AuditContext], Section]
_AUDITS: dict[str, AuditFn] = {}


def register_audit(name: str, fn: AuditFn, *, force: bool = False) -> None:
    """Add an audit under ``name``; raises on a duplicate unless ``force``."""
    if name in _AUDITS and not force:
        raise InvalidParameterError(
            f"An audit named {name!r} is already registered; pass force=True to replace it."
        )
    _AUDITS[name] = fn


def list_audits() -> list[str]:
    """Registered audit names, in the order they run by default."""
    return list(_AUDITS)


def _integrity(ctx: AuditContext) -> Section:
    from medaudit.data._integrity import integrity_section

    return integrity_section(ctx.cohort, train=ctx.train, policy=ctx.policy)


def _performance(ctx: AuditContext) -> Section:
    from medaudit.performance import performance_section

    return performance_section(ctx.predictions, policy=ctx.policy)


def _fairness(ctx: AuditContext) -> Section:
    from medaudit.fairness import fairness_section

    if not ctx.sensitive:
        return Section(
            name="fairness",
            title="Fairness across patient groups",
            summary="No sensitive attribute was given or found, so no subgroup was compared.",
            notes=[
                "Name attribute columns with --sensitive (e.g. --sensitive sex,age_group); "
                f"by default medaudit looks for {', '.join(DEMOGRAPHIC_COLUMNS)}."
            ],
        )
    continuous = tuple(c for c in ("age",) if c in ctx.predictions.meta.columns)
    return fairness_section(
        ctx.predictions,
        sensitive=ctx.sensitive,
        policy=ctx.policy,
        continuous=continuous,
        calibration=ctx.calibration,
    )


register_audit("integrity", _integrity)
register_audit("performance", _performance)
register_audit("fairness", _fairness)


def default_sensitive(cohort: Cohort) -> list[str]:
    """The demographic columns of ``cohort`` (see :data:`DEMOGRAPHIC_COLUMNS`)."""
    return [c for c in DEMOGRAPHIC_COLUMNS if c in cohort.meta.columns]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("medaudit", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "fairlearn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_audits(
    predictions: Predictions,
    cohort: Cohort,
    *,
    audits: Sequence[str] | None = None,
    sensitive: Sequence[str] | None = None,
    policy: Policy | None = None,
    train: Cohort | None = None,
    model: Any = None,
    model_info: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    calibration: Predictions | None = None,
) -> Report:
    """Run the named audits on one set of predictions and return the report.

    Parameters
    ----------
    predictions : Predictions
        The model's clean pass over ``cohort``.
    cohort : Cohort
    audits : sequence of str, optional
        Names from :func:`list_audits`; default all.
    sensitive : sequence of str, optional
        Attribute columns for the fairness audit; default :func:`default_sensitive`.
    policy : Policy, optional
    train : Cohort, optional
    model : torch.nn.Module, optional
    model_info : dict, optional
    meta : dict, optional
        Extra report metadata (model card, command line, timings so far).
    calibration : Predictions, optional
        Predictions on a calibration split, for the fairness mitigation suggestion
        (group-specific thresholds, never applied).
    """
    policy = policy or Policy.default()
    names = list(audits) if audits is not None else list_audits()
    unknown = [a for a in names if a not in _AUDITS]
    if unknown:
        raise InvalidInputError(
            f"Unknown audit(s) {', '.join(unknown)}; available: {', '.join(list_audits())}."
        )
    if len(predictions) != len(cohort):
        raise param_error("predictions", "run_audits", f"of length {len(cohort)}", len(predictions))
    sens = list(sensitive) if sensitive is not None else default_sensitive(cohort)
    missing = [c for c in sens if c not in cohort.meta.columns]
    if missing:
        raise InvalidInputError(
            f"Sensitive attribute column(s) not in the data: {', '.join(missing)}. "
            f"Available attribute columns: {', '.join(cohort.attributes) or 'none'}."
        )
    ctx = AuditContext(
        predictions=predictions,
        cohort=cohort,
        policy=policy,
        sensitive=sens,
        train=train,
        model=model,
        model_info=dict(model_info or {}),
        calibration=calibration,
    )
    sections: list[Section] = []
    timings: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        sections.append(_AUDITS[name](ctx))
        timings[name] = round(time.perf_counter() - t0, 3)
    y = predictions.labels
    report_meta: dict[str, Any] = {
        "model_hash": predictions.model_hash,
        "data_hash": predictions.data_hash,
        "seed": int(policy.setting("seed")),
        "policy": policy.source,
        "versions": _versions(),
        "command": " ".join(["medaudit", *sys.argv[1:]]) if sys.argv else "",
        "timings_seconds": timings,
        "cohort": {
            "name": cohort.name,
            "n_images": len(cohort),
            "n_positive": int((y > 0).sum()),
            "classes": list(cohort.class_names),
            "n_patients": int(cohort.meta["patient_id"].nunique())
            if "patient_id" in cohort.meta.columns
            else None,
            "n_dropped_files": len(cohort.dropped),
        },
        "model": dict(model_info or {}),
    }
    report_meta.setdefault(
        "model_card",
        {
            "sensitive_attributes": sens,
        },
    )
    for k, v in (meta or {}).items():
        if k == "model_card" and isinstance(v, dict):
            report_meta["model_card"] = {**report_meta["model_card"], **v}
        elif k == "timings_seconds" and isinstance(v, dict):
            report_meta["timings_seconds"] = {**v, **timings}
        else:
            report_meta[k] = v
    return Report(sections=sections, meta=report_meta)
