"""Penultimate features of any ``nn.Module``: found automatically or named, read by a hook.

Zoo models expose ``features(x)`` and ``head(f)``. Any other module works too: its
penultimate features are the *input of its final linear layer* (found when exactly one
``nn.Linear`` produces the logits), or the output of a layer the user names with
``feature_layer="..."``; a forward hook reads them during the ordinary forward pass.
A 4-d output (B, C, H, W) is averaged over its spatial dimensions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from medaudit._errors import InvalidInputError, param_error

__all__ = [
    "MSG_NO_PENULTIMATE",
    "MSG_UNKNOWN_LAYER",
    "FeatureTap",
    "find_penultimate_layer",
    "predict_with_features",
]

MSG_NO_PENULTIMATE = (
    "Cannot find the penultimate layer of {cls}: {why}. Name the layer whose output are "
    'the features with feature_layer="..." (e.g. feature_layer={example!r}); candidate '
    "layers, last first: {candidates}."
)
MSG_UNKNOWN_LAYER = "{cls} has no layer named {name!r}; candidate layers, last first: {candidates}."
_N_CANDIDATES = 12


def _candidates(model: Any) -> list[str]:
    """Named leaf layers, last first, with their types."""
    leaves = [
        (name, mod) for name, mod in model.named_modules() if name and not list(mod.children())
    ]
    return [f"{name} ({type(mod).__name__})" for name, mod in reversed(leaves)]


def _fail(model: Any, why: str) -> InvalidInputError:
    cands = _candidates(model)
    names = [c.split(" ")[0] for c in cands]
    # The usual answer: the layer before the last linear one, else the second to last.
    example = names[1] if len(names) > 1 else (names[0] if names else "layer")
    shown = ", ".join(cands[:_N_CANDIDATES]) + (" ..." if len(cands) > _N_CANDIDATES else "")
    return InvalidInputError(
        MSG_NO_PENULTIMATE.format(
            cls=type(model).__name__, why=why, example=example, candidates=shown or "(none)"
        )
    )


def find_penultimate_layer(model: Any, n_outputs: int | None = None) -> tuple[str, str]:
    """Where the penultimate features of ``model`` are read.

    Parameters
    ----------
    model : torch.nn.Module
    n_outputs : int, optional
        Number of logits the model returns; narrows the search to linear layers with as
        many outputs.

    Returns
    -------
    (name, where) : tuple of str
        The layer's name and ``"input"`` (the features are the input of this final linear
        layer).

    Raises
    ------
    InvalidInputError
        With :data:`MSG_NO_PENULTIMATE`, listing the candidate layers, when there is no
        linear layer or several could be the classifier.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> find_penultimate_layer(net, 2)
    ('3', 'input')
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise param_error("model", "find_penultimate_layer", "a torch.nn.Module", type(model))
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if n_outputs is not None:
        linears = [(n, m) for n, m in linears if m.out_features in (n_outputs, 1)]
    if not linears:
        raise _fail(model, "it has no linear layer producing the logits")
    if len(linears) > 1:
        names = ", ".join(n for n, _ in linears)
        raise _fail(model, f"several linear layers could produce the logits ({names})")
    return linears[0][0], "input"


class FeatureTap:
    """A forward hook that keeps the features of the last forward pass.

    Parameters
    ----------
    model : torch.nn.Module
    feature_layer : str, optional
        Layer whose *output* are the features; default: the *input* of the final linear
        layer (:func:`find_penultimate_layer`).
    n_outputs : int, optional
        Number of logits (helps the automatic search).
    detach : bool, default True
        Keep a detached copy (inference); False keeps the graph (training losses).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with FeatureTap(net, n_outputs=2) as tap:
    ...     _ = net(torch.zeros(3, 1, 4, 4))
    >>> tuple(tap.features.shape)
    (3, 8)
    """

    def __init__(
        self,
        model: Any,
        feature_layer: str | None = None,
        *,
        n_outputs: int | None = None,
        detach: bool = True,
    ) -> None:
        self.model = model
        if feature_layer is None:
            self.layer_name, self.where = find_penultimate_layer(model, n_outputs)
        else:
            modules = dict(model.named_modules())
            if not isinstance(feature_layer, str) or feature_layer not in modules:
                shown = ", ".join(_candidates(model)[:_N_CANDIDATES])
                raise InvalidInputError(
                    MSG_UNKNOWN_LAYER.format(
                        cls=type(model).__name__, name=feature_layer, candidates=shown
                    )
                )
            self.layer_name, self.where = feature_layer, "output"
        self.detach = detach
        self.features: Any = None
        self._handle: Any = None

    def _keep(self, t: Any) -> None:
        if t.ndim == 4:
            t = t.mean(dim=(2, 3))
        elif t.ndim != 2:
            t = t.flatten(1)
        self.features = t.detach() if self.detach else t

    def __enter__(self) -> FeatureTap:
        layer = dict(self.model.named_modules())[self.layer_name]
        if self.where == "input":
            self._handle = layer.register_forward_pre_hook(lambda _m, args: self._keep(args[0]))
        else:
            self._handle = layer.register_forward_hook(lambda _m, _a, out: self._keep(out))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@contextmanager
def _collecting(tap: FeatureTap, sink: list[np.ndarray]) -> Iterator[None]:
    """Append every forward pass's features to ``sink`` while the tap is attached."""
    original = tap._keep

    def keep(t: Any) -> None:
        original(t)
        sink.append(tap.features.float().cpu().numpy())

    tap._keep = keep  # type: ignore[method-assign]
    try:
        with tap:
            yield
    finally:
        tap._keep = original  # type: ignore[method-assign]


def predict_with_features(
    model: Any, cohort: Any, *, feature_layer: str | None = None, **predict_kwargs: Any
) -> Any:
    """:func:`medaudit.inference.predict` with penultimate features from any ``nn.Module``.

    A zoo model (``features`` + ``head``) and no ``feature_layer``: the ordinary pass.
    Otherwise the features are read with a :class:`FeatureTap` during the same pass.

    Parameters
    ----------
    model : torch.nn.Module
    cohort : Cohort
    feature_layer : str, optional
        Layer whose output are the features (default: the input of the final linear
        layer; a clear error lists the candidates when that cannot be found).
    **predict_kwargs
        Passed to :func:`~medaudit.inference.predict` (``mean``, ``std``,
        ``image_size``, ``batch_size``, ``device``, ...).

    Returns
    -------
    Predictions
        With ``features`` filled.
    """
    from medaudit.inference import predict

    zoo = callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))
    if feature_layer is None and zoo:
        return predict(model, cohort, **predict_kwargs)
    predict_kwargs.pop("features", None)
    predict_kwargs.pop("cache_dir", None)  # a cached result would skip the hooked pass
    n_out = len(getattr(cohort, "class_names", []) or []) or None
    tap = FeatureTap(model, feature_layer, n_outputs=n_out)
    sink: list[np.ndarray] = []
    with _collecting(tap, sink):
        preds = predict(model, cohort, features=False, **predict_kwargs)
    feats = np.concatenate(sink) if sink else None
    if feats is None or len(feats) != len(preds):
        raise InvalidInputError(
            f"The layer {tap.layer_name!r} did not run once per batch during the forward "
            'pass; name another layer with feature_layer="...".'
        )
    return dataclasses.replace(preds, features=feats)
