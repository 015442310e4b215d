"""Site partitions: which rows of a cohort each federated client holds.

Two ways to split a cohort across sites:

- :func:`partition_by_site` — the natural split, one site per value of a column
  (``site``, ``hospital``, ...): what a real federation looks like.
- :func:`dirichlet_partition` — a simulated federation of ``n_sites`` with label or
  attribute skew: for each value of the skew column, the share of its patients that each
  site receives is drawn from a symmetric Dirichlet(α) distribution (Hsu et al. 2019). Small
  α gives sites dominated by one value, large α nearly identical sites.

Both keep every patient's images at one site (a patient is never in two hospitals) and
return one :class:`SitePartition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.data._cohort import Cohort
from medaudit.data._splits import _patient_keys, _patient_strata

__all__ = [
    "MSG_NO_SITE_COLUMN",
    "MSG_ONE_SITE",
    "MSG_SITE_MISSING_VALUES",
    "SitePartition",
    "dirichlet_partition",
    "partition_by_site",
]

MSG_NO_SITE_COLUMN = (
    "The data {source} has no site column {column!r}; federated training needs one value "
    "per hospital (its columns are: {available}). Name it with --site-column, or simulate "
    "sites with a Dirichlet partition (--dirichlet-alpha and --n-sites)."
)
MSG_ONE_SITE = (
    "The site column {column!r} of {source} holds a single site ({site!r}); a federation "
    "needs at least two. Train it centrally with `medaudit train`, or simulate sites with "
    "a Dirichlet partition (--dirichlet-alpha and --n-sites)."
)
MSG_SITE_MISSING_VALUES = (
    "The site column {column!r} of {source} is empty in {n} row(s) (first at row {first}); "
    "every image must belong to a site."
)
MSG_DIRICHLET_TOO_SMALL = (
    "dirichlet_partition could not give every one of {n_sites} sites at least {min_size} "
    "images in {tries} draws (the data has {n_patients} patients); use fewer sites, a "
    "larger alpha or a smaller min_size."
)


@dataclass(frozen=True)
class SitePartition:
    """Rows of a cohort held by each site.

    Attributes
    ----------
    names : tuple of str
        Site names, in a fixed order (sorted for a site column; ``site_0``, ... for a
        Dirichlet partition).
    rows : tuple of ndarray
        Positional row indices of each site, sorted, disjoint, covering the cohort.
    method : str
        ``"column:<name>"`` or ``"dirichlet(alpha=<a>, by=<column>)"``.
    """

    names: tuple[str, ...]
    rows: tuple[np.ndarray, ...]
    method: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> dict[str, int]:
        """Images per site."""
        return {n: len(r) for n, r in zip(self.names, self.rows, strict=True)}

    def site_of_rows(self, n_rows: int) -> np.ndarray:
        """Site name of every row of the partitioned cohort, shape (n_rows,)."""
        out = np.empty(n_rows, dtype=object)
        for name, rows in zip(self.names, self.rows, strict=True):
            out[rows] = name
        return out

    def cohorts(self, cohort: Cohort) -> dict[str, Cohort]:
        """One cohort per site, named ``"<cohort>:<site>"``."""
        return {
            name: cohort.subset(rows, name=f"{cohort.name}:{name}")
            for name, rows in zip(self.names, self.rows, strict=True)
        }


def _meta(data: Cohort | pd.DataFrame, func: str) -> tuple[pd.DataFrame, str]:
    if isinstance(data, Cohort):
        return data.meta, repr(data.name)
    if isinstance(data, pd.DataFrame):
        return data, "table"
    raise param_error("data", func, "a Cohort or a DataFrame", type(data).__name__)


def partition_by_site(data: Cohort | pd.DataFrame, *, column: str = "site") -> SitePartition:
    """One site per value of ``column`` (the natural split of a multi-hospital cohort).

    Parameters
    ----------
    data : Cohort or DataFrame
        The cohort, or its metadata table.
    column : str, default "site"
        Column naming each image's hospital.

    Returns
    -------
    SitePartition
        Sites sorted by name.

    Raises
    ------
    InvalidInputError
        When the column is missing, has an empty value, or holds fewer than two sites.

    Examples
    --------
    >>> meta = pd.DataFrame({"label": [0, 1, 1, 0], "site": ["B", "A", "B", "A"]})
    >>> p = partition_by_site(meta)
    >>> p.names, [r.tolist() for r in p.rows]
    (('A', 'B'), [[1, 3], [0, 2]])
    """
    func = "partition_by_site"
    meta, source = _meta(data, func)
    if not isinstance(column, str) or not column:
        raise param_error("column", func, "a column name", column)
    if column not in meta.columns:
        raise InvalidInputError(
            MSG_NO_SITE_COLUMN.format(
                source=source, column=column, available=", ".join(map(str, meta.columns))
            )
        )
    values = meta[column]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        raise InvalidInputError(
            MSG_SITE_MISSING_VALUES.format(
                column=column, source=source, n=int(missing.sum()), first=int(np.argmax(missing))
            )
        )
    names = values.astype(str).str.strip().to_numpy()
    uniq = sorted(set(names.tolist()))
    if len(uniq) < 2:
        raise InvalidInputError(
            MSG_ONE_SITE.format(column=column, source=source, site=uniq[0] if uniq else "")
        )
    rows = tuple(np.flatnonzero(names == u) for u in uniq)
    return SitePartition(names=tuple(uniq), rows=rows, method=f"column:{column}")


def dirichlet_partition(
    data: Cohort | pd.DataFrame,
    *,
    n_sites: int,
    alpha: float,
    by: str = "label",
    min_size: int = 10,
    random_state: int = 0,
    max_tries: int = 100,
) -> SitePartition:
    """Deal patients to ``n_sites`` simulated sites with Dirichlet(α) skew on ``by``.

    Patients are grouped by their value of ``by`` (for a label: ever diseased; otherwise
    their most frequent value); each group's patients are shuffled and divided among the
    sites in proportions drawn from a symmetric Dirichlet(``alpha``). The draw is repeated
    until every site holds at least ``min_size`` images.

    Parameters
    ----------
    data : Cohort or DataFrame
    n_sites : int >= 2
    alpha : float > 0
        Concentration: 0.1 gives strongly skewed sites, 100 nearly identical ones.
    by : str, default "label"
        Column whose distribution differs between sites (label skew, or attribute skew
        with e.g. ``"sex"``, ``"age_group"``).
    min_size : int, default 10
        Fewest images a site may hold.
    random_state : int, default 0
    max_tries : int, default 100

    Returns
    -------
    SitePartition
        Sites named ``site_0``, ``site_1``, ...

    References
    ----------
    .. [1] Hsu TMH, Qi H, Brown M. Measuring the effects of non-identical data distribution
           for federated visual classification. arXiv:1909.06335, 2019.

    Examples
    --------
    >>> meta = pd.DataFrame({"label": [0, 1] * 50})
    >>> p = dirichlet_partition(meta, n_sites=3, alpha=1.0, min_size=5, random_state=0)
    >>> p.names, sum(len(r) for r in p.rows)
    (('site_0', 'site_1', 'site_2'), 100)
    """
    func = "dirichlet_partition"
    meta, _ = _meta(data, func)
    _check_int(n_sites, "n_sites", func, 2)
    _check_int(min_size, "min_size", func, 0)
    _check_int(max_tries, "max_tries", func, 1)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not np.isfinite(alpha)
        or alpha <= 0
    ):
        raise param_error("alpha", func, "a finite float > 0", alpha)
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise param_error("random_state", func, "an int", random_state)
    if by not in meta.columns:
        raise InvalidInputError(
            f"dirichlet_partition: no column {by!r} to skew by "
            f"(columns: {', '.join(map(str, meta.columns))})."
        )
    keys = _patient_keys(meta)
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    strata = _patient_strata(meta[by], inverse, len(uniq))
    images = np.bincount(inverse, minlength=len(uniq))
    rng = np.random.default_rng(int(random_state))
    for _ in range(max_tries):
        site_of_patient = _draw(strata, n_sites, float(alpha), rng)
        sizes = np.bincount(site_of_patient, weights=images, minlength=n_sites)
        if sizes.min() >= min_size:
            site_of_row = site_of_patient[inverse]
            return SitePartition(
                names=tuple(f"site_{i}" for i in range(n_sites)),
                rows=tuple(np.flatnonzero(site_of_row == i) for i in range(n_sites)),
                method=f"dirichlet(alpha={alpha:g}, by={by})",
            )
    raise InvalidInputError(
        MSG_DIRICHLET_TOO_SMALL.format(
            n_sites=n_sites, min_size=min_size, tries=max_tries, n_patients=len(uniq)
        )
    )


def _draw(strata: np.ndarray, n_sites: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Site of every patient for one Dirichlet draw per stratum."""
    out = np.empty(len(strata), dtype=np.int64)
    for value in sorted(set(strata.tolist())):
        members = rng.permutation(np.flatnonzero(strata == value))
        shares = rng.dirichlet(np.full(n_sites, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for site, part in enumerate(np.split(members, cuts)):
            out[part] = site
    return out


def _check_int(v: Any, name: str, func: str, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise param_error(name, func, f"an int >= {minimum}", v)
