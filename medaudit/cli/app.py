"""The ``medaudit`` command: one module per command group, wired here.

Exit codes: 0 all checks pass · 1 a check failed · 2 bad input or usage (one line on
stderr, no traceback; ``--debug`` shows it).
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from medaudit.cli._errors import run_guarded

app = typer.Typer(
    name="medaudit",
    help="Audit medical imaging models for privacy, fairness and robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error.")
    ] = False,
) -> None:
    """Audit medical imaging models for privacy, fairness and robustness."""


# Each command group lives in its own module (medaudit/cli/<name>.py) and adds its
# commands to `app` at import; this tuple is the one place they are wired.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "predict",
    "audit",
    "demo",
    "report",
    "policy",
    "synth",
    "check",
    "watermark",
    "attack",
    "power",
    "corrupt",
    "federate",
    "unlearn",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"medaudit.cli.{name}")


def run(args: list[str]) -> int:
    """Run ``medaudit`` with ``args`` and return the exit code (what tests call)."""
    _register()
    return run_guarded(app, list(args))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":  # pragma: no cover
    main()
