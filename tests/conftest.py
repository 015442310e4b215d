"""Shared fixtures: small synthetic hospitals, a trained model, and one demo run."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread, restoring the count afterwards.

    Tiny models run fastest on one thread; two threads on a busy 2-core CI box spin and
    run 5-20x slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One quick demo (synthetic hospitals → train → all audits → report), shared by tests."""
    from medaudit.demo import DemoSettings, run_demo

    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, seed=0, settings=DemoSettings.quick(), progress=False)


@pytest.fixture(scope="session")
def full_demo_run(tmp_path_factory):
    """The demo with its default settings (what `medaudit demo` runs); for slow tests."""
    from medaudit.demo import run_demo

    out = tmp_path_factory.mktemp("full-demo")
    return run_demo(out, seed=0, progress=False)


@pytest.fixture(scope="session")
def demo_report_dir(demo_run):
    """Folder holding the quick demo's index.html and audit.json."""
    return demo_run.out_dir


@pytest.fixture(scope="session")
def committed_demo_report_dir():
    """The full demo's report committed in reports/demo (what visitors open)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "reports" / "demo"
    if not (path / "index.html").is_file():
        pytest.skip("reports/demo/index.html is not in this checkout")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic data set written to disk (manifest.csv + images/)."""
    from medaudit.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, n_sites=3, patients_per_site=40, image_size=32, seed=1)
    return out


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, synth_dir):
    """A small_cnn trained briefly on ``synth_dir``, saved as safetensors."""
    from medaudit.cli.train import train_checkpoint

    ckpt = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    train_checkpoint(synth_dir / "manifest.csv", ckpt, epochs=2, seed=0)
    return ckpt
