"""``python -m runner.compare`` against a real SQLite MLflow store, built run by run with
``MlflowClient``: two sweeps and one run outside them, with known metrics and outcomes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from statistics import mean, stdev

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

import runner.compat
from runner.compare import distinct, main, record_sweep, summarize, sweep_runs
from runner.compare.figure import headline
from runner.compare.record import group_metrics, summary
from runner.compare.report import conclusion, format_markdown, methods, power
from runner.compare.runs import Histories
from runner.compare.table import curves, seed_values
from runner.metrics import lower_is_better
from runner.stats.intervals import Spread
from runner.stats.power import detectable, seeds_needed
from runner.tracking import STATUS, Reader

LATEST = "multirun/2026-11-27/07-51-12"
OLDER = "multirun/2026-11-26/18-00-00"
LATEST_ID = f"/home/user/actlab/{LATEST}"
OLDER_ID = f"/home/user/actlab/{OLDER}"
CCE = "categorical_crossentropy"
EPOCHS = 3
FILES = {"comparison.md", "comparison.csv", "comparison.png"}

# The latest sweep's jobs: activation, loss, seed, outcome, test_accuracy (None: not logged).
# The diverged run's 0.10 must stay out of every mean.
LATEST_JOBS = [
    ("relu", "mse", 0, "completed", 0.90),
    ("relu", "mse", 1, "completed", 0.92),
    ("relu", "mse", 2, "completed", 0.94),
    ("relu", CCE, 0, "completed", 0.95),
    ("relu", CCE, 1, "completed", 0.97),
    ("relu", CCE, 2, "diverged", 0.10),
    ("sigmoid", "mse", 0, "completed", 0.60),
    ("sigmoid", "mse", 1, "failed", None),
    ("sigmoid", CCE, 0, "completed", 0.80),
    ("sigmoid", CCE, 1, "completed", 0.84),
    ("sigmoid", CCE, 2, "interrupted", None),
]
OLDER_JOBS = [
    ("tanh", CCE, 0, "completed", 0.70),
    ("tanh", CCE, 1, "completed", 0.80),
    ("relu", CCE, 0, "completed", 0.90),
]
# A single run of the digits experiment, outside any sweep.
LONE_JOB = ("tanh", "mse", 0, "completed", 0.50)
FIELDS = ("activation", "loss", "seed", "outcome", "value")
# The columns worked out per group alone, then those measured against the best group.
COUNTED = ["mean", "std", "min", "max", "ci_low", "ci_high", "n", "diverged", "failed"]
COUNTED.append("interrupted")
COLUMNS = [
    *COUNTED,
    "diff",
    "diff_low",
    "diff_high",
    "test",
    "effect",
    "p",
    "p_holm",
    "verdict",
    "rank",
]


def grad_norm(activation: str, seed: int) -> float:
    """The last ``grad_norm/hidden_0`` of a job: relu's gradients are ten times sigmoid's."""
    return (0.5 if activation == "relu" else 0.05) * (1 + seed / 5)


def add_job(
    client: MlflowClient,
    experiment_id: str,
    job: tuple[str, str, int, str, float | None],
    dataset: str,
    parent: tuple[str, str] | None,
    start: int,
    params: dict | None = None,
    validation: float | None = None,
    tags: dict | None = None,
) -> str:
    """Record one job as the runner does: params (``params`` added to or replacing the
    usual ones), per-epoch metrics (step = epoch) whose validation accuracy climbs to
    ``validation`` (default: the test accuracy), the final metrics when it got there, the
    tags (``tags`` added) and the status of its outcome. Returns the run's id."""
    activation, loss, seed, outcome, accuracy = job
    tags = {"role": "job", "outcome": outcome, **(tags or {})}
    if parent is not None:
        tags |= {"sweep_id": parent[0], "mlflow.parentRunId": parent[1]}
    run = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{activation}-{loss}-s{seed}"
    )
    params = {
        "activation": activation,
        "loss": loss,
        "seed": seed,
        "dataset": dataset,
        "optimizer": "adam",
        "optimizer.learning_rate": 0.001,
        "model.units": "[64, 64]",
        **(params or {}),
    }
    metrics = []
    if outcome != "failed":
        # An interrupted job got through one epoch; the others through all of them.
        last = validation or (accuracy if accuracy is not None else 0.3)
        epochs = 1 if outcome == "interrupted" else EPOCHS
        for step in range(epochs):
            val_accuracy = last * (step + 1) / EPOCHS
            metrics.append(Metric("val_accuracy", val_accuracy, start, step))
            metrics.append(Metric("val_loss", 1 - val_accuracy, start, step))
            metrics.append(Metric("grad_norm/hidden_0", grad_norm(activation, seed), start, step))
    if accuracy is not None:
        metrics += [Metric("test_accuracy", accuracy, start, 0)]
        metrics += [Metric("test_loss", 1 - accuracy, start, 0)]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, status=STATUS[outcome], end_time=start + 1000)
    return run.info.run_id


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store with the latest sweep (digits), an older one (iris) recorded after it, so
    that only the start times tell which is the latest, and a lone digits run. Returns the
    store's URI and the parents' run ids."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    ids = {"uri": uri}
    for name, sweep_id, dataset, jobs, start in [
        (LATEST, LATEST_ID, "digits", LATEST_JOBS, 1_800_000_000_000),
        (OLDER, OLDER_ID, "iris", OLDER_JOBS, 1_700_000_000_000),
    ]:
        experiment = client.get_experiment_by_name(dataset)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(
                dataset, artifact_location=(root / "mlartifacts" / dataset).as_uri()
            )
        )
        parent = client.create_run(
            experiment_id,
            start_time=start,
            run_name=name,
            tags={"role": "sweep", "sweep_id": sweep_id},
        )
        ids[name] = parent.info.run_id
        for i, job in enumerate(jobs):
            add_job(client, experiment_id, job, dataset, (sweep_id, parent.info.run_id), start + i)
        client.set_terminated(parent.info.run_id, end_time=start + 100_000)
    digits = client.get_experiment_by_name("digits").experiment_id
    add_job(client, digits, LONE_JOB, "digits", None, 1_900_000_000_000)
    return ids


@pytest.fixture(scope="module")
def latest(
    sweeps: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """``main`` run once with its defaults on the store: its output folder, stdout, stderr."""
    out = tmp_path_factory.mktemp("latest")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        assert main(["--uri", sweeps["uri"], "--out", str(out)]) == 0
    return out, stdout.getvalue(), stderr.getvalue()


def compare(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``main`` in process; its exit code, stdout and stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected(jobs: list[tuple], by: list[str]) -> pd.DataFrame:
    """The comparison of ``jobs`` grouped by ``by``, worked out with the standard library
    and scipy: statistics over completed jobs, the mean's Student-t interval from 3 of them
    (within [0, 1]: these are accuracies), every other outcome counted."""
    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        fields = dict(zip(FIELDS, job, strict=True))
        groups.setdefault(tuple(fields[k] for k in by), []).append(fields)
    rows = []
    for group, members in groups.items():
        values = [job["value"] for job in members if job["outcome"] == "completed"]
        count = {o: sum(job["outcome"] == o for job in members) for o in STATUS}
        low, high = (
            scipy_stats.t.interval(0.95, len(values) - 1, mean(values), scipy_stats.sem(values))
            if len(values) >= 3
            else (float("nan"), float("nan"))
        )
        # An accuracy's mean lies in [0, 1], and so does its interval.
        low, high = max(low, 0.0), min(high, 1.0)
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "mean": mean(values),
                "std": stdev(values) if len(values) > 1 else float("nan"),
                "min": min(values),
                "max": max(values),
                "ci_low": low,
                "ci_high": high,
                "n": count["completed"],
                "diverged": count["diverged"],
                "failed": count["failed"],
                "interrupted": count["interrupted"],
            }
        )
    return pd.DataFrame(rows).set_index(by)


def read_csv(out: Path, by: list[str]) -> pd.DataFrame:
    """``comparison.csv`` indexed by its group columns, like :func:`expected`."""
    table = pd.read_csv(out / "comparison.csv")
    assert list(table.columns) == [*by, *COLUMNS]
    return table.set_index(by)


def assert_summarizes(table: pd.DataFrame, jobs: list[tuple]) -> None:
    """The CSV's numbers of each group alone are those of :func:`expected` for ``jobs``."""
    want = expected(jobs, list(table.index.names)).loc[table.index]
    pd.testing.assert_frame_equal(table[COUNTED], want, check_dtype=False)


def test_the_latest_sweep_by_the_params_that_vary(sweeps, latest):
    folder, out, _ = latest
    table = read_csv(folder, ["activation", "loss"])
    assert_summarizes(table, LATEST_JOBS)
    # The CSV holds the very numbers of the table in memory, to the last bit.
    in_memory = summarize(sweep_runs(sweeps["uri"], LATEST_ID)).set_index(["activation", "loss"])
    pd.testing.assert_frame_equal(table, in_memory, check_dtype=False, check_exact=True)
    order = [("relu", CCE), ("relu", "mse"), ("sigmoid", CCE), ("sigmoid", "mse")]
    assert table.index.tolist() == order
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table.loc[("relu", CCE), ["mean", "std", "n", "diverged"]].tolist() == pytest.approx(
        [0.96, 0.0141421356, 2, 1]
    )
    assert pd.isna(table.loc[("sigmoid", "mse"), "std"])
    assert out.splitlines()[0] == f"sweep {LATEST}: 11 runs, test_accuracy (higher is better)"
    assert "test_accuracy mean ± std" in out
    assert [tuple(line.split()[:2]) for line in out.splitlines()[2:6]] == order
    assert "95% CI" in out.splitlines()[1]
    # The best group has 2 runs: no interval, so no verdict against it either.
    assert out.splitlines()[6] == (
        f"relu · {CCE} has the best mean, 0.0400 ahead of relu · mse, but at n = 2 and 3 there "
        "is no 95% CI (n < 3) to say whether that is more than noise."
    )


def test_the_markdown_names_the_sweep_and_holds_the_same_table(latest):
    lines = (latest[0] / "comparison.md").read_text().splitlines()
    assert lines[0] == f"sweep {LATEST}: 11 runs, `test_accuracy` (higher is better)"
    assert lines[2] == (
        "| activation | loss | test_accuracy mean ± std | 95% CI | min | max | n | diverged "
        "| failed | interrupted | vs best, 95% CI | test | effect | p (Holm) | verdict | rank |"
    )
    assert lines[3] == (
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
        "| ---: | ---: | --- | ---: |"
    )
    assert lines[4] == (
        f"| relu | {CCE} | 0.9600 ± 0.0141 | n < 3 | 0.9500 | 0.9700 | 2 | 1 | 0 | 0 | — | — "
        "| — | — | best | 1 |"
    )
    # Three runs: mean 0.92, sd 0.02, ± t(0.975, 2) 4.3027 × 0.02 / √3. Its seeds are not the
    # best group's (seed 2 diverged there), so the difference is Welch's; Cohen's d is
    # −0.04 over √((0.02² + 0.0141²) / 2).
    assert lines[5] == (
        "| relu | mse | 0.9200 ± 0.0200 | [0.8703, 0.9697] | 0.9000 | 0.9400 | 3 | 0 | 0 | 0 "
        "| −0.0400 (n < 3) | Welch t | d −2.31 | — | n < 3 | 2 |"
    )
    # Paired by seeds 0 and 1: differences −0.15 and −0.13, d_z = −0.14 / 0.0141.
    assert lines[6].endswith("| −0.1400 (n < 3) | paired t | d_z −9.90 | — | n < 3 | 3 |")
    assert lines[7] == (
        "| sigmoid | mse | 0.6000 | n < 3 | 0.6000 | 0.6000 | 1 | 0 | 1 | 0 | −0.3600 (n < 3) "
        "| Welch t | — | — | n < 3 | 4 |"
    )
    assert lines[9].startswith(f"relu · {CCE} has the best mean, 0.0400 ahead of relu · mse")
    assert lines[11] == "Intervals: 95%, Student t below 10 runs, kept within [0, 1]."
    assert lines[13] == "Power: n = 2 is too few to tell any difference apart (3 at least)."
    assert len(lines) == 14


def test_the_figure_is_a_png_and_its_curves_average_the_completed_seeds(sweeps, latest):
    height, width, _ = imread(latest[0] / "comparison.png").shape
    assert width > 1000 and height > 400
    runs = sweep_runs(sweeps["uri"], LATEST_ID)
    curve = curves(Histories(sweeps["uri"]), runs, ["activation", "loss"], "val_accuracy")
    # Seeds 0 and 1 completed; the diverged seed 2 (0.10) is left out.
    relu = curve.loc[f"relu · {CCE}"]
    assert relu["mean"].tolist() == pytest.approx([0.96 / 3, 0.96 * 2 / 3, 0.96])
    # The interrupted run's one epoch is not averaged in either.
    sigmoid = curve.loc[f"sigmoid · {CCE}"]["mean"]
    assert sigmoid.tolist() == pytest.approx([0.82 / 3, 0.82 * 2 / 3, 0.82])
    # The band is the seeds' range: 0.95 and 0.97 at the last epoch.
    assert relu[["low", "high"]].iloc[-1].tolist() == pytest.approx([0.95, 0.97])
    assert sorted(curve.index.get_level_values(0).unique()) == [
        f"relu · {CCE}",
        "relu · mse",
        f"sigmoid · {CCE}",
        "sigmoid · mse",
    ]


def test_the_files_are_logged_to_the_sweeps_parent_only(sweeps, latest, tmp_path):
    folder, _, err = latest
    logged_to = re.search(rf"logged to parent run {sweeps[LATEST]}, artifacts (\S+)/", err)
    assert logged_to and logged_to[1].startswith("compare-"), err
    client = MlflowClient(tracking_uri=sweeps["uri"])
    logged = {Path(f.path).name for f in client.list_artifacts(sweeps[LATEST], logged_to[1])}
    assert logged == {*FILES, "table.json"}
    csv = f"{logged_to[1]}/comparison.csv"
    downloaded = client.download_artifacts(sweeps[LATEST], csv, tmp_path)
    assert Path(downloaded).read_text() == (folder / "comparison.csv").read_text()


@pytest.mark.parametrize("sweep", [OLDER, OLDER_ID], ids=["name", "id"])
def test_sweep_picks_a_sweep_by_name_or_id(sweeps, tmp_path, capsys, sweep):
    code, out, err = compare(
        capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), "--sweep", sweep
    )
    assert code == 0, err
    assert out.startswith(f"sweep {OLDER}: 3 runs")
    table = read_csv(tmp_path, ["activation"])
    assert table.index.tolist() == ["relu", "tanh"]
    assert table["mean"].tolist() == pytest.approx([0.90, 0.75])
    assert table["n"].tolist() == [1, 2]
    assert f"logged to parent run {sweeps[OLDER]}" in err


def test_experiment_takes_all_its_job_runs_sweep_or_not(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--experiment", "digits"]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    assert out.startswith("experiment digits: 12 runs")
    table = read_csv(tmp_path, ["activation", "loss"])
    assert_summarizes(table, [*LATEST_JOBS, LONE_JOB])
    assert "logged" not in err


def test_filter_narrows_the_sweep_and_the_grouping_follows(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--filter", "params.loss = 'mse'"]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    assert "filter params.loss = 'mse'" in out.splitlines()[0]
    table = read_csv(tmp_path, ["activation"])
    mse = [job for job in LATEST_JOBS if job[1] == "mse"]
    assert_summarizes(table, mse)


def test_by_groups_over_the_other_params(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--by", "activation"]
    assert compare(capsys, *args)[0] == 0
    table = read_csv(tmp_path, ["activation"])
    assert_summarizes(table, LATEST_JOBS)
    assert table.loc["relu", ["n", "diverged"]].tolist() == [5, 1]
    assert table.loc["sigmoid", ["n", "failed", "interrupted"]].tolist() == [3, 1, 1]


@pytest.mark.parametrize(
    "args,ranking",
    [
        # Lower is better for a loss: the same order as accuracy.
        (["--metric", "test_loss"], ["relu·cce", "relu·mse", "sigmoid·cce", "sigmoid·mse"]),
        # A diagnostic is higher-is-better unless told otherwise.
        (
            ["--metric", "grad_norm/hidden_0"],
            ["relu·mse", "relu·cce", "sigmoid·cce", "sigmoid·mse"],
        ),
        (
            ["--metric", "grad_norm/hidden_0", "--lower-is-better"],
            ["sigmoid·mse", "sigmoid·cce", "relu·cce", "relu·mse"],
        ),
        (
            ["--metric", "test_loss", "--no-lower-is-better"],
            ["sigmoid·mse", "sigmoid·cce", "relu·mse", "relu·cce"],
        ),
    ],
)
def test_metric_and_direction_set_the_ranking(sweeps, tmp_path, capsys, args, ranking):
    code, out, _ = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 0
    table = pd.read_csv(tmp_path / "comparison.csv")
    names = [
        f"{a}·{'cce' if loss == CCE else loss}"
        for a, loss in zip(table.activation, table.loss, strict=True)
    ]
    assert names == ranking
    assert table["rank"].tolist() == [1, 2, 3, 4]
    if "grad_norm/hidden_0" in args:
        # relu · mse's seeds 0, 1, 2 end at 0.5, 0.6 and 0.7.
        assert table.set_index(["activation", "loss"]).loc[
            ("relu", "mse"), "mean"
        ] == pytest.approx(0.6)
        assert "grad_norm/hidden_0 mean ± std" in out


@pytest.mark.parametrize(
    "metric,lower",
    [
        ("test_loss", True),
        ("val_rmse", True),
        ("mae", True),
        ("train_seconds", True),
        ("test_accuracy", False),
        ("grad_norm/hidden_0", False),
        ("median_activation/hidden_1", False),
        ("dead_fraction/hidden_0", True),
        ("saturated_fraction/hidden_2", True),
    ],
)
def test_lower_is_better_for_losses_errors_times_and_dead_or_saturated_units(metric, lower):
    assert lower_is_better(metric) is lower


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--sweep", "multirun/nope"],
            f"no sweep 'multirun/nope' in sqlite:///STORE; the latest: {LATEST}, {OLDER}",
        ),
        (["--metric", "nope"], f"no metric 'nope' in the runs of sweep {LATEST}; metrics: "),
        (
            ["--metric", "nope"],
            "grad_norm/hidden_0, test_accuracy, test_loss, val_accuracy, val_loss",
        ),
        (["--by", "nope"], f"no param nope in the runs of sweep {LATEST}; params: activation, "),
        (["--experiment", "nope"], "no experiment 'nope' in sqlite:///STORE; experiments: "),
        (["--filter", "params.loss = 'huber'"], "no job runs matching \"params.loss = 'huber'\""),
        (["--filter", "params.loss ="], "cannot search sqlite:///STORE for tags.role = 'job' and"),
    ],
)
def test_what_cannot_be_compared_is_one_line_and_exit_2(sweeps, tmp_path, capsys, args, message):
    code, out, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("compare: ")
    assert message.replace("sqlite:///STORE", sweeps["uri"]) in err
    assert out == ""
    assert not (tmp_path / "comparison.csv").exists()


def test_a_missing_or_empty_store_exits_2(store, tmp_path, capsys):
    code, _, err = compare(capsys, "--uri", store, "--out", str(tmp_path))
    assert code == 2
    db = tmp_path / "mlflow.db"
    assert err == f"compare: no MLflow store at {db}: run a job or a sweep first (make sweep)\n"
    MlflowClient(tracking_uri=store).search_experiments()
    capsys.readouterr()  # MLflow's own log lines as it creates the tables
    code, _, err = compare(capsys, "--uri", store, "--out", str(tmp_path))
    assert code == 2
    assert err.startswith(f"compare: no sweep in {store}: run one (make sweep)")


def test_a_corrupt_store_is_one_line_and_exit_2_and_is_left_as_it_was(tmp_path, capsys):
    junk = bytes(range(256)) * 20
    path = tmp_path / "corrupt.db"
    path.write_bytes(junk)
    uri = f"sqlite:///{path}"
    code, out, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err.startswith(f"compare: tracking store {uri} cannot be used: DatabaseError: ")
    assert "file is not a database" in err and err.count("\n") == 1
    assert path.read_bytes() == junk


@pytest.mark.parametrize("under", [False, True], ids=["file", "under a file"])
def test_an_out_that_is_a_file_is_one_line_and_exit_2(sweeps, tmp_path, capsys, under):
    path = tmp_path / "taken"
    path.write_text("mine")
    out = path / "comparison" if under else path
    code, stdout, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(out))
    assert code == 2 and stdout == ""
    what = f"cannot be made: {path} is a file" if under else "is a file"
    assert err == (
        f"compare: --out {out} {what}, not a directory. Give a directory, existing or new, "
        "for the comparison's files.\n"
    )
    assert path.read_text() == "mine"


def test_a_sweep_whose_directory_holds_quotes_and_non_ascii_is_compared(tmp_path, capsys):
    # MLflow's filters have no escapes: each id must reach the store as it is.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    artifacts = (tmp_path / "mlartifacts").as_uri()
    experiment_id = client.create_experiment("digits", artifact_location=artifacts)
    for i, sweep_id in enumerate(["/runs/it's a\\b dïr ωμέγα", '/runs/say "hi"']):
        start = 1_800_000_000_000 + i * 1000
        parent = client.create_run(
            experiment_id,
            start_time=start,
            run_name=sweep_id,
            tags={"role": "sweep", "sweep_id": sweep_id},
        )
        jobs = [("relu", "mse", seed, "completed", 0.9) for seed in range(i + 2)]
        for j, job in enumerate(jobs):
            add_job(client, experiment_id, job, "digits", (sweep_id, parent.info.run_id), start + j)
        assert len(sweep_runs(uri, sweep_id)) == len(jobs)
        code, out, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / f"out{i}"))
        assert code == 0, err
        assert out.startswith(f"sweep {sweep_id}: {len(jobs)} runs, test_accuracy")


def test_python_m_runner_compare_writes_into_comparison_under_the_cwd(sweeps, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=sweeps["uri"])
    result = subprocess.run(
        [sys.executable, "-m", "runner.compare", "--by", "loss"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == f"sweep {LATEST}: 11 runs, test_accuracy (higher is better)"
    )
    assert {p.name for p in (tmp_path / "comparison").iterdir()} == FILES
    table = pd.read_csv(tmp_path / "comparison" / "comparison.csv")
    assert table["loss"].tolist() == [CCE, "mse"]
    assert table["n"].tolist() == [4, 4]


def test_step_takes_a_per_epoch_metric_at_that_epoch(sweeps, tmp_path, capsys):
    base = ["--uri", sweeps["uri"], "--metric", "val_accuracy", "--by", "activation"]
    assert compare(capsys, *base, "--out", str(tmp_path / "last"))[0] == 0
    code, out, _ = compare(capsys, *base, "--step", "0", "--out", str(tmp_path / "first"))
    assert code == 0 and "val_accuracy at epoch 1" in out
    last = read_csv(tmp_path / "last", ["activation"])
    first = read_csv(tmp_path / "first", ["activation"])
    # The store's val_accuracy grows linearly to its last value over EPOCHS epochs.
    for activation in last.index:
        assert first.loc[activation, "mean"] == pytest.approx(last.loc[activation, "mean"] / EPOCHS)


# A learning-rate sweep on circles: activation, learning rate, then per seed 0, 1, 2 the
# last val_accuracy and the test_accuracy. Validation picks relu 0.01 and tanh 0.001; the
# test metric is planted to favour relu 0.1 and tanh 0.01, which the pick must ignore.
TUNED = "multirun/2026-11-28/09-00-00"
RATES = [
    ("relu", "0.001", [0.90, 0.91, 0.92], [0.89, 0.90, 0.90]),
    ("relu", "0.01", [0.95, 0.96, 0.94], [0.93, 0.95, 0.94]),
    ("relu", "0.1", [0.80, 0.82, 0.81], [0.99, 0.99, 0.99]),
    ("tanh", "0.001", [0.93, 0.94, 0.95], [0.92, 0.95, 0.93]),
    ("tanh", "0.01", [0.92, 0.93, 0.91], [0.99, 0.98, 0.99]),
    ("tanh", "0.1", [0.50, 0.52, 0.51], [0.50, 0.50, 0.50]),
]


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding the one sweep of :data:`RATES`, every run completed; its URI."""
    root = tmp_path_factory.mktemp("tuned")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        "circles", artifact_location=(root / "mlartifacts").as_uri()
    )
    start = 1_800_000_000_000
    parent = client.create_run(
        experiment_id,
        start_time=start,
        run_name=TUNED,
        tags={"role": "sweep", "sweep_id": f"/home/user/actlab/{TUNED}"},
    )
    for i, (activation, rate, validation, test) in enumerate(RATES):
        for seed in range(3):
            add_job(
                client,
                experiment_id,
                (activation, CCE, seed, "completed", test[seed]),
                "circles",
                (f"/home/user/actlab/{TUNED}", parent.info.run_id),
                start + 3 * i + seed,
                params={"optimizer.learning_rate": rate, "dataset.seed": 0},
                validation=validation[seed],
            )
    return uri


def test_tune_picks_each_groups_rate_on_validation_and_reports_its_test_metric(
    tuned_store, tmp_path, capsys
):
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--tune", "optimizer.learning_rate"]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"sweep {TUNED}: 6 runs, test_accuracy (higher is better), optimizer.learning_rate "
        "picked per group on validation"
    )
    table = read_csv(tmp_path, ["activation", "optimizer.learning_rate"])
    # Not relu 0.1 nor tanh 0.01, whose planted test accuracies (0.99) are the best.
    assert table.index.tolist() == [("relu", 0.01), ("tanh", 0.001)]
    assert table["mean"].tolist() == pytest.approx([0.94, 0.9333333])
    assert table["n"].tolist() == [3, 3]
    assert (
        "optimizer.learning_rate chosen per group by the best mean last-epoch val_accuracy "
        "(test metrics not consulted; 6 of 18 runs): relu 0.01 (0.9500), tanh 0.001 (0.9400)."
    ) in out.splitlines()
    # The same seeds on the same data: paired. tanh − relu per seed: −0.01, 0, −0.01.
    want = scipy_stats.ttest_rel([0.92, 0.95, 0.93], [0.93, 0.95, 0.94]).confidence_interval()
    tanh = table.loc[("tanh", 0.001)]
    assert [tanh["diff_low"], tanh["diff_high"]] == pytest.approx(list(want))
    assert (tanh["test"], tanh["verdict"], tanh["rank"]) == (
        "paired t",
        "tied with the best",
        1,
    )
    assert (
        "relu · 0.01 and tanh · 0.001 are indistinguishable at n = 3 (tanh · 0.001 − relu · 0.01 "
        "= −0.0067, 95% CI [−0.0210, +0.0077], paired t, Holm-adjusted p = 0.18)."
    ) in out.splitlines()


def test_the_planted_test_metric_would_have_picked_otherwise(tuned_store, tmp_path, capsys):
    args = [
        "--uri",
        tuned_store,
        "--out",
        str(tmp_path),
        "--by",
        "activation,optimizer.learning_rate",
    ]
    assert compare(capsys, *args)[0] == 0
    table = pd.read_csv(tmp_path / "comparison.csv")
    best = table[table["verdict"] == "best"]
    assert best[["activation", "optimizer.learning_rate"]].values.tolist() == [["relu", 0.1]]


def test_untuned_at_one_rate_says_which_is_better(tuned_store, tmp_path, capsys):
    rate = "params.optimizer.learning_rate = '0.001'"
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--filter", rate]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    table = read_csv(tmp_path, ["activation"])
    # relu − tanh per seed: −0.03, −0.05, −0.03; the interval stays below 0.
    paired = scipy_stats.ttest_rel([0.89, 0.90, 0.90], [0.92, 0.95, 0.93])
    low, high = paired.confidence_interval()
    assert table.loc["relu", ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [-0.0366667, low, high]
    )
    assert high < 0
    assert table["verdict"].tolist() == ["best", "worse than the best"]
    assert table["rank"].tolist() == [1, 2]
    assert (
        "tanh is better than relu, the next best, at n = 3 (relu − tanh = −0.0367, "
        f"95% CI [−{-low:.4f}, −{-high:.4f}], paired t, Holm-adjusted p = {paired.pvalue:.2g})."
    ) in out.splitlines()
    md = (tmp_path / "comparison.md").read_text()
    assert "| tanh | 0.9333 ± 0.0153 | [0.8954, 0.9713] |" in md


def test_a_p_value_below_the_smallest_printed_reads_p_below_not_p_equals_below():
    # Ten seeds a side, every one of b far behind a: the bootstrap's p is far below 0.0001.
    runs = pd.DataFrame(
        [
            {
                "params.activation": activation,
                "params.seed": str(seed),
                "metrics.test_accuracy": level + (seed * step) % 7 / 100,
                "tags.outcome": "completed",
            }
            for activation, level, step in [("a", 0.9, 1), ("b", 0.5, 3)]
            for seed in range(10)
        ]
    )
    sentence = conclusion(summarize(runs))
    assert "paired bootstrap, Holm-adjusted p < 0.0001)." in sentence
    assert "p = <" not in sentence


@pytest.mark.parametrize("speed", ["val_accuracy=0.62", "val_loss=0.38"])
def test_speed_counts_epochs_to_a_level_and_the_area_per_epoch(sweeps, tmp_path, capsys, speed):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--speed", speed]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    pace = pd.read_csv(tmp_path / "speed.csv").set_index(["activation", "loss"])
    # Each completed run's val_accuracy climbs linearly to its test accuracy in 3 epochs:
    # relu · mse's 0.90, 0.92, 0.94 get to 0.62 (val_loss to 0.38) at epochs 3, 3 and 2.
    # Kaplan–Meier: S = 2/3 after epoch 2, 0 after 3: the median is 3. Its log-log band at
    # epoch 2 is (2/3)^exp(±1.96 × 1.0075) = 0.054 and 0.945 (Greenwood: 1/6): [2, 3].
    relu = pace.loc[("relu", "mse")]
    assert relu[["runs", "reached", "median", "median_low", "median_high"]].tolist() == [
        3,
        3,
        3,
        2,
        3,
    ]
    # The mean height of a curve v/3, 2v/3, v is 2v/3; of the loss, 1 − 2v/3.
    area = mean(2 * v / 3 for v in (0.90, 0.92, 0.94))
    assert relu["area"] == pytest.approx(area if "accuracy" in speed else 1 - area)
    # sigmoid · mse's one completed run ends at 0.60: it never gets there.
    assert pace.loc[("sigmoid", "mse"), ["runs", "reached"]].tolist() == [1, 0]
    assert pace.loc[("relu", CCE), "median"] == 2
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| sigmoid | mse | 1 | 0/1 | never |" in markdown
    assert "| relu | mse | 3 | 3/3 | 3 [2, 3] |" in markdown
    assert "speed.csv" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tune", "nope"], "no param nope in the runs of sweep "),
        (["--tune", "activation", "--by", "activation"], "--tune activation chooses one value "),
        (
            ["--tune", "activation", "--metric", "grad_norm/hidden_0"],
            "--tune chooses on a validation metric, and grad_norm/hidden_0 has no val_ twin",
        ),
        (["--speed", "val_accuracy"], "--speed 'val_accuracy': give METRIC=THRESHOLD"),
        (["--speed", "val_rmse=0.5"], "no metric 'val_rmse' in the runs of sweep "),
        (["--power", "0"], "--power 0.0: give the difference to tell apart, above 0"),
    ],
)
def test_what_cannot_be_tuned_or_timed_is_one_line_and_exit_2(
    sweeps, tmp_path, capsys, args, message
):
    code, out, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 2
    assert err.startswith("compare: ") and err.count("\n") == 1
    assert message in err
    assert out == ""


@pytest.mark.parametrize("level", ["nan", "inf", "-inf"])
def test_a_speed_level_that_is_no_finite_number_is_refused_with_exit_2(
    sweeps, tmp_path, capsys, level
):
    # nan was taken: no run ever reaches it, and every group read "never", exit 0.
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--speed", f"val_accuracy={level}"]
    code, out, err = compare(capsys, *args)
    assert code == 2 and out == ""
    assert err == (
        f"compare: --speed 'val_accuracy={level}': give METRIC=THRESHOLD, the threshold a "
        "finite number, such as val_accuracy=0.95\n"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("step", ["99", "-1", "3"])
def test_a_step_outside_the_logged_epochs_is_refused_naming_them_and_nothing_is_written(
    sweeps, tmp_path, capsys, step
):
    # --step 99 and -1 printed a table of dashes with exit 0, and replaced the parent's
    # comparison with it.
    client = MlflowClient(tracking_uri=sweeps["uri"])
    before = [f.path for f in client.list_artifacts(sweeps[LATEST])]
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--metric", "val_accuracy"]
    code, out, err = compare(capsys, *args, "--step", step)
    assert code == 2 and out == ""
    assert err == (
        f"compare: --step {step}: the completed runs logged val_accuracy at epoch index 0 to 2 "
        "(0 is the first epoch)\n"
    )
    assert not any(tmp_path.iterdir())
    assert [f.path for f in client.list_artifacts(sweeps[LATEST])] == before


def test_pairs_all_prints_every_pair_with_holm_and_draws_their_matrix(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--by", "activation"]
    code, out, err = compare(capsys, *args, "--pairs", "all")
    assert code == 0, err
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    # Two groups, one pair: sigmoid − relu over their runs (unpaired: relu has 5 of seeds
    # 0, 1, 2 twice over), Welch's t.
    assert len(pairs) == 1
    relu = [0.90, 0.92, 0.94, 0.95, 0.97]
    sigmoid = [0.60, 0.80, 0.84]
    welch = scipy_stats.ttest_ind(sigmoid, relu, equal_var=False)
    assert pairs.loc[0, ["diff_low", "diff_high", "p"]].tolist() == pytest.approx(
        [*welch.confidence_interval(), welch.pvalue]
    )
    assert pairs.loc[0, "p_holm"] == pytest.approx(welch.pvalue)
    assert imread(tmp_path / "pairs.png").shape[1] > 500
    assert "Every pair: other − group" in out
    assert "## " not in out and "pairs.png" in err


def test_every_pair_of_three_groups_is_holm_adjusted_over_the_three(tuned_store, tmp_path, capsys):
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--filter"]
    code, _, err = compare(capsys, *args, "params.activation = 'relu'", "--pairs", "all")
    assert code == 0, err
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == 3
    raw = pairs["p"].to_numpy()
    order = raw.argsort()
    want = [raw[order[0]] * 3, max(raw[order[0]] * 3, raw[order[1]] * 2)]
    assert sorted(pairs["p_holm"])[:2] == pytest.approx(sorted(min(1, w) for w in want))
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| group | other | other − group, 95% CI | test | effect | p (Holm) |" in markdown


def test_test_wilcoxon_takes_the_signed_rank_test_and_the_rank_biserial_effect(
    tuned_store, tmp_path, capsys
):
    rate = "params.optimizer.learning_rate = '0.001'"
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--filter", rate, "--test", "wilcoxon"]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    relu = read_csv(tmp_path, ["activation"]).loc["relu"]
    # relu − tanh per seed: −0.03, −0.05, −0.03; all three one way: r = −1, exact p = 0.25.
    want = scipy_stats.wilcoxon([-0.03, -0.05, -0.03])
    assert (relu["test"], relu["p"], relu["effect"]) == ("Wilcoxon signed-rank", want.pvalue, -1)
    assert relu["verdict"] == "tied with the best"
    assert "Wilcoxon signed-rank r −1.00 0.25 tied with the best" in " ".join(out.split())


def test_each_table_ends_with_the_smallest_difference_its_seeds_tell_apart(
    tuned_store, tmp_path, capsys
):
    rate = "params.optimizer.learning_rate = '0.001'"
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--filter", rate, "--power", "0.01"]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    # The paired differences −0.03, −0.05, −0.03: sd 0.01155 at n = 3.
    spread = Spread(stdev([-0.03, -0.05, -0.03]), 3, True)
    smallest, needed = detectable(spread), seeds_needed(0.01, spread)
    assert (
        "Power: with n = 3 and the observed sd of the paired differences, 0.0115, the smallest "
        f"difference told apart 80% of the time at the 5% level is {smallest:.4f}. To tell "
        f"apart 0.0100: {needed} seeds per group."
    ) in out.splitlines()
    # At that difference a paired t-test on 3 seeds rejects 80% of the time (noncentral t
    # with 2 degrees of freedom); a hundredth needs ten seeds and more.
    critical, shift = scipy_stats.t.ppf(0.975, 2), smallest * 3**0.5 / spread.sd
    assert scipy_stats.nct.sf(critical, 2, shift) == pytest.approx(0.8, abs=1e-4)
    assert needed >= 10


def test_the_figure_shows_each_seed_of_each_group(sweeps, latest):
    runs = sweep_runs(sweeps["uri"], LATEST_ID)
    table = summarize(runs)
    values = seed_values(runs, table)
    # The completed runs only: relu · cce's seeds 0 and 1, not the diverged seed 2.
    assert sorted(values[f"relu · {CCE}"]) == [0.95, 0.97]
    assert sorted(values["relu · mse"]) == [0.90, 0.92, 0.94]
    assert "sigmoid · mse" in values and len(values["sigmoid · mse"]) == 1


@pytest.mark.parametrize("width", [6.5, 13])
def test_a_long_title_is_wrapped_within_the_figure(width):
    fig = Figure(figsize=(width, 4), layout="constrained")
    FigureCanvasAgg(fig)
    title = (
        "sweep multirun/activations_tuned_digits/2026-12-02_21-24-14-27972: 40 runs, "
        "test_accuracy (higher is better), optimizer.learning_rate picked per group on "
        "validation"
    )
    headline(fig, title)
    fig.canvas.draw()
    text = fig.get_suptitle()
    assert text.replace("\n", " ") == title
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width


def fingerprinted(client, experiment_id, parent, runs) -> None:
    """Record ``runs``: (activation, seed, outcome, value, start) with the fingerprint of
    their activation and seed, and the classification task."""
    for activation, seed, outcome, value, start in runs:
        tags = {"fingerprint": f"{activation}-{seed}", "task": "classification"}
        add_job(
            client, experiment_id, (activation, "mse", seed, outcome, value), "digits", parent,
            start, tags=tags,
        )  # fmt: skip


def new_store(root: Path, experiment: str = "digits") -> tuple[str, MlflowClient, str]:
    """An empty store with one experiment: its URI, a client and the experiment's id."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    artifacts = (root / "mlartifacts" / experiment).as_uri()
    return uri, client, client.create_experiment(experiment, artifact_location=artifacts)


def new_parent(client, experiment_id, name: str = "study", start: int = 1_800_000_000_000):
    """A sweep's parent run; (its sweep id, its run id), as add_job takes them."""
    sweep_id = f"/home/user/actlab/{name}"
    tags = {"role": "sweep", "sweep_id": sweep_id}
    run = client.create_run(experiment_id, start_time=start, run_name=name, tags=tags)
    return sweep_id, run.info.run_id


def test_duplicate_runs_of_one_fingerprint_count_once_keeping_the_latest_finished(tmp_path, capsys):
    uri, client, digits = new_store(tmp_path)
    start = 1_800_000_000_000
    fingerprinted(
        client,
        digits,
        None,
        [
            ("relu", 0, "completed", 0.90, start),
            ("relu", 1, "completed", 0.92, start + 1),
            ("relu", 2, "completed", 0.94, start + 2),
            # The same job again, later: it stands for seed 0, the earlier one is set aside.
            ("relu", 0, "completed", 0.80, start + 3),
            # A later attempt that did not finish: the finished one stays.
            ("relu", 1, "interrupted", None, start + 4),
            *[("tanh", s, "completed", v, start + 5 + s) for s, v in enumerate([0.9, 0.91, 0.9])],
        ],
    )
    out = tmp_path / "out"
    code, stdout, err = compare(capsys, "--uri", uri, "--experiment", "digits", "--out", str(out))
    assert code == 0, err
    assert stdout.splitlines()[0] == (
        "experiment digits: 6 runs, test_accuracy (higher is better), 2 repeated runs set aside "
        "(the same fingerprint)"
    )
    relu = read_csv(out, ["activation"]).loc["relu"]
    assert relu[["n", "interrupted"]].tolist() == [3, 0]
    assert relu["mean"] == pytest.approx((0.80 + 0.92 + 0.94) / 3)


def test_a_killed_run_redone_by_a_resume_counts_once_as_the_redone_run(tmp_path, capsys):
    uri, client, digits = new_store(tmp_path)
    parent = new_parent(client, digits)
    start = 1_800_000_000_000
    fingerprinted(
        client,
        digits,
        parent,
        [
            *[("relu", s, "completed", v, start + s) for s, v in enumerate([0.90, 0.92])],
            ("relu", 2, "interrupted", None, start + 2),
            *[("tanh", s, "completed", v, start + 3 + s) for s, v in enumerate([0.9, 0.91, 0.9])],
            # The resume, later, redoes the killed job.
            ("relu", 2, "completed", 0.94, start + 10),
        ],
    )
    table = summarize(distinct(sweep_runs(uri, parent[0])))
    relu = table.set_index("activation").loc["relu"]
    assert relu[["n", "interrupted"]].tolist() == [3, 0]
    out = tmp_path / "out"
    code, stdout, _ = compare(capsys, "--uri", uri, "--out", str(out))
    assert code == 0
    assert "6 runs" in stdout.splitlines()[0] and "1 repeated runs set aside" in stdout
    assert read_csv(out, ["activation"]).loc["relu", "mean"] == pytest.approx(0.92)


def test_a_sweep_over_datasets_ranks_within_each_dataset_and_never_pairs_across(tmp_path, capsys):
    root = tmp_path / "store"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    results = {
        ("iris", "relu"): [1.0, 0.9667, 0.9333],
        ("iris", "tanh"): [0.9667, 0.9333, 0.9],
        ("wine", "relu"): [0.9444, 0.9722, 0.9167],
        ("wine", "tanh"): [0.9722, 1.0, 0.9444],
    }
    start = 1_800_000_000_000
    for i, dataset in enumerate(("iris", "wine")):
        artifacts = (root / "mlartifacts" / dataset).as_uri()
        experiment = client.create_experiment(dataset, artifact_location=artifacts)
        # One parent per dataset's experiment, as the runner makes them.
        parent = new_parent(client, experiment, "datasets", start + i)
        for activation in ("relu", "tanh"):
            for seed, value in enumerate(results[dataset, activation]):
                job = (activation, CCE, seed, "completed", value)
                add_job(client, experiment, job, dataset, parent, start + 10 + seed)
    out = tmp_path / "out"
    code, stdout, err = compare(capsys, "--uri", uri, "--out", str(out))
    assert code == 0, err
    table = read_csv(out, ["activation", "dataset"]).reset_index()
    # Both datasets' best rank 1, each compared with its own dataset's best only.
    assert table[["dataset", "activation", "rank", "verdict"]].values.tolist() == [
        ["iris", "relu", 1, "best"],
        ["iris", "tanh", 2 if table.loc[1, "verdict"] == "worse than the best" else 1,
         table.loc[1, "verdict"]],
        ["wine", "tanh", 1, "best"],
        ["wine", "relu", 2 if table.loc[3, "verdict"] == "worse than the best" else 1,
         table.loc[3, "verdict"]],
    ]  # fmt: skip
    # Paired by seed within wine: −0.0278, −0.0278, −0.0277; never with iris's seeds.
    want = scipy_stats.ttest_rel(results["wine", "relu"], results["wine", "tanh"])
    wine = table.set_index(["dataset", "activation"]).loc[("wine", "relu")]
    assert wine["test"] == "paired t"
    assert [wine["diff_low"], wine["diff_high"]] == pytest.approx(list(want.confidence_interval()))
    assert "On iris: " in stdout and "On wine: " in stdout


def test_equal_accuracies_logged_with_float32_noise_share_their_rank():
    # 669/720 logged as 0.929166704 by one run, 0.929166675 by another: ranked 5 and 6.
    values = {
        "relu": [0.99, 0.985, 0.995],
        "elu": [0.95, 0.929166704, 0.96],
        "gelu": [0.96, 0.929166675, 0.95],
    }
    runs = pd.DataFrame(
        [
            {
                "params.activation": activation,
                "params.seed": str(seed),
                "metrics.test_accuracy": value,
                "tags.outcome": "completed",
            }
            for activation, results in values.items()
            for seed, value in enumerate(results)
        ]
    )
    table = summarize(runs).set_index("activation")
    assert table.loc["elu", "mean"] == table.loc["gelu", "mean"]
    assert table.loc["elu", "rank"] == table.loc["gelu", "rank"]


def test_a_classification_sweep_whose_jobs_all_failed_is_reported_as_test_accuracy(
    tmp_path, capsys
):
    uri, client, digits = new_store(tmp_path)
    parent = new_parent(client, digits)
    fingerprinted(
        client, digits, parent, [("relu", s, "failed", None, 1_800_000_000_000 + s) for s in (0, 1)]
    )
    runs = sweep_runs(uri, parent[0])
    assert summarize(runs).attrs["metric"] == "test_accuracy"
    code, out, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert out.splitlines()[0] == "sweep study: 2 runs, test_accuracy (higher is better)"
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert table[["activation", "n", "failed"]].values.tolist() == [["relu", 0, 2]]


@pytest.fixture
def study(tmp_path: Path) -> dict[str, str]:
    """A sweep of relu, tanh and sigmoid over seeds 0, 1, 2 whose end recorded its own
    comparison on the parent (:func:`record_sweep`); its URI and parent's run id."""
    uri, client, digits = new_store(tmp_path)
    parent = new_parent(client, digits)
    values = {
        "relu": [0.95, 0.96, 0.97],
        "tanh": [0.955, 0.956, 0.966],
        "sigmoid": [0.9, 0.88, 0.9],
    }
    for i, (activation, results) in enumerate(values.items()):
        for seed, value in enumerate(results):
            job = (activation, "mse", seed, "completed", value)
            add_job(client, digits, job, "digits", parent, 1_800_000_000_000 + 3 * i + seed)
    runs = sweep_runs(uri, parent[0])
    record_sweep(uri, runs, summarize(runs), "study")
    return {"uri": uri, "parent": parent[1]}


def test_the_end_of_a_sweep_gives_its_parent_metrics_per_group_a_table_and_a_description(
    study, tmp_path
):
    client = MlflowClient(tracking_uri=study["uri"])
    parent = client.get_run(study["parent"])
    metrics = parent.data.metrics
    assert metrics["relu/test_accuracy_mean"] == pytest.approx(0.96)
    assert metrics["relu/test_accuracy_n"] == 3
    low, high = scipy_stats.t.interval(0.95, 2, 0.96, scipy_stats.sem([0.95, 0.96, 0.97]))
    assert [metrics["relu/test_accuracy_low"], metrics["relu/test_accuracy_high"]] == (
        pytest.approx([low, high])
    )
    assert {k.split("/")[0] for k in metrics} == {"relu", "tanh", "sigmoid"}
    note = parent.data.tags["mlflow.note.content"].splitlines()
    assert note[0] == "sweep study: 9 runs, `test_accuracy` (higher is better)"
    assert note[2].startswith("| activation | test_accuracy mean ± std | 95% CI | n | lost |")
    assert note[4].startswith("| relu | 0.9600 ± 0.0100 | [0.9352, 0.9848] | 3 | 0 | — |")
    # The verdict sentences come last.
    assert note[-1].startswith("relu and tanh are indistinguishable at n = 3")
    files = {Path(f.path).name for f in client.list_artifacts(study["parent"], "comparison")}
    assert files == {"comparison.md", "comparison.csv", "comparison.png", "table.json"}
    logged = json.loads(parent.data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": "comparison/table.json", "type": "table"}]
    # As MLflow writes a table (its load_table searches the process's default store).
    logged_table = client.download_artifacts(study["parent"], "comparison/table.json", tmp_path)
    table = pd.read_json(logged_table, orient="split")
    assert table["activation"].tolist() == ["relu", "tanh", "sigmoid"]
    assert table["mean"].tolist() == pytest.approx([0.96, 0.959, 0.8933333])


def test_runner_compare_keeps_the_sweeps_record_and_writes_one_consistent_set_of_its_own(
    study, tmp_path, capsys
):
    client = MlflowClient(tracking_uri=study["uri"])
    note = client.get_run(study["parent"]).data.tags["mlflow.note.content"]
    out = tmp_path / "out"
    base = ["--uri", study["uri"], "--out", str(out)]
    code, _, first = compare(capsys, *base, "--speed", "val_accuracy=0.9")
    assert code == 0 and (out / "speed.csv").exists()
    code, _, second = compare(capsys, *base, "--metric", "grad_norm/hidden_0")
    assert code == 0, second
    # The second comparison left no speed.csv of the first beside its own files, here...
    assert {p.name for p in out.iterdir()} == FILES
    # ... nor on the parent, where each has a folder of its own and the sweep's is as it was.
    folders = [
        re.search(rf"logged to parent run {study['parent']}, artifacts (\S+)/", err)[1]
        for err in (first, second)
    ]
    assert folders[0].startswith("compare-") and folders[1].startswith("compare-")
    assert {f.path for f in client.list_artifacts(study["parent"])} == {"comparison", *folders}
    files = [
        {Path(f.path).name for f in client.list_artifacts(study["parent"], folder)}
        for folder in ("comparison", *folders)
    ]
    table = "table.json"
    assert files == [{*FILES, table}, {*FILES, table, "speed.csv"}, {*FILES, table}]
    parent = client.get_run(study["parent"])
    assert parent.data.tags["mlflow.note.content"] == note
    # Its metrics join the sweep's, under their own names.
    assert parent.data.metrics["relu/grad_norm/hidden_0_mean"] == pytest.approx(0.6)
    assert parent.data.metrics["relu/test_accuracy_mean"] == pytest.approx(0.96)


def test_runner_compare_describes_a_parent_whose_sweep_ended_before_it_could(tmp_path, capsys):
    uri, client, digits = new_store(tmp_path)
    parent = new_parent(client, digits)
    for seed, value in enumerate([0.9, 0.92, 0.94]):
        add_job(client, digits, ("relu", "mse", seed, "completed", value), "digits", parent, seed)
    code, _, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / "out"))
    assert code == 0 and "and as its description" in err
    note = client.get_run(parent[1]).data.tags["mlflow.note.content"]
    assert note.startswith("sweep study: 3 runs, `test_accuracy`")
    assert "| relu | 0.9200 ± 0.0200 |" in note


def test_a_large_sweeps_description_fits_mlflows_limit_and_names_the_artifact_with_every_row():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        [
            {
                "params.activation": f"act{a}",
                "params.optimizer.learning_rate": str(rate),
                "params.seed": str(seed),
                "metrics.test_accuracy": float(np.clip(rng.normal(0.9 + a / 200, 0.01), 0, 1)),
                "tags.outcome": "completed",
            }
            for a in range(30)
            for rate in (0.0003, 0.001, 0.003, 0.01)
            for seed in range(3)
        ]
    )
    table = summarize(runs)
    shown = summary(table, "sweep big: 360 runs", [methods(table), power(table)], "comparison")
    assert len(shown.note) <= 8000
    lines = shown.note.splitlines()
    rows = [line for line in lines if re.match(r"\| act\d", line)]
    assert 10 < len(rows) < 120
    # The best rows, by rank, and a line that says so and where every row is.
    best = table.sort_values("rank", kind="stable").head(len(rows))
    assert sorted(r.split(" | ")[0][2:] for r in rows) == sorted(best["activation"])
    assert (
        f"The best {len(rows)} of 120 groups, by rank; every group is in the artifact "
        "`comparison/comparison.md`."
    ) in lines
    # The verdicts still end it; the metrics cover every group.
    assert lines[-1] == conclusion(table)
    assert len(shown.metrics) == 4 * 120


def test_the_parents_description_stays_within_8000_characters_and_mlflow_warns_of_no_cut(
    tmp_path, caplog
):
    uri, client, digits = new_store(tmp_path)
    parent = new_parent(client, digits)
    start = 1_800_000_000_000
    # 40 groups, each a list of activations, one per layer: a table longer than MLflow keeps.
    for a in range(40):
        for seed in range(2):
            value = 0.9 + (a % 7) / 100 + (a * 7 + seed * 3) % 11 / 1000
            layers = ",".join(["relu", "tanh", "sigmoid", "elu", "gelu", "selu"][a % 6 :] * 6)
            job = (f"{layers},{a:02d}", CCE, seed, "completed", value)
            add_job(client, digits, job, "digits", parent, start + 2 * a + seed)
    runs = sweep_runs(uri, parent[0])
    with caplog.at_level("WARNING"):
        record_sweep(uri, runs, summarize(runs), "study")
    note = client.get_run(parent[1]).data.tags["mlflow.note.content"]
    assert 7000 < len(note) <= 8000
    assert "truncated" not in caplog.text
    assert "every group is in the artifact `comparison/comparison.md`" in note


def test_the_worked_example_of_the_statistics_page_is_what_compare_prints():
    # Correct samples of 360 per seed, as docs/statistics.md gives them.
    counts = {
        "tanh": [350, 347, 347, 352, 350, 349, 347, 347, 349, 347],
        "relu": [349, 347, 346, 345, 346, 350, 346, 346, 343, 348],
        "linear": [331, 331, 339, 334, 340, 337, 342, 343, 331, 335],
        "sigmoid": [326, 315, 319, 331, 324, 329, 328, 321, 333, 324],
    }
    runs = pd.DataFrame(
        [
            {
                "params.activation": activation,
                "params.seed": str(seed),
                # As Keras computes it and MLflow keeps it: in float32.
                "metrics.test_accuracy": float(np.float32(count / 360)),
                "tags.outcome": "completed",
            }
            for activation, samples in counts.items()
            for seed, count in enumerate(samples)
        ]
    )
    table = summarize(runs)
    printed = "\n\n".join(
        [format_markdown(table).rstrip(), conclusion(table), methods(table), power(table)]
    )
    page = (Path(__file__).parents[1] / "docs" / "statistics.md").read_text()
    start, end = "checks that this is what compare prints -->\n\n", "\n\n<!-- end of the worked"
    example = page.split(start, 1)[1].split(end, 1)[0]
    assert example == printed, f"docs/statistics.md's example is now:\n\n{printed}"
    assert "To tell apart 0.0050: 51 seeds per group." in power(table, 0.005)


def test_histories_read_in_bulk_are_those_read_run_by_run_as_on_an_mlflow_not_known(
    sweeps, monkeypatch
):
    reader = Reader(sweeps["uri"])
    runs = sweep_runs(sweeps["uri"], LATEST_ID)["run_id"].tolist()
    one_by_one = {run_id: reader.history(run_id, "val_accuracy") for run_id in runs}
    assert reader.histories(runs, "val_accuracy") == one_by_one
    # Three epochs of each run that did not fail, one of the interrupted one, none of the
    # failed one.
    assert sum(map(len, one_by_one.values())) == 3 * 9 + 1
    # On an MLflow the bulk read was not written for: a warning, and the same histories.
    monkeypatch.setattr(runner.compat, "installed", lambda package: "99.0")
    with pytest.warns(UserWarning, match="mlflow 99.0 is not one of the versions reading"):
        assert reader.histories(runs, "val_accuracy") == one_by_one


def test_each_groups_metric_names_are_ones_mlflow_takes_and_two_groups_never_share_one(tmp_path):
    runs = pd.DataFrame(
        [
            {
                "params.model.units": units,
                "params.activation": activation,
                "params.seed": str(seed),
                "metrics.test_accuracy": 0.9 + seed / 100,
                "tags.outcome": "completed",
            }
            for units, activation in [
                ("[64, 64]", "relu,tanh"),
                ("[64, 64]", "relu;tanh"),
                ("[128]", "relu"),
            ]
            for seed in range(3)
        ]
    )
    table = summarize(runs, ["activation", "model.units"])
    metrics = group_metrics(table, "test_accuracy")
    assert len(metrics) == 3 * 4
    assert metrics["relu-128/test_accuracy_mean"] == pytest.approx(0.91)
    # "relu,tanh" and "relu;tanh" would both be relu_tanh: the later row gets its number.
    second = 1 + table.index[table["activation"].isin(["relu,tanh", "relu;tanh"])][1]
    assert {"relu_tanh-64_64/test_accuracy_n", f"relu_tanh-64_64-{second}/test_accuracy_n"} <= set(
        metrics
    )
    # The store takes every name as it is.
    uri, client, digits = new_store(tmp_path)
    run = client.create_run(digits).info.run_id
    client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    assert client.get_run(run).data.metrics == pytest.approx(metrics)


def test_a_resumed_sweep_is_not_split_by_what_does_not_change_training():
    # A sweep resumed into its directory: its redone runs differ from the first attempt's
    # in resume, and runs may differ in threads, objective or store, none of which changes
    # what was trained.
    from runner.compare.table import varying_params

    runs = pd.DataFrame(
        {
            "params.activation": ["relu", "relu", "tanh", "tanh"],
            "params.seed": ["0", "1", "0", "1"],
            "params.resume": ["False", "True", "False", "True"],
            "params.train.threads": ["None", "1", "None", "1"],
            "params.objective": ["None", "val_loss", "None", "val_loss"],
            "params.tracking.uri": ["a", "b", "a", "b"],
            "params.tracking.log_model": ["False", "True", "False", "True"],
        }
    )
    assert varying_params(runs) == ["activation"]
