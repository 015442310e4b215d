"""Site partitions: by a site column, or simulated sites with Dirichlet skew."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medaudit._errors import InvalidInputError
from medaudit.data import dirichlet_partition, generate_hospitals, partition_by_site
from medaudit.data._partitions import (
    MSG_NO_SITE_COLUMN,
    MSG_ONE_SITE,
    MSG_SITE_MISSING_VALUES,
)


def test_one_site_per_value_sorted_and_covering_every_row():
    c = generate_hospitals(n_sites=3, patients_per_site=10, image_size=16, seed=0)
    p = partition_by_site(c)
    assert p.names == ("site_A", "site_B", "site_C") and p.method == "column:site"
    rows = np.sort(np.concatenate(p.rows))
    assert np.array_equal(rows, np.arange(len(c)))
    assert all((c.meta["site"].iloc[r] == n).all() for n, r in zip(p.names, p.rows, strict=True))
    cohorts = p.cohorts(c)
    assert [len(x) for x in cohorts.values()] == [len(r) for r in p.rows]
    assert np.array_equal(p.site_of_rows(len(c)), c.meta["site"].to_numpy())


def test_bad_site_columns_get_one_clear_message_each():
    meta = pd.DataFrame({"label": [0, 1, 1], "hospital": ["a", "a", "a"]})
    with pytest.raises(InvalidInputError) as err:
        partition_by_site(meta)
    assert str(err.value) == MSG_NO_SITE_COLUMN.format(
        source="table", column="site", available="label, hospital"
    )
    with pytest.raises(InvalidInputError) as err:
        partition_by_site(meta, column="hospital")
    assert str(err.value) == MSG_ONE_SITE.format(column="hospital", source="table", site="a")
    meta.loc[1, "hospital"] = None
    meta.loc[2, "hospital"] = "b"
    with pytest.raises(InvalidInputError) as err:
        partition_by_site(meta, column="hospital")
    assert str(err.value) == MSG_SITE_MISSING_VALUES.format(
        column="hospital", source="table", n=1, first=1
    )


def _label_skew(meta: pd.DataFrame, rows: tuple[np.ndarray, ...]) -> float:
    """Mean total-variation distance between each site's and the overall prevalence."""
    overall = meta["label"].mean()
    return float(np.mean([abs(meta["label"].iloc[r].mean() - overall) for r in rows]))


def test_dirichlet_keeps_patients_whole_and_skews_more_with_small_alpha():
    c = generate_hospitals(n_sites=2, patients_per_site=200, image_size=16, seed=1)
    meta = c.meta
    skews = {}
    for alpha in (0.1, 100.0):
        vals = []
        for seed in range(5):
            p = dirichlet_partition(c, n_sites=4, alpha=alpha, min_size=20, random_state=seed)
            site = p.site_of_rows(len(meta))
            assert meta.assign(s=site).groupby("patient_id")["s"].nunique().max() == 1
            assert sum(len(r) for r in p.rows) == len(meta)
            vals.append(_label_skew(meta, p.rows))
        skews[alpha] = np.mean(vals)
    assert skews[0.1] > 3 * skews[100.0]
    a = dirichlet_partition(c, n_sites=3, alpha=1.0, random_state=7)
    b = dirichlet_partition(c, n_sites=3, alpha=1.0, random_state=7)
    assert all(np.array_equal(x, y) for x, y in zip(a.rows, b.rows, strict=True))


def test_dirichlet_attribute_skew_and_impossible_sizes():
    c = generate_hospitals(n_sites=2, patients_per_site=60, image_size=16, seed=2)
    p = dirichlet_partition(c, n_sites=3, alpha=0.5, by="sex", min_size=5)
    assert p.method == "dirichlet(alpha=0.5, by=sex)"
    with pytest.raises(InvalidInputError, match="could not give every one of 50 sites"):
        dirichlet_partition(c, n_sites=50, alpha=0.1, min_size=30, max_tries=3)
    with pytest.raises(InvalidInputError, match="no column 'ward' to skew by"):
        dirichlet_partition(c, n_sites=2, alpha=1.0, by="ward")
    with pytest.raises(ValueError, match="'alpha' parameter of dirichlet_partition"):
        dirichlet_partition(c, n_sites=2, alpha=0.0)
