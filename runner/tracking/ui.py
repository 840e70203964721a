"""Addresses in the MLflow UI: the pages the runner links to at the end of a run or a sweep,
and the one `make ui` prints before it serves."""

from __future__ import annotations

import os

from runner.tracking.store import sqlite_path

# A UI bound to every interface is reached from this machine on the loopback one.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def ui_address() -> str:
    """Where `make ui` serves a SQLite store: ``$MLFLOW_HOST`` and ``$MLFLOW_PORT``, which
    ``mlflow ui`` itself reads and `make ui HOST=... PORT=...` sets, else MLflow's defaults
    127.0.0.1 and 5000; so a link printed here opens the UI started with the same
    variables."""
    host = os.environ.get("MLFLOW_HOST") or "127.0.0.1"
    host = LOOPBACK.get(host, host)
    if ":" in host:  # an IPv6 address, which a URL brackets
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('MLFLOW_PORT') or 5000}"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run (or of an experiment's runs) in the store ``uri``, in
    the UI's "Model training" view: a tracking server's own address, or for a file store
    the one `make ui` serves on."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui_address()
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def latest_page(uri: str) -> str:
    """The UI's runs page of the store's most recently created experiment with runs, for
    `make ui` to print before it serves; a line saying there is none yet otherwise."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return f"no runs yet in {uri}: `make run` records one"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(order_by=["creation_time DESC"])
    for experiment in experiments:
        if client.search_runs([experiment.experiment_id], max_results=1):
            return f"the latest experiment's runs: {ui_url(uri, experiment.experiment_id)}"
    return f"no runs yet in {uri}: `make run` records one"
