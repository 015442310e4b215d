"""Read a predictions table (CSV or Parquet) for the predictions-only audit.

Columns: ``label``; ``score`` (binary) or ``score_<class>`` (one per class); any
attribute columns; optional ``patient_id``. Strings become categoricals and scores
float64, so ten million rows fit comfortably in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError
from medaudit.data._columns import ColumnMap
from medaudit.inference import Predictions

__all__ = ["predictions_from_frame", "read_predictions"]

MSG_EMPTY = "Predictions file {path} is empty (no header or no rows)."
MSG_NO_LABEL = "Predictions file {path} has no 'label' column (columns: {cols})."
MSG_NO_SCORE = (
    "Predictions file {path} has no 'score' column and no 'score_<class>' columns "
    "(columns: {cols})."
)
MSG_BAD_SCORE = "Column {col!r} of {path} is not numeric (e.g. {example!r})."
MSG_NAN_SCORE = (
    "Column {col!r} of {path} has {n} missing or infinite value(s) (first at data row "
    "{row}); remove those rows or fix the export."
)
MSG_NAN_LABEL = "Column 'label' of {path} has {n} missing value(s) (first at data row {row})."
MSG_LABEL_VALUES = "Column 'label' of {path} must hold {expected}; found {found}."


def read_predictions(
    path: str | os.PathLike[str], *, columns: ColumnMap | None = None
) -> Predictions:
    """Read a predictions CSV / Parquet file into :class:`~medaudit.inference.Predictions`.

    Parameters
    ----------
    path : path
        ``.csv`` (read with pyarrow, multithreaded) or ``.parquet``.
    columns : ColumnMap, optional
        The table's own names for the label, score(s) and patient columns, and its
        positive label (see :func:`predictions_from_frame`).

    Returns
    -------
    Predictions
        ``features`` is None; ``loss`` is the per-row cross-entropy of the given scores.

    Raises
    ------
    InvalidInputError
        Missing file, empty file, no ``label`` / score column, non-numeric, missing or
        infinite scores, labels that do not match the score columns.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"Predictions file not found: {p}")
    if p.stat().st_size == 0:
        raise InvalidInputError(MSG_EMPTY.format(path=p))
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InvalidInputError(f"Cannot read {p} as Parquet: {exc}") from None
    else:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            tbl = pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
            msg = str(exc).splitlines()[0]
            if "Empty CSV" in msg:
                raise InvalidInputError(MSG_EMPTY.format(path=p)) from None
            raise InvalidInputError(f"Cannot read {p} as CSV: {msg}") from None
        # Strings as categoricals: ten million 'F'/'M' cells as codes, not Python objects.
        cols = []
        for i, f in enumerate(tbl.schema):
            col = tbl.column(i)
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                col = col.dictionary_encode()
            cols.append(col)
        tbl = pa.table(cols, names=tbl.column_names)
        df = tbl.to_pandas()
    return predictions_from_frame(df, source=str(p), columns=columns)


_FLAGS = {
    "label": "label-column",
    "patient": "patient-column",
    "score": "score-column / --score-columns",
}


def _map_columns(df: pd.DataFrame, cmap: ColumnMap, source: str) -> pd.DataFrame:
    """The user's names → ``label``, ``score`` / ``score_<class>``, ``patient_id``."""
    df = cmap.rename(df, f"Predictions file {source}", flag_of=_FLAGS)
    if len(cmap.scores) == 1 and cmap.scores[0] != "score":
        df = df.drop(columns=[c for c in df.columns if c == "score"]).rename(
            columns={cmap.scores[0]: "score"}
        )
    elif len(cmap.scores) > 1:
        keep = [c for c in df.columns if not str(c).startswith("score") or c in cmap.scores]
        names = {s: s if s.startswith("score_") else f"score_{s}" for s in cmap.scores}
        df = df[keep].rename(columns=names)
    if cmap.positive_label is not None:
        res = cmap.resolve_labels(df["label"], f"predictions file {source}")
        df = df.assign(label=res.labels.to_numpy())
    return df


def predictions_from_frame(
    df: pd.DataFrame, *, source: str = "frame", columns: ColumnMap | None = None
) -> Predictions:
    """Build :class:`Predictions` from a table with ``label`` and score columns.

    ``columns`` maps the table's own names (``y_true``, ``prob``, ``Patient``) to
    medaudit's and names the positive label (``"yes"``: every other value is negative).
    """
    if len(df) == 0:
        raise InvalidInputError(MSG_EMPTY.format(path=source))
    if columns is not None and not columns.is_default:
        df = _map_columns(df, columns, source)
    cols = [str(c) for c in df.columns]
    if "label" not in df.columns:
        raise InvalidInputError(MSG_NO_LABEL.format(path=source, cols=", ".join(cols)))
    score_cols = [c for c in cols if c.startswith("score_")]
    if "score" in df.columns:
        score_cols = ["score"]
    if not score_cols:
        raise InvalidInputError(MSG_NO_SCORE.format(path=source, cols=", ".join(cols)))
    arrays = []
    for c in score_cols:
        col = df[c]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            example = next((v for v in col.astype(str) if v), "")
            raise InvalidInputError(MSG_BAD_SCORE.format(col=c, path=source, example=example))
        a = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(a)
        if bad.any():
            raise InvalidInputError(
                MSG_NAN_SCORE.format(
                    col=c, path=source, n=int(bad.sum()), row=int(np.argmax(bad)) + 1
                )
            )
        arrays.append(a)
    lab = df["label"]
    if lab.isna().any():
        miss = lab.isna().to_numpy()
        raise InvalidInputError(
            MSG_NAN_LABEL.format(path=source, n=int(miss.sum()), row=int(np.argmax(miss)) + 1)
        )
    if score_cols == ["score"]:
        class_names = ["negative", "positive"]
        s = arrays[0]
        scores = np.column_stack([1.0 - s, s])
        labels = _labels(lab, ["0", "1"], {"negative": 0, "positive": 1}, source, "0 or 1")
    else:
        class_names = [c[len("score_") :] for c in score_cols]
        scores = np.column_stack(arrays)
        labels = _labels(
            lab,
            [str(i) for i in range(len(class_names))],
            {n: i for i, n in enumerate(class_names)},
            source,
            f"class indices 0..{len(class_names) - 1} or the names {class_names}",
        )
    k = scores.shape[1]
    with np.errstate(divide="ignore"):
        loss = (
            -np.log(np.clip(scores[np.arange(len(labels)), labels], 1e-12, 1.0))
            if k > 1
            else np.zeros(len(labels))
        )
    reserved = {"label", *score_cols}
    meta = df[[c for c in df.columns if c not in reserved]].reset_index(drop=True)
    return Predictions(
        scores=scores, labels=labels, loss=loss, features=None, meta=meta, class_names=class_names
    )


def _labels(
    lab: pd.Series, index_names: list[str], by_name: dict[str, int], source: str, expected: str
) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(lab) and not pd.api.types.is_bool_dtype(lab):
        v = lab.to_numpy()
        ok = np.isin(v, np.arange(len(index_names)))
        if not ok.all():
            found = sorted({x.item() for x in np.unique(v[~ok])[:5]})
            raise InvalidInputError(
                MSG_LABEL_VALUES.format(path=source, expected=expected, found=found)
            )
        return v.astype(np.int64)
    if pd.api.types.is_bool_dtype(lab) and len(index_names) == 2:
        return lab.to_numpy().astype(np.int64)
    s = lab.astype(str)
    cats = pd.Categorical(s)
    mapping = {}
    for c in cats.categories:
        if c in by_name:
            mapping[c] = by_name[c]
        elif c in index_names:
            mapping[c] = index_names.index(c)
        else:
            raise InvalidInputError(
                MSG_LABEL_VALUES.format(path=source, expected=expected, found=[c])
            )
    lut = np.array([mapping[c] for c in cats.categories], dtype=np.int64)
    return lut[cats.codes]
