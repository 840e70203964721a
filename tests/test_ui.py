"""The MLflow UI addresses the runner prints: they follow the host and port `make ui` serves
on (MLflow's default for a bad one), carry no credentials, tell how to serve a database
store instead of linking to another, and a sweep's link, opened in a real headless Chromium
against a real ``mlflow server``, shows the sweep's parent run in the UI's "Model training"
view."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from runner.tracking import ROOT, ui_url
from tests.conftest import mlflow_server, search

RUN_PAGE = "/#/experiments/1/runs/abc?workflowType=machine_learning"
# MLflow's own address for `mlflow ui`.
DEFAULT = "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "host,port,address",
    [
        (None, None, "http://127.0.0.1:5000"),
        (None, "5001", "http://127.0.0.1:5001"),
        ("localhost", "8080", "http://localhost:8080"),
        ("0.0.0.0", None, "http://127.0.0.1:5000"),
        ("::", "5001", "http://[::1]:5001"),
    ],
)
def test_a_link_to_a_sqlite_store_follows_mlflow_host_and_port(monkeypatch, host, port, address):
    for name, value in (("MLFLOW_HOST", host), ("MLFLOW_PORT", port)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ui_url("sqlite:///mlflow.db", "1", "abc") == address + RUN_PAGE
    # A tracking server serves its own UI, wherever `make ui` would.
    assert ui_url("http://tracker:5005/", "1", "abc") == "http://tracker:5005" + RUN_PAGE


@pytest.mark.parametrize(
    "host,port,address,warned",
    [
        ("my host", "abc", DEFAULT, ["MLFLOW_HOST='my host'", "MLFLOW_PORT='abc'"]),
        ("http://example.com", "5000", DEFAULT, ["MLFLOW_HOST='http://example.com'"]),
        ("[10.0.0.7]", "8080", "http://127.0.0.1:8080", ["MLFLOW_HOST='[10.0.0.7]'"]),
        ("example.com", "65536", "http://example.com:5000", ["MLFLOW_PORT='65536'"]),
        ("10.0.0.7", "0", "http://10.0.0.7:5000", ["MLFLOW_PORT='0'"]),
        # Bracketed or not, an IPv6 address; blanks around a value, which `make ui`'s shell
        # drops too (and `mlflow ui` around a port).
        ("[::1]", " 5001", "http://[::1]:5001", []),
        ("[::]", "1", "http://[::1]:1", []),
        (" fe80::1 ", "65535", "http://[fe80::1]:65535", []),
    ],
)
def test_a_bad_mlflow_host_or_port_gives_way_to_mlflows_default_with_one_warning(
    monkeypatch, caplog, host, port, address, warned
):
    monkeypatch.setattr("runner.tracking.ui._warned", set())
    monkeypatch.setenv("MLFLOW_HOST", host)
    monkeypatch.setenv("MLFLOW_PORT", port)
    links = [ui_url("sqlite:///mlflow.db", "1", "abc") for _ in range(3)]
    assert links == [address + RUN_PAGE] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.partition(" is not ")[0] for w in warnings] == warned, warnings
    assert all("the MLflow UI links use MLflow's default" in w for w in warnings)


def test_a_link_to_a_tracking_server_carries_no_credentials():
    link = ui_url("http://user:secret@h:5000/", "1", "abc")
    assert link == "http://h:5000" + RUN_PAGE
    proxied = ui_url("https://user:s%40cret@[::1]:8443/mlflow/", "2")
    assert proxied == "https://[::1]:8443/mlflow/#/experiments/2/runs?workflowType=machine_learning"


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql+psycopg://mlflow:secret@db.example:5432/mlflow",
        "mysql+pymysql://mlflow@db.example/mlflow?password=secret&charset=utf8mb4",
        "postgresql://db.example/mlflow",
    ],
)
def test_a_database_store_gets_how_to_serve_it_with_its_password_masked_not_a_link(uri):
    text = ui_url(uri, "1", "abc")
    assert "secret" not in text
    # No link alone: 127.0.0.1:5000 serves another store until this one is served there.
    assert text.startswith("serve this store first with `mlflow ui --backend-store-uri ")
    assert text.endswith(f", then open http://127.0.0.1:5000{RUN_PAGE}")
    assert ("` (its password for ***), then" in text) == ("secret" in uri)
    command = shlex.split(text.split("`")[1])
    # With the password put back, the command serves exactly that store.
    assert command[-1].replace("***", "secret") == uri


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
@pytest.mark.parametrize(
    "args,env,port",
    [([], {}, "5000"), (["PORT=5001"], {}, "5001"), ([], {"MLFLOW_PORT": "5002"}, "5002")],
)
def test_make_ui_serves_where_the_runner_links(monkeypatch, args, env, port):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    served = subprocess.run(
        ["make", "-s", "-n", "ui", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert f"--host 127.0.0.1 --port {port}\n" in served.stdout, served.stderr
    # The address the runner's links take in the environment that make gives its commands.
    code = "from runner.tracking import ui_address; print(ui_address())"
    show = f"link: ; @{sys.executable} -c '{code}'"
    link = subprocess.run(
        ["make", "-s", "--eval", show, "link", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert link.stdout == f"http://127.0.0.1:{port}\n", link.stderr


BROWSERS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome-headless-shell",
    "chromium-headless-shell",
    "headless_shell",
)
# Text that the UI's GenAI view shows in its navigation and its "Model training" view does
# not (MLflow 3.17), and the other way round. "Traces" is in both.
GENAI_ONLY = {"Sessions", "Judges", "AI Gateway"}
MODEL_TRAINING_ONLY = {"Model registry"}


class _Text(HTMLParser):
    """Every text node of a page, entities decoded, scripts and styles left out."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.nodes.append(data)


def rendered_text(browser: str, url: str, profile: Path) -> list[str]:
    """The text nodes of the page at ``url`` once headless Chromium has run its scripts:
    virtual time stands still while requests are pending, so the budget is not a wait."""
    result = subprocess.run(
        [
            browser, "--headless",
            # The page is the test's own server; Chromium's sandbox cannot start as root
            # or in most containers.
            "--no-sandbox",
            # A fresh profile: the UI keeps the view last chosen in the browser's storage.
            f"--user-data-dir={profile}",
            "--virtual-time-budget=60000", "--dump-dom", url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parser = _Text()
    parser.feed(result.stdout)
    return parser.nodes


def find_browser() -> str:
    """A Chromium or Chrome binary on PATH. Without one the UI test is skipped, saying why,
    except under CI (``CI=true``), where it fails: `.ci/run` installs Debian's Chromium, so
    a missing browser there is a fault of CI's, not a test to leave out."""
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        reason = f"no headless browser: none of {', '.join(BROWSERS)} is on PATH"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{reason}, and CI must run this test (.ci/run installs chromium)")
        pytest.skip(f"{reason} (on Debian or Ubuntu: apt-get install chromium)")
    return found


@pytest.fixture
def browser() -> str:
    """The browser that :func:`find_browser` finds."""
    return find_browser()


def test_without_a_browser_the_ui_test_fails_under_ci_and_is_skipped_saying_why_elsewhere(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no headless browser: none of chromium, "):
        find_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        find_browser()
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    monkeypatch.setenv("CI", "true")
    assert find_browser() == str(chromium)


@pytest.fixture
def ui(tmp_path: Path, store: str):
    """``mlflow server`` over the test's store on a free port, stopped at the end, even when
    the test fails."""
    with mlflow_server(store, tmp_path / "artifacts") as (uri, _):
        yield uri


@pytest.mark.slow
def test_a_sweeps_link_opens_its_parent_run_in_model_training(
    browser, cli, store, ui, tmp_path, monkeypatch
):
    # The sweep links to the port the UI serves on, as it does under `make ui PORT=...`.
    monkeypatch.setenv("MLFLOW_PORT", str(urlsplit(ui).port))
    result = cli(
        "-m", "dataset=iris", "activation=relu,tanh", "model.units=[8]", "train.epochs=1"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parent = search(store, "tags.role = 'sweep'").iloc[0]
    links = re.findall(rf"http://\S+/runs/{parent['run_id']}\S*", result.stdout + result.stderr)
    assert len(links) == 1 and links[0].startswith(f"{ui}/#/"), links

    nodes = rendered_text(browser, links[0], tmp_path / "profile")
    page = "\n".join(nodes)
    assert parent["run_id"] in page and parent["tags.mlflow.runName"] in page, page
    # The description, the sweep's comparison as Markdown, rendered: each cell of its table
    # a text of its own, each sentence's text around its `code`.
    texts = {node.strip() for node in nodes}
    for line in parent["tags.mlflow.note.content"].splitlines():
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            assert set(cells) <= texts, f"{line!r} not on the page:\n{page}"
        for part in line.split("`") if not line.startswith("|") else []:
            assert part.strip() in page, f"{part!r} not on the page:\n{page}"
    assert not GENAI_ONLY & texts, f"the GenAI view: {sorted(GENAI_ONLY & texts)} on the page"
    assert MODEL_TRAINING_ONLY <= texts, f"not the Model training view:\n{page}"


def test_the_console_says_what_serves_a_stores_ui_and_never_its_password(monkeypatch):
    from runner.tracking.store import DEFAULT_STORE, masked
    from runner.tracking.ui import ui_line

    for name in ("MLFLOW_HOST", "MLFLOW_PORT"):
        monkeypatch.delenv(name, raising=False)
    page = "http://127.0.0.1:5000" + RUN_PAGE
    assert ui_line(f"sqlite:///{DEFAULT_STORE}", "1", "abc") == (
        f"in the MLflow UI (`make ui` serves it): {page}"
    )
    assert ui_line("sqlite:////data/study.db", "1", "abc") == (
        "in the MLflow UI (`mlflow ui --backend-store-uri sqlite:////data/study.db` serves "
        f"it): {page}"
    )
    assert ui_line("http://ada:secret@tracker:5005", "1", "abc") == (
        "in the MLflow UI: http://tracker:5005" + RUN_PAGE
    )
    line = ui_line("postgresql://ada:secret@db:5432/mlflow", "1", "abc")
    assert "secret" not in line and "postgresql://ada:***@db:5432/mlflow" in line
    # A store without a password is printed as it is, its path's slashes included.
    assert masked("sqlite:////data/study.db") == "sqlite:////data/study.db"


def test_an_unreachable_database_store_fails_at_once_named_without_its_password():
    from runner.config import UserError
    from runner.tracking.store import connect

    with pytest.raises(UserError) as error:
        connect("postgresql+psycopg://ada:secret@127.0.0.1:1/mlflow")
    message = str(error.value)
    assert "secret" not in message
    assert "tracking store postgresql+psycopg://ada:***@127.0.0.1:1/mlflow cannot be reached" in (
        message
    )
