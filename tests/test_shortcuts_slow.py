"""The shortcut audit on trained models: power, false alarms, controls, foreign data (slow).

Run with ``python -m pytest -m slow tests/test_shortcuts_slow.py``. Every model is trained
with a fixed seed on one torch thread, so the numbers are the same on every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.cli.app import run
from medaudit.data import generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, compute_normalization, train_model
from medaudit.pipeline import run_audits
from medaudit.report import Policy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

FAST = {"probe_resamples": 20, "occlusion_images": 0}


def _train(cohort, *, epochs, seed, arch="small_cnn"):
    train, val = cohort.split("train"), cohort.split("val")
    mean, std = compute_normalization(train)
    model = build_model(arch, random_state=seed)
    res = train_model(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        mean=mean,
        std=std,
        patience=None,
    )
    return res.model, mean, std


def _audit(model, cohort, mean, std, attributes, *, seed=0, **settings):
    audited = cohort.subset(cohort.meta["split"].isin(["test", "external"]).to_numpy())
    preds = predict(model, audited, mean=mean, std=std)
    pol = Policy.from_mapping(
        {"settings": {"seed": seed, "shortcuts": {"attributes": attributes, **settings}}}
    )
    rep = run_audits(
        preds,
        audited,
        audits=["shortcuts"],
        policy=pol,
        train=cohort.split("train"),
        model=model,
        model_info={
            "image_size": cohort.images.shape[-1],
            "in_channels": 1,
            "mean": mean,
            "std": std,
        },
    )
    return rep.section("shortcuts")


# ------------------------------------------------------------------------- power
@pytest.fixture(scope="module")
def strong_shortcut():
    """A model trained where the site marker agrees with the label at strength 0.9.

    Insurance is planted strongly through the site (``insurance_spread`` 4: the sites'
    private shares are 0.05-0.96, so the site alone reads insurance at AUROC 0.90 on the
    audited images); only the insurance column depends on it.
    """
    c = generate_hospitals(
        n_sites=4,
        patients_per_site=150,
        image_size=32,
        shortcut_strength=0.9,
        seed=11,
        insurance_spread=4.0,
    )
    model, mean, std = _train(c, epochs=6, seed=0)
    return c, model, mean, std


def test_marker_shortcut_at_strength_09_is_found_and_swapping_flips_decisions(strong_shortcut):
    c, model, mean, std = strong_shortcut
    sec = _audit(model, c, mean, std, ["marker", "site", "insurance"], probe_resamples=30)
    checks = {x.id: x for x in sec.checks}
    assert checks["shortcuts.marker.used"].status == "fail", checks["shortcuts.marker.used"]
    cf = sec.tables["counterfactual"].set_index(["attribute", "swap"]).loc[("marker", "both")]
    # A measurable share of decisions flips: its interval excludes zero (measured:
    # 3% [1%, 8%] of 128 swapped images; the score moves by about 0.07 each way).
    assert cf["flipped"] > 0.0 and cf["flipped_low"] > 0.0, cf
    verdicts = sec.tables["verdicts"].set_index("attribute")
    assert verdicts.loc["marker", "used"] == "yes"


def test_insurance_is_encoded_but_not_beyond_site_and_age(strong_shortcut):
    # Insurance is planted only through site and age: the probe reads it, the control
    # (site, the demographics, age, label) reads it as well.
    c, model, mean, std = strong_shortcut
    sec = _audit(model, c, mean, std, ["insurance"], probe_resamples=30)
    enc = {x.id: x for x in sec.checks}["shortcuts.insurance.encoded"]
    probes = sec.tables["probes"].set_index("attribute").loc["insurance"]
    # Measured: probe AUROC 0.86 [0.74, 0.93], control 0.90: encoded (the check fails, at
    # information severity) and reading no more than the control (difference -0.04, CI
    # upper end -0.005).
    assert enc.status == "fail" and enc.severity == "info", enc
    assert not probes["beyond_metadata"] and "not beyond" in enc.reason
    assert probes["difference"] < 0, probes
    assert "site" in probes["control_columns"] and "age" in probes["control_columns"]
    verdict = sec.tables["verdicts"].set_index("attribute").loc["insurance", "verdict"]
    assert verdict.startswith("insurance: encoded") and "but not beyond what" in verdict


# -------------------------------------------------------------------- false alarms
def test_no_marker_shortcut_passes_in_at_least_95_percent_of_seeds():
    statuses = []
    for seed in range(20):
        c = generate_hospitals(
            n_sites=3, patients_per_site=110, image_size=24, shortcut_strength=0.0, seed=seed
        )
        model, mean, std = _train(c, epochs=3, seed=seed)
        sec = _audit(model, c, mean, std, ["marker"], seed=seed, **FAST)
        statuses.append({x.id: x.status for x in sec.checks}["shortcuts.marker.used"])
    passed = np.mean([s == "pass" for s in statuses])
    assert passed >= 0.95, statuses
    assert "fail" not in statuses


# ------------------------------------------------------ a data set medaudit did not make
def _write_foreign_dataset(folder: Path, *, agreement: float, seed: int) -> tuple[Path, Path]:
    """PNGs + manifests written with plain numpy/PIL: a faint blob is the disease, a bright
    square in the top-right corner is an artefact recorded in the column ``tag``.

    ``agreement``: probability that ``tag`` equals the label (0.5: independent).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = []
    yy, xx = np.mgrid[0:32, 0:32]
    for pid in range(1200):
        label = int(rng.random() < 0.4)
        for k in range(int(rng.integers(1, 3))):
            img = 0.35 + 0.1 * (yy / 32) + rng.normal(0, 0.06, (32, 32))
            if label:
                cy, cx = rng.integers(10, 22, 2)
                img += 0.12 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
            tag = int(rng.random() < agreement) if label else int(rng.random() > agreement)
            if tag:
                img[2:6, 26:30] = 0.95
            name = f"p{pid:04d}_{k}.png"
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / name)
            split = "test" if pid % 2 == 0 else ("val" if pid % 4 == 1 else "train")
            rows.append(
                {"path": name, "label": label, "patient_id": f"P{pid}", "tag": tag, "split": split}
            )
    df = pd.DataFrame(rows)
    train_csv, test_csv = folder / "train.csv", folder / "test.csv"
    df[df.split != "test"].to_csv(train_csv, index=False)
    df[df.split == "test"].drop(columns="split").to_csv(test_csv, index=False)
    return train_csv, test_csv


@pytest.mark.parametrize(
    ("agreement", "expect_code", "expect_status"), [(0.9, 1, "fail"), (0.5, 0, "pass")]
)
def test_foreign_dataset_artefact_column_cli(tmp_path, agreement, expect_code, expect_status):
    train_csv, test_csv = _write_foreign_dataset(tmp_path / "data", agreement=agreement, seed=3)
    ckpt = tmp_path / "model.safetensors"
    assert (
        run(
            [
                "train",
                "--data",
                str(train_csv),
                "--out",
                str(ckpt),
                "--epochs",
                "6",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "report"
    code = run(
        [
            "audit",
            "--model",
            str(ckpt),
            "--data",
            str(test_csv),
            "--audits",
            "shortcuts",
            "--shortcut-attributes",
            "tag",
            "--set",
            "shortcuts.probe_resamples=20",
            "--train-data",
            str(train_csv),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    doc = json.loads((out / "audit.json").read_text())
    used = {c["id"]: c for c in doc["sections"]["shortcuts"]["checks"]}["shortcuts.tag.used"]
    assert used["status"] == expect_status, used
    assert code == expect_code


# ------------------------------------------------------------------ disentanglement
def test_disentangling_site_removes_it_without_costing_the_task():
    """Issue 12: for each of three initialisations the site probe is 0.65 or less, the task
    AUROC falls by 0.03 or less and the held-out-site AUROC by 0.05 or less (on average
    not at all).

    Measured on one CPU (random_state 0-4): baseline site probe 0.98-0.995; disentangled
    (the returned model holds the weights averaged over the second half of training)
    0.518 / 0.577 / 0.546 / 0.560 / 0.578 (the last weights, and the old default
    penalty: 0.68 / 0.58 / 0.73 / 0.75 / 0.78). Test AUROC +0.000 to +0.013; held-out-site
    AUROC +0.023 / -0.034 / +0.004 / -0.018 / +0.018.
    """
    from medaudit.shortcuts import train_disentangled
    from medaudit.shortcuts._attributes import code_attribute, patient_codes
    from medaudit.shortcuts._probe import attribute_probe
    from medaudit.stats import auroc

    c = generate_hospitals(
        n_sites=4, patients_per_site=150, image_size=32, shortcut_strength=0.0, seed=0
    )
    train, test, ext = (c.split(s) for s in ("train", "test", "external"))
    mean, std = compute_normalization(train)

    def measure(model):
        pt, pe = predict(model, test, mean=mean, std=std), predict(model, ext, mean=mean, std=std)
        site = code_attribute(test.meta, "site")
        probe = attribute_probe(
            pt.features, site.codes, patient_codes(test.meta), n_levels=site.n_levels, n_resamples=2
        )
        return auroc(pt.labels, pt.score), auroc(pe.labels, pe.score), probe.probe.value

    ext_changes = []
    for rs in (0, 1, 2):
        # The same budget for both and no selection on validation AUROC (it would pick an
        # epoch before the adversary has done its work): the baseline keeps its last
        # weights, the disentangled model the average of its second half.
        kw = {"epochs": 20, "batch_size": 32, "seed": rs, "mean": mean, "std": std}
        base = train_model(build_model("small_cnn", random_state=rs), train, **kw).model
        dis = train_disentangled(
            build_model("small_cnn", random_state=rs), train, attributes="site", **kw
        ).result.model
        (b_task, b_ext, b_site), (d_task, d_ext, d_site) = measure(base), measure(dis)
        assert b_site > 0.9  # the baseline reads the site
        assert d_site <= 0.65, (rs, b_site, d_site)
        assert d_task >= b_task - 0.03, (rs, b_task, d_task)
        assert d_ext >= b_ext - 0.05, (rs, b_ext, d_ext)
        ext_changes.append(d_ext - b_ext)
    # Measured mean -0.002 (seeds 0-2); held-out AUROC on ~150 images moves by a few
    # hundredths with the CPU, so the guard leaves room for that, not for a real fall.
    # The unit of "does not fall" is the training run: one initialisation's change can be
    # told from zero on these images (random_state 1: -0.034, paired patient bootstrap
    # [-0.062, -0.008]), but over six initialisations the mean change is +0.001.
    assert np.mean(ext_changes) >= -0.04, ext_changes


# ----------------------------------------------------------------- experiment smoke
def test_experiment_smoke_run_writes_its_table_and_report(tmp_path):
    import importlib.util

    from medaudit.report import validate_audit_json

    path = Path(__file__).resolve().parents[1] / "experiments" / "shortcuts" / "run.py"
    spec = importlib.util.spec_from_file_location("shortcut_experiment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df["model"]) == ["baseline", "disentangled (site)"]
    assert {"probe_site", "probe_insurance", "marker_used", "sex_auroc_gap"} <= set(df.columns)
    doc = json.loads((tmp_path / "audit.json").read_text())
    validate_audit_json(doc)
    assert "compare" in doc["sections"]["shortcuts"]["tables"]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "results.md").is_file()
