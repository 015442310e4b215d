"""Print a report page to PDF through headless Chromium (when it is installed).

The page's print stylesheet keeps every column (wide tables are split into parts that fit
the page) and starts each section on a new page. Chromium is found on the ``PATH``
(``chromium``, ``chromium-browser``, ``google-chrome``) or named by ``MEDAUDIT_CHROMIUM``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from medaudit._errors import InvalidInputError

__all__ = ["CHROMIUM_MISSING", "find_chromium", "html_to_pdf"]

CHROMIUM_MISSING = (
    "PDF output needs headless Chromium, which was not found. Install the 'chromium' "
    "package (e.g. `apt-get install chromium`) or set MEDAUDIT_CHROMIUM to the browser's path."
)
PDF_FAILED = "Chromium could not print the report to PDF ({why})."
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable to use, or None when none is installed."""
    env = os.environ.get("MEDAUDIT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in (shutil.which(n) for n in _NAMES) if p), None)


def html_to_pdf(html: str, pdf_path: str | os.PathLike[str], *, timeout: float = 120.0) -> Path:
    """Print ``html`` (a self-contained page) to ``pdf_path``; written atomically.

    Raises
    ------
    InvalidInputError
        When Chromium is not installed (naming the package) or fails to print.
    """
    exe = find_chromium()
    if exe is None:
        raise InvalidInputError(CHROMIUM_MISSING)
    out = Path(pdf_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medaudit-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        args = [
            exe,
            "--headless",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-extensions",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            page.as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
        try:
            proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InvalidInputError(PDF_FAILED.format(why=exc)) from None
        if proc.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise InvalidInputError(PDF_FAILED.format(why=why[0][:200]))
        fd, tmp_out = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(target, tmp_out)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_out, 0o666 & ~umask)  # a report is meant to be shared
        os.replace(tmp_out, out)
    return out
