"""``medaudit federate`` on Flower's simulation engine (Ray): the issue's done-when items.

Slow: each test starts Ray (10-20 s on an idle 2-core machine, more under load).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

from medaudit.cli.app import run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def one_acquisition(tmp_path_factory) -> Path:
    """Synthetic hospital images of one acquisition profile (sites come from a partition)."""
    from medaudit.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("fl-sim")
    return write_synthetic(
        out,
        n_sites=1,
        patients_per_site=300,
        image_size=32,
        heldout_site=None,
        hard_subgroup=None,
        seed=11,
    )


def _doc(out: Path) -> dict:
    return json.loads((out / "audit.json").read_text())


def test_four_sites_five_rounds_reach_the_centralised_auroc(one_acquisition, tmp_path):
    out = tmp_path / "fl"
    code = run(
        [
            "federate",
            "--data",
            str(one_acquisition),
            "--dirichlet-alpha",
            "1.0",
            "--n-sites",
            "4",
            "--rounds",
            "5",
            "--local-epochs",
            "2",
            "--cpus",
            "2",
            "--no-local-baseline",  # the local-only comparison is the next tests' subject
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, 1)
    for name in ("model.safetensors", "index.html", "audit.json"):
        assert (out / name).is_file()
    sec = _doc(out)["sections"]["federated"]
    pooled = {r["model"]: r for r in sec["tables"]["pooled"]}
    fed, central = pooled["federated"]["auroc"], pooled["centralised"]["auroc"]
    assert central > 0.85
    assert abs(central - fed) <= 0.03, (fed, central)
    assert len(sec["tables"]["sites"]) == 4
    assert [r["round"] for r in sec["tables"]["rounds"]] == [1, 2, 3, 4, 5]


def _sized_partition(cohort, shares, seed=0):
    """Sites of the given shares of the patients (the first one the largest)."""
    from medaudit.data import SitePartition

    pid = cohort.meta["patient_id"].astype(str).to_numpy()
    patients = np.random.default_rng(seed).permutation(np.unique(pid))
    cuts = np.round(np.cumsum(shares)[:-1] * len(patients)).astype(int)
    rows = tuple(np.flatnonzero(np.isin(pid, part)) for part in np.split(patients, cuts))
    names = tuple(f"site_{i}" for i in range(len(shares)))
    return SitePartition(names, rows, "shares")


def test_crash_timeout_and_poisoning_leave_the_run_going_and_robust_strategies_hold(
    one_acquisition,
):
    """One run, three arms on the same four sites (the first holds 40% of the patients).

    ``fedavg_faults``: site_2 crashes in round 2 and site_3 sleeps past the round timeout in
    round 4, and the run goes on. ``*_poisoned``: site_0 trains on flipped labels; FedAvg
    follows it, FedMedian keeps most of the clean AUROC (measured in-process on this data:
    clean 0.96, FedAvg poisoned 0.34, FedMedian poisoned 0.83, mean site AUROC).
    """
    from medaudit.data import load_cohort
    from medaudit.federated import Arm, FaultPlan, FederatedSettings, federate

    cohort = load_cohort(one_acquisition)
    poisoned = ("fedavg_poisoned", "fedmedian_poisoned")
    faults = FaultPlan(
        crash={"site_2": 2},
        delay={"site_3": (4, 30.0)},
        flip_labels=("site_0",),
        arms=("fedavg_faults",),
        poison_arms=poisoned,
    )
    # No local-only baselines (not what this test is about): they would double the time.
    settings = FederatedSettings(
        rounds=5, round_timeout=20.0, n_bootstrap=100, local_baseline=False
    )
    result = federate(
        cohort,
        settings=settings,
        partition=_sized_partition(cohort, [0.4, 0.2, 0.2, 0.2]),
        faults=faults,
        arms=[
            Arm("fedavg_faults", "fedavg"),
            Arm("fedavg_poisoned", "fedavg"),
            Arm("fedmedian_poisoned", "fedmedian"),
        ],
        cpus=2,
    )
    sec = result.report.section("federated")
    rounds = sec.tables["rounds"]
    r = rounds[rounds["arm"] == "fedavg_faults"].set_index("round")
    assert "site_2: InjectedFault: site 'site_2' crashed" in r.loc[2, "dropped"]
    assert "site_3: no reply within the round timeout" in r.loc[4, "dropped"]
    assert r["aggregated"].all()  # three replies still meet min_sites = 2
    for arm in poisoned:
        assert (rounds.loc[rounds["arm"] == arm, "dropped"] == "").all()
    auc = sec.tables["strategies"].set_index("arm")["auroc_pooled_test"]
    assert auc["fedavg_faults"] > 0.85, auc.to_dict()
    assert auc["fedavg_poisoned"] <= auc["fedavg_faults"] - 0.30, auc.to_dict()
    assert auc["fedmedian_poisoned"] >= auc["fedavg_faults"] - 0.15, auc.to_dict()
    assert auc["fedmedian_poisoned"] >= auc["fedavg_poisoned"] + 0.25, auc.to_dict()
    drop = {c.id: c for c in sec.checks}["federated.dropouts"]
    assert drop.status != "pass" and "site_2 (round 2)" in drop.description  # names who dropped


def _foreign_manifest(root: Path) -> Path:
    """PNGs and a manifest written with numpy and PIL only: three sites, unequal sizes."""
    from PIL import Image

    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True)
    rows = []
    for site, n in (("north", 60), ("south", 40), ("east", 30)):
        for i in range(n):
            y = int(rng.random() < 0.4)
            img = rng.normal(90 if site == "east" else 110, 25, (24, 24))
            if y:
                r, c = rng.integers(4, 16, 2)
                img[r : r + 6, c : c + 6] += 70
            name = f"img/{site}-{i:03d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows.append(
                {
                    "path": name,
                    "label": y,
                    "site": site,
                    "patient_id": f"{site}{i // 2}",
                    "sex": "F" if rng.random() < 0.5 else "M",
                }
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_a_manifest_medaudit_did_not_write_gives_the_three_files(tmp_path):
    manifest = _foreign_manifest(tmp_path / "data")
    out = tmp_path / "fl"
    code = run(
        [
            "federate",
            "--data",
            str(manifest),
            "--site-column",
            "site",
            "--rounds",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, 1)
    for name in ("model.safetensors", "index.html", "audit.json"):
        assert (out / name).is_file()
    sites = _doc(out)["sections"]["federated"]["tables"]["sites"]
    assert sorted(r["site"] for r in sites) == ["east", "north", "south"]


def test_the_experiment_script_runs_with_tiny_settings(tmp_path):
    """Smoke run of experiments/federated/run.py (the committed results use its defaults)."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "federated_experiment", root / "experiments" / "federated" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 4 and table["auroc_fedavg"].dropna().between(0, 1).all()
    assert (tmp_path / "report" / "index.html").is_file()
    assert "FedAvg changed the smallest site" in (tmp_path / "results.md").read_text()
