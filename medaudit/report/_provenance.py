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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medaudit.report._format import format_threshold

if TYPE_CHECKING:
    from medaudit.report._policy import Policy

__all__ = [
    "environment",
    "header_facts",
    "not_run_audits",
    "policy_record",
    "policy_tables",
    "utc_now",
]


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


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def _short(h: Any, n: int = 12) -> str:
    return str(h)[:n] if isinstance(h, str) and h else "unknown"


def header_facts(meta: Mapping[str, Any], verdict: str) -> list[tuple[str, str, str]]:
    """The traceability header: (field, label, text) for date, model, data, policy, version."""
    model = meta.get("model") if isinstance(meta.get("model"), Mapping) else {}
    cohort = meta.get("cohort") if isinstance(meta.get("cohort"), Mapping) else {}
    versions = meta.get("versions") if isinstance(meta.get("versions"), Mapping) else {}
    assert isinstance(model, Mapping) and isinstance(cohort, Mapping)
    assert isinstance(versions, Mapping)
    arch = model.get("arch") or "unknown architecture"
    ckpt = model.get("checkpoint")
    model_txt = f"{arch}" + (f" ({ckpt})" if ckpt else "")
    model_txt += f", sha256 {_short(meta.get('model_hash'))}"
    n_img, n_pat = cohort.get("n_images"), cohort.get("n_patients")
    counts = ", ".join(
        x
        for x in (
            f"{n_img:,} images" if isinstance(n_img, int) else "",
            f"{n_pat:,} patients" if isinstance(n_pat, int) else "",
        )
        if x
    )
    data_txt = f"{cohort.get('name') or meta.get('data') or 'unnamed data'}"
    data_txt += f", sha256 {_short(meta.get('data_hash'))}" + (f"; {counts}" if counts else "")
    policy = meta.get("policy")
    source = policy.get("source") if isinstance(policy, Mapping) else policy
    policy_txt = f"{source or 'unknown'}, sha256 {_short(meta.get('policy_sha256'))}"
    verdicts = {"fail": "FAIL", "warn": "PASS WITH WARNINGS", "pass": "PASS",
                "skipped": "INCOMPLETE", "empty": "NO CHECKS"}  # fmt: skip
    facts = [
        ("created", "Date (UTC)", str(meta.get("created") or "not recorded")),
        ("model", "Model", model_txt),
        ("data", "Data", data_txt),
        ("policy", "Policy", policy_txt),
        ("medaudit", "medaudit", str(versions.get("medaudit") or "unknown version")),
        ("verdict", "Verdict", verdicts[verdict]),
    ]
    return facts


def policy_tables(meta: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The full policy from ``meta["policy_toml"]``: settings, then every check's threshold."""
    text = meta.get("policy_toml")
    if not isinstance(text, str) or not text:
        return {}
    from medaudit.report._policy import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    settings: list[tuple[str, str]] = []
    for k, v in doc.get("settings", {}).items():
        if isinstance(v, Mapping):
            settings += [(f"{k}.{k2}", _text(v2)) for k2, v2 in v.items()]
        else:
            settings.append((k, _text(v)))
    checks = [
        (cid, f"{format_threshold(t.get('op'), t.get('threshold'))} · {t.get('severity', '')}")
        for cid, t in doc.get("checks", {}).items()
        if isinstance(t, Mapping)
    ]
    return {"Settings": settings, "Checks: threshold and severity": checks}


def not_run_audits(meta: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for r in meta.get("audits_not_run") or []:
        if isinstance(r, Mapping):
            out.append(
                {
                    "audit": str(r.get("audit", "")),
                    "title": str(r.get("title", "")),
                    "reason": str(r.get("reason", "")),
                }
            )
    return out
