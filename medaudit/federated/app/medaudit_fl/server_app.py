"""The ServerApp the SuperLink runs: aggregates, audits and writes the report."""

from medaudit.federated._deploy import server_app as app

__all__ = ["app"]
