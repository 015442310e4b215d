"""The cells of the coverage / level harness, one function per row of issue 8's table.

Every cell draws ``draws`` test sets from a :class:`scenarios.Scenario` whose truth is
known, runs medaudit on each, and returns :class:`Cell` rows: what was measured, the
rate over the draws, its Monte-Carlo standard error, and the range it should be in.
``run.py`` runs every cell with hundreds of draws and writes the table into
``docs/statistics.md``; ``tests/test_coverage.py`` (slow) runs the key cells with fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scenarios import Group, Scenario, truth

from medaudit.fairness import fairness_section, group_metrics
from medaudit.inference import Predictions
from medaudit.report import Policy
from medaudit.testing import FairnessAssertionError, FairnessInconclusiveError, assert_subgroup_gap

COVERAGE = (0.93, 0.97)
LEVEL = (0.0, 0.05)


@dataclass(frozen=True)
class Cell:
    """One measured rate: coverage of an interval or rate of a decision."""

    row: str  # the row of issue 8's table
    scenario: str
    quantity: str
    rate: float
    n: int  # intervals or decisions behind the rate
    draws: int
    low: float  # should be in [low, high]
    high: float

    @property
    def mc_se(self) -> float:
        """Monte-Carlo standard error of ``rate`` (binomial)."""
        return math.sqrt(max(self.rate * (1 - self.rate), 1e-12) / max(self.n, 1))

    @property
    def ok(self) -> bool:
        """Within the target range."""
        return self.low <= self.rate <= self.high

    def as_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "scenario": self.scenario,
            "quantity": self.quantity,
            "rate": self.rate,
            "mc_se": self.mc_se,
            "n": self.n,
            "draws": self.draws,
            "should_be": f"{self.low:g}-{self.high:g}",
            "ok": self.ok,
        }


# ----------------------------------------------------------------------------- scenarios
# The issue's case: prevalence 0.5, AUROC 0.95 (b = 1.163), 300 images per group, with
# different prevalences so that the demographic-parity difference is not 0.
ISSUE_CASE = Scenario(
    "independent images, prevalence 0.5/0.35, AUROC 0.95, 300 per group",
    (Group(300, 0.0, 1.163), Group(300, -0.62, 1.163)),
)
CLUSTERED = Scenario(
    "4 images/patient (mixed classes), 3 unequal groups of 60/150/400 patients",
    (Group(60, -1.0, 1.0), Group(150, -0.7, 1.0), Group(400, -1.3, 1.0)),
    images_per_patient=4,
    sd_u=1.5,
    sd_v=1.0,
)
LOW_PREVALENCE = Scenario(
    "prevalence about 0.04, 2 images/patient, 4 unequal groups of 250-2,000 patients",
    (Group(250, -3.6, 1.2), Group(500, -3.4, 1.2), Group(1000, -3.8, 1.2), Group(2000, -3.6, 1.2)),
    images_per_patient=2,
    sd_u=1.0,
    sd_v=0.7,
)
MIXED_A = Scenario(
    "AUROC, 4 images/patient, shared score offset per patient",
    (Group(100, -0.8, 1.0), Group(100, -0.8, 1.0)),
    images_per_patient=4,
    sd_u=1.5,
    sd_v=1.2,
)
MIXED_B = Scenario(
    "AUROC, 4 images/patient, strongly shared disease, no score offset",
    (Group(100, -0.5, 1.0), Group(100, -0.5, 1.0)),
    images_per_patient=4,
    sd_u=3.0,
    sd_v=0.0,
)
NEAR_ONE = Scenario(
    "AUROC 0.985, 2 images/patient, 60 and 120 patients (about 30 and 60 positive images)",
    (Group(60, -1.0, 1.535), Group(120, -1.0, 1.535)),
    images_per_patient=2,
    sd_u=1.0,
    sd_v=0.5,
)
CALIBRATED = Scenario(
    "calibrated model, 1,000 and 100 images, independent",
    (Group(1000, -0.8), Group(100, -0.8)),
    kind="calibrated",
    sd_x=1.5,
)
CALIBRATED_CLUSTERED = Scenario(
    "calibrated model, 4 images/patient, 250 and 25 patients",
    (Group(250, -0.8), Group(25, -0.8)),
    images_per_patient=4,
    kind="calibrated",
    sd_u=0.5,
    sd_w=1.0,
)


def null_scenario(n_groups: int, patients: int = 63, prevalence_logit: float = -0.8) -> Scenario:
    """``n_groups`` identical groups of ``patients`` patients x 4 images (about 250)."""
    return Scenario(
        f"no gap, {n_groups} groups of {patients} patients x 4 images",
        tuple(Group(patients, prevalence_logit, 1.1) for _ in range(n_groups)),
        images_per_patient=4,
        sd_u=1.0,
        sd_v=0.8,
    )


def _gm(df: pd.DataFrame, sc: Scenario, seed: int, n_boot: int, **kw: object):
    return group_metrics(
        df.y.to_numpy(),
        df.s.to_numpy(),
        groups={"group": df.group.to_numpy()},
        patient_id=df.patient_id.to_numpy() if sc.images_per_patient > 1 else None,
        n_boot=n_boot,
        threshold=sc.threshold,
        random_state=seed,
        **kw,
    )


def _draws(sc: Scenario, draws: int, seed: int) -> list[tuple[int, pd.DataFrame]]:
    return [(seed + d, sc.draw(np.random.default_rng(seed + d))) for d in range(draws)]


# ----------------------------------------------------------------------------- cells
def coverage(
    sc: Scenario,
    metrics: tuple[str, ...],
    *,
    draws: int,
    n_boot: int = 1000,
    seed: int = 0,
    gaps: tuple[str, ...] = (),
    row: str = "group CI coverage",
    truth_images: int = 2_000_000,
) -> list[Cell]:
    """Coverage of each group's CI of each metric, and of the gaps' CIs."""
    tr = truth(sc, target=truth_images)
    hits: dict[str, list[bool]] = {m: [] for m in metrics}
    gap_hits: dict[str, list[bool]] = {m: [] for m in gaps}
    for s, df in _draws(sc, draws, seed):
        gm = _gm(df, sc, s, n_boot)
        w = gm.by_group("group").set_index("group")
        for m in metrics:
            for g in w.index:
                hits[m].append(
                    bool(w.loc[g, f"{m}_ci_low"] <= tr.loc[g, m] <= w.loc[g, f"{m}_ci_high"])
                )
        for m in gaps:
            base = "selection_rate" if m == "demographic_parity_difference" else m
            true_gap = float(tr[base].max() - tr[base].min())
            ci = gm.gap("group", m).ci
            gap_hits[m].append(bool(ci[0] <= true_gap <= ci[1]))
    out = [
        Cell(row, sc.name, f"{m} CI", float(np.mean(v)), len(v), draws, *COVERAGE)
        for m, v in hits.items()
    ]
    out += [
        Cell(
            row, sc.name, f"{m} gap CI (simultaneous)", float(np.mean(v)), len(v), draws, 0.93, 1.0
        )
        for m, v in gap_hits.items()
    ]
    return out


def null_gaps(
    n_groups: int,
    *,
    draws: int,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: tuple[str, ...] = (
        "auroc",
        "true_positive_rate",
        "selection_rate",
        "brier_score",
        "ece",
    ),
    p_method: str = "bootstrap",
) -> list[Cell]:
    """No gap planted: how often each max-min gap CI excludes 0 and its p-value is < 0.05.

    Also how often the CI and the p-value of the same gap disagree (never, by duality).
    """
    sc = null_scenario(n_groups)
    excl: dict[str, list[bool]] = {m: [] for m in metrics}
    small: dict[str, list[bool]] = {m: [] for m in metrics}
    disagree: list[bool] = []
    for s, df in _draws(sc, draws, seed):
        gm = _gm(df, sc, s, n_boot, p_method=p_method, p_adjust="none")
        for m in metrics:
            r = gm.gap("group", m)
            excl[m].append(bool(r.ci[0] > 0))
            small[m].append(bool(r.p_value < 0.05))
        if p_method == "bootstrap":
            g = gm.gaps[(gm.gaps.kind == "difference") & gm.gaps.p_value.notna()]
            disagree.append(bool(((g.p_value <= 0.05) != (g.ci_low > 0)).any()))
    row = "max-min gap on null data"
    out = []
    if p_method == "bootstrap":
        out += [
            Cell(row, sc.name, f"{m} gap CI excludes 0", float(np.mean(v)), len(v), draws, *LEVEL)
            for m, v in excl.items()
        ]
        out.append(
            Cell(
                "CI and p-value of the same gap",
                sc.name,
                "draws where some gap's CI and p-value disagree",
                float(np.mean(disagree)),
                draws,
                draws,
                0.0,
                0.0,
            )
        )
    label = "bootstrap (dual to the CI)" if p_method == "bootstrap" else "patient permutation"
    out += [
        Cell(
            "p-value, clustered null",
            sc.name,
            f"{m} p < 0.05 ({label})",
            float(np.mean(v)),
            len(v),
            draws,
            *LEVEL,
        )
        for m, v in small.items()
    ]
    return out


def calibrated_ece(sc: Scenario, *, draws: int, n_boot: int = 1000, seed: int = 0) -> list[Cell]:
    """A calibrated model: ECE CIs contain 0, ECE-gap CIs rarely exclude 0, no warning."""
    contains, gap_excl, warns = [], [], []
    policy = Policy.from_mapping({"settings": {"n_bootstrap": n_boot}})
    for s, df in _draws(sc, draws, seed):
        p = _predictions(df, sc)
        sec = fairness_section(
            p,
            sensitive=["group"],
            policy=Policy.from_mapping({"settings": {"n_bootstrap": n_boot, "seed": s}}),
            intersections=False,
            continuous=(),
            figures=False,
        )
        t = sec.tables["groups_group"]
        contains += [bool(lo <= 0.0) for lo in t["ece_ci_low"]]
        chk = next(c for c in sec.checks if c.id == "fairness.group.ece_gap")
        gaps = sec.tables["gaps"]
        row = gaps[(gaps.metric == "ece") & (gaps.kind == "difference")].iloc[0]
        gap_excl.append(bool(row.ci_low > 0))
        warns.append(chk.status in ("fail", "inconclusive"))
    del policy
    return [
        Cell(
            "ECE, calibrated model",
            sc.name,
            "group ECE CI contains the true 0",
            float(np.mean(contains)),
            len(contains),
            draws,
            0.93,
            1.0,
        ),
        Cell(
            "ECE, calibrated model",
            sc.name,
            "ECE-gap CI excludes 0",
            float(np.mean(gap_excl)),
            draws,
            draws,
            *LEVEL,
        ),
        Cell(
            "ECE, calibrated model",
            sc.name,
            "ece_gap check warns (fail or inconclusive)",
            float(np.mean(warns)),
            draws,
            draws,
            *LEVEL,
        ),
    ]


def _predictions(df: pd.DataFrame, sc: Scenario) -> Predictions:
    s = df.s.to_numpy()
    meta = df[["group"]].copy()
    if sc.images_per_patient > 1:
        meta["patient_id"] = df.patient_id.to_numpy()
    return Predictions(np.c_[1 - s, s], df.y.to_numpy(), np.zeros(len(df)), None, meta)


def decision_rule(n_groups: int, *, draws: int, n_boot: int = 1000, seed: int = 0) -> list[Cell]:
    """No gap planted: how often an attribute gets a failed fairness check.

    Under the default rule (fail when the CI lies beyond the threshold) and the old one
    (decision = "estimate"), over every fairness check of the attribute.
    """
    sc = null_scenario(n_groups)
    fails = {"ci": [], "estimate": []}
    for s, df in _draws(sc, draws, seed):
        p = _predictions(df, sc)
        for decision in fails:
            pol = Policy.from_mapping(
                {"settings": {"n_bootstrap": n_boot, "seed": s, "decision": decision}}
            )
            sec = fairness_section(
                p,
                sensitive=["group"],
                policy=pol,
                intersections=False,
                continuous=(),
                figures=False,
            )
            fails[decision].append(any(c.status == "fail" for c in sec.checks))
    row = "decision rule on null data"
    return [
        Cell(
            row,
            sc.name,
            'an attribute fails a check (default, decision = "ci")',
            float(np.mean(fails["ci"])),
            draws,
            draws,
            *LEVEL,
        ),
        Cell(
            row,
            sc.name,
            'an attribute fails a check (old, decision = "estimate")',
            float(np.mean(fails["estimate"])),
            draws,
            draws,
            0.0,
            1.0,
        ),
    ]


def assertion(*, draws: int, n_boot: int = 1000, seed: int = 0, per_group: int = 500) -> list[Cell]:
    """``assert_subgroup_gap(ci=True, max_gap=0.05)`` on a fair model, 500 per group."""
    sc = Scenario(
        f"fair model, 2 groups of {per_group} independent images",
        (Group(per_group, -0.8, 1.1), Group(per_group, -0.8, 1.1)),
    )
    failed, inconclusive, said, needed = [], [], [], []
    for s, df in _draws(sc, draws, seed):
        try:
            assert_subgroup_gap(
                df.y.to_numpy(),
                df.s.to_numpy(),
                groups=df.group.to_numpy(),
                max_gap=0.05,
                n_boot=n_boot,
                random_state=s,
            )
            failed.append(False)
            inconclusive.append(False)
        except FairnessInconclusiveError as e:
            failed.append(False)
            inconclusive.append(True)
            said.append(str(e).startswith("inconclusive:") and "per group" in str(e))
            if e.needed is not None:
                needed.append(e.needed)
        except FairnessAssertionError:
            failed.append(True)
            inconclusive.append(False)
    row = "assert_subgroup_gap, fair model"
    out = [
        Cell(
            row,
            sc.name,
            "fails (CI wholly above max_gap)",
            float(np.mean(failed)),
            draws,
            draws,
            *LEVEL,
        ),
        Cell(row, sc.name, "inconclusive", float(np.mean(inconclusive)), draws, draws, 0.0, 1.0),
    ]
    if said:
        out.append(
            Cell(
                row,
                sc.name,
                'inconclusive messages that say "inconclusive: ... per group"',
                float(np.mean(said)),
                len(said),
                draws,
                1.0,
                1.0,
            )
        )
    if needed:
        out.append(
            Cell(
                row,
                sc.name,
                f"median patients per group said to decide it: {int(np.median(needed)):,}",
                float(np.median(needed) > per_group),
                len(needed),
                draws,
                1.0,
                1.0,
            )
        )
    return out


def power_check(*, draws: int, n_boot: int = 500, seed: int = 0) -> list[Cell]:
    """At the size :func:`required_sample_size` gives, a planted TPR gap is found ~80%."""
    from medaudit.stats import required_sample_size

    need = required_sample_size("true_positive_rate", gap=0.1, baseline=0.85, prevalence=0.3)
    n = need.patients_per_group
    # Binormal: TPR = P(b + e > 0) = Phi(b) at threshold 0.5.
    from statistics import NormalDist

    b_hi, b_lo = NormalDist().inv_cdf(0.85), NormalDist().inv_cdf(0.75)
    sc = Scenario(
        f"TPR 0.85 vs 0.75, prevalence 0.3, {n} per group (required_sample_size)",
        (Group(n, math.log(0.3 / 0.7), b_hi), Group(n, math.log(0.3 / 0.7), b_lo)),
    )
    found = []
    for s, df in _draws(sc, draws, seed):
        gm = _gm(df, sc, s, n_boot, p_method="none")
        found.append(bool(gm.gap("group", "true_positive_rate").ci[0] > 0))
    return [
        Cell(
            "sample size",
            sc.name,
            "planted gap detected (CI excludes 0)",
            float(np.mean(found)),
            draws,
            draws,
            0.72,
            0.88,
        )
    ]


def skipped_group(*, draws: int = 1, seed: int = 0) -> list[Cell]:
    """EOD / DPD with a skipped group of one image: medaudit, to_metricframe, Fairlearn agree."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    rng = np.random.default_rng(seed)
    n = 600
    y = (rng.random(n) < 0.4).astype(int)
    s = 1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.0)))
    g = np.where(np.arange(n) < n // 2, "A", "B").astype(object)
    g[0], y[0], s[0] = "tiny", 1, 0.1  # a group of one positive image, missed
    gm = group_metrics(y, s, groups={"grp": g}, n_boot=0, p_method="none")
    mf = gm.to_metricframe("grp")
    kept = gm._kept(["grp"], y)
    pred = (s >= 0.5).astype(int)
    ok = []
    for name, fn in (
        ("equalized_odds_difference", equalized_odds_difference),
        ("demographic_parity_difference", demographic_parity_difference),
    ):
        row = gm.gaps[(gm.gaps.metric == name) & (gm.gaps.kind == "difference")].iloc[0]
        ours = float(row.value)
        on_frame = fn(y[kept], pred[kept], sensitive_features=g[kept])
        full = fn(y, pred, sensitive_features=g)
        ok.append(
            abs(ours - on_frame) < 1e-12
            and "tiny" not in set(mf.by_group.index)
            and f"{full:.6g}" in row.note
            and "excludes skipped group(s) tiny" in row.note
        )
    return [
        Cell(
            "EOD/DPD with a skipped group",
            "a group of one image next to two of 300",
            "gap = Fairlearn on to_metricframe() rows; the note names the group and "
            "Fairlearn's all-groups value",
            float(np.mean(ok)),
            len(ok),
            draws,
            1.0,
            1.0,
        )
    ]


CELLS: dict[str, Callable[..., list[Cell]]] = {
    "coverage": coverage,
    "null_gaps": null_gaps,
    "calibrated_ece": calibrated_ece,
    "decision_rule": decision_rule,
    "assertion": assertion,
    "power_check": power_check,
    "skipped_group": skipped_group,
}
