"""Datasets: a registry of loaders, a fixed split, and scaling fitted on the training split.

A loader returns features and targets as numpy arrays and says whether the task is
classification or regression; :func:`load` splits and standardises them into a
:class:`Dataset`, plain arrays that the rest of the runner reads. :func:`encode_targets`
then shapes the targets the way the chosen loss needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from runner.config import Encoding, UserError

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass
class Dataset:
    """Features and targets of the three splits. Class labels are integers 0..classes-1;
    regression targets are standardised with the training split's mean and std."""

    name: str
    task: str
    classes: int | None
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def _digits() -> tuple[np.ndarray, np.ndarray, str]:
    x, y = sk_datasets.load_digits(return_X_y=True)
    return x, y, CLASSIFICATION


def _diabetes() -> tuple[np.ndarray, np.ndarray, str]:
    x, y = sk_datasets.load_diabetes(return_X_y=True)
    return x, y, REGRESSION


LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str]]] = {
    "digits": _digits,
    "diabetes": _diabetes,
}


def load(name: str, test_size: float, val_size: float, split_seed: int) -> Dataset:
    """Load a registered dataset, split it (stratified for classes) into train, validation
    and test parts of the given fractions, and standardise it on the training part."""
    if name not in LOADERS:
        raise UserError(f"dataset={name} is unknown. Allowed: {', '.join(sorted(LOADERS))}.")
    x, y, task = LOADERS[name]()
    x = x.astype(np.float32)
    classes = None
    if task == CLASSIFICATION:
        labels, y = np.unique(y, return_inverse=True)
        classes = len(labels)

    stratify = y if task == CLASSIFICATION else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_size, random_state=split_seed, stratify=stratify
    )
    stratify = y_rest if task == CLASSIFICATION else None
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_size / (1 - test_size),
        random_state=split_seed,
        stratify=stratify,
    )

    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (
        scaler.transform(part).astype(np.float32) for part in (x_train, x_val, x_test)
    )
    if task == REGRESSION:
        # Standardised targets keep a default learning rate sensible for any target scale;
        # metrics such as test_rmse are then in units of the training targets' std.
        mean, std = y_train.mean(), y_train.std()
        y_train, y_val, y_test = ((part - mean) / std for part in (y_train, y_val, y_test))
    return Dataset(name, task, classes, x_train, y_train, x_val, y_val, x_test, y_test)


def encode_targets(y: np.ndarray, encoding: Encoding, classes: int | None) -> np.ndarray:
    """Shape targets for a loss: one-hot rows, integer labels, one 0/1 column, or one
    continuous column."""
    if encoding is Encoding.onehot:
        return np.eye(classes, dtype=np.float32)[y]
    if encoding is Encoding.integer:
        return y.astype(np.int32)
    return y.astype(np.float32).reshape(-1, 1)
