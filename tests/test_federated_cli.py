"""``medaudit federate``: bad input is one clear line and exit 2, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.cli.app import run
from medaudit.cli.federate import (
    MSG_AUDIT_ONLY_MODEL,
    MSG_DIRICHLET,
    MSG_DP_PAIR,
    MSG_ROUNDS,
)
from medaudit.data._partitions import MSG_NO_SITE_COLUMN, MSG_ONE_SITE
from medaudit.federated._strategies import MSG_CANNOT_TRIM, MSG_KRUM_TOO_FEW

pytest.importorskip("flwr")


def write_manifest(root: Path, sites: dict[str, list[int]], size: int = 16) -> Path:
    """PNGs and a manifest written with numpy and PIL only (not medaudit)."""
    rng = np.random.default_rng(0)
    (root / "png").mkdir(parents=True, exist_ok=True)
    rows = []
    for site, labels in sites.items():
        for i, y in enumerate(labels):
            img = rng.normal(100, 20, (size, size))
            if y:
                img[size // 4 : size // 2, size // 4 : size // 2] += 80
            name = f"png/{site}_{i:03d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows.append({"path": name, "label": y, "site": site, "patient_id": f"{site}-{i // 2}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("fl-cli")
    both = [0, 1] * 10
    return {
        "ok": write_manifest(root / "ok", {"H1": both, "H2": both}),
        "one": write_manifest(root / "one", {"H1": both}),
        "no_pos": write_manifest(root / "no_pos", {"H1": both, "H2": [0] * 20, "H3": both}),
    }


def _fails(args: list[str], capsys, tmp_path) -> str:
    out = tmp_path / "out"
    code = run(["federate", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("medaudit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()  # nothing half-written
    return err.removeprefix("medaudit: error: ").strip()


def test_a_missing_site_column_is_exit_2_naming_the_columns(manifests, capsys, tmp_path):
    msg = _fails(["--data", str(manifests["ok"]), "--site-column", "hospital"], capsys, tmp_path)
    assert msg == MSG_NO_SITE_COLUMN.format(
        source="'manifest.csv'", column="hospital", available="path, label, site, patient_id"
    )


def test_one_site_is_exit_2(manifests, capsys, tmp_path):
    msg = _fails(["--data", str(manifests["one"])], capsys, tmp_path)
    assert msg == MSG_ONE_SITE.format(column="site", source="'manifest.csv'", site="H1")


def test_rounds_below_one_is_exit_2(manifests, capsys, tmp_path):
    msg = _fails(["--data", str(manifests["ok"]), "--rounds", "0"], capsys, tmp_path)
    assert msg == MSG_ROUNDS.format(rounds=0)


def test_a_site_without_positives_stops_the_run_when_asked(manifests, capsys, tmp_path):
    msg = _fails(["--data", str(manifests["no_pos"]), "--on-bad-site", "stop"], capsys, tmp_path)
    assert msg == (
        "Stopping as asked (--on-bad-site stop): site 'H2' has no positive images. Fix those "
        "sites' data, or use --on-bad-site skip to train without them."
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--strategy", "fedsgd"], "Unknown strategy 'fedsgd'; available: fedavg, fedprox"),
        (["--audit-only"], MSG_AUDIT_ONLY_MODEL),
        (["--dirichlet-alpha", "0.5"], MSG_DIRICHLET),
        (["--client-dp-noise", "1.0"], MSG_DP_PAIR),
        (["--on-bad-site", "ignore"], "'on_bad_site' parameter of FederatedSettings"),
        (["--strategy", "krum", "--client-dp-noise", "1", "--client-dp-clip", "1"], "plain"),
        (["--sample-dp-noise", "1.0"], "Use --arch small_cnn_gn"),
        (
            ["--sample-dp-noise", "1.0", "--arch", "small_cnn_gn", "--strategy", "fedprox"],
            "Sample-level DP cannot train with FedProx",
        ),
        (["--sample-dp-noise", "0", "--arch", "small_cnn_gn"], "'noise_multiplier' parameter"),
        (["--strategy", "fedtrimmedavg"], MSG_CANNOT_TRIM.format(n=2)),
        (
            ["--strategy", "fedavg,multikrum", "--krum-malicious", "2"],
            MSG_KRUM_TOO_FEW.format(name="Multi-Krum", f=2, n=2),
        ),
    ],
)
def test_other_bad_options_are_exit_2(manifests, capsys, tmp_path, extra, words):
    msg = _fails(["--data", str(manifests["ok"]), *extra], capsys, tmp_path)
    assert words in msg
