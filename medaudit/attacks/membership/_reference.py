"""Reference models: trained with the one training loop, cached by content, in parallel.

Each reference model is trained with :func:`medaudit.models.train_model` on its own
subset of data the target never saw (offline) or, for online attacks, on a subset that
also holds half of the audited images. A trained reference model is stored in a cache
folder under the SHA-256 of everything that determines its weights — the initial
weights (architecture and seed), the content of its training data, and the training
settings — so a second audit with the same population and recipe loads it instead of
training it again, whatever target it audits.

Training runs in-process, in worker processes on this machine, or as tasks on a Ray
cluster when one is running (``ray.is_initialized()``, or ``RAY_ADDRESS`` names one);
medaudit never starts a cluster itself. Every model trains on one torch thread with a
seed of its own, so all three give the same weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "BACKENDS",
    "ReferenceModels",
    "ReferenceTraining",
    "balanced_inclusion",
    "default_cache_dir",
    "random_inclusion",
    "resolve_backend",
    "train_reference_models",
]

BACKENDS: tuple[str, ...] = ("auto", "serial", "process", "ray")
CACHE_VERSION = 1

MSG_NO_RAY = (
    "The 'ray' backend needs Ray, which comes with Flower's simulation engine: "
    'pip install "medaudit[fl]".'
)
MSG_NO_CLUSTER = (
    "No Ray cluster to send the reference models to: call ray.init(...) first or set "
    "RAY_ADDRESS to a running cluster (medaudit never starts one itself)."
)


def default_cache_dir() -> Path:
    """Where reference models are cached when no folder is given.

    ``$MEDAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/medaudit``, else
    ``~/.cache/medaudit`` (each with a ``reference-models`` subfolder).

    Examples
    --------
    >>> import os
    >>> os.environ["MEDAUDIT_CACHE_DIR"] = "/tmp/ma"
    >>> default_cache_dir().as_posix()
    '/tmp/ma/reference-models'
    >>> del os.environ["MEDAUDIT_CACHE_DIR"]
    """
    root = os.environ.get("MEDAUDIT_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "medaudit")
    return Path(root) / "reference-models"


@dataclass(frozen=True)
class ReferenceTraining:
    """How every reference model is trained: as close to the target's recipe as known.

    Attributes
    ----------
    arch : str
        Zoo architecture (the target's).
    in_channels, num_classes : int
    image_size : int or None
        Training image side (the target's input size).
    class_names : tuple of str
    mean, std : tuple of float or None
        Input normalisation (the target's, so every model sees the same inputs).
    epochs, batch_size : int
    lr, weight_decay : float
        AdamW settings of :func:`~medaudit.models.train_model`.
    augment : bool
    trainer : callable, optional
        ``trainer(model, cohort, training, seed)`` trains ``model`` in place instead of
        the default :func:`~medaudit.models.train_model` call, e.g. with differential
        privacy to mirror a DP target. It must be a module-level function (worker
        processes and Ray import it by name); its qualified name and
        ``trainer_options`` are part of the cache key.
    trainer_options : tuple of (str, value) pairs
        Settings the trainer reads (``dict(training.trainer_options)``).
    """

    arch: str = "small_cnn"
    in_channels: int = 1
    num_classes: int = 2
    image_size: int | None = None
    class_names: tuple[str, ...] = ("negative", "positive")
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = False
    trainer: Callable[..., Any] | None = None
    trainer_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.trainer is not None and not callable(self.trainer):
            raise param_error("trainer", "ReferenceTraining", "a callable or None", self.trainer)
        for name in ("epochs", "batch_size", "in_channels", "num_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise param_error(name, "ReferenceTraining", "an int >= 1", v)
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise param_error(name, "ReferenceTraining", "a float >= 0", v)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (part of the cache key)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        t = self.trainer
        d["trainer"] = None if t is None else f"{t.__module__}.{t.__qualname__}"
        d["trainer_options"] = [[k, v] for k, v in self.trainer_options]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class ReferenceModels:
    """What :func:`train_reference_models` returns.

    Attributes
    ----------
    models : list of torch.nn.Module
        In eval mode, on the CPU.
    inclusion : ndarray of shape (K, n_pool), bool
        Which rows of the pool each model trained on.
    from_cache : int
        How many were loaded from the cache instead of trained.
    seconds : float
        Wall time (training and loading).
    backend : str
        Where they were trained: ``serial``, ``process`` or ``ray`` (``cache`` when
        every model came from the cache).
    keys : list of str
        Cache key of each model.
    """

    models: list[Any]
    inclusion: np.ndarray
    from_cache: int
    seconds: float
    backend: str
    keys: list[str]

    def __len__(self) -> int:
        return len(self.models)


def _unit_codes(n: int, units: Sequence[Any] | np.ndarray | None) -> np.ndarray:
    if units is None:
        return np.arange(n)
    u = np.asarray(units)
    if len(u) != n:
        raise InvalidInputError("units must have one entry per row.")
    return np.unique(u.astype(str), return_inverse=True)[1].ravel()


def random_inclusion(
    n: int,
    k: int,
    size: int,
    *,
    units: Sequence[Any] | np.ndarray | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Each of ``k`` models trains on a random set of whole units of about ``size`` rows.

    Parameters
    ----------
    n : int
        Rows of the pool.
    k : int
        Models.
    size : int
        Rows per model: units (patients) are drawn in random order until ``size`` rows
        are reached.
    units : array-like of shape (n,), optional
        Patient of each row (default: each row its own unit).
    random_state : int

    Returns
    -------
    ndarray of shape (k, n), bool

    Examples
    --------
    >>> random_inclusion(6, 2, 3, random_state=0).sum(axis=1).tolist()
    [3, 3]
    """
    codes = _unit_codes(n, units)
    counts = np.bincount(codes)
    rng = np.random.default_rng(random_state)
    out = np.zeros((k, n), dtype=bool)
    for j in range(k):
        order = rng.permutation(len(counts))
        take = order[: int(np.searchsorted(np.cumsum(counts[order]), size) + 1)]
        out[j] = np.isin(codes, take)
    return out


def balanced_inclusion(
    n: int, k: int, *, units: Sequence[Any] | np.ndarray | None = None, random_state: int = 0
) -> np.ndarray:
    """Each unit in exactly half of ``k`` models (the online design of LiRA and RMIA).

    Examples
    --------
    >>> inc = balanced_inclusion(5, 4, random_state=0)
    >>> inc.sum(axis=0).tolist()
    [2, 2, 2, 2, 2]
    """
    if k < 2 or k % 2:
        raise param_error("k", "balanced_inclusion", "an even int >= 2", k)
    codes = _unit_codes(n, units)
    rng = np.random.default_rng(random_state)
    n_units = codes.max() + 1 if n else 0
    keys = rng.random((k, n_units))
    per_unit = keys < np.sort(keys, axis=0)[k // 2]  # the k/2 smallest keys of each unit
    return per_unit[:, codes]


def resolve_backend(backend: str, workers: int, n_jobs: int) -> str:
    """The backend ``auto`` stands for: Ray when a cluster is up, else processes or serial."""
    if backend not in BACKENDS:
        raise param_error("backend", "train_reference_models", f"one of {BACKENDS}", backend)
    if backend == "ray":
        _connect_ray(required=True)
        return "ray"
    if backend == "auto":
        if _connect_ray(required=False):
            return "ray"
        return "process" if workers > 1 and n_jobs > 1 else "serial"
    return backend


def _connect_ray(*, required: bool) -> bool:
    """Whether a Ray cluster is available; connects to ``RAY_ADDRESS`` but starts none."""
    try:
        import ray
    except ImportError:
        if required:
            raise InvalidInputError(MSG_NO_RAY) from None
        return False
    if ray.is_initialized():
        return True
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    if required:
        raise InvalidInputError(MSG_NO_CLUSTER)
    return False


@dataclass(frozen=True)
class _Job:
    index: int
    cohort: Any
    training: ReferenceTraining
    seed: int


def _train_job(job: _Job) -> dict[str, np.ndarray]:
    """Train one reference model on one torch thread; its weights as numpy arrays."""
    import torch

    from medaudit.models import build_model, train_model

    t = job.training
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(
            t.arch, in_channels=t.in_channels, num_classes=t.num_classes, random_state=job.seed
        )
        if t.trainer is not None:
            t.trainer(model, job.cohort, t, job.seed)
            return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        train_model(
            model,
            job.cohort,
            None,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            patience=None,
            seed=job.seed,
            image_size=t.image_size,
            in_channels=t.in_channels,
            mean=None if t.mean is None else list(t.mean),
            std=None if t.std is None else list(t.std),
            augment=t.augment,
        )
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def _job_seed(seed: int, index: int) -> int:
    return int(np.random.default_rng([seed, index]).integers(2**31 - 1))


def _cache_key(job: _Job) -> str:
    from medaudit.inference import model_hash
    from medaudit.models import build_model

    t = job.training
    init = build_model(
        t.arch, in_channels=t.in_channels, num_classes=t.num_classes, random_state=job.seed
    )
    doc = {
        "version": CACHE_VERSION,
        "initial_weights": model_hash(init),
        "data": job.cohort.content_hash(),
        "training": t.to_dict(),
        "seed": job.seed,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _load_cached(path: Path) -> Any | None:
    from medaudit.models import load_checkpoint

    if not path.is_file():
        return None
    try:
        return load_checkpoint(path).model
    except InvalidInputError:  # damaged: train it again and overwrite
        return None


def _save_cached(model: Any, path: Path, job: _Job, key: str) -> None:
    from medaudit.models import save_checkpoint

    t = job.training
    save_checkpoint(
        model,
        path,
        arch=t.arch,
        in_channels=t.in_channels,
        num_classes=t.num_classes,
        image_size=t.image_size,
        class_names=list(t.class_names),
        mean=None if t.mean is None else list(t.mean),
        std=None if t.std is None else list(t.std),
        extra={"reference_model": {"key": key, "seed": job.seed, "training": t.to_dict()}},
    )


def _in_memory(cohort: Any, training: ReferenceTraining) -> Any:
    """The cohort with its images decoded at the training size (to ship to a worker)."""
    from medaudit.data import Cohort

    if cohort.images is not None:
        return cohort
    images = cohort.load_all(image_size=training.image_size, channels=training.in_channels)
    meta = cohort.meta.drop(columns=["path"])
    return Cohort(meta, images=images, class_names=cohort.class_names, name=cohort.name)


def _run_jobs(
    jobs: list[_Job], backend: str, workers: int, advance: Any
) -> list[dict[str, np.ndarray]]:
    if backend == "serial" or not jobs:
        out = []
        for job in jobs:
            out.append(_train_job(job))
            advance(1)
        return out
    shipped = [dataclasses.replace(j, cohort=_in_memory(j.cohort, j.training)) for j in jobs]
    if backend == "ray":
        import ray

        remote = ray.remote(num_cpus=1)(_train_job)
        futures = [remote.remote(j) for j in shipped]
        results = []
        for f in futures:
            results.append(ray.get(f))
            advance(1)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked child of a process that has run torch's OpenMP pool can hang.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results = []
        for res in pool.map(_train_job, shipped):
            results.append(res)
            advance(1)
    return results


def train_reference_models(
    pool: Any,
    inclusion: np.ndarray,
    training: ReferenceTraining,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    workers: int = 0,
    backend: str = "auto",
    progress: bool = False,
) -> ReferenceModels:
    """Train (or load from the cache) one reference model per row of ``inclusion``.

    Parameters
    ----------
    pool : Cohort
        The images reference models may train on.
    inclusion : ndarray of shape (K, len(pool)), bool
        Row ``k``: the images model ``k`` trains on (:func:`random_inclusion`,
        :func:`balanced_inclusion`).
    training : ReferenceTraining
    seed : int, default 0
        Model ``k`` is initialised and trained with a seed derived from ``(seed, k)``.
    cache_dir : path, optional
        Cache folder (default: :func:`default_cache_dir`).
    cache : bool, default True
        Read and write the cache.
    workers : int, default 0
        Worker processes (0: one per CPU core, at most K).
    backend : {"auto", "serial", "process", "ray"}, default "auto"
        ``auto``: a running Ray cluster when there is one, else worker processes when
        ``workers`` > 1 and K > 1, else in-process.
    progress : bool, default False

    Returns
    -------
    ReferenceModels

    Examples
    --------
    >>> import tempfile, numpy as np, pandas as pd
    >>> from medaudit.data import Cohort
    >>> rng = np.random.default_rng(0)
    >>> pool = Cohort(pd.DataFrame({"label": rng.integers(0, 2, 16)}),
    ...               images=rng.integers(0, 256, (16, 8, 8), dtype=np.uint8))
    >>> inc = random_inclusion(len(pool), 2, 8)
    >>> recipe = ReferenceTraining(epochs=1, batch_size=8, mean=(0.5,), std=(0.3,))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     first = train_reference_models(pool, inc, recipe, cache_dir=d, workers=1)
    ...     again = train_reference_models(pool, inc, recipe, cache_dir=d, workers=1)
    >>> len(first), first.backend, again.from_cache, again.backend
    (2, 'serial', 2, 'cache')
    """
    from medaudit._progress import progress_bar
    from medaudit.data import Cohort
    from medaudit.models import build_model

    if not isinstance(pool, Cohort):
        raise param_error("pool", "train_reference_models", "a Cohort", type(pool).__name__)
    inc = np.asarray(inclusion, dtype=bool)
    if inc.ndim != 2 or inc.shape[1] != len(pool):
        raise param_error(
            "inclusion", "train_reference_models", f"a (K, {len(pool)}) bool array", inc.shape
        )
    if inc.shape[0] and not inc.any(axis=1).all():
        raise InvalidInputError("Every reference model needs at least one training image.")
    if not isinstance(training, ReferenceTraining):
        raise param_error("training", "train_reference_models", "a ReferenceTraining", training)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise param_error("workers", "train_reference_models", "an int >= 0", workers)
    t0 = time.perf_counter()
    k = inc.shape[0]
    jobs = [_Job(j, pool.subset(inc[j]), training, _job_seed(seed, j)) for j in range(k)]
    keys = [_cache_key(j) for j in jobs]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = [folder / f"reference-{key[:32]}.safetensors" for key in keys]
    models: list[Any] = [_load_cached(p) if cache else None for p in paths]
    todo = [j for j, m in zip(jobs, models, strict=True) if m is None]
    n_workers = workers or min(len(todo), os.cpu_count() or 1)
    used = resolve_backend(backend, n_workers, len(todo)) if todo else "cache"
    with progress_bar("Training reference models", total=len(todo), enabled=progress) as adv:
        states = _run_jobs(todo, used, n_workers, adv)
    for job, state in zip(todo, states, strict=True):
        import torch

        t = job.training
        model = build_model(t.arch, in_channels=t.in_channels, num_classes=t.num_classes)
        model.load_state_dict({name: torch.tensor(np.asarray(v)) for name, v in state.items()})
        model.eval()
        models[job.index] = model
        if cache:
            _save_cached(model, paths[job.index], job, keys[job.index])
    return ReferenceModels(
        models=models,
        inclusion=inc,
        from_cache=k - len(todo),
        seconds=time.perf_counter() - t0,
        backend=used,
        keys=keys,
    )
