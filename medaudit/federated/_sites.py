"""What a site holds and does on its own data: its split, its evaluation, injected faults.

Everything here runs *at a site*: nothing reads another site's rows. A site splits its
patients into training and test data, evaluates a model on its test data with a patient
bootstrap, and (in simulations and red-team experiments) may be told to fail:
:class:`FaultPlan` crashes, delays or poisons chosen sites, so that the server's handling
of faults can be tested on the real apps.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error
from medaudit.data import Cohort, patient_split, resolve_sensitive

__all__ = [
    "FaultPlan",
    "InjectedFault",
    "SiteData",
    "paired_auroc",
    "prepare_site",
    "site_seed",
]


class InjectedFault(RuntimeError):
    """The failure a :class:`FaultPlan` makes a site raise."""


@dataclass(frozen=True)
class SiteData:
    """One site's data, split by patient into training and test rows.

    Attributes
    ----------
    name : str
    train : Cohort
    test : Cohort
    sensitive : tuple of str
        Attribute columns the federated audit groups by.
    split_source : str
        ``"split column"`` or ``"patient split (test fraction f)"``.
    """

    name: str
    train: Cohort
    test: Cohort
    sensitive: tuple[str, ...] = ()
    split_source: str = "split column"

    @property
    def counts(self) -> dict[str, int]:
        """Images and positives per split."""
        ytr, yte = self.train.labels, self.test.labels
        return {
            "n_train": len(ytr),
            "n_test": len(yte),
            "n_positive_train": int(np.sum(ytr > 0)),
            "n_positive_test": int(np.sum(yte > 0)),
            "n_positive": int(np.sum(ytr > 0) + np.sum(yte > 0)),
            "n": len(ytr) + len(yte),
        }


def site_seed(name: str, seed: int) -> int:
    """A seed for a site's randomness that does not depend on the order of the sites."""
    return (zlib.crc32(name.encode("utf-8")) + 7919 * int(seed)) % (2**31)


def prepare_site(
    cohort: Cohort,
    name: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    sensitive: Sequence[str] | None = None,
) -> SiteData:
    """Split one site's cohort into training and test data.

    The ``split`` column is used when the site has both ``train`` (or ``val``) and
    ``test`` rows; otherwise the site's patients are split with
    :func:`medaudit.data.patient_split` (stratified by label when both classes occur).
    Rows of other splits (``external``) are evaluation-only: they join the test rows.

    Parameters
    ----------
    cohort : Cohort
        The site's rows only.
    name : str
    test_fraction : float in (0, 1)
    seed : int
    sensitive : sequence of str, optional
        Attribute columns for the audit (default: the demographic columns present).
    """
    meta = cohort.meta
    sens = tuple(resolve_sensitive(meta.columns, sensitive, source=f"site {name!r}"))
    split = meta["split"].astype(str).to_numpy() if "split" in meta.columns else None
    if split is not None and {"test"} <= set(split) and set(split) & {"train", "val"}:
        train_mask = np.isin(split, ["train", "val"])
        source = "split column"
    else:
        stratify = "label" if len(np.unique(cohort.labels)) > 1 else None
        names = patient_split(
            meta,
            fractions=(1 - test_fraction, test_fraction),
            names=("train", "test"),
            stratify=stratify,
            random_state=site_seed(name, seed),
        )
        train_mask = names == "train"
        source = f"patient split (test fraction {test_fraction:g})"
    return SiteData(
        name=name,
        train=cohort.subset(train_mask, name=f"{name}:train"),
        test=cohort.subset(~train_mask, name=f"{name}:test"),
        sensitive=sens,
        split_source=source,
    )


@dataclass(frozen=True)
class FaultPlan:
    """Faults to inject at chosen sites (simulations, tests and red-team experiments).

    Parameters
    ----------
    crash : mapping of str to int
        Site → round in which its local training raises :class:`InjectedFault`.
    delay : mapping of str to (int, float)
        Site → (round, seconds) it sleeps before replying to that round's training
        (longer than the round timeout: the site times out).
    flip_labels : sequence of str
        Sites that train on flipped labels (label-flipping poisoning): ``1 - y``.
    arms : sequence of str, optional
        Inject the faults only while these arms train (a run with several arms can then
        compare a clean and an attacked federation on the same data); default: always.
    poison_arms : sequence of str, optional
        The arms in which ``flip_labels`` applies, when they differ from ``arms`` (crashes
        in one arm, poisoning in others); default: ``arms``.

    Examples
    --------
    >>> plan = FaultPlan(crash={"site_B": 2}, flip_labels=("site_C",))
    >>> plan.poisoned("site_C"), plan.poisoned("site_A")
    (True, False)
    """

    crash: Mapping[str, int] = field(default_factory=dict)
    delay: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    flip_labels: tuple[str, ...] = ()
    arms: tuple[str, ...] | None = None
    poison_arms: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip_labels", tuple(self.flip_labels))
        for name in ("arms", "poison_arms"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for site, rnd in self.crash.items():
            if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 1:
                raise param_error("crash", "FaultPlan", "a mapping site -> round >= 1", site)
        for site, spec in self.delay.items():
            if len(spec) != 2 or spec[0] < 1 or spec[1] < 0:
                raise param_error(
                    "delay", "FaultPlan", "a mapping site -> (round >= 1, seconds >= 0)", site
                )

    def active(self, arm: str | None) -> bool:
        """Whether the faults apply while ``arm`` trains."""
        return self.arms is None or arm in self.arms

    def poisoned(self, site: str, arm: str | None = None) -> bool:
        """Whether ``site`` trains on flipped labels (in ``arm``)."""
        if self.poison_arms is not None:
            return site in self.flip_labels and arm in self.poison_arms
        return site in self.flip_labels and self.active(arm)

    def before_training(self, site: str, server_round: int, arm: str | None = None) -> None:
        """Raise or sleep as planned for ``site`` in ``server_round`` (of ``arm``)."""
        if not self.active(arm):
            return
        if self.crash.get(site) == server_round:
            raise InjectedFault(f"site {site!r} crashed in round {server_round} (injected)")
        if site in self.delay and self.delay[site][0] == server_round:
            time.sleep(float(self.delay[site][1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for the report."""
        return {
            "crash": dict(self.crash),
            "delay": {k: list(v) for k, v in self.delay.items()},
            "flip_labels": list(self.flip_labels),
            "arms": None if self.arms is None else list(self.arms),
            "poison_arms": None if self.poison_arms is None else list(self.poison_arms),
        }


def flipped(cohort: Cohort) -> Cohort:
    """The cohort with binary labels flipped (``1 - y``), for label-flipping poisoning."""
    if cohort.num_classes != 2:
        raise InvalidInputError("Label flipping is defined for binary labels only.")
    meta = cohort.meta.assign(label=1 - cohort.meta["label"].astype(np.int64))
    return Cohort(
        meta,
        images=cohort.images,
        root=cohort.root,
        class_names=cohort.class_names,
        name=f"{cohort.name}:flipped",
    )


def paired_auroc(
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    *,
    clusters: np.ndarray | None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> dict[str, float]:
    """AUROC of each model's scores with patient-bootstrap CIs, and paired differences.

    Every model is scored on the same resamples, so the difference between two models
    has its own (narrower) interval.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    scores : mapping of str to ndarray of shape (n_samples,)
        Positive-class score of each model, e.g. ``{"federated": ..., "local": ...}``.
    clusters : ndarray of shape (n_samples,) or None
        Patient of each image.
    n_boot : int
    confidence : float
    random_state : int

    Returns
    -------
    dict
        ``auroc_<name>``, ``auroc_<name>_low``, ``auroc_<name>_high`` per model, and
        ``diff_<a>_<b>`` (+ ``_low``/``_high``) of every later model minus the first.

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1] * 10)
    >>> out = paired_auroc(y, {"a": y + 0.1, "b": y * 0.0}, clusters=None, n_boot=50)
    >>> out["auroc_a"], out["auroc_b"], out["diff_b_a"]
    (1.0, 0.5, -0.5)
    """
    from medaudit.stats import bootstrap_counts, percentile_ci, weighted_auroc

    y = np.asarray(labels) > 0
    out: dict[str, float] = {}
    nan = float("nan")
    if y.all() or not y.any():
        for name in scores:
            out.update({f"auroc_{name}": nan, f"auroc_{name}_low": nan, f"auroc_{name}_high": nan})
        return out
    w = np.vstack(
        [
            np.ones((1, len(y))),
            bootstrap_counts(y, n_boot=n_boot, random_state=random_state, clusters=clusters),
        ]
    )
    curves = {name: weighted_auroc(y, np.asarray(s, np.float64), w) for name, s in scores.items()}
    names = list(curves)
    for name in names:
        lo, hi = percentile_ci(curves[name][1:], confidence)
        out.update({f"auroc_{name}": float(curves[name][0]), f"auroc_{name}_low": lo})
        out[f"auroc_{name}_high"] = hi
    for other in names[1:]:
        d = curves[other] - curves[names[0]]
        lo, hi = percentile_ci(d[1:], confidence)
        key = f"diff_{other}_{names[0]}"
        out.update({key: float(d[0]), f"{key}_low": lo, f"{key}_high": hi})
    return out


def group_columns(meta: pd.DataFrame, sensitive: Sequence[str]) -> dict[str, np.ndarray]:
    """The attribute columns of ``meta`` the audit groups by (absent ones are skipped)."""
    return {a: meta[a].to_numpy() for a in sensitive if a in meta.columns}
