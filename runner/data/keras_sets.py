"""Keras's datasets (mnist, fashion_mnist, cifar10): read from Keras's cache as Keras's
``load_data`` reads them, downloaded only when the user asks (``dataset.download=true``)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from runner.config import DatasetConfig, Task, UserError
from runner.data.raw import Loader, Raw


def keras_cache() -> Path:
    """The folder Keras downloads its datasets to: ``$KERAS_HOME/datasets``, by default
    ``~/.keras/datasets``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


KERAS_FILES = {
    "mnist": ["mnist.npz"],
    "fashion_mnist": [
        f"fashion-mnist/{name}"
        for name in (
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        )
    ],
    "cifar10": [
        f"cifar-10-batches-py-target/cifar-10-batches-py/{name}"
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    ],
}


IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def keras_dataset(name: str) -> Loader:
    def load(cfg: DatasetConfig) -> Raw:
        cache = keras_cache()
        missing = [f for f in KERAS_FILES[name] if not (cache / f).is_file()]
        if missing and not cfg.download:
            raise UserError(
                f"dataset={name} is not in Keras's cache: {cache / missing[0]} is missing. "
                "On a machine with network, run "
                f'`python -c "import keras; keras.datasets.{name}.load_data()"` there and copy '
                f"{cache} here (or set KERAS_HOME to the folder that holds datasets/), or run "
                f"with dataset.download=true. Offline, use dataset=mnist5k (5000 real MNIST "
                "digits) or dataset=digits instead."
            )
        if missing:
            import keras

            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
        else:
            (x_train, y_train), (x_test, y_test) = _read_keras_cache(name, cache)
        # The Keras train/test split is pooled: the runner makes its own fixed split.
        x = np.concatenate([x_train, x_test]).reshape(len(x_train) + len(x_test), -1)
        y = np.concatenate([y_train, y_test]).reshape(-1)
        source = {"loader": f"keras.datasets.{name}"}
        return Raw(x / 255.0, y, Task.classification, source, IMAGE_SHAPES[name])

    return load


def _read_keras_cache(name: str, cache: Path) -> tuple[tuple[np.ndarray, ...], ...]:
    """Read the files Keras's ``load_data`` would, as Keras reads them."""
    if name == "mnist":
        with np.load(cache / "mnist.npz", allow_pickle=False) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    if name == "fashion_mnist":
        parts = []
        for file, offset in zip(KERAS_FILES[name], (8, 16, 8, 16), strict=True):
            with gzip.open(cache / file, "rb") as f:
                parts.append(np.frombuffer(f.read(), np.uint8, offset=offset))
        y_train, x_train, y_test, x_test = parts
        return (x_train.reshape(len(y_train), -1), y_train), (
            x_test.reshape(len(y_test), -1),
            y_test,
        )
    # CIFAR-10's batches are pickles; these are the files Keras's own download wrote, not user
    # data, and Keras reads them the same way: each image's channels, then rows, turned to
    # rows, columns and channels (channels last), as load_data returns them.
    batches = []
    for file in KERAS_FILES[name]:
        with open(cache / file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        batches.append((images.reshape(len(images), -1), np.asarray(batch[b"labels"])))
    x_train = np.concatenate([b[0] for b in batches[:-1]])
    y_train = np.concatenate([b[1] for b in batches[:-1]])
    return (x_train, y_train), batches[-1]
