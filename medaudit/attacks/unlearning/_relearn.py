"""Relearning attack (MedForget-style): how fast forgotten knowledge comes back.

The attacker fine-tunes a model for a few steps on data that was *not* forgotten but is
progressively related to the forget set — other studies of the same patients, then other
patients of the same site, then the other sites — and watches the forget set's
accuracy return. An unlearned model that merely hid what it knew recovers faster than
a model retrained without the data, whose own recovery (plain generalisation from the
related data) is the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from medaudit._errors import param_error
from medaudit.attacks.membership import logit_confidence
from medaudit.models import train_model

__all__ = ["RELEARN_TIERS", "relearning_curve", "relearning_tiers"]

#: The related data, most related first.
RELEARN_TIERS = ("same patient", "same site", "other sites")


def _col(cohort: Any, name: str) -> np.ndarray:
    if name not in cohort.meta.columns:
        return np.full(len(cohort), "", dtype=object)
    return cohort.meta[name].astype(str).to_numpy()


def relearning_tiers(train: Any, forget_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the retained rows at each tier of relatedness to the forget set.

    ``same patient``: retained rows of a patient with forgotten rows (other studies or
    images); ``same site``: other patients of a site with forgotten rows; ``other
    sites``: the rest. Empty tiers are left out (a forgotten site has no same-site data).
    """
    retain = ~forget_mask
    patients, sites = _col(train, "patient_id"), _col(train, "site")
    same_patient = retain & np.isin(patients, patients[forget_mask]) & (patients != "")
    same_site = retain & ~same_patient & np.isin(sites, sites[forget_mask]) & (sites != "")
    other = retain & ~same_patient & ~same_site
    tiers = {"same patient": same_patient, "same site": same_site, "other sites": other}
    return {k: v for k, v in tiers.items() if v.any()}


def relearning_curve(
    models: dict[str, nn.Module],
    train: Any,
    forget_mask: np.ndarray,
    *,
    steps: Sequence[int] = (0, 2, 5, 10),
    mean: list[float],
    std: list[float],
    image_size: int | None = None,
    in_channels: int = 1,
    batch_size: int = 16,
    lr: float = 1e-4,
    seed: int = 0,
) -> pd.DataFrame:
    """Forget-set confidence while fine-tuning each model on each tier of related data.

    Parameters
    ----------
    models : dict of str to torch.nn.Module
        E.g. ``{"gradient_ascent": unlearned, "retrained reference": retrained}``; each
        is copied, never changed.
    train : Cohort
        The original training data.
    forget_mask : ndarray of shape (len(train),), bool
    steps : sequence of int, default (0, 2, 5, 10)
        Fine-tuning steps at which the forget set is measured.
    mean, std, image_size, in_channels
        The models' input.
    batch_size : int, default 16
    lr : float, default 1e-4
        AdamW learning rate of the attacker's fine-tuning (BatchNorm statistics are
        re-estimated on the related data after each stretch, as the loop does).
    seed : int, default 0
        The same batches for every model.

    Returns
    -------
    DataFrame
        ``model``, ``tier``, ``steps``, ``forget_accuracy`` (share of forget images
        classified correctly), ``forget_confidence`` (mean logit-scaled confidence in the
        true label), ``recovery`` (the accuracy's change since step 0),
        ``excess_recovery`` (minus that of the model named ``retrained reference``, or
        of the last model, at the same tier and step), and the same two for the
        confidence (``confidence_recovery``, ``excess_confidence_recovery``).

    References
    ----------
    .. [1] MedForget: hierarchical unlearning in medical imaging, with a reconstruction
           attack that adds hierarchical context (the issue's testbed).
    .. [2] Hu S, Fu Y, Wu ZS, Smith V. Jogging the memory of unlearned LLMs through
           targeted relearning attacks. ICLR 2025.
    """
    grid = sorted({int(s) for s in steps})
    if not grid or grid[0] < 0:
        raise param_error("steps", "relearning_curve", "non-negative ints", steps)
    forget = train.subset(forget_mask)
    opts: dict[str, Any] = {
        "image_size": image_size,
        "in_channels": in_channels,
        "mean": mean,
        "std": std,
    }
    rows = []
    for tier, mask in relearning_tiers(train, forget_mask).items():
        data = train.subset(mask)
        bs = min(batch_size, len(data))
        per_epoch = max(1, len(data) // bs)
        for name, model in models.items():
            net, done = copy.deepcopy(model), 0
            for s in grid:
                if s > done:
                    train_model(
                        net,
                        data,
                        None,
                        epochs=-(-(s - done) // per_epoch),
                        max_steps=s - done,
                        batch_size=bs,
                        lr=lr,
                        seed=seed + done,
                        patience=None,
                        **opts,
                    )
                    done = s
                phi = logit_confidence(net.eval(), forget, **opts)
                rows.append(
                    {
                        "model": name,
                        "tier": tier,
                        "steps": s,
                        "forget_accuracy": float(np.mean(phi > 0)),
                        "forget_confidence": float(np.mean(phi)),
                    }
                )
    df = pd.DataFrame(rows)
    if df.empty:
        return df.assign(
            recovery=[], excess_recovery=[], confidence_recovery=[], excess_confidence_recovery=[]
        )
    ref = "retrained reference" if "retrained reference" in models else list(models)[-1]
    for col, name in (
        ("forget_accuracy", "recovery"),
        ("forget_confidence", "confidence_recovery"),
    ):
        start = df.groupby(["model", "tier"], sort=False)[col].transform("first")
        df[name] = df[col] - start
        base = df[df.model == ref][["tier", "steps", name]].rename(columns={name: "b"})
        df[f"excess_{name}"] = df[name] - df.merge(base, on=["tier", "steps"], how="left")["b"]
    return df
