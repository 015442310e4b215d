"""Slow robustness tests: end to end on a data set medaudit did not make, the demo's
planted effects, and the coverage of the sweep's intervals by simulation.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sst

from medaudit.cli.app import run
from medaudit.robustness import list_corruptions
from medaudit.robustness._metrics import auroc_estimate
from medaudit.robustness._subgroups import GroupSettings, subgroup_drops
from medaudit.stats import bootstrap_counts

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _write_foreign_dataset(root, *, n_patients: int, seed: int) -> None:
    """PNG files and manifests written with plain NumPy and Pillow (no medaudit code).

    48 x 48 grayscale: a smooth background with film grain; positives carry a faint
    Gaussian blob somewhere in the middle. One or two images per patient, two sites.
    """
    rng = np.random.default_rng(seed)
    (root / "png").mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:48]
    rows = []
    for p in range(n_patients):
        y = int(rng.random() < 0.45)
        sex = "F" if rng.random() < 0.5 else "M"
        split = "train" if p < 0.6 * n_patients else ("val" if p < 0.75 * n_patients else "test")
        for k in range(int(rng.integers(1, 3))):
            img = 0.35 + 0.25 * (yy / 47) + 0.05 * rng.standard_normal((48, 48))
            if y:
                cy, cx = rng.uniform(12, 36, 2)
                img += 0.25 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
            name = f"png/p{p:04d}_{k}.png"
            Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(root / name)
            rows.append(
                {"path": name, "label": y, "patient_id": f"P{p}", "sex": sex,
                 "site": "north" if p % 3 else "south", "split": split}
            )  # fmt: skip
    meta = pd.DataFrame(rows)
    meta[meta["split"] != "test"].to_csv(root / "train.csv", index=False)
    meta[meta["split"] == "test"].drop(columns="split").to_csv(root / "test.csv", index=False)


def test_end_to_end_on_a_manifest_medaudit_did_not_write(tmp_path, capsys):
    data = tmp_path / "data"
    _write_foreign_dataset(data, n_patients=360, seed=11)
    ckpt = tmp_path / "model.safetensors"
    args = ["train", "--data", str(data / "train.csv"), "--out", str(ckpt), "--epochs", "6"]
    assert run([*args, "--seed", "0", "--no-progress"]) == 0
    out = tmp_path / "report"
    code = run(
        ["audit", "--model", str(ckpt), "--data", str(data / "test.csv"), "--out", str(out),
         "--audits", "robustness", "--corruptions", "all", "--sensitive", "sex",
         "--set", "n_bootstrap=300", "--no-progress"]
    )  # fmt: skip
    assert code in (0, 1), capsys.readouterr().err
    doc = json.loads((out / "audit.json").read_text())
    sweep = pd.DataFrame(doc["sections"]["robustness"]["tables"]["sweep"])
    counts = sweep.groupby("corruption")["severity"].nunique()
    print(f"sweep: {len(counts)} corruptions x 5 severities; clean and cells:")
    print(sweep[["corruption", "severity", "auroc", "auroc_ci_low", "auroc_ci_high"]])
    assert len(counts) >= 15 and (counts == 5).all()
    assert len(counts) == len(list_corruptions(channels=1))
    noise = sweep[sweep["corruption"] == "gaussian_noise"].set_index("severity")
    assert noise.loc[5, "auroc"] <= noise.loc[1, "auroc_ci_high"]
    overall = pd.DataFrame(doc["sections"]["robustness"]["tables"]["overall"])
    assert overall.set_index("metric").loc["AUROC (clean)", "value"] > 0.8  # a model that learned
    # no image of a real data set appears unless asked for
    assert "severity_strip" not in doc["sections"]["robustness"]["figures"]


def test_demo_noise_and_the_heldout_site_degrade_the_model(full_demo_run):
    from medaudit.demo import DemoSettings
    from medaudit.models import load_checkpoint
    from medaudit.pipeline import run_audits
    from medaudit.report import Policy

    sec = full_demo_run.report.section("robustness")  # the demo's default sweep (core)
    noise = sec.tables["sweep"].set_index(["corruption", "severity"]).loc["gaussian_noise"]
    print(noise[["auroc", "auroc_drop", "auroc_drop_ci_low", "auroc_drop_ci_high"]])
    assert noise.loc[5, "auroc_drop_ci_low"] > 0  # measurable: the CI excludes no loss
    shift = sec.tables["acquisition_shift"].set_index("site")
    held = shift[shift["held_out"]]
    print(shift)
    assert len(held) == 1 and held["auroc_drop_ci_low"].iloc[0] > 0
    groups = sec.tables["subgroups"]
    female = groups[(groups["attribute"] == "sex") & (groups["group"] == "female")]
    print(female[["corruption", "auroc_drop", "excess_drop", "excess_drop_ci_low",
                  "excess_drop_ci_high", "verdict"]])  # fmt: skip
    assert set(female["corruption"]) == set(sec.tables["sweep"]["corruption"])
    assert (female["status"] == "ok").all() and female["verdict"].str.len().gt(0).all()
    assert "held-out site" in sec.summary

    # Every noise corruption, on the same model and images.
    cohort = DemoSettings().cohort(0)
    audited = cohort.subset(cohort.meta["split"].isin(["test", "external"]).to_numpy())
    lm = load_checkpoint(full_demo_run.checkpoint)
    rep = run_audits(
        full_demo_run.predictions,
        audited,
        audits=["robustness"],
        sensitive=["sex"],
        policy=Policy.from_mapping(
            {"settings": {"n_bootstrap": 300, "robustness": {"corruptions": ["noise"]}}}
        ),
        model=lm.model,
        model_info={"image_size": lm.image_size, "in_channels": 1, "mean": lm.mean, "std": lm.std},
    )
    sweep = rep.section("robustness").tables["sweep"]
    worst = sweep[sweep["severity"] == 5].set_index("corruption")
    print(worst[["auroc", "auroc_drop", "auroc_drop_ci_low", "auroc_drop_ci_high"]])
    assert len(worst) == 4 and (worst["auroc_drop_ci_low"] > 0).all()


def _clustered_scores(rng, n_patients, d_clean, d_corrupt, tau=0.6, rho=0.7):
    """Patients with 1-3 images sharing a random effect; clean and corrupted scores paired.

    Image scores are N(d * y + u_patient, 1), so the true AUROC of the image population
    is Phi(d / sqrt(2 (1 + tau^2))).
    """
    n_img = rng.integers(1, 4, n_patients)
    pid = np.repeat(np.arange(n_patients), n_img)
    y = np.repeat(rng.random(n_patients) < 0.4, n_img).astype(int)
    u = np.repeat(rng.normal(0, tau, n_patients), n_img)
    e0 = rng.standard_normal(len(pid))
    e1 = rho * e0 + np.sqrt(1 - rho**2) * rng.standard_normal(len(pid))
    s0, s1 = d_clean * y + u + e0, d_corrupt * y + u + e1
    return pid, y, s0, s1


def _true_auc(d, tau=0.6):
    return sst.norm.cdf(d / np.sqrt(2 * (1 + tau**2)))


def _two_col(s):
    p = 1 / (1 + np.exp(-s))
    return np.stack([1 - p, p], axis=1)


def test_paired_drop_and_excess_drop_intervals_cover_the_truth():
    # Two groups: clean separation 1.6 / 1.2, corrupted 1.1 / 0.5 (group g1 loses more).
    d0, d1 = np.array([1.6, 1.2]), np.array([1.1, 0.5])
    truth_drop_g1 = _true_auc(d0[1]) - _true_auc(d1[1])
    truth_excess = truth_drop_g1 - (_true_auc(d0[0]) - _true_auc(d1[0]))
    s = GroupSettings(n_boot=400, seed=0, confidence=0.95, min_group_size=30, min_class_count=5)
    cover_drop, cover_excess, cover_overall = [], [], []
    for rep in range(200):
        rng = np.random.default_rng(50_000 + rep)
        parts = [_clustered_scores(rng, 110, d0[g], d1[g]) for g in (0, 1)]
        pid = np.concatenate([parts[0][0], parts[1][0] + 10_000])
        y = np.concatenate([p[1] for p in parts])
        clean = _two_col(np.concatenate([p[2] for p in parts]))
        corrupt = _two_col(np.concatenate([p[3] for p in parts]))
        grp = np.repeat(["g0", "g1"], [len(parts[0][0]), len(parts[1][0])])
        table = subgroup_drops(
            y, clean, {"c": corrupt}, pd.DataFrame({"grp": grp}), ["grp"],
            severity=3, settings=s, clusters=pid,
        )  # fmt: skip
        row = table.set_index("group").loc["g1"]
        cover_drop.append(row["auroc_drop_ci_low"] <= truth_drop_g1 <= row["auroc_drop_ci_high"])
        cover_excess.append(row["excess_drop_ci_low"] <= truth_excess <= row["excess_drop_ci_high"])
        # the sweep's overall drop: one resampling by class and patient, shared by both passes
        W = bootstrap_counts(y, n_boot=400, random_state=rep, clusters=pid)
        drop = auroc_estimate(y, clean, W) - auroc_estimate(y, corrupt, W)
        lo, hi = drop.ci(0.95)
        # the pooled truth: AUROC of the two-group mixture, by a large simulation
        cover_overall.append((lo, hi))
    big = np.random.default_rng(1)
    parts = [_clustered_scores(big, 200_000, d0[g], d1[g]) for g in (0, 1)]
    from medaudit.stats import auroc

    y_big = np.concatenate([p[1] for p in parts])
    truth_overall = auroc(y_big, np.concatenate([p[2] for p in parts])) - auroc(
        y_big, np.concatenate([p[3] for p in parts])
    )
    overall = np.mean([lo <= truth_overall <= hi for lo, hi in cover_overall])
    rates = (np.mean(cover_drop), np.mean(cover_excess), overall)
    print("coverage: group drop {:.3f}, excess drop {:.3f}, overall {:.3f}".format(*rates))
    for r in rates:
        assert 0.92 <= r <= 0.98, rates


def test_excess_drop_false_alarm_rate_without_a_planted_difference():
    # Both groups lose the same: "loses more/less than the rest" should be said ~5% of times.
    s = GroupSettings(n_boot=300, seed=0, confidence=0.95, min_group_size=30, min_class_count=5)
    flagged = []
    for rep in range(150):
        rng = np.random.default_rng(70_000 + rep)
        parts = [_clustered_scores(rng, 100, 1.4, 0.9) for _ in range(2)]
        pid = np.concatenate([parts[0][0], parts[1][0] + 10_000])
        y = np.concatenate([p[1] for p in parts])
        clean = _two_col(np.concatenate([p[2] for p in parts]))
        corrupt = _two_col(np.concatenate([p[3] for p in parts]))
        grp = np.repeat(["a", "b"], [len(parts[0][0]), len(parts[1][0])])
        t = subgroup_drops(
            y, clean, {"c": corrupt}, pd.DataFrame({"grp": grp}), ["grp"],
            severity=3, settings=s, clusters=pid,
        )  # fmt: skip
        flagged.append(t.set_index("group").loc["a", "verdict"] != "no clear difference")
    rate = float(np.mean(flagged))
    print(f"false alarm rate of the subgroup verdict: {rate:.3f}")
    assert rate <= 0.09
