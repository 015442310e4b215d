"""The privacy audit end to end: Python API, the registry, both CLI commands, false alarms."""

from __future__ import annotations

import doctest
import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from medaudit import InvalidInputError
from medaudit.attacks.membership import (
    MSG_SHARED_PATIENTS,
    MembershipAudit,
    MembershipSettings,
    membership_section,
)
from medaudit.cli.app import run
from medaudit.data import generate_hospitals
from medaudit.inference import predict
from medaudit.models import build_model, train_model
from medaudit.pipeline import run_audits
from medaudit.report import Policy, Report, validate_audit_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = MembershipSettings(n_bootstrap=100)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Reference models go to a temporary cache, never the user's."""
    monkeypatch.setenv("MEDAUDIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def hospitals():
    c = generate_hospitals(
        n_sites=3,
        patients_per_site=120,
        image_size=32,
        seed=7,
        heldout_site=None,
        split_fractions=(0.4, 0.3, 0.3),
    )
    train = c.split("train")
    model = build_model("small_cnn", random_state=0)
    res = train_model(model, train, None, epochs=2, batch_size=32, seed=0, patience=None)
    return c, model, res.mean, res.std


def _audit(hospitals, members, non_members, population=None, **kw):
    _, model, mean, std = hospitals
    return MembershipAudit(
        model,
        members,
        non_members,
        population,
        arch="small_cnn",
        image_size=32,
        mean=mean,
        std=std,
        **kw,
    )


def test_every_attack_runs_and_the_section_validates(hospitals, tmp_path):
    c = hospitals[0]
    a = _audit(hospitals, c.split("train"), c.split("test"), c.split("val"))
    res = a.run(
        MembershipSettings(
            n_bootstrap=100,
            max_samples=150,
            reference_models=4,
            attacks=("loss", "calibrated_loss", "rmia", "lira", "lira_online"),
        ),
        training=a.reference_training(epochs=1),
        cache_dir=tmp_path,
        workers=1,
    )
    assert list(res.outcomes) == ["loss", "calibrated_loss", "rmia", "lira", "lira_online"]
    assert res.references["design"] == "online" and res.references["k"] == 4
    sec = membership_section(res, Policy.default())
    assert [ch.id for ch in sec.checks] == [
        "privacy.membership.auc",
        "privacy.membership.tpr_at_1pct_fpr",
        "privacy.dp.epsilon_excess",
    ]
    assert (
        sec.checks[2].status == "skipped"
        and "no differential-privacy claim" in sec.checks[2].reason
    )
    assert {
        "attacks",
        "members_found_at_low_fpr",
        "subgroup_exposure",
        "most_exposed_members",
        "empirical_epsilon",
    } <= set(sec.tables)
    assert set(sec.tables["subgroup_exposure"]["attribute"]) >= {"site", "age_band"}
    assert "<svg" in sec.figures["roc_loglog"].svg
    doc = json.loads(json.dumps(Report(sections=[sec]).to_dict(), allow_nan=False, default=str))
    validate_audit_json(doc)
    # the most exposed members are rows, never identifiers
    assert list(sec.tables["most_exposed_members"].columns) == [
        "member_row",
        "score",
        "non_members_scored_lower",
    ]


def test_shared_patients_are_refused_with_their_count(hospitals):
    c = hospitals[0]
    train, test = c.split("train"), c.split("test")
    shared = train.meta["patient_id"].unique()[:3]
    leaky = c.subset((c.meta["split"] == "test") | c.meta["patient_id"].isin(shared))
    with pytest.raises(InvalidInputError) as e:
        _audit(hospitals, train, leaky).run(FAST)
    assert str(e.value) == MSG_SHARED_PATIENTS.format(n=3, a="members", b="non-members")
    with pytest.raises(
        InvalidInputError, match="3 patient\\(s\\) appear among both the population and the members"
    ):
        _audit(hospitals, train, test, leaky.subset(leaky.meta["split"] != "test")).run(FAST)


def test_without_population_part_of_the_non_members_is_held_out(hospitals, tmp_path):
    c = hospitals[0]
    test = c.split("test")
    res = _audit(hospitals, c.split("train"), test).run(
        MembershipSettings(n_bootstrap=50, attacks=("loss", "rmia")),
        training=None,
        cache_dir=tmp_path,
        workers=1,
    )
    n_non = int((~res.is_member).sum())
    assert 0.3 * len(test) < n_non < 0.7 * len(test)
    assert "held out as population" in res.population_source


def test_named_attacks_that_cannot_run_are_an_error_defaults_are_left_out(hospitals, tmp_path):
    c = hospitals[0]
    a = _audit(hospitals, c.split("train"), c.split("test"), c.split("val"))
    with pytest.raises(InvalidInputError, match="The lira attack cannot run: needs at least 2"):
        a.run(MembershipSettings(attacks=("lira", "loss"), reference_models=1, strict=True))
    with pytest.raises(InvalidInputError, match="No membership attack can run: lira: needs"):
        a.run(MembershipSettings(attacks=("lira",), reference_models=1))
    res = a.run(MembershipSettings(n_bootstrap=20, reference_models=0), cache_dir=tmp_path)
    assert list(res.outcomes) == ["loss"]
    assert set(res.not_run) == {"calibrated_loss", "rmia", "lira"}
    with pytest.raises(ValueError, match="Unknown membership attack"):
        MembershipSettings(attacks=("nosuch",))


class _Memoriser(torch.nn.Module):
    """Recognises its training images exactly: sure of their label, unsure otherwise."""

    def __init__(self, images, labels):
        super().__init__()
        self.register_buffer("seen", images.flatten(1))
        self.register_buffer("labels", labels)
        self.conv = torch.nn.Conv2d(1, 1, 1)  # so that in_channels can be read

    def forward(self, x):
        d = torch.cdist(x.flatten(1), self.seen, compute_mode="donot_use_mm_for_euclid_dist")
        near, idx = d.min(dim=1)
        z = torch.zeros(len(x), 2)
        z[torch.arange(len(x)), self.labels[idx]] = torch.where(near < 1e-4, 12.0, 0.0)
        return z


def test_an_attack_that_beats_the_claimed_epsilon_fails_a_critical_check(hospitals):
    c = hospitals[0]
    train, test = c.split("train"), c.split("test")
    model = _Memoriser(torch.from_numpy(train.load_all()), torch.tensor(train.labels))
    res = MembershipAudit(
        model, train, test, c.split("val"), arch="custom", claim={"epsilon": 0.2, "delta": 1e-5}
    ).run(FAST)
    sec = membership_section(res)
    check = next(ch for ch in sec.checks if ch.id == "privacy.dp.epsilon_excess")
    # one image per patient, so patients of ~3 images: the claim is judged per patient
    assert res.group_size > 1 and res.epsilon_lower_bound.epsilon > 0.2 * res.group_size
    assert check.status == "fail" and check.severity == "critical" and check.blocking
    assert sec.status == "fail" and "contradicts the claimed epsilon" in sec.summary
    assert not Report(sections=[sec]).passed
    generous = MembershipAudit(
        model, train, test, c.split("val"), arch="custom", claim={"epsilon": 50.0, "delta": 1e-5}
    ).run(FAST)
    ok = next(ch for ch in membership_section(generous).checks if ch.id.startswith("privacy.dp"))
    assert ok.status == "pass"
    assert res.not_run["rmia"].startswith("the target's architecture 'custom' is not in the")


def test_the_registered_audit_reads_the_claim_and_the_settings(hospitals):
    c, model, mean, std = hospitals
    test = c.split("test")
    preds = predict(model, test, mean=mean, std=std)
    pol = Policy.from_mapping(
        {"settings": {"n_bootstrap": 50, "privacy": {"reference_models": 1, "reference_epochs": 1}}}
    )
    rep = run_audits(
        preds,
        test,
        audits=["privacy"],
        policy=pol,
        train=c.split("train"),
        population=c.split("val"),
        model=model,
        model_info={
            "arch": "small_cnn",
            "image_size": 32,
            "in_channels": 1,
            "mean": mean,
            "std": std,
            "privacy": json.dumps({"epsilon": 8.0, "delta": 1e-5}),
        },
    )
    sec = rep.section("privacy")
    assert set(sec.tables["attacks"]["attack"]) == {"loss", "calibrated_loss", "rmia"}
    assert sec.tables["attacks_not_run"]["reason"].iloc[0].startswith("needs at least 2")
    claim = next(ch for ch in sec.checks if ch.id == "privacy.dp.epsilon_excess")
    assert claim.status == "pass" and "claimed epsilon 8" in claim.description


# --------------------------------------------------------------------------------- CLI
def _manifests(tmp_path, synth_dir):
    m = pd.read_csv(synth_dir / "manifest.csv")
    m["path"] = [str(synth_dir / p) for p in m["path"]]
    files = {}
    for name, rows in (
        ("members", m["split"] == "train"),
        ("non_members", m["split"].isin(["test", "external"])),
        ("population", m["split"] == "val"),
    ):
        files[name] = tmp_path / f"{name}.csv"
        m[rows].to_csv(files[name], index=False)
    shared = m.loc[m["split"] == "train", "patient_id"].unique()[:2]
    files["leaky"] = tmp_path / "leaky.csv"
    m[m["split"].isin(["test"]) | m["patient_id"].isin(shared)].to_csv(files["leaky"], index=False)
    return files


def test_cli_attack_membership_writes_the_privacy_report(
    tmp_path, synth_dir, trained_checkpoint, capsys
):
    f = _manifests(tmp_path, synth_dir)
    out = tmp_path / "r"
    code = run(
        [
            "attack",
            "membership",
            "--model",
            str(trained_checkpoint),
            "--members",
            str(f["members"]),
            "--non-members",
            str(f["non_members"]),
            "--population",
            str(f["population"]),
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-progress",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code in (0, 1)
    doc = json.loads((out / "audit.json").read_text())
    validate_audit_json(doc)
    assert list(doc["sections"]) == ["privacy"]
    ids = [ch["id"] for ch in doc["sections"]["privacy"]["checks"]]
    assert ids[:2] == ["privacy.membership.auc", "privacy.membership.tpr_at_1pct_fpr"]
    assert doc["passed"] == (code == 0)
    assert "Report written to" in capsys.readouterr().out


def test_cli_refuses_shared_patients_with_exit_2_and_the_count(
    tmp_path, synth_dir, trained_checkpoint, capsys
):
    f = _manifests(tmp_path, synth_dir)
    code = run(
        [
            "attack",
            "membership",
            "--model",
            str(trained_checkpoint),
            "--members",
            str(f["members"]),
            "--non-members",
            str(f["leaky"]),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "x").exists()
    assert err == "medaudit: error: " + MSG_SHARED_PATIENTS.format(
        n=2, a="members", b="non-members"
    )
    # the same through `medaudit audit --audits privacy --train-data`
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(f["leaky"]),
            "--train-data",
            str(f["members"]),
            "--audits",
            "privacy",
            "--no-progress",
            "--out",
            str(tmp_path / "z"),
        ]
    )
    assert code == 2 and MSG_SHARED_PATIENTS.format(n=2, a="members", b="non-members") in (
        capsys.readouterr().err
    )
    code = run(
        [
            "attack",
            "membership",
            "--model",
            str(trained_checkpoint),
            "--members",
            str(f["members"]),
            "--non-members",
            str(f["non_members"]),
            "--attacks",
            "lira",
            "--out",
            str(tmp_path / "y"),
        ]
    )
    assert code == 2
    assert "The lira attack cannot run: needs at least 2 reference model(s), 1 requested." in (
        capsys.readouterr().err
    )


def test_cli_audit_runs_privacy_with_train_data_and_its_flags(
    tmp_path, synth_dir, trained_checkpoint
):
    f = _manifests(tmp_path, synth_dir)
    out = tmp_path / "a"
    code = run(
        [
            "audit",
            "--model",
            str(trained_checkpoint),
            "--data",
            str(f["non_members"]),
            "--train-data",
            str(f["members"]),
            "--audits",
            "privacy",
            "--attacks",
            "loss,rmia,lira",
            "--reference-models",
            "1",
            "--set",
            "privacy.reference_epochs=1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code in (0, 1)
    doc = json.loads((out / "audit.json").read_text())
    tab = doc["sections"]["privacy"]["tables"]["attacks"]
    assert [r["attack"] for r in tab] == ["loss", "rmia"]
    # named but impossible with one reference model: reported as not run, not an error
    (not_run,) = doc["sections"]["privacy"]["tables"]["attacks_not_run"]
    assert not_run["attack"] == "lira" and not_run["reason"].startswith("needs at least 2")
    assert any("held out as population" in n for n in doc["sections"]["privacy"]["notes"])


@pytest.mark.parametrize(
    "module",
    ["_attacks", "_signals", "_metrics", "_epsilon", "_reference", "_run", "_data"],
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"medaudit.attacks.membership.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.slow
def test_no_false_alarm_on_two_disjoint_sets_of_non_members(hospitals, tmp_path):
    # Images the model never saw (other hospitals' patients), split into "members" and
    # non-members: every attack must be near chance and both checks pass, for 5 splits.
    fresh = generate_hospitals(
        n_sites=3, patients_per_site=220, image_size=32, seed=11, heldout_site=None
    )
    units = np.asarray(fresh.meta["patient_id"].unique(), dtype=object)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        rng.shuffle(units)
        a, b = np.array_split(units, [len(units) // 3])
        fake_members = fresh.subset(fresh.meta["patient_id"].isin(a).to_numpy())
        rest = fresh.subset(fresh.meta["patient_id"].isin(b).to_numpy())
        audit = _audit(hospitals, fake_members, rest)
        res = audit.run(
            MembershipSettings(n_bootstrap=200, seed=seed, population_fraction=0.4),
            training=audit.reference_training(epochs=2),
            cache_dir=tmp_path,
            workers=1,
        )
        sec = membership_section(res)
        for name, o in res.outcomes.items():
            assert abs(o.metrics.auc - 0.5) < 0.06, (seed, name, o.metrics.auc)
        status = {ch.id: ch.status for ch in sec.checks}
        assert status["privacy.membership.auc"] == "pass", (seed, sec.checks)
        assert status["privacy.membership.tpr_at_1pct_fpr"] == "pass", (seed, sec.checks)
