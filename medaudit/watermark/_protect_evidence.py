"""The evidence that protection works, and writing protected images as a data set.

:func:`protection_evidence` trains the same model on the original and on the protected
images of :func:`~medaudit.watermark.protect_images` and tests both on clean images;
:func:`write_protected` writes the protected images with a manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medaudit._errors import InvalidInputError
from medaudit.data._folder import write_image_folder

if TYPE_CHECKING:
    from medaudit.watermark._protect import ProtectedImages

__all__ = ["ProtectionEvidence", "protection_evidence", "write_protected"]


# -- the evidence ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProtectionEvidence:
    """A model trained on the protected images against one trained on the originals.

    Attributes
    ----------
    auroc_clean_trained, auroc_protected_trained : float
        Test AUROC (on clean test images) of the model trained on the original images and
        of the one trained on the protected images.
    auroc_clean_ci, auroc_protected_ci : tuple of float
        Their patient-bootstrap CIs.
    auroc_drop : float
        ``auroc_clean_trained - auroc_protected_trained``: what protection took away.
    auroc_drop_ci : tuple of float
        Paired patient-bootstrap CI of the drop.
    n_test : int
    epochs : int
    """

    auroc_clean_trained: float
    auroc_protected_trained: float
    auroc_clean_ci: tuple[float, float]
    auroc_protected_ci: tuple[float, float]
    auroc_drop: float
    auroc_drop_ci: tuple[float, float]
    n_test: int
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "auroc_clean_trained": self.auroc_clean_trained,
            "auroc_clean_ci": list(self.auroc_clean_ci),
            "auroc_protected_trained": self.auroc_protected_trained,
            "auroc_protected_ci": list(self.auroc_protected_ci),
            "auroc_drop": self.auroc_drop,
            "auroc_drop_ci": list(self.auroc_drop_ci),
            "n_test": self.n_test,
            "epochs": self.epochs,
        }


def protection_evidence(
    train: Any,
    protected: ProtectedImages,
    test: Any,
    *,
    arch: str = "small_cnn",
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> ProtectionEvidence:
    """Train the same model on the original and on the protected images; test on clean.

    Parameters
    ----------
    train : Cohort
        The original training images (the rows ``protected`` was made from, same order).
    protected : ProtectedImages
    test : Cohort
        Clean held-out images: what an unauthorised model would be used on.
    arch : str, default "small_cnn"
    epochs, batch_size, seed : training settings (same for both models).
    n_boot : int, default 1000
    confidence : float, default 0.95

    Returns
    -------
    ProtectionEvidence
    """
    from medaudit.data import Cohort
    from medaudit.inference import predict
    from medaudit.models import build_model, compute_normalization, train_model
    from medaudit.stats import bootstrap_counts, percentile_ci
    from medaudit.watermark._utility import utility_change

    if len(protected.images) != len(train):
        raise InvalidInputError(
            f"protection_evidence: {len(protected.images)} protected images for a training "
            f"cohort of {len(train)}."
        )
    prot = Cohort(
        train.meta.drop(columns=["path"], errors="ignore"),
        images=protected.images,
        class_names=train.class_names,
    )
    c, h, _ = train.image_shape
    scores = []
    for cohort in (train, prot):
        mean, std = compute_normalization(cohort)
        model = build_model(arch, in_channels=c, num_classes=train.num_classes, random_state=seed)
        train_model(
            model,
            cohort,
            None,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            image_size=h,
            in_channels=c,
            mean=mean,
            std=std,
            patience=None,
        )
        scores.append(
            predict(
                model, test, image_size=h, in_channels=c, mean=mean, std=std, features=False
            ).scores
        )
    y = test.labels
    pid = test.meta["patient_id"].to_numpy() if "patient_id" in test.meta else None
    change = utility_change(
        y,
        scores[0],
        scores[1],
        patient_ids=pid,
        n_boot=n_boot,
        confidence=confidence,
        random_state=seed,
    )
    w = bootstrap_counts(
        y, n_boot=n_boot, random_state=seed, clusters=np.arange(len(y)) if pid is None else pid
    )
    cis = [percentile_ci(_auroc_rows(y, s, w), confidence) for s in scores]
    lo, hi = change.auroc_change_ci
    return ProtectionEvidence(
        auroc_clean_trained=change.auroc_before,
        auroc_protected_trained=change.auroc_after,
        auroc_clean_ci=cis[0],
        auroc_protected_ci=cis[1],
        auroc_drop=-change.auroc_change,
        auroc_drop_ci=(-hi, -lo),
        n_test=len(y),
        epochs=epochs,
    )


def _auroc_rows(y: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    from medaudit.watermark._utility import _auroc

    return _auroc(y, scores, w)


# -- writing --------------------------------------------------------------------------------
def _label_column(cohort: Any) -> list[Any]:
    """Labels as the manifest gave them: class names, or indices for default names."""
    n = cohort.num_classes
    default = ["negative", "positive"] if n <= 2 else [f"class_{i}" for i in range(n)]
    if list(cohort.class_names) == default:
        return [int(v) for v in cohort.labels]
    return [cohort.class_names[int(v)] for v in cohort.labels]


def write_protected(
    out_dir: str | os.PathLike[str],
    cohort: Any,
    protected: ProtectedImages,
    *,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the protected images as PNG files plus a manifest, atomically.

    ``out_dir/images/img_000000.png`` ... (8-bit, grayscale or RGB as the input) and
    ``out_dir/manifest.csv`` with every metadata column of ``cohort`` and ``path``
    pointing at the protected files; ``out_dir/protection.json`` holds the PSNR/SSIM
    summary and ``report`` (the evidence). Everything is written into a temporary folder
    first and moved into place manifest last, so a failure never leaves a manifest
    pointing at missing or stale images.

    Returns
    -------
    Path
        The manifest's path.
    """
    if len(protected.images) != len(cohort):
        raise InvalidInputError(
            f"write_protected: {len(protected.images)} images for {len(cohort)} manifest rows."
        )
    manifest = cohort.meta.drop(columns=["path"], errors="ignore").copy()
    manifest["label"] = _label_column(cohort)
    doc = {"schema": "medaudit.protection/1", **protected.summary(), **(report or {})}
    return write_image_folder(
        out_dir,
        (img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1) for img in protected.images),
        manifest.reset_index(drop=True),
        extra_files={"protection.json": json.dumps(doc, indent=2) + "\n"},
        prefix=".protect-",
        func="write_protected",
    )
