"""Write corrupted copies of a data set plus a manifest, for use in other tools."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medaudit._errors import InvalidInputError
from medaudit.robustness._registry import (
    apply_corruption,
    check_channels,
    check_severity,
    get_corruption,
)

__all__ = ["MSG_BIT_DEPTH", "MSG_OUT_EXISTS", "write_corrupted"]

MSG_OUT_EXISTS = "{out} already exists and is not empty; choose a new folder for the copies."
MSG_BIT_DEPTH = "Bit depth must be 8 or 16 (16 for grayscale images only); got {got!r}."


def _to_png(img: np.ndarray, path: Path, bit_depth: int) -> None:
    from PIL import Image

    arr = np.clip(img, 0.0, 1.0)
    if arr.shape[0] == 1:
        if bit_depth == 16:
            Image.fromarray(np.round(arr[0] * 65535).astype(np.uint16)).save(path, format="PNG")
            return
        Image.fromarray(np.round(arr[0] * 255).astype(np.uint8)).save(path, format="PNG")
        return
    if bit_depth == 16:
        raise InvalidInputError(MSG_BIT_DEPTH.format(got=bit_depth))
    rgb = np.round(arr[:3].transpose(1, 2, 0) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, format="PNG")


def write_corrupted(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    corruption: str,
    severity: int,
    seed: int = 0,
    bit_depth: int = 8,
) -> tuple[Path, int]:
    """Corrupt every image of a manifest (or ``.npz``) and write PNG copies and a manifest.

    Each image is corrupted at its own size, seeded by its row in the loaded cohort and
    ``seed`` (the rows and seed the robustness audit uses). Everything is written to a
    temporary folder next to ``out`` and renamed into place at the end, so ``out``
    either holds the complete copy or does not exist.

    Parameters
    ----------
    data : path
        Manifest CSV/Parquet or MedMNIST-style ``.npz``.
    out : path
        New folder (or an empty one): receives ``manifest.csv`` and ``images/``.
    corruption : str
        A registered corruption.
    severity : int
        1-5.
    seed : int
    bit_depth : {8, 16}
        PNG sample depth (16 for grayscale only).

    Returns
    -------
    (Path, int)
        The written manifest, and how many manifest rows were left out (unreadable).
    """
    import pandas as pd
    import torch

    from medaudit.data import load_cohort

    c = get_corruption(corruption)
    sev = check_severity(severity)
    if bit_depth not in (8, 16):
        raise InvalidInputError(MSG_BIT_DEPTH.format(got=bit_depth))
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInputError(MSG_OUT_EXISTS.format(out=dest))
    cohort = load_cohort(Path(data))
    if len(cohort) == 0:
        raise InvalidInputError(f"{data} has no readable image to corrupt.")
    check_channels(c, cohort.image_shape[0])
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "images").mkdir()
        names = []
        for i in range(len(cohort)):
            img = cohort.image(i)
            check_channels(c, img.shape[0])
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
            y = apply_corruption(c, x, c.severities[sev - 1], np.array([i]), seed)
            name = f"images/{i:06d}.png"
            _to_png(y[0].numpy(), tmp / name, bit_depth)
            names.append(name)
        meta = cohort.meta.copy()
        if "path" in meta.columns:
            meta = meta.rename(columns={"path": "source_path"})
        meta.insert(0, "path", names)
        meta["corruption"] = c.name
        meta["severity"] = sev
        meta["corruption_seed"] = int(seed)
        pd.DataFrame(meta).to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / "manifest.csv", len(cohort.dropped)
