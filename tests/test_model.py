"""What a model can be made of, as a user asks for it: initializers per layer (``auto``
resolved and recorded), normalization before or after the activation, dropout, PReLU, an
activation of the user's own, and a CNN on the image datasets, each on either backend."""

from __future__ import annotations

import pickle
from dataclasses import replace

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from runner import data, engine, model
from runner.config import DatasetConfig, DropoutKind, Encoding, Normalization, Position
from runner.engine.families import Cohort
from runner.jobs import execute
from runner.jobs.execute import build
from tests.conftest import TESTS, logged_model_scores, plan_job, run_job, search

TINY = ["model.units=[16,8]", "train.epochs=2", "tracking.enabled=false"]
HEAD = model.OutputHead(10, "softmax", Encoding.onehot)


def _spec(**fields) -> model.ModelSpec:
    fields.setdefault("units", (16, 8))
    fields.setdefault("activations", ("relu",) * (len(fields.get("filters", ())) + 2))
    return model.ModelSpec(head=HEAD, **fields)


VARIANTS = [
    {},
    {"normalization": Normalization.batch},
    {"normalization": Normalization.batch, "normalization_position": Position.after},
    {"normalization": Normalization.layer, "activations": ("prelu", "selu")},
    {"dropout": 0.2, "dropout_kind": DropoutKind.alpha_dropout},
    {
        "filters": (4, 8),
        "image_shape": (8, 8, 1),
        "activations": ("prelu", "relu", "tanh", "elu"),
    },
    {
        "filters": (3, 5, 7),
        "units": (),
        "image_shape": (7, 5, 3),
        "activations": ("relu",) * 3,
        "normalization": Normalization.batch,
    },
]
VARIANT_IDS = [
    "mlp",
    "batch norm",
    "batch norm after",
    "layer norm prelu",
    "alpha dropout",
    "cnn",
    "odd",
]


@pytest.mark.parametrize("fields", VARIANTS, ids=VARIANT_IDS)
def test_the_weights_counted_before_building_are_those_keras_builds(fields):
    spec = _spec(**fields)
    inputs = int(np.prod(spec.image_shape)) if spec.filters else 64
    assert model.weight_count(spec, inputs) == model.build_model(spec, inputs, 0).count_params()


@pytest.mark.parametrize("fields", VARIANTS, ids=VARIANT_IDS)
def test_a_members_weights_drawn_from_a_shared_model_are_those_of_its_own_model(fields):
    # A fused group's members of one spec share one model and draw their own weights from it
    # (runner/jobs/execute.py): exactly the values each one's own model starts with.
    spec = _spec(**{"dropout": 0.2, **fields})
    names = ("he_normal", "orthogonal", "zeros", "lecun_uniform", "glorot_normal")
    spec = replace(spec, kernel_initializers=names[: spec.hidden + 1])
    inputs = int(np.prod(spec.image_shape)) if spec.filters else 64
    shared = model.build_model(spec, inputs, 7)
    for seed in (0, 1, 2**32 - 1):
        own = model.build_model(spec, inputs, seed)
        drawn = model.initial_values(shared, spec, seed)
        for values, variables in zip(
            drawn, (own.trainable_variables, own.non_trainable_variables), strict=True
        ):
            assert len(values) == len(variables)
            for value, variable in zip(values, variables, strict=True):
                assert value.dtype == variable.dtype
                np.testing.assert_array_equal(value, np.asarray(variable.value))


def test_auto_initializers_follow_each_layers_activation_and_are_recorded(make_cfg):
    spec = plan_job(
        make_cfg(
            "activation=[relu,selu,tanh,prelu]",
            "model.units=[8,8,8,8]",
            "model.kernel_initializer=auto",
            "tracking.enabled=false",
        )
    ).spec
    resolved = ("he_normal", "lecun_normal", "glorot_uniform", "he_normal", "glorot_uniform")
    assert spec.model.kernel_initializers == resolved
    assert spec.params["model.kernel_initializer"] == "auto"
    assert spec.params["model.kernel_initializer.resolved"] == ",".join(resolved)
    net = model.build_model(spec.model, 64, spec.seed)
    kernels = [k.kernel_initializer for k, _ in model.hidden_layers(net, spec.model)]
    kinds = [type(k).__name__ for k in [*kernels, net.layers[-1].kernel_initializer]]
    assert kinds == ["HeNormal", "LecunNormal", "GlorotUniform", "HeNormal", "GlorotUniform"]


@pytest.mark.parametrize(
    "overrides,resolved",
    [
        ([], "glorot_uniform"),
        (["model.kernel_initializer=he_uniform"], "he_uniform"),
        (["activation=selu", "model.kernel_initializer=auto"],
         "lecun_normal,lecun_normal,glorot_uniform"),
        (["model.kernel_initializer=[orthogonal,auto]"], "orthogonal,he_normal,glorot_uniform"),
    ],
)  # fmt: skip
def test_the_resolved_initializers_are_one_param_a_comparison_can_group_by(
    make_cfg, overrides, resolved
):
    spec = plan_job(make_cfg("tracking.enabled=false", *overrides)).spec
    assert spec.params["model.kernel_initializer.resolved"] == resolved


@pytest.mark.parametrize(
    "overrides,names",
    [
        (
            ["model.normalization=batch"],
            ["hidden_0", "hidden_0_batch_normalization", "hidden_0_relu"],
        ),
        (
            ["model.normalization=layer", "model.normalization_position=after"],
            ["hidden_0_relu", "hidden_0_layer_normalization"],
        ),
        (["model.dropout=0.25"], ["hidden_0_relu", "hidden_0_dropout"]),
        (["activation=prelu"], ["hidden_0", "hidden_0_prelu"]),
    ],
)
def test_each_hidden_layer_is_built_in_the_order_asked(make_cfg, overrides, names):
    plan = plan_job(make_cfg("model.units=[8]", "tracking.enabled=false", *overrides))
    net = build(plan)
    assert [layer.name for layer in net.layers[1:-1]] == names


def test_batch_normalization_before_the_activation_leaves_its_kernel_no_bias(make_cfg):
    plan = plan_job(make_cfg("model.normalization=batch", "tracking.enabled=false"))
    kernels = [k for k, _ in model.hidden_layers(build(plan), plan.spec.model)]
    assert [k.use_bias for k in kernels] == [False, False]


def test_alpha_dropout_is_kerass_at_the_rate_asked(make_cfg):
    plan = plan_job(
        make_cfg("model.dropout=0.05", "model.dropout_kind=alpha_dropout", "tracking.enabled=false")
    )
    dropouts = [layer for layer in build(plan).layers if layer.name.endswith("_dropout")]
    assert [(type(d).__name__, d.rate) for d in dropouts] == [("AlphaDropout", 0.05)] * 2


@pytest.mark.parametrize(
    "name,shape", [("digits", (8, 8, 1)), ("mnist5k", (28, 28, 1)), ("iris", None)]
)
def test_each_dataset_carries_its_image_shape_or_none(name, shape):
    cfg = DatasetConfig(name=name, subsample=500 if name == "mnist5k" else None)
    dataset = data.load(OmegaConf.structured(cfg))
    assert dataset.image_shape == shape
    if shape:
        assert dataset.features == np.prod(shape)


def test_an_npz_of_images_carries_their_shape(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x=rng.random((40, 6, 5)), y=np.repeat([0, 1], 20))
    cfg = DatasetConfig(name="npz", path=str(tmp_path / "images.npz"))
    assert data.load(OmegaConf.structured(cfg)).image_shape == (6, 5, 1)


def test_cifar10_read_from_keras_cache_is_channels_last_as_keras_loads_it(tmp_path, monkeypatch):
    # Keras's files hold each image as its 3 colour planes; load_data gives rows, columns,
    # channels. A pixel marked in the blue plane, row 2, column 5 must land there.
    folder = tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        planes = np.zeros((10, 3, 32, 32), np.uint8)
        planes[:, 2, 2, 5] = 255
        batch = {b"data": planes.reshape(10, -1), b"labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    dataset = data.load(OmegaConf.structured(DatasetConfig(name="cifar10", scale="none")))
    images = dataset.x_train.reshape(-1, 32, 32, 3)
    assert dataset.image_shape == (32, 32, 3)
    assert (images[:, 2, 5, 2] == 1).all() and images.sum() == len(images)


@pytest.mark.backend
def test_a_cnn_learns_digits_and_its_conv_layers_have_diagnostics(make_cfg, store):
    metrics = run_job(
        make_cfg("model=cnn", "model.filters=[8,16]", "model.units=[32]", "train.epochs=4")
    )
    assert metrics["test_accuracy"] > 0.7  # chance: 0.1
    (run,) = search(store).to_dict("records")
    assert run["params.model.name"] == "cnn" and run["params.model.filters"] == "[8, 16]"
    for i in range(3):
        assert run[f"metrics.grad_norm/hidden_{i}"] > 0
        assert 0 <= run[f"metrics.dead_fraction/hidden_{i}"] <= 1


@pytest.mark.backend
def test_batch_normalization_and_dropout_train_and_keep_statistics_of_the_data(make_cfg):
    plan = plan_job(
        make_cfg("model.normalization=batch", "model.dropout=0.2", "train.epochs=3", TINY[-1])
    )
    net = build(plan)
    member = replace(execute.member(plan.spec, net), keep_weights=True)
    (result,) = engine.train([member], plan.dataset, execute.settings(plan.spec))
    assert result.test["test_accuracy"] > 0.8
    # The moving variance the test split was scored with moved from its initial 1 toward
    # the variance of what the layer normalizes, on the training data.
    kernel = keras.Model(net.inputs, net.get_layer("hidden_0").output)
    variance = np.var(np.asarray(kernel([plan.dataset.x_train])), axis=0)
    moving = np.asarray(net.get_layer("hidden_0_batch_normalization").moving_variance.value)
    assert np.abs(moving - variance).mean() < 0.5 * np.abs(1 - variance).mean()


@pytest.mark.backend
def test_a_user_activation_trains_and_its_logged_model_loads_with_mlflow(cli, store, monkeypatch):
    # The subprocess runs in a folder of its own: the module is found on PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    result = cli(
        "activation=activations_for_tests:swish_beta",
        "model.units=[16]",
        "train.epochs=3",
        "tracking.log_model=true",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = search(store).to_dict("records")
    assert run["params.activation"] == "activations_for_tests:swish_beta"
    assert run["metrics.test_accuracy"] > 0.5  # chance: 0.1
    # The module registers its function by name: once imported, the model loads anywhere.
    import tests.activations_for_tests  # noqa: F401

    digits = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    scores = logged_model_scores(store, run["run_id"], digits)
    assert scores["test_loss"] == pytest.approx(run["metrics.test_loss"], rel=1e-5)
    assert scores["test_accuracy"] == pytest.approx(run["metrics.test_accuracy"], abs=1e-6)


def test_a_user_activations_program_is_traced_again_once_its_code_changes(tmp_path, monkeypatch):
    module = tmp_path / "my_activations.py"
    module.write_text("import keras\n\ndef soft(x):\n    return keras.ops.softplus(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec(activations=("my_activations:soft", "relu"))

    class Member:
        model = spec
        optimizer = None

    cohort = Cohort((0,), tuple((a,) for a in spec.activations), ("mse",), Encoding.onehot)
    before = cohort.key([Member])
    module.write_text(module.read_text().replace("softplus(x)", "softplus(x) - 0.5"))
    assert cohort.key([Member]) != before
