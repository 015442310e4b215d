"""Image readers, manifests and MedMNIST-style .npz files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.data import Cohort
from medaudit.data._readers import (
    MSG_MANIFEST_COLUMNS,
    MSG_MANIFEST_EMPTY,
    MSG_MANIFEST_NOT_FOUND,
    MSG_NAN_LABELS,
    MSG_PICKLED,
    REASON_INVALID_LABEL,
    REASON_MISSING_FILE,
    REASON_NO_PATH,
    REASON_UNREADABLE,
    load_cohort,
    load_manifest,
    load_npz,
    read_image,
)

RNG = np.random.default_rng(0)


# -- image files ---------------------------------------------------------------------------


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    with_pixels: bool = True,
) -> Path:
    """A minimal uncompressed single-frame DICOM file, written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def minmax(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return (v - v.min()) / (v.max() - v.min())


def test_png_8bit_gray_exact(tmp_path):
    a = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (1, 5, 7)
    np.testing.assert_array_equal(out[0], a.astype(np.float32) / 255)


def test_png_16bit_scaled_by_65535(tmp_path):
    a = np.array([[0, 1000, 65535], [30000, 2, 40000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(str(tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0], a.astype(np.float32) / 65535)


def test_png_rgb_keeps_three_channels_in_order(tmp_path):
    a = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(a, "RGB").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (3, 4, 6)
    np.testing.assert_array_equal(out, np.moveaxis(a, -1, 0).astype(np.float32) / 255)


def test_png_rgba_drops_alpha(tmp_path):
    a = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, np.moveaxis(a[..., :3], -1, 0).astype(np.float32) / 255)


def test_palette_gray_becomes_one_channel_colour_stays_rgb(tmp_path):
    gray = Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8)).convert("P")
    gray.save(tmp_path / "gray.png")
    g = read_image(tmp_path / "gray.png")
    assert g.shape == (1, 8, 8)
    np.testing.assert_array_equal(g[0], np.asarray(gray.convert("L")) / np.float32(255))
    colour = Image.new("P", (4, 4))
    colour.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    colour.putdata([0, 1] * 8)
    colour.save(tmp_path / "colour.png")
    c = read_image(tmp_path / "colour.png")
    assert c.shape == (3, 4, 4)
    np.testing.assert_array_equal(c[:, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(c[:, 0, 1], [0, 0, 1])


def test_jpeg_gray_and_rgb(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "g.jpg", quality=95)
    g = read_image(tmp_path / "g.jpg")
    assert g.shape == (1, 16, 16)
    np.testing.assert_allclose(g, 128 / 255, atol=2 / 255)  # lossy codec
    Image.fromarray(np.full((16, 16, 3), (200, 50, 10), np.uint8), "RGB").save(tmp_path / "c.jpeg")
    c = read_image(tmp_path / "c.jpeg")
    assert c.shape == (3, 16, 16)
    np.testing.assert_allclose(c.mean(axis=(1, 2)), np.array([200, 50, 10]) / 255, atol=4 / 255)


def test_tiff_8bit_16bit_and_float(tmp_path):
    a8 = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    a16 = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    f = RNG.random((6, 5), dtype=np.float32)
    Image.fromarray(a8).save(tmp_path / "a.tif")
    Image.fromarray(a16).save(tmp_path / "b.tiff")
    Image.fromarray(f).save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif")[0], a8 / np.float32(255))
    np.testing.assert_array_equal(read_image(tmp_path / "b.tiff")[0], a16 / np.float32(65535))
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif")[0], f)


def test_tiff_float_out_of_range_is_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(tmp_path / "hu.tif")
    with pytest.raises(InvalidInputError, match=r"hu\.tif: unreadable image.*\[0, 1\]"):
        read_image(tmp_path / "hu.tif")


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    rgb=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_png_roundtrip_property(tmp_path_factory, h, w, rgb, seed):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3) if rgb else (h, w), np.uint8)
    f = tmp_path_factory.mktemp("png") / "x.png"
    Image.fromarray(a).save(f)
    out = read_image(f)
    expected = np.moveaxis(a, -1, 0) if rgb else a[None]
    np.testing.assert_array_equal(out, expected / np.float32(255))


# -- DICOM ---------------------------------------------------------------------------------


def test_dicom_rescale_then_minmax(tmp_path):
    p = np.array([[0, 100, 200], [300, 400, 1000]], dtype=np.uint16)
    f = write_dicom(tmp_path / "a.dcm", p, slope=2.0, intercept=-1024.0)
    expected = minmax(p * 2.0 - 1024.0)
    np.testing.assert_allclose(read_image(f)[0], expected, atol=1e-7)


def test_dicom_negative_slope_is_applied(tmp_path):
    # Min-max scaling hides a positive affine rescale, but a negative slope flips the image:
    # this proves the slope is really applied before scaling.
    p = np.array([[0, 10], [20, 40]], dtype=np.uint16)
    f = write_dicom(tmp_path / "a.dcm", p, slope=-1.0, intercept=5.0)
    np.testing.assert_allclose(read_image(f)[0], [[1.0, 0.75], [0.5, 0.0]], atol=1e-7)


def test_dicom_monochrome1_is_inverted(tmp_path):
    p = np.array([[0, 10], [20, 40]], dtype=np.uint16)
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", p))[0]
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", p, photometric="MONOCHROME1"))[0]
    np.testing.assert_allclose(m2, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)
    np.testing.assert_allclose(m1, [[1.0, 0.75], [0.5, 0.0]], atol=1e-7)
    m1r = read_image(
        write_dicom(tmp_path / "m1r.dcm", p, photometric="MONOCHROME1", slope=3.0, intercept=7.0)
    )[0]
    np.testing.assert_allclose(m1r, 1.0 - minmax(p * 3.0 + 7.0), atol=1e-7)


def test_dicom_signed_pixels_and_constant_image(tmp_path):
    p = np.array([[-1000, 0], [500, 3000]], dtype=np.int16)
    np.testing.assert_allclose(
        read_image(write_dicom(tmp_path / "s.dcm", p))[0], minmax(p), atol=1e-7
    )
    flat = read_image(write_dicom(tmp_path / "c.dcm", np.full((3, 3), 7, np.uint16)))
    np.testing.assert_array_equal(flat, np.zeros((1, 3, 3), np.float32))


def test_dicom_without_pixels_is_unreadable(tmp_path):
    f = write_dicom(tmp_path / "np.dcm", np.zeros((2, 2), np.uint16), with_pixels=False)
    with pytest.raises(InvalidInputError, match=r"np\.dcm: unreadable image .*no pixel data"):
        read_image(f)


# -- .npy ----------------------------------------------------------------------------------


def test_npy_variants(tmp_path):
    a = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    np.save(tmp_path / "hw.npy", a)
    np.testing.assert_array_equal(read_image(tmp_path / "hw.npy"), a[None] / np.float32(255))
    chw = RNG.random((3, 5, 6)).astype(np.float64)
    np.save(tmp_path / "chw.npy", chw)
    np.testing.assert_allclose(read_image(tmp_path / "chw.npy"), chw, rtol=1e-7)
    hwc = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    np.save(tmp_path / "hwc.npy", hwc)
    np.testing.assert_array_equal(
        read_image(tmp_path / "hwc.npy"), np.moveaxis(hwc, -1, 0) / np.float32(65535)
    )
    one = RNG.random((5, 6, 1), dtype=np.float32)
    np.save(tmp_path / "hw1.npy", one)
    np.testing.assert_array_equal(read_image(tmp_path / "hw1.npy"), np.moveaxis(one, -1, 0))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0.1, np.nan]]), "NaN or infinite"),
        (np.array([[0.1, np.inf]]), "NaN or infinite"),
        (np.array([[0.0, 2.0]]), r"must lie in \[0, 1\]"),
        (np.zeros((2, 4, 4, 4)), r"shape \(2, 4, 4, 4\)"),
        (np.zeros((4, 4, 5)), r"shape \(4, 4, 5\)"),
        (np.zeros((4, 4), np.int32), "dtype int32"),
        (np.array([[None]], dtype=object), "pickled object array"),
    ],
)
def test_npy_bad_content_is_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(InvalidInputError, match=rf"bad\.npy: unreadable image .*{message}"):
        read_image(tmp_path / "bad.npy")


# -- read_image errors ---------------------------------------------------------------------


def test_read_image_errors_name_file_and_reason(tmp_path):
    with pytest.raises(InvalidInputError) as e:
        read_image(tmp_path / "nope.png")
    assert (
        str(e.value) == f"Cannot read image {tmp_path / 'nope.png'}: file not found (no such file)."
    )
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InvalidInputError, match=r"x\.gif: unsupported extension \(\.gif"):
        read_image(tmp_path / "x.gif")
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(InvalidInputError, match=r"junk\.png: unreadable image \(Unidentified"):
        read_image(tmp_path / "junk.png")


def test_truncated_png_is_unreadable(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"t\.png: unreadable image"):
        read_image(tmp_path / "t.png")


# -- manifests -----------------------------------------------------------------------------


def make_images(folder: Path, n: int, *, size: int = 8) -> list[str]:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        a = np.full((size, size), i * 7 % 256, np.uint8)
        Image.fromarray(a).save(folder / "img" / f"{i}.png")
        rel.append(f"img/{i}.png")
    return rel


def test_csv_manifest_integer_labels_and_lazy_images(tmp_path):
    rel = make_images(tmp_path, 4)
    pd.DataFrame(
        {
            "path": rel,
            "label": [0, 1, 1, 0],
            "patient_id": ["007", "007", "012", "013"],
            "site": ["A", "A", "B", "B"],
            "sex": ["F", "M", "F", "M"],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    c = load_manifest(tmp_path / "manifest.csv")
    assert isinstance(c, Cohort) and len(c) == 4 and c.name == "manifest.csv"
    assert c.class_names == ["negative", "positive"]
    assert c.labels.tolist() == [0, 1, 1, 0]
    assert c.meta["patient_id"].tolist() == ["007", "007", "012", "013"]  # leading zeros kept
    assert c.attributes == ["sex"]
    assert len(c.dropped) == 0
    np.testing.assert_array_equal(c.image(2), np.full((1, 8, 8), 14 / 255, np.float32))
    assert c.load_all().shape == (4, 1, 8, 8)


def test_csv_with_byte_order_mark_and_crlf(tmp_path):
    rel = make_images(tmp_path, 2)
    text = "path,label\r\n" + "".join(f"{r},{i}\r\n" for i, r in enumerate(rel))
    (tmp_path / "excel.csv").write_bytes(text.encode("utf-8-sig"))
    c = load_manifest(tmp_path / "excel.csv")
    assert list(c.meta.columns) == ["path", "label"] and c.labels.tolist() == [0, 1]


def test_parquet_manifest_and_absolute_paths(tmp_path):
    rel = make_images(tmp_path / "data", 3)
    absolute = [str(tmp_path / "data" / r) for r in rel]
    (tmp_path / "m").mkdir()
    pd.DataFrame(
        {"path": absolute, "label": [1, 0, 1], "split": ["train", "test", "test"]}
    ).to_parquet(tmp_path / "m" / "manifest.parquet")
    c = load_cohort(tmp_path / "m" / "manifest.parquet")
    assert len(c) == 3 and c.labels.tolist() == [1, 0, 1]
    assert len(c.split("test")) == 2
    np.testing.assert_array_equal(c.image(1), np.full((1, 8, 8), 7 / 255, np.float32))


def test_string_labels_sorted_or_declared(tmp_path):
    rel = make_images(tmp_path, 3)
    pd.DataFrame({"path": rel, "label": ["pneumonia", "normal", " pneumonia "]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    c = load_manifest(tmp_path / "m.csv")
    assert c.class_names == ["normal", "pneumonia"] and c.labels.tolist() == [1, 0, 1]
    d = load_manifest(tmp_path / "m.csv", class_names=["pneumonia", "normal"])
    assert d.class_names == ["pneumonia", "normal"] and d.labels.tolist() == [0, 1, 0]


def test_labels_outside_declared_classes_are_dropped_not_fixed(tmp_path):
    rel = make_images(tmp_path, 4)
    pd.DataFrame({"path": rel, "label": ["normal", "covid", "pneumonia", "normal"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    c = load_manifest(tmp_path / "m.csv", class_names=["normal", "pneumonia"])
    assert len(c) == 3 and c.labels.tolist() == [0, 1, 0]
    assert c.dropped[["row", "label", "reason"]].to_dict("records") == [
        {"row": 1, "label": "covid", "reason": REASON_INVALID_LABEL}
    ]
    pd.DataFrame({"path": rel, "label": [0, 1, 2, -1]}).to_csv(tmp_path / "n.csv", index=False)
    n = load_manifest(tmp_path / "n.csv", class_names=["a", "b"])
    assert n.labels.tolist() == [0, 1]
    assert n.dropped["row"].tolist() == [2, 3]
    assert set(n.dropped["reason"]) == {REASON_INVALID_LABEL}


def test_missing_and_corrupt_files_are_dropped_and_recorded(tmp_path):
    rel = make_images(tmp_path, 4)
    (tmp_path / rel[1]).unlink()
    (tmp_path / rel[2]).write_bytes(b"\x89PNG garbage")
    pd.DataFrame({"path": [*rel, ""], "label": [0, 1, 0, 1, 1]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    c = load_manifest(tmp_path / "m.csv")
    assert len(c) == 2 and c.meta["path"].tolist() == [rel[0], rel[3]]
    assert c.dropped["row"].tolist() == [1, 2, 4]
    assert c.dropped["reason"].tolist() == [REASON_MISSING_FILE, REASON_UNREADABLE, REASON_NO_PATH]
    assert list(c.dropped.columns) == ["row", "path", "label", "reason", "detail"]
    unchecked = load_manifest(tmp_path / "m.csv", check_files=False)
    assert len(unchecked) == 4 and unchecked.dropped["reason"].tolist() == [REASON_NO_PATH]


def test_nothing_readable_is_one_clear_error(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    with pytest.raises(InvalidInputError) as e:
        load_manifest(tmp_path / "m.csv")
    assert str(e.value) == (
        f"None of the 2 image(s) listed in {tmp_path / 'm.csv'} could be used "
        "(2 file not found); first problem: row 0: file not found (no such file)."
    )


def test_manifest_errors_word_for_word(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(InvalidInputError) as e:
        load_manifest(missing)
    assert str(e.value) == MSG_MANIFEST_NOT_FOUND.format(path=missing)

    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInputError) as e:
        load_manifest(tmp_path / "empty.csv")
    assert str(e.value) == MSG_MANIFEST_EMPTY.format(path=tmp_path / "empty.csv")

    (tmp_path / "header.csv").write_text("path,label\n")
    with pytest.raises(InvalidInputError) as e:
        load_manifest(tmp_path / "header.csv")
    assert str(e.value) == MSG_MANIFEST_EMPTY.format(path=tmp_path / "header.csv")

    (tmp_path / "cols.csv").write_text("file,diagnosis\na.png,1\n")
    with pytest.raises(InvalidInputError) as e:
        load_manifest(tmp_path / "cols.csv")
    assert str(e.value) == MSG_MANIFEST_COLUMNS.format(
        path=tmp_path / "cols.csv", missing="'path', 'label'", found="file, diagnosis"
    )
    assert "needs 'path'" in str(e.value)


def test_nan_labels_are_counted(tmp_path):
    rel = make_images(tmp_path, 4)
    pd.DataFrame({"path": rel, "label": [1, None, 0, None]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InvalidInputError) as e:
        load_manifest(tmp_path / "m.csv")
    assert str(e.value) == MSG_NAN_LABELS.format(path=tmp_path / "m.csv", n=2, rows="1, 3")
    pd.DataFrame({"path": rel, "label": ["a", "", "b", "a"]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    with pytest.raises(InvalidInputError, match=r"has 1 row\(s\) with no label"):
        load_manifest(tmp_path / "s.csv")


def test_fractional_numeric_labels_are_refused(tmp_path):
    rel = make_images(tmp_path, 2)
    pd.DataFrame({"path": rel, "label": [0.5, 1.0]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InvalidInputError, match="not whole class indices"):
        load_manifest(tmp_path / "m.csv")


def test_manifest_parameter_validation(tmp_path):
    with pytest.raises(InvalidParameterError, match="'class_names' parameter of load_manifest"):
        load_manifest(tmp_path / "m.csv", class_names="ab")
    with pytest.raises(InvalidParameterError, match="distinct"):
        load_manifest(tmp_path / "m.csv", class_names=["a", "a"])
    with pytest.raises(InvalidParameterError, match="'check_files'"):
        load_manifest(tmp_path / "m.csv", check_files="yes")


def test_unparsable_parquet_is_clear(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match=r"m\.parquet is not a valid Parquet file"):
        load_manifest(tmp_path / "m.parquet")


# -- .npz ----------------------------------------------------------------------------------


def test_medmnist_npz_gray(tmp_path):
    f = tmp_path / "pneumoniamnist.npz"
    tr = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    va = RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    te = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.savez(
        f,
        test_images=te,
        test_labels=np.array([[0], [1], [1]]),
        train_images=tr,
        train_labels=np.array([[0], [1], [0], [1], [1]]),
        val_images=va,
        val_labels=np.array([[1], [0]]),
    )
    c = load_cohort(f)
    assert len(c) == 10 and c.image_shape == (1, 28, 28)
    assert c.meta["split"].tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    assert c.labels.tolist() == [0, 1, 0, 1, 1, 1, 0, 0, 1, 1]
    np.testing.assert_array_equal(c.image(5), va[0][None] / np.float32(255))
    assert len(c.split("test")) == 3


def test_medmnist_npz_rgb_flat_labels(tmp_path):
    f = tmp_path / "derma.npz"
    x = RNG.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(f, train_images=x, train_labels=np.array([0, 3, 6, 2]))
    c = load_npz(f)
    assert c.image_shape == (3, 8, 8) and c.num_classes == 7
    np.testing.assert_array_equal(c.image(1), np.moveaxis(x[1], -1, 0) / np.float32(255))


def test_npz_refuses_pickled_objects(tmp_path):
    f = tmp_path / "evil.npz"
    np.savez(f, train_images=np.array([object()], dtype=object), train_labels=np.array([0]))
    with pytest.raises(InvalidInputError) as e:
        load_npz(f)
    assert str(e.value) == MSG_PICKLED.format(path=f)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros(3)}, "no image arrays"),
        ({"train_images": np.zeros((2, 4, 4), np.uint8)}, "lacks the label array"),
        (
            {"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.zeros((2, 14))},
            "multi-label",
        ),
        (
            {"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.zeros(3)},
            "3 labels for 2 images",
        ),
        (
            {"train_images": np.zeros((2, 4), np.uint8), "train_labels": np.zeros(2)},
            "expected \\(N, H, W\\)",
        ),
        (
            {
                "train_images": np.zeros((2, 4, 4), np.uint8),
                "train_labels": np.zeros(2, int),
                "test_images": np.zeros((2, 5, 5), np.uint8),
                "test_labels": np.zeros(2, int),
            },
            "different shapes",
        ),
        (
            {"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.array([0, np.nan])},
            "NaN or non-integer",
        ),
    ],
)
def test_npz_bad_layouts(tmp_path, arrays, message):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(InvalidInputError, match=message):
        load_npz(f)


def test_npz_plain_keys_and_declared_classes(tmp_path):
    f = tmp_path / "plain.npz"
    np.savez(f, images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1, 2]))
    c = load_npz(f, class_names=["a", "b"])
    assert "split" not in c.meta.columns and c.labels.tolist() == [0, 1]
    assert c.dropped[["path", "reason"]].to_dict("records") == [
        {"path": "images[2]", "reason": REASON_INVALID_LABEL}
    ]


def test_load_cohort_dispatch_errors(tmp_path):
    with pytest.raises(InvalidInputError, match=r"Unsupported data file .*x\.json"):
        load_cohort(tmp_path / "x.json")
    with pytest.raises(InvalidInputError, match="Data file not found"):
        load_cohort(tmp_path / "x.npz")


# -- speed ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_files_5000_pngs_is_fast(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5000):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(img / f"{i}.png")
    pd.DataFrame(
        {"path": [f"img/{i}.png" for i in range(5000)], "label": np.arange(5000) % 2}
    ).to_csv(tmp_path / "m.csv", index=False)
    t0 = time.perf_counter()
    c = load_manifest(tmp_path / "m.csv")
    elapsed = time.perf_counter() - t0
    assert len(c) == 5000 and len(c.dropped) == 0
    assert elapsed < 10.0, f"check_files took {elapsed:.1f} s for 5,000 PNGs"
