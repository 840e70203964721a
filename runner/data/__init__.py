"""Data: a registered dataset, cut into a fixed train/validation/test split and scaled on
the training split only.

:func:`load` returns a :class:`Dataset` of plain arrays that the rest of the runner reads;
:func:`encode_targets` then shapes the targets the way the chosen loss needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from runner.config import DatasetConfig, Encoding, Scale, Task, UserError
from runner.data.loaders import LOADERS

__all__ = ["Dataset", "encode_targets", "encoded_splits", "load"]


@dataclass
class Dataset:
    """Features and targets of the three splits. Class labels are integers 0..classes-1;
    regression targets are standardised with the training split's mean and std. Images
    have an ``image_shape`` (height, width, channels), each row one flattened image."""

    name: str
    task: Task
    classes: int | None
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: dict[str, str] = field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def _split(x, y, size, seed: int, classify: bool, what: str):
    """One stratified (for classes) cut, turning scikit-learn's complaint about a class too
    small to stratify into a message that shows the class counts."""
    try:
        return train_test_split(
            x, y, test_size=size, random_state=seed, stratify=y if classify else None
        )
    except ValueError as error:
        if not classify:
            raise
        labels, counts = np.unique(y, return_counts=True)
        raise UserError(
            f"cannot cut the {what} stratified: {error} Samples per class: "
            + ", ".join(f"{label}: {count}" for label, count in zip(labels, counts, strict=True))
            + ". Each class needs a few samples in every split: drop the rare classes, or "
            "change dataset.test_size, dataset.val_size or dataset.subsample."
        ) from None


def _fold(x, y, cfg: DatasetConfig, classify: bool):
    """Fold ``cfg.fold`` of ``cfg.folds`` (stratified for classes, shuffled by
    ``cfg.seed``) as the validation part, the other folds as the training part. Raises
    :class:`UserError` when a class has fewer samples than there are folds: some fold's
    validation part would then miss it."""
    if classify:
        labels, counts = np.unique(y, return_counts=True)
        if counts.min() < cfg.folds:
            raise UserError(
                f"dataset.folds={cfg.folds} is too many for dataset={cfg.name}: after the test "
                "split, every class needs at least one sample per fold. Samples per class: "
                + ", ".join(
                    f"{label}: {count}" for label, count in zip(labels, counts, strict=True)
                )
                + f". Give dataset.folds={int(counts.min())} or fewer, or more data."
            )
        splitter = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    else:
        if len(y) < cfg.folds:
            raise UserError(
                f"dataset.folds={cfg.folds} is too many for dataset={cfg.name}: the test split "
                f"leaves {len(y)} samples. Give dataset.folds={len(y)} or fewer."
            )
        splitter = KFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    train, val = list(splitter.split(x, y))[cfg.fold]
    return x[train], x[val], y[train], y[val]


def _train_val(x, y, cfg: DatasetConfig, classify: bool):
    """What the test split leaves, cut into training and validation parts: by
    ``cfg.val_size``, or as fold ``cfg.fold`` of ``cfg.folds`` (:func:`_fold`)."""
    if cfg.folds is None:
        size = cfg.val_size / (1 - cfg.test_size)
        return _split(x, y, size, cfg.seed, classify, "validation split")
    return _fold(x, y, cfg, classify)


def load(cfg: DatasetConfig) -> Dataset:
    """Load the dataset ``cfg.name``, subsample it when asked, split it (stratified for
    classes) into train, validation and test parts, and scale it on the training part. With
    ``cfg.folds``, the test part is cut as without it, and the folds cut the rest
    (:func:`_fold`)."""
    if cfg.name not in LOADERS:
        raise UserError(f"dataset={cfg.name} is unknown. Allowed: {', '.join(sorted(LOADERS))}.")
    raw = LOADERS[cfg.name](cfg)
    x, y, task = raw.x.astype(np.float32), raw.y, raw.task
    classify = task is Task.classification
    classes = None
    if classify:
        labels, y = np.unique(y, return_inverse=True)
        classes = len(labels)
        if classes < 2:
            raise UserError(
                f"dataset={cfg.name}: the target has one class only ({labels[0]!r}); a "
                "classifier needs at least two. Is dataset.target the right column?"
            )
    else:
        y = y.astype(np.float64)

    if cfg.subsample is not None and cfg.subsample < len(y):
        x, _, y, _ = _split(x, y, len(y) - cfg.subsample, cfg.seed, classify, "subsample")
    x_rest, x_test, y_rest, y_test = _split(x, y, cfg.test_size, cfg.seed, classify, "test split")
    x_train, x_val, y_train, y_val = _train_val(x_rest, y_rest, cfg, classify)

    if cfg.scale is not Scale.none:
        scaler = (StandardScaler if cfg.scale is Scale.standard else MinMaxScaler)().fit(x_train)
        x_train, x_val, x_test = (
            scaler.transform(p).astype(np.float32) for p in (x_train, x_val, x_test)
        )
    if not classify:
        # Standardised targets keep a default learning rate sensible for any target scale;
        # metrics such as test_rmse are then in units of the training targets' std.
        mean, std = y_train.mean(), y_train.std() or 1.0
        y_train, y_val, y_test = ((p - mean) / std for p in (y_train, y_val, y_test))
    return Dataset(
        cfg.name,
        task,
        classes,
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        raw.source,
        raw.image_shape,
    )


def encoded_splits(dataset: Dataset, encoding: Encoding) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) with the targets encoded for a loss."""
    return tuple(
        part
        for x, y in (
            (dataset.x_train, dataset.y_train),
            (dataset.x_val, dataset.y_val),
            (dataset.x_test, dataset.y_test),
        )
        for part in (x, encode_targets(y, encoding, dataset.classes))
    )


def encode_targets(y: np.ndarray, encoding: Encoding, classes: int | None) -> np.ndarray:
    """Shape targets for a loss: one-hot rows, integer labels, one 0/1 column, or one
    continuous column."""
    if encoding is Encoding.onehot:
        return np.eye(classes, dtype=np.float32)[y]
    if encoding is Encoding.integer:
        return y.astype(np.int32)
    return y.astype(np.float32).reshape(-1, 1)
