"""The ClientApp and ServerApp on an in-process Grid: faults, minimum sites, audit, DP.

The same apps run under Flower's simulation engine and on SuperNodes (slow tests); here
messages go straight to the ClientApp (tests/_flower_local.py), with a tiny model, so
the server's bookkeeping is tested in seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score

pytest.importorskip("flwr")

from _flower_local import LocalGrid  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402

from medaudit._errors import InvalidInputError, InvalidParameterError  # noqa: E402
from medaudit.data import Cohort, generate_hospitals, partition_by_site  # noqa: E402
from medaudit.federated import (  # noqa: E402
    Arm,
    ClientDP,
    FaultPlan,
    FederatedRunError,
    FederatedSettings,
    SampleDP,
    build_strategy,
    client_level_epsilon,
    federated_section,
    get_strategy,
    list_strategies,
    make_client_app,
    make_server_app,
    prepare_site,
    site_statistics,
)
from medaudit.federated._federate import model_from_state  # noqa: E402
from medaudit.federated._server import MSG_BAD_SITES_STOP  # noqa: E402
from medaudit.federated._settings import MSG_SAMPLE_DP_FEDPROX  # noqa: E402
from medaudit.models import SmallCNN  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(config) -> torch.nn.Module:
    return SmallCNN(
        in_channels=int(config["in-channels"]),
        num_classes=int(config["num-classes"]),
        widths=(4, 8),
    )


def _sites(with_negative_only_site: bool = True):
    c = generate_hospitals(
        n_sites=3, patients_per_site=24, image_size=16, heldout_site=None, seed=5
    )
    c.meta = c.meta.drop(columns=["split"])  # a stratified patient split within each site
    cohorts = partition_by_site(c).cohorts(c)
    if with_negative_only_site:
        neg = c.subset(np.flatnonzero(c.labels == 0)[:40])
        neg.meta["site"] = "site_D"
        cohorts["site_D"] = Cohort(neg.meta, images=neg.images, name="site_D")
    return [prepare_site(sub, name, seed=0) for name, sub in cohorts.items()]


def run_local(sites, settings, *, faults=None, silent=None, model_fn=tiny_model, **server_options):
    out = {}
    server = make_server_app(
        settings,
        expected_sites=len(sites),
        on_result=lambda r: out.setdefault("run", r),
        on_error=lambda e: out.setdefault("error", e),
        model_fn=model_fn,
        **server_options,
    )
    client = make_client_app(
        lambda ctx: sites[int(ctx.node_config["partition-id"])], model_fn=model_fn, faults=faults
    )
    grid = LocalGrid(client, len(sites), silent=silent)
    server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    if "error" in out:
        raise out["error"]
    return out["run"]


SETTINGS = FederatedSettings(rounds=2, batch_size=16, lr=3e-3, n_bootstrap=20, min_sites=2)


@pytest.fixture(scope="module")
def faulty_run():
    """site_B crashes in round 2, site_C is silent in round 1, site_D has no positives."""
    torch.set_num_threads(1)
    sites = _sites()
    run = run_local(sites, SETTINGS, faults=FaultPlan(crash={"site_B": 2}), silent={2: 1})
    return sites, run


def test_a_crashed_and_a_silent_site_do_not_stop_the_run_and_the_report_names_them(faulty_run):
    _, run = faulty_run
    r1, r2 = run.strategies[0].rounds
    assert r1.timed_out == ("site_C",) and r1.replied == ("site_A", "site_B")
    assert list(r2.failed) == ["site_B"] and "crashed in round 2" in r2.failed["site_B"]
    assert r1.aggregated and r2.aggregated  # two replies meet min_sites = 2
    section = federated_section(run)
    rounds = section.tables["rounds"]
    assert "site_C: no reply within the round timeout" in rounds.loc[0, "dropped"]
    assert rounds.loc[1, "dropped"].startswith("site_B: InjectedFault")
    checks = {c.id: c for c in section.checks}
    drop = checks["federated.dropouts"]
    assert drop.value == 2 and drop.status == "fail" and drop.severity == "minor"
    assert "site_C (round 1)" in drop.description and "site_B (round 2)" in drop.description


def test_a_site_without_positives_is_left_out_and_said_so(faulty_run):
    _, run = faulty_run
    d = {s.name: s for s in run.sites}["site_D"]
    assert not d.included and d.reason == "no positive images"
    assert "site_D" not in run.strategies[0].rounds[0].sent
    section = federated_section(run)
    sites = section.tables["sites"].set_index("site")
    assert list(sites.index) == ["site_A", "site_B", "site_C", "site_D"]
    assert sites.loc["site_D", "note"] == "no positive images"
    left = {c.id: c for c in section.checks}["federated.sites_left_out"]
    assert left.value == 1 and "site_D (no positive images)" in left.description


def test_site_reports_compare_local_and_federated_auroc_with_cis(faulty_run):
    _, run = faulty_run
    sites = federated_section(run).tables["sites"].set_index("site")
    for name in ("site_A", "site_B", "site_C"):
        row = sites.loc[name]
        assert row["auroc_local_low"] <= row["auroc_local"] <= row["auroc_local_high"]
        assert row["auroc_federated_low"] <= row["auroc_federated"] <= row["auroc_federated_high"]
        assert row["local_minus_federated"] == pytest.approx(
            row["auroc_local"] - row["auroc_federated"]
        )


def test_federated_audit_counts_equal_the_pooled_computation(faulty_run):
    sites, run = faulty_run
    from medaudit.inference import predict

    sr = run.strategies[0]
    model = model_from_state(run.model_config, sr.state, tiny_model)
    mc = run.model_config
    ys, ss, sexes = [], [], []
    for site in sites[:3]:
        p = predict(model, site.test, image_size=16, in_channels=1, mean=mc["mean"], std=mc["std"])
        ys.append(site.test.labels)
        ss.append(p.score)
        sexes.append(site.test.meta["sex"].to_numpy())
    y, s, sex = np.concatenate(ys), np.concatenate(ss), np.concatenate(sexes)
    assert sr.stats is not None and sr.moments is not None
    for i, (attr, group) in enumerate(sr.stats.keys):
        if attr not in ("all", "sex"):
            continue
        m = np.ones(len(y), bool) if attr == "all" else sex == group
        # Reference: scikit-learn on the pooled predictions (what no real server can see).
        tn, fp, fn, tp = confusion_matrix(y[m], s[m] >= 0.5, labels=[0, 1]).ravel()
        assert sr.stats.confusion[i].tolist() == [tp, fp, tn, fn]
        hist_auc = federated_section(run).tables["subgroups"].iloc[i]
        if 0 < y[m].sum() < m.sum() and hist_auc["status"] == "ok":
            assert abs(hist_auc["auroc"] - roc_auc_score(y[m], s[m])) < 0.002
    pooled = site_statistics(y, s, groups={"sex": sex})
    assert np.array_equal(pooled.histograms[0], sr.stats.histograms[0])


def test_a_round_with_fewer_replies_than_min_sites_is_not_aggregated():
    sites = _sites(with_negative_only_site=False)
    s = SETTINGS.replace(rounds=1, min_sites=3, local_baseline=False)
    run = run_local(sites, s, faults=FaultPlan(crash={"site_A": 1}))
    (r,) = run.strategies[0].rounds
    assert not r.aggregated
    assert r.note == "not aggregated: 2 of 3 sites replied (minimum 3)"
    final = run.strategies[0].state
    assert all(torch.equal(final[k], run.initial_state[k]) for k in final)


def test_on_bad_site_stop_ends_the_run_naming_the_site():
    sites = _sites()
    with pytest.raises(FederatedRunError) as err:
        run_local(sites, SETTINGS.replace(on_bad_site="stop", rounds=1))
    assert str(err.value) == MSG_BAD_SITES_STOP.format(sites="site 'site_D' has no positive images")


def test_client_level_dp_accounts_epsilon_over_the_released_rounds():
    sites = _sites(with_negative_only_site=False)
    dp = ClientDP(noise_multiplier=1.0, clipping_norm=0.5)
    s = SETTINGS.replace(client_dp=dp, local_baseline=False)
    run = run_local(sites, s)
    priv = run.strategies[0].privacy
    assert priv is not None and priv.steps == 2
    assert priv.epsilon == pytest.approx(client_level_epsilon([1.0, 1.0], delta=1e-5))
    # a site that stays silent: the round releases with less noise per site, and costs more
    silent = run_local(sites, s, silent={2: 1}).strategies[0]
    assert silent.rounds[0].effective_noise == pytest.approx(2 / 3)
    assert silent.privacy.epsilon > priv.epsilon
    # a site that fails: Flower's DP wrapper releases nothing that round, which costs nothing
    crashed = run_local(sites, s, faults=FaultPlan(crash={"site_C": 1})).strategies[0]
    assert not crashed.rounds[0].aggregated and crashed.privacy.steps == 1
    with pytest.raises(Exception, match="Client-level DP needs plain averaging"):
        build_strategy("fedmedian", s, 3)


def test_client_side_clipping_bounds_the_update_a_site_sends():
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    sites = _sites(with_negative_only_site=False)
    client = make_client_app(lambda ctx: sites[0], model_fn=tiny_model)
    LocalGrid(client, 1)  # sets the sender identity Message() needs
    config = {"in-channels": 1, "num-classes": 2}
    start = tiny_model(config).state_dict()
    floats = {k: v for k, v in start.items() if v.is_floating_point()}
    cfg = ConfigRecord(
        {
            **config,
            "arch": "small_cnn",
            "image-size": 16,
            "mean": [0.5],
            "std": [0.25],
            "seed": 0,
            "batch-size": 16,
            "lr": 0.05,
            "local-epochs": 2,
            "server-round": 1,
            KEY_CLIPPING_NORM: 0.1,
        }
    )
    msg = Message(
        RecordDict({"arrays": ArrayRecord(floats), "config": cfg}),
        dst_node_id=1000,
        message_type="train",
    )
    msg.metadata.__dict__["_message_id"] = "m1"
    reply = client(msg, Context(1, 1000, {"partition-id": 0}, RecordDict(), {}))
    sent = reply.content["arrays"].to_torch_state_dict()
    norm = torch.sqrt(sum(((sent[k] - floats[k]) ** 2).sum() for k in floats))
    assert float(norm) <= 0.1 + 1e-5


def test_arms_share_the_sites_and_start_from_their_own_weights():
    sites = _sites(with_negative_only_site=False)
    s = SETTINGS.replace(rounds=1, local_baseline=False)
    zero = {
        k: torch.zeros_like(v)
        for k, v in tiny_model({"in-channels": 1, "num-classes": 2}).state_dict().items()
    }
    run = run_local(
        sites, s, arms=[Arm("fedavg", "fedavg"), Arm("median_from_zero", "fedmedian", zero)]
    )
    assert [r.name for r in run.strategies] == ["fedavg", "median_from_zero"]
    assert [r.strategy for r in run.strategies] == ["fedavg", "fedmedian"]
    table = federated_section(run).tables["strategies"]
    assert table["arm"].tolist() == ["fedavg", "median_from_zero"]
    assert table["robust"].tolist() == [False, True]


def _reply(arrays: dict[str, np.ndarray], n: int, i: int) -> Message:
    from flwr.app import Array

    ins = Message(RecordDict(), dst_node_id=i, message_type="train")
    ins.metadata.__dict__["_message_id"] = f"m{i}"
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": n}),
        }
    )
    return Message(content, reply_to=ins)


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_aggregates_and_the_robust_ones_resist_an_outlier(name):
    LocalGrid(None, 1)
    rng = np.random.default_rng(0)
    honest = [{"w": rng.normal(0, 1, (3, 4)).astype(np.float32)} for _ in range(4)]
    outlier = {"w": np.full((3, 4), 1000.0, np.float32)}
    replies = [_reply(a, 100, i) for i, a in enumerate([*honest, outlier])]
    arrays, _ = build_strategy(name, SETTINGS, 5).aggregate_train(1, replies)
    w = arrays["w"].numpy()
    assert w.shape == (3, 4)
    if get_strategy(name).robust:
        assert np.abs(w).max() < 10
    else:
        assert np.abs(w).min() > 100


def test_fedprox_pulls_local_training_towards_the_global_model():
    from medaudit.federated._client import _proximal_term
    from medaudit.models import TrainHooks, local_update

    site = _sites(with_negative_only_site=False)[0]
    drift = {}
    for mu in (0.0, 1.0):
        torch.manual_seed(0)
        model = tiny_model({"in-channels": 1, "num-classes": 2})
        hooks = TrainHooks(extra_losses=(_proximal_term(model, mu),)) if mu else None
        up = local_update(
            model,
            site.train,
            epochs=3,
            batch_size=16,
            hooks=hooks,
            optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.5),  # as in Li et al. 2020
        )
        params = {name for name, _ in model.named_parameters()}  # not BatchNorm's statistics
        drift[mu] = float(torch.sqrt(sum((up.update[k] ** 2).sum() for k in params)))
    assert drift[1.0] < 0.7 * drift[0.0]


def test_audit_only_scores_every_row_of_every_site_without_training():
    sites = _sites(with_negative_only_site=False)
    config = {
        "arch": "small_cnn",
        "in-channels": 1,
        "num-classes": 2,
        "image-size": 16,
        "mean": [0.5],
        "std": [0.25],
    }
    state = tiny_model(config).state_dict()
    run = run_local(sites, SETTINGS, audit_only=True, initial_state=state, model_config=config)
    assert run.strategies == () and run.audit is not None
    section = federated_section(run)
    table = section.tables["sites"].set_index("site")
    for site in sites:
        assert table.loc[site.name, "n"] == site.counts["n"]
    assert {c.id for c in section.checks} >= {"federated.auroc", "federated.sex.auroc_gap"}
    assert isinstance(section.tables["subgroups"], pd.DataFrame)


def tiny_gn_model(config) -> torch.nn.Module:
    return SmallCNN(
        in_channels=int(config["in-channels"]),
        num_classes=int(config["num-classes"]),
        widths=(4, 8),
        norm="group",
    )


def test_sample_level_dp_trains_with_dp_sgd_at_every_site_and_accounts_each_site():
    from opacus.accountants import RDPAccountant

    sites = _sites(with_negative_only_site=False)
    dp = SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    s = SETTINGS.replace(sample_dp=dp, arch="small_cnn_gn", local_baseline=False)
    faults = FaultPlan(crash={"site_C": 1})
    run = run_local(sites, s, faults=faults, model_fn=tiny_gn_model).strategies[0]
    r1, r2 = run.rounds
    assert sorted(r1.dp_steps) == ["site_A", "site_B"]  # site_C crashed: sent nothing
    assert sorted(r2.dp_steps) == ["site_A", "site_B", "site_C"]
    priv = run.sample_privacy
    assert priv is not None and run.privacy is None
    for site in sites:
        n = len(site.train)
        q, steps = r2.dp_steps[site.name]
        assert q == pytest.approx(16 / n)
        assert steps == round(n / 16)  # one local epoch of Poisson batches of mean size 16
        rec = priv.sites[site.name]
        assert rec["rounds"] == (1 if site.name == "site_C" else 2)
        assert rec["steps"] == steps * rec["rounds"]
        # Reference: Opacus's RDP accountant over the same history.
        acc = RDPAccountant()
        acc.history = [(1.0, q, rec["steps"])]
        assert rec["epsilon"] == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    assert priv.epsilon == max(v["epsilon"] for v in priv.sites.values())
    record = run.privacy_record()
    assert record["level"] == "sample" and record["epsilon"] == priv.epsilon
    assert record["accountant"] == "opacus.rdp"
    assert all(torch.isfinite(v).all() for v in run.state.values() if v.is_floating_point())


def test_sample_level_dp_is_refused_where_dp_sgd_cannot_train():
    dp = SampleDP(noise_multiplier=1.0)
    with pytest.raises(InvalidInputError) as err:
        FederatedSettings(sample_dp=dp)  # small_cnn has BatchNorm
    assert str(err.value).startswith("Sample-level DP (DP-SGD) cannot train architecture")
    assert str(err.value).endswith("Use --arch small_cnn_gn (GroupNorm instead of BatchNorm).")
    with pytest.raises(InvalidInputError) as err:
        FederatedSettings(sample_dp=dp, arch="small_cnn_gn", strategies=("fedprox",))
    assert str(err.value) == MSG_SAMPLE_DP_FEDPROX
    with pytest.raises(InvalidParameterError, match="'noise_multiplier' parameter of SampleDP"):
        SampleDP(noise_multiplier=0.0)
    both = FederatedSettings(sample_dp=dp, client_dp=ClientDP(1.0, 0.5), arch="small_cnn_gn")
    assert FederatedSettings.from_dict(both.to_dict()) == both


def test_multikrum_averages_every_update_but_the_assumed_attackers():
    """Multi-Krum (Blanchard et al. 2017) with f = 1 of four: the three honest updates,
    weighted by size, exactly; with --krum-select 1 it is Krum (one update)."""
    LocalGrid(None, 1)
    honest = [np.full((2, 2), v, np.float32) for v in (1.0, 1.2, 1.4)]
    attacker = np.full((2, 2), -5.0, np.float32)
    updates, sizes = [*honest, attacker], [10, 30, 20, 40]
    replies = [_reply({"w": a}, n, i) for i, (a, n) in enumerate(zip(updates, sizes, strict=True))]
    w = build_strategy("multikrum", SETTINGS, 4).aggregate_train(1, replies)[0]["w"].numpy()
    expected = (10 * 1.0 + 30 * 1.2 + 20 * 1.4) / 60
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    replies = [_reply({"w": a}, n, i) for i, (a, n) in enumerate(zip(updates, sizes, strict=True))]
    krum = build_strategy("krum", SETTINGS, 4).aggregate_train(1, replies)[0]["w"].numpy()
    one = SETTINGS.replace(krum_select=1)
    replies = [_reply({"w": a}, n, i) for i, (a, n) in enumerate(zip(updates, sizes, strict=True))]
    w = build_strategy("multikrum", one, 4).aggregate_train(1, replies)[0]["w"].numpy()
    np.testing.assert_array_equal(w, krum)
    assert float(w[0, 0]) in (1.0, 1.2, 1.4)  # one honest update, as it was sent


def test_fedtrimmedavg_refuses_a_beta_that_would_trim_no_site():
    from medaudit.federated._strategies import MSG_CANNOT_TRIM, MSG_TRIMS_NOTHING

    with pytest.raises(InvalidInputError) as e:
        build_strategy("fedtrimmedavg", SETTINGS.replace(trimmed_beta=0.2), 4)
    assert str(e.value) == MSG_TRIMS_NOTHING.format(beta=0.2, n=4, need=0.25)
    with pytest.raises(InvalidInputError) as e:
        build_strategy("fedtrimmedavg", SETTINGS, 3)  # the default 0.25 trims none of 3
    assert str(e.value) == MSG_TRIMS_NOTHING.format(beta=0.25, n=3, need=0.334)
    assert build_strategy("fedtrimmedavg", SETTINGS.replace(trimmed_beta=0.334), 3).beta == 0.334
    with pytest.raises(InvalidInputError) as e:
        build_strategy("fedtrimmedavg", SETTINGS, 2)
    assert str(e.value) == MSG_CANNOT_TRIM.format(n=2)
    assert build_strategy("fedtrimmedavg", SETTINGS.replace(trimmed_beta=0.0), 2).beta == 0.0


def test_deployment_run_config_sets_the_robust_strategies_parameters():
    from medaudit.federated._deploy import settings_from_run_config

    s = settings_from_run_config(
        {"strategy": "multikrum", "trimmed-beta": 0.3, "krum-malicious": 2, "krum-select": 1}
    )
    assert (s.strategies, s.trimmed_beta, s.krum_malicious, s.krum_select) == (
        ("multikrum",),
        0.3,
        2,
        1,
    )
    d = settings_from_run_config({})
    assert (d.trimmed_beta, d.krum_malicious, d.krum_select) == (0.25, 1, 0)


def test_strategies_table_scores_the_honest_sites_on_their_true_labels():
    """The poisoned arm names its flipped site, and auroc_unpoisoned_sites is the AUROC of
    the other sites' test data (true labels) within 0.002 of scikit-learn's on the scores."""
    from medaudit.federated._client import _positive_scores

    sites = _sites(with_negative_only_site=False)
    plan = FaultPlan(flip_labels=("site_A",), poison_arms=("poisoned",))
    s = SETTINGS.replace(local_baseline=False)
    run = run_local(
        sites, s, faults=plan, arms=[Arm("clean", "fedavg"), Arm("poisoned", "fedmedian")]
    )
    table = federated_section(run, faults=plan.to_dict()).tables["strategies"].set_index("arm")
    assert table.loc["poisoned", "poisoned_sites"] == "site_A"
    assert table.loc["clean", "poisoned_sites"] == ""
    assert table.loc["clean", "auroc_unpoisoned_sites"] == table.loc["clean", "auroc"]
    for sr in run.strategies:
        honest = [x for x in sites if x.name not in table.loc[sr.name, "poisoned_sites"]]
        model = model_from_state(run.model_config, sr.state, tiny_model)
        scores = np.concatenate([_positive_scores(model, x.test, run.model_config) for x in honest])
        y = np.concatenate([x.test.labels for x in honest])
        assert table.loc[sr.name, "auroc_unpoisoned_sites"] == pytest.approx(
            roc_auc_score(y, scores), abs=0.002
        ), sr.name
