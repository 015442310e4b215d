"""Unlearning on synthetic hospitals: the verifier both ways, relearning, the scenario."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit.attacks.unlearning import (
    ForgetRequest,
    UnlearnSettings,
    list_methods,
    relearning_curve,
    unlearn,
    verify_unlearning,
)
from medaudit.data import generate_hospitals
from medaudit.models import build_model, train_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unlearned():
    """A memorising small_cnn, half its patients forgotten by four methods, two references."""
    torch.set_num_threads(1)
    c = generate_hospitals(n_sites=3, patients_per_site=50, image_size=32, heldout_site=None)
    train = c.split("train")
    test = c.subset(c.meta["split"].isin(["val", "test"]).to_numpy())
    torch.manual_seed(0)
    fit = train_model(build_model("small_cnn"), train, epochs=25, batch_size=32, patience=None)
    opts = {"mean": fit.mean, "std": fit.std, "image_size": 32, "in_channels": 1}
    patients = train.meta["patient_id"].unique()
    chosen = np.random.default_rng(0).choice(patients, len(patients) // 2, replace=False)
    req = ForgetRequest("patient_id", tuple(chosen))
    s = UnlearnSettings(epochs=15, batch_size=32)
    configs = {
        "reference 1": ("retrain", {"seed": 1}),
        "reference 2": ("retrain", {"seed": 2}),
        "retrain": ("retrain", {"seed": 3}),
        "finetune": ("finetune", {"seed": 3}),
        "gradient_ascent": ("gradient_ascent", {"ascent_steps": 20, "ascent_lr": 1e-3}),
        "random_labels": ("random_labels", {}),
    }
    models = {
        name: unlearn(
            fit.model, train, req, method=m, settings=s.__class__(**{**s.__dict__, **kw}),
            num_classes=2, **opts,
        ).model
        for name, (m, kw) in configs.items()
    }  # fmt: skip
    return {"train": train, "test": test, "mask": req.mask(train), "models": models, "opts": opts}


def test_verifier_tells_approximate_methods_from_retraining_and_passes_retraining(unlearned):
    u, m = unlearned, unlearned["models"]
    refs = [m["reference 1"], m["reference 2"]]
    verdicts, tables = {}, {}
    for name in ("retrain", "finetune", "gradient_ascent"):
        v = verify_unlearning(
            m[name], refs, method=name, forget=u["train"].subset(u["mask"]),
            retain=u["train"].subset(~u["mask"]), test=u["test"], **u["opts"],
        )  # fmt: skip
        verdicts[name], tables[name] = v.check.status, v.table
        assert list(v.table["model"][:2]) == [name, "retrained reference"]
        assert (
            v.table[["forget_auroc", "retain_auroc", "test_auroc", "attack_auc"]]
            .notna()
            .all(axis=None)
        )
    assert verdicts == {"retrain": "pass", "finetune": "fail", "gradient_ascent": "fail"}
    # Fine-tuning keeps what the model memorised: the attack finds the forget set.
    assert tables["finetune"]["attack_auc"][0] > tables["retrain"]["attack_auc"][0] + 0.05


def test_relearning_recovers_approximate_methods_not_retraining(unlearned):
    u, m = unlearned, unlearned["models"]
    models = {k: m[k] for k in ("retrain", "gradient_ascent", "random_labels")}
    models["retrained reference"] = m["reference 1"]
    df = relearning_curve(models, u["train"], u["mask"], steps=(0, 10, 20), **u["opts"])
    last = df[df.steps == 20].set_index("model")
    assert last.loc["random_labels", "excess_recovery"] > 0.1
    # Gradient ascent at lr 1e-3 overshoots, and where it lands depends on the CPU: one
    # machine's ascended model was under-confident on the forget set and relearning raised
    # its confidence by 1+ logit more than retraining's (excess > 1); another's was
    # over-confident (5.8 logits against the reference's 2.2) and relearning pulled it
    # back by 3.0 (excess -3.3). Either way 20 steps move it far more than a retrained model.
    ga = last.loc["gradient_ascent", "confidence_recovery"]
    assert abs(ga) > abs(last.loc["retrained reference", "confidence_recovery"]) + 1.0
    assert abs(last.loc["retrain", "excess_recovery"]) <= 0.05
    assert last.loc["retrain", "excess_confidence_recovery"] <= 0.5


def test_scenario_table_has_every_method_and_level(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("unl_run", ROOT / "attacks/unlearning/run.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "unl_run", mod)  # dataclasses look it up
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert set(res["level"]) == {"site", "patient", "study", "image"}
    assert set(res["method"]) == set(list_methods())
    assert len(res) == 4 * len(list_methods()) * 2  # each method beside the reference
    assert set(res["model"]) == set(list_methods()) | {"retrained reference"}
    cols = {"forget_auroc", "retain_auroc", "test_auroc", "attack_auc", "ks_pvalue", "verdict"}
    assert cols <= set(res.columns)
    assert (tmp_path / "index.html").exists() and (tmp_path / "relearning.csv").exists()
