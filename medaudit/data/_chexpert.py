"""A CheXpert-style label file made from the synthetic hospitals, with planted uncertainty.

CheXpert and MIMIC-CXR ship one row per image with ``Path``, ``Sex``, ``Age`` and one
column per finding holding ``1`` (positive), ``0`` (negative), ``-1`` (uncertain) or
a blank (not mentioned). :func:`write_chexpert_style` writes such a file over the
synthetic hospitals' images, with uncertain labels planted at a known rate and a known
share of true positives among them, and keeps the truth in ``truth_<finding>`` columns
so that an experiment can check what each uncertain-label policy does.

References
----------
.. [1] Irvin J. et al. "CheXpert: A Large Chest Radiograph Dataset with Uncertainty
   Labels and Expert Comparison." AAAI 2019.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import param_error

__all__ = ["FINDINGS", "write_chexpert_style"]

#: The finding columns written: the synthetic lesion, and a second finding that agrees
#: with it on 90% of images (so that a multi-finding audit has two sections).
FINDINGS: tuple[str, ...] = ("Pleural Effusion", "Consolidation")


def _plant(
    truth: np.ndarray, rate: float, positive_share: float, blank_rate: float, rng: Any
) -> np.ndarray:
    """Labels 1/0; ``rate`` of the rows -1 (``positive_share`` positive), some blank.

    ``blank_rate`` of the rows not made uncertain are left blank (NaN).
    """
    n = len(truth)
    out = truth.astype(np.float64)
    n_unc = int(round(rate * n))
    pos, neg = np.flatnonzero(truth == 1), np.flatnonzero(truth == 0)
    k_pos = min(len(pos), int(round(positive_share * n_unc)))
    k_neg = min(len(neg), n_unc - k_pos)
    chosen = np.concatenate(
        [rng.choice(pos, k_pos, replace=False), rng.choice(neg, k_neg, replace=False)]
    )
    out[chosen] = -1.0
    rest = np.setdiff1d(np.arange(n), chosen)
    out[rng.choice(rest, int(round(blank_rate * len(rest))), replace=False)] = np.nan
    return out


def write_chexpert_style(
    out_dir: str | os.PathLike[str],
    *,
    uncertain_rate: float = 0.15,
    uncertain_positive_share: float = 0.8,
    blank_rate: float = 0.05,
    seed: int = 0,
    **kwargs: Any,
) -> Path:
    """Write synthetic hospitals as a CheXpert-style label file ``chexpert.csv``.

    Parameters
    ----------
    out_dir : path
        Output folder: ``images/`` and ``chexpert.csv`` (plus medaudit's own
        ``manifest.csv``) are written there.
    uncertain_rate : float in [0, 1)
        Share of the rows whose finding is written ``-1``.
    uncertain_positive_share : float in [0, 1]
        Share of true positives among the uncertain rows (CheXpert's uncertain
        mentions are mostly findings that are there).
    blank_rate : float in [0, 1)
        Share of the other rows left blank (missing label).
    seed : int
        Seed of the planting (the images use ``kwargs``' seed).
    **kwargs
        Keyword arguments of :func:`medaudit.data.generate_hospitals`.

    Returns
    -------
    Path
        ``chexpert.csv``, columns ``Path``, ``Patient``, ``Sex`` (Male/Female), ``Age``,
        ``Age Group``, ``split``, one column per finding in :data:`FINDINGS` and its
        ``truth_<finding>``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = write_chexpert_style(d, n_sites=2, patients_per_site=10, image_size=16)
    ...     sorted(pd.read_csv(f)["Pleural Effusion"].dropna().unique().tolist())
    [-1.0, 0.0, 1.0]
    """
    from medaudit.data.synthetic import write_synthetic

    for name, v, hi in (
        ("uncertain_rate", uncertain_rate, 1.0),
        ("uncertain_positive_share", uncertain_positive_share, 1.0 + 1e-12),
        ("blank_rate", blank_rate, 1.0),
    ):
        if not isinstance(v, (int, float)) or not 0 <= v < hi:
            raise param_error(name, "write_chexpert_style", "a number in [0, 1]", v)
    manifest = write_synthetic(out_dir, **kwargs)
    m = pd.read_csv(manifest, dtype={"patient_id": str})
    rng = np.random.default_rng(seed)
    truth = m["label"].to_numpy().astype(np.int64)
    flip = rng.random(len(truth)) < 0.1
    second = np.where(flip, 1 - truth, truth)
    out = pd.DataFrame(
        {
            "Path": m["path"],
            "Patient": "patient" + m["patient_id"].astype(str),
            "Sex": m["sex"].astype(str).str.capitalize(),
            "Age": m["age"],
            "Age Group": m["age_group"],
            "split": m["split"],
        }
    )
    for finding, t in zip(FINDINGS, (truth, second), strict=True):
        out[finding] = _plant(t, uncertain_rate, uncertain_positive_share, blank_rate, rng)
        out[f"truth_{finding}"] = t
    target = Path(out_dir) / "chexpert.csv"
    tmp = target.with_suffix(".csv.tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(target)
    return target
