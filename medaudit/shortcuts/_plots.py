"""Figures of the shortcut section: aggregate occlusion maps (and per-image ones if asked).

The maps are drawn as SVG directly, each map an embedded PNG (``data:image/png``) with its
title as SVG text: a grid of small heat maps renders in milliseconds this way, where
matplotlib's subplots take seconds, and the figure stays self-contained.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from medaudit.report import Figure

__all__ = ["diverging_rgb", "map_grid_svg", "occlusion_figure", "per_image_figure"]

_MAX_COLS = 5
_PANEL = 96  # pixels per panel side
_TITLE = 14  # pixels above each panel
_GAP = 10
# Blue (occluding raises the score) - white - red (occluding lowers it): RdBu's ends.
_BLUE = np.array([33, 102, 172], dtype=np.float64)
_RED = np.array([178, 24, 43], dtype=np.float64)
_WHITE = np.array([247, 247, 247], dtype=np.float64)


def diverging_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """uint8 RGB of ``values`` on a blue-white-red scale symmetric around 0.

    Examples
    --------
    >>> diverging_rgb(np.array([[-1.0, 0.0, 1.0]]), 1.0)[0].tolist()
    [[33, 102, 172], [247, 247, 247], [178, 24, 43]]
    """
    t = np.clip(np.asarray(values, dtype=np.float64) / (vmax or 1.0), -1.0, 1.0)[..., None]
    rgb = np.where(t >= 0, _WHITE + t * (_RED - _WHITE), _WHITE + (-t) * (_BLUE - _WHITE))
    return np.round(rgb).astype(np.uint8)


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def map_grid_svg(rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> str:
    """An SVG grid of heat maps: one row per label, one colour scale per row.

    Parameters
    ----------
    rows : list of (row label, list of (panel title, 2-d map))
    """
    n_cols = max((len(maps) for _, maps in rows), default=1)
    width = n_cols * (_PANEL + _GAP) + 70
    height = len(rows) * (_PANEL + _TITLE + _GAP) + 4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
    ]
    bar = _png(diverging_rgb(np.linspace(1, -1, 64)[:, None].repeat(6, axis=1), 1.0))
    for i, (label, maps) in enumerate(rows):
        y = i * (_PANEL + _TITLE + _GAP) + _TITLE
        vmax = max(float(np.abs(m).max()) for _, m in maps) or 1.0
        for j, (title, amap) in enumerate(maps):
            x = j * (_PANEL + _GAP)
            text = escape(f"{label}: {title}")
            parts.append(f'<text x="{x}" y="{y - 3}" font-size="9">{text}</text>')
            parts.append(
                f'<image x="{x}" y="{y}" width="{_PANEL}" height="{_PANEL}" '
                f'preserveAspectRatio="none" style="image-rendering:pixelated" '
                f"href={quoteattr(_png(diverging_rgb(amap, vmax)))}/>"
            )
        x = n_cols * (_PANEL + _GAP)
        parts.append(
            f'<image x="{x}" y="{y}" width="8" height="{_PANEL}" preserveAspectRatio="none" '
            f"href={quoteattr(bar)}/>"
        )
        for frac, val in ((0.0, vmax), (0.5, 0.0), (1.0, -vmax)):
            parts.append(
                f'<text x="{x + 11}" y="{y + frac * _PANEL + 3:.1f}" font-size="8">'
                f"{val:+.2g}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def occlusion_figure(found: Any) -> Figure:
    """Mean occlusion map per class, then per level of each attribute (one row each).

    Red: hiding the window lowers the explained score (the model relies on it); blue:
    hiding it raises the score. One colour scale per row.
    """
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    cls = [(k.split(": ", 1)[1], v) for k, v in found.mean_maps.items() if k.startswith("class: ")]
    if cls:
        rows.append(("class", cls))
    for af in found.attributes:
        maps = [
            (lvl, found.mean_maps[f"{af.name}: {lvl}"])
            for lvl in af.level_maps
            if f"{af.name}: {lvl}" in found.mean_maps
        ]
        if maps:
            rows.append((af.name, maps[:_MAX_COLS]))
    alt = "; ".join(f"{label} ({', '.join(n for n, _ in maps)})" for label, maps in rows)
    return Figure(
        svg=map_grid_svg(rows),
        alt="Mean occlusion maps (fall of the explained score when each window is hidden; "
        f"red: the model relies on it), one row per {alt}.",
    )


def per_image_figure(found: Any) -> Figure:
    """The first ``per_image_maps`` per-image occlusion maps (only when asked for)."""
    occ = found.occlusion
    n = min(int(found.settings.per_image_maps), len(occ.rows))
    cols = min(n, _MAX_COLS)
    rows = [
        ("image", [(str(i + 1), occ.maps[i]) for i in range(r * cols, min(n, (r + 1) * cols))])
        for r in range(math.ceil(n / cols))
    ]
    return Figure(
        svg=map_grid_svg(rows),
        alt=f"Occlusion maps of {n} individual images (asked for with per_image_maps).",
    )
