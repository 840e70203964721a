"""``python -m runner.compare`` against a real SQLite MLflow store, built run by run with
``MlflowClient``: two sweeps and one run outside them, with known metrics and outcomes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from statistics import mean, stdev

import pandas as pd
import pytest
from matplotlib.image import imread
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from runner.compare import curves, lower_is_better, main, summarize, sweep_runs
from runner.track import STATUS

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
COLUMNS = ["mean", "std", "min", "max", "n", "diverged", "failed", "interrupted", "rank"]


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
) -> None:
    """Record one job as the runner does: params, per-epoch metrics (step = epoch), the
    final metrics when it got there, the tags and the status of its outcome."""
    activation, loss, seed, outcome, accuracy = job
    tags = {"role": "job", "outcome": outcome}
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
    }
    metrics = []
    if outcome != "failed":
        # An interrupted job got through one epoch; the others through all of them.
        last = accuracy if accuracy is not None else 0.3
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
    """The comparison of ``jobs`` grouped by ``by``, worked out with the standard library:
    statistics over completed jobs, every other outcome counted."""
    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        fields = dict(zip(FIELDS, job, strict=True))
        groups.setdefault(tuple(fields[k] for k in by), []).append(fields)
    rows = []
    for group, members in groups.items():
        values = [job["value"] for job in members if job["outcome"] == "completed"]
        count = {o: sum(job["outcome"] == o for job in members) for o in STATUS}
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "mean": mean(values),
                "std": stdev(values) if len(values) > 1 else float("nan"),
                "min": min(values),
                "max": max(values),
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
    """The CSV's numbers, rank aside, are exactly those of :func:`expected` for ``jobs``."""
    want = expected(jobs, list(table.index.names)).loc[table.index]
    pd.testing.assert_frame_equal(table[COLUMNS[:-1]], want, check_dtype=False)


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
    assert [tuple(line.split()[:2]) for line in out.splitlines()[2:]] == order


def test_the_markdown_names_the_sweep_and_holds_the_same_table(latest):
    lines = (latest[0] / "comparison.md").read_text().splitlines()
    assert lines[0] == f"sweep {LATEST}: 11 runs, `test_accuracy` (higher is better)"
    assert lines[2] == (
        "| activation | loss | test_accuracy mean ± std | min | max | n | diverged | failed "
        "| interrupted | rank |"
    )
    assert lines[3] == "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert lines[4] == f"| relu | {CCE} | 0.9600 ± 0.0141 | 0.9500 | 0.9700 | 2 | 1 | 0 | 0 | 1 |"
    assert lines[7] == "| sigmoid | mse | 0.6000 | 0.6000 | 0.6000 | 1 | 0 | 1 | 0 | 4 |"
    assert len(lines) == 8


def test_the_figure_is_a_png_and_its_curves_average_the_completed_seeds(sweeps, latest):
    height, width, _ = imread(latest[0] / "comparison.png").shape
    assert width > 1000 and height > 400
    runs = sweep_runs(sweeps["uri"], LATEST_ID)
    curve = curves(sweeps["uri"], runs, ["activation", "loss"], "val_accuracy")
    # Seeds 0 and 1 completed; the diverged seed 2 (0.10) is left out.
    assert curve.loc[f"relu · {CCE}"].tolist() == pytest.approx([0.96 / 3, 0.96 * 2 / 3, 0.96])
    # The interrupted run's one epoch is not averaged in either.
    assert curve.loc[f"sigmoid · {CCE}"].tolist() == pytest.approx([0.82 / 3, 0.82 * 2 / 3, 0.82])
    assert sorted(curve.index.get_level_values(0).unique()) == [
        f"relu · {CCE}",
        "relu · mse",
        f"sigmoid · {CCE}",
        "sigmoid · mse",
    ]


def test_the_files_are_logged_to_the_sweeps_parent_only(sweeps, latest, tmp_path):
    folder, _, err = latest
    assert err.strip().endswith(f"; logged to parent run {sweeps[LATEST]}")
    client = MlflowClient(tracking_uri=sweeps["uri"])
    logged = {Path(f.path).name for f in client.list_artifacts(sweeps[LATEST], "comparison")}
    assert logged == FILES
    downloaded = client.download_artifacts(sweeps[LATEST], "comparison/comparison.csv", tmp_path)
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
        ("dead_fraction/hidden_0", False),
    ],
)
def test_lower_is_better_for_losses_errors_and_times(metric, lower):
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
