"""The whole job of ``medaudit federate``: simulate, compare with central training, report.

:func:`federate` partitions a cohort into sites, runs the federation with Flower's
simulation engine, trains the centralised baseline on the pooled training data for the
same number of epochs (a simulation can; a real federation cannot), and writes
``model.safetensors``, ``index.html`` and ``audit.json``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medaudit._errors import InvalidInputError
from medaudit.data import Cohort, SitePartition, partition_by_site
from medaudit.federated._rounds import FederatedRun, RoundRecord
from medaudit.federated._section import CentralisedComparison, federated_section
from medaudit.federated._server import Arm
from medaudit.federated._settings import FederatedSettings
from medaudit.federated._simulation import prepare_sites, simulate_sites
from medaudit.federated._sites import FaultPlan, SiteData, paired_auroc
from medaudit.report import Policy, Report

__all__ = ["FederationResult", "concat_cohorts", "federate", "model_from_state"]


@dataclass(frozen=True)
class FederationResult:
    """What :func:`federate` returns.

    Attributes
    ----------
    run : FederatedRun
    report : Report
    model : torch.nn.Module
        The first strategy's final model (the audited model in an audit-only run).
    centralised : CentralisedComparison or None
    checkpoint : Path or None
        Where the model was saved.
    """

    run: FederatedRun
    report: Report
    model: nn.Module
    centralised: CentralisedComparison | None
    checkpoint: Path | None


def concat_cohorts(cohorts: Sequence[Cohort], *, name: str) -> Cohort:
    """One cohort of the rows of several (images in memory, or paths under one root)."""
    meta = pd.concat([c.meta for c in cohorts], ignore_index=True)
    first = cohorts[0]
    if all(c.images is not None for c in cohorts):
        images = np.concatenate([np.asarray(c.images) for c in cohorts])
        return Cohort(meta, images=images, class_names=first.class_names, name=name)
    if any(c.images is not None for c in cohorts) or len({c.root for c in cohorts}) > 1:
        raise InvalidInputError("Cannot pool cohorts whose images are stored differently.")
    return Cohort(meta, root=first.root, class_names=first.class_names, name=name)


def model_from_state(
    model_config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    model_fn: Callable[[Any], nn.Module] | None = None,
) -> nn.Module:
    """A model of the run's architecture holding ``state``, in eval mode."""
    from medaudit.federated._client import model_from_config

    model = (model_fn or model_from_config)(model_config)
    full = model.state_dict()
    full.update({k: v.to(full[k].dtype) for k, v in state.items() if k in full})
    model.load_state_dict(full)
    return model.eval()


def _scores(model: nn.Module, cohort: Cohort, mc: Mapping[str, Any]) -> np.ndarray:
    from medaudit.inference import predict

    p = predict(
        model,
        cohort,
        image_size=int(mc["image-size"]) or None,
        in_channels=int(mc["in-channels"]),
        mean=list(mc["mean"]),
        std=list(mc["std"]),
        features=False,
    )
    return p.scores[:, 1] if p.scores.shape[1] == 2 else p.scores.max(axis=1)


def _clusters(cohort: Cohort) -> np.ndarray | None:
    meta = cohort.meta
    return meta["patient_id"].astype(str).to_numpy() if "patient_id" in meta.columns else None


def centralised_comparison(
    run: FederatedRun,
    sites: Mapping[str, SiteData],
    *,
    model_fn: Callable[[Any], nn.Module] | None = None,
    progress: bool = False,
) -> CentralisedComparison:
    """Train centrally on the pooled training data and compare with the federated model.

    The centralised model starts from the federation's initial weights and trains for
    ``rounds x local_epochs`` epochs with the same optimiser, batch size, normalisation
    and seed; both models are scored on each site's test split and on all of them.
    """
    from medaudit.models import train_model

    s, mc = run.settings, run.model_config
    names = [x.name for x in run.included]
    train = concat_cohorts([sites[n].train for n in names], name="pooled:train")
    tests = {n: sites[n].test for n in names}
    central = model_from_state(mc, run.initial_state, model_fn)
    epochs = s.rounds * s.local_epochs
    train_model(
        central,
        train,
        None,
        epochs=epochs,
        patience=None,
        batch_size=s.batch_size,
        lr=s.lr,
        seed=s.seed,
        image_size=int(mc["image-size"]) or None,
        in_channels=int(mc["in-channels"]),
        mean=list(mc["mean"]),
        std=list(mc["std"]),
        progress=progress,
    )
    fed = model_from_state(mc, run.strategies[0].state, model_fn)
    per_site, pooled_y, pooled_f, pooled_c, pooled_cl = {}, [], [], [], []
    for i, (n, test) in enumerate(tests.items()):
        if len(test) == 0:
            continue
        sf, sc = _scores(fed, test, mc), _scores(central, test, mc)
        cl = _clusters(test)
        per_site[n] = paired_auroc(
            test.labels,
            {"federated": sf, "centralised": sc},
            clusters=cl,
            n_boot=s.n_bootstrap,
            random_state=s.seed + i,
        )
        pooled_y.append(test.labels)
        pooled_f.append(sf)
        pooled_c.append(sc)
        pooled_cl.append(
            np.array([f"{n}\x00{c}" for c in cl])
            if cl is not None
            else np.array([f"{n}\x00{j}" for j in range(len(test))])
        )
    y = np.concatenate(pooled_y)
    pooled = paired_auroc(
        y,
        {"federated": np.concatenate(pooled_f), "centralised": np.concatenate(pooled_c)},
        clusters=np.concatenate(pooled_cl),
        n_boot=s.n_bootstrap,
        random_state=s.seed,
    )
    pooled_test = concat_cohorts(list(tests.values()), name="pooled:test")
    from medaudit.stats import auroc

    strategies = {
        sr.name: float(
            auroc(y > 0, _scores(model_from_state(mc, sr.state, model_fn), pooled_test, mc))
        )
        for sr in run.strategies
    }
    return CentralisedComparison(per_site, pooled, strategies, epochs)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("medaudit", "torch", "numpy", "flwr", "ray", "dp-accounting"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _report_meta(
    run: FederatedRun,
    cohort: Cohort,
    partition: SitePartition,
    policy: Policy,
    model: nn.Module,
    faults: FaultPlan | None,
    title: str,
) -> dict[str, Any]:
    from medaudit.inference import model_hash
    from medaudit.report._provenance import environment, policy_record, utc_now

    y = cohort.labels
    primary = run.strategies[0] if run.strategies else None
    privacy = primary.privacy_record() if primary else None
    return {
        "title": title,
        "created": utc_now(),
        "model_hash": model_hash(model),
        "data_hash": cohort.content_hash(),
        "seed": run.settings.seed,
        **policy_record(policy),
        "versions": _versions(),
        "command": " ".join(["medaudit", *sys.argv[1:]]) if sys.argv else "",
        "timings_seconds": dict(run.timings),
        "cohort": {
            "name": cohort.name,
            "n_images": len(cohort),
            "n_positive": int((y > 0).sum()),
            "classes": list(cohort.class_names),
            "n_patients": int(cohort.meta["patient_id"].nunique())
            if "patient_id" in cohort.meta.columns
            else None,
            "n_dropped_files": len(cohort.dropped),
            "n_sites": len(partition),
        },
        "model": {
            "arch": run.model_config["arch"],
            "image_size": int(run.model_config["image-size"]),
            "in_channels": int(run.model_config["in-channels"]),
            "mean": list(run.model_config["mean"]),
            "std": list(run.model_config["std"]),
            "class_names": list(cohort.class_names),
        },
        "federated": {
            "settings": run.settings.to_dict(),
            "partition": partition.method,
            "sites": {s.name: {"included": s.included, "reason": s.reason} for s in run.sites},
            "faults": None if faults is None else faults.to_dict(),
            "privacy": privacy,
        },
        "model_card": {
            "training_data": f"{len(run.included)} sites, trained without pooling",
            "sensitive_attributes": sorted(
                {
                    a
                    for a, _ in (primary.stats.keys if primary and primary.stats else ())
                    if a != "all"
                }
            ),
        },
        "environment": environment(),
    }


def federate(
    cohort: Cohort,
    *,
    settings: FederatedSettings | None = None,
    site_column: str = "site",
    partition: SitePartition | None = None,
    sensitive: Sequence[str] | None = None,
    init: str | os.PathLike[str] | None = None,
    audit_model: str | os.PathLike[str] | None = None,
    faults: FaultPlan | None = None,
    centralised: bool = True,
    policy: Policy | None = None,
    out: str | os.PathLike[str] | None = None,
    model_fn: Callable[[Any], nn.Module] | None = None,
    arms: Sequence[Arm] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    cpus: int | None = None,
    title: str | None = None,
) -> FederationResult:
    """Federate a multi-site cohort in simulation, compare, audit and write the report.

    Parameters
    ----------
    cohort : Cohort
    settings : FederatedSettings, optional
    site_column : str, default "site"
    partition : SitePartition, optional
        Overrides ``site_column`` (e.g. :func:`medaudit.data.dirichlet_partition`).
    sensitive : sequence of str, optional
    init : path, optional
        A checkpoint to start from (the "pretrained init"); its architecture, input size
        and normalisation are used.
    audit_model : path, optional
        Audit this checkpoint across the sites instead of training (``--audit-only``).
    faults : FaultPlan, optional
    centralised : bool, default True
        Also train the centralised baseline on the pooled data.
    policy : Policy, optional
    out : path, optional
        Folder for ``model.safetensors``, ``index.html`` and ``audit.json``.
    model_fn : callable, optional
    arms : sequence of Arm, optional
        Several training runs on the same sites (default: one per strategy); the first
        one's model is saved and compared with the centralised baseline.
    on_round, on_stage : callable, optional
        Progress hooks.
    cpus : int, optional
    title : str, optional

    Returns
    -------
    FederationResult
    """
    settings = settings or FederatedSettings()
    policy = policy or Policy.default()
    partition = partition or partition_by_site(cohort, column=site_column)
    initial_state, model_config, settings = _starting_point(init, audit_model, settings)
    sites = prepare_sites(cohort, partition, settings=settings, sensitive=sensitive)
    run = simulate_sites(
        sites,
        settings=settings,
        initial_state=initial_state,
        model_fn=model_fn,
        model_config=model_config,
        faults=faults,
        audit_only=audit_model is not None,
        arms=arms,
        on_round=on_round,
        on_stage=on_stage,
        cpus=cpus,
    )
    comparison = None
    if audit_model is None and centralised and run.strategies:
        if on_stage:
            on_stage("Centralised baseline on the pooled data")
        comparison = centralised_comparison(run, sites, model_fn=model_fn)
    state = run.strategies[0].state if run.strategies else run.initial_state
    model = model_from_state(run.model_config, state, model_fn)
    section = federated_section(
        run,
        policy=policy,
        centralised=comparison,
        faults=None if faults is None else faults.to_dict(),
    )
    default_title = (
        f"medaudit federated audit — {cohort.name}"
        if audit_model is not None
        else f"medaudit federated training — {cohort.name}"
    )
    report = Report(
        sections=[section],
        meta=_report_meta(run, cohort, partition, policy, model, faults, title or default_title),
    )
    checkpoint = None
    if out is not None:
        out_dir = Path(out)
        if audit_model is None:
            checkpoint = _save(model, run, cohort, out_dir / "model.safetensors")
        report.save(out_dir)
    return FederationResult(run, report, model, comparison, checkpoint)


def _starting_point(
    init: str | os.PathLike[str] | None,
    audit_model: str | os.PathLike[str] | None,
    settings: FederatedSettings,
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None, FederatedSettings]:
    path = audit_model if audit_model is not None else init
    if path is None:
        return None, None, settings
    from medaudit.models import load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"Checkpoint not found: {p}")
    lm = load_checkpoint(p)
    if lm.format == "torchscript":
        raise InvalidInputError(
            f"{p} is a TorchScript archive; federated training needs a zoo architecture "
            "(a .safetensors checkpoint written by medaudit)."
        )
    c = lm.in_channels
    config = {
        "arch": lm.arch,
        "in-channels": c,
        "num-classes": lm.num_classes,
        "image-size": lm.image_size or settings.image_size or 0,
        "mean": list(lm.mean) if lm.mean else [0.0] * c,
        "std": list(lm.std) if lm.std else [1.0] * c,
    }
    state = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    return state, config, settings.replace(arch=lm.arch)


def _save(model: nn.Module, run: FederatedRun, cohort: Cohort, path: Path) -> Path:
    from medaudit.models import save_checkpoint

    mc = run.model_config
    primary = run.strategies[0]
    extra: dict[str, Any] = {
        "federated": {
            "strategy": primary.name,
            "rounds": run.settings.rounds,
            "sites": [s.name for s in run.included],
            "left_out": {s.name: s.reason for s in run.sites if not s.included},
        },
        "seed": run.settings.seed,
    }
    privacy = primary.privacy_record()
    if privacy is not None:
        extra["privacy"] = privacy
    return save_checkpoint(
        model,
        path,
        arch=str(mc["arch"]),
        in_channels=int(mc["in-channels"]),
        num_classes=int(mc["num-classes"]),
        image_size=int(mc["image-size"]) or None,
        class_names=list(cohort.class_names)[: int(mc["num-classes"])]
        + [f"class_{i}" for i in range(len(cohort.class_names), int(mc["num-classes"]))],
        mean=list(mc["mean"]),
        std=list(mc["std"]),
        extra=extra,
    )
