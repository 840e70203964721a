"""Addresses in the MLflow UI: the pages the runner links to at the end of a run or a sweep,
and the one `make ui` prints before it serves."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
from urllib.parse import urlsplit, urlunsplit

from runner.tracking.store import DEFAULT_STORE, MASK, masked, sqlite_path

log = logging.getLogger(__name__)

# MLflow's own defaults for `mlflow ui`, used for a value of MLFLOW_HOST or MLFLOW_PORT
# that is not a host or a port.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
# A UI bound to every interface is reached from this machine on the loopback one.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}
# A DNS label; underscores too, as in the service names of Docker Compose, which browsers
# accept.
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
# The bad values of MLFLOW_HOST and MLFLOW_PORT already warned about: a process that prints
# several links says it once.
_warned: set[str] = set()


def _warn_once(name: str, value: str, allowed: str, default: object) -> None:
    """Say once per process and value that ``name=value`` is not ``allowed`` and that the
    links use ``default`` instead."""
    if f"{name}={value}" in _warned:
        return
    _warned.add(f"{name}={value}")
    log.warning(
        "%s=%r is not %s: the MLflow UI links use MLflow's default, %s. Fix it: `mlflow ui` "
        "and `make ui` read it too.",
        name,
        value,
        allowed,
        default,
    )


def url_host(value: str) -> str | None:
    """``value`` as the host of a URL: a hostname as it is, an IPv4 address, an IPv6 one
    (given bracketed or not) in brackets, every interface as the loopback one; None for
    anything else (a blank, a URL, a port)."""
    bracketed = value.startswith("[") and value.endswith("]")
    bare = value[1:-1] if bracketed else value
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        labels = value.removesuffix(".").split(".")
        # A name whose last label is a number is read by browsers as an IPv4 address.
        if len(value) > 253 or not all(LABEL.fullmatch(label) for label in labels):
            return None
        return None if labels[-1].isdigit() else value
    if bracketed and address.version == 4:
        return None
    text = LOOPBACK.get(str(address), str(address))
    # A zone of an IPv6 address is written %25 in a URL (RFC 6874).
    return f"[{text.replace('%', '%25')}]" if ":" in text else text


def ui_address() -> str:
    """Where `make ui` serves a SQLite store: ``$MLFLOW_HOST`` and ``$MLFLOW_PORT``, which
    ``mlflow ui`` itself reads and `make ui HOST=... PORT=...` sets, else MLflow's defaults
    127.0.0.1 and 5000; so a link printed here opens the UI started with the same
    variables. A value that is not a host, or a port from 1 to 65535, gives way to the
    default, with a warning naming it."""
    given = (os.environ.get("MLFLOW_HOST") or "").strip()
    host = url_host(given) if given else None
    if host is None:
        if given:
            _warn_once("MLFLOW_HOST", given, "a hostname or an IP address", DEFAULT_HOST)
        host = DEFAULT_HOST
    given = (os.environ.get("MLFLOW_PORT") or "").strip()
    port = int(given) if re.fullmatch(r"[0-9]{1,5}", given) else 0
    if not 1 <= port <= 65535:
        if given:
            _warn_once("MLFLOW_PORT", given, "a port from 1 to 65535", DEFAULT_PORT)
        port = DEFAULT_PORT
    return f"http://{host}:{port}"


def without_credentials(uri: str) -> str:
    """A tracking server's ``uri`` without the user and password before its host."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def page(experiment_id: str, run_id: str | None = None) -> str:
    """The path of a run's page (or of an experiment's runs) in the UI's "Model training"
    view."""
    runs = f"runs/{run_id}" if run_id else "runs"
    return f"/#/experiments/{experiment_id}/{runs}?workflowType=machine_learning"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run (or of an experiment's runs) in the store ``uri``: a
    tracking server's own address without its credentials, or for a SQLite store the one
    `make ui` serves on. Any other store (PostgreSQL, MySQL…) is served by no UI that the
    runner knows of: then how to serve it, its password masked, and the page that UI
    will show."""
    if uri.startswith(("http://", "https://")):
        return without_credentials(uri).rstrip("/") + page(experiment_id, run_id)
    address = ui_address() + page(experiment_id, run_id)
    if uri.startswith("sqlite:"):
        return address
    shown = masked(uri)
    password = f" (its password for {MASK})" if shown != uri else ""
    command = f"mlflow ui --backend-store-uri {shlex.quote(shown)}"
    return f"serve this store first with `{command}`{password}, then open {address}"


def latest_page(uri: str) -> str:
    """The UI's runs page of the store's most recently created experiment with runs, for
    `make ui` to print before it serves; a line saying there is none yet otherwise."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return f"no runs yet in {masked(uri)}: `make run` records one"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(order_by=["creation_time DESC"])
    for experiment in experiments:
        if client.search_runs([experiment.experiment_id], max_results=1):
            # `make ui` serves this store itself, whichever it is.
            return f"the latest experiment's runs: {ui_address()}{page(experiment.experiment_id)}"
    return f"no runs yet in {masked(uri)}: `make run` records one"


def ui_line(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where the console says a run (or an experiment's runs) is seen in the MLflow UI: the
    page, and what serves it. `make ui` serves the project's SQLite store; another SQLite
    file is served by `mlflow ui` pointed at it, a tracking server by itself."""
    url = ui_url(uri, experiment_id, run_id)
    if not uri.startswith("sqlite:"):
        return f"in the MLflow UI: {url}"
    if sqlite_path(uri) == DEFAULT_STORE:
        return f"in the MLflow UI (`make ui` serves it): {url}"
    return f"in the MLflow UI (`mlflow ui --backend-store-uri {shlex.quote(uri)}` serves it): {url}"
