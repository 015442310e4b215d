"""Is the attribute used? Aligned-vs-conflicting evaluation and the counterfactual swap.

Neither test retrains the model.

- **Aligned vs conflicting** (the "bias-conflicting" evaluation): where an attribute level
  is more (less) common among positives than overall, an image is *aligned* when its label
  agrees with that association and *conflicting* when it does not. A model that reads the
  attribute instead of the disease ranks aligned images well and collapses on conflicting
  ones; one that ignores it scores both halves alike. The verdict rests on the
  *class-wise shift*: within the positives and within the negatives separately, how often
  an image whose level points towards the disease outscores one whose level points away.
  Reading the attribute moves both classes; a subgroup in which the disease is merely
  harder to see (fainter lesions) moves only the positives, and is not called a shortcut.
- **Counterfactual region swap**: for an image-level nuisance drawn in a known region (a
  burned-in marker, a text tag), the region of each audited image is replaced by the same
  region of an image with the other value (same site when possible), and the change in
  score and the share of flipped decisions are measured.

References
----------
.. [1] Nam J, Cha H, Ahn S, Lee J, Shin J. Learning from failure: training debiased
       classifier from biased classifier. NeurIPS 2020 (bias-aligned / bias-conflicting
       evaluation).
.. [2] DeGrave AJ, Janizek JD, Lee S-I. AI for radiographic COVID-19 detection selects
       shortcuts over signal. Nature Machine Intelligence 3:610-619, 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError
from medaudit.shortcuts._clustered import (
    ClusteredEstimate,
    auroc_estimate,
    balanced_accuracy_estimate,
    cluster_codes,
    mean_estimate,
)

__all__ = [
    "AlignmentResult",
    "CounterfactualResult",
    "Region",
    "aligned_conflicting",
    "counterfactual_swap",
    "estimate_region",
    "level_direction",
    "parse_region",
]

MSG_REGION = (
    "--marker-region must be 'auto', 'none' or four fractions x0,y0,x1,y1 of the image "
    "with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1; got {text!r}."
)
# An estimated region larger than this share of the image is not a localised artefact.
MAX_REGION_AREA = 1 / 16
# The strongest pixel difference between the two values must exceed this many standard
# errors for a region to be estimated at all.
MIN_REGION_Z = 8.0


def level_direction(
    levels: np.ndarray,
    labels: np.ndarray,
    n_levels: int,
    *,
    min_count: int = 5,
    clusters: np.ndarray | None = None,
    alpha: float | None = None,
) -> np.ndarray:
    """Association of each level with the positive class: +1, -1, or 0 (unknown).

    +1 when the level's prevalence exceeds the overall prevalence, -1 when it is below;
    0 for a level with fewer than ``min_count`` images or exactly the overall prevalence.
    With ``alpha``, a level also gets 0 unless its prevalence differs from that of the
    other levels in a two-sided Wald test at level ``alpha``, with a patient-clustered
    standard error from ``clusters`` (a level unrelated to the label then has no
    direction, instead of the sign of its sampling noise).

    Examples
    --------
    >>> level_direction(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), 2, min_count=1).tolist()
    [-1, 1]
    >>> lv = np.repeat([0, 1], 200); y = np.tile([0, 1], 200)
    >>> level_direction(lv, y, 2, alpha=0.01).tolist()
    [0, 0]
    >>> level_direction(lv, lv, 2, alpha=0.01).tolist()
    [-1, 1]
    """
    lv = np.asarray(levels)
    y = np.asarray(labels) > 0
    ok = lv >= 0
    p = y[ok].mean() if ok.any() else 0.0
    out = np.zeros(n_levels, dtype=np.int64)
    codes = cluster_codes(clusters, len(lv)) if alpha is not None else None
    for j in range(n_levels):
        m = lv == j
        if np.count_nonzero(m) >= min_count:
            out[j] = int(np.sign(round(float(y[m].mean() - p), 12)))
            if out[j] and codes is not None and alpha is not None:
                out[j] *= _differs(y.astype(float), m, ok & ~m, codes, alpha)
    return out


def _differs(y: np.ndarray, a: np.ndarray, b: np.ndarray, codes: np.ndarray, alpha: float) -> int:
    """1 when mean(y[a]) and mean(y[b]) differ at level ``alpha`` (clustered Wald test)."""
    if not b.any():
        return 0
    k = int(codes.max()) + 1
    diff = mean_estimate(y[a], codes[a], n_clusters=k) - mean_estimate(y[b], codes[b], n_clusters=k)
    se = diff.se
    if not np.isfinite(se):
        return 0
    if se == 0:
        return int(diff.value != 0)
    return int(2 * NormalDist().cdf(-abs(diff.value) / se) < alpha)


@dataclass(frozen=True, eq=False)
class AlignmentResult:
    """Aligned vs conflicting evaluation of one attribute.

    Attributes
    ----------
    direction : ndarray of int of shape (n_levels,)
        +1 / -1 / 0: how each level is associated with the positive class.
    n_aligned, n_conflicting : int
    pos_aligned, neg_aligned, pos_conflicting, neg_conflicting : int
    auroc_aligned, auroc_conflicting, auroc_gap : ClusteredEstimate
    bacc_aligned, bacc_conflicting, bacc_gap : ClusteredEstimate
        Balanced accuracy at ``threshold``.
    shift_positive, shift_negative : ClusteredEstimate
        Within each class, the probability that an image whose level points towards the
        disease scores higher than one whose level points away (0.5: no shift).
    threshold : float
    """

    direction: np.ndarray
    n_aligned: int
    n_conflicting: int
    pos_aligned: int
    neg_aligned: int
    pos_conflicting: int
    neg_conflicting: int
    auroc_aligned: ClusteredEstimate
    auroc_conflicting: ClusteredEstimate
    auroc_gap: ClusteredEstimate
    bacc_aligned: ClusteredEstimate
    bacc_conflicting: ClusteredEstimate
    bacc_gap: ClusteredEstimate
    shift_positive: ClusteredEstimate
    shift_negative: ClusteredEstimate
    threshold: float

    @property
    def shift(self) -> float:
        """The smaller class-wise shift: both classes must move for a model to use it."""
        return float(min(self.shift_positive.value, self.shift_negative.value))

    def shift_ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Interval of :attr:`shift`: the smaller of the two bounds at each end.

        Its lower end exceeds a threshold only when both classes' intervals do (an
        intersection-union test, which keeps its level without a correction).
        """
        a, b = self.shift_positive.ci(confidence), self.shift_negative.ci(confidence)
        return (min(a[0], b[0]), min(a[1], b[1]))


def aligned_conflicting(
    labels: np.ndarray,
    score: np.ndarray,
    levels: np.ndarray,
    patients: np.ndarray,
    direction: np.ndarray,
    *,
    threshold: float = 0.5,
) -> AlignmentResult:
    """AUROC and balanced accuracy on attribute-aligned vs attribute-conflicting images.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Binary labels.
    score : ndarray of shape (n_samples,)
        Positive-class score.
    levels : ndarray of int of shape (n_samples,)
        Attribute level (-1: missing, left out).
    patients : ndarray of int of shape (n_samples,)
    direction : ndarray of int of shape (n_levels,)
        From :func:`level_direction` (on the training data when available).
    threshold : float
        Decision threshold of the balanced accuracy.

    Examples
    --------
    >>> y = np.array([1, 1, 0, 0, 1, 0] * 10)
    >>> a = np.array([1, 1, 0, 0, 0, 1] * 10)   # the attribute mostly agrees with y
    >>> s = a * 0.8 + 0.1                       # a model that reads only the attribute
    >>> r = aligned_conflicting(y, s, a, np.arange(60), np.array([-1, 1]))
    >>> r.auroc_aligned.value, r.auroc_conflicting.value, r.shift
    (1.0, 0.0, 1.0)
    """
    y = np.asarray(labels) > 0
    s = np.asarray(score, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.int64)
    pt = np.asarray(patients, dtype=np.int64)
    k = int(pt.max()) + 1 if pt.size else 0
    d = np.where(lv >= 0, np.asarray(direction)[np.clip(lv, 0, None)], 0)
    aligned = ((d > 0) & y) | ((d < 0) & ~y)
    conflicting = ((d < 0) & y) | ((d > 0) & ~y)
    est: dict[str, ClusteredEstimate] = {}
    for name, m in (("aligned", aligned), ("conflicting", conflicting)):
        est[f"auroc_{name}"] = auroc_estimate(y[m], s[m], pt[m], n_clusters=k)
        est[f"bacc_{name}"] = balanced_accuracy_estimate(
            y[m], s[m] >= threshold, pt[m], n_clusters=k
        )
    # Within each class: does "points towards the disease" raise the score? A shortcut
    # moves both classes; a subgroup whose disease is harder to see moves only positives.
    for name, cls in (("positive", y), ("negative", ~y)):
        m = cls & (d != 0)
        est[f"shift_{name}"] = auroc_estimate(d[m] > 0, s[m], pt[m], n_clusters=k)
    return AlignmentResult(
        direction=np.asarray(direction),
        n_aligned=int(aligned.sum()),
        n_conflicting=int(conflicting.sum()),
        pos_aligned=int((aligned & y).sum()),
        neg_aligned=int((aligned & ~y).sum()),
        pos_conflicting=int((conflicting & y).sum()),
        neg_conflicting=int((conflicting & ~y).sum()),
        auroc_aligned=est["auroc_aligned"],
        auroc_conflicting=est["auroc_conflicting"],
        auroc_gap=est["auroc_aligned"] - est["auroc_conflicting"],
        bacc_aligned=est["bacc_aligned"],
        bacc_conflicting=est["bacc_conflicting"],
        bacc_gap=est["bacc_aligned"] - est["bacc_conflicting"],
        shift_positive=est["shift_positive"],
        shift_negative=est["shift_negative"],
        threshold=float(threshold),
    )


# -- the counterfactual region swap ------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A rectangle in fractions of the image: columns ``x0..x1``, rows ``y0..y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def pixels(self, h: int, w: int) -> tuple[slice, slice]:
        """Row and column slices of the region in an image of ``h`` x ``w`` pixels."""
        r0, r1 = int(np.floor(self.y0 * h)), int(np.ceil(self.y1 * h))
        c0, c1 = int(np.floor(self.x0 * w)), int(np.ceil(self.x1 * w))
        return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))

    def __str__(self) -> str:
        return f"{self.x0:.3g},{self.y0:.3g},{self.x1:.3g},{self.y1:.3g}"


def parse_region(text: str) -> Region | str:
    """``"auto"``, ``"none"`` or a :class:`Region` from ``"x0,y0,x1,y1"``.

    Examples
    --------
    >>> parse_region("0,0,0.25,0.25")
    Region(x0=0.0, y0=0.0, x1=0.25, y1=0.25)
    """
    t = str(text).strip().lower()
    if t in ("auto", "none"):
        return t
    try:
        vals = [float(v) for v in t.split(",")]
    except ValueError:
        raise InvalidInputError(MSG_REGION.format(text=text)) from None
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise InvalidInputError(MSG_REGION.format(text=text))
    x0, y0, x1, y1 = vals
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise InvalidInputError(MSG_REGION.format(text=text))
    return Region(x0, y0, x1, y1)


def region_problem(text: Any) -> str | None:
    """What is wrong with a ``marker_region`` setting value (None when valid)."""
    try:
        parse_region(str(text))
    except InvalidInputError as exc:
        return str(exc)
    return None


def estimate_region(images: np.ndarray, present: np.ndarray) -> Region | None:
    """Where images with the attribute differ from those without it, if that is a small box.

    The pixel-wise difference of the two mean images is divided by its standard error;
    the box around the pixels reaching half the strongest value is returned when that
    value exceeds :data:`MIN_REGION_Z` and the box covers at most
    :data:`MAX_REGION_AREA` of the image. A diffuse difference (anatomy, acquisition)
    gives None.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W)
    present : ndarray of bool of shape (n,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.normal(0.4, 0.05, (100, 1, 16, 16)); flag = np.arange(100) < 50
    >>> imgs[flag, :, 0:2, 12:16] = 0.95
    >>> str(estimate_region(imgs, flag))
    '0.75,0,1,0.125'
    """
    a = images[present].mean(axis=1)
    b = images[~present].mean(axis=1)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = a.mean(axis=0) - b.mean(axis=0)
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    z = np.abs(diff) / np.maximum(se, 1e-6)
    peak = float(z.max())
    if peak < MIN_REGION_Z:
        return None
    rows, cols = np.nonzero(z >= peak / 2)
    h, w = z.shape
    box = Region(cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)
    if (box.x1 - box.x0) * (box.y1 - box.y0) > MAX_REGION_AREA:
        return None
    return box


@dataclass(frozen=True, eq=False)
class CounterfactualResult:
    """Scores before and after swapping the region with an image of the other value.

    Attributes
    ----------
    regions : dict of str to Region
        Region used per stratum (``"*"``: one region for every image).
    n_added, n_removed : int
        Images that received the region of an image with (without) the attribute.
    change_added, change_removed : ClusteredEstimate
        Mean change of the positive-class score.
    flipped : ClusteredEstimate
        Share of images whose decision at ``threshold`` changed.
    flipped_added, flipped_removed : ClusteredEstimate
    threshold : float
    """

    regions: dict[str, Region]
    n_added: int
    n_removed: int
    change_added: ClusteredEstimate
    change_removed: ClusteredEstimate
    flipped: ClusteredEstimate
    flipped_added: ClusteredEstimate
    flipped_removed: ClusteredEstimate
    threshold: float


def pair_rows(
    present: np.ndarray, strata: np.ndarray, rows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A partner of the other value for each of ``rows``: same stratum when possible."""
    partners = np.empty(len(rows), dtype=np.int64)
    all_idx = np.arange(len(present))
    for i, r in enumerate(rows):
        other = (present != present[r]) & (strata == strata[r])
        if not other.any():
            other = present != present[r]
        cand = all_idx[other]
        partners[i] = cand[rng.integers(len(cand))]
    return partners


def counterfactual_swap(
    predict_fn: Callable[[Callable[[Any, np.ndarray], Any], np.ndarray], np.ndarray],
    partner_images: np.ndarray,
    rows: np.ndarray,
    present: np.ndarray,
    score: np.ndarray,
    patients: np.ndarray,
    regions: list[Region],
    *,
    threshold: float = 0.5,
    region_names: dict[str, Region] | None = None,
) -> CounterfactualResult:
    """Swap each image's region with its partner's and measure the change of the score.

    Parameters
    ----------
    predict_fn : callable
        ``predict_fn(transform, rows) -> positive-class scores`` of the transformed images
        (the audit passes :meth:`AuditContext.predict_transformed`).
    partner_images : ndarray of shape (len(rows), C, H, W)
        The partner of each row, at the model's input size, in [0, 1].
    rows : ndarray of int
        Audited rows to transform.
    present : ndarray of bool of shape (len(rows),)
        Whether each of ``rows`` has the attribute.
    score : ndarray of shape (len(rows),)
        Their clean positive-class scores.
    patients : ndarray of int of shape (len(rows),)
    regions : list of Region
        Region of each of ``rows``.
    threshold : float
    region_names : dict, optional
        Regions to report (per stratum).
    """
    import torch

    h, w = partner_images.shape[-2:]
    slices = [r.pixels(h, w) for r in regions]
    patches = torch.from_numpy(np.ascontiguousarray(partner_images))

    def swap(x: Any, idx: np.ndarray) -> Any:
        x = x.clone()
        for j, i in enumerate(np.asarray(idx)):
            rs, cs = slices[i]
            x[j, :, rs, cs] = patches[i, :, rs, cs].to(x.dtype)
        return x

    new = np.asarray(predict_fn(swap, rows), dtype=np.float64)
    change = new - score
    flip = ((new >= threshold) != (score >= threshold)).astype(np.float64)
    pt = np.asarray(patients, dtype=np.int64)
    k = int(pt.max()) + 1 if pt.size else 0
    added, removed = ~present, present
    return CounterfactualResult(
        regions=dict(region_names or {}),
        n_added=int(added.sum()),
        n_removed=int(removed.sum()),
        change_added=mean_estimate(change[added], pt[added], n_clusters=k),
        change_removed=mean_estimate(change[removed], pt[removed], n_clusters=k),
        flipped=mean_estimate(flip, pt, n_clusters=k, bounded=True),
        flipped_added=mean_estimate(flip[added], pt[added], n_clusters=k, bounded=True),
        flipped_removed=mean_estimate(flip[removed], pt[removed], n_clusters=k, bounded=True),
        threshold=float(threshold),
    )
