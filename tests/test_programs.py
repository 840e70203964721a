"""The JAX engine's compiled programs: a sweep's jobs share one across activations and
losses, and a later process reuses the traced program kept on disk; either way a model
trains exactly as with a program of its own."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from runner.jobs import execute
from tests.conftest import plan_job, train_alone
from tests.test_fused import EPOCHS, GROUPS, _assert_same, _fused, _jobs


def _train(plans, **kwargs):
    return [train_alone(p, **kwargs) for p in plans]


@pytest.fixture
def programs_dir(tmp_path, monkeypatch, process_state):
    """A cache of traced programs of the test's own; no program of this process reused."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "actlab" / "programs"


def test_a_sweeps_jobs_share_one_program_and_train_as_single_runs_do(
    make_cfg, programs_dir, process_state
):
    # Jobs that differ in activation and loss (one target encoding) run one program that
    # takes both at run time, and each trains as a single run with them compiled in.
    combos = [c for c in GROUPS["digits"] if c[1] != "sparse_categorical_crossentropy"]
    plans = _jobs(make_cfg, "digits", combos)
    single = _train(plans)
    process_state.programs.clear()
    swept = _train(plans, switching=True)

    assert len(process_state.programs) == 1
    for s, a in zip(swept, single, strict=True):
        _assert_same(s, a)


@pytest.mark.parametrize(
    "model",
    [
        ["model.normalization=batch", "model.dropout=0.2", "model.units=[16,8]"],
        ["model=cnn", "model.filters=[4]", "model.units=[8]", "model.normalization=layer"],
    ],
    ids=["batch norm and dropout", "cnn"],
)
def test_a_sweeps_jobs_of_any_model_share_one_program_and_train_as_single_runs_do(
    make_cfg, programs_dir, process_state, model
):
    plans = [
        plan_job(make_cfg(*model, f"activation={a}", "train.epochs=2", "tracking.enabled=false"))
        for a in ("relu", "tanh", "gelu")
    ]
    single = _train(plans)
    process_state.programs.clear()
    swept = _train(plans, switching=True)

    assert len(process_state.programs) == 1
    for s, a in zip(swept, single, strict=True):
        _assert_same(s, a)


def test_a_later_process_reuses_the_traced_program_with_the_same_results(
    make_cfg, programs_dir, process_state
):
    plans = _jobs(make_cfg, "diabetes", GROUPS["diabetes"][:1])
    (first,) = _train(plans)
    kept = sorted(p.name.rsplit(".", 1)[1] for p in programs_dir.iterdir())
    assert kept == ["epoch", "test"]

    written = {p: p.stat().st_mtime_ns for p in programs_dir.iterdir()}
    process_state.programs.clear()  # as in a new process: only the files remain
    (again,) = _train(plans)

    assert again.history == first.history
    assert again.test == first.test
    # Read, not traced and written again.
    assert {p: p.stat().st_mtime_ns for p in programs_dir.iterdir()} == written


def test_a_damaged_kept_program_is_traced_again(make_cfg, programs_dir, process_state):
    plans = _jobs(make_cfg, "diabetes", GROUPS["diabetes"][:1])
    (first,) = _train(plans)
    for kept in programs_dir.iterdir():
        kept.write_bytes(b"not a program")

    process_state.programs.clear()
    (again,) = _train(plans)

    assert again.history == first.history
    assert all(kept.stat().st_size > 100 for kept in programs_dir.iterdir())


def test_a_kept_program_of_other_shapes_is_traced_again(make_cfg, programs_dir, process_state):
    # A digits job's kept programs replaced by a diabetes job's: found unfit for its
    # arguments, they are traced again.
    _train(_jobs(make_cfg, "diabetes", GROUPS["diabetes"][:1]))
    kept = {p.suffix: p.read_bytes() for p in programs_dir.iterdir()}
    digits = _jobs(make_cfg, "digits", GROUPS["digits"][:1])
    (first,) = _train(digits)
    for path in programs_dir.iterdir():
        if path.read_bytes() != kept[path.suffix]:
            path.write_bytes(kept[path.suffix])

    process_state.programs.clear()
    (again,) = _train(digits)

    assert again.history == first.history
    assert again.test == first.test


def test_a_job_compiles_its_epoch_program_once(make_cfg, programs_dir, caplog):
    # The states an epoch gives back are committed to the device; the first epoch's
    # arguments must be too, or the second epoch compiles the program again and counts
    # that as training.
    import jax

    plans = _jobs(make_cfg, "iris", [("relu", "categorical_crossentropy", 0.001, 0)])
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"):
            train_alone(plans[0])
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling jit(call)" in r.getMessage()]
    # The epoch's program and the test split's, each once.
    assert len(compiled) == 2, compiled


def test_a_program_that_cannot_be_kept_leaves_no_partial_file(
    make_cfg, programs_dir, process_state, caplog
):
    plans = _jobs(make_cfg, "diabetes", GROUPS["diabetes"][:1])
    (first,) = _train(plans)
    # The kept programs' places are taken by directories: their renames fail.
    for kept in list(programs_dir.iterdir()):
        kept.unlink()
        kept.mkdir()
    process_state.programs.clear()  # as in a new process: only the files remain
    with caplog.at_level(logging.INFO, logger="runner.engine"):
        (again,) = _train(plans)

    assert again.history == first.history
    assert "program not kept for later processes" in caplog.text
    assert sorted(p.name.rsplit(".", 1)[1] for p in programs_dir.iterdir()) == ["epoch", "test"]
    assert all(p.is_dir() for p in programs_dir.iterdir())


def test_a_cache_folder_that_cannot_be_made_trains_without_keeping_programs(
    make_cfg, tmp_path, monkeypatch, process_state, caplog
):
    (tmp_path / "a-file").touch()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    plans = _jobs(make_cfg, "diabetes", GROUPS["diabetes"][:1])
    with caplog.at_level(logging.INFO, logger="runner.engine"):
        (trained,) = _train(plans)
    assert "program not kept for later processes: [Errno 20] Not a directory" in caplog.text
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    process_state.programs.clear()
    (kept,) = _train(plans)
    assert trained.history == kept.history


def test_damaged_entries_of_jaxs_cache_are_named_once_with_the_folder_to_delete(tmp_path, store):
    # JAX keeps an entry once written: a damaged one is compiled again in every process,
    # which JAX says with a warning for each.
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), MLFLOW_TRACKING_URI=store)
    job = [sys.executable, "-m", "runner", "dataset=iris", "model.units=[8]", "train.epochs=2"]

    def run() -> str:
        done = subprocess.run(job, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    run()
    folder = tmp_path / "cache" / "actlab" / "jax"
    entries = list(folder.glob("*-cache"))
    assert entries
    for entry in entries:
        entry.write_bytes(b"damaged")
    output = run()
    assert "Error reading persistent compilation cache entry" not in output
    (line,) = [line for line in output.splitlines() if "damaged entries" in line]
    assert f"JAX's compilation cache {folder} has damaged entries (" in line
    assert "jit_call" in line and line.endswith(f"until the folder is deleted (rm -r {folder})")


def test_a_cohort_padded_to_its_programs_size_trains_each_member_as_alone(
    make_cfg, programs_dir, process_state
):
    # Five members of one family run in a program traced for six, the sixth padding; nine
    # and then twelve members share one program, kept between them.
    from runner.engine.families import bucket

    sizes = [bucket(n) for n in (1, 4, 5, 7, 9, 12, 13, 17, 25, 32, 33, 65, 120, 240)]
    assert sizes == [1, 4, 6, 8, 12, 12, 16, 24, 32, 32, 40, 72, 120, 240]
    combos = [("relu", "mse", rate, seed) for rate in (0.001, 0.01) for seed in range(6)]
    plans = _jobs(make_cfg, "digits", combos)
    alone = _train(plans[:5])
    fused = _fused(plans[:5], [execute.build(p) for p in plans[:5]])
    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)

    process_state.programs.clear()
    _fused(plans[:9], [execute.build(p) for p in plans[:9]])
    _fused(plans, [execute.build(p) for p in plans])
    assert len(process_state.programs) == 1


def test_a_padded_last_batch_trains_as_the_partial_batch_alone_does(
    make_cfg, programs_dir, process_state, monkeypatch
):
    # digits' 1,077 training samples in batches of 32: 33 full batches and one of 21, which
    # the program pads to 32 with samples that weigh nothing, against the same models
    # stepping through the 21 on their own (as a program of batch-normalized models does).
    from runner.engine import program

    plans = _jobs(make_cfg, "digits", GROUPS["digits"][:4])
    assert len(plans[0].dataset.x_train) % 32 == 21
    padded = _fused(plans, [execute.build(p) for p in plans])
    assert [p.pads for p in process_state.programs.values()] == [True]

    process_state.programs.clear()
    monkeypatch.setattr(program, "pads", lambda families: False)
    alone = _fused(plans, [execute.build(p) for p in plans])
    for p, a in zip(padded, alone, strict=True):
        _assert_same(p, a)


def test_a_batch_normalized_program_steps_through_its_last_partial_batch(
    make_cfg, programs_dir, process_state
):
    plans = _jobs(make_cfg, "digits", GROUPS["digits"][:1])
    normalized = plan_job(
        make_cfg(
            "model.normalization=batch",
            "model.units=[32,16]",
            f"train.epochs={EPOCHS}",
            "tracking.enabled=false",
        )  # fmt: skip
    )
    _fused([*plans, normalized], [execute.build(p) for p in [*plans, normalized]])
    assert [p.pads for p in process_state.programs.values()] == [False]
