"""Write a folder of PNG images plus the manifest that points at them, atomically.

Used by ``write_synthetic`` (the synthetic hospitals as files) and the watermark's
``write_protected`` (protected copies of a user's images). Everything goes into a
temporary folder inside the destination first and is moved into place manifest last,
so no moment exists in which a manifest points at missing or stale images, and a
failure leaves the destination as it was (and removes it if this call created it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medaudit._errors import InvalidInputError

__all__ = ["image_names", "write_image_folder"]


def image_names(n: int) -> list[str]:
    """The manifest paths of ``n`` images: ``images/img_000000.png``, ...."""
    return [f"images/img_{i:06d}.png" for i in range(n)]


def write_image_folder(
    out_dir: str | os.PathLike[str],
    images: Iterable[np.ndarray],
    manifest: pd.DataFrame,
    *,
    extra_files: Mapping[str, str] | None = None,
    prefix: str = ".write-",
    func: str = "write_image_folder",
) -> Path:
    """Write ``images`` as PNGs and ``manifest`` (with a leading ``path`` column) atomically.

    Parameters
    ----------
    out_dir : path
        The destination folder (created when missing; an existing file is refused).
    images : iterable of ndarray
        One 8-bit array per manifest row: (H, W) grayscale or (H, W, 3) RGB.
    manifest : DataFrame
        The rows, in image order, without a ``path`` column (it is inserted first).
    extra_files : mapping of str to str, optional
        Other text files to write beside the manifest (name to content).
    prefix : str
        Name prefix of the temporary folder.
    func : str
        Named in the error message.

    Returns
    -------
    Path
        The manifest's path, ``out_dir/manifest.csv``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     m = write_image_folder(d, [np.zeros((4, 4), np.uint8)], pd.DataFrame({"label": [1]}))
    ...     pd.read_csv(m)["path"].tolist()
    ['images/img_000000.png']
    """
    from PIL import Image

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{func}: {out} exists and is not a folder.")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out))
    try:
        (tmp / "images").mkdir()
        names = image_names(len(manifest))
        for name, img in zip(names, images, strict=True):
            Image.fromarray(img).save(tmp / name, format="PNG", optimize=False)
        table = manifest.copy()
        table.insert(0, "path", names)
        table.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        extra = dict(extra_files or {})
        for name, text in extra.items():
            (tmp / name).write_text(text, encoding="utf-8")
        # Swap in: drop the old manifest first, so that no moment exists in which a
        # manifest points at images it was not written with.
        (out / "manifest.csv").unlink(missing_ok=True)
        if (out / "images").exists():
            (out / "images").rename(tmp / "old-images")
        (tmp / "images").rename(out / "images")
        for name in extra:
            os.replace(tmp / name, out / name)
        os.replace(tmp / "manifest.csv", out / "manifest.csv")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return out / "manifest.csv"
