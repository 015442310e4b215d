"""The data-integrity audit: the first section of every report.

It reports problems and never fixes them. What each check's value is:

* ``integrity.unreadable_files`` — **fraction** of the images listed in the data that
  could not be used (missing file, empty path, undecodable image), out of all listed
  images with a valid label.
* ``integrity.duplicate_images`` — **fraction** of the cohort's images whose pixels are
  an exact copy of an earlier image (a group of k identical images adds k - 1).
* ``integrity.patient_overlap`` — **count** of patients present both in the training
  data and in the audited cohort (leakage inflates every metric).
* ``integrity.invalid_labels`` — **count** of images whose label is outside the
  declared classes.
* ``integrity.missing_attributes`` — largest **fraction** of images with no value
  (empty, NaN or blank text) in one metadata column (``patient_id``, ``study_id``,
  ``site`` and every attribute column).

Fractions keep a policy meaningful across cohort sizes ("at most 1% unreadable"); the
two leakage/labelling checks are counts because any single case is a defect. Patient
identifiers and file paths never appear in the section: problems are located by row
position only (manifest row for dropped files, cohort row for duplicates).

References
----------
.. [1] Wilson EB. Probable inference, the law of succession, and statistical inference.
       J Am Stat Assoc 22(158):209-212, 1927.
.. [2] Roberts M, et al. Common pitfalls and recommendations for using machine learning
       to detect and prognosticate for COVID-19 using chest radiographs and CT scans.
       Nat Mach Intell 3:199-217, 2021.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.data._cohort import Cohort
from medaudit.data._images import REASON_UNREADABLE, _large_files, _map_in_threads
from medaudit.data._readers import REASON_INVALID_LABEL, REASON_NO_LABEL, REASON_UNCERTAIN
from medaudit.report import Check, Policy, Section, Threshold
from medaudit.stats import wilson_interval

__all__ = ["CHECKS", "MAX_LISTED_ROWS", "integrity_section"]

# Row positions listed per table cell; longer lists end with "... (N more)".
MAX_LISTED_ROWS = 20
# Duplicate groups listed in the table (the count in the check is always complete).
MAX_DUPLICATE_GROUPS = 100
_METADATA_COLUMNS = ("patient_id", "study_id", "site")

# The integrity audit's checks and built-in thresholds.
CHECKS: dict[str, Threshold] = {
    "integrity.unreadable_files": Threshold(
        "<=", 0.0, "minor", help="Fraction of listed images that could not be read."
    ),
    "integrity.duplicate_images": Threshold(
        "<=", 0.0, "minor", help="Fraction of images that are exact copies of another."
    ),
    "integrity.patient_overlap": Threshold(
        "<=", 0.0, "major", help="Patients in both the training and the audited data."
    ),
    "integrity.invalid_labels": Threshold(
        "<=", 0.0, "major", help="Images whose label is outside the declared classes."
    ),
    "integrity.missing_attributes": Threshold(
        "<=", 0.0, "minor", help="Largest fraction of missing values in one metadata column."
    ),
}
_ALL_SITES = "(all sites)"
_MISSING_SITE = "(missing)"


def integrity_section(
    cohort: Cohort, *, train: Cohort | None = None, policy: Policy | None = None
) -> Section:
    """Audit the data itself before any model is judged on it.

    Parameters
    ----------
    cohort : Cohort
        The audited (evaluation) cohort, with ``dropped`` as left by the reader.
    train : Cohort, optional
        The training cohort; patients present in both are reported. Without it, a
        cohort with a ``split`` column is checked for patients shared between its
        ``train`` split and its other splits.
    policy : Policy, optional
        Thresholds; :meth:`Policy.default` when not given.

    Returns
    -------
    Section
        ``name="integrity"``, ``title="Data integrity"``, with tables
        ``dropped_files``, ``duplicates``, ``patient_overlap``, ``invalid_labels``,
        ``missing_values``, ``site_prevalence`` and the five ``integrity.*`` checks.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> imgs = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)
    >>> imgs[3] = imgs[0]
    >>> c = Cohort(pd.DataFrame({"label": [0, 1, 0, 1]}), images=imgs)
    >>> s = integrity_section(c)
    >>> {k.id.split(".")[1]: k.status for k in s.checks if k.status != "skipped"}
    {'unreadable_files': 'pass', 'duplicate_images': 'warn', 'invalid_labels': 'pass'}
    >>> s.tables["duplicates"]["rows"].tolist()
    ['0, 3']
    """
    if not isinstance(cohort, Cohort):
        raise param_error("cohort", "integrity_section", "a Cohort", type(cohort).__name__)
    if train is not None and not isinstance(train, Cohort):
        raise param_error("train", "integrity_section", "a Cohort or None", type(train).__name__)
    if policy is None:
        policy = Policy.default()
    elif not isinstance(policy, Policy):
        raise param_error("policy", "integrity_section", "a Policy or None", type(policy).__name__)

    dropped = _dropped_frame(cohort)
    digests, late_unreadable = _pixel_digests(cohort)
    # Rows left out by the label mapping (issue 17) are no file problem: a note says so.
    by_labels = dropped["reason"].isin([REASON_NO_LABEL, REASON_UNCERTAIN])
    file_drops = dropped[(dropped["reason"] != REASON_INVALID_LABEL) & ~by_labels]
    label_drops = dropped[dropped["reason"] == REASON_INVALID_LABEL]

    checks: list[Check] = []
    tables: dict[str, pd.DataFrame] = {}
    problems: list[str] = []
    notes: list[str] = [
        f"{n} manifest row(s) left out: {reason}."
        for reason, n in dropped.loc[by_labels, "reason"].value_counts(sort=False).items()
    ]

    # 1. missing / unreadable files
    n_listed = len(cohort) + len(file_drops)
    n_bad_files = len(file_drops) + len(late_unreadable)
    tables["dropped_files"] = _dropped_table(file_drops, late_unreadable)
    checks.append(
        _evaluate(
            policy,
            "integrity.unreadable_files",
            "Fraction of listed images that are missing or cannot be read",
            n_bad_files / n_listed if n_listed else 0.0,
            "Restore or remove the missing and unreadable files; they were left out.",
        )
    )
    if n_bad_files:
        problems.append(
            f"{n_bad_files} of {n_listed} image files ({_pct(n_bad_files, n_listed)}) were "
            "missing or unreadable and were left out"
        )

    # 2. exact duplicates
    dup_table, n_groups, n_redundant = _duplicates(digests)
    tables["duplicates"] = dup_table
    n_hashed = int(sum(d is not None for d in digests))
    checks.append(
        _evaluate(
            policy,
            "integrity.duplicate_images",
            "Fraction of images that are exact pixel copies of another image",
            n_redundant / n_hashed if n_hashed else 0.0,
            "Remove duplicated images, or check that copies do not span training and test.",
        )
    )
    if n_groups:
        problems.append(f"{n_redundant} image(s) are exact copies of others ({n_groups} group(s))")
        if n_groups > MAX_DUPLICATE_GROUPS:
            notes.append(
                f"Only the first {MAX_DUPLICATE_GROUPS} of {n_groups} duplicate groups are listed."
            )

    # 3. patients shared with the training data
    overlap_check, overlap_table, n_shared = _patient_overlap(cohort, train, policy)
    checks.append(overlap_check)
    tables["patient_overlap"] = overlap_table
    if n_shared:
        problems.append(f"{n_shared} patient(s) also appear in the training data")

    # 4. labels outside the declared classes
    inv_table, n_invalid = _invalid_labels(cohort, label_drops)
    tables["invalid_labels"] = inv_table
    checks.append(
        _evaluate(
            policy,
            "integrity.invalid_labels",
            f"Number of images whose label is outside the declared classes "
            f"({', '.join(cohort.class_names)})",
            float(n_invalid),
            "Correct the labels or declare the missing classes; these images were left out.",
        )
    )
    if n_invalid:
        problems.append(f"{n_invalid} image(s) have a label outside the declared classes")

    # 5. missing metadata values
    miss_table = _missing_values(cohort)
    tables["missing_values"] = miss_table
    if len(miss_table):
        worst = miss_table.iloc[int(np.argmax(miss_table["fraction"].to_numpy()))]
        checks.append(
            _evaluate(
                policy,
                "integrity.missing_attributes",
                f"Largest fraction of images missing a metadata value (column {worst['column']!r})",
                float(worst["fraction"]),
                "Fill in the missing values; subgroup audits leave those images out.",
            )
        )
        incomplete = miss_table[miss_table["n_missing"] > 0]
        if len(incomplete):
            problems.append(
                "metadata values are missing in "
                + ", ".join(
                    f"{r.column} ({_pct(r.n_missing, len(cohort))})"
                    for r in incomplete.itertuples()
                )
            )
    else:
        checks.append(
            policy.skipped(
                "integrity.missing_attributes",
                "Largest fraction of images missing a metadata value",
                "the data has no patient, site or attribute columns",
            )
        )

    # 6. prevalence per site (information, no check)
    tables["site_prevalence"] = _site_prevalence(cohort, policy)
    het = _prevalence_heterogeneity(cohort)
    if het is not None:
        notes.append(het)

    notes.append(
        "Rows are located by position only (0-based): 'manifest_rows' are rows of the "
        "manifest, 'rows' are rows of the audited cohort. Paths and patient identifiers "
        "are not shown."
    )
    if problems:
        summary = (
            f"Data problems found in {len(cohort)} usable images: " + "; ".join(problems) + "."
        )
    else:
        clean = ["no exact duplicates", "no labels outside the declared classes"]
        if overlap_check.status != "skipped":
            clean.append("no patients shared with the training data")
        if checks[-1].status != "skipped":
            clean.append("no missing metadata values")
        summary = (
            f"All {len(cohort)} images were readable, with "
            + ", ".join(clean[:-1])
            + f" and {clean[-1]}."
        )
    return Section(
        name="integrity",
        title="Data integrity",
        summary=summary,
        tables=tables,
        checks=checks,
        notes=notes,
        references=[
            "Wilson EB. Probable inference, the law of succession, and statistical "
            "inference. J Am Stat Assoc 22(158):209-212, 1927.",
            "Roberts M, et al. Common pitfalls and recommendations for using machine "
            "learning to detect and prognosticate for COVID-19 using chest radiographs "
            "and CT scans. Nat Mach Intell 3:199-217, 2021.",
        ],
        methods=(
            "Every listed image was decoded once; missing and undecodable files were left "
            "out and counted. Exact duplicates were found by a BLAKE2b hash of the decoded "
            "pixels (same pixels in different files or formats count as duplicates). "
            "Patients were matched by identifier between the training data and the audited "
            "cohort. Label prevalence per site is given with 95% Wilson score intervals."
        ),
    )


# -- helpers -------------------------------------------------------------------------------


def _evaluate(policy: Policy, cid: str, description: str, value: float, advice: str) -> Check:
    return policy.judge(cid, description, value, advice=advice)


def _pct(k: int | float, n: int) -> str:
    return f"{100.0 * k / n:.1f}%" if n else "n/a"


def _list_rows(rows: np.ndarray | list[int] | pd.Series) -> str:
    rows = [int(r) for r in rows if r >= 0]  # -1: a dropped row of unknown position
    head = ", ".join(map(str, rows[:MAX_LISTED_ROWS]))
    extra = len(rows) - MAX_LISTED_ROWS
    return head + (f", ... ({extra} more)" if extra > 0 else "")


def _dropped_frame(cohort: Cohort) -> pd.DataFrame:
    d = cohort.dropped
    if d is None or len(d) == 0:
        return pd.DataFrame({"row": pd.Series([], dtype=np.int64), "reason": [], "label": []})
    if "reason" not in d.columns:
        raise InvalidInputError(
            f"The 'dropped' table of {cohort.name!r} has no 'reason' column "
            f"(columns: {', '.join(map(str, d.columns))})."
        )
    out = pd.DataFrame({"reason": d["reason"].astype(str).to_numpy()})
    out["row"] = d["row"].to_numpy() if "row" in d.columns else np.full(len(d), -1, dtype=np.int64)
    out["label"] = d["label"].astype(str).to_numpy() if "label" in d.columns else ""
    return out


def _digest(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
    return h.digest()


def _pixel_digests(cohort: Cohort) -> tuple[list[bytes | None], list[int]]:
    """One digest per image (None when it can no longer be read) and those rows."""
    n = len(cohort)
    if cohort.images is not None:
        # Raw stored bytes: exact, and no float conversion of the whole array.
        return [_digest(cohort.images[i]) for i in range(n)], []

    def one(i: int) -> bytes | None:
        try:
            return _digest(cohort.image(i))
        except InvalidInputError:
            return None

    files = [cohort.resolve(q) for q in cohort.meta["path"].iloc[:16]]
    digests = list(_map_in_threads(one, range(n), threads=_large_files(files)))
    return digests, [i for i, d in enumerate(digests) if d is None]


def _dropped_table(file_drops: pd.DataFrame, late_unreadable: list[int]) -> pd.DataFrame:
    rows = []
    for reason, grp in file_drops.groupby("reason", sort=True):
        rows.append(
            {"reason": str(reason), "n_files": len(grp), "manifest_rows": _list_rows(grp["row"])}
        )
    if late_unreadable:
        rows.append(
            {
                "reason": f"{REASON_UNREADABLE} (at audit time; cohort rows)",
                "n_files": len(late_unreadable),
                "manifest_rows": _list_rows(late_unreadable),
            }
        )
    return pd.DataFrame(rows, columns=["reason", "n_files", "manifest_rows"]).astype(
        {"n_files": np.int64}
    )


def _duplicates(digests: list[bytes | None]) -> tuple[pd.DataFrame, int, int]:
    groups: dict[bytes, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            groups.setdefault(d, []).append(i)
    dup = [rows for rows in groups.values() if len(rows) > 1]
    dup.sort(key=lambda r: r[0])
    n_redundant = sum(len(r) - 1 for r in dup)
    table = pd.DataFrame(
        {
            "group": np.arange(1, min(len(dup), MAX_DUPLICATE_GROUPS) + 1, dtype=np.int64),
            "n_images": np.array([len(r) for r in dup[:MAX_DUPLICATE_GROUPS]], dtype=np.int64),
            "rows": [_list_rows(r) for r in dup[:MAX_DUPLICATE_GROUPS]],
        }
    )
    return table, len(dup), n_redundant


def _patient_keys(meta: pd.DataFrame) -> pd.Series:
    """Patient ids as stripped text (CSV may read '007' in one file and 7 in another)."""
    s = meta["patient_id"]
    txt = pd.Series([str(v).strip() for v in s.astype(object)], index=meta.index)
    if pd.api.types.is_float_dtype(s.dtype):
        # 7.0 read from a column with a missing value means patient 7.
        txt = pd.Series(
            [str(int(v)) if float(v).is_integer() else str(v) for v in s.fillna(0)],
            index=meta.index,
        )
    ok = s.notna().to_numpy() & (txt != "").to_numpy()
    return txt[ok]


def _patient_overlap(
    cohort: Cohort, train: Cohort | None, policy: Policy
) -> tuple[Check, pd.DataFrame, int]:
    cid = "integrity.patient_overlap"
    columns = ["comparison", "n_patients_a", "n_patients_b", "n_shared", "n_images_affected"]
    empty = pd.DataFrame(columns=columns)
    if train is not None:
        what = "the training data and the audited cohort"
        desc = "Number of patients present in both the training data and the audited cohort"
        if "patient_id" not in cohort.meta.columns or "patient_id" not in train.meta.columns:
            return (
                policy.skipped(cid, desc, "no 'patient_id' column in both cohorts"),
                empty,
                0,
            )
        a, b = _patient_keys(train.meta), _patient_keys(cohort.meta)
    else:
        desc = "Number of patients present in both the 'train' split and the other splits"
        what = "'train' split vs other splits"
        meta = cohort.meta
        if "patient_id" not in meta.columns:
            return policy.skipped(cid, desc, "no 'patient_id' column"), empty, 0
        if (
            "split" not in meta.columns
            or not (meta["split"] == "train").any()
            or (meta["split"] == "train").all()
        ):
            return (
                policy.skipped(
                    cid, desc, "no training data given and no 'train' split beside others"
                ),
                empty,
                0,
            )
        keys = _patient_keys(meta)
        is_train = (meta["split"] == "train").reindex(keys.index).to_numpy()
        a, b = keys[is_train], keys[~is_train]
    shared = set(a) & set(b)
    n_affected = int(b.isin(shared).sum())
    table = pd.DataFrame(
        [
            {
                "comparison": what,
                "n_patients_a": int(a.nunique()),
                "n_patients_b": int(b.nunique()),
                "n_shared": len(shared),
                "n_images_affected": n_affected,
            }
        ],
        columns=columns,
    )
    check = _evaluate(
        policy,
        cid,
        desc,
        float(len(shared)),
        "Split by patient, not by image: a patient must be in one split only.",
    )
    return check, table, len(shared)


def _invalid_labels(cohort: Cohort, label_drops: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Labels left out by the reader plus any still in the cohort outside the classes."""
    values: list[str] = list(label_drops["label"].astype(str))
    lab = cohort.meta["label"]
    num = pd.to_numeric(lab, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(num) | (num != np.round(num)) | (num < 0) | (num >= cohort.num_classes)
    values += [str(v) for v in lab.to_numpy()[bad]]
    counts = pd.Series(values, dtype=object).value_counts()
    table = pd.DataFrame(
        {"label": [str(k) for k in counts.index], "n_images": counts.to_numpy(dtype=np.int64)},
        columns=["label", "n_images"],
    )
    return table, len(values)


def _is_missing(s: pd.Series) -> np.ndarray:
    miss = s.isna().to_numpy()
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        blank = np.array([isinstance(v, str) and not v.strip() for v in s.astype(object)])
        miss = miss | blank
    return miss


def _missing_values(cohort: Cohort) -> pd.DataFrame:
    meta = cohort.meta
    cols = [c for c in _METADATA_COLUMNS if c in meta.columns] + list(cohort.attributes)
    rows = []
    n = len(meta)
    for c in cols:
        k = int(_is_missing(meta[c]).sum())
        rows.append(
            {
                "column": str(c),
                "kind": "identifier" if c in _METADATA_COLUMNS else "attribute",
                "n_missing": k,
                "fraction": k / n if n else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["column", "kind", "n_missing", "fraction"]).astype(
        {"n_missing": np.int64, "fraction": np.float64}
    )


def _site_values(cohort: Cohort) -> np.ndarray | None:
    if "site" not in cohort.meta.columns:
        return None
    s = cohort.meta["site"]
    miss = _is_missing(s)
    return np.where(miss, _MISSING_SITE, s.astype(str).to_numpy())


def _site_prevalence(cohort: Cohort, policy: Policy) -> pd.DataFrame:
    """Prevalence of each class (the positive class when binary) per site, Wilson CI."""
    conf = float(policy.setting("confidence"))
    labels = cohort.meta["label"].to_numpy()
    classes = [1] if cohort.num_classes == 2 else list(range(cohort.num_classes))
    sites = _site_values(cohort)
    pid = (
        cohort.meta["patient_id"].where(~_is_missing(cohort.meta["patient_id"]))
        if "patient_id" in cohort.meta.columns
        else None
    )
    groups: list[tuple[str, np.ndarray]] = []
    if sites is not None:
        groups += [(str(s), sites == s) for s in sorted(set(sites.tolist()))]
    groups.append((_ALL_SITES, np.ones(len(labels), dtype=bool)))
    rows = []
    for name, mask in groups:
        n = int(mask.sum())
        n_pat = float(pid[mask].nunique()) if pid is not None else np.nan
        for k in classes:
            pos = int((labels[mask] == k).sum())
            lo, hi = wilson_interval(pos, n, conf)
            rows.append(
                {
                    "site": name,
                    "class": cohort.class_names[k] if k < cohort.num_classes else str(k),
                    "n": n,
                    "n_patients": n_pat,
                    "n_positive": pos,
                    "prevalence": pos / n if n else np.nan,
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                }
            )
    cols = ["site", "class", "n", "n_patients", "n_positive", "prevalence", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


def _prevalence_heterogeneity(cohort: Cohort) -> str | None:
    """A note when label prevalence differs between sites (a shortcut risk)."""
    sites = _site_values(cohort)
    if sites is None:
        return None
    table = pd.crosstab(sites, cohort.meta["label"].to_numpy()).to_numpy()
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    p = _chi2_independence_pvalue(table)
    if p >= 0.05:
        return None
    return (
        f"Label prevalence differs between sites (chi-square test, p = {p:.2g}); a model "
        "can then predict the label from site-specific image features (a shortcut)."
    )


def _chi2_independence_pvalue(table: np.ndarray) -> float:
    """Pearson chi-square test of independence (no continuity correction).

    Equal to ``scipy.stats.chi2_contingency(table, correction=False).pvalue``; written
    out because importing ``scipy.stats`` costs seconds. Every row and column of
    ``table`` must have a positive total (true for a crosstab of observed values).
    """
    from scipy.special import chdtrc

    t = np.asarray(table, dtype=np.float64)
    expected = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / t.sum()
    stat = float(((t - expected) ** 2 / expected).sum())
    dof = (t.shape[0] - 1) * (t.shape[1] - 1)
    return float(chdtrc(dof, stat))
