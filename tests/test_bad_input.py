"""Bad input never crashes: every config key with a wrong type, an out-of-range value or a
wrong name gets a clean error naming the key and the value, and random overrides thrown at
the config parser and the checks give either a valid config or a clean error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from runner import data, model
from runner.checks import check_group_overrides, validate_names, validate_values
from runner.config import UserError
from runner.jobs.plan import check_monitor, check_objective
from runner.jobs.spec import DataShape, data_of, model_spec, resolved_loss
from tests.conftest import CONF, running, search

CLEAN = (UserError, HydraException, OmegaConfBaseException)


def check(*overrides: str) -> None:
    """Everything the runner checks before a run exists, except the tracking store."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    validate_values(cfg)
    validate_names(cfg)
    dataset = data.load(data_of(cfg))
    loss = resolved_loss(cfg.loss, dataset.task)
    head = model.output_head(loss, cfg.model.output_activation, dataset.task, dataset.classes)
    shape = DataShape(
        dataset.name, dataset.task, dataset.classes, dataset.features, dataset.image_shape
    )
    model_spec(cfg, head, shape)
    check_objective(None if cfg.objective is None else cfg.objective.value, dataset.task)
    stopping = cfg.train.early_stopping
    check_monitor(stopping.monitor.value if stopping.enabled else None, dataset.task)


CASES = [
    # (overrides, words the message must contain: the key, the value, what is allowed)
    # wrong types, caught by the schema while Hydra composes
    (["train.epochs=abc"], ["train.epochs", "abc", "Integer"]),
    (["train.batch_size=1.5"], ["train.batch_size", "1.5", "Integer"]),
    (["train.steps_per_execution=[1]"], ["train.steps_per_execution", "Integer"]),
    (["seed=x"], ["seed", "'x'", "Integer"]),
    (["device=tpu"], ["device", "tpu", "auto, cpu, gpu"]),
    (["model.units=abc"], ["model.units", "abc"]),
    (["model.units=[a,b]"], ["model.units", "'a'", "Integer"]),
    (["optimizer.learning_rate=fast"], ["optimizer.learning_rate", "fast", "Float"]),
    (["optimizer.momentum=high"], ["optimizer.momentum", "high", "Float"]),
    (["diagnostics.enabled=maybe"], ["diagnostics.enabled", "maybe", "bool"]),
    (["resume=perhaps"], ["resume", "perhaps", "bool"]),
    (["dataset.scale=log"], ["dataset.scale", "log", "standard, minmax, none"]),
    (["dataset.task=ranking"], ["dataset.task", "ranking", "auto, classification, regression"]),
    (["dataset.test_size=big"], ["dataset.test_size", "big", "Float"]),
    (["dataset.dropna=sometimes"], ["dataset.dropna", "sometimes", "bool"]),
    # wrong names: groups, keys
    (["loss=foo"], ["loss/foo", "categorical_crossentropy", "mse"]),
    (["dataset=foo"], ["dataset/foo", "digits", "circles"]),
    (["optimizer=foo"], ["optimizer/foo", "adam", "sgd"]),
    (["train.epoch=3"], ["train.epoch", "epoch"]),
    (["model.layers=3"], ["model.layers", "layers"]),
    (["activation=foo"], ["activation=foo", "relu", "sigmoid", "tanh"]),
    (["activation=[relu,bar]", "model.units=[4,4]"], ["activation=bar", "relu"]),
    (["model.output_activation=bar"], ["model.output_activation=bar", "softmax"]),
    (["model.kernel_initializer=baz"], ["model.kernel_initializer=baz", "glorot_uniform"]),
    (["model=resnet"], ["model/resnet", "cnn", "mlp"]),
    (["model.normalization=group"], ["model.normalization", "group", "none, batch, layer"]),
    (["model.normalization_position=inside"], ["model.normalization_position", "before, after"]),
    (["model.dropout_kind=spatial"], ["model.dropout_kind", "spatial", "dropout, alpha_dropout"]),
    (["model.dropout=high"], ["model.dropout", "high", "Float"]),
    (["model.kernel_initializer=[he_normal,nope]"], ["model.kernel_initializer=nope", "auto"]),
    (["model.output_activation=prelu"], ["model.output_activation=prelu", "softmax", "auto"]),
    (["activation=nosuchmodule:fn"], ["activation=nosuchmodule:fn", "cannot import", "PYTHONPATH"]),
    (
        ["activation=tests.activations_for_tests:nothing"],
        ["has no function nothing", "keras.ops"],
    ),
    (
        ["activation=tests.activations_for_tests:numpy_relu"],
        ["activation=tests.activations_for_tests:numpy_relu", "Write it with keras.ops"],
    ),
    (
        ["activation=tests.activations_for_tests:flattening"],
        ["flattening must return a tensor of its input's shape"],
    ),
    # what a model is made of
    (
        ["model=cnn", "dataset=iris"],
        ["model=cnn needs images", "dataset=iris is 4 features", "mnist5k"],
    ),
    (["model.filters=[8]"], ["model.filters is set but model=mlp", "model=cnn"]),
    (["model.kernel_size=5"], ["model.kernel_size is set but model=mlp", "model=cnn"]),
    (["model=cnn", "model.filters=[]"], ["model.filters=[] is not allowed with model=cnn"]),
    (["model=cnn", "model.filters=[8,0]"], ["model.filters=0", "positive"]),
    (["model=cnn", "model.kernel_size=0"], ["model.kernel_size=0", "positive"]),
    (["model.dropout=1.0"], ["model.dropout=1.0", "[0, 1)"]),
    (["model.dropout=-0.1"], ["model.dropout=-0.1", "[0, 1)"]),
    (
        ["model=cnn", "activation=[relu,relu]"],
        [
            "activation=relu,relu names 2 activations",
            "model.filters=[16, 32] and model.units=[64] make 3",
        ],
    ),
    (
        ["model.kernel_initializer=[he_normal]"],
        ["model.kernel_initializer=he_normal names 1 initializers", "model.units=[64, 64] has 2"],
    ),
    # out of range
    (["train.epochs=0"], ["train.epochs=0", "positive"]),
    (["train.epochs=-5"], ["train.epochs=-5", "positive"]),
    (["train.epochs=10000000000000"], ["train.epochs=10000000000000", "from 1 to 10000000"]),
    (["train.batch_size=0"], ["train.batch_size=0", "positive"]),
    (["train.steps_per_execution=0"], ["train.steps_per_execution=0", "positive"]),
    (["train.threads=0"], ["train.threads=0", "positive"]),
    (["diagnostics.probe_size=0"], ["diagnostics.probe_size=0", "positive"]),
    (["model.units=[]"], ["model.units=[]", "at least one"]),
    (["model.units=[64,-1]"], ["model.units=-1", "positive"]),
    (["activation=[relu,tanh,relu]"], ["activation=relu,tanh,relu", "model.units=[64, 64]"]),
    (["activation=[relu,5]"], ["activation=", "Keras activation name"]),
    (["optimizer.learning_rate=-0.1"], ["optimizer.learning_rate=-0.1", "positive"]),
    (["optimizer.learning_rate=nan"], ["optimizer.learning_rate=nan", "finite number"]),
    (["optimizer.learning_rate=inf"], ["optimizer.learning_rate=inf", "finite number"]),
    (["optimizer=sgd", "optimizer.momentum=nan"], ["optimizer.momentum=nan", "finite number"]),
    (["dataset.test_size=nan"], ["dataset.test_size=nan", "finite number"]),
    (["dataset.val_size=-inf"], ["dataset.val_size=-inf", "finite number"]),
    (["dataset=circles", "dataset.noise=inf"], ["dataset.noise=inf", "finite number"]),
    (["seed=-1"], ["seed=-1", "from 0 to 4294967295"]),
    (["seed=4294967296"], ["seed=4294967296", "from 0 to 4294967295"]),
    (["dataset.seed=-1"], ["dataset.seed=-1", "from 0 to 4294967295"]),
    (["optimizer=sgd", "optimizer.momentum=1.0"], ["optimizer.momentum=1.0", "[0, 1)"]),
    (["optimizer.momentum=0.5"], ["optimizer.momentum", "adam", "sgd", "rmsprop"]),
    (["dataset.test_size=0"], ["dataset.test_size=0", "(0, 1)"]),
    (["dataset.val_size=1.2"], ["dataset.val_size=1.2", "(0, 1)"]),
    (["dataset.test_size=0.5", "dataset.val_size=0.5"], ["dataset.val_size", "below 1"]),
    (["dataset.subsample=3"], ["dataset.subsample=3", "at least 10"]),
    (["dataset=circles", "dataset.noise=-1"], ["dataset.noise=-1.0", ">= 0"]),
    (["dataset=circles", "dataset.n_samples=5"], ["dataset.n_samples=5", "at least 10"]),
    (["dataset=csv"], ["dataset.path=FILE"]),
    (["dataset=csv", "dataset.path=/no/such.csv"], ["dataset.path=/no/such.csv", "no such file"]),
    (["dataset=csv", "dataset.path=/"], ["dataset.path=/ is a directory", ".csv file"]),
    (["dataset=npz", "dataset.path=/"], ["dataset.path=/ is a directory", ".npz file"]),
    (["dataset=diabetes", "loss=categorical_crossentropy"], ["loss=categorical_crossentropy"]),
    (["loss=binary_crossentropy"], ["loss=binary_crossentropy", "10 classes"]),
    (
        ["train.early_stopping.monitor=val_auc"],
        ["train.early_stopping.monitor", "val_auc", "val_loss, val_accuracy, val_mae, val_rmse"],
    ),
    (["train.early_stopping.patience=-1"], ["train.early_stopping.patience=-1", "0 or more"]),
    (["train.early_stopping.min_delta=-0.1"], ["train.early_stopping.min_delta=-0.1", "0 or more"]),
    (["train.early_stopping.patience=1.5"], ["train.early_stopping.patience", "1.5", "Integer"]),
    (
        [
            "dataset=diabetes",
            "train.early_stopping.enabled=true",
            "train.early_stopping.monitor=val_accuracy",
        ],
        ["train.early_stopping.monitor=val_accuracy", "regression", "val_loss, val_mae, val_rmse"],
    ),
    (
        ["optimizer.schedule=linear"],
        ["optimizer.schedule", "linear", "constant, cosine, step, exponential, warmup_cosine"],
    ),
    (["optimizer.decay_epochs=0"], ["optimizer.decay_epochs=0", "positive"]),
    (["optimizer.decay_rate=0"], ["optimizer.decay_rate=0", "(0, 1]"]),
    (["optimizer.decay_rate=1.5"], ["optimizer.decay_rate=1.5", "(0, 1]"]),
    (["optimizer.alpha=-0.5"], ["optimizer.alpha=-0.5", "[0, 1]"]),
    (
        ["optimizer.schedule=warmup_cosine", "optimizer.warmup_epochs=3", "train.epochs=3"],
        ["optimizer.warmup_epochs=3", "train.epochs=3", "1 to train.epochs - 1"],
    ),
    (["optimizer.clipnorm=0"], ["optimizer.clipnorm=0", "positive"]),
    (
        ["optimizer.clipnorm=1", "optimizer.clipvalue=1"],
        ["optimizer.clipnorm and optimizer.clipvalue are both set", "Set one"],
    ),
    (["optimizer.nesterov=true"], ["optimizer.nesterov=true", "optimizer=adam", "optimizer=sgd"]),
    (["optimizer=adamw", "optimizer.weight_decay=-1"], ["optimizer.weight_decay=-1", "0 or more"]),
    (["model.l2=-0.1"], ["model.l2=-0.1", "0 or more"]),
    (["objective=val_auc"], ["objective", "val_auc", "val_loss, val_accuracy, val_mae"]),
    (
        ["dataset=diabetes", "loss=mse", "objective=val_accuracy"],
        ["objective=val_accuracy", "regression", "val_loss, val_mae, val_rmse"],
    ),
]


@pytest.mark.parametrize("overrides,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_each_bad_input_gets_a_clean_error_naming_key_value_and_what_is_allowed(overrides, words):
    with pytest.raises(CLEAN) as error:
        check(*overrides)
    message = str(error.value) + str(error.value.__cause__ or "")
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=10000000000000", "train.epochs=10000000000000 is not allowed: it must be "
         "from 1 to 10000000 (10**7)."),
        ("optimizer.learning_rate=nan", "optimizer.learning_rate=nan is not allowed: it must be "
         "a finite number."),
        ("seed=-1", "seed=-1 is not allowed: it must be an integer from 0 to 4294967295 "
         "(2**32 - 1)."),
        ("model=cnn", "model=cnn needs images, but dataset=iris is 4 features with no image "
         "shape."),
        ("train.early_stopping.patience=-2", "train.early_stopping.patience=-2 is not allowed: "
         "it must be 0 or more."),
    ],
)  # fmt: skip
def test_an_absurd_value_exits_2_before_any_run_exists(cli, store, override, message):
    result = cli("dataset=iris", override)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message in output and "Traceback" not in output
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_an_empty_npz_exits_2_with_a_message_before_any_run_exists(cli, store, tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    result = cli("dataset=npz", f"dataset.path={tmp_path / 'empty.npz'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "empty.npz has nothing to train on: x has shape (0, 3), no rows (samples)." in output
    assert "Traceback" not in output and "cannot reshape" not in output
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_a_model_too_large_for_the_memory_exits_2_with_its_size_before_it_trains(cli, store):
    result = cli("model.units=[1000000000]", "dataset.subsample=300", "train.epochs=1")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert (
        "model.units=[1000000000] on 64 features makes a model of 75,000,000,010 weights: "
        "training it takes at least 1,117.6 GiB"
    ) in output
    assert "Use fewer or narrower hidden layers." in output
    assert "Traceback" not in output and "RESOURCE_EXHAUSTED" not in output
    assert not Path(store.removeprefix("sqlite:///")).exists() or search(store).empty


def test_a_negative_seed_in_a_sweep_fails_that_job_alone_without_a_traceback(cli, store):
    result = cli("-m", "dataset=iris", "model.units=[8]", "train.epochs=1", "seed=0,-1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "seed=-1 is not allowed: it must be an integer from 0 to 4294967295" in output
    jobs = search(store, "tags.role = 'job'").set_index("params.seed")
    assert jobs.loc["0", ["status", "tags.outcome"]].tolist() == ["FINISHED", "completed"]
    assert jobs.loc["-1", ["status", "tags.outcome"]].tolist() == ["FAILED", "failed"]
    assert "seed=-1 is not allowed" in jobs.loc["-1", "tags.error"]
    assert running(store) == 0


@pytest.mark.parametrize("override", ["loss=0", "loss=[0]", "dataset=1.5", "optimizer=adam,3"])
def test_a_group_given_something_else_than_option_names_is_refused(override):
    with pytest.raises(UserError, match="takes the name of an option. Allowed: "):
        check_group_overrides([override])


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


KEYS = [
    "activation", "loss", "dataset", "optimizer", "seed", "device", "resume", "model.units",
    "model.output_activation", "model.kernel_initializer", "model", "model.filters",
    "model.kernel_size", "model.normalization", "model.normalization_position",
    "model.dropout", "model.dropout_kind", "train.epochs", "train.batch_size",
    "train.steps_per_execution", "train.threads", "optimizer.learning_rate",
    "optimizer.momentum", "dataset.test_size", "dataset.val_size", "dataset.scale",
    "dataset.subsample", "diagnostics.enabled", "tracking.experiment", "nope", "+new",
    "~train.epochs", "hydra.job.name",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.lists(st.sampled_from(["relu", "tanh", "1", "-2", "x", ""]), max_size=4).map(
        lambda items: "[" + ",".join(items) + "]"
    ),
    st.sampled_from(["null", "true", "[]", "{}", "${seed}", "${oops}", "'a,b'", "a,b", "\\"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3))
def test_random_overrides_give_a_valid_config_or_a_clean_error(pairs):
    overrides = [f"{key}={value}" for key, value in pairs]
    try:
        check_group_overrides(overrides)  # what `python -m runner` checks before Hydra
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        validate_values(cfg)
        validate_names(cfg)
    except CLEAN:
        pass
