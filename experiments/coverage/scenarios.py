"""Simulated cohorts whose truth is known, for the coverage and level harness.

Each scenario draws a test set of patients (several images each, whose labels can
differ) from a population model, and knows the population value of every group metric
(computed once on a very large draw from the same model, cached per scenario).

Population model of one group ``g`` (all effects on the logit scale):

- patient ``i``: disease propensity ``u_i ~ N(0, sd_u^2)``, score offset ``v_i ~ N(0,
  sd_v^2)`` and label noise ``w_i ~ N(0, sd_w^2)`` shared by the patient's images;
- image ``j`` of patient ``i``: label ``y ~ Bernoulli(expit(a_g + u_i))``; the model's
  logit ``z = b_g * (2y - 1) + v_i + e_ij`` with ``e ~ N(0, 1)``;
- score: ``expit(z + c)`` (``kind="binormal"``), or for ``kind="calibrated"`` the
  score is ``m(x)`` with ``x ~ N(a_g, sd_x^2)`` per image and ``y ~ Bernoulli(expit(x +
  w_i))``, ``m(x) = E_w expit(x + w)``, so ``E[y | score] = score`` exactly while the
  residuals of one patient's images are correlated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medaudit.fairness._metrics import METRICS


@dataclass(frozen=True)
class Group:
    """Population parameters of one group."""

    patients: int  # per draw
    a: float = 0.0  # disease logit (binormal) or risk-logit mean (calibrated)
    b: float = 1.2  # half the class separation of the model's logit (binormal)


@dataclass(frozen=True)
class Scenario:
    """A population of several groups and how a test set is drawn from it."""

    name: str
    groups: tuple[Group, ...]
    images_per_patient: int = 1
    kind: str = "binormal"  # or "calibrated"
    sd_u: float = 0.0
    sd_v: float = 0.0
    sd_w: float = 0.0
    sd_x: float = 1.5
    shift: float = 0.0  # c in expit(z + c)
    threshold: float = 0.5
    note: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def draw(self, rng: np.random.Generator, scale: int = 1) -> pd.DataFrame:
        """One test set (``scale`` times the patients per group)."""
        frames = []
        first = 0
        for gi, g in enumerate(self.groups):
            n_p = g.patients * scale
            m = self.images_per_patient
            pid = np.repeat(np.arange(first, first + n_p), m)
            first += n_p
            u = np.repeat(rng.normal(0, self.sd_u, n_p), m)
            v = np.repeat(rng.normal(0, self.sd_v, n_p), m)
            w = np.repeat(rng.normal(0, self.sd_w, n_p), m)
            n = n_p * m
            if self.kind == "calibrated":
                x = rng.normal(g.a + u, self.sd_x, n)
                y = rng.random(n) < _expit(x + w)
                s = _marginal(x, self.sd_w)
            else:
                y = rng.random(n) < _expit(g.a + u)
                z = g.b * (2 * y - 1) + v + rng.normal(0, 1, n)
                s = _expit(z + self.shift)
            frames.append(
                pd.DataFrame({"y": y.astype(int), "s": s, "group": f"g{gi}", "patient_id": pid})
            )
        return pd.concat(frames, ignore_index=True)


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


_GH = np.polynomial.hermite_e.hermegauss(40)


def _marginal(x: np.ndarray, sd_w: float) -> np.ndarray:
    """E_w expit(x + w), w ~ N(0, sd_w^2), by Gauss-Hermite quadrature."""
    if sd_w == 0:
        return _expit(x)
    nodes, weights = _GH
    return (_expit(x[:, None] + sd_w * nodes[None, :]) @ weights) / weights.sum()


@functools.lru_cache(maxsize=64)
def truth(sc: Scenario, n_bins: int = 10, target: int = 2_000_000) -> pd.DataFrame:
    """Population value of every metric per group, from about ``target`` images each."""
    from medaudit.fairness import group_metrics

    rows = []
    for gi, g in enumerate(sc.groups):
        one = Scenario(
            sc.name,
            (g,),
            sc.images_per_patient,
            sc.kind,
            sc.sd_u,
            sc.sd_v,
            sc.sd_w,
            sc.sd_x,
            sc.shift,
            sc.threshold,
        )
        scale = max(1, target // (g.patients * sc.images_per_patient))
        df = one.draw(np.random.default_rng(12345 + gi), scale)
        gm = group_metrics(
            df.y.to_numpy(),
            df.s.to_numpy(),
            groups={"group": np.full(len(df), f"g{gi}")},
            n_boot=0,
            threshold=sc.threshold,
            min_group_size=1,
            min_class_count=1,
            n_bins=n_bins,
            p_method="none",
        )
        rows.append(gm.by_group("group").set_index("group")[list(METRICS)])
    t = pd.concat(rows)
    if sc.kind == "calibrated":
        t["ece"] = 0.0  # calibrated by construction
    return t
