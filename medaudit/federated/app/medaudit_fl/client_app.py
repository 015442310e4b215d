"""The ClientApp a SuperNode runs: trains and audits on its own manifest only."""

from medaudit.federated._deploy import client_app as app

__all__ = ["app"]
