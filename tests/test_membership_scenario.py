"""Smoke run of the red-team scenario attacks/membership/run.py (tiny settings)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SCRIPT = Path(__file__).resolve().parents[1] / "attacks" / "membership" / "run.py"


def test_the_scenario_writes_its_table_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("membership_scenario", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "membership_scenario", mod)  # dataclasses look it up
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table["attack"]) == {"loss", "calibrated_loss", "rmia", "lira", "lira_online"}
    assert "overfit" in set(table["model"])
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert "privacy_overfit" in doc["sections"]
    assert (tmp_path / "out" / "results.md").read_text().startswith("# Membership inference")
