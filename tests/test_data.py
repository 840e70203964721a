"""Every dataset: shape, task and classes; a fixed stratified split; scaling from the
training split only; the user's CSV and NPZ files; and a clear error for bad data."""

from __future__ import annotations

import gzip
import socket

import numpy as np
import pandas as pd
import pytest

from runner import data
from runner.config import Encoding, UserError

OFFLINE = {
    # name: (samples, features, task, classes)
    "iris": (150, 4, "classification", 3),
    "wine": (178, 13, "classification", 3),
    "breast_cancer": (569, 30, "classification", 2),
    "digits": (1797, 64, "classification", 10),
    "diabetes": (442, 10, "regression", None),
    "circles": (1000, 2, "classification", 2),
    "moons": (1000, 2, "classification", 2),
    "xor": (1000, 2, "classification", 2),
    "friedman": (1000, 10, "regression", None),
    "mnist5k": (5000, 784, "classification", 10),
}


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_datasets_have_their_documented_shape(dataset_cfg, name):
    samples, features, task, classes = OFFLINE[name]
    ds = data.load(dataset_cfg(name))
    assert (ds.task, ds.classes, ds.features) == (task, classes, features)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == samples
    assert len(ds.y_test) == pytest.approx(0.2 * samples, abs=1)
    assert len(ds.y_val) == pytest.approx(0.2 * samples, abs=1)
    assert ds.x_train.dtype == np.float32
    assert ds.source


def test_mnist5k_pixels_are_scaled_to_the_unit_interval(dataset_cfg):
    ds = data.load(dataset_cfg("mnist5k"))
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).min() >= 290  # 500 a class, 60 % of them in training


def test_splits_are_disjoint_stratified_and_fixed_by_the_dataset_seed(dataset_cfg):
    ds = data.load(dataset_cfg("digits"))
    rows = [{r.tobytes() for r in part} for part in (ds.x_train, ds.x_val, ds.x_test)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    shares = [np.bincount(y, minlength=10) / len(y) for y in (ds.y_train, ds.y_val, ds.y_test)]
    assert np.abs(shares[0] - shares[2]).max() < 0.02
    assert np.abs(shares[0] - shares[1]).max() < 0.02
    np.testing.assert_array_equal(ds.x_test, data.load(dataset_cfg("digits")).x_test)
    assert not np.array_equal(ds.x_test, data.load(dataset_cfg("digits", "seed=1")).x_test)


def test_synthetic_data_follows_n_samples_noise_and_seed(dataset_cfg):
    small = data.load(dataset_cfg("moons", "n_samples=200", "noise=0.0"))
    assert len(small.y_train) + len(small.y_val) + len(small.y_test) == 200
    again = data.load(dataset_cfg("moons", "n_samples=200", "noise=0.0"))
    np.testing.assert_array_equal(small.x_train, again.x_train)
    noisy = data.load(dataset_cfg("moons", "n_samples=200", "noise=0.5"))
    assert not np.array_equal(small.x_train, noisy.x_train)


@pytest.mark.parametrize("scale", ["standard", "minmax", "none"])
def test_scaling_is_fitted_on_the_training_split_only(dataset_cfg, scale):
    ds = data.load(dataset_cfg("diabetes", f"scale={scale}"))
    if scale == "standard":
        np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
        assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3
    elif scale == "minmax":
        np.testing.assert_allclose(ds.x_train.min(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(ds.x_train.max(axis=0), 1, atol=1e-6)
        assert ds.x_test.min() < 0 or ds.x_test.max() > 1
    else:
        assert np.abs(ds.x_train).max() < 0.25  # scikit-learn's diabetes comes pre-scaled
    assert ds.y_train.mean() == pytest.approx(0, abs=1e-9)
    assert ds.y_train.std() == pytest.approx(1)


def test_subsample_caps_the_samples_and_keeps_the_class_balance(dataset_cfg):
    ds = data.load(dataset_cfg("digits", "subsample=500"))
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 500
    assert np.bincount(ds.y_train).min() >= 25


def test_targets_are_encoded_for_the_loss():
    y = np.array([0, 2, 1])
    np.testing.assert_array_equal(
        data.encode_targets(y, Encoding.onehot, 3), [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    )
    assert data.encode_targets(y, Encoding.integer, 3).dtype == np.int32
    assert data.encode_targets(np.array([0, 1]), Encoding.binary, 2).shape == (2, 1)
    assert data.encode_targets(np.array([0.5, -1.0]), Encoding.continuous, None).shape == (2, 1)


# --- Keras's datasets, from a cache the test writes -------------------------------------


def test_a_missing_keras_dataset_fails_fast_saying_where_and_what_instead(
    dataset_cfg, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def no_network(*args):
        raise AssertionError("the loader tried to download")

    # Fails fast: without a connection, not after a download's timeouts.
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("fashion_mnist"))
    message = str(error.value)
    assert str(tmp_path / "keras" / "datasets" / "fashion-mnist") in message
    assert "keras.datasets.fashion_mnist.load_data()" in message
    assert "dataset.download=true" in message
    assert "dataset=mnist5k" in message


def test_keras_mnist_loads_from_the_cache(dataset_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 10)
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=images[:80],
        y_train=labels[:80],
        x_test=images[80:],
        y_test=labels[80:],
    )
    ds = data.load(dataset_cfg("mnist", "test_size=0.3", "val_size=0.3"))
    assert (ds.features, ds.classes) == (784, 10)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 100
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_keras_fashion_mnist_loads_from_the_cache(dataset_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 10)
    images = np.arange(100 * 784, dtype=np.uint32).astype(np.uint8)
    for prefix, part in (("train", slice(0, 70)), ("t10k", slice(70, 100))):
        n = len(labels[part])
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels[part].tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images[: n * 784].tobytes())
    ds = data.load(dataset_cfg("fashion_mnist", "test_size=0.3", "val_size=0.3"))
    assert (ds.features, ds.classes) == (784, 10)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 100


# --- the user's files --------------------------------------------------------------------


def write_csv(path, rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "height": rng.normal(170, 10, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "member": rng.choice([True, False], rows),
            "species": np.repeat(["cat", "dog", "fox"], rows // 3),
            "weight": rng.normal(60, 5, rows),
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_csv_round_trip_encodes_categories_and_infers_the_task(dataset_cfg, tmp_path):
    path = tmp_path / "animals.csv"
    write_csv(path)
    ds = data.load(dataset_cfg("csv", f"path={path}", "target=species"))
    # height, weight, member (a bool, as 0/1) and colour (3 one-hot columns)
    assert (ds.task, ds.classes, ds.features) == ("classification", 3, 6)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 60
    ds = data.load(dataset_cfg("csv", f"path={path}", "target=weight"))
    assert (ds.task, ds.classes) == ("regression", None)
    ds = data.load(dataset_cfg("csv", f"path={path}", "target=height", "task=regression"))
    assert ds.task == "regression"


def test_npz_round_trip(dataset_cfg, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.normal(size=(90, 3, 2)), y=np.repeat([0, 1, 2], 30))
    ds = data.load(dataset_cfg("npz", f"path={path}"))
    assert (ds.task, ds.classes, ds.features) == ("classification", 3, 6)
    np.savez(path, x=rng.normal(size=(90, 4)), y=rng.normal(size=90))
    assert data.load(dataset_cfg("npz", f"path={path}")).task == "regression"


def test_nan_values_are_reported_with_where_and_dropped_on_request(dataset_cfg, tmp_path):
    path = tmp_path / "gaps.csv"
    frame = write_csv(path)
    frame.loc[[4, 9], "height"] = np.nan
    frame.loc[7, "colour"] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("csv", f"path={path}", "target=species"))
    message = str(error.value)
    assert "3 missing values in 3 rows" in message
    assert "'height' (2, first at row 4)" in message and "'colour' (1, first at row 7)" in message
    assert "dataset.dropna=true" in message
    ds = data.load(dataset_cfg("csv", f"path={path}", "target=species", "dropna=true"))
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 57


BAD_CSV = [
    # (file content, overrides, message)
    (None, ["target=a"], "no such file"),
    ("", ["target=a"], "is empty"),
    ("a,b\n", ["target=a"], "has a header but no rows"),
    ("\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfd", ["target=a"], "is not a CSV file"),
    ("a,b\n1,2\n3,4\n", ["target=c"], "dataset.target=c is not a column of bad.csv. Columns: a, b"),
    ("a,b\n1,x\n3,x\n2,x\n", ["target=b"], "the target has one class only"),
]


@pytest.mark.parametrize("content,overrides,message", BAD_CSV)
def test_bad_csv_files_get_a_clear_error(dataset_cfg, tmp_path, content, overrides, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("csv", f"path={path}", *overrides))
    assert message in str(error.value)


def test_a_class_too_small_to_stratify_shows_the_class_counts(dataset_cfg, tmp_path):
    path = tmp_path / "rare.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(20)) + "5,7\n")
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("csv", f"path={path}", "target=b"))
    assert "cannot cut the test split stratified" in str(error.value)
    assert "Samples per class: 0: 10, 1: 10, 2: 1" in str(error.value)


def test_a_feature_that_cannot_be_encoded_is_named(dataset_cfg, tmp_path):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"u{i}" for i in range(80)], "y": [0, 1] * 40}).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"cannot encode column 'id' \(80 distinct values\)"):
        data.load(dataset_cfg("csv", f"path={path}", "target=y"))


def test_npz_with_objects_or_missing_arrays_is_refused(dataset_cfg, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10))
    with pytest.raises(UserError, match="cannot be read as .npz without pickle"):
        data.load(dataset_cfg("npz", f"path={path}"))
    np.savez(path, features=np.zeros((10, 2)))
    with pytest.raises(UserError, match="lacks the array x and y: it has features"):
        data.load(dataset_cfg("npz", f"path={path}"))


def test_csv_without_a_path_says_what_it_needs(dataset_cfg):
    with pytest.raises(UserError, match="dataset=csv needs dataset.path=FILE"):
        data.load(dataset_cfg("csv"))


def test_npz_whose_x_holds_text_names_the_file_and_asks_for_numbers(dataset_cfg, tmp_path):
    path = tmp_path / "words.npz"
    np.savez(path, x=np.array([["a", "b"]] * 100), y=np.arange(100) % 2)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("npz", f"path={path}"))
    message = str(error.value)
    assert message.startswith("words.npz: x holds text values (<U1, for example 'a')")
    assert "x must be numeric (booleans, integers or floats)" in message


def test_infinite_csv_cells_are_reported_with_where(dataset_cfg, tmp_path):
    path = tmp_path / "inf.csv"
    frame = write_csv(path)
    frame.loc[[3, 8], "height"] = [np.inf, -np.inf]
    # Finite as a double, infinite once a float32 feature.
    frame.loc[5, "weight"] = 1e39
    frame.to_csv(path, index=False)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("csv", f"path={path}", "target=species", "dropna=true"))
    message = str(error.value)
    assert message.startswith("inf.csv has infinite values, or features beyond float32's range")
    assert "in 3 rows: 'height' (2, first at row 3), 'weight' (1, first at row 5)" in message


def test_infinite_npz_values_are_reported_with_where(dataset_cfg, tmp_path):
    path = tmp_path / "inf.npz"
    x = np.ones((60, 2))
    x[7, 1] = np.inf
    y = np.arange(60.0)
    y[9] = -np.inf
    np.savez(path, x=x, y=y)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("npz", f"path={path}", "dropna=true"))
    message = str(error.value)
    assert message.startswith("inf.npz has infinite values")
    assert "in 2 rows (first at row 7)" in message


@pytest.mark.parametrize("shape,empty", [((0, 3), "no rows (samples)"), ((50, 0), "no features")])
def test_an_npz_with_no_rows_or_no_features_says_there_is_nothing_to_train_on(
    dataset_cfg, tmp_path, shape, empty
):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros(shape), y=np.arange(shape[0]) % 2)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("npz", f"path={path}"))
    assert str(error.value) == (
        f"empty.npz has nothing to train on: x has shape {shape}, {empty}. Save x with one "
        "row per sample and at least one feature in each."
    )


def test_dropna_that_would_drop_every_npz_row_says_so(dataset_cfg, tmp_path):
    path = tmp_path / "gaps.npz"
    x = np.ones((40, 2))
    x[::2, 0] = np.nan
    y = np.arange(40.0)
    y[1::2] = np.nan
    np.savez(path, x=x, y=y)
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("npz", f"path={path}", "dropna=true"))
    assert str(error.value) == (
        "gaps.npz has NaN values in every one of its 40 rows: dataset.dropna=true leaves no "
        "row to train on. Fix the file's NaN values."
    )


def test_dropna_that_would_drop_every_csv_row_says_so(dataset_cfg, tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},,{i % 2}\n" for i in range(20)))
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg("csv", f"path={path}", "target=y", "dropna=true"))
    assert str(error.value) == (
        "gaps.csv has missing values in every one of its 20 rows: dataset.dropna=true leaves "
        "no row to train on. Fill them in, or drop the columns that are mostly empty."
    )


@pytest.mark.parametrize("name", ["csv", "npz"])
def test_a_path_that_is_a_directory_is_called_one(dataset_cfg, tmp_path, name):
    with pytest.raises(UserError) as error:
        data.load(dataset_cfg(name, f"path={tmp_path}", "target=a"))
    assert str(error.value) == (
        f"dataset.path={tmp_path} is a directory ({tmp_path}), not a file: give the path of "
        f"the .{name} file to read."
    )


def test_keras_cifar10_loads_from_the_cache(dataset_cfg, tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8),
            b"labels": list(np.tile(np.arange(10), 2)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    ds = data.load(dataset_cfg("cifar10"))
    assert (ds.features, ds.classes) == (3072, 10)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 120
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_encoded_splits_pair_each_split_with_its_encoded_targets(dataset_cfg):
    ds = data.load(dataset_cfg("iris"))
    x_train, y_train, x_val, y_val, x_test, y_test = data.encoded_splits(ds, Encoding.onehot)
    assert x_train is ds.x_train and x_test is ds.x_test
    assert y_train.shape == (len(ds.y_train), 3) and y_val.shape == (len(ds.y_val), 3)
    np.testing.assert_array_equal(y_test.argmax(axis=1), ds.y_test)
