"""The report section of a federated run, and of a federated audit.

Tables (their names are the contract of ``audit.json``'s ``federated`` section):

- ``sites`` — one row per site: its data, and its test AUROC (with a patient-bootstrap
  CI) of the model trained on its data alone (``local``), of the federated model and,
  in a simulation, of a model trained centrally on the pooled data (``centralised``);
  the rounds it dropped out of; why it was left out, if it was.
- ``rounds`` — every round of every strategy: who took part, who failed or timed out,
  whether it was aggregated, and each site's AUROC after it.
- ``strategies`` — each strategy's global AUROC from the federated audit (and, in a
  simulation, on the pooled test data); under label-flipping poisoning, which sites
  trained on flipped labels and the AUROC on the other sites' test data (true labels).
- ``subgroups`` — the federated audit: global metrics per patient group from the sites'
  sufficient statistics, with intervals that account for patients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from medaudit.federated._rounds import FederatedRun, StrategyRun
from medaudit.federated._stats import (
    ALL_GROUP,
    SufficientStatistics,
    aggregate_statistics,
    subgroup_metrics,
)
from medaudit.federated._strategies import get_strategy
from medaudit.report import Check, Figure, Policy, Section, Threshold

__all__ = [
    "CHECKS",
    "CentralisedComparison",
    "audit_checks",
    "federated_section",
    "rounds_table",
    "sites_table",
]

CHECKS: dict[str, Threshold] = {
    "federated.auroc": Threshold(
        ">=", 0.75, "major", help="Global AUROC of the federated model, from the sites' statistics"
    ),
    "federated.*.auroc_gap": Threshold(
        "<=",
        0.05,
        "major",
        help="Largest minus smallest group AUROC of an attribute, from the sites' statistics",
    ),
    "federated.centralised_gap": Threshold(
        "<=",
        0.05,
        "major",
        help="AUROC of central training on the pooled data minus the federated model's",
    ),
    "federated.site.*.local_advantage": Threshold(
        "<=",
        0.05,
        "minor",
        help="A site's AUROC with a model trained on its data alone minus the federated one",
    ),
    "federated.cross_site_shift": Threshold(
        "<=",
        0.05,
        "minor",
        help="Mean of the sites' own AUROCs minus the AUROC on all sites' data together",
    ),
    "federated.dropouts": Threshold(
        "<=", 0, "minor", help="Site-rounds in which a site failed or timed out"
    ),
    "federated.sites_left_out": Threshold(
        "<=", 0, "minor", help="Sites left out (no positives, no negatives, no training data)"
    ),
    "federated.client_dp_epsilon": Threshold(
        "<=", 10.0, "info", help="Client-level DP epsilon spent over the rounds"
    ),
    "federated.sample_dp_epsilon": Threshold(
        "<=", 10.0, "info", help="Sample-level DP epsilon of the worst site over the rounds"
    ),
}

REFERENCES = [
    "McMahan B, et al. Communication-efficient learning of deep networks from decentralized "
    "data. AISTATS 2017.",
    "Li T, et al. Federated optimization in heterogeneous networks (FedProx). MLSys 2020.",
    "Yin D, et al. Byzantine-robust distributed learning: towards optimal statistical rates "
    "(median, trimmed mean). ICML 2018.",
    "Blanchard P, et al. Machine learning with adversaries: Byzantine tolerant gradient "
    "descent (Krum). NeurIPS 2017.",
    "Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics 1997.",
    "Boosting multi-demographic federated learning for chest radiograph analysis using "
    "general-purpose self-supervised representations (site size, initialisation).",
]


@dataclass(frozen=True)
class CentralisedComparison:
    """What a simulation adds: the pooled data's view of the federated model.

    Attributes
    ----------
    per_site : mapping of str to mapping
        Site → :func:`~medaudit.federated.paired_auroc` of ``federated`` and
        ``centralised`` scores on its test split.
    pooled : mapping of str to float
        The same on all sites' test splits together.
    strategies : mapping of str to float
        Strategy → AUROC of its final model on the pooled test data.
    epochs : int
        Epochs the centralised model trained (rounds x local epochs).
    """

    per_site: Mapping[str, Mapping[str, float]]
    pooled: Mapping[str, float]
    strategies: Mapping[str, float]
    epochs: int


def _ci_text(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.3f} ({lo:.3f}–{hi:.3f})"


def sites_table(run: FederatedRun, centralised: CentralisedComparison | None) -> pd.DataFrame:
    """One row per site (see the module notes)."""
    primary = run.strategies[0] if run.strategies else None
    rows = []
    for site in run.sites:
        c = site.counts
        row: dict[str, Any] = {
            "site": site.name,
            "included": site.included,
            "n_train": int(c.get("n-train", 0)),
            "n_test": int(c.get("n-test", 0)),
            "n_positive_test": int(c.get("n-positive-test", 0)),
        }
        rep = primary.site_reports.get(site.name, {}) if primary else {}
        for model in ("local", "federated"):
            for suffix in ("", "_low", "_high"):
                row[f"auroc_{model}{suffix}"] = rep.get(f"auroc_{model}{suffix}", np.nan)
        for suffix in ("", "_low", "_high"):
            # paired_auroc reports later-minus-first: local - federated
            row[f"local_minus_federated{suffix}"] = rep.get(f"diff_local_federated{suffix}", np.nan)
        cen = centralised.per_site.get(site.name, {}) if centralised else {}
        for suffix in ("", "_low", "_high"):
            row[f"auroc_centralised{suffix}"] = cen.get(f"auroc_centralised{suffix}", np.nan)
        row["rounds_dropped"] = (
            ", ".join(str(r.round) for r in primary.rounds if site.name in r.dropped)
            if primary
            else ""
        )
        row["note"] = site.reason or (primary.report_failures.get(site.name, "") if primary else "")
        rows.append(row)
    return pd.DataFrame(rows)


def rounds_table(run: FederatedRun) -> pd.DataFrame:
    """One row per round of every strategy, with each site's AUROC after it."""
    names = [s.name for s in run.included]
    rows = []
    for sr in run.strategies:
        for r in sr.rounds:
            row: dict[str, Any] = {
                "arm": sr.name,
                "round": r.round,
                "sites_replied": len(r.replied),
                "dropped": "; ".join(
                    [f"{s}: {why}" for s, why in sorted(r.failed.items())]
                    + [f"{s}: no reply within the round timeout" for s in r.timed_out]
                ),
                "aggregated": r.aggregated,
                "note": r.note,
                "seconds": round(r.seconds, 2),
            }
            for s in names:
                row[f"auroc_{s}"] = r.eval_auroc.get(s, np.nan)
            if r.effective_noise is not None:
                row["dp_noise_multiplier"] = r.effective_noise
            rows.append(row)
    return pd.DataFrame(rows)


def _global(sr: StrategyRun) -> pd.Series | None:
    if sr.stats is None:
        return None
    table = subgroup_metrics(sr.stats, sr.moments, min_group_size=1, min_class_count=1)
    return table.iloc[sr.stats.index(ALL_GROUP)] if ALL_GROUP in sr.stats.keys else None


def poisoned_sites(faults: Mapping[str, Any] | None, arm: str) -> tuple[str, ...]:
    """Sites that trained on flipped labels in ``arm``, from a ``FaultPlan.to_dict()`` record.

    Examples
    --------
    >>> plan = {"flip_labels": ["site_0"], "arms": None, "poison_arms": ["fedavg_poisoned"]}
    >>> poisoned_sites(plan, "fedavg_poisoned"), poisoned_sites(plan, "fedavg")
    (('site_0',), ())
    """
    if not faults:
        return ()
    arms = faults.get("poison_arms")
    arms = faults.get("arms") if arms is None else arms
    if arms is not None and arm not in arms:
        return ()
    return tuple(faults.get("flip_labels") or ())


def _auroc_without(sr: StrategyRun, left_out: Sequence[str]) -> float:
    """Global AUROC from the statistics of the sites not in ``left_out`` (their true labels)."""
    kept = [st for name, st in sr.site_stats.items() if name not in left_out]
    if not kept:
        return float("nan")
    t = subgroup_metrics(aggregate_statistics(kept), None, min_group_size=1, min_class_count=1)
    return float(t.iloc[kept[0].index(ALL_GROUP)]["auroc"])


def strategies_table(
    run: FederatedRun,
    centralised: CentralisedComparison | None,
    faults: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Each strategy's outcome (global AUROC from the sites' statistics).

    ``poisoned_sites`` names the sites that trained on flipped labels in the arm, and
    ``auroc_unpoisoned_sites`` is the AUROC on the test data of all the other sites, with
    their true labels, from their statistics: what an attack costs the honest hospitals.
    Every site is always evaluated on its true test labels.
    """
    rows = []
    for sr in run.strategies:
        g = _global(sr)
        nan = float("nan")
        bad = poisoned_sites(faults, sr.name)
        rows.append(
            {
                "arm": sr.name,
                "strategy": sr.strategy,
                "robust": get_strategy(sr.strategy).robust,
                "auroc": nan if g is None else g["auroc"],
                "auroc_low": nan if g is None else g["auroc_low"],
                "auroc_high": nan if g is None else g["auroc_high"],
                "auroc_mean_of_sites": _mean_site_auroc(sr),
                "auroc_pooled_test": (
                    centralised.strategies.get(sr.name, nan) if centralised else nan
                ),
                "poisoned_sites": ", ".join(bad),
                "auroc_unpoisoned_sites": _auroc_without(sr, bad) if sr.site_stats else nan,
                "rounds_aggregated": sum(r.aggregated for r in sr.rounds),
                "site_rounds_dropped": sum(len(r.dropped) for r in sr.rounds),
                "seconds": sr.seconds,
            }
        )
    return pd.DataFrame(rows)


def _mean_site_auroc(sr: StrategyRun) -> float:
    vals = [r.get("auroc_federated", np.nan) for r in sr.site_reports.values()]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def pooled_table(centralised: CentralisedComparison) -> pd.DataFrame:
    """Pooled test data of all sites: federated vs centralised AUROC, and their difference."""
    p = centralised.pooled
    rows = []
    for model, key in (
        ("federated", "auroc_federated"),
        ("centralised", "auroc_centralised"),
        ("centralised minus federated", "diff_centralised_federated"),
    ):
        rows.append(
            {
                "model": model,
                "auroc": p.get(key, np.nan),
                "auroc_low": p.get(f"{key}_low", np.nan),
                "auroc_high": p.get(f"{key}_high", np.nan),
                "epochs": centralised.epochs,
            }
        )
    return pd.DataFrame(rows)


def _gap_checks(table: pd.DataFrame, policy: Policy, confidence: float) -> list[Check]:
    """Per attribute: largest minus smallest group AUROC, simultaneous (Bonferroni) CI."""
    out = []
    for attr, sub in table[table["attribute"] != "all"].groupby("attribute", sort=True):
        cid = f"federated.{attr}.auroc_gap"
        desc = f"AUROC gap between the groups of {attr} (federated audit)"
        ok = sub[(sub["status"] == "ok") & np.isfinite(sub["auroc"].astype(float))]
        if len(ok) < 2:
            out.append(policy.skipped(cid, desc, "fewer than two groups large enough to compare"))
            continue
        hi_row, lo_row = ok.loc[ok["auroc"].idxmax()], ok.loc[ok["auroc"].idxmin()]
        gap = float(hi_row["auroc"] - lo_row["auroc"])
        m = len(ok) * (len(ok) - 1) / 2
        z = NormalDist().inv_cdf(1 - (1 - confidence) / (2 * m))
        se = float(np.hypot(hi_row["auroc_se"], lo_row["auroc_se"]))
        ci = (gap - z * se, gap + z * se) if np.isfinite(se) else None
        out.append(
            policy.judge(
                cid,
                f"{desc}: {hi_row['group']} vs {lo_row['group']}",
                gap,
                ci=ci,
                advice="Look at the group with the lowest AUROC in the subgroups table; "
                "its sites' data may need more positives or better acquisition.",
            )
        )
    return out


def audit_checks(table: pd.DataFrame, policy: Policy, confidence: float) -> list[Check]:
    """The federated audit's checks from its subgroup table."""
    row = table[(table["attribute"] == "all") & (table["group"] == "all")]
    checks = []
    desc = "Global AUROC of the model from the sites' sufficient statistics"
    if row.empty or row.iloc[0]["status"] != "ok":
        reason = "no site returned statistics" if row.empty else str(row.iloc[0]["reason"])
        checks.append(policy.skipped("federated.auroc", desc, reason))
    else:
        r = row.iloc[0]
        checks.append(
            policy.judge(
                "federated.auroc", desc, float(r["auroc"]), ci=(r["auroc_low"], r["auroc_high"])
            )
        )
    return checks + _gap_checks(table, policy, confidence)


def _training_checks(
    run: FederatedRun,
    sites: pd.DataFrame,
    centralised: CentralisedComparison | None,
    policy: Policy,
) -> list[Check]:
    checks = []
    primary = run.strategies[0]
    if centralised is not None:
        p = centralised.pooled
        checks.append(
            policy.judge(
                "federated.centralised_gap",
                "Pooled-test AUROC of central training minus the federated model's",
                float(p.get("diff_centralised_federated", np.nan)),
                ci=(
                    float(p.get("diff_centralised_federated_low", np.nan)),
                    float(p.get("diff_centralised_federated_high", np.nan)),
                ),
                advice="Train for more rounds or local epochs, or try FedProx for skewed sites.",
            )
        )
    for _, row in sites[sites["included"]].iterrows():
        cid = f"federated.site.{row['site']}.local_advantage"
        desc = f"{row['site']}: AUROC of its local-only model minus the federated model's"
        if not np.isfinite(row["local_minus_federated"]):
            why = (
                "no local-only model"
                if not run.settings.local_baseline
                else ("the site's test data lack positives or negatives, or it did not report")
            )
            checks.append(policy.skipped(cid, desc, why))
            continue
        checks.append(
            policy.judge(
                cid,
                desc,
                float(row["local_minus_federated"]),
                ci=(row["local_minus_federated_low"], row["local_minus_federated_high"]),
                advice="Federation makes this site worse than training alone: start from a "
                "pretrained model (--init) or fine-tune the federated model on the site.",
            )
        )
    g = _global(primary)
    if g is not None and np.isfinite(_mean_site_auroc(primary)) and np.isfinite(g["auroc"]):
        checks.append(
            policy.judge(
                "federated.cross_site_shift",
                "Mean of the sites' own AUROCs minus the AUROC on all their test data together",
                _mean_site_auroc(primary) - float(g["auroc"]),
                advice="The model ranks well within each site but its scores shift between "
                "sites, so one threshold will not fit every hospital: calibrate per site, or "
                "train without BatchNorm's per-site batch statistics (--arch small_cnn_gn).",
            )
        )
    drops = [(r.round, s) for r in primary.rounds for s in r.dropped]
    checks.append(
        policy.judge(
            "federated.dropouts",
            "Site-rounds in which a site failed or timed out"
            + (": " + ", ".join(f"{s} (round {k})" for k, s in drops) if drops else ""),
            float(len(drops)),
        )
    )
    left = [s for s in run.sites if not s.included]
    checks.append(
        policy.judge(
            "federated.sites_left_out",
            "Sites left out of the federation"
            + (": " + "; ".join(f"{s.name} ({s.reason})" for s in left) if left else ""),
            float(len(left)),
        )
    )
    if primary.privacy is not None:
        checks.append(
            policy.judge(
                "federated.client_dp_epsilon",
                f"Client-level DP ε at δ = {primary.privacy.delta:g} over "
                f"{primary.privacy.steps} released rounds",
                primary.privacy.epsilon,
            )
        )
    sp = primary.sample_privacy
    if sp is not None:
        worst = max(sp.sites, key=lambda k: sp.sites[k]["epsilon"], default="")
        checks.append(
            policy.judge(
                "federated.sample_dp_epsilon",
                f"Sample-level DP ε at δ = {sp.delta:g} (DP-SGD at every site; largest: "
                f"{worst}, {sp.sites[worst]['steps'] if worst else 0} steps)",
                sp.epsilon,
            )
        )
    return checks


def _rounds_figure(run: FederatedRun) -> Figure | None:
    primary = run.strategies[0] if run.strategies else None
    if primary is None or not primary.rounds:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    rounds = [r.round for r in primary.rounds]
    for site in (s.name for s in run.included):
        ax.plot(
            rounds, [r.eval_auroc.get(site, np.nan) for r in primary.rounds], marker="o", label=site
        )
    for r in primary.rounds:
        if r.dropped:
            ax.axvline(r.round, color="0.7", linestyle=":", linewidth=1)
    ax.set_xlabel("round")
    ax.set_ylabel("test AUROC at the site")
    ax.set_title(f"{primary.name}: each site's AUROC of the global model")
    ax.legend(fontsize=8, ncols=2)
    ax.set_xticks(rounds)
    return Figure.from_matplotlib(
        fig,
        alt="Line chart of every site's test AUROC of the global model after each round; "
        "dotted lines mark rounds in which a site dropped out.",
    )


def _summary(run: FederatedRun, centralised: CentralisedComparison | None) -> str:
    primary = run.strategies[0]
    g = _global(primary)
    auc = "n/a" if g is None else _ci_text(g["auroc"], g["auroc_low"], g["auroc_high"])
    text = (
        f"{primary.name} over {len(run.included)} sites for {run.settings.rounds} rounds: "
        f"global AUROC {auc} from the sites' statistics"
    )
    if centralised is not None:
        p = centralised.pooled
        text += f" (central training on the pooled data: {p.get('auroc_centralised', np.nan):.3f})"
    drops = sorted({s for r in primary.rounds for s in r.dropped})
    text += "; " + (
        f"dropped out at least once: {', '.join(drops)}." if drops else "no site dropped out."
    )
    return text


def _notes(run: FederatedRun, faults: Mapping[str, Any] | None) -> list[str]:
    s = run.settings
    notes = [
        f"Each site trained {s.local_epochs} local epoch(s) per round (batch {s.batch_size}, "
        f"AdamW lr {s.lr:g}); a round was aggregated only when at least {s.min_sites} sites "
        f"replied within {s.round_timeout:g} s.",
        "Per-site AUROCs are computed at each site on its own test split, with a bootstrap "
        f"over its patients ({s.n_bootstrap} resamples); the local-only model trained "
        f"{s.rounds * s.local_epochs} epochs on the site's data alone from the same initial "
        "weights.",
        "The federated audit used confusion counts at threshold "
        f"{s.threshold:g} and score histograms of {s.n_bins} logit bins per group: no score or "
        "image left a site. AUROC intervals are Obuchowski's clustered intervals (patients "
        "as clusters), proportions use design-effect adjusted Wilson intervals.",
    ]
    if s.audit_noise is not None:
        notes.append(
            f"Each site added Laplace noise (ε = {s.audit_noise:g} per image) to its counts "
            "before sending them; the intervals ignore the noise and patient clustering."
        )
    if s.client_dp is not None:
        dp = s.client_dp
        notes.append(
            f"Client-level DP: updates clipped to L2 norm {dp.clipping_norm:g} "
            f"({dp.clipping} side), Gaussian noise σ = {dp.noise_multiplier:g}; ε accounted "
            f"with dp-accounting ({dp.accountant}) over the rounds that released an aggregate."
        )
    if faults:
        notes.append(f"Faults injected for this run (a test or red-team run): {faults}.")
    if faults and faults.get("flip_labels"):
        notes.append(
            "Poisoned sites trained on flipped labels but were evaluated on their true test "
            "labels; the strategies table's auroc_unpoisoned_sites leaves them out, so it "
            "compares what each strategy kept for the honest sites with the clean arm."
        )
    return notes


def federated_section(
    run: FederatedRun,
    *,
    policy: Policy | None = None,
    centralised: CentralisedComparison | None = None,
    faults: Mapping[str, Any] | None = None,
) -> Section:
    """The ``federated`` section of a training run (or of an audit-only run)."""
    policy = policy or Policy.default()
    confidence = float(policy.setting("confidence"))
    if run.audit is not None:
        return audit_only_section(run, policy=policy)
    primary = run.strategies[0]
    sites = sites_table(run, centralised)
    tables = {
        "sites": sites,
        "rounds": rounds_table(run),
        "strategies": strategies_table(run, centralised, faults),
    }
    if centralised is not None:
        tables["pooled"] = pooled_table(centralised)
    checks = _training_checks(run, sites, centralised, policy)
    if primary.stats is not None:
        sub = _subgroups(primary.stats, primary, policy)
        tables["subgroups"] = sub
        checks = audit_checks(sub, policy, confidence) + checks
    figures = {}
    fig = _rounds_figure(run)
    if fig is not None:
        figures["rounds"] = fig
    return Section(
        name="federated",
        title="Federated training and federated audit",
        summary=_summary(run, centralised),
        tables=tables,
        figures=figures,
        checks=checks,
        notes=_notes(run, faults),
        references=REFERENCES,
        methods="Flower Message-API apps; sites train through medaudit's training loop; "
        "the server aggregates with the named strategies and audits from sufficient statistics.",
        table_titles={
            "sites": "Per site: local-only vs federated vs centralised AUROC",
            "rounds": "Every round: who took part, who dropped, each site's AUROC",
            "strategies": "Strategies compared",
            "subgroups": "Federated audit: metrics per patient group",
            "pooled": "All sites' test data pooled: federated vs centralised training",
        },
    )


def _subgroups(stats: SufficientStatistics, sr: StrategyRun | None, policy: Policy) -> pd.DataFrame:
    return subgroup_metrics(
        stats,
        None if sr is None else sr.moments,
        confidence=float(policy.setting("confidence")),
        min_group_size=int(policy.setting("min_group_size")),
        min_class_count=int(policy.setting("min_class_count")),
    )


def audit_sites_table(
    site_stats: Mapping[str, SufficientStatistics],
    reports: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """Per site of a federated audit: images, positives, AUROC, sensitivity, specificity.

    The AUROC interval is the site's own patient bootstrap when it reported one, else
    DeLong's from its histogram (images taken as independent).
    """
    rows = []
    for name, st in sorted(site_stats.items()):
        t = subgroup_metrics(st, None, min_group_size=1, min_class_count=1)
        r = t.iloc[st.index(ALL_GROUP)]
        rep = (reports or {}).get(name, {})
        boot = "auroc_federated" in rep
        rows.append(
            {
                "site": name,
                "n": int(r["n"]),
                "n_positive": int(r["n_positive"]),
                "auroc": rep["auroc_federated"] if boot else r["auroc"],
                "auroc_low": rep["auroc_federated_low"] if boot else r["auroc_low"],
                "auroc_high": rep["auroc_federated_high"] if boot else r["auroc_high"],
                "auroc_ci": "patient bootstrap at the site" if boot else "DeLong, images",
                "sensitivity": r["sensitivity"],
                "specificity": r["specificity"],
            }
        )
    return pd.DataFrame(rows)


def audit_only_section(run: FederatedRun, *, policy: Policy) -> Section:
    """The ``federated`` section of ``medaudit federate --audit-only``."""
    sr = run.audit
    assert sr is not None
    return audit_section(
        sr.site_stats,
        sr.stats,
        sr.moments,
        policy=policy,
        failures=sr.audit_failures,
        noise=run.settings.audit_noise,
        reports=sr.site_reports,
    )


def audit_section(
    site_stats: Mapping[str, SufficientStatistics],
    pooled: SufficientStatistics | None,
    moments: Any,
    *,
    policy: Policy,
    failures: Mapping[str, str] | None = None,
    noise: float | None = None,
    notes: Sequence[str] = (),
    reports: Mapping[str, Mapping[str, float]] | None = None,
) -> Section:
    """A federated audit's section from the sites' statistics (and the summed moments)."""
    confidence = float(policy.setting("confidence"))
    tables: dict[str, pd.DataFrame] = {"sites": audit_sites_table(site_stats, reports)}
    checks: list[Check] = []
    summary = "No site returned statistics."
    if pooled is not None:
        sub = subgroup_metrics(
            pooled,
            moments,
            confidence=confidence,
            min_group_size=int(policy.setting("min_group_size")),
            min_class_count=int(policy.setting("min_class_count")),
        )
        tables["subgroups"] = sub
        checks = audit_checks(sub, policy, confidence)
        r = sub.iloc[pooled.index(ALL_GROUP)]
        summary = (
            f"Across {len(site_stats)} sites ({int(r['n'])} images), the model's AUROC is "
            f"{_ci_text(r['auroc'], r['auroc_low'], r['auroc_high'])}, computed from each "
            "site's counts and score histograms without pooling any score or image."
        )
    out_notes = list(notes)
    if failures:
        out_notes.append(
            "Sites that did not return statistics: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        )
    if noise is not None:
        out_notes.append(
            f"Counts carry Laplace noise (ε = {noise:g} per image, added at each site); the "
            "intervals ignore the noise."
        )
    return Section(
        name="federated",
        title="Federated audit across sites",
        summary=summary,
        tables=tables,
        checks=checks,
        notes=out_notes,
        references=REFERENCES[-2:-1],
        methods="Each site sends confusion counts at the operating threshold and score "
        "histograms per group; the server sums them and computes the global metrics.",
        table_titles={
            "sites": "Per site: images, positives and AUROC",
            "subgroups": "Global metrics per patient group",
        },
    )
