"""Membership inference against an overfit and two DP small_cnn models on synthetic hospitals.

The red-team scenario of the ``privacy`` audit: the same canaries (one image per patient,
each included in training by a fair coin flip, so the one-run audit of Steinke et al.
2023 applies) train three ``small_cnn`` targets —

- ``overfit``: no defence, many epochs on a small training set;
- ``dp_eps8`` and ``dp_eps1``: DP-SGD through ``medaudit.privacy.train_private`` at
  epsilon 8 and 1 (``small_cnn_dp``, the narrow GroupNorm variant ``train --dp`` uses);

and every registered attack (LOSS, calibrated loss, RMIA, LiRA offline and online) runs
against each with K online reference models (for the DP targets, trained with the same
DP recipe). Writes ``results.csv``, ``results.md`` and a report (``index.html`` +
``audit.json``, one section per target) into ``--out`` (default ``reports/membership``).

Usage::

    python attacks/membership/run.py            # the committed results (~10 min, 2 cores)
    python attacks/membership/run.py --quick --out /tmp/membership   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medaudit.attacks.membership import (
    MembershipAudit,
    MembershipResult,
    MembershipSettings,
    ReferenceTraining,
    list_attacks,
    membership_section,
)
from medaudit.data import Cohort, generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, train_model
from medaudit.report import Report, atomic_write_text
from medaudit.stats import auroc

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Scenario:
    """Sizes and budgets of one run."""

    n_sites: int = 3
    patients_per_site: int = 500
    image_size: int = 32
    canaries: int = 600
    epochs: int = 20
    batch_size: int = 32
    reference_models: int = 8
    n_bootstrap: int = 1000
    dp_epsilons: tuple[float, ...] = (8.0, 1.0)
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    seed: int = 0
    workers: int = 0  # reference-model processes (0: one per core)


FULL = Scenario()
QUICK = Scenario(
    patients_per_site=40, canaries=60, epochs=1, reference_models=4, n_bootstrap=20, workers=1
)


def make_data(sc: Scenario) -> tuple[Cohort, Cohort, Cohort]:
    """(members, non-members, population): one image per patient, canaries by coin flip."""
    c = generate_hospitals(
        n_sites=sc.n_sites,
        patients_per_site=sc.patients_per_site,
        image_size=sc.image_size,
        heldout_site=None,
        seed=sc.seed,
    )
    rng = np.random.default_rng(sc.seed)
    first = ~c.meta["patient_id"].duplicated().to_numpy()
    one = c.subset(first)  # one image per patient: each canary is one patient
    order = rng.permutation(len(one))
    canary, rest = order[: sc.canaries], order[sc.canaries :]
    coin = rng.random(len(canary)) < 0.5  # each canary in training with probability 1/2
    return (
        one.subset(np.sort(canary[coin]), name="members (canaries in)"),
        one.subset(np.sort(canary[~coin]), name="non-members (canaries out)"),
        one.subset(np.sort(rest), name="population"),
    )


def _dp_available() -> bool:
    try:
        import medaudit.privacy  # noqa: F401
    except ImportError:
        return False
    return True


def dp_trainer(model: Any, cohort: Cohort, training: ReferenceTraining, seed: int) -> None:
    """Reference (and target) training with DP-SGD, as the DP targets were trained."""
    from medaudit.privacy import train_private

    opts = dict(training.trainer_options)
    train_private(
        model,
        cohort,
        None,
        target_epsilon=opts["epsilon"],
        target_delta=opts["delta"],
        max_grad_norm=opts["max_grad_norm"],
        epochs=training.epochs,
        batch_size=training.batch_size,
        lr=training.lr,
        seed=seed,
        mean=list(training.mean or [0.0]),
        std=list(training.std or [1.0]),
    )


def train_target(
    name: str, members: Cohort, sc: Scenario
) -> tuple[Any, ReferenceTraining, dict[str, Any] | None]:
    """The target model, the recipe its reference models copy, and its DP claim."""
    from medaudit.models import compute_normalization

    mean, std = compute_normalization(members)
    arch = "small_cnn" if name == "overfit" else "small_cnn_dp"
    training = ReferenceTraining(
        arch=arch,
        image_size=sc.image_size,
        mean=tuple(mean),
        std=tuple(std),
        epochs=sc.epochs,
        batch_size=sc.batch_size,
    )
    model = build_model(arch, random_state=sc.seed)
    if name == "overfit":
        train_model(
            model,
            members,
            None,
            epochs=sc.epochs,
            batch_size=sc.batch_size,
            seed=sc.seed,
            patience=None,
            mean=mean,
            std=std,
        )
        return model, training, None
    from medaudit.privacy import train_private

    eps = float(name.removeprefix("dp_eps"))
    res = train_private(
        model,
        members,
        None,
        target_epsilon=eps,
        target_delta=sc.dp_delta,
        max_grad_norm=sc.dp_max_grad_norm,
        epochs=sc.epochs,
        batch_size=sc.batch_size,
        seed=sc.seed,
        mean=mean,
        std=std,
    )
    opts = (("epsilon", eps), ("delta", sc.dp_delta), ("max_grad_norm", sc.dp_max_grad_norm))
    training = dataclasses.replace(training, trainer=dp_trainer, trainer_options=opts)
    return res.model, training, res.ledger.to_dict()


def attack(
    model: Any, training: ReferenceTraining, claim: Any, data: tuple[Cohort, ...], sc: Scenario
) -> MembershipResult:
    """Every registered attack against one target."""
    members, non_members, population = data
    audit = MembershipAudit(
        model,
        members,
        non_members,
        population,
        arch=training.arch,
        image_size=sc.image_size,
        mean=training.mean,
        std=training.std,
        claim=claim,
    )
    settings = MembershipSettings(
        attacks=tuple(list_attacks()),
        reference_models=sc.reference_models,
        n_bootstrap=sc.n_bootstrap,
        seed=sc.seed,
    )
    return audit.run(
        settings, training=training, sensitive=("sex", "age_group"), workers=sc.workers
    )


def results_table(name: str, res: MembershipResult, utility: float, claim: Any) -> pd.DataFrame:
    """One row per attack on one target."""
    t = res.table()
    t.insert(0, "model", name)
    t.insert(1, "claimed_epsilon", np.nan if claim is None else claim["epsilon"])
    t.insert(2, "target_auroc", utility)
    return t


def main(argv: list[str] | None = None) -> int:
    """Train each target, attack it, write the table and the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "membership")
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke run)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sc = QUICK if args.quick else FULL
    data = make_data(sc)
    names = ["overfit"] + ([f"dp_eps{e:g}" for e in sc.dp_epsilons] if _dp_available() else [])
    tables, sections, seconds = [], [], {}
    for name in names:
        t0 = time.perf_counter()
        model, training, claim = train_target(name, data[0], sc)
        pred = predict(model, data[1], mean=list(training.mean or []), std=list(training.std or []))
        utility = auroc(pred.labels, pred.score)  # on the non-members: unseen images
        res = attack(model, training, claim, data, sc)
        seconds[name] = round(time.perf_counter() - t0, 1)
        tables.append(results_table(name, res, utility, claim))
        sec = membership_section(res)
        sec.name, sec.title = f"privacy_{name}", f"{sec.title}: {name}"
        sections.append(sec)
        print(f"{name}: {seconds[name]} s", file=sys.stderr)
    table = pd.concat(tables, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(args.out / "results.md", _markdown(table, sc, data, names, seconds))
    meta = {
        "title": "Membership inference: overfit vs DP small_cnn (synthetic hospitals)",
        "scenario": dataclasses.asdict(sc),
        "timings_seconds": seconds,
    }
    Report(sections=sections, meta=meta).save(args.out)
    print(table.round(3).to_string(index=False))
    return 0


def _markdown(
    table: pd.DataFrame,
    sc: Scenario,
    data: tuple[Cohort, ...],
    names: list[str],
    seconds: dict[str, float],
) -> str:
    cols = [
        "model",
        "claimed_epsilon",
        "target_auroc",
        "attack",
        "auc",
        "tpr_at_1pct_fpr",
        "tpr_at_0.1pct_fpr",
        "tpr_at_0pct_fpr",
        "epsilon_lower_clopper_pearson",
        "epsilon_lower_one_run",
    ]
    lines = [
        "# Membership inference: overfit vs DP small_cnn",
        "",
        f"`python attacks/membership/run.py` (seed {sc.seed}): {len(data[0])} members and "
        f"{len(data[1])} non-members (canaries: one image per patient, each in training by "
        f"a fair coin), {len(data[2])} population images, {sc.image_size}x{sc.image_size}, "
        f"{sc.epochs} epochs, {sc.reference_models} online reference models per target. "
        f"Targets: {', '.join(names)}. Seconds per target: {seconds}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, r in table[cols].iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.3f}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
