"""k-fold splits: ``dataset.folds=K`` with ``dataset.fold=0..K-1`` cuts what the fixed test
split leaves into K folds (stratified for classes); compare treats the fold as a repeat, as
it treats the seed, and pairs runs by seed and fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from runner import data
from runner.compare import main
from runner.config import UserError
from runner.tracking import STATUS
from tests.conftest import search


def rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


@pytest.mark.parametrize(("name", "classes"), [("wine", 3), ("diabetes", None)])
def test_the_folds_cut_the_rest_into_disjoint_validation_parts_and_leave_the_test_split(
    dataset_cfg, name, classes
):
    plain = data.load(dataset_cfg(name))
    # Scaling is fitted per fold: compare the raw rows, unscaled.
    folds = [data.load(dataset_cfg(name, "folds=4", f"fold={k}", "scale=none")) for k in range(4)]
    unscaled = data.load(dataset_cfg(name, "scale=none"))
    rest = rows(unscaled.x_train) | rows(unscaled.x_val)
    vals = [rows(f.x_val) for f in folds]
    for k, fold in enumerate(folds):
        np.testing.assert_array_equal(fold.x_test, unscaled.x_test)
        assert rows(fold.x_train) | vals[k] == rest and not rows(fold.x_train) & vals[k]
        assert len(fold.y_val) == pytest.approx(len(rest) / 4, abs=1)
        if classes:
            assert set(fold.y_val.tolist()) == set(range(classes))
    assert set.union(*vals) == rest and sum(map(len, vals)) == len(rest)
    assert len(plain.y_test) == len(folds[0].y_test)


def test_a_fold_is_stratified(dataset_cfg):
    fold = data.load(dataset_cfg("digits", "folds=5", "fold=2"))
    shares = [np.bincount(y, minlength=10) / len(y) for y in (fold.y_train, fold.y_val)]
    assert np.abs(shares[0] - shares[1]).max() < 0.01


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["folds=5", "fold=5"], "dataset.fold=5 is not allowed with dataset.folds=5: it must be "
         "an integer from 0 to 4."),
        (["folds=5", "fold=-1"], "dataset.fold=-1 is not allowed with dataset.folds=5"),
        (["folds=1"], "dataset.folds=1 is not allowed: give 2 or more folds"),
        (["fold=2"], "dataset.fold=2 is not allowed without dataset.folds"),
    ],
)  # fmt: skip
def test_a_fold_outside_the_folds_is_refused_naming_what_is_allowed(
    dataset_cfg, overrides, message
):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        dataset_cfg("iris", *overrides)


def test_folds_too_many_for_a_class_are_refused_with_the_class_counts(dataset_cfg):
    with pytest.raises(UserError) as refused:
        data.load(dataset_cfg("iris", "subsample=20", "folds=6"))
    assert str(refused.value) == (
        "dataset.folds=6 is too many for dataset=iris: after the test split, every class needs "
        "at least one sample per fold. Samples per class: 0: 5, 1: 5, 2: 6. Give "
        "dataset.folds=5 or fewer, or more data."
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset=iris", "dataset.folds=3", "dataset.fold=3"], "dataset.fold=3 is not allowed"),
        (["-m", "dataset=iris", "dataset.folds=3", "dataset.fold=0,1,3"], "dataset.fold=3 is "
         "not allowed with dataset.folds=3"),
        (["-m", "dataset=iris", "dataset.subsample=20", "dataset.folds=6", "dataset.fold=0,1"],
         "dataset.folds=6 is too many for dataset=iris"),
    ],
    ids=["run", "sweep", "sweep too small"],
)  # fmt: skip
def test_bad_folds_exit_2_before_any_run_exists(cli, store, args, message):
    result = cli(*args, "train.epochs=1")
    assert result.returncode == 2, result.stderr
    said = result.stdout + result.stderr
    assert message in said and "Traceback" not in said
    assert search(store).empty


def test_a_sweep_over_folds_records_each_fold_and_compare_counts_them_as_repeats(
    cli, store, tmp_path, capsys
):
    result = cli("-m", "dataset=iris", "dataset.folds=3", "dataset.fold=0,1,2", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    runs = search(store, "tags.role = 'job'")
    assert sorted(runs["params.dataset.fold"]) == ["0", "1", "2"]
    assert set(runs["status"]) == {"FINISHED"}
    # Three folds, three validation sets: the same training seed sees different data.
    assert runs["metrics.val_loss"].nunique() == 3
    out = tmp_path / "out"
    assert main(["--uri", store, "--out", str(out), "--by", "activation"]) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert table["n"].tolist() == [3]
    assert "dataset.fold" not in table.columns


# activation, fold, test_accuracy: relu leads tanh by 0.010 to 0.012 on every fold, while
# the folds themselves spread by 0.1, as easy and hard validation folds do.
FOLD_RUNS = [
    ("relu", 0, 0.81),
    ("relu", 1, 0.91),
    ("relu", 2, 0.71),
    ("tanh", 0, 0.80),
    ("tanh", 1, 0.898),
    ("tanh", 2, 0.699),
]


def test_differences_are_paired_by_seed_and_fold(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("iris", artifact_location=(tmp_path / "a").as_uri())
    for i, (activation, fold, value) in enumerate(FOLD_RUNS):
        tags = {"role": "job", "outcome": "completed"}
        run = client.create_run(experiment, start_time=1_800_000_000_000 + i, tags=tags)
        params = {"activation": activation, "seed": 0, "dataset": "iris", "dataset.seed": 0}
        params |= {"dataset.folds": 3, "dataset.fold": fold}
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("test_accuracy", value, 0, 0)],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id, status=STATUS["completed"])
    out = tmp_path / "out"
    assert main(["--uri", uri, "--experiment", "iris", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("activation")
    assert table["n"].tolist() == [3, 3]
    # Paired per fold, the difference hardly spreads; unpaired, the folds' spread would
    # swamp it and the two would be tied.
    assert table.loc["tanh", "diff"] == pytest.approx(-0.011)
    assert table.loc["tanh", "test"] == "paired t"
    assert table.loc["tanh", "verdict"] == "worse than the best"
