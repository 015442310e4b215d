"""`medaudit check`: the predictions-only audit, exit codes, JUnit, JSON, bad input."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from medaudit.cli.app import run
from medaudit.cli.check import MSG_ALLOW_SINGLE_CLASS
from medaudit.fairness._io import MSG_EMPTY, MSG_NAN_SCORE, MSG_NO_SCORE
from medaudit.report import Check
from medaudit.report._junit import checks_to_junit


def write_preds(path, *, n=3000, hard=0.0, seed=0, multiclass=False):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    age = rng.integers(20, 90, n)
    df = pd.DataFrame(
        {
            "patient_id": rng.integers(0, n, n),
            "sex": sex,
            "age": age,
            "site": rng.choice(["A", "B"], n),
        }
    )
    if multiclass:
        y = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        df["label"] = np.array(["normal", "effusion", "nodule"])[y]
        for i, c in enumerate(["normal", "effusion", "nodule"]):
            df[f"score_{c}"] = p[:, i].round(6)
    else:
        y = (rng.random(n) < 0.3).astype(int)
        d = np.where(sex == "F", 1.8 - hard, 1.8)
        df["label"] = y
        df["score"] = (1 / (1 + np.exp(-(rng.normal(d * y, 1.0) - 0.9)))).round(6)
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def fast_policy(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text("[settings]\nn_bootstrap = 100\n")
    return p


def test_exit_0_when_fair(tmp_path, fast_policy, capsys):
    csv = write_preds(tmp_path / "p.csv")
    code = run(
        ["check", "--predictions", str(csv), "--policy", str(fast_policy), "--sensitive", "sex"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fairness.sex.auroc_gap" in out and "PASS" in out


def test_exit_1_with_planted_gap_and_junit(tmp_path, fast_policy, capsys):
    csv = write_preds(tmp_path / "p.csv", hard=0.8)
    junit = tmp_path / "out.xml"
    code = run(
        [
            "check",
            "--predictions",
            str(csv),
            "--policy",
            str(fast_policy),
            "--junit",
            str(junit),
            "--no-intersections",
        ]
    )
    assert code == 1
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert int(suite.get("failures")) >= 1
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert "fairness.sex.auroc_gap" in failed
    # default sensitive columns: few distinct values, not reserved (site, patient_id) or numeric age
    names = {tc.get("name") for tc in suite.iter("testcase")}
    assert not any(".site." in n or "patient_id" in n for n in names)


def test_json_output_and_report_dir(tmp_path, fast_policy, capsys):
    csv = write_preds(tmp_path / "p.csv", multiclass=True)
    out_dir = tmp_path / "rep"
    code = run(
        [
            "check",
            "--predictions",
            str(csv),
            "--policy",
            str(fast_policy),
            "--format",
            "json",
            "--sensitive",
            "sex",
            "--out",
            str(out_dir),
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert doc["schema"] == "medaudit.audit/1"
    ids = [c["id"] for c in doc["sections"]["fairness"]["checks"]]
    assert "fairness.sex.normal.auroc_gap" in ids
    assert (out_dir / "audit.json").is_file() and (out_dir / "index.html").is_file()
    saved = json.loads((out_dir / "audit.json").read_text())
    assert saved["passed"] == (code == 0)


def test_threshold_option_changes_rates(tmp_path, fast_policy, capsys):
    csv = write_preds(tmp_path / "p.csv")
    rates = {}
    for t in ("0.2", "0.8"):
        assert run(
            [
                "check",
                "--predictions",
                str(csv),
                "--policy",
                str(fast_policy),
                "--sensitive",
                "sex",
                "--threshold",
                t,
                "--format",
                "json",
            ]
        ) in (0, 1)
        doc = json.loads(capsys.readouterr().out)
        overall = doc["sections"]["fairness"]["tables"]["overall"]
        rates[t] = next(r["value"] for r in overall if r["metric"] == "selection_rate")
    assert rates["0.2"] > rates["0.8"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", MSG_EMPTY.format(path="{p}")),
        ("label,score,sex\n", MSG_EMPTY.format(path="{p}")),
        ("label,prob,sex\n0,0.1,F\n", MSG_NO_SCORE.format(path="{p}", cols="label, prob, sex")),
        (
            "label,score,sex\n0,0.1,F\n1,,M\n",
            MSG_NAN_SCORE.format(col="score", path="{p}", n=1, row=2),
        ),
        (
            "label,score,sex\n0,0.1,F\n1,inf,M\n",
            MSG_NAN_SCORE.format(col="score", path="{p}", n=1, row=2),
        ),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    assert run(["check", "--predictions", str(p)]) == 2
    err = capsys.readouterr().err
    assert err == f"medaudit: error: {message.format(p=p)}\n"


def test_missing_attribute_exits_2_and_single_class_group_is_skipped(tmp_path, capsys):
    csv = write_preds(tmp_path / "p.csv", n=400)
    assert run(["check", "--predictions", str(csv), "--sensitive", "race"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medaudit: error: Sensitive attribute column(s) race not found")
    df = pd.read_csv(csv)
    df.loc[df.sex == "F", "label"] = 0
    df.to_csv(csv, index=False)
    # Issue 17: a single-class group is skipped with its reason, never a refusal; the
    # old --allow-single-class flag is a no-op with a deprecation note on stderr.
    for extra in ([], ["--allow-single-class"]):
        cmd = ["check", "--predictions", str(csv), "--sensitive", "sex", "--format", "json"]
        code = run(cmd + extra)
        captured = capsys.readouterr()
        doc = json.loads(captured.out)
        checks = {c["id"]: c for c in doc["sections"]["fairness"]["checks"]}
        chk = checks["fairness.sex.auroc_gap"]
        assert code == 0 and chk["status"] == "skipped" and chk["reason"]
        assert captured.err == (f"{MSG_ALLOW_SINGLE_CLASS}\n" if extra else "")


def test_label_values_must_match_scores(tmp_path, capsys):
    p = tmp_path / "p.csv"
    p.write_text("label,score,sex\n0,0.1,F\n3,0.2,M\n")
    assert run(["check", "--predictions", str(p)]) == 2
    assert "must hold 0 or 1; found [3]" in capsys.readouterr().err


def test_junit_escapes_and_counts():
    checks = [
        Check.evaluate(
            "fairness.sex&age.auroc_gap",
            "gap <F & 80+>",
            0.2,
            op="<=",
            threshold=0.05,
            advice="do <this>",
        ),
        Check.skipped("fairness.x.auroc_gap", "gap", "n=3 < min_group_size=30"),
        Check.evaluate("fairness.y.ece_gap", "ece", 0.2, op="<=", threshold=0.05, severity="minor"),
    ]
    xml = checks_to_junit(checks, "suite")
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = list(suite.iter("testcase"))
    assert cases[0].get("name") == "fairness.sex&age.auroc_gap"
    assert "gap <F & 80+>" in cases[0].find("failure").get("message")
    assert cases[1].find("skipped").get("message") == "n=3 < min_group_size=30"
    assert cases[2].find("system-out").text.startswith("WARNING: ece")
