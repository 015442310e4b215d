"""Where and when a report was made: time, machine, medaudit's git commit, the full policy.

What a regulator asks of a report: which model file, which data, which policy (and its
exact text, whose hash is recorded), which medaudit, when, and on what machine. The
pipeline records these in ``report.meta``; the page shows them in its header, methods and
reproducibility blocks.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medaudit.report._policy import Policy

__all__ = ["environment", "policy_record", "utc_now"]


def utc_now() -> str:
    """The current time, UTC, to the second (ISO 8601): ``2026-11-30T14:03:12+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    torch = sys.modules.get("torch")  # never import torch just to ask
    try:
        if torch is not None and torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken driver must not break the report
        return None
    return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():  # an installed copy, not medaudit's own checkout
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """OS, CPU, GPU, CPU count and medaudit's git commit (when it runs from a checkout).

    Examples
    --------
    >>> sorted(environment())
    ['cpu', 'cpu_count', 'git_commit', 'gpu', 'os', 'python']
    """
    commit = _git("rev-parse", "HEAD")
    if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "gpu": _gpu(),
        "git_commit": commit,
    }


def policy_record(policy: Policy) -> dict[str, Any]:
    """The policy's source, SHA-256 and full TOML text (the text the hash is taken of)."""
    return {
        "policy": policy.source,
        "policy_sha256": policy.sha256,
        "policy_toml": policy.to_toml(comments=False),
    }
