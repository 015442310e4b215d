"""One-pass inference: :class:`Predictions` computed once per (model, cohort), reused by audits.

The clean forward pass gives scores, per-sample loss and penultimate-layer features in
one go; the result is cached on disk keyed by the content hashes of model and data.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError, param_error

__all__ = ["Predictions", "Transform", "model_hash", "predict"]


@dataclass(frozen=True)
class Predictions:
    """Everything audits need from one clean forward pass.

    Attributes
    ----------
    scores : ndarray of shape (n_samples, n_classes)
        Class probabilities (softmax). For a binary model, ``scores[:, 1]`` is the score
        of the positive class (see :attr:`score`).
    labels : ndarray of shape (n_samples,)
        True class index.
    loss : ndarray of shape (n_samples,)
        Per-sample cross-entropy loss.
    features : ndarray of shape (n_samples, n_features) or None
        Penultimate-layer features (None when the model exposes none).
    meta : DataFrame of shape (n_samples, n_columns)
        The cohort's metadata, row-aligned with the arrays.
    class_names : list of str
    model_hash, data_hash : str
        Content hashes (the cache key).
    """

    scores: np.ndarray
    labels: np.ndarray
    loss: np.ndarray
    features: np.ndarray | None
    meta: pd.DataFrame
    class_names: list[str] = field(default_factory=lambda: ["negative", "positive"])
    model_hash: str = ""
    data_hash: str = ""

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.scores.ndim != 2 or self.scores.shape[0] != n:
            raise InvalidInputError(
                f"scores must have shape (n_samples, n_classes) with n_samples={n}; "
                f"got {self.scores.shape}."
            )
        if len(self.loss) != n or len(self.meta) != n:
            raise InvalidInputError("scores, labels, loss and meta must have the same length.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_binary(self) -> bool:
        """True for a two-class model."""
        return self.scores.shape[1] == 2

    @property
    def score(self) -> np.ndarray:
        """Positive-class score for a binary model, shape (n_samples,)."""
        if not self.is_binary:
            raise InvalidInputError(
                "score is defined for binary models; use scores[:, k] for class k."
            )
        return self.scores[:, 1]

    def subset(self, rows: np.ndarray) -> Predictions:
        """Predictions of the given rows (indices or boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Predictions(
            scores=self.scores[rows],
            labels=self.labels[rows],
            loss=self.loss[rows],
            features=None if self.features is None else self.features[rows],
            meta=self.meta.iloc[rows].reset_index(drop=True),
            class_names=self.class_names,
            model_hash=self.model_hash,
            data_hash=self.data_hash,
        )

    def to_frame(self) -> pd.DataFrame:
        """Predictions as the table ``medaudit check --predictions`` reads."""
        df = self.meta.copy()
        df["label"] = self.labels
        if self.is_binary:
            df["score"] = self.scores[:, 1]
        else:
            for k, name in enumerate(self.class_names):
                df[f"score_{name}"] = self.scores[:, k]
        return df

    # -- cache ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to a ``.npz`` (arrays) + ``.parquet`` (metadata) pair, atomically."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {"scores": self.scores, "labels": self.labels, "loss": self.loss}
        if self.features is not None:
            arrays["features"] = self.features
        arrays["class_names"] = np.array(self.class_names)
        arrays["hashes"] = np.array([self.model_hash, self.data_hash])
        buf = io.BytesIO()
        self.meta.to_parquet(buf, index=False)
        arrays["meta_parquet"] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        np.savez(tmp, **arrays)
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Predictions:
        """Inverse of :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = pd.read_parquet(io.BytesIO(z["meta_parquet"].tobytes()))
            mh, dh = (str(x) for x in z["hashes"])
            return cls(
                scores=z["scores"],
                labels=z["labels"],
                loss=z["loss"],
                features=z["features"] if "features" in z.files else None,
                meta=meta,
                class_names=[str(c) for c in z["class_names"]],
                model_hash=mh,
                data_hash=dh,
            )


def model_hash(model: Any) -> str:
    """SHA-256 over a torch module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(
            t.numpy().tobytes()
            if t.dtype.is_floating_point or t.dtype.is_signed
            else t.to(dtype=__import__("torch").int64).numpy().tobytes()
        )
    return h.hexdigest()


# Counts forward passes actually run (not served from cache); tests read it.
FORWARD_PASSES = {"count": 0}

# transform(x, idx) -> x: x float (B, C, H, W) in [0, 1] at the model's input size, before
# normalisation; idx the cohort row of each image.
Transform = Callable[[Any, np.ndarray], Any]


def predict(
    model: Any,
    cohort: Any,
    *,
    batch_size: int = 256,
    image_size: int | None = None,
    in_channels: int | None = None,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    progress: bool = False,
    transform: Transform | None = None,
    features: bool = True,
    workers: int = 0,
    amp: bool = True,
) -> Predictions:
    """Run the model once over the cohort and return :class:`Predictions`.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape (B, n_classes). If it has a ``features``
        method (all zoo models do), penultimate features are collected in the same pass
        and the head is applied to them; otherwise features are None.
    cohort : Cohort
    batch_size : int
    image_size, in_channels : int, optional
        What the model expects; images are resized / channel-matched on the fly.
    mean, std : float or list of float, optional
        Normalisation applied after scaling to [0, 1] (from the checkpoint's metadata).
    cache_dir : path, optional
        When given, predictions are cached there under the (model, data) content hash and
        a second call returns the cached result without running the model. Not used with
        a ``transform``.
    device : str
        Torch device, or ``"auto"`` (CUDA when present).
    progress : bool
        Show a rich progress bar.
    transform : callable, optional
        ``transform(x, idx) -> x`` applied to each batch in [0, 1] before normalisation
        (a corruption, an occlusion, a pasted marker); batches are streamed, so the
        transformed data set is never held in memory.
    features : bool, default True
        Collect penultimate-layer features (when the model exposes them).
    workers : int, default 0
        Decode disk-backed images in this many worker processes.
    amp : bool, default True
        On CUDA, run under autocast (bfloat16 where supported, else float16) with
        ``channels_last`` memory format; scores are computed in float32 either way.
    """
    import torch

    from medaudit._device import autocast_dtype, resolve_device
    from medaudit.data import Cohort
    from medaudit.data._loader import iter_batches

    if not isinstance(cohort, Cohort):
        raise param_error("cohort", "predict", "a medaudit.data.Cohort", type(cohort).__name__)
    if batch_size < 1:
        raise param_error("batch_size", "predict", "a positive integer", batch_size)
    if transform is not None and not callable(transform):
        raise param_error("transform", "predict", "a callable or None", transform)
    if len(cohort) == 0:
        raise InvalidInputError(f"Cohort {cohort.name!r} has no images to predict on.")
    device = resolve_device(device)
    mh = model_hash(model)
    dh = cohort.content_hash()
    cache_path = None
    if cache_dir is not None and transform is None:
        key = hashlib.sha256(
            f"{mh}:{dh}:{image_size}:{in_channels}:{mean}:{std}:{features}".encode()
        )
        cache_path = Path(cache_dir) / f"predictions-{key.hexdigest()[:24]}.npz"
        if cache_path.is_file():
            return Predictions.load(cache_path)

    on_cuda = device.startswith("cuda")
    amp_dtype = autocast_dtype(device) if amp else None
    model = model.to(device).eval()
    if on_cuda and amp:
        model = model.to(memory_format=torch.channels_last)
    m = _as_tensor(mean, device)
    s = _as_tensor(std, device)
    labels = cohort.labels
    labels_t = torch.tensor(labels, dtype=torch.int64)  # a copy: labels may be read-only
    all_scores, all_loss, all_feats = [], [], []
    has_features = (
        features
        and callable(getattr(model, "features", None))
        and callable(getattr(model, "head", None))
    )
    FORWARD_PASSES["count"] += 1
    from medaudit._progress import progress_bar

    batches = iter_batches(
        cohort,
        batch_size,
        image_size=image_size,
        channels=in_channels,
        workers=workers,
        pin_memory=on_cuda,
    )
    with (
        torch.inference_mode(),
        torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None),
        progress_bar("Predicting", total=len(cohort), enabled=progress) as advance,
    ):
        for idx, x in batches:
            if transform is not None:
                x = transform(x, idx)
            x = x.to(device, non_blocking=on_cuda)
            if m is not None:
                x = x - m
            if s is not None:
                x = x / s
            if on_cuda and amp:
                x = x.contiguous(memory_format=torch.channels_last)
            if has_features:
                f = model.features(x)
                logits = model.head(f)
                all_feats.append(f.float().cpu().numpy())
            else:
                logits = model(x)
            logits = _two_column_logits(logits).float()
            y = labels_t[torch.from_numpy(np.asarray(idx))].to(device, non_blocking=on_cuda)
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            all_scores.append(torch.softmax(logits, dim=1).cpu().numpy())
            all_loss.append(loss.cpu().numpy())
            advance(len(idx))
    preds = Predictions(
        scores=np.concatenate(all_scores).astype(np.float64),
        labels=labels,
        loss=np.concatenate(all_loss).astype(np.float64),
        features=np.concatenate(all_feats) if all_feats else None,
        meta=cohort.meta.drop(columns=["path"], errors="ignore").reset_index(drop=True),
        class_names=list(cohort.class_names),
        model_hash=mh,
        data_hash=dh,
    )
    if cache_path is not None:
        preds.save(cache_path)
    return preds


def _two_column_logits(logits: Any) -> Any:
    import torch

    if logits.ndim != 2:
        raise InvalidInputError(
            f"The model returned logits of shape {tuple(logits.shape)}; "
            "expected (batch, n_classes)."
        )
    if logits.shape[1] == 1:  # single-logit binary head: softmax([0, z]) == sigmoid(z)
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _as_tensor(v: float | list[float] | None, device: str) -> Any:
    import torch

    if v is None:
        return None
    t = torch.as_tensor(v, dtype=torch.float32, device=device)
    return t.view(1, -1, 1, 1) if t.ndim == 1 else t
