"""Which MLflow tracking (and registry) URI a command uses: the one rule every command shares.

An explicit --tracking-uri wins; else $MLFLOW_TRACKING_URI (what a scheduled run on a cluster
sets); else the embedded default, a SQLite file under the speechpipe home, with its artifacts
beside it. Import-free of MLflow, so that the CLI starts fast."""

from __future__ import annotations

import os
from typing import Optional

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def embedded_tracking_uri(home: str) -> str:
    """The embedded registry of a speechpipe home: SQLite, created on first push."""
    return "sqlite:///" + os.path.join(os.path.abspath(home), "mlflow", "mlflow.db")


def embedded_artifact_root(home: str) -> str:
    """Where the embedded registry keeps the models' files."""
    return os.path.join(os.path.abspath(home), "mlflow", "artifacts")


def tracking_uri_for(flag: Optional[str], home: Optional[str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the home's embedded SQLite registry.

    With no home (a pipeline compiled for a cluster, whose pods have no speechpipe home) the
    result is "" when neither the flag nor the environment names a registry."""
    if flag:
        return flag
    if os.environ.get(TRACKING_URI_ENV):
        return os.environ[TRACKING_URI_ENV]
    return embedded_tracking_uri(home) if home else ""
