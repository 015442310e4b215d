"""Attributes as the shortcut audit sees them: coded levels, controls, strata.

Any column can be examined: a categorical one (``site``, ``sex``, a nuisance flag such as
``marker``) is used as it is; a numeric one with many values (``age``) is split at its
median. The metadata control of an attribute is a design matrix of the *other* metadata
columns (one-hot categories, standardised numbers), without any column that merely
re-expresses the attribute (``age`` for ``age_group``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CodedAttribute",
    "code_attribute",
    "control_matrix",
    "determines",
    "patient_codes",
]

# A numeric column with more distinct values than this is split at its median.
MAX_NUMERIC_LEVELS = 10
# Identifier-like columns never used as a control.
_NEVER_CONTROL = ("path", "patient_id", "study_id", "split")


@dataclass(frozen=True)
class CodedAttribute:
    """An attribute column coded as levels 0..L-1.

    Attributes
    ----------
    name : str
        The column.
    codes : ndarray of int of shape (n_samples,)
        Level of each sample; -1 where the value is missing.
    levels : tuple of str
        Name of each level (``"age >= 57"`` for a numeric column split at its median).
    split_at : float or None
        The median a numeric column was split at.
    """

    name: str
    codes: np.ndarray
    levels: tuple[str, ...]
    split_at: float | None = None

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.levels)

    def counts(self) -> np.ndarray:
        """Samples per level."""
        return np.bincount(self.codes[self.codes >= 0], minlength=self.n_levels)


def code_attribute(meta: pd.DataFrame, name: str) -> CodedAttribute:
    """Levels of column ``name`` of ``meta``.

    Examples
    --------
    >>> a = code_attribute(pd.DataFrame({"site": ["b", "a", "b", None]}), "site")
    >>> a.levels, a.codes.tolist()
    (('a', 'b'), [1, 0, 1, -1])
    >>> code_attribute(pd.DataFrame({"age": np.arange(20)}), "age").levels
    ('age < 9.5', 'age >= 9.5')
    """
    col = meta[name]
    missing = col.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        vals = col.to_numpy(dtype=np.float64)
        if np.unique(vals[~missing]).size > MAX_NUMERIC_LEVELS:
            med = float(np.median(vals[~missing]))
            codes = np.where(missing, -1, (vals >= med).astype(np.int64))
            return CodedAttribute(name, codes, (f"{name} < {med:g}", f"{name} >= {med:g}"), med)
    text = col.astype(str).to_numpy()
    uniq = np.unique(text[~missing])
    codes = np.full(len(col), -1, dtype=np.int64)
    codes[~missing] = np.searchsorted(uniq, text[~missing])
    return CodedAttribute(name, codes, tuple(str(u) for u in uniq))


def patient_codes(meta: pd.DataFrame) -> np.ndarray:
    """Cluster code of each image: its patient (each image its own without patient ids)."""
    from medaudit.shortcuts._clustered import cluster_codes

    if "patient_id" in meta.columns:
        return cluster_codes(meta["patient_id"].to_numpy(), len(meta))
    return np.arange(len(meta))


def determines(meta: pd.DataFrame, column: str, attribute: str) -> bool:
    """True when ``column`` re-expresses ``attribute``: either one fixes the other.

    A column with about as many distinct values as rows would "determine" anything and is
    not counted.

    Examples
    --------
    >>> df = pd.DataFrame({"age": [20, 30, 70, 80] * 2, "old": [0, 0, 1, 1] * 2,
    ...                    "sex": ["f", "m", "f", "m", "m", "f", "f", "m"]})
    >>> determines(df, "age", "old"), determines(df, "sex", "old")
    (True, False)
    """
    ok = meta[column].notna().to_numpy() & meta[attribute].notna().to_numpy()
    if not ok.any():
        return False
    a = pd.factorize(meta[column].to_numpy()[ok])[0]
    b = pd.factorize(meta[attribute].to_numpy()[ok])[0]
    n_a, n_b = a.max() + 1, b.max() + 1
    if n_a > ok.sum() / 2:
        return False
    n_pairs = np.unique(a * n_b + b).size
    # Each value of one maps to a single value of the other: as many pairs as values.
    return bool(n_pairs in (n_a, n_b))


def control_matrix(meta: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Design matrix of metadata columns: one-hot categories and standardised numbers.

    Missing numbers are set to the column mean with a missing-indicator column; a
    missing category is its own level.

    Returns
    -------
    X : ndarray of shape (n_samples, n_columns)
    used : list of str
        The columns that entered (constant ones are left out).
    """
    blocks, used = [], []
    for name in columns:
        if name in _NEVER_CONTROL or name not in meta.columns:
            continue
        col = meta[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            v = col.to_numpy(dtype=np.float64)
            miss = ~np.isfinite(v)
            if np.unique(v[~miss]).size < 2:
                continue
            v = np.where(miss, np.nanmean(np.where(miss, np.nan, v)), v)
            block = [(v - v.mean()) / v.std()]
            if miss.any():
                block.append(miss.astype(np.float64))
            blocks.append(np.stack(block, axis=1))
        else:
            dummies = pd.get_dummies(col.astype(str).fillna("<missing>"), dtype=np.float64)
            if dummies.shape[1] < 2:
                continue
            blocks.append(dummies.to_numpy()[:, 1:])  # drop one level: no collinearity
        used.append(name)
    if not blocks:
        return np.zeros((len(meta), 0)), []
    return np.concatenate(blocks, axis=1), used
