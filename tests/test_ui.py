"""The MLflow UI addresses the runner prints: they follow the host and port `make ui` serves
on, and a sweep's link, opened in a real headless Chromium against a real ``mlflow server``,
shows the sweep's parent run in the UI's "Model training" view."""

from __future__ import annotations

import re
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


@pytest.fixture
def browser() -> str:
    """A Chromium or Chrome binary on PATH; the test is skipped without one."""
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(f"no headless browser: none of {', '.join(BROWSERS)} is on PATH")
    return found


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
