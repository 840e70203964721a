"""Every option of every config group composes and builds the matching model; the value
checks refuse bad input with a message that says what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import model
from runner.checks import validate_names, validate_values
from runner.config import Encoding, Task, UserError, layer_activations
from runner.jobs.execute import build as build_net
from tests.conftest import plan_job

CONF = Path(__file__).resolve().parent.parent / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def build(cfg):
    """The job's head and model, as planning resolves them, without its store."""
    cfg = cfg.copy()
    cfg.tracking.enabled = False
    plan = plan_job(cfg)
    return plan.dataset, plan.spec.model.head, build_net(plan)


def test_the_groups_have_the_documented_options():
    assert options("dataset") == sorted(
        "iris wine breast_cancer digits diabetes circles moons xor friedman mnist5k "
        "mnist fashion_mnist cifar10 csv npz".split()
    )
    assert options("optimizer") == ["adam", "adamw", "rmsprop", "sgd"]
    assert options("model") == ["cnn", "mlp"]
    assert set(options("loss")) >= {
        "mse",
        "mae",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_crossentropy",
        "huber",
    }


EXPECTED_HEADS = {
    # (loss, dataset): (output units, output activation, target encoding)
    ("mse", "digits"): (10, "softmax", Encoding.onehot),
    ("mae", "digits"): (10, "softmax", Encoding.onehot),
    ("categorical_crossentropy", "digits"): (10, "softmax", Encoding.onehot),
    ("sparse_categorical_crossentropy", "digits"): (10, "softmax", Encoding.integer),
    ("mse", "diabetes"): (1, "linear", Encoding.continuous),
    ("mae", "diabetes"): (1, "linear", Encoding.continuous),
    ("huber", "diabetes"): (1, "linear", Encoding.continuous),
}


@pytest.mark.parametrize("loss,dataset", sorted(EXPECTED_HEADS))
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_option_composes_and_builds_the_matching_head(make_cfg, loss, dataset, optimizer):
    cfg = make_cfg(f"loss={loss}", f"dataset={dataset}", f"optimizer={optimizer}")
    validate_values(cfg)
    validate_names(cfg)
    _, head, net = build(cfg)
    units, activation, encoding = EXPECTED_HEADS[(loss, dataset)]
    assert (head.units, head.activation, head.encoding) == (units, activation, encoding)
    assert net.output_shape == (None, units)
    assert net.layers[-1].name == f"output_{activation}"


def test_per_layer_activations_land_on_their_layers(make_cfg):
    cfg = make_cfg("activation=[sigmoid,tanh,relu]", "model.units=[32,16,8]")
    _, _, net = build(cfg)
    dense = [layer for layer in net.layers if layer.name.startswith("hidden_")]
    assert [layer.name for layer in dense] == ["hidden_0_sigmoid", "hidden_1_tanh", "hidden_2_relu"]
    assert [layer.activation.__name__ for layer in dense] == ["sigmoid", "tanh", "relu"]
    assert [layer.units for layer in dense] == [32, 16, 8]


def test_one_activation_applies_to_every_hidden_layer(make_cfg):
    cfg = make_cfg("activation=tanh", "model.units=[8,8,8]")
    assert layer_activations(cfg) == ("tanh", "tanh", "tanh")


def test_output_activation_override_wins_over_the_loss(make_cfg):
    cfg = make_cfg("loss=mse", "model.output_activation=sigmoid")
    _, head, _ = build(cfg)
    assert head.activation == "sigmoid"


def test_binary_crossentropy_on_two_classes_gets_one_sigmoid_unit(make_cfg):
    cfg = make_cfg("loss=binary_crossentropy")
    head = model.output_head(cfg.loss, "auto", Task.classification, 2)
    assert (head.units, head.activation, head.encoding) == (1, "sigmoid", Encoding.binary)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["activation=[relu,tanh,relu]"], "names 3 activations but model.units=[64, 64] has 2"),
        (["train.epochs=0"], "train.epochs=0 is not allowed: it must be a positive number"),
        (["train.batch_size=-4"], "train.batch_size=-4 is not allowed"),
        (["model.units=[]"], "give at least one hidden layer width"),
        (["model.units=[8,0]"], "model.units=0 is not allowed"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate=0.0 is not allowed"),
        (["optimizer.momentum=0.9"], "optimizer=adam has no momentum"),
        (["optimizer=sgd", "optimizer.momentum=1.5"], "must be in [0, 1)"),
        (["dataset.test_size=0.6", "dataset.val_size=0.5"], "leaves no training data"),
        (["activation=3"], "give a Keras activation name or a list of names"),
    ],
)
def test_bad_values_are_refused_before_tensorflow_is_needed(make_cfg, overrides, message):
    with pytest.raises(UserError) as error:
        validate_values(make_cfg(*overrides))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["activation=foo"], "activation=foo is not a Keras activation. Allowed: "),
        (
            ["activation=[relu,bar]", "model.units=[4,4]"],
            "activation=bar is not a Keras activation",
        ),
        (["model.output_activation=zz"], "model.output_activation=zz is not a Keras activation"),
        (["model.kernel_initializer=nope"], "is not a Keras initializer"),
    ],
)
def test_bad_names_list_what_keras_allows(make_cfg, overrides, message):
    with pytest.raises(UserError) as error:
        validate_names(make_cfg(*overrides))
    assert message in str(error.value)
    if "activation" in message:
        assert all(name in str(error.value) for name in ("relu", "sigmoid", "tanh", "leaky_relu"))


def test_a_loss_that_cannot_fit_the_task_is_refused_saying_why(make_cfg):
    cfg = make_cfg("dataset=diabetes", "loss=categorical_crossentropy")
    with pytest.raises(
        UserError, match="needs a classification dataset, but this dataset is regression"
    ):
        build(cfg)
    cfg = make_cfg("loss=binary_crossentropy")
    with pytest.raises(UserError, match="this dataset has 10 classes"):
        build(cfg)
    cfg = make_cfg("loss=huber")
    with pytest.raises(UserError, match="needs a regression dataset"):
        build(cfg)


def test_the_default_jobs_fingerprint_is_the_one_its_recorded_runs_carry(make_cfg):
    # resume=true finds a finished run by this digest, so a change of how the config is
    # written must not change it: runs recorded before would be trained again. Where it is
    # recorded does not change it either.
    assert plan_job(make_cfg("backend=jax")).spec.fingerprint == "b422bfe43b4cb6c9"
    assert plan_job(make_cfg("tracking.enabled=false")).spec.fingerprint == "b422bfe43b4cb6c9"
