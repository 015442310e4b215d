"""Readers: one image file → float32 (C, H, W) in [0, 1]; a manifest or ``.npz`` → Cohort.

Image formats
-------------
* PNG / JPEG / TIFF through Pillow: 8-bit values are divided by 255, 16-bit by 65535;
  RGB stays three channels, RGBA drops its alpha, a palette image becomes grayscale
  (``L``) when its palette is gray and RGB otherwise, 32-bit float TIFFs must already
  lie in [0, 1].
* DICOM (``.dcm``) through pydicom: ``RescaleSlope``/``RescaleIntercept`` are applied,
  ``MONOCHROME1`` is inverted (so bright always means dense), then each image is
  min-max scaled to [0, 1]. Min-max scaling is a choice: DICOM files from different
  scanners store different bit depths and value ranges, and a classifier needs one
  range; the price is that absolute values (Hounsfield units) are not kept, and a
  constant image becomes all zeros.
* NumPy ``.npy``: 2-D, (C, H, W) or (H, W, C) with C in {1, 3} (channels first wins
  when both readings are possible); uint8 and uint16 are scaled like PNG, floats must
  already lie in [0, 1] and be finite.

Manifests
---------
CSV or Parquet with ``path`` (relative to the manifest's folder) and ``label``; optional
``patient_id``, ``study_id``, ``site``, ``split`` and attribute columns. With
``check_files=True`` every image is decoded once; files that are missing or cannot be
decoded are left out of the cohort and listed in ``cohort.dropped`` (columns ``row``,
``path``, ``label``, ``reason``, ``detail``) so that the integrity audit reports them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.data._cohort import Cohort
from medaudit.data._columns import (
    REASON_NO_LABEL,
    REASON_UNCERTAIN,
    ColumnMap,
    map_labels,
    uncertain_cohort,
)
from medaudit.data._images import (
    IMAGE_SUFFIXES,
    REASON_MISSING_FILE,
    REASON_UNREADABLE,
    _check_all,
    read_image,
)

__all__ = [
    "DROPPED_COLUMNS",
    "IMAGE_SUFFIXES",
    "MANIFEST_SUFFIXES",
    "REASON_INVALID_LABEL",
    "REASON_MISSING_FILE",
    "REASON_NO_LABEL",
    "REASON_NO_PATH",
    "REASON_UNCERTAIN",
    "REASON_UNREADABLE",
    "load_cohort",
    "load_manifest",
    "load_npz",
    "read_image",
]


MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")

# Reasons recorded in ``Cohort.dropped``; the integrity audit groups by them.
REASON_NO_PATH = "no path given"
REASON_INVALID_LABEL = "label outside declared classes"
DROPPED_COLUMNS: tuple[str, ...] = ("row", "path", "label", "reason", "detail")

# Messages, tested word for word.
MSG_MANIFEST_NOT_FOUND = "Manifest not found: {path}"
MSG_MANIFEST_EMPTY = "Manifest {path} is empty: it has no rows."
MSG_MANIFEST_COLUMNS = (
    "Manifest {path} lacks the required column(s) {missing}; it needs 'path' (image file "
    "relative to the manifest's folder) and 'label' (found columns: {found})."
)
MSG_NAN_LABELS = (
    "Manifest {path} has {n} row(s) with no label (first rows: {rows}); "
    "give every image a label or remove those rows."
)
MSG_NPZ_COLUMNS = (
    "{path} is a MedMNIST-style .npz: it has no columns to map (--label-column, "
    "--uncertain-label and the like apply to CSV/Parquet manifests)."
)
MSG_NO_DEFINITE = "Manifest {path} has no row with a definite label in column {col!r}."
MSG_NOTHING_READABLE = (
    "None of the {n} image(s) listed in {path} could be used ({counts}); first problem: {first}."
)
MSG_PICKLED = (
    "{path} holds pickled object arrays; medaudit does not unpickle data (it could run "
    "code). Save plain numeric arrays (np.savez with uint8 images and integer labels)."
)
MSG_UNSUPPORTED_DATA = (
    "Unsupported data file {path}: expected a manifest ({manifests}) or a MedMNIST-style .npz."
)


# -- manifests -----------------------------------------------------------------------------


def _validate_class_names(class_names: Any, func: str) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise param_error("class_names", func, "a sequence of str or None", class_names)
    names = list(class_names)
    if not names or not all(isinstance(c, str) and c for c in names):
        raise param_error("class_names", func, "a non-empty sequence of non-empty str", names)
    if len(set(names)) != len(names):
        raise param_error("class_names", func, "a sequence of distinct names", names)
    return names


def _read_table(p: Path) -> pd.DataFrame:
    suffix = p.suffix.lower()
    text_cols = dict.fromkeys(("path", "patient_id", "study_id", "site", "split"), str)
    try:
        if suffix == ".csv":
            # utf-8-sig: spreadsheet programs often start a CSV with a byte order mark.
            df = pd.read_csv(p, dtype=text_cols, encoding="utf-8-sig")
        else:
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise InvalidInputError(MSG_MANIFEST_EMPTY.format(path=p)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise InvalidInputError(
            f"Manifest {p} is not a valid {kind} file: {type(exc).__name__}: {exc}"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _encode_labels(
    raw: pd.Series, class_names: list[str] | None, p: Path
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Labels → (int codes, valid mask, class names or None).

    Integer labels are class indices; string labels are class names. A label outside the
    declared classes is marked invalid (never mapped to a neighbour).
    """
    missing = raw.isna().to_numpy()
    if raw.dtype.kind in "OSU" or pd.api.types.is_string_dtype(raw.dtype):
        text = raw.astype(object).where(~missing, None)
        stripped = np.array([s.strip() if isinstance(s, str) else s for s in text], dtype=object)
        blank = np.array([isinstance(s, str) and not s for s in stripped])
        missing = missing | blank
    if missing.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(missing)[:10])
        raise InvalidInputError(MSG_NAN_LABELS.format(path=p, n=int(missing.sum()), rows=rows))
    if pd.api.types.is_bool_dtype(raw.dtype):
        raw = raw.astype(np.int64)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        v = raw.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
            bad = np.flatnonzero(~np.isfinite(v) | (v != np.round(v)))
            raise InvalidInputError(
                f"Manifest {p} has {len(bad)} numeric label(s) that are not whole class "
                f"indices (first rows: {', '.join(map(str, bad[:10]))})."
            )
        codes = v.astype(np.int64)
        n_classes = len(class_names) if class_names is not None else None
        valid = codes >= 0
        if n_classes is not None:
            valid &= codes < n_classes
        return codes, valid, class_names
    names = np.array([str(s).strip() for s in raw.astype(object)], dtype=object)
    if class_names is None:
        class_names = sorted(set(names.tolist()))
    index = {c: i for i, c in enumerate(class_names)}
    codes = np.array([index.get(s, -1) for s in names], dtype=np.int64)
    return codes, codes >= 0, class_names


def load_manifest(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    check_files: bool = True,
    progress: bool = False,
    columns: ColumnMap | None = None,
) -> Cohort:
    """Read a CSV or Parquet manifest into a :class:`~medaudit.data.Cohort`.

    Parameters
    ----------
    path : str or path-like
        The manifest (``.csv``, ``.parquet`` or ``.pq``). Required columns: ``path``
        (image file, relative to the manifest's folder unless absolute) and ``label``
        (integer class index or class name). Optional: ``patient_id``, ``study_id``,
        ``site``, ``split`` and any attribute columns.
    class_names : sequence of str, optional
        The declared classes. String labels map to their position here; integer labels
        must lie in ``range(len(class_names))``. Default: the sorted distinct string
        labels, or ``Cohort``'s default names for integer labels.
    check_files : bool, default True
        Decode every image once. Missing or unreadable files are left out of the cohort
        and listed in ``cohort.dropped``; the audit goes on without them.
    progress : bool, default False
        Show a progress bar while checking files.
    columns : ColumnMap, optional
        The user's column names, positive label and uncertain-label policy. With a
        mapped label column or an uncertain label, blank labels are missing: those rows
        are left out (reason ``no label``), as are uncertain ones under ``ignore``; the
        cohort then has a boolean ``label_uncertain`` column and ``cohort.uncertain``
        holds every uncertain row (for the label-uncertainty audit).

    Returns
    -------
    Cohort
        Images on disk (read lazily), ``label`` as integer codes, ``class_names`` set,
        ``dropped`` listing every row left out (columns ``row`` — the 0-based manifest
        row —, ``path``, ``label``, ``reason``, ``detail``).

    Raises
    ------
    InvalidInputError
        The manifest is missing, empty, unparsable or lacks ``path``/``label``; a label
        is missing (NaN); or no listed image can be used.

    Examples
    --------
    >>> import numpy as np, pandas as pd, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(d / "a.npy", np.zeros((4, 4), np.uint8))
    >>> pd.DataFrame({"path": ["a.npy", "gone.npy"], "label": ["flu", "ok"]}).to_csv(
    ...     d / "m.csv", index=False)
    >>> c = load_manifest(d / "m.csv")
    >>> len(c), c.class_names, c.dropped["reason"].tolist()
    (1, ['flu', 'ok'], ['file not found'])
    """
    names = _validate_class_names(class_names, "load_manifest")
    if not isinstance(check_files, bool):
        raise param_error("check_files", "load_manifest", "a bool", check_files)
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(MSG_MANIFEST_NOT_FOUND.format(path=p))
    if p.suffix.lower() not in MANIFEST_SUFFIXES:
        raise InvalidInputError(
            f"Manifest {p} must be a CSV or Parquet file ({', '.join(MANIFEST_SUFFIXES)})."
        )
    df = _read_table(p)
    cmap = columns or ColumnMap()
    df = cmap.rename(df, f"Manifest {p}", flag_of=_MANIFEST_FLAGS)
    if "patient_id" in df.columns:
        df["patient_id"] = df["patient_id"].astype(str)
    missing_cols = [c for c in ("path", "label") if c not in df.columns]
    if missing_cols:
        raise InvalidInputError(
            MSG_MANIFEST_COLUMNS.format(
                path=p,
                missing=", ".join(repr(c) for c in missing_cols),
                found=", ".join(map(str, df.columns)) or "none",
            )
        )
    if len(df) == 0:
        raise InvalidInputError(MSG_MANIFEST_EMPTY.format(path=p))
    df = df.reset_index(drop=True)
    problems: dict[int, tuple[str, str]] = {}
    uncertain_rows = None
    if not cmap.is_default and (
        "label" in cmap.given or cmap.uncertain_label is not None or cmap.positive_label is not None
    ):
        df, problems, uncertain_rows = map_labels(df, cmap, p)
    raw_labels = df["label"].astype(str).to_numpy()
    ok = ~df.index.isin(list(problems))
    if not ok.any():
        raise InvalidInputError(MSG_NO_DEFINITE.format(path=p, col=cmap.label))
    filler = df["label"][ok].iloc[0]  # a real label: keeps the column's type
    codes, valid, names = _encode_labels(df["label"].where(ok, filler), names, p)

    root = p.parent
    path_text = df["path"].astype(object).where(df["path"].notna(), None)
    rel = [s.strip() if isinstance(s, str) else None for s in path_text]
    declared = names if names is not None else "non-negative class indices"
    for bad in np.flatnonzero(~valid).tolist():
        if bad in problems:
            continue
        problems[bad] = (REASON_INVALID_LABEL, f"label {raw_labels[bad]!r}; declared: {declared}")
    to_check: list[int] = []
    for row, r in enumerate(rel):
        if row in problems and problems[row][0] != REASON_UNCERTAIN:
            continue
        if not r:
            problems[row] = (REASON_NO_PATH, "the 'path' cell is empty")
        else:
            to_check.append(row)
    if check_files and to_check:
        files = [_resolve(root, str(rel[row])) for row in to_check]
        for row, res in zip(to_check, _check_all(files, progress=progress), strict=True):
            if res is not None:
                problems[row] = res

    keep = np.ones(len(df), dtype=bool)
    keep[list(problems)] = False
    dropped = pd.DataFrame(
        {
            "row": np.array(sorted(problems), dtype=np.int64),
            "path": [rel[i] for i in sorted(problems)],
            "label": [raw_labels[i] for i in sorted(problems)],
            "reason": [problems[i][0] for i in sorted(problems)],
            "detail": [problems[i][1] for i in sorted(problems)],
        },
        columns=list(DROPPED_COLUMNS),
    )
    if not keep.any():
        counts = dropped["reason"].value_counts()
        raise InvalidInputError(
            MSG_NOTHING_READABLE.format(
                n=len(df),
                path=p,
                counts=", ".join(f"{n} {reason}" for reason, n in counts.items()),
                first=f"row {dropped['row'].iat[0]}: {dropped['reason'].iat[0]} "
                f"({dropped['detail'].iat[0]})",
            )
        )
    meta = df.loc[keep].copy()
    meta["path"] = [rel[i] for i in np.flatnonzero(keep)]
    meta["label"] = codes[keep]
    cohort = Cohort(
        meta.reset_index(drop=True), root=root, class_names=names, dropped=dropped, name=p.name
    )
    if uncertain_rows is not None:
        cohort.uncertain = uncertain_cohort(df, uncertain_rows, rel, problems, cohort)
    return cohort


_MANIFEST_FLAGS = {"label": "label-column", "path": "path-column", "patient": "patient-column"}


def _resolve(root: Path, rel: str) -> Path:
    q = Path(rel)
    return q if q.is_absolute() else root / q


# -- MedMNIST-style .npz -------------------------------------------------------------------

_SPLIT_ORDER = ("train", "val", "test")


def load_npz(path: str | os.PathLike[str], *, class_names: Sequence[str] | None = None) -> Cohort:
    """Read a MedMNIST-style ``.npz`` into an in-memory :class:`~medaudit.data.Cohort`.

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` with ``{split}_images`` / ``{split}_labels`` pairs (``train``,
        ``val``, ``test``, or any other prefix), or one ``images`` / ``labels`` pair.
        Images (N, H, W) or (N, H, W, C) with C in {1, 3}, uint8 (or uint16, or float
        in [0, 1]); labels (N,) or (N, 1) integers.
    class_names : sequence of str, optional
        Declared classes; labels outside ``range(len(class_names))`` are left out and
        listed in ``cohort.dropped``.

    Returns
    -------
    Cohort
        Images in memory, channels first; a ``split`` column from the key prefix.

    Raises
    ------
    InvalidInputError
        The file is missing, not an ``.npz``, holds pickled objects, or its arrays do
        not fit together.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> np.savez(f, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=[[0], [1], [1]],
    ...          test_images=np.zeros((2, 8, 8), np.uint8), test_labels=[[1], [0]])
    >>> c = load_npz(f)
    >>> len(c), c.image_shape, c.meta["split"].tolist()
    (5, (1, 8, 8), ['train', 'train', 'train', 'test', 'test'])
    """
    names = _validate_class_names(class_names, "load_npz")
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"Data file not found: {p}")
    try:
        npz = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{p} is not a readable .npz file: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InvalidInputError(f"{p} is a single .npy array, not an .npz archive of arrays.")
    with npz:
        keys = set(npz.files)
        prefixes = sorted(
            (k[: -len("_images")] for k in keys if k.endswith("_images")),
            key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else 99, s),
        )
        pairs: list[tuple[str | None, str, str]] = [
            (pre, f"{pre}_images", f"{pre}_labels") for pre in prefixes
        ]
        if not pairs and "images" in keys:
            pairs = [(None, "images", "labels")]
        if not pairs:
            raise InvalidInputError(
                f"{p} has no image arrays: expected keys like 'train_images' and "
                f"'train_labels' (found: {', '.join(sorted(keys)) or 'none'})."
            )
        missing = [lab for _, _, lab in pairs if lab not in keys]
        if missing:
            raise InvalidInputError(f"{p} lacks the label array(s) {', '.join(missing)}.")
        images, labels, splits, where = [], [], [], []
        try:
            for pre, ik, lk in pairs:
                x = _npz_images(npz[ik], ik, p)
                y = _npz_labels(npz[lk], lk, p, len(x))
                images.append(x)
                labels.append(y)
                splits += [pre] * len(x)
                where += [f"{ik}[{i}]" for i in range(len(x))]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise InvalidInputError(MSG_PICKLED.format(path=p)) from None
            raise InvalidInputError(f"{p}: {exc}") from None
    shapes = {x.shape[1:] for x in images}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"{p}: the image arrays have different shapes (C, H, W) {sorted(shapes)}."
        )
    x_all = np.concatenate(images) if len(images) > 1 else images[0]
    y_all = np.concatenate(labels) if len(labels) > 1 else labels[0]
    if len(y_all) == 0:
        raise InvalidInputError(f"{p} holds no images.")
    valid = y_all >= 0
    if names is not None:
        valid &= y_all < len(names)
    meta = pd.DataFrame({"label": y_all})
    if pairs[0][0] is not None:
        meta["split"] = splits
    bad = np.flatnonzero(~valid)
    dropped = pd.DataFrame(
        {
            "row": bad.astype(np.int64),
            "path": [where[i] for i in bad],
            "label": [str(y_all[i]) for i in bad],
            "reason": [REASON_INVALID_LABEL] * len(bad),
            "detail": [f"label {y_all[i]}; declared: {names}" for i in bad],
        },
        columns=list(DROPPED_COLUMNS),
    )
    if not valid.any():
        raise InvalidInputError(f"{p}: no image has a label inside the declared classes {names}.")
    if len(bad):
        x_all, meta = x_all[valid], meta.loc[valid].reset_index(drop=True)
    return Cohort(meta, images=x_all, class_names=names, dropped=dropped, name=p.name)


def _npz_images(x: np.ndarray, key: str, p: Path) -> np.ndarray:
    if x.dtype == object:
        raise InvalidInputError(MSG_PICKLED.format(path=p))
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.moveaxis(x, -1, 1)
    elif x.ndim == 3:
        x = x[:, None]
    else:
        raise InvalidInputError(
            f"{p}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) "
            "with C in {1, 3}."
        )
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)) or (x.size and (x.min() < 0 or x.max() > 1)):
            raise InvalidInputError(f"{p}: float images in {key} must be finite and in [0, 1].")
    elif x.dtype not in (np.uint8, np.uint16):
        raise InvalidInputError(
            f"{p}: {key} has dtype {x.dtype}; use uint8, uint16 or float in [0, 1]."
        )
    return np.ascontiguousarray(x)


def _npz_labels(y: np.ndarray, key: str, p: Path, n: int) -> np.ndarray:
    if y.dtype == object:
        raise InvalidInputError(MSG_PICKLED.format(path=p))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInputError(
            f"{p}: {key} has shape {y.shape}; expected (N,) or (N, 1) class indices "
            "(multi-label arrays are not supported: pick one column)."
        )
    if len(y) != n:
        raise InvalidInputError(f"{p}: {key} has {len(y)} labels for {n} images.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise InvalidInputError(f"{p}: {key} has NaN or non-integer labels.")
    elif y.dtype.kind not in "iub":
        raise InvalidInputError(f"{p}: {key} has dtype {y.dtype}; expected integer labels.")
    return y.astype(np.int64)


# -- dispatch ------------------------------------------------------------------------------


def load_cohort(path: str | os.PathLike[str], **kwargs: Any) -> Cohort:
    """Load a cohort from a manifest (``.csv``/``.parquet``) or a MedMNIST-style ``.npz``.

    Parameters
    ----------
    path : str or path-like
        The data file; its suffix picks the reader.
    **kwargs
        Passed to :func:`load_manifest` or :func:`load_npz`.

    Returns
    -------
    Cohort

    Examples
    --------
    >>> load_cohort("data.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medaudit._errors.InvalidInputError: Unsupported data file data.txt: expected a manifest ...
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return load_manifest(p, **kwargs)
    if suffix == ".npz":
        cmap = kwargs.pop("columns", None)
        if cmap is not None and not cmap.is_default:
            raise InvalidInputError(MSG_NPZ_COLUMNS.format(path=p))
        return load_npz(p, **kwargs)
    raise InvalidInputError(
        MSG_UNSUPPORTED_DATA.format(path=p, manifests=", ".join(MANIFEST_SUFFIXES))
    )
