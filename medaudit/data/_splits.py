"""Patient-grouped, label-stratified train/val/test splits.

A patient's images must never sit in two splits: a model would otherwise be scored on
images of people it was trained on, and every audit downstream would be optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error

__all__ = ["patient_split"]


def _check_fractions(fractions: object, func: str, name: str = "fractions") -> tuple[float, ...]:
    """Validate split fractions: non-negative finite numbers summing to 1, at least one > 0."""
    expected = "a sequence of non-negative numbers that sum to 1"
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise param_error(name, func, expected, fractions)
    if len(fractions) == 0:
        raise param_error(name, func, expected, fractions)
    out = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)):
            raise param_error(name, func, expected, fractions)
        f = float(f)
        if not math.isfinite(f) or f < 0:
            raise param_error(name, func, expected, fractions)
        out.append(f)
    if abs(sum(out) - 1.0) > 1e-6:
        raise param_error(name, func, expected, fractions)
    return tuple(out)


def _patient_keys(meta: pd.DataFrame) -> np.ndarray:
    """One group key per row: the patient id, or a unique key where it is missing."""
    n = len(meta)
    own = np.array([f"\x00row{i}" for i in range(n)], dtype=object)
    if "patient_id" not in meta.columns:
        return own
    pid = meta["patient_id"]
    missing = pid.isna().to_numpy()
    keys = pid.astype(str).to_numpy(dtype=object)
    keys[missing] = own[missing]
    return keys


def _patient_strata(values: pd.Series, inverse: np.ndarray, n_patients: int) -> np.ndarray:
    """Stratum of each patient: max value (numeric), else the most frequent value."""
    frame = pd.DataFrame({"p": inverse, "v": values.to_numpy()})
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        per = frame.groupby("p")["v"].max()
    else:
        # Most frequent value of the patient; ties go to the smallest as a string.
        frame["v"] = values.astype(str).where(values.notna(), "\x00missing").to_numpy()
        counts = frame.groupby(["p", "v"]).size().reset_index(name="n")
        counts = counts.sort_values(["p", "n", "v"], ascending=[True, False, True])
        per = counts.drop_duplicates("p").set_index("p")["v"]
    strata = per.reindex(range(n_patients)).to_numpy(dtype=object)
    strata[pd.isna(strata)] = "\x00missing"
    return np.array([str(s) for s in strata], dtype=object)


def _allocate(sizes: list[int], fractions: tuple[float, ...]) -> list[list[int]]:
    """Split each stratum's size into per-split counts that track the global fractions.

    Every patient goes to the split whose running deficit (target minus assigned, summed
    over the strata seen so far) is largest, so rounding errors do not pile up in one
    split when there are many small strata.
    """
    k = len(fractions)
    assigned = [0] * k
    total = 0
    out = []
    for n_s in sizes:
        total += n_s
        counts = [0] * k
        for _ in range(n_s):
            deficits = [total * fractions[j] - assigned[j] - counts[j] for j in range(k)]
            j_best = max(range(k), key=lambda j: (deficits[j], -j))
            counts[j_best] += 1
        assigned = [a + c for a, c in zip(assigned, counts, strict=True)]
        out.append(counts)
    return out


def patient_split(
    meta: pd.DataFrame,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    names: Sequence[str] = ("train", "val", "test"),
    stratify: str | None = "label",
    random_state: int = 0,
) -> np.ndarray:
    """Assign every row to a split so that no patient appears in two splits.

    Patients (rows sharing a ``patient_id``) are shuffled and dealt to the splits in
    proportion to ``fractions`` within each stratum. A patient's stratum is the maximum
    of the ``stratify`` column over its rows (for a label: "ever diseased"), or its most
    frequent value when the column is not numeric. Rows without a ``patient_id`` (the
    column missing, or a missing value) are each their own patient.

    Parameters
    ----------
    meta : DataFrame of shape (n_rows, n_columns)
        Metadata, one row per image; ``patient_id`` is used when present.
    fractions : sequence of float
        Share of *patients* per split; non-negative and summing to 1.
    names : sequence of str
        Split names, one per fraction.
    stratify : str or None
        Column to stratify on (per patient), or None for no stratification.
    random_state : int
        Seed of the shuffle; the same inputs and seed give the same splits.

    Returns
    -------
    ndarray of shape (n_rows,), dtype object
        The split name of every row, aligned with ``meta``'s rows.

    Examples
    --------
    >>> import pandas as pd
    >>> meta = pd.DataFrame({"patient_id": ["a", "a", "b", "c", "d"], "label": [0, 1, 0, 1, 0]})
    >>> s = patient_split(meta, fractions=(0.5, 0.5), names=("train", "test"))
    >>> bool(s[0] == s[1])  # both images of patient "a" land in the same split
    True
    >>> sorted(set(s))
    ['test', 'train']
    """
    func = "patient_split"
    if not isinstance(meta, pd.DataFrame):
        raise param_error("meta", func, "a pandas DataFrame", type(meta).__name__)
    fr = _check_fractions(fractions, func)
    if (
        isinstance(names, (str, bytes))
        or not isinstance(names, Sequence)
        or len(names) != len(fr)
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise param_error(
            "names", func, f"{len(fr)} distinct non-empty strings (one per fraction)", names
        )
    if stratify is not None and not isinstance(stratify, str):
        raise param_error("stratify", func, "a column name or None", stratify)
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise param_error("random_state", func, "an int", random_state)
    if stratify is not None and stratify not in meta.columns:
        raise InvalidInputError(
            f"patient_split: cannot stratify on {stratify!r}: the metadata has no such column "
            f"(columns: {', '.join(map(str, meta.columns))})."
        )

    n = len(meta)
    if n == 0:
        return np.empty(0, dtype=object)
    keys = _patient_keys(meta)
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    n_patients = len(uniq)
    if stratify is None:
        strata = np.full(n_patients, "all", dtype=object)
    else:
        strata = _patient_strata(meta[stratify], inverse, n_patients)

    rng = np.random.default_rng(int(random_state))
    order = rng.permutation(n_patients)
    stratum_names = sorted(set(strata.tolist()))
    members = [order[strata[order] == s] for s in stratum_names]
    counts = _allocate([len(m) for m in members], fr)

    patient_split_idx = np.empty(n_patients, dtype=np.int64)
    for m, c in zip(members, counts, strict=True):
        patient_split_idx[m] = np.repeat(np.arange(len(fr)), c)
    return np.asarray(names, dtype=object)[patient_split_idx[inverse]]
