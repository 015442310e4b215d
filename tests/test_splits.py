import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medaudit import InvalidInputError, InvalidParameterError
from medaudit.data._splits import patient_split


def _meta(n_patients=1000, seed=0):
    """Patients with 1-4 images each; label varies within a patient (max label = stratum)."""
    rng = np.random.default_rng(seed)
    n_img = rng.integers(1, 5, n_patients)
    pid = np.repeat([f"p{i}" for i in range(n_patients)], n_img)
    sick = np.repeat(rng.random(n_patients) < 0.3, n_img)
    label = (sick & (rng.random(len(pid)) < 0.7)).astype(int)
    return pd.DataFrame(
        {"patient_id": pid, "label": label, "site": rng.choice(["a", "b"], len(pid))}
    )


def test_no_patient_in_two_splits():
    meta = _meta()
    split = patient_split(meta)
    per_patient = pd.Series(split).groupby(meta["patient_id"].to_numpy()).nunique()
    assert per_patient.max() == 1
    assert set(split) == {"train", "val", "test"}


def test_patient_fractions_within_one_patient():
    meta = _meta(n_patients=1000)
    split = patient_split(meta, fractions=(0.6, 0.25, 0.15))
    patients = pd.DataFrame({"p": meta["patient_id"], "s": split}).drop_duplicates("p")
    counts = patients["s"].value_counts()
    # Deficit-based allocation keeps the totals within one patient of the target.
    assert abs(counts["train"] - 600) <= 1
    assert abs(counts["val"] - 250) <= 1
    assert abs(counts["test"] - 150) <= 1


def test_stratified_by_patient_max_label():
    meta = _meta(n_patients=1000, seed=3)
    split = patient_split(meta, random_state=7)
    frame = pd.DataFrame({"p": meta["patient_id"], "y": meta["label"], "s": split})
    per_patient = frame.groupby("p").agg(y=("y", "max"), s=("s", "first"))
    overall = per_patient["y"].mean()
    for _, group in per_patient.groupby("s"):
        # Within-stratum allocation: each split's diseased share is within one
        # patient of the overall share.
        assert abs(group["y"].mean() - overall) <= 1.5 / len(group)


def test_deterministic_and_seed_dependent():
    meta = _meta(n_patients=300)
    a = patient_split(meta, random_state=1)
    b = patient_split(meta, random_state=1)
    c = patient_split(meta, random_state=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_missing_patient_id_each_row_own_patient():
    meta = pd.DataFrame({"label": [0, 1] * 50})
    split = patient_split(meta, fractions=(0.5, 0.5), names=("a", "b"))
    assert (split == "a").sum() == 50
    # Half of each label in each split (stratified).
    assert ((split == "a") & (meta["label"] == 1)).sum() == 25


def test_missing_patient_id_values_are_separate_patients():
    meta = pd.DataFrame({"patient_id": [None] * 10 + ["x"] * 10, "label": 0})
    split = patient_split(meta, fractions=(0.5, 0.5), names=("a", "b"), stratify=None)
    assert len(set(split[10:])) == 1  # the named patient stays together
    assert len(set(split[:10])) == 2  # rows without an id are spread


def test_zero_fraction_split_is_empty_and_two_splits_work():
    meta = _meta(n_patients=200)
    split = patient_split(meta, fractions=(0.8, 0.0, 0.2))
    assert "val" not in set(split)


def test_stratify_on_text_column_and_none():
    meta = _meta(n_patients=200)
    by_site = patient_split(meta, stratify="site")
    none = patient_split(meta, stratify=None)
    assert len(by_site) == len(none) == len(meta)


def test_empty_metadata():
    out = patient_split(pd.DataFrame({"label": []}))
    assert out.shape == (0,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fractions": (0.5, 0.6, 0.1)},
        {"fractions": (1.2, -0.2, 0.0)},
        {"fractions": "0.7"},
        {"fractions": ()},
        {"fractions": (0.5, float("nan"), 0.5)},
        {"names": ("train", "train", "test")},
        {"names": ("train", "test")},
        {"stratify": 3},
        {"random_state": 1.5},
        {"random_state": True},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(InvalidParameterError):
        patient_split(_meta(n_patients=10), **kwargs)


def test_fraction_message_word_for_word():
    with pytest.raises(InvalidParameterError) as exc:
        patient_split(_meta(n_patients=10), fractions=(0.5, 0.6))
    assert str(exc.value) == (
        "The 'fractions' parameter of patient_split must be a sequence of non-negative "
        "numbers that sum to 1. Got (0.5, 0.6) instead."
    )


def test_meta_must_be_a_dataframe_and_stratify_column_must_exist():
    with pytest.raises(InvalidParameterError):
        patient_split({"label": [0, 1]})
    with pytest.raises(InvalidInputError, match="no such column"):
        patient_split(_meta(n_patients=10), stratify="severity")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    groups=st.lists(st.integers(0, 15), min_size=1, max_size=60),
    labels=st.lists(st.integers(0, 1), min_size=60, max_size=60),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_no_leak_any_grouping(groups, labels, seed):
    meta = pd.DataFrame({"patient_id": [f"p{g}" for g in groups], "label": labels[: len(groups)]})
    split = patient_split(meta, random_state=seed)
    assert len(split) == len(meta)
    assert pd.Series(split).groupby(meta["patient_id"].to_numpy()).nunique().max() == 1
    assert set(split) <= {"train", "val", "test"}
