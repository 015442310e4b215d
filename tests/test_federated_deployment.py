"""The shipped Flower app on real processes: one SuperLink and one SuperNode per site.

Started on loopback with free ports, each SuperNode pointing at its own site's manifest
(in its own folder), ``flwr run`` completes a round, and every process is stopped by its
PID. Slow: each message starts a fresh ClientApp process that imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _site_folders(root: Path, n_sites: int) -> list[Path]:
    """Each site's images and manifest in a folder of its own (what its SuperNode reads)."""
    from medaudit.data.synthetic import write_synthetic

    src = root / "all"
    write_synthetic(src, n_sites=n_sites, patients_per_site=24, image_size=16, seed=5)
    meta = pd.read_csv(src / "manifest.csv")
    out = []
    for site, rows in meta.groupby("site"):
        folder = root / str(site)
        (folder / "images").mkdir(parents=True)
        for p in rows["path"]:
            shutil.copy(src / p, folder / p)
        rows.to_csv(folder / "manifest.csv", index=False)
        out.append(folder)
    shutil.rmtree(src)
    return out


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group, its output in ``log``."""
    with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process by its PID (and the group it leads), SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the SuperLink exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on port {port}")


def test_superlink_and_one_supernode_per_site_complete_a_run(tmp_path):
    from medaudit.federated import APP_DIR
    from medaudit.models import load_checkpoint

    sites = _site_folders(tmp_path / "sites", 2)
    home = tmp_path / "flwr-home"
    home.mkdir()
    link = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local-deployment"\n\n'
        f'[superlink.local-deployment]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    procs = []
    try:
        superlink = _start(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(link),
            ],
            tmp_path / "superlink.log",
            env,
        )
        procs.append(superlink)
        _wait_for_port(link, superlink)
        for i, folder in enumerate(sites):
            procs.append(
                _start(
                    [
                        str(BIN / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{link}",
                        "--port",
                        str(_free_port()),
                        "--node-config",
                        f'data="{folder / "manifest.csv"}"',
                    ],
                    tmp_path / f"supernode-{i}.log",
                    env,
                )
            )
        out = tmp_path / "report"
        run_config = (
            f'num-sites=2 rounds=1 out-dir="{out}" n-bootstrap=50 local-baseline=false '
            "round-timeout=300.0"
        )
        app = tmp_path / "app"
        shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(app),
                "local-deployment",
                "--stream",
                "--run-config",
                run_config,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-3000:]
        deadline = time.monotonic() + 60  # the stream can end just before the files land
        while not (out / "audit.json").is_file() and time.monotonic() < deadline:
            time.sleep(1)
        assert (out / "index.html").is_file(), log[-3000:]
        doc = json.loads((out / "audit.json").read_text())
        sec = doc["sections"]["federated"]
        assert sorted(r["site"] for r in sec["tables"]["sites"]) == ["site_A", "site_B"]
        assert [r["round"] for r in sec["tables"]["rounds"]] == [1]
        assert sec["tables"]["rounds"][0]["sites_replied"] == 2
        assert {r["attribute"] for r in sec["tables"]["subgroups"]} >= {"all", "sex"}
        assert load_checkpoint(out / "model.safetensors").arch == "small_cnn"
    finally:
        for proc in reversed(procs):
            _stop(proc)
    assert all(p.poll() is not None for p in procs)
