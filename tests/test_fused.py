"""Fused sweeps: a fused batch trains each job exactly as it trains alone, jobs are
grouped by what they share, and a fused sweep records every job as its own run."""

from __future__ import annotations

import logging
import math
import signal
from dataclasses import replace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runner import engine
from runner.engine import jax_engine
from runner.engine.families import cohorts
from runner.fused import fusable_groups
from runner.jobs import execute, outcome
from runner.jobs.state import STATE
from runner.sweep import Sweep
from tests.conftest import finished_sweep, logged_model_scores, plan_job, search, train_alone
from tests.test_reliability import start, wait_for_epochs

EPOCHS = 3
TINY_JOB = ["model.units=[8]", "train.epochs=2"]

# Fused sweeps are JAX's: the whole module runs on the default backend only.

# Groups that mix activations, losses (with their own target encodings), learning rates
# and seeds; jobs of one model and target encoding share one vmapped family, each member
# computing its own activation and loss (digits: relu, tanh and elu with one-hot targets).
GROUPS = {
    "digits": [
        ("relu", "mse", 0.001, 0),
        ("tanh", "categorical_crossentropy", 0.001, 1),
        ("sigmoid", "sparse_categorical_crossentropy", 0.01, 2),
        ("elu", "categorical_crossentropy", 0.001, 0),
        ("relu", "mse", 0.01, 1),
        ("tanh", "categorical_crossentropy", 0.01, 1),
    ],
    "diabetes": [
        ("relu", "mse", 0.001, 0),
        ("tanh", "mae", 0.01, 1),
        ("sigmoid", "huber", 0.001, 0),
    ],
    "breast_cancer": [
        ("relu", "binary_crossentropy", 0.001, 0),
        ("tanh", "binary_crossentropy", 0.01, 1),
    ],
}


def _jobs(make_cfg, dataset: str, combos) -> list:
    """The planned jobs of ``combos`` on ``dataset``, untracked."""
    return [
        plan_job(
            make_cfg(
                f"dataset={dataset}",
                f"activation={activation}",
                f"loss={loss}",
                f"optimizer.learning_rate={rate}",
                f"seed={seed}",
                f"train.epochs={EPOCHS}",
                "model.units=[32,16]",
                "tracking.enabled=false",
            )
        )
        for activation, loss, rate, seed in combos
    ]


def _fused(plans, nets) -> list[engine.TrainResult]:
    members = [execute.member(p.spec, net) for p, net in zip(plans, nets, strict=True)]
    settings = execute.settings(plans[0].spec)
    return engine.train(members, plans[0].dataset, settings, programs=STATE.programs)


def _assert_same(fused, alone) -> None:
    assert fused.history.keys() == alone.history.keys()
    for name, values in alone.history.items():
        # A layer's diagnostics (its median activation, its gradient's norm) carry on the
        # rounding of the fused program's other order of sums more than the loss does: a
        # ReLU unit near its kink, a median between two close values. Up to 3e-5 seen.
        rtol = 1e-4 if "/" in name else 1e-5
        np.testing.assert_allclose(fused.history[name], values, rtol=rtol, atol=1e-6, err_msg=name)
    assert fused.test.keys() == alone.test.keys()
    for name, value in alone.test.items():
        assert fused.test[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("dataset", GROUPS)
def test_a_fused_model_trains_exactly_as_it_does_alone(make_cfg, dataset):
    plans = _jobs(make_cfg, dataset, GROUPS[dataset])
    alone = [train_alone(p) for p in plans]
    fused = _fused(plans, [execute.build(p) for p in plans])

    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)
        assert len(f.history["loss"]) == EPOCHS
    # Per-layer diagnostics are each model's own, as alone.
    assert "dead_fraction/hidden_0" in fused[0].history
    assert "saturated_fraction/hidden_0" in fused[1].history


def test_short_sweeps_families_that_differ_only_in_their_activations_train_as_one_cohort(
    make_cfg,
):
    plans = _jobs(make_cfg, "digits", GROUPS["digits"])
    members = [execute.member(p.spec, execute.build(p)) for p in plans]

    # relu, tanh and elu with one-hot targets (mse, categorical cross-entropy) in one cohort,
    # each member's activations its own (padding as the first member); sigmoid with integer
    # targets (sparse categorical cross-entropy) in its own. 5 members of 64 epochs train
    # 320 member epochs, within MIXED_WORK.
    found = cohorts(members, False, None, 64)
    assert [(c.positions, c.varied) for c in found] == [((0, 1, 3, 4, 5), True), ((2,), False)]
    assert found[0].layers == (("relu", "tanh", "elu"),) * 2
    indices = found[0].activation_indices(members)
    assert indices.tolist() == [[0, 0], [1, 1], [2, 2], [0, 0], [1, 1], [0, 0]]
    assert found[1].activation_indices(members).tolist() == [0, 0]

    # A user's own activation keeps a family of its own, and so does a conv net.
    user = "activation=tests.activations_for_tests:penalized_tanh"
    conv = ["model=cnn", "model.filters=[4]", "model.units=[8]"]
    others = [
        plan_job(make_cfg(*overrides, "tracking.enabled=false"))
        for overrides in (
            [user, "model.units=[32,16]"],
            [*conv, "activation=relu"],
            [*conv, "activation=tanh"],
        )
    ]
    others = [execute.member(p.spec, execute.build(p)) for p in others]
    found = cohorts([*members, *others], False, None, 3)
    assert [c.positions for c in found] == [(0, 1, 3, 4, 5), (2,), (6,), (7,), (8,)]

    # A longer sweep (325 member epochs), or none given: a family an activation.
    for epochs in (65, None):
        assert [(c.positions, c.varied) for c in cohorts(members, False, None, epochs)] == [
            ((0, 4), False),
            ((1, 5), False),
            ((2,), False),
            ((3,), False),
        ]


def test_members_over_the_memory_budget_train_in_batches_each_as_alone(
    make_cfg, monkeypatch, caplog
):
    plans = _jobs(make_cfg, "digits", GROUPS["digits"][:3])
    alone = [train_alone(p) for p in plans]
    member = execute.member(plans[0].spec, execute.build(plans[0]))
    spec = plans[0].spec
    each = jax_engine.bytes_per_model(member, execute.settings(spec), plans[0].dataset)
    monkeypatch.setattr(jax_engine, "CPU_BUDGET", 2 * each)
    with caplog.at_level(logging.INFO, "runner.engine"):
        fused = _fused(plans, [execute.build(p) for p in plans])

    assert "3 models exceed the memory budget of one program: training them in 2 batches" in (
        caplog.text
    )
    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)


def test_a_family_wider_than_the_cpus_widest_trains_in_cohorts_each_as_alone(make_cfg, monkeypatch):
    # One family (relu) of three members with their own losses, rates and seeds, in
    # cohorts of at most two.
    combos = [("relu", "mse", 0.001, 0), ("relu", "mse", 0.01, 1), ("relu", "mse", 0.003, 2)]
    plans = _jobs(make_cfg, "digits", combos)
    alone = [train_alone(p) for p in plans]
    found = []
    monkeypatch.setattr(jax_engine, "CPU_WIDEST", 2)
    monkeypatch.setattr(jax_engine, "cohorts", lambda *a: found.append(cohorts(*a)) or found[-1])
    fused = _fused(plans, [execute.build(p) for p in plans])

    assert [cohort.positions for cohort in found[0]] == [(0, 1), (2,)]
    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)


def test_a_group_of_512_digits_models_fits_one_program(make_cfg):
    # The fused launcher's largest group (hydra.launcher.max_group), of the models that
    # bench/sweep_scaling.py sweeps: its evaluation takes the validation and test splits'
    # rows, not a chunk's 4,096.
    plan = plan_job(make_cfg("model.units=[128,64]", "tracking.enabled=false"))
    member = execute.member(plan.spec, execute.build(plan))
    each = jax_engine.bytes_per_model(member, execute.settings(plan.spec), plan.dataset)
    assert jax_engine.fitting(jax_engine.CPU_BUDGET // each) >= 512


# Each kind of layer, in a fused group whose members differ in seed, activation, initializer
# or learning rate: (the group's overrides, each member's).
USER = "tests.activations_for_tests"
LAYER_KINDS = {
    "initializers": ([], [
        ["activation=relu", "model.kernel_initializer=auto"],
        ["activation=relu", "model.kernel_initializer=[he_uniform,glorot_normal]", "seed=1"],
        ["activation=selu", "model.kernel_initializer=lecun_normal", "seed=2"],
    ]),
    "batch norm before": (["model.normalization=batch"], [
        ["activation=relu"], ["activation=relu", "seed=1"], ["activation=tanh"],
    ]),
    "batch norm after": (["model.normalization=batch", "model.normalization_position=after"], [
        ["activation=relu"], ["activation=elu", "seed=1"],
    ]),
    "layer norm before": (["model.normalization=layer"], [
        ["activation=relu"], ["activation=relu", "seed=1"],
    ]),
    "layer norm after": (["model.normalization=layer", "model.normalization_position=after"], [
        ["activation=tanh"], ["activation=tanh", "seed=1"],
    ]),
    "dropout": (["model.dropout=0.3"], [
        ["activation=relu"], ["activation=relu", "seed=1"], ["activation=tanh", "seed=2"],
    ]),
    "alpha dropout": (
        ["model.dropout=0.1", "model.dropout_kind=alpha_dropout", "activation=selu"],
        [["model.kernel_initializer=auto"], ["model.kernel_initializer=auto", "seed=1"]],
    ),
    "user activation": ([], [
        [f"activation={USER}:penalized_tanh"],
        [f"activation={USER}:penalized_tanh", "seed=1"],
        [f"activation=[relu,{USER}:swish_beta]"],
    ]),
    "prelu": ([], [
        ["activation=prelu"], ["activation=prelu", "seed=1", "optimizer.learning_rate=0.01"],
        ["activation=[prelu,relu]"],
    ]),
    "cnn": (
        ["model=cnn", "model.filters=[4,8]", "model.units=[16]", "model.normalization=batch",
         "model.dropout=0.1"],
        [["activation=relu"], ["activation=relu", "seed=1"], ["activation=[tanh,prelu,elu]"]],
    ),
}  # fmt: skip


def _kept(plans, nets, together: bool):
    """Train the jobs' ``nets`` together or one by one; their results, and every variable
    of each trained model (weights, moving statistics, dropout seeds)."""
    members = [
        replace(execute.member(p.spec, net), keep_weights=True)
        for p, net in zip(plans, nets, strict=True)
    ]
    dataset, settings = plans[0].dataset, execute.settings(plans[0].spec)
    if together:
        results = engine.train(members, dataset, settings)
    else:
        results = [engine.train([m], dataset, settings)[0] for m in members]
    return results, [[np.asarray(v.value) for v in net.variables] for net in nets]


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_each_kind_of_layer_trains_fused_exactly_as_alone_with_its_own_state(make_cfg, kind):
    common, own = LAYER_KINDS[kind]
    base = ["model.units=[16,8]", f"train.epochs={EPOCHS}", "tracking.enabled=false"]
    plans = [plan_job(make_cfg(*base, *common, *member)) for member in own]
    alone, alone_state = _kept(plans, [execute.build(p) for p in plans], together=False)
    fused, fused_state = _kept(plans, [execute.build(p) for p in plans], together=True)

    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)
        assert f.history["loss"][-1] < f.history["loss"][0]  # it learns
    # Weights of about 0.1 agree to 1e-5 as the metrics do: Adam's steps, scaled by the
    # gradients' root mean square, pass rounding on, so 1e-5 here is absolute.
    for f, a in zip(fused_state, alone_state, strict=True):
        for fv, av in zip(f, a, strict=True):
            np.testing.assert_allclose(fv, av, rtol=1e-5, atol=1e-5)
    # The members' state is their own: two seeds, two models, two sets of statistics.
    assert not np.allclose(fused_state[0][-1], fused_state[1][-1])


def test_members_of_one_spec_share_one_model_and_each_trains_as_alone(make_cfg):
    # execute() builds one model for a fused group's members of one spec; each member draws
    # its own initial weights and dropout seeds from it (runner.model.initial_values).
    base = [
        "model.units=[16,8]", "model.normalization=batch", "model.dropout=0.1",
        f"train.epochs={EPOCHS}", "tracking.enabled=false",
    ]  # fmt: skip
    own = [["seed=0"], ["seed=1"], ["seed=2", "optimizer.learning_rate=0.01"], ["activation=tanh"]]
    plans = [plan_job(make_cfg(*base, *member)) for member in own]
    fused = execute.execute(plans, "g0")
    for metrics, plan in zip(fused, plans, strict=True):
        alone = train_alone(plan)
        expected = {k: v for k, v in alone.last.items() if k.startswith("val_")} | alone.test
        assert metrics == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert fused[0] != pytest.approx(fused[1], rel=1e-3)


def test_a_diverging_model_drops_out_and_its_siblings_train_on_unaffected(make_cfg):
    plans = _jobs(make_cfg, "digits", GROUPS["digits"][:3])
    nets = [execute.build(p) for p in plans]
    first = nets[1].layers[1].kernel
    first.assign(np.full(first.shape, np.nan, np.float32))
    fused = _fused(plans, nets)
    healthy = _fused(plans, [execute.build(p) for p in plans])

    assert fused[1].diverged_epoch == 0
    assert fused[1].test == {}
    assert len(fused[1].history["loss"]) == 1
    for i in (0, 2):
        assert fused[i].diverged_epoch is None
        # Bit for bit what the same batch computes without the diverging model.
        assert fused[i].history == healthy[i].history
        assert fused[i].test == healthy[i].test


# Stops at the second epoch: no later val_loss improves on the first by 10.
STOPS = [
    "train.early_stopping.enabled=true",
    "train.early_stopping.patience=0",
    "train.early_stopping.min_delta=10",
]


def test_a_member_that_stops_early_trains_fused_as_alone_and_its_siblings_train_on(make_cfg):
    base = ["dataset=iris", "model.units=[8]", "tracking.enabled=false"]
    restores = "train.early_stopping.restore_best=true"
    plans = [
        plan_job(make_cfg(*base, "train.epochs=4", *own))
        for own in ([], [*STOPS, "seed=1"], [*STOPS, restores, "activation=tanh"], ["seed=2"])
    ]
    alone = [train_alone(p) for p in plans]
    fused = _fused(plans, [execute.build(p) for p in plans])

    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)
    assert [len(f.history["loss"]) for f in fused] == [4, 2, 2, 4]
    assert [(f.stopped_epoch, f.best_epoch) for f in fused] == [
        (None, None),
        (1, 0),
        (1, 0),
        (None, None),
    ]
    # A stopped member's test metrics are those of its weights when it stopped (the same
    # job trained 2 epochs), or with restore_best, of its best epoch's (trained 1).
    two = train_alone(plan_job(make_cfg(*base, "train.epochs=2", "seed=1")))
    one = train_alone(plan_job(make_cfg(*base, "train.epochs=1", "activation=tanh")))
    for f, short in ((fused[1], two), (fused[2], one)):
        assert f.test == pytest.approx(short.test, rel=1e-5, abs=1e-6)


# Each schedule over 4 epochs: its overrides, and the rate it gives at the end of epoch e
# (counted from 0), from the base rate, as its formula has it.
SCHEDULES = {
    "constant": ([], lambda base, e: base),
    "cosine": (["optimizer.alpha=0.1"], lambda base, e: base * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e + 1) / 4)))),
    "step": (["optimizer.decay_epochs=2"], lambda base, e: base * 0.1 ** ((e + 1) // 2)),
    "exponential": (["optimizer.decay_rate=0.5"], lambda base, e: base * 0.5 ** ((e + 1) / 4)),
    "warmup_cosine": (["optimizer.warmup_epochs=1"], lambda base, e: base * 0.5 * (
        1 + math.cos(math.pi * e / 3))),
}  # fmt: skip


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_member_follows_its_own_schedule_from_its_own_rate_fused_as_alone(make_cfg, schedule):
    args, rate_at = SCHEDULES[schedule]
    base = ["dataset=iris", "model.units=[8]", "train.epochs=4", "tracking.enabled=false"]
    rates = (0.01, 0.003)
    plans = [
        plan_job(
            make_cfg(
                *base,
                f"optimizer.schedule={schedule}",
                *args,
                f"optimizer.learning_rate={rate}",
                f"seed={seed}",
            )
        )
        for seed, rate in enumerate(rates)
    ]
    alone = [train_alone(p) for p in plans]
    fused = _fused(plans, [execute.build(p) for p in plans])

    for f, a, rate in zip(fused, alone, rates, strict=True):
        _assert_same(f, a)
        expected = [rate_at(rate, e) for e in range(4)]
        np.testing.assert_allclose(f.history["learning_rate"], expected, rtol=1e-5, atol=1e-9)
        assert f.history["loss"][-1] < f.history["loss"][0]


# Fused groups whose members differ in clipping, Nesterov's momentum, weight decay or the
# L2 penalty: (the group's overrides, each member's).
OPTIMIZERS = {
    "adam": ([], [
        [], ["optimizer.clipnorm=0.5"], ["optimizer.clipvalue=0.01", "seed=1"],
        ["optimizer.weight_decay=0.1"], ["model.l2=0.1"],
    ]),
    "adamw": (["optimizer=adamw"], [[], ["optimizer.weight_decay=0.1", "seed=1"]]),
    "sgd": (["optimizer=sgd", "optimizer.momentum=0.9"], [
        [], ["optimizer.nesterov=true"], ["optimizer.nesterov=true", "optimizer.clipnorm=0.1"],
    ]),
}  # fmt: skip


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_members_with_their_own_clipping_and_decay_train_fused_as_alone(make_cfg, optimizer):
    common, own = OPTIMIZERS[optimizer]
    base = ["dataset=iris", "model.units=[8]", "train.epochs=3", "tracking.enabled=false"]
    cfgs = [make_cfg(*base, *common, *member) for member in own]
    assert fusable_groups(cfgs, max_group=24) == [list(range(len(own)))]
    plans = [plan_job(cfg) for cfg in cfgs]
    alone, alone_state = _kept(plans, [execute.build(p) for p in plans], together=False)
    fused, fused_state = _kept(plans, [execute.build(p) for p in plans], together=True)

    for f, a in zip(fused, alone, strict=True):
        _assert_same(f, a)
    for f, a in zip(fused_state, alone_state, strict=True):
        for fv, av in zip(f, a, strict=True):
            np.testing.assert_allclose(fv, av, rtol=1e-5, atol=1e-5)
    if optimizer == "adam":
        # Weight decay and the L2 penalty keep the first kernel smaller than plain Adam does
        # from the same initial weights.
        norms = [float(np.linalg.norm(state[0])) for state in fused_state]
        assert norms[3] < norms[0] and norms[4] < norms[0]


def test_jobs_fuse_when_only_their_own_keys_differ(make_cfg):
    base = ["model.units=[8]", "train.epochs=2"]
    cfgs = [
        make_cfg(*base, "activation=relu", "loss=mse", "seed=0"),
        make_cfg(*base, "activation=tanh", "loss=categorical_crossentropy", "seed=1"),
        make_cfg(*base, "activation=[sigmoid]", "model.kernel_initializer=he_normal"),
        make_cfg(*base, "model.output_activation=sigmoid", "resume=true"),
        make_cfg("model.units=[16]", "train.epochs=2"),
        make_cfg(*base, "optimizer=sgd"),
        make_cfg("model.units=[8]", "train.epochs=3"),
        make_cfg(*base, "dataset=iris"),
        make_cfg(*base, "train.batch_size=64"),
        make_cfg(*base, "train.mixed_precision=true"),
        make_cfg(*base, "train.mixed_precision=true"),
    ]
    rate = make_cfg(*base, "optimizer.learning_rate=0.01")
    assert fusable_groups(cfgs, max_group=24) == [[0, 1, 2, 3], [4], [5], [6], [7], [8], [9], [10]]
    assert fusable_groups(cfgs[:4], max_group=3) == [[0, 2], [1, 3]]
    assert fusable_groups([cfgs[0], rate], max_group=24) == [[0, 1]]
    stopping = make_cfg(*base, *STOPS, "train.early_stopping.restore_best=true")
    assert fusable_groups([cfgs[0], stopping], max_group=24) == [[0, 1]]
    cosine = [*base, "optimizer.schedule=cosine"]
    scheduled = [make_cfg(*cosine), make_cfg(*cosine, "optimizer.learning_rate=0.1"), cfgs[0]]
    assert fusable_groups(scheduled, max_group=24) == [[0, 1], [2]]


def test_a_key_with_more_jobs_than_a_group_is_dealt_into_groups_of_every_condition(make_cfg):
    base = ["model.units=[8]", "train.epochs=2"]
    # Hydra's order: activation, then loss, then seed.
    jobs = [
        (activation, loss, seed)
        for activation in ("relu", "tanh")
        for loss in ("mse", "categorical_crossentropy")
        for seed in range(3)
    ]
    cfgs = [make_cfg(*base, f"activation={a}", f"loss={loss}", f"seed={s}") for a, loss, s in jobs]
    groups = fusable_groups(cfgs, max_group=8)
    assert [len(group) for group in groups] == [6, 6]
    for group in groups:
        # Every condition in each group, its seeds spread over them.
        assert sorted({jobs[i][:2] for i in group}) == sorted({job[:2] for job in jobs})
        assert group == sorted(group)
    assert sorted(i for group in groups for i in group) == list(range(12))
    assert fusable_groups(cfgs, max_group=12) == [list(range(12))]


def test_each_job_of_a_fused_group_logs_its_own_trained_model(make_cfg, store, tmp_path):
    sweep = Sweep(str(tmp_path / "sweep"), "sweep")
    plans = [
        plan_job(
            make_cfg(
                "dataset=iris",
                f"activation={activation}",
                f"seed={seed}",
                "model.units=[8]",
                f"train.epochs={EPOCHS}",
                "tracking.log_model=true",
            ),
            sweep,
        )
        for activation, seed in [("relu", 0), ("tanh", 1), ("relu", 2)]
    ]
    execute.execute(plans, "g0")

    runs = search(store, "tags.role = 'job'")
    assert len(runs) == 3 and set(runs["tags.fused_group_size"]) == {"3"}
    losses = set()
    for _, row in runs.iterrows():
        scores = logged_model_scores(store, row["run_id"], plans[0].dataset)
        assert scores["test_loss"] == pytest.approx(row["metrics.test_loss"], rel=1e-5)
        assert scores["test_accuracy"] == pytest.approx(row["metrics.test_accuracy"], abs=1e-5)
        losses.add(scores["test_loss"])
    assert len(losses) == 3


def test_an_error_in_a_fused_group_fails_its_runs_and_leaves_a_finished_job_be(
    make_cfg, store, tmp_path, monkeypatch
):
    sweep = Sweep(str(tmp_path / "sweep"), "sweep")
    base = ("dataset=iris", "model.units=[8]", f"train.epochs={EPOCHS}")

    def plans(*extra):
        return [plan_job(make_cfg(*base, f"seed={s}", *extra), sweep) for s in (0, 1, 2)]

    (done,) = outcome.run_plans(plans()[:1])
    monkeypatch.setattr(engine, "train", lambda *_, **__: 1 / 0)
    # The first job finished before and is skipped; the other two fail as one group, and
    # the sweep goes on with the error logged: no exception reaches the launcher.
    assert outcome.run_plans(plans("resume=true"), "g0") == [done, None, None]

    runs = search(store, "tags.role = 'job'").set_index("params.seed")
    assert runs.loc["0", ["status", "tags.outcome"]].tolist() == ["FINISHED", "completed"]
    for seed in ("1", "2"):
        failed = runs.loc[seed, ["status", "tags.outcome", "tags.error"]].tolist()
        assert failed == ["FAILED", "failed", "ZeroDivisionError: division by zero"]
        assert runs.loc[seed, "tags.fused_group_size"] == "2"


def test_a_fused_sweep_records_every_job_as_its_own_run(cli, store, tmp_path):
    # max_group=3 deals each key's 4 jobs into two groups of 2.
    result = cli(
        "-m",
        "hydra/launcher=fused",
        "hydra.launcher.max_group=3",
        "hydra.sweep.dir=sweep",
        "dataset=iris",
        "activation=relu,tanh",
        "loss=mse,categorical_crossentropy",
        "model.units=[8],[4,4]",
        "train.epochs=2",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Launching 8 jobs: 4 fused group(s) of 2, 2, 2, 2, 0 alone" in output
    for number in range(1, 9):
        assert f"job {number}/8 " in output

    runs = search(store, "tags.role = 'job'")
    assert len(runs) == 8
    assert set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.outcome"]) == {"completed"}
    assert runs.groupby("tags.fused_group").size().tolist() == [2, 2, 2, 2]
    assert set(runs["tags.fused_group_size"]) == {"2"}
    parents = search(store, "tags.role = 'sweep'")
    assert list(parents["status"]) == ["FINISHED"]
    assert set(runs["tags.mlflow.parentRunId"]) == {parents["run_id"][0]}

    client = MlflowClient(store)
    for run_id in runs["run_id"]:
        for metric in ("loss", "val_accuracy", "grad_norm/hidden_0"):
            assert len(client.get_metric_history(run_id, metric)) == 2, metric
    assert runs["metrics.test_accuracy"].notna().all()
    # Each job keeps its own Hydra output directory and composed config.
    assert len(list((tmp_path / "sweep").glob("*/.hydra/config.yaml"))) == 8


def test_a_plain_sweep_fuses_without_a_flag(cli, store):
    result = cli("-m", "dataset=iris", "activation=relu,tanh", "seed=0,1", *TINY_JOB)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Launching 4 jobs: 1 fused group(s) of 4, 0 alone" in output
    _, jobs = finished_sweep(store, 4)
    assert set(jobs["tags.fused_group_size"]) == {"4"}


def test_sigterm_ends_every_run_of_a_fused_group_killed_with_its_metrics(tmp_path, store):
    process = start(
        tmp_path,
        store,
        "-m",
        "hydra/launcher=fused",
        "activation=relu,tanh",
        "model.units=[16]",
        # An epoch of two fused models this small takes about 20 ms.
        "train.epochs=20000",
    )
    wait_for_epochs(store, 2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "Traceback" not in output

    runs = search(store, "tags.role = 'job'")
    assert len(runs) == 2
    assert set(runs["status"]) == {"KILLED"}
    assert set(runs["tags.outcome"]) == {"interrupted"}
    assert list(search(store, "tags.role = 'sweep'")["status"]) == ["KILLED"]
    client = MlflowClient(store)
    kept = {len(client.get_metric_history(run_id, "loss")) for run_id in runs["run_id"]}
    assert len(kept) == 1 and 2 <= kept.pop() < 20000


def test_a_fused_sweep_run_again_with_resume_skips_the_jobs_it_finished(cli, store):
    sweep = [
        "-m", "hydra/launcher=fused", "hydra/sweeper=composing", "hydra.sweep.dir=sweep",
        "dataset=iris", "activation=relu,tanh", "model.units=[8]", "train.epochs=2",
    ]  # fmt: skip
    first = cli(*sweep)
    assert first.returncode == 0, first.stdout + first.stderr
    again = cli(*sweep, "resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("skipped") == 2
    runs = search(store, "tags.role = 'job'")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert list(search(store, "tags.role = 'sweep'")["status"]) == ["FINISHED"]


def _fake_mnist(folder) -> None:
    """A tiny stand-in for Keras's cached MNIST under ``folder``: 80 images, 8 per class."""
    rng = np.random.default_rng(0)
    (folder / "datasets").mkdir(parents=True)
    np.savez(
        folder / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        y_train=np.repeat(np.arange(10), 6),
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=np.repeat(np.arange(10), 2),
    )


@pytest.mark.parametrize("launcher", ["basic", "fused"])
def test_a_fused_jobs_directory_and_environment_are_a_basic_launcher_jobs(
    cli, store, tmp_path, launcher
):
    # hydra.job.env_set is in force while the job is planned (Keras's cache, where the data
    # comes from), and hydra.output_subdir=null leaves no .hydra folder.
    _fake_mnist(tmp_path / "keras")
    common = ["-m", f"hydra/launcher={launcher}", "hydra.sweep.dir=sweep", "seed=0,1"]
    result = cli(
        *common,
        "dataset=mnist",
        "model.units=[8]",
        "train.epochs=1",
        f"+hydra.job.env_set.KERAS_HOME={tmp_path / 'keras'}",
        "hydra.output_subdir=null",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _, jobs = finished_sweep(store, 2)
    assert set(jobs["params.dataset"]) == {"mnist"}
    for job in ("0", "1"):
        assert sorted(p.name for p in (tmp_path / "sweep" / job).iterdir()) == ["runner.log"]

    # hydra.job.chdir=true: a relative path is the job directory's, as Hydra documents it.
    (tmp_path / "data.csv").write_text("a,b,y\n" + "1,2,0\n3,4,1\n" * 20)
    result = cli(
        *common,
        "hydra.sweep.dir=chdir",
        "hydra.job.chdir=true",
        "dataset=csv",
        "dataset.path=data.csv",
        "dataset.target=y",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    refused = search(store, "tags.role = 'job' and attributes.status = 'FAILED'")
    errors = sorted(refused["tags.error"])
    assert errors == [
        f"UserError: dataset.path=data.csv: no such file ({tmp_path / 'chdir' / job / 'data.csv'})."
        for job in ("0", "1")
    ]
    for job in ("0", "1"):
        saved = sorted(p.name for p in (tmp_path / "chdir" / job / ".hydra").iterdir())
        assert saved == ["config.yaml", "hydra.yaml", "overrides.yaml"]
        assert "refused" in (tmp_path / "chdir" / job / "runner.log").read_text()
