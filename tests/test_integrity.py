"""The data-integrity audit: each planted defect is reported, a clean cohort passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.stats import binomtest, chi2_contingency

from medaudit._errors import InvalidParameterError
from medaudit.data import Cohort
from medaudit.data._readers import load_manifest
from medaudit.integrity import integrity_section, wilson_interval
from medaudit.integrity._section import _chi2_independence_pvalue
from medaudit.report._json import dumps
from medaudit.report._model import Report
from medaudit.report._policy import Policy

CHECK_IDS = [
    "integrity.unreadable_files",
    "integrity.duplicate_images",
    "integrity.patient_overlap",
    "integrity.invalid_labels",
    "integrity.missing_attributes",
]
N = 24


def _status(section, cid):
    return next(c for c in section.checks if c.id == cid)


def write_cohort(
    folder: Path,
    *,
    n: int = N,
    patient_prefix: str = "PAT",
    seed: int = 0,
    labels: list | None = None,
    extra: dict | None = None,
) -> Path:
    """Distinct random 8x8 PNGs, two images per patient, two sites, a `sex` attribute."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
            folder / "img" / f"{i}.png"
        )
        paths.append(f"img/{i}.png")
    df = pd.DataFrame(
        {
            "path": paths,
            "label": labels if labels is not None else [i % 2 for i in range(n)],
            "patient_id": [f"{patient_prefix}{i // 2:04d}" for i in range(n)],
            "site": ["north" if i < n // 2 else "south" for i in range(n)],
            "sex": ["F" if i % 4 < 2 else "M" for i in range(n)],
        }
    )
    for k, v in (extra or {}).items():
        df[k] = v
    df.to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


@pytest.fixture
def clean(tmp_path):
    return load_manifest(write_cohort(tmp_path / "test"))


@pytest.fixture
def train(tmp_path):
    return load_manifest(write_cohort(tmp_path / "train", patient_prefix="TRN", seed=1))


def test_clean_cohort_passes_every_check(clean, train):
    s = integrity_section(clean, train=train)
    assert s.name == "integrity" and s.title == "Data integrity"
    assert [c.id for c in s.checks] == CHECK_IDS
    assert {c.id: c.status for c in s.checks} == dict.fromkeys(CHECK_IDS, "pass")
    assert [c.value for c in s.checks] == [0.0] * 5
    assert s.status == "pass"
    assert s.summary == (
        f"All {N} images were readable, with no exact duplicates, no labels outside the "
        "declared classes, no patients shared with the training data and no missing "
        "metadata values."
    )
    assert len(s.tables["dropped_files"]) == 0
    assert len(s.tables["duplicates"]) == 0
    assert len(s.tables["invalid_labels"]) == 0
    assert s.tables["patient_overlap"]["n_shared"].tolist() == [0]
    assert s.tables["missing_values"]["n_missing"].tolist() == [0, 0, 0]


def test_missing_and_corrupt_files_reported(tmp_path):
    m = write_cohort(tmp_path)
    (tmp_path / "img" / "3.png").unlink()
    (tmp_path / "img" / "7.png").write_bytes(b"not an image")
    c = load_manifest(m)
    s = integrity_section(c)
    chk = _status(s, "integrity.unreadable_files")
    assert (chk.status, chk.severity) == ("fail", "minor") and chk.value == pytest.approx(2 / N)
    t = s.tables["dropped_files"]
    assert t.to_dict("records") == [
        {"reason": "file not found", "n_files": 1, "manifest_rows": "3"},
        {"reason": "unreadable image", "n_files": 1, "manifest_rows": "7"},
    ]
    assert f"2 of {N} image files (8.3%) were missing or unreadable" in s.summary
    # the rest of the audit ran on the readable images
    assert _status(s, "integrity.duplicate_images").status == "pass"


def test_file_vanishing_after_loading_is_counted(tmp_path):
    c = load_manifest(write_cohort(tmp_path))
    (tmp_path / "img" / "5.png").unlink()
    s = integrity_section(c)
    assert _status(s, "integrity.unreadable_files").value == pytest.approx(1 / N)
    assert s.tables["dropped_files"]["manifest_rows"].tolist() == ["5"]


def test_duplicate_images_found_across_formats(tmp_path):
    m = write_cohort(tmp_path)
    img = np.asarray(Image.open(tmp_path / "img" / "2.png"))
    Image.fromarray(img).save(tmp_path / "img" / "10.png")  # same pixels, another file
    np.save(tmp_path / "img" / "copy.npy", img)  # same pixels, another format
    df = pd.read_csv(m)
    df.loc[len(df)] = ["img/copy.npy", 0, "PAT9999", "south", "F"]
    df.to_csv(m, index=False)
    s = integrity_section(load_manifest(m))
    chk = _status(s, "integrity.duplicate_images")
    assert (chk.status, chk.severity) == ("fail", "minor")
    assert chk.value == pytest.approx(2 / (N + 1))
    assert s.tables["duplicates"].to_dict("records") == [
        {"group": 1, "n_images": 3, "rows": "2, 10, 24"}
    ]
    assert "2 image(s) are exact copies of others (1 group(s))" in s.summary


def test_in_memory_duplicates_and_no_false_alarm():
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (50, 6, 6), dtype=np.uint8)
    meta = pd.DataFrame({"label": np.arange(50) % 2})
    s = integrity_section(Cohort(meta, images=imgs))
    assert _status(s, "integrity.duplicate_images").value == 0.0
    imgs[[7, 30, 41]] = imgs[4]
    imgs[12] = imgs[11]
    s = integrity_section(Cohort(meta, images=imgs))
    assert _status(s, "integrity.duplicate_images").value == pytest.approx(4 / 50)
    assert s.tables["duplicates"]["rows"].tolist() == ["4, 7, 30, 41", "11, 12"]


def test_patient_overlap_with_training_data(tmp_path, clean):
    leaky = write_cohort(tmp_path / "leaky", patient_prefix="TRN", seed=2)
    df = pd.read_csv(leaky)
    df["patient_id"] = [f"PAT{i:04d}" if i < 3 else pid for i, pid in enumerate(df["patient_id"])]
    df.to_csv(leaky, index=False)
    s = integrity_section(clean, train=load_manifest(leaky))
    chk = _status(s, "integrity.patient_overlap")
    # PAT0000 (rows 0, 1), PAT0001 (rows 2, 3) and PAT0002 (rows 4, 5) of the clean cohort
    assert chk.status == "fail" and chk.value == 3.0
    assert s.tables["patient_overlap"].to_dict("records") == [
        {
            "comparison": "the training data and the audited cohort",
            "n_patients_a": 14,  # TRN0001-TRN0011 + PAT0000-PAT0002 (TRN0000 replaced)
            "n_patients_b": 12,
            "n_shared": 3,
            "n_images_affected": 6,
        }
    ]
    assert "3 patient(s) also appear in the training data" in s.summary


def test_patient_ids_never_appear_in_the_section(tmp_path, clean):
    train = load_manifest(write_cohort(tmp_path / "same", patient_prefix="PAT", seed=5))
    s = integrity_section(clean, train=train)
    assert _status(s, "integrity.patient_overlap").value == 12.0
    doc = dumps(Report(sections=[s]).to_dict())
    assert "PAT0" not in doc and "img/" not in doc
    json.loads(doc)


def test_patient_overlap_between_splits_of_one_cohort(tmp_path):
    split = ["train"] * 12 + ["test"] * 12
    c = load_manifest(write_cohort(tmp_path, extra={"split": split}))
    assert _status(integrity_section(c), "integrity.patient_overlap").value == 0.0
    c.meta.loc[12, "patient_id"] = c.meta.loc[0, "patient_id"]
    s = integrity_section(c)
    chk = _status(s, "integrity.patient_overlap")
    assert chk.status == "fail" and chk.value == 1.0
    assert s.tables["patient_overlap"]["comparison"].tolist() == ["'train' split vs other splits"]


def test_patient_overlap_skipped_without_ids_or_training_data(clean):
    s = integrity_section(clean)
    chk = _status(s, "integrity.patient_overlap")
    assert chk.status == "skipped" and "no training data" in chk.reason
    c = Cohort(pd.DataFrame({"label": [0, 1]}), images=np.zeros((2, 4, 4), np.uint8))
    assert _status(integrity_section(c, train=c), "integrity.patient_overlap").reason == (
        "no 'patient_id' column in both cohorts"
    )


def test_invalid_labels_from_reader_and_in_memory(tmp_path):
    labels = ["normal", "pneumonia"] * (N // 2)
    labels[4] = "covid"
    labels[9] = "covid"
    c = load_manifest(write_cohort(tmp_path, labels=labels), class_names=["normal", "pneumonia"])
    s = integrity_section(c)
    chk = _status(s, "integrity.invalid_labels")
    assert chk.status == "fail" and chk.value == 2.0
    assert s.tables["invalid_labels"].to_dict("records") == [{"label": "covid", "n_images": 2}]
    # invalid labels are not file problems
    assert _status(s, "integrity.unreadable_files").value == 0.0

    mem = Cohort(
        pd.DataFrame({"label": [0, 1, 2, 1]}),
        images=np.zeros((4, 4, 4), np.uint8),
        class_names=["a", "b"],
    )
    s = integrity_section(mem)
    assert _status(s, "integrity.invalid_labels").value == 1.0
    assert s.tables["invalid_labels"]["label"].tolist() == ["2"]


def test_missing_attribute_values(tmp_path):
    sex = ["F", "M"] * (N // 2)
    sex[1], sex[6], sex[11] = None, "  ", None
    c = load_manifest(write_cohort(tmp_path, extra={"sex": sex, "age": [50] * N}))
    s = integrity_section(c)
    chk = _status(s, "integrity.missing_attributes")
    assert (chk.status, chk.severity) == ("fail", "minor") and chk.value == pytest.approx(3 / N)
    assert "'sex'" in chk.description
    t = s.tables["missing_values"].set_index("column")
    assert t.loc["sex", "n_missing"] == 3 and t.loc["age", "n_missing"] == 0
    assert t.loc["site", "kind"] == "identifier" and t.loc["sex", "kind"] == "attribute"
    assert "metadata values are missing in sex (12.5%)" in s.summary


def test_missing_attributes_skipped_without_metadata_columns():
    c = Cohort(pd.DataFrame({"label": [0, 1]}), images=np.zeros((2, 4, 4), np.uint8))
    chk = _status(integrity_section(c), "integrity.missing_attributes")
    assert chk.status == "skipped"


def test_site_prevalence_with_wilson_ci(tmp_path):
    labels = [1] * 9 + [0] * 3 + [1] * 2 + [0] * 10  # north 9/12, south 2/12
    c = load_manifest(write_cohort(tmp_path, labels=labels))
    t = integrity_section(c).tables["site_prevalence"]
    assert t["site"].tolist() == ["north", "south", "(all sites)"]
    assert t["class"].tolist() == ["positive"] * 3
    assert t["n"].tolist() == [12, 12, 24] and t["n_patients"].tolist() == [6, 6, 12]
    assert t["prevalence"].tolist() == pytest.approx([9 / 12, 2 / 12, 11 / 24])
    for row in t.itertuples():
        # Reference: scipy.stats.binomtest(...).proportion_ci(method="wilson").
        ref = binomtest(int(row.n_positive), int(row.n)).proportion_ci(0.95, method="wilson")
        assert (row.ci_low, row.ci_high) == pytest.approx((ref.low, ref.high), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), frac=st.floats(0, 1), conf=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_scipy_property(n, frac, conf):
    k = round(frac * n)
    lo, hi = wilson_interval(k, n, conf)
    # Reference: scipy.stats.binomtest(k, n).proportion_ci(method="wilson").
    ref = binomtest(k, n).proportion_ci(conf, method="wilson")
    assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_site_prevalence_heterogeneity_note(tmp_path):
    labels = [1] * 12 + [0] * 12
    s = integrity_section(load_manifest(write_cohort(tmp_path, labels=labels)))
    assert any("Label prevalence differs between sites" in n for n in s.notes)


@pytest.mark.parametrize(
    "table", [[[10, 2], [3, 9]], [[30, 5, 1], [20, 20, 4], [7, 1, 9]], [[1, 1], [1, 1]]]
)
def test_chi2_pvalue_matches_scipy(table):
    # Reference: scipy.stats.chi2_contingency without Yates's continuity correction.
    ref = chi2_contingency(np.array(table), correction=False).pvalue
    assert _chi2_independence_pvalue(np.array(table)) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_multiclass_prevalence_has_one_row_per_class():
    meta = pd.DataFrame({"label": [0, 1, 2, 2], "site": ["a", "a", "b", "b"]})
    c = Cohort(meta, images=np.arange(64, dtype=np.uint8).reshape(4, 4, 4))
    t = integrity_section(c).tables["site_prevalence"]
    assert len(t) == 3 * 3 and set(t["class"]) == {"class_0", "class_1", "class_2"}
    assert t["n_patients"].isna().all()


def test_wilson_interval_hand_values():
    lo, hi = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    # z = 1.959964; k=0: high = z^2 / (n + z^2) = 3.841459 / 13.841459
    assert lo[0] == 0.0 and hi[0] == pytest.approx(3.841459 / 13.841459, rel=1e-6)
    assert (lo[1], hi[1]) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert (lo[2], hi[2]) == pytest.approx((1 - hi[0], 1.0))
    lo, hi = wilson_interval(0, 0)
    assert np.isnan(lo) and np.isnan(hi)
    with pytest.raises(InvalidParameterError, match="'confidence' parameter"):
        wilson_interval(1, 2, confidence=95)


def test_policy_thresholds_are_used(tmp_path):
    m = write_cohort(tmp_path)
    (tmp_path / "img" / "0.png").unlink()
    c = load_manifest(m)
    lenient = Policy.from_mapping(
        {"checks": {"integrity.unreadable_files": {"op": "<=", "threshold": 0.05}}}
    )
    assert _status(integrity_section(c, policy=lenient), "integrity.unreadable_files").status == (
        "pass"
    )
    strict = Policy.from_mapping(
        {"checks": {"integrity.unreadable_files": {"op": "<=", "threshold": 0.0}}}
    )
    chk = _status(integrity_section(c, policy=strict), "integrity.unreadable_files")
    assert chk.status == "fail" and chk.threshold == 0.0


def test_parameter_validation(clean):
    with pytest.raises(InvalidParameterError, match="'cohort' parameter of integrity_section"):
        integrity_section(pd.DataFrame())
    with pytest.raises(InvalidParameterError, match="'train' parameter"):
        integrity_section(clean, train="train.csv")
    with pytest.raises(InvalidParameterError, match="'policy' parameter"):
        integrity_section(clean, policy={})
