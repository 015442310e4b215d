"""The apps of a real deployment: what ``flwr run`` starts on a SuperLink and SuperNodes.

The Flower app folder medaudit ships (:data:`medaudit.federated.APP_DIR`) names
:data:`client_app` and :data:`server_app` as its components. Each hospital runs a
SuperNode whose node config points at its own manifest, and nothing else::

    flower-supernode --superlink LINK:PORT --node-config 'data="/data/site_a/manifest.csv"'

The ClientApp reads only that manifest. The ServerApp reads the run config
(``[tool.flwr.app.config]`` of the app's ``pyproject.toml``, overridable with ``flwr run
--run-config``), runs the federation and writes ``model.safetensors``, ``index.html``
and ``audit.json`` to ``out-dir`` on the SuperLink's machine. The centralised baseline
is left out: a real federation cannot pool the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from medaudit._errors import InvalidInputError
from medaudit.federated._settings import ClientDP, FederatedSettings, SampleDP
from medaudit.federated._sites import SiteData, prepare_site

__all__ = [
    "MSG_NO_DATA",
    "client_app",
    "deployment_report",
    "load_site_from_context",
    "server_app",
    "settings_from_run_config",
]

MSG_NO_DATA = (
    "This SuperNode has no data: start it with --node-config 'data=\"/path/to/manifest.csv\"' "
    "(its own site's manifest)."
)
MSG_SITES = "The manifest {path} holds several sites ({sites}); give each SuperNode its own."

# Flower streams its own logger to `flwr run --stream` and the SuperLink log.
_log = logging.getLogger("flwr")


@lru_cache(maxsize=4)
def _load(path: str, site: str, seed: int, test_fraction: float, sensitive: str) -> SiteData:
    from medaudit.data import load_cohort

    cohort = load_cohort(path)
    name = site
    if not name:
        if "site" in cohort.meta.columns:
            values = sorted(set(cohort.meta["site"].astype(str)))
            if len(values) > 1:
                raise InvalidInputError(MSG_SITES.format(path=path, sites=", ".join(values)))
            name = values[0]
        else:
            name = Path(path).parent.name or Path(path).stem
    sens = None if not sensitive else [s for s in sensitive.split(",") if s]
    return prepare_site(cohort, name, test_fraction=test_fraction, seed=seed, sensitive=sens)


def load_site_from_context(context: Any) -> SiteData:
    """The site of the SuperNode running this app: the manifest its node config names.

    Node config: ``data`` (path of the site's manifest, required) and ``site`` (its
    name; default the manifest's single ``site`` value, else its folder's name). Run
    config: ``seed``, ``test-fraction``, ``sensitive``.
    """
    node, run = context.node_config, context.run_config
    path = str(node.get("data", ""))
    if not path:
        raise InvalidInputError(MSG_NO_DATA)
    return _load(
        path,
        str(node.get("site", "")),
        int(run.get("seed", 0)),
        float(run.get("test-fraction", 0.2)),
        str(run.get("sensitive", "")),
    )


def _client() -> Any:
    try:
        from medaudit.federated._client import make_client_app

        return make_client_app(load_site_from_context)
    except ImportError:  # pragma: no cover - Flower missing: importing medaudit still works
        return None


def settings_from_run_config(run: Mapping[str, Any]) -> FederatedSettings:
    """The run's settings from the app's run config (``[tool.flwr.app.config]``)."""
    noise = float(run.get("client-dp-noise", 0.0))
    noise_audit = float(run.get("audit-noise", 0.0))
    sample_noise = float(run.get("sample-dp-noise", 0.0))
    size = int(run.get("image-size", 0))
    strategies = [s.strip() for s in str(run.get("strategy", "fedavg")).split(",") if s.strip()]
    return FederatedSettings(
        rounds=int(run.get("rounds", 3)),
        strategies=tuple(strategies),
        local_epochs=int(run.get("local-epochs", 1)),
        batch_size=int(run.get("batch-size", 32)),
        lr=float(run.get("lr", 1e-3)),
        arch=str(run.get("arch", "small_cnn")),
        image_size=size if size > 0 else None,
        proximal_mu=float(run.get("proximal-mu", 0.01)),
        trimmed_beta=float(run.get("trimmed-beta", 0.25)),
        krum_malicious=int(run.get("krum-malicious", 1)),
        krum_select=int(run.get("krum-select", 0)),
        min_sites=int(run.get("min-sites", 2)),
        round_timeout=float(run.get("round-timeout", 600.0)),
        connect_timeout=float(run.get("connect-timeout", 300.0)),
        on_bad_site=str(run.get("on-bad-site", "skip")),
        test_fraction=float(run.get("test-fraction", 0.2)),
        local_baseline=bool(run.get("local-baseline", True)),
        threshold=float(run.get("threshold", 0.5)),
        audit_noise=noise_audit if noise_audit > 0 else None,
        n_bootstrap=int(run.get("n-bootstrap", 1000)),
        client_dp=ClientDP(
            noise,
            float(run.get("client-dp-clip", 1.0)),
            delta=float(run.get("client-dp-delta", 1e-5)),
        )
        if noise > 0
        else None,
        sample_dp=SampleDP(
            sample_noise,
            float(run.get("sample-dp-clip", 1.0)),
            delta=float(run.get("sample-dp-delta", 1e-5)),
        )
        if sample_noise > 0
        else None,
        seed=int(run.get("seed", 0)),
    )


def deployment_report(run: Any, *, title: str) -> Any:
    """The report of a deployed run (the server saw no data: no centralised baseline)."""
    from medaudit.federated._federate import _versions
    from medaudit.federated._section import federated_section
    from medaudit.report import Policy, Report
    from medaudit.report._provenance import environment, policy_record, utc_now

    policy = Policy.default()
    described = json.dumps([dict(s.counts) for s in run.sites], sort_keys=True, default=str)
    primary = run.strategies[0] if run.strategies else None
    meta = {
        "title": title,
        "created": utc_now(),
        "seed": run.settings.seed,
        **policy_record(policy),
        "versions": _versions(),
        "timings_seconds": dict(run.timings),
        "data_hash": hashlib.sha256(described.encode()).hexdigest(),
        "cohort": {
            "name": "federation",
            "n_sites": len(run.sites),
            "n_images": sum(int(s.counts.get("n", 0)) for s in run.sites),
            "n_positive": sum(int(s.counts.get("n-positive", 0)) for s in run.sites),
        },
        "model": {k.replace("-", "_"): v for k, v in run.model_config.items()},
        "federated": {
            "engine": "deployment (SuperLink + SuperNodes)",
            "settings": run.settings.to_dict(),
            "sites": {s.name: {"included": s.included, "reason": s.reason} for s in run.sites},
            "privacy": None if not primary or not primary.privacy else primary.privacy.to_dict(),
        },
        "environment": environment(),
    }
    return Report(sections=[federated_section(run, policy=policy)], meta=meta)


def _write_outputs(run: Any, out_dir: Path) -> None:
    from medaudit.federated._federate import model_from_state
    from medaudit.models import save_checkpoint

    mc = run.model_config
    state = run.strategies[0].state if run.strategies else run.initial_state
    model = model_from_state(mc, state)
    report = deployment_report(run, title="medaudit federated run (Flower deployment)")
    if run.strategies:
        primary = run.strategies[0]
        extra: dict[str, Any] = {
            "federated": {
                "strategy": primary.name,
                "rounds": run.settings.rounds,
                "sites": [s.name for s in run.included],
            }
        }
        if primary.privacy is not None:
            extra["privacy"] = primary.privacy.to_dict()
        save_checkpoint(
            model,
            out_dir / "model.safetensors",
            arch=str(mc["arch"]),
            in_channels=int(mc["in-channels"]),
            num_classes=int(mc["num-classes"]),
            image_size=int(mc["image-size"]) or None,
            class_names=["negative", "positive"][: int(mc["num-classes"])]
            + [f"class_{i}" for i in range(2, int(mc["num-classes"]))],
            mean=list(mc["mean"]),
            std=list(mc["std"]),
            extra=extra,
        )
    report.save(out_dir)


def _server() -> Any:
    try:
        from flwr.serverapp import ServerApp
    except ImportError:  # pragma: no cover
        return None
    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        from medaudit.federated._federate import _starting_point
        from medaudit.federated._server import ServerPlan, describe_json, run_server

        run_config = context.run_config
        settings = settings_from_run_config(run_config)
        out = str(run_config.get("out-dir", ""))
        if not out:
            raise InvalidInputError("Set the run config 'out-dir' (where the report is written).")
        audit_model = str(run_config.get("model", "")) or None
        audit_only = bool(run_config.get("audit-only", False))
        init = str(run_config.get("init", "")) or None
        state, model_config, settings = _starting_point(
            init if not audit_only else None, audit_model if audit_only else None, settings
        )
        plan = ServerPlan(
            settings,
            int(run_config.get("num-sites", 2)),
            initial_state=state,
            audit_only=audit_only,
            model_config=model_config,
        )
        run = run_server(grid, plan, on_stage=lambda text: _log.info("medaudit: %s", text))
        _write_outputs(run, Path(out))
        _log.info("medaudit: finished %s; report in %s", describe_json(run), out)

    return app


#: The deployment's ClientApp (``medaudit_fl.client_app:app`` in the app folder).
client_app = _client()
#: The deployment's ServerApp (``medaudit_fl.server_app:app`` in the app folder).
server_app = _server()
