"""Inputs of the group metrics: messages, label/score validation, tasks and groupings.

Everything here turns what a user passes (labels, scores, attributes, patient ids) into
arrays the estimator can use, or raises one clear :class:`InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "ALL_LABEL",
    "MISSING_LABEL",
    "MSG_EMPTY",
    "MSG_FEW_GROUPS",
    "MSG_GROUP_LENGTH",
    "MSG_LABELS",
    "MSG_LENGTH",
    "MSG_MC_LABELS",
    "MSG_NONFINITE",
    "MSG_PATIENT_LENGTH",
    "MSG_RANGE",
    "MSG_SINGLE_CLASS",
    "SKIP_CLASS",
    "SKIP_SMALL",
    "SKIP_UNDEFINED",
    "Grouping",
    "Task",
    "groupings",
    "patient_codes",
    "require_both_classes",
    "tasks",
]

# Messages, tested word for word.
MSG_LENGTH = "{func}: y_true has {n_true} rows but y_score has {n_score}; they must be row-aligned."
MSG_EMPTY = "{func}: there are no rows to audit."
MSG_NONFINITE = (
    "{func}: y_score contains {n_bad} NaN or infinite value(s) (first at row {first}); "
    "remove or impute those rows before auditing."
)
MSG_RANGE = (
    "{func}: y_score must be probabilities in [0, 1] (found min {lo:.6g}, max {hi:.6g}); "
    "apply a sigmoid or softmax to the model's outputs first."
)
MSG_LABELS = "{func}: y_true must contain only 0 and 1 for binary scores; found values {vals}."
MSG_MC_LABELS = (
    "{func}: y_true must hold class indices in [0, {k}) for scores with {k} columns; "
    "found values {vals}."
)
MSG_SINGLE_CLASS = (
    "{func}: y_true contains only {which} for class {cls!r}; AUROC, sensitivity and "
    "specificity need patients with and without the finding."
)
MSG_GROUP_LENGTH = "{func}: the sensitive attribute {name!r} has {n_g} rows but y_true has {n}."
MSG_PATIENT_LENGTH = "{func}: patient_id has {n_p} rows but y_true has {n}."
MSG_FEW_GROUPS = (
    "{func}: attribute {name!r} has fewer than two groups large enough to compare "
    "({detail}); lower min_group_size / min_class_count or pool small groups."
)

SKIP_SMALL = "n={n} < min_group_size={m}"
SKIP_CLASS = "{which}={k} < min_class_count={m}"
SKIP_UNDEFINED = "{metric} is undefined in this group ({why})"

ALL_LABEL = "(all)"
MISSING_LABEL = "(missing)"


@dataclass(frozen=True)
class Task:
    """One binary problem: a class one-vs-rest (or the binary positive class)."""

    name: str
    y: np.ndarray  # bool
    s: np.ndarray  # float64
    underdiagnosis: str  # "false_negative_rate" or "false_positive_rate" (no-finding class)


def tasks(
    y_true: ArrayLike,
    y_score: ArrayLike,
    class_names: Sequence[str] | None,
    no_finding: str | int | None,
    func: str,
) -> list[Task]:
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    if s.dtype == object or y.dtype == object:
        try:
            s = s.astype(np.float64)
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{func}: y_true and y_score must be numeric.") from None
    n = len(y)
    if len(s) != n:
        raise InvalidInputError(MSG_LENGTH.format(func=func, n_true=n, n_score=len(s)))
    if n == 0:
        raise InvalidInputError(MSG_EMPTY.format(func=func))
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        flat = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
        raise InvalidInputError(
            MSG_NONFINITE.format(func=func, n_bad=int(bad.sum()), first=int(flat[0]))
        )
    if s.min() < 0 or s.max() > 1:
        raise InvalidInputError(MSG_RANGE.format(func=func, lo=s.min(), hi=s.max()))
    if y.ndim == 2 and y.shape != s.shape:
        raise InvalidInputError(
            f"{func}: multi-label y_true of shape {y.shape} needs y_score of the same shape; "
            f"got {s.shape}."
        )
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim == 2 and s.shape[1] == 2 and y.ndim == 1:
        s = s[:, 1]  # binary model with softmax over two classes
        class_names = (
            [class_names[1]] if class_names is not None and len(class_names) == 2 else None
        )
    if s.ndim == 1:
        if y.ndim != 1:
            raise InvalidInputError(f"{func}: y_true must be 1-d for 1-d y_score; got {y.shape}.")
        if not np.all(np.isin(y, (0, 1))):
            raise InvalidInputError(
                MSG_LABELS.format(func=func, vals=_few(np.unique(y[~np.isin(y, (0, 1))])))
            )
        name = str(class_names[-1]) if class_names else "positive"
        return [Task(name, y.astype(bool), s, "false_negative_rate")]
    if s.ndim != 2:
        raise InvalidInputError(f"{func}: y_score must be 1-d or 2-d; got shape {s.shape}.")
    k = s.shape[1]
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else [f"class_{i}" for i in range(k)]
    )
    if len(names) != k:
        raise param_error("class_names", func, f"a sequence of {k} names", list(names))
    if y.ndim == 2:  # multi-label
        if not np.all(np.isin(y, (0, 1))):
            raise InvalidInputError(MSG_LABELS.format(func=func, vals=_few(np.unique(y))))
        ys = [y[:, i].astype(bool) for i in range(k)]
    else:
        if not np.all(np.isin(y, np.arange(k))):
            raise InvalidInputError(
                MSG_MC_LABELS.format(
                    func=func, k=k, vals=_few(np.unique(y[~np.isin(y, np.arange(k))]))
                )
            )
        ys = [y == i for i in range(k)]
    nf = _no_finding_index(no_finding, names)
    return [
        Task(names[i], ys[i], s[:, i], "false_positive_rate" if i == nf else "false_negative_rate")
        for i in range(k)
    ]


def _no_finding_index(no_finding: str | int | None, names: list[str]) -> int | None:
    if no_finding is None:
        for i, nm in enumerate(names):
            if nm.lower().replace("_", " ") in ("no finding", "normal", "no findings"):
                return i
        return None
    if isinstance(no_finding, (int, np.integer)):
        return int(no_finding)
    if no_finding not in names:
        raise param_error("no_finding", "group_metrics", f"one of {names}", no_finding)
    return names.index(no_finding)


def _few(vals: np.ndarray) -> str:
    v = [x.item() if hasattr(x, "item") else x for x in list(vals[:5])]
    return repr(v) + (" ..." if len(vals) > 5 else "")


@dataclass(frozen=True)
class Grouping:
    name: str
    codes: np.ndarray  # int64 (n,)
    labels: list[str]


def _group_codes(
    values: Any, name: str, n: int, *, max_levels: int, bins: int, func: str
) -> Grouping:
    if isinstance(values, pd.Series):
        ser = values.reset_index(drop=True)
    else:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise InvalidInputError(
                f"{func}: the sensitive attribute {name!r} must be 1-d; got shape {arr.shape}."
            )
        ser = pd.Series(arr)
    if len(ser) != n:
        raise InvalidInputError(MSG_GROUP_LENGTH.format(func=func, name=name, n_g=len(ser), n=n))
    missing = ser.isna().to_numpy()
    is_numeric = pd.api.types.is_numeric_dtype(ser) and not pd.api.types.is_bool_dtype(ser)
    if is_numeric and ser.nunique(dropna=True) > max_levels:
        x = ser.to_numpy(dtype=np.float64)
        ok = x[~missing]
        edges = np.unique(np.quantile(ok, np.linspace(0, 1, bins + 1)))
        codes = np.searchsorted(edges[1:-1], x, side="right").astype(np.int64)
        labels = [
            f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}"
            for i in range(len(edges) - 1)
        ]
    else:
        codes, uniques = pd.factorize(ser, sort=True, use_na_sentinel=True)
        codes = codes.astype(np.int64)
        labels = [str(u) for u in uniques]
    if missing.any():
        codes[missing] = len(labels)
        labels.append(MISSING_LABEL)
    return Grouping(name, codes, labels)


def groupings(
    groups: Any, n: int, *, intersections: bool, max_levels: int, bins: int, func: str
) -> tuple[list[Grouping], int]:
    """The attributes' groupings, then their pairwise intersections; and the attribute count."""
    if isinstance(groups, pd.DataFrame):
        items = [(str(c), groups[c]) for c in groups.columns]
    elif isinstance(groups, Mapping):
        items = [(str(k), v) for k, v in groups.items()]
    elif isinstance(groups, pd.Series):
        items = [(str(groups.name) if groups.name is not None else "group", groups)]
    else:
        arr = np.asarray(groups)
        if arr.ndim == 2:
            items = [(f"group_{i}", arr[:, i]) for i in range(arr.shape[1])]
        else:
            items = [("group", arr)]
    if not items:
        raise InvalidInputError(f"{func}: no sensitive attribute given in groups.")
    out = [_group_codes(v, k, n, max_levels=max_levels, bins=bins, func=func) for k, v in items]
    if intersections and len(out) > 1:
        inter = []
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                key = a.codes * len(b.labels) + b.codes
                uk, codes = np.unique(key, return_inverse=True)
                labels = [
                    f"{a.labels[k // len(b.labels)]} & {b.labels[k % len(b.labels)]}" for k in uk
                ]
                inter.append(Grouping(f"{a.name}&{b.name}", codes.ravel().astype(np.int64), labels))
        out += inter
    return out, len(items)


def patient_codes(patient_id: ArrayLike | None, n: int, func: str) -> np.ndarray | None:
    """Integer code of each row's patient (None without patient ids)."""
    if patient_id is None:
        return None
    pid = pd.Series(np.asarray(patient_id))
    if len(pid) != n:
        raise InvalidInputError(MSG_PATIENT_LENGTH.format(func=func, n_p=len(pid), n=n))
    return pd.factorize(pid, use_na_sentinel=False)[0].astype(np.int64)


def require_both_classes(all_tasks: list[Task], func: str) -> None:
    """Refuse a task whose labels hold one class only."""
    for t in all_tasks:
        n1 = int(t.y.sum())
        if n1 == 0 or n1 == len(t.y):
            which = "negatives" if n1 == 0 else "positives"
            raise InvalidInputError(MSG_SINGLE_CLASS.format(func=func, which=which, cls=t.name))
