"""Turn medaudit's errors into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from medaudit._errors import MedauditError

__all__ = ["run_guarded"]


def run_guarded(app: Any, args: list[str]) -> int:
    """Run the typer ``app`` on ``args``; return the exit code.

    Bad input (a :class:`MedauditError`, a missing file, a usage error) gives exit 2
    and one line on stderr; ``--debug`` anywhere in ``args`` adds the traceback.
    """
    debug = "--debug" in args
    try:
        result = app(args=args, standalone_mode=False)
    except click.exceptions.UsageError as exc:
        msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"medaudit: error: {msg}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        print("medaudit: aborted", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (MedauditError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            traceback.print_exc()
        print(f"medaudit: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medaudit: interrupted", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"file not found: {exc.filename}"
    return " ".join(text.split())
