"""The embedded datasets: sizes, tasks, a fixed stratified split, scaling from the training
split only, and target encodings."""

from __future__ import annotations

import numpy as np
import pytest

from runner import data
from runner.config import Encoding, UserError


@pytest.mark.parametrize(
    "name,samples,features,task,classes",
    [("digits", 1797, 64, "classification", 10), ("diabetes", 442, 10, "regression", None)],
)
def test_embedded_datasets_have_their_documented_shape(name, samples, features, task, classes):
    ds = data.load(name, test_size=0.2, val_size=0.2, split_seed=0)
    assert (ds.task, ds.classes, ds.features) == (task, classes, features)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == samples
    assert len(ds.y_test) == pytest.approx(0.2 * samples, abs=1)
    assert len(ds.y_val) == pytest.approx(0.2 * samples, abs=1)


def test_splits_are_disjoint_stratified_and_fixed_by_the_split_seed():
    ds = data.load("digits", 0.2, 0.2, 0)
    rows = [{r.tobytes() for r in part} for part in (ds.x_train, ds.x_val, ds.x_test)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    shares = [np.bincount(y, minlength=10) / len(y) for y in (ds.y_train, ds.y_val, ds.y_test)]
    assert np.abs(shares[0] - shares[2]).max() < 0.02
    assert np.abs(shares[0] - shares[1]).max() < 0.02
    again = data.load("digits", 0.2, 0.2, 0)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    other = data.load("digits", 0.2, 0.2, 1)
    assert not np.array_equal(ds.x_test, other.x_test)


def test_standardisation_is_fitted_on_the_training_split_only():
    ds = data.load("diabetes", 0.2, 0.2, 0)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3
    assert ds.y_train.mean() == pytest.approx(0, abs=1e-9)
    assert ds.y_train.std() == pytest.approx(1)


def test_targets_are_encoded_for_the_loss():
    y = np.array([0, 2, 1])
    np.testing.assert_array_equal(
        data.encode_targets(y, Encoding.onehot, 3), [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    )
    assert data.encode_targets(y, Encoding.integer, 3).dtype == np.int32
    assert data.encode_targets(np.array([0, 1]), Encoding.binary, 2).shape == (2, 1)
    assert data.encode_targets(np.array([0.5, -1.0]), Encoding.continuous, None).shape == (2, 1)


def test_an_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(UserError, match="dataset=nope is unknown. Allowed: diabetes, digits"):
        data.load("nope", 0.2, 0.2, 0)
