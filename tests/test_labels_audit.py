"""The label-uncertainty audit (issue 17): counts per group, the per-policy sensitivity
table, verdicts that depend on the policy; and the CLI on a CheXpert-style manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medaudit.data import Cohort
from medaudit.fairness._uncertainty import MSG_NONE_DECLARED, audit
from medaudit.inference import Predictions
from medaudit.registry import AuditContext
from medaudit.report import Policy
from medaudit.stats import auroc

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = Policy.from_mapping({"settings": {"n_bootstrap": 100}})


def context(*, n=1600, unc_rate=0.15, pos_share=0.9, only_group=None, seed=0, policy="zeros"):
    """Scores of a decent model; uncertain labels planted on ``pos_share`` true positives.

    With ``only_group`` every uncertain label falls in that group (label noise that
    differs between groups); otherwise they are spread evenly.
    """
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    truth = (rng.random(n) < 0.35).astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(2.2 * truth, 1.0) - 1.1)))
    pool = np.arange(n) if only_group is None else np.flatnonzero(sex == only_group)
    k = int(unc_rate * n)
    pos, neg = pool[truth[pool] == 1], pool[truth[pool] == 0]
    k_pos = min(len(pos), int(pos_share * k))
    unc = np.zeros(n, dtype=bool)
    unc[rng.choice(pos, k_pos, replace=False)] = True
    unc[rng.choice(neg, k - k_pos, replace=False)] = True
    label = np.where(unc, 1 if policy == "ones" else 0, truth)
    meta = pd.DataFrame(
        {"label": label, "sex": sex, "patient_id": np.arange(n).astype(str), "label_uncertain": unc}
    )
    preds = Predictions(
        scores=np.column_stack([1 - score, score]),
        labels=label,
        loss=np.zeros(n),
        features=None,
        meta=meta,
        class_names=["negative", "positive"],
    )
    cohort = Cohort(meta, images=np.zeros((n, 1, 2, 2), np.uint8))
    pol = FAST.with_settings({"labels.uncertain_policy": policy})
    return AuditContext(predictions=preds, cohort=cohort, policy=pol, sensitive=["sex"]), truth, unc


def test_sensitivity_table_matches_a_direct_computation():
    ctx, truth, unc = context()
    sec = audit(ctx)
    head = sec.tables["sensitivity_headline"].set_index("policy")
    s, y = ctx.predictions.score, truth
    definite = ~unc
    assert head.at["ignore", "n"] == definite.sum()
    assert head.at["ignore", "auroc"] == pytest.approx(auroc(y[definite], s[definite]))
    assert head.at["zeros", "auroc"] == pytest.approx(auroc(np.where(unc, 0, y), s))
    assert head.at["ones", "auroc"] == pytest.approx(auroc(np.where(unc, 1, y), s))
    assert head.at["ones", "n_pos"] == y[definite].sum() + unc.sum()
    counts = sec.tables["uncertain_counts"].set_index("group")
    assert counts["n_uncertain"].sum() == unc.sum()
    assert counts.at["F", "n_uncertain"] == (unc & (ctx.predictions.meta["sex"] == "F")).sum()
    assert "policy 'zeros'" in sec.notes[0]


def test_zeros_on_true_positives_lowers_auroc_and_specificity_not_sensitivity():
    # Counting true positives as negatives cannot move sensitivity on the audited rows
    # (the positives are the definite ones either way); it shows as false positives.
    ctx, _, _ = context()
    head = audit(ctx).tables["sensitivity_headline"].set_index("policy")
    assert head.at["zeros", "auroc"] < head.at["ignore", "auroc"] - 0.02
    assert head.at["zeros", "specificity"] < head.at["ignore", "specificity"] - 0.05
    assert head.at["zeros", "sensitivity"] == head.at["ignore", "sensitivity"]


@pytest.mark.parametrize("seed", [0, 1])
def test_policy_dependent_verdicts_found_when_planted_and_quiet_otherwise(seed):
    planted, _, _ = context(only_group="F", unc_rate=0.12, seed=seed)
    sec = audit(planted)
    check = sec.checks[0]
    assert check.id == "labels.policy_dependent_verdicts"
    assert check.status == "fail" and check.severity == "minor" and not check.blocking
    assert any("depends on the policy" in n for n in sec.notes)
    quiet, _, _ = context(unc_rate=0.01, pos_share=0.5, seed=seed)
    assert audit(quiet).checks[0].status == "pass"


def test_no_uncertain_labels_declared_is_said_in_one_line():
    ctx, _, _ = context()
    ctx.predictions.meta["label_uncertain"] = False
    sec = audit(ctx)
    assert sec.summary == MSG_NONE_DECLARED and not sec.checks


@pytest.mark.slow
def test_chexpert_manifest_trains_and_audits_from_the_cli(tmp_path):
    """CheXpert-style file (Path, Sex, Age, 1/0/-1/blank): train under ignore and zeros,
    audit both; the report has the counts and the per-policy table, and the model
    trained with uncertain positives counted as zeros has the lower sensitivity."""
    from medaudit.cli.app import run
    from medaudit.data._chexpert import FINDINGS, write_chexpert_style

    csv = write_chexpert_style(
        tmp_path,
        n_sites=2,
        patients_per_site=60,
        image_size=32,
        heldout_site=None,
        hard_subgroup=None,
        uncertain_rate=0.15,
        uncertain_positive_share=0.9,
    )
    pol = tmp_path / "policy.toml"
    pol.write_text("[settings]\nn_bootstrap = 100\n[settings.fairness]\nintersections = false\n")
    cols = ["--path-column", "Path", "--patient-column", "Patient", "--uncertain-label", "-1"]
    sens = {}
    for policy in ("ignore", "zeros"):
        model = tmp_path / f"{policy}.safetensors"
        train = ["train", "--data", str(csv), "--out", str(model), "--epochs", "4"]
        train += ["--label-column", FINDINGS[0], "--uncertain-policy", policy]
        assert run([*train, *cols, "--no-progress"]) == 0
        out = tmp_path / f"report_{policy}"
        aud = ["audit", "--model", str(model), "--data", str(csv), "--out", str(out)]
        aud += ["--audits", "performance,labels", "--sensitive", "Sex", "--policy", str(pol)]
        aud += ["--findings", ",".join(FINDINGS), "--no-progress"]
        assert run([*aud, *cols]) in (0, 1)
        doc = json.loads((out / "audit.json").read_text())
        sec = doc["sections"][f"labels[{FINDINGS[0]}]"]
        assert f"labels[{FINDINGS[1]}]" in doc["sections"]
        head = pd.DataFrame(sec["tables"]["sensitivity_headline"]).set_index("policy")
        counts = pd.DataFrame(sec["tables"]["uncertain_counts"])
        assert counts["n_uncertain"].sum() == round(0.15 * len(pd.read_csv(csv)))
        assert list(head.index) == ["ignore", "zeros", "ones"]
        assert "Label uncertainty" in (out / "index.html").read_text()
        sens[policy] = head.at["ignore", "sensitivity"]
    assert sens["zeros"] < sens["ignore"], sens
