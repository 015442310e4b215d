"""``medaudit policy show``: every registered audit's checks and settings, with their help."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.cli.app import app
from medaudit.report import Policy

__all__ = ["policy_app", "policy_as_dict", "show"]

policy_app = typer.Typer(
    name="policy",
    help="Inspect the thresholds and settings that decide whether a check passes.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


class OutputFormat(str, Enum):
    """How ``policy show`` prints the policy."""

    toml = "toml"
    json = "json"


def policy_as_dict(policy: Policy) -> dict[str, Any]:
    """The policy as data: source, hash, settings (value + help) and every check."""
    from medaudit.registry import known_settings

    return {
        "source": policy.source,
        "sha256": policy.sha256,
        "settings": {
            name: {"value": policy.setting(name), "default": s.default, "help": s.help}
            for name, s in known_settings().items()
        },
        "checks": {
            cid: {"op": t.op, "threshold": t.threshold, "severity": t.severity, "help": t.help}
            for cid, t in sorted(policy.checks.items())
        },
    }


@policy_app.command()
def show(
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy TOML; its entries override the built-in defaults."),
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="toml (a valid policy file) or json.")
    ] = OutputFormat.toml,
) -> int:
    """Print the active policy: every registered audit's keys, overridden by --policy."""
    pol = Policy.from_toml(policy) if policy is not None else Policy.default()
    if format is OutputFormat.json:
        typer.echo(json.dumps(policy_as_dict(pol), indent=1, default=str))
    else:
        typer.echo(pol.to_toml(), nl=False)
    return 0
