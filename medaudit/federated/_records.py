"""Conversions between medaudit objects and Flower records (what travels in a Message).

Only the floating-point entries of a model's state dict travel: integer buffers such as
BatchNorm's ``num_batches_tracked`` count local steps, mean nothing once averaged, and
would dominate the norm of an update that client-level DP clips.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit.federated._stats import ClusterMoments, SufficientStatistics

__all__ = [
    "arrays_to_state",
    "load_arrays",
    "moments_from_records",
    "moments_to_records",
    "state_to_arrays",
    "stats_from_records",
    "stats_to_records",
]


def state_to_arrays(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> Any:
    """The floating-point weights of a model (or state dict) as a Flower ``ArrayRecord``."""
    from flwr.app import ArrayRecord

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    floats = {k: v.detach().cpu() for k, v in state.items() if v.is_floating_point()}
    return ArrayRecord(floats)


def arrays_to_state(arrays: Any) -> dict[str, torch.Tensor]:
    """A state dict (floating-point entries only) from an ``ArrayRecord``."""
    return {k: torch.from_numpy(np.array(a.numpy())) for k, a in arrays.items()}


def load_arrays(model: nn.Module, arrays: Any) -> nn.Module:
    """Load the weights in ``arrays`` into ``model`` (integer buffers are kept)."""
    state = model.state_dict()
    incoming = arrays_to_state(arrays)
    missing = [k for k, v in state.items() if v.is_floating_point() and k not in incoming]
    unknown = [k for k in incoming if k not in state]
    if missing or unknown:
        raise ValueError(
            f"The global model does not match the site's architecture (missing {missing[:3]}, "
            f"unexpected {unknown[:3]})."
        )
    state.update({k: v.to(state[k].dtype) for k, v in incoming.items()})
    model.load_state_dict(state)
    return model


def stats_to_records(stats: SufficientStatistics) -> tuple[Any, Any]:
    """``(ArrayRecord, ConfigRecord)`` carrying one site's audit statistics.

    Histograms travel sparse: the flat index and count of each non-empty bin (a site
    with a few hundred images fills a few hundred of the 65,536 bins per group).
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord

    flat = np.ascontiguousarray(stats.histograms, dtype=np.int64).ravel()
    index = np.flatnonzero(flat)
    arrays = ArrayRecord(
        {
            "confusion": Array(np.ascontiguousarray(stats.confusion, dtype=np.int64)),
            "hist-index": Array(index.astype(np.int64)),
            "hist-count": Array(flat[index]),
        }
    )
    config = ConfigRecord(
        {
            "keys": json.dumps([list(k) for k in stats.keys]),
            "threshold": float(stats.threshold),
            "n-bins": int(stats.n_bins),
            "noise-epsilon": -1.0 if stats.noise_epsilon is None else float(stats.noise_epsilon),
        }
    )
    return arrays, config


def stats_from_records(arrays: Any, config: Any) -> SufficientStatistics:
    """Inverse of :func:`stats_to_records`."""
    eps = float(config["noise-epsilon"])
    keys = tuple((str(a), str(g)) for a, g in json.loads(str(config["keys"])))
    n_bins = int(config["n-bins"])
    hist = np.zeros(len(keys) * 2 * n_bins, dtype=np.int64)
    hist[np.asarray(arrays["hist-index"].numpy(), dtype=np.int64)] = arrays["hist-count"].numpy()
    return SufficientStatistics(
        keys=keys,
        confusion=np.asarray(arrays["confusion"].numpy(), dtype=np.int64),
        histograms=hist.reshape(len(keys), 2, n_bins),
        threshold=float(config["threshold"]),
        n_bins=int(config["n-bins"]),
        noise_epsilon=None if eps < 0 else eps,
    )


def moments_to_records(moments: ClusterMoments) -> tuple[Any, Any]:
    """``(ArrayRecord, ConfigRecord)`` carrying one site's cluster moments."""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    return (
        ArrayRecord({"moments": Array(np.ascontiguousarray(moments.moments, dtype=np.float64))}),
        ConfigRecord({"keys": json.dumps([list(k) for k in moments.keys])}),
    )


def moments_from_records(arrays: Any, config: Any) -> ClusterMoments:
    """Inverse of :func:`moments_to_records`."""
    return ClusterMoments(
        keys=tuple((str(a), str(g)) for a, g in json.loads(str(config["keys"]))),
        moments=np.asarray(arrays["moments"].numpy(), dtype=np.float64),
    )
