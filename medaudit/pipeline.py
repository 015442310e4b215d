"""Run the registered audits on one set of predictions and assemble the Report.

This module sits above the audits (like the CLI) and holds no audit-specific code: it
builds one :class:`~medaudit.registry.AuditContext`, runs each requested audit's
``audit(ctx)`` from the registry, and collects the sections with timings and
reproducibility metadata.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medaudit._errors import InvalidInputError, param_error
from medaudit.data import Cohort, resolve_sensitive
from medaudit.inference import Predictions
from medaudit.registry import (
    NEEDS,
    AuditContext,
    check_audit_names,
    get_audit,
    list_audits,
)
from medaudit.report import Policy, Report, Section

__all__ = ["LoadedPredictions", "load_model_and_predict", "run_audits"]


@dataclass(frozen=True)
class LoadedPredictions:
    """What :func:`load_model_and_predict` returns: the model, the data and one clean pass."""

    loaded: Any
    cohort: Cohort
    predictions: Predictions

    @property
    def model_info(self) -> dict[str, Any]:
        """Architecture, input size, normalisation, class names and DP ledger (``privacy``)."""
        lm = self.loaded
        info = {
            "arch": lm.arch,
            "format": lm.format,
            "image_size": lm.image_size,
            "in_channels": lm.in_channels,
            "mean": None if lm.mean is None else list(lm.mean),
            "std": None if lm.std is None else list(lm.std),
            "class_names": list(lm.class_names or []),
        }
        if getattr(lm, "privacy", None) is not None:  # the DP ledger (privacy_budget audit)
            info["privacy"] = lm.privacy
        return info


def load_model_and_predict(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    workers: int = 0,
    progress: bool = False,
    columns: Any = None,
) -> LoadedPredictions:
    """Load a checkpoint and a cohort and run the model once over it.

    Parameters
    ----------
    model_path : path
        ``.safetensors`` (with metadata), a state-dict ``.pt`` with ``arch``, or TorchScript.
    data_path : path
        Manifest CSV/Parquet or MedMNIST ``.npz``.
    arch : str, optional
        Architecture of a state-dict ``.pt`` file.
    cache_dir : path, optional
        Cache the predictions there, keyed by model and data hashes.
    batch_size : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    workers : int
        Decode disk-backed images in this many worker processes.
    progress : bool
    columns : ColumnMap, optional
        The manifest's column names and label handling (:class:`medaudit.data.ColumnMap`).
    """
    from medaudit.data import load_cohort
    from medaudit.inference import predict
    from medaudit.models import load_checkpoint

    mp, dp = Path(model_path), Path(data_path)
    for p, what in ((mp, "Checkpoint"), (dp, "Manifest")):
        if not p.is_file():
            raise InvalidInputError(f"{what} not found: {p}")
    loaded = load_checkpoint(mp, arch=arch)
    cohort = load_cohort(dp, columns=columns)
    if loaded.class_names and len(loaded.class_names) != cohort.num_classes:
        # Keep the model's class names: the data may not show every class.
        cohort.class_names = list(loaded.class_names)
    preds = predict(
        loaded.model,
        cohort,
        batch_size=batch_size,
        image_size=loaded.image_size,
        in_channels=loaded.in_channels,
        mean=loaded.mean,
        std=loaded.std,
        cache_dir=cache_dir,
        device=device,
        workers=workers,
        progress=progress,
    )
    return LoadedPredictions(loaded, cohort, preds)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("medaudit", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "fairlearn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _select(ctx: AuditContext, audits: Sequence[str] | None) -> tuple[list[str], list[dict]]:
    """The audits to run, and those of the default set that cannot run (with why)."""
    if audits is not None:
        names = check_audit_names(list(audits))
        for n in names:
            ctx.require(n, *get_audit(n).needs)
        return names, []
    run, not_run = [], []
    for n in list_audits():
        spec = get_audit(n)
        miss = ctx.missing(spec.needs)
        if not spec.default:
            not_run.append({"audit": n, "title": spec.title, "reason": "runs only when named"})
        elif miss:
            need = " and ".join(NEEDS[m] for m in miss)
            not_run.append({"audit": n, "title": spec.title, "reason": f"needs {need}"})
        else:
            run.append(n)
    return run, not_run


def run_audits(
    predictions: Predictions,
    cohort: Cohort,
    *,
    audits: Sequence[str] | None = None,
    sensitive: Sequence[str] | None = None,
    policy: Policy | None = None,
    train: Cohort | None = None,
    population: Cohort | None = None,
    model: Any = None,
    model_info: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    calibration: Predictions | None = None,
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Report:
    """Run the named audits on one set of predictions and return the report.

    Parameters
    ----------
    predictions : Predictions
        The model's clean pass over ``cohort``.
    cohort : Cohort
    audits : sequence of str, optional
        Names from :func:`medaudit.registry.list_audits`; default: every audit whose
        inputs are available (the others are listed in ``meta["audits_not_run"]``).
        A named audit whose inputs are missing is an error.
    sensitive : sequence of str, optional
        Attribute columns; default: the demographic columns present
        (:func:`medaudit.data.resolve_sensitive`).
    policy : Policy, optional
    train : Cohort, optional
        The training data (patient overlap; membership inference).
    population : Cohort, optional
        Data disjoint from the training data (reference models of privacy attacks).
    model : torch.nn.Module, optional
        Needed by audits that run the model again (robustness, shortcuts, privacy).
    model_info : dict, optional
        ``arch``, ``image_size``, ``in_channels``, ``mean``, ``std``, ``class_names``.
    meta : dict, optional
        Extra report metadata (model card, command line, timings so far).
    calibration : Predictions, optional
        Predictions on a calibration split: operating points and the fairness
        mitigation suggestion are fitted there, never on the audited data.
    device : str
        Torch device for audits that run the model again.
    cache_dir : path, optional
    progress : bool
    """
    policy = policy or Policy.default()
    if len(predictions) != len(cohort):
        raise param_error("predictions", "run_audits", f"of length {len(cohort)}", len(predictions))
    sens = resolve_sensitive(cohort.meta.columns, sensitive, source=f"cohort {cohort.name!r}")
    ctx = AuditContext(
        predictions=predictions,
        cohort=cohort,
        policy=policy,
        sensitive=sens,
        train=train,
        population=population,
        calibration=calibration,
        model=model,
        model_info=dict(model_info or {}),
        device=device,
        cache_dir=cache_dir,
        progress=progress,
    )
    names, not_run = _select(ctx, audits)
    sections: list[Section] = []
    timings: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        sections.append(get_audit(name).audit(ctx))
        timings[name] = round(time.perf_counter() - t0, 3)
    report_meta = _report_meta(predictions, cohort, policy, timings, model_info, sens)
    report_meta["audits_not_run"] = not_run
    for k, v in (meta or {}).items():
        if k == "model_card" and isinstance(v, dict):
            report_meta["model_card"] = {**report_meta["model_card"], **v}
        elif k == "timings_seconds" and isinstance(v, dict):
            report_meta["timings_seconds"] = {**v, **timings}
        else:
            report_meta[k] = v
    return Report(sections=sections, meta=report_meta)


def _report_meta(
    predictions: Predictions,
    cohort: Cohort,
    policy: Policy,
    timings: dict[str, float],
    model_info: dict[str, Any] | None,
    sens: list[str],
) -> dict[str, Any]:
    from medaudit.report._provenance import environment, policy_record, utc_now

    y = predictions.labels
    return {
        "created": utc_now(),
        "model_hash": predictions.model_hash,
        "data_hash": predictions.data_hash,
        "seed": int(policy.setting("seed")),
        **policy_record(policy),
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
        "model_card": {"sensitive_attributes": sens},
        "environment": environment(),
    }
