"""Per-cell metrics with bootstrap samples: AUROC, balanced error, ECE, corruption errors.

Every metric is computed for the point estimate and for each row of a bootstrap count
matrix ``W`` (:func:`medaudit.stats.bootstrap_counts`, by class and by patient). All
cells of a sweep share one ``W`` — they are the same images — so differences between
cells (an AUROC drop, a corruption error) get paired intervals.

References
----------
.. [1] Hendrycks D, Dietterich T. Benchmarking neural network robustness to common
       corruptions and perturbations. ICLR 2019 (CE, relative CE, mCE).
.. [2] Di Salvo F, Doerrich S, Ledig C. MedMNIST-C: Comprehensive benchmark and improved
       classifier robustness by simulating realistic image corruptions. 2024 (the same
       on balanced error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medaudit.stats import (
    expected_calibration_error,
    percentile_ci,
)

__all__ = [
    "Estimate",
    "auroc_estimate",
    "resampled_auroc",
    "balanced_error_estimate",
    "corruption_error",
    "top_label_ece",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap samples (one per row of ``W``)."""

    value: float
    samples: np.ndarray

    def ci(self, confidence: float) -> tuple[float, float]:
        """Percentile interval of the samples."""
        return percentile_ci(self.samples, confidence)

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.value - other.value, self.samples - other.samples)


def _ones(n: int) -> np.ndarray:
    return np.ones((1, n))


def resampled_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights``; equal to :func:`medaudit.stats.weighted_auroc`.

    Counts, for every positive, the weight of negatives scored below it (plus half of
    those tied with it) from cumulative sums over the negatives in score order: the work
    is a few passes over (rows × negatives) and (rows × positives), which matters when a
    sweep scores hundreds of cells with a thousand resamples each.

    Parameters
    ----------
    y_true : ndarray of shape (n,)
        Binary labels.
    y_score : ndarray of shape (n,)
    weights : ndarray of shape (n_rows, n)

    Returns
    -------
    ndarray of shape (n_rows,)
        NaN for a row without positive or negative weight.

    Examples
    --------
    >>> w = np.array([[1, 1, 1, 1], [2, 0, 1, 1]])
    >>> resampled_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), w).tolist()
    [0.75, 1.0]
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        return np.full(w.shape[0], np.nan)
    neg = neg[np.argsort(s[neg], kind="mergesort")]
    s_neg = s[neg]
    below = np.searchsorted(s_neg, s[pos], side="left")  # negatives strictly below
    upto = np.searchsorted(s_neg, s[pos], side="right")  # ... and tied
    cum = np.zeros((w.shape[0], len(neg) + 1))
    np.cumsum(w[:, neg], axis=1, out=cum[:, 1:])
    w_pos = w[:, pos]
    num = 0.5 * np.einsum("bi,bi->b", w_pos, cum[:, below] + cum[:, upto])
    den = w_pos.sum(axis=1) * cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def auroc_estimate(labels: np.ndarray, scores: np.ndarray, W: np.ndarray) -> Estimate:
    """AUROC of a binary model, macro one-vs-rest AUROC of a multi-class one.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    scores : ndarray of shape (n, n_classes)
        Class probabilities.
    W : ndarray of shape (n_boot, n)
    """
    if scores.shape[1] == 2:
        y = labels == 1
        s = scores[:, 1]
        return Estimate(float(resampled_auroc(y, s, _ones(len(y)))[0]), resampled_auroc(y, s, W))
    points, samples = [], []
    for k in range(scores.shape[1]):
        yk = labels == k
        points.append(resampled_auroc(yk, scores[:, k], _ones(len(yk)))[0])
        samples.append(resampled_auroc(yk, scores[:, k], W))
    with np.errstate(invalid="ignore"):
        pts = np.asarray(points)
        value = float(np.nanmean(pts)) if np.isfinite(pts).any() else float("nan")
        stacked = np.stack(samples)
        ok = np.isfinite(stacked).any(axis=0)
        mean = np.full(stacked.shape[1], np.nan)
        mean[ok] = np.nanmean(stacked[:, ok], axis=0)
    return Estimate(value, mean)


def balanced_error_estimate(
    labels: np.ndarray, scores: np.ndarray, W: np.ndarray, *, threshold: float = 0.5
) -> Estimate:
    """One minus the mean per-class recall (the balanced error MedMNIST-C uses).

    A binary model calls an image positive when its positive-class score is at least
    ``threshold``; a multi-class model predicts its highest-scoring class. Classes absent
    from a resample are left out of its mean.
    """
    k = scores.shape[1]
    pred = (scores[:, 1] >= threshold).astype(int) if k == 2 else scores.argmax(axis=1)
    recalls_point, recalls = [], []
    for c in range(k):
        is_c = labels == c
        if not is_c.any():
            continue
        hit = (is_c & (pred == c)).astype(np.float64)
        recalls_point.append(hit.sum() / is_c.sum())
        den = W @ is_c.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(den > 0, (W @ hit) / np.where(den > 0, den, 1.0), np.nan))
    if not recalls:
        return Estimate(float("nan"), np.full(W.shape[0], np.nan))
    with np.errstate(invalid="ignore"):
        samples = 1.0 - np.nanmean(np.stack(recalls), axis=0)
    return Estimate(float(1.0 - np.mean(recalls_point)), samples)


def top_label_ece(labels: np.ndarray, scores: np.ndarray, *, n_bins: int = 10) -> float:
    """ECE of the positive-class score (binary) or of the top-label confidence (multi-class).

    The binary form is the performance audit's (Guo et al. 2017, equal-width bins); for
    more classes it is the calibration of the predicted class's probability.
    """
    if scores.shape[1] == 2:
        return expected_calibration_error(labels == 1, scores[:, 1], n_bins=n_bins)
    pred = scores.argmax(axis=1)
    return expected_calibration_error(pred == labels, scores.max(axis=1), n_bins=n_bins)


def corruption_error(
    errors: list[Estimate],
    clean: Estimate,
    *,
    reference: list[Estimate] | None = None,
    reference_clean: Estimate | None = None,
) -> tuple[Estimate, Estimate]:
    """Corruption error and relative corruption error of one corruption over its severities.

    With a reference model (ImageNet-C's AlexNet; MedMNIST-C's per-data-set baseline):
    ``CE = sum_s E_s / sum_s E_ref_s`` and
    ``rCE = sum_s (E_s - E_clean) / sum_s (E_ref_s - E_ref_clean)``. Without one, the
    model's own clean error is the yardstick: ``CE = mean_s E_s / E_clean`` and
    ``rCE = mean_s (E_s - E_clean) / E_clean`` (1 and 0 for a model corruption does not
    touch). ``E`` is the balanced error.

    Examples
    --------
    >>> e = lambda v: Estimate(v, np.array([v]))
    >>> ce, rce = corruption_error([e(0.2), e(0.3)], e(0.1))
    >>> round(ce.value, 6), round(rce.value, 6)
    (2.5, 1.5)
    >>> ce, rce = corruption_error([e(0.2), e(0.3)], e(0.1), reference=[e(0.4), e(0.6)],
    ...                            reference_clean=e(0.2))
    >>> round(ce.value, 6), round(rce.value, 6)
    (0.5, 0.5)
    """
    total = _sum(errors)
    n = len(errors)
    increase = Estimate(total.value - n * clean.value, total.samples - n * clean.samples)
    if reference is None or reference_clean is None:
        den = Estimate(n * clean.value, n * clean.samples)
        return _ratio(total, den), _ratio(increase, den)
    ref_total = _sum(reference)
    ref_increase = Estimate(
        ref_total.value - n * reference_clean.value,
        ref_total.samples - n * reference_clean.samples,
    )
    return _ratio(total, ref_total), _ratio(increase, ref_increase)


def _sum(items: list[Estimate]) -> Estimate:
    return Estimate(
        float(sum(e.value for e in items)), np.sum(np.stack([e.samples for e in items]), axis=0)
    )


def _ratio(num: Estimate, den: Estimate) -> Estimate:
    with np.errstate(invalid="ignore", divide="ignore"):
        value = num.value / den.value if den.value != 0 else float("nan")
        samples = np.where(
            den.samples != 0, num.samples / np.where(den.samples != 0, den.samples, 1), np.nan
        )
    return Estimate(float(value), samples)
