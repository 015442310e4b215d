"""The audited sets: overlap checks, the population fallback, pools and row indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError

__all__ = [
    "MSG_SHARED_PATIENTS",
    "AuditedSets",
    "check_disjoint",
    "concat_cohorts",
    "manifest_rows",
    "patient_units",
    "split_by_patient",
]

MSG_SHARED_PATIENTS = (
    "{n} patient(s) appear among both the {a} and the {b}; a membership attack on them "
    "would look stronger than it is. Give sets with no patient in common (the integrity "
    "audit lists them: medaudit audit --audits integrity --train-data ...)."
)
MSG_EMPTY = "The {what} set is empty; a membership audit needs {need}."
MSG_TOO_FEW_FOR_FALLBACK = (
    "No population data was given and the {n} non-member image(s) are too few to hold "
    "part of them out as population; give --population (data from the same source that "
    "neither model trained on)."
)


def patient_units(cohort: Any, prefix: str = "") -> np.ndarray:
    """Patient of each image as strings (each image its own unit without ``patient_id``)."""
    if "patient_id" in cohort.meta.columns:
        return np.asarray([f"{prefix}{p}" for p in cohort.meta["patient_id"].astype(str)])
    return np.asarray([f"{prefix}#{i}" for i in range(len(cohort))])


def check_disjoint(a: Any, b: Any, name_a: str, name_b: str) -> bool:
    """Raise when two cohorts share patients; False when they have no ``patient_id``."""
    if "patient_id" not in a.meta.columns or "patient_id" not in b.meta.columns:
        return False
    shared = set(a.meta["patient_id"].astype(str)) & set(b.meta["patient_id"].astype(str))
    if shared:
        raise InvalidInputError(MSG_SHARED_PATIENTS.format(n=len(shared), a=name_a, b=name_b))
    return True


def split_by_patient(cohort: Any, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (kept, held out): ``fraction`` of the patients held out at random."""
    units = patient_units(cohort)
    uniq = np.unique(units)
    rng = np.random.default_rng(seed)
    n_out = int(round(fraction * len(uniq)))
    n_out = min(max(n_out, 1), len(uniq) - 1) if len(uniq) > 1 else 0
    out_units = rng.permutation(uniq)[:n_out]
    held = np.isin(units, out_units)
    return ~held, held


def manifest_rows(cohort: Any) -> np.ndarray:
    """0-based manifest row of each image (skipping rows dropped as unreadable).

    For a cohort not read from a manifest (or a subset of one), the position in it.
    """
    n = len(cohort)
    dropped = getattr(cohort, "dropped", None)
    if dropped is not None and "row" in dropped.columns and len(dropped):
        rows = pd.to_numeric(dropped["row"], errors="coerce").dropna().astype(int).to_numpy()
        kept = np.setdiff1d(np.arange(n + len(rows)), rows)
        if len(kept) == n:
            return kept
    return np.arange(n)


def concat_cohorts(cohorts: list[Any], *, image_size: int | None, channels: int | None) -> Any:
    """One in-memory cohort of several (images decoded at the training size if needed)."""
    from medaudit.data import Cohort

    metas, images = [], []
    for c in cohorts:
        metas.append(c.meta.drop(columns=["path"], errors="ignore"))
        if c.images is not None and image_size is None and channels is None:
            arr = c.images.astype(np.float32) / 255.0 if c.images.dtype == np.uint8 else c.images
            images.append(np.asarray(arr, dtype=np.float32))
        else:
            images.append(c.load_all(image_size=image_size, channels=channels))
    shapes = {im.shape[1:] for im in images}
    if len(shapes) > 1:
        images = [
            c.load_all(image_size=image_size or _side(cohorts), channels=channels) for c in cohorts
        ]
    return Cohort(
        pd.concat(metas, ignore_index=True),
        images=np.concatenate(images),
        class_names=cohorts[0].class_names,
        name="+".join(c.name for c in cohorts),
    )


def _side(cohorts: list[Any]) -> int:
    return int(cohorts[0].image_shape[1])


@dataclass(frozen=True)
class AuditedSets:
    """Members, non-members and population as the attacks use them.

    Attributes
    ----------
    members, non_members : Cohort
        After subsampling to at most ``max_samples`` each.
    pool : Cohort
        Population images reference models may train on.
    z : Cohort
        Population images no model trains on (RMIA's comparison samples).
    member_rows, non_member_rows : ndarray
        Manifest row of each member / non-member.
    population_source : str
        Where the population came from, in words.
    patients_checked : bool
        Whether shared patients could be checked (both sets have ``patient_id``).
    """

    members: Any
    non_members: Any
    pool: Any
    z: Any
    member_rows: np.ndarray
    non_member_rows: np.ndarray
    population_source: str
    patients_checked: bool


def _subsample(cohort: Any, rows: np.ndarray, max_n: int, seed: int) -> tuple[Any, np.ndarray]:
    if len(cohort) <= max_n:
        return cohort, rows
    keep = np.sort(np.random.default_rng(seed).choice(len(cohort), max_n, replace=False))
    return cohort.subset(keep), rows[keep]


def prepare_sets(
    members: Any,
    non_members: Any,
    population: Any | None,
    *,
    population_fraction: float,
    z_fraction: float,
    max_samples: int,
    seed: int,
) -> AuditedSets:
    """Check the sets, hold out a population if none is given, and split it.

    Raises when members and non-members (or the population and either) share a patient.
    """
    for c, what, need in (
        (members, "members", "images the model trained on"),
        (non_members, "non-members", "images the model never saw"),
    ):
        if len(c) == 0:
            raise InvalidInputError(MSG_EMPTY.format(what=what, need=need))
    checked = check_disjoint(members, non_members, "members", "non-members")
    m_rows, n_rows = manifest_rows(members), manifest_rows(non_members)
    if population is None:
        if len(np.unique(patient_units(non_members))) < 4:
            raise InvalidInputError(MSG_TOO_FEW_FOR_FALLBACK.format(n=len(non_members)))
        kept, held = split_by_patient(non_members, population_fraction, seed)
        population = non_members.subset(held, name="population (held-out non-members)")
        non_members, n_rows = non_members.subset(kept), n_rows[kept]
        source = (
            f"no population was given: {held.sum()} of the non-member images "
            f"({population_fraction:.0%} of their patients, chosen at random) were held out "
            "as population and are not scored"
        )
    else:
        check_disjoint(population, members, "population", "members")
        check_disjoint(population, non_members, "population", "non-members")
        source = f"the given population data ({len(population)} images)"
    members, m_rows = _subsample(members, m_rows, max_samples, seed)
    non_members, n_rows = _subsample(non_members, n_rows, max_samples, seed + 1)
    pool_mask, z_mask = split_by_patient(population, z_fraction, seed + 2)
    return AuditedSets(
        members=members,
        non_members=non_members,
        pool=population.subset(pool_mask, name="population: reference training"),
        z=population.subset(z_mask, name="population: comparison samples"),
        member_rows=m_rows,
        non_member_rows=n_rows,
        population_source=source,
        patients_checked=checked,
    )
