"""A regulator's questions answered from the rendered page alone, and the report's statistics.

Which model file, which data, which policy (hash), which medaudit, when: read from the
header of a real audit's page. The full policy is in the methods; OS, CPU and git commit
in the reproducibility block.
"""

from __future__ import annotations

import hashlib
import html
import json
import re

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _header_facts(page: str) -> dict[str, str]:
    header = page[page.index('<header class="page"') : page.index("</header>")]
    facts = re.findall(r'data-field="([a-z]+)"><dt>[^<]*</dt><dd[^>]*>(.*?)</dd>', header, re.S)
    return {k: html.unescape(v) for k, v in facts}


def test_header_names_model_data_policy_version_and_time(demo_report_dir):
    page = (demo_report_dir / "index.html").read_text(encoding="utf-8")
    doc = json.loads((demo_report_dir / "audit.json").read_text(encoding="utf-8"))
    meta = doc["meta"]
    facts = _header_facts(page)
    assert set(facts) == {"created", "model", "data", "policy", "medaudit", "verdict"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", facts["created"])
    assert "small_cnn" in facts["model"] and "model.safetensors" in facts["model"]
    assert meta["model_hash"][:12] in facts["model"]
    assert meta["data_hash"][:12] in facts["data"]
    assert f"{meta['cohort']['n_images']:,} images" in facts["data"]
    assert f"{meta['cohort']['n_patients']:,} patients" in facts["data"]
    assert meta["policy_sha256"][:12] in facts["policy"]
    from importlib.metadata import version

    assert facts["medaudit"] == version("medaudit")
    assert facts["verdict"] in ("FAIL", "PASS", "PASS WITH WARNINGS")
    # The recorded policy text is the one the hash was taken of.
    assert hashlib.sha256(meta["policy_toml"].encode()).hexdigest() == meta["policy_sha256"]
    methods = page[page.index('id="methods"') : page.index('id="reproducibility"')]
    assert "performance.auroc" in methods and "min_group_size" in methods
    assert "operating_point" in methods and "n_bootstrap" in methods
    repro = page[page.index('id="reproducibility"') :]
    for field in ("Environment", "os", "cpu"):
        assert f"<dt>{field}</dt>" in repro
    # audit.json carries the findings grouped by root cause.
    findings = doc["summary"]["findings"]
    assert findings and {"title", "severity", "status", "checks", "text"} <= set(findings[0])


@pytest.mark.parametrize("p_method", ["permutation", "bootstrap"])
def test_a_clear_gap_reaches_p_below_001_after_correction(p_method):
    """Holm over the primary family (enough permutations / resamples) can show p < 0.01."""
    from test_fairness_section import FAST, make_predictions

    from medaudit.fairness import fairness_section

    p = make_predictions(n=1500, hard_female=1.0, seed=11)
    sec = fairness_section(
        p, sensitive=["sex", "age_group"], policy=FAST, figures=False, p_method=p_method
    )
    gap = {c.id: c for c in sec.checks}["fairness.sex.auroc_gap"]
    assert gap.ci is not None and gap.ci[0] > 0.05  # the CI clearly excludes 0
    m = re.search(
        rf"{p_method} p (< 0\.001|= [0-9.]+), Holm-adjusted across the primary", gap.reason
    )
    assert m is not None, gap.reason
    shown = m.group(1)
    assert shown.startswith("<") or float(shown[2:]) < 0.01


@pytest.mark.slow
def test_demo_gap_reaches_p_below_001_and_women_come_first(full_demo_run):
    """On the demo: the smallest adjusted p the report shows is below 0.01 for a clear gap."""
    rep = full_demo_run.report
    fair = rep.section("fairness")
    clear = [
        c
        for c in fair.checks
        if c.ci is not None and c.ci[0] > 0.05 and re.search("(permutation|bootstrap) p", c.reason)
    ]
    assert clear, "no gap whose CI clearly excludes 0"
    shown = [
        re.search(r"(?:permutation|bootstrap) p (< 0\.001|= [0-9.]+)", c.reason).group(1)
        for c in clear
    ]
    best = min(0.0 if s.startswith("<") else float(s[2:]) for s in shown)
    assert best < 0.01
    doc = json.loads((full_demo_run.out_dir / "audit.json").read_text(encoding="utf-8"))
    first = doc["summary"]["findings"][0]
    assert first["cause"] == "group:sex=female", first
    assert "Sensitivity in female" in first["text"] and "Worst intersection" in first["text"]
    causes = [f["cause"] for f in doc["summary"]["findings"]]
    assert len(causes) == len(set(causes))  # no two findings share a root cause
    assert any(c.startswith("site:") for c in causes) and "calibration" in causes
