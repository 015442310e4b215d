"""Where does the model look? Occlusion sensitivity (captum), aggregated over images.

Each image is covered by a coarse grid of windows; captum's ``Occlusion`` replaces one
window at a time by the training mean intensity (zero after normalisation) and records
how much the score falls. Maps are averaged per class and per attribute level; only these
aggregates are reported unless per-image maps are asked for. Two numbers summarise a map:

- the **border share**: the share of the absolute attribution that lies in the image's
  outer band (where burned-in markers, text and collimation edges are), against that
  band's share of the area;
- the **concentration**: the share of the absolute attribution held by the top eighth of
  the windows. A map is called *localised* when that share is at least one half, and
  *diffuse* otherwise, as the insurance paper describes its occlusion maps.

References
----------
.. [1] Zeiler MD, Fergus R. Visualizing and understanding convolutional networks.
       ECCV 2014.
.. [2] Lotter W. Acquisition parameters influence AI recognition of race in chest x-rays
       and mitigating these factors reduces underdiagnosis bias. Nat Commun 15:7465, 2024.
.. [3] Kokhlikyan N, et al. Captum: a unified and generic model interpretability library
       for PyTorch. arXiv:2009.07896, 2020.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medaudit._errors import param_error

__all__ = [
    "LOCALISED_SHARE",
    "MapSummary",
    "OcclusionMaps",
    "occlusion_maps",
    "occlusion_windows",
    "summarise_map",
]

# A map whose top eighth of windows holds at least this share of |attribution| is localised.
LOCALISED_SHARE = 0.5


def occlusion_windows(side: int, grid: int) -> tuple[int, int]:
    """Window and stride that tile ``side`` pixels with ``grid`` windows, edge to edge.

    captum places windows at ``0, stride, 2 * stride, ...`` while they fit; choosing
    ``window = side - (grid - 1) * stride`` makes the last one end at the border, so
    every pixel is covered (neighbouring windows overlap by a pixel or two when ``side``
    is not a multiple of ``grid``).

    Examples
    --------
    >>> occlusion_windows(64, 4), occlusion_windows(50, 4)
    ((16, 16), (14, 12))
    """
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise param_error("grid", "occlusion_windows", "an int >= 1", grid)
    if grid == 1 or side <= grid:
        return side, max(1, side)
    stride = max(1, (side - math.ceil(side / grid)) // (grid - 1))
    return side - (grid - 1) * stride, stride


@dataclass(frozen=True, eq=False)
class OcclusionMaps:
    """Per-image occlusion maps of a subsample of the audited images.

    Attributes
    ----------
    rows : ndarray of int of shape (n,)
        Audited rows that were occluded.
    maps : ndarray of shape (n, H, W)
        Fall of the explained score when the window around each pixel is occluded
        (averaged over channels).
    target : ndarray of int of shape (n,)
        Class whose score was explained.
    window, stride : tuple of int
        (rows, columns) of the occlusion window and its stride.
    """

    rows: np.ndarray
    maps: np.ndarray
    target: np.ndarray
    window: tuple[int, int]
    stride: tuple[int, int]


def occlusion_maps(
    model: Any,
    images: np.ndarray,
    target: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    grid: int = 4,
    batch_size: int = 128,
    device: str = "cpu",
) -> OcclusionMaps:
    """Occlusion maps with captum's ``Occlusion``, in small forward batches.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits (B, n_classes) (or (B, 1) for a single-logit binary head).
    images : ndarray of shape (n, C, H, W)
        In [0, 1], at the model's input size.
    target : ndarray of int of shape (n,)
        Class whose probability is explained, per image.
    rows : ndarray of int, optional
        Where the images come from (kept in the result).
    mean, std : sequence of float, optional
        The model's input normalisation; the occluded window is set to zero *after* it,
        i.e. to the training mean intensity.
    grid : int, default 4
        Windows per side (16 windows for 4).
    batch_size : int, default 128
        Images per forward pass (captum's ``perturbations_per_eval`` is set from it).
    device : str

    Returns
    -------
    OcclusionMaps
    """
    import torch
    from captum.attr import Occlusion

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    n, c, h, w = x.shape
    if mean is not None:
        x = x - torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    if std is not None:
        x = x / torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    (wh, sh), (ww, sw) = occlusion_windows(h, grid), occlusion_windows(w, grid)
    model = model.to(device).eval()

    def forward(inp: Any) -> Any:
        logits = model(inp)
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return torch.softmax(logits.float(), dim=1)

    occ = Occlusion(forward)
    tgt = torch.as_tensor(np.asarray(target, dtype=np.int64))
    chunk = max(1, batch_size)
    out = np.empty((n, h, w), dtype=np.float32)
    per_eval = max(1, batch_size // max(1, min(chunk, n)))
    with torch.no_grad():
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            attr = occ.attribute(
                x[sl].to(device),
                sliding_window_shapes=(c, wh, ww),
                strides=(c, sh, sw),
                baselines=0.0,
                target=tgt[sl].to(device),
                perturbations_per_eval=per_eval,
            )
            out[sl] = attr.float().mean(dim=1).cpu().numpy()
    return OcclusionMaps(
        rows=np.arange(n) if rows is None else np.asarray(rows),
        maps=out,
        target=np.asarray(target),
        window=(wh, ww),
        stride=(sh, sw),
    )


@dataclass(frozen=True)
class MapSummary:
    """Where the attribution of a map lies.

    Attributes
    ----------
    n_images : int
    border_share : float
        Share of the absolute attribution in the border band.
    border_area : float
        Share of the image area the band covers (what a uniform map would give).
    concentration : float
        Share of the absolute attribution held by the top eighth of the windows.
    pattern : {"localised", "diffuse", "none"}
        ``none`` for a map without attribution.
    """

    n_images: int
    border_share: float
    border_area: float
    concentration: float
    pattern: str


def border_mask(h: int, w: int, band: float) -> np.ndarray:
    """Boolean (h, w) mask of the outer band of ``band`` times the side."""
    bh, bw = max(1, round(band * h)), max(1, round(band * w))
    m = np.ones((h, w), dtype=bool)
    m[bh : h - bh, bw : w - bw] = False
    return m


def summarise_map(
    amap: np.ndarray, *, band: float, window: tuple[int, int], stride: tuple[int, int], n: int
) -> MapSummary:
    """Border share and concentration of one (aggregate) map.

    Examples
    --------
    >>> m = np.zeros((8, 8)); m[:2, :2] = 1.0
    >>> s = summarise_map(m, band=0.25, window=(2, 2), stride=(2, 2), n=1)
    >>> s.border_share, s.pattern
    (1.0, 'localised')
    """
    a = np.abs(np.asarray(amap, dtype=np.float64))
    h, w = a.shape
    mask = border_mask(h, w, band)
    total = a.sum()
    if not np.isfinite(total) or total <= 0:
        return MapSummary(n, float("nan"), float(mask.mean()), float("nan"), "none")
    # Attribution per window: the map is constant on each window of a non-overlapping grid.
    cells = [
        a[r : r + window[0], c : c + window[1]].sum()
        for r in range(0, h - window[0] + 1, stride[0])
        for c in range(0, w - window[1] + 1, stride[1])
    ]
    top = max(1, math.ceil(len(cells) / 8))
    conc = float(np.sort(cells)[::-1][:top].sum() / np.sum(cells))
    return MapSummary(
        n_images=n,
        border_share=float(a[mask].sum() / total),
        border_area=float(mask.mean()),
        concentration=conc,
        pattern="localised" if conc >= LOCALISED_SHARE else "diffuse",
    )
