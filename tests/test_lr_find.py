"""``python -m runner.lr_find``: the learning-rate range test per configuration, its
suggested rate, its figure and its MLflow runs; bad input refused before any run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runner.lr_find import range_test
from tests.conftest import backend_args, plan_job, search


def lr_find(tmp_path: Path, store: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m runner.lr_find ARGS`` in the test's directory, into the test's store."""
    return subprocess.run(
        [sys.executable, "-m", "runner.lr_find", *args, *backend_args()],
        cwd=tmp_path,
        env=dict(os.environ, MLFLOW_TRACKING_URI=store),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    tried = range_test.rates(1e-6, 1.0, 300)
    x = np.log10(tried)
    # Falls fastest at 1e-3, bottoms out near 1e-1, then blows up.
    loss = 2 - 1.5 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -1, 20 * (x + 1) ** 2, 0)
    suggested, minimum = range_test.suggest(tried, loss)
    assert suggested == pytest.approx(1e-3, rel=0.1)
    assert minimum == pytest.approx(0.1, rel=0.3)


def test_a_minimum_too_early_for_a_slope_suggests_a_tenth_of_its_rate():
    tried = range_test.rates(1e-6, 1.0, 100)
    suggested, minimum = range_test.suggest(tried, np.linspace(1, 5, 100))
    assert (minimum, suggested) == (pytest.approx(1e-6), pytest.approx(1e-7))


def test_each_pass_of_the_batches_takes_every_row_once():
    found = range_test.batches(10, 3, 7, seed=0)
    assert [len(rows) for rows in found] == [3] * 7
    first_pass = np.concatenate(found[:3])
    assert len(set(first_pass.tolist())) == 9
    assert not np.array_equal(found[0], found[3])


def test_the_range_test_reads_the_training_split_only(make_cfg, process_state):
    from runner.lr_find.find import curve_of

    job = plan_job(make_cfg("dataset=iris", "tracking.enabled=false"))
    tried = range_test.rates(1e-4, 1.0, 30)
    before = curve_of(job, tried)
    nothing = np.full_like(job.dataset.x_val, np.nan)
    unseen = dataclasses.replace(
        job.dataset, x_val=nothing, x_test=np.full_like(job.dataset.x_test, np.nan)
    )
    after = curve_of(dataclasses.replace(job, dataset=unseen), tried)
    np.testing.assert_array_equal(before.losses, after.losses)
    assert np.isfinite(before.losses).all() and len(before.losses) > 10
    assert before.losses[:5].mean() > before.losses.min()


def test_each_configuration_is_printed_drawn_and_recorded_as_one_run(tmp_path, store):
    result = lr_find(
        tmp_path, store, "dataset=iris", "activation=relu,tanh", "--steps", "40", "--min-lr",
        "1e-4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["configuration", "suggested", "(minimum", "/", "10)", "steps"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {
        "relu-categorical_crossentropy-iris-s0",
        "tanh-categorical_crossentropy-iris-s0",
    }
    for row in rows.values():
        assert 1e-4 <= float(row[1]) <= 1.0
    assert (tmp_path / "lr_find" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = search(store)
    assert sorted(runs["params.activation"]) == ["relu", "tanh"]
    assert set(runs["tags.role"]) == {"lr_find"} and set(runs["status"]) == {"FINISHED"}
    for _, run in runs.iterrows():
        rates = [
            m.value for m in MlflowClient(store).get_metric_history(run.run_id, "learning_rate")
        ]
        assert rates[0] == pytest.approx(1e-4)
        assert np.allclose(np.diff(np.log(rates)), np.log(1e4) / 39)
        suggested = rows[run["params.activation"] + "-categorical_crossentropy-iris-s0"][1]
        assert run["metrics.suggested_learning_rate"] == pytest.approx(float(suggested), rel=1e-2)
        assert "lr_find.png" in {a.path for a in MlflowClient(store).list_artifacts(run.run_id)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "5"], "--steps 5 is not allowed: give 10 or more steps."),
        (["--min-lr", "1", "--max-lr", "0.1"], "0 < min-lr < max-lr"),
        (["activation=relu,nosuch"], "nosuch"),
        (["train.batch_size=abc"], "train.batch_size"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_any_run(tmp_path, store, args, message):
    result = lr_find(tmp_path, store, "dataset=iris", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("lr_find: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    mlflow.set_tracking_uri(store)
    assert not Path(store.removeprefix("sqlite:///")).exists() or search(store).empty


@pytest.mark.parametrize("layer", ["model.dropout=0.2", "model.l2=0.05"])
def test_the_compiled_steps_on_jax_equal_keras_train_on_batch(
    make_cfg, process_state, backend, layer
):
    if backend != "jax":
        pytest.skip("the compiled steps are JAX's")
    from runner.data import encode_targets
    from runner.engine.common import make_optimizer
    from runner.jobs.execute import build
    from runner.lr_find.jax_steps import jax_losses

    job = plan_job(make_cfg("dataset=iris", layer, "tracking.enabled=false"))
    tried = range_test.rates(1e-4, 1.0, 40)
    y = encode_targets(job.dataset.y_train, job.spec.model.head.encoding, job.dataset.classes)
    rows = range_test.batches(len(y), 16, len(tried), seed=0)
    found = []
    for way in (range_test.keras_losses, None):
        net = build(job)
        net.compile(optimizer=make_optimizer(job.spec.optimizer, 1e-4), loss=job.spec.loss)
        if way is None:
            found.append(jax_losses(net, job.spec.loss, job.dataset.x_train, y, tried, rows))
        else:
            found.append(way(net, job.dataset.x_train, y, tried, rows))
    np.testing.assert_allclose(found[1], found[0], rtol=1e-4)
    # It trained: the loss fell below its start before the largest rates blew it up.
    assert found[0].min() < 0.5 * found[0][:5].mean() and found[0][-1] > found[0].min()


def test_options_and_overrides_mix_in_any_order():
    from runner.lr_find.cli import parse_args

    args = parse_args(["activation=relu,tanh", "--steps", "50", "dataset=iris", "--out", "x"])
    assert (args.overrides, args.steps, args.out) == (
        ["activation=relu,tanh", "dataset=iris"],
        50,
        "x",
    )
