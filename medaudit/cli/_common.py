"""Small pieces shared by the CLI command modules."""

from __future__ import annotations

from pathlib import Path

from medaudit._errors import InvalidInputError
from medaudit.report import Policy

__all__ = ["parse_list", "read_policy", "require_file"]


def parse_list(value: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None or empty → None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def read_policy(path: Path | None) -> Policy:
    """The policy in ``path``, or the built-in one."""
    return Policy.from_toml(path) if path is not None else Policy.default()


def require_file(path: Path, what: str) -> Path:
    """Raise a one-line error unless ``path`` is an existing file."""
    if not path.exists():
        raise InvalidInputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InvalidInputError(f"{what} is not a file: {path}")
    return path
