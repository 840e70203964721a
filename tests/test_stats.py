"""runner/stats.py against values worked out by hand and against scipy.stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from runner.stats import (
    BEST,
    FEW,
    PAIRED,
    TIED,
    WELCH,
    WORSE,
    against_best,
    curve_area,
    first_epoch,
    mean_interval,
    paired_difference,
    pick_tuned,
    shared_ranks,
    speed,
    welch_difference,
)


def test_mean_interval_is_student_t_on_n_minus_1_degrees_of_freedom():
    # mean 2.5, sd sqrt(5/3), se sqrt(5/3)/2 = 0.6455, t(0.975, 3) = 3.1824: ± 2.0543.
    assert mean_interval([1, 2, 3, 4]) == pytest.approx((2.5, 0.445740, 4.554260), abs=1e-6)
    # mean 0.92, sd 0.02, se 0.011547, t(0.975, 2) = 4.3027: ± 0.049683.
    assert mean_interval([0.90, 0.92, 0.94]) == pytest.approx((0.92, 0.870317, 0.969683))
    values = [0.961, 0.9722, 0.9556, 0.93, 0.99]
    want = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert mean_interval(values)[1:] == pytest.approx(want)


def test_no_interval_below_three_values_and_no_mean_without_any():
    mean, low, high = mean_interval([0.95, 0.97])
    assert mean == pytest.approx(0.96)
    assert np.isnan(low) and np.isnan(high)
    assert all(np.isnan(mean_interval([])))


def test_equal_values_give_the_point_not_nan():
    assert mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_paired_difference_matches_scipy_ttest_rel():
    a, best = [0.96, 0.97, 0.95], [0.97, 0.97, 0.96]
    # Differences -0.01, 0, -0.01: mean -0.00667, sd 0.00577, se 0.00333, ± 4.3027 × se.
    assert paired_difference(a, best) == pytest.approx((-0.006667, -0.021009, 0.007676), abs=1e-6)
    assert paired_difference(a, best)[1:] == pytest.approx(
        tuple(scipy_stats.ttest_rel(a, best).confidence_interval())
    )


def test_welch_difference_matches_scipy_and_the_satterthwaite_df():
    a, best = [1, 2, 3], [2, 4, 6, 8]
    estimate, low, high = welch_difference(a, best)
    # Variances of the means 1/3 and 5/3: se sqrt(2), df 4 / (1/18 + 25/27) = 4.0755.
    assert estimate == -3
    half = scipy_stats.t.ppf(0.975, 4 / (1 / 18 + 25 / 27)) * np.sqrt(2)
    assert (low, high) == pytest.approx((-3 - half, -3 + half))
    want = scipy_stats.ttest_ind(a, best, equal_var=False).confidence_interval()
    assert (low, high) == pytest.approx(tuple(want))
    assert np.isnan(welch_difference([1, 2], best).low)
    # No spread on either side: the difference itself, rather than scipy's NaN.
    assert welch_difference([0.5, 0.5, 0.5], [0.7, 0.7, 0.7]) == pytest.approx((-0.2,) * 3)


def test_pairing_removes_what_a_seed_does_to_both():
    # Seeds move both groups alike; every seed puts the best 0.01 ahead.
    best = np.array([0.90, 0.95, 0.99])
    other = best - 0.01
    assert paired_difference(other, best) == pytest.approx((-0.01, -0.01, -0.01))
    low, high = welch_difference(other, best)[1:]
    assert low < 0 < high


def runs(rows: list[tuple]) -> pd.DataFrame:
    """Completed runs as ``against_best`` takes them: activation, seed, data seed, value."""
    return pd.DataFrame(rows, columns=["activation", "seed", "data_seed", "value"])


def test_against_best_pairs_when_the_seeds_match_and_says_tied_or_worse():
    frame = runs(
        [
            *[("tanh", s, 0, v) for s, v in enumerate([0.97, 0.97, 0.96])],
            # The same seeds and data: paired; the differences -0.01, 0, -0.01 hold 0.
            *[("relu", s, 0, v) for s, v in enumerate([0.96, 0.97, 0.95])],
            # Always 0.05 behind: worse, with a zero-width paired interval.
            *[("linear", s, 0, v) for s, v in enumerate([0.92, 0.92, 0.91])],
            # Other seeds: Welch's interval, here wide enough to hold 0.
            *[("elu", s, 0, v) for s, v in zip([5, 6, 7], [0.99, 0.90, 0.93], strict=True)],
            # Two runs: no interval.
            ("sigmoid", 0, 0, 0.90),
            ("sigmoid", 1, 0, 0.91),
        ]
    )
    table = against_best(frame, ["activation"], ["seed", "data_seed"], lower=False)
    assert table.index.tolist() == ["elu", "linear", "relu", "sigmoid", "tanh"]
    assert table["verdict"].to_dict() == {
        "tanh": BEST,
        "relu": TIED,
        "linear": WORSE,
        "elu": TIED,
        "sigmoid": FEW,
    }
    assert pd.isna(table.loc["tanh", "test"])
    assert table["test"].drop("tanh").to_dict() == {
        "relu": PAIRED,
        "linear": PAIRED,
        "elu": WELCH,
        "sigmoid": WELCH,
    }
    assert table.loc["relu", ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [-0.006667, -0.021009, 0.007676], abs=1e-6
    )
    assert table.loc["linear", ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [-0.05] * 3
    )
    welch = scipy_stats.ttest_ind([0.99, 0.90, 0.93], [0.97, 0.97, 0.96], equal_var=False)
    assert table.loc["elu", ["diff_low", "diff_high"]].tolist() == pytest.approx(
        list(welch.confidence_interval())
    )
    assert table.loc["sigmoid", "diff"] == pytest.approx(0.905 - 0.9667, abs=1e-4)


def test_another_data_seed_is_not_paired_and_lower_is_better_picks_the_smallest():
    frame = runs(
        [
            *[("mse", s, 0, v) for s, v in enumerate([0.20, 0.22, 0.21])],
            *[("mae", s, 1, v) for s, v in enumerate([0.30, 0.31, 0.32])],
        ]
    )
    table = against_best(frame, ["activation"], ["seed", "data_seed"], lower=True)
    assert table.loc["mse", "verdict"] == BEST
    assert table.loc["mae", ["test", "verdict"]].tolist() == [WELCH, WORSE]
    assert table.loc["mae", "diff"] == pytest.approx(0.10)


def test_shared_ranks_give_the_tied_rank_1_and_the_rest_follow_after_them():
    means = pd.Series([0.97, 0.96, 0.95, 0.90, np.nan])
    verdicts = pd.Series([BEST, TIED, WORSE, TIED, None])
    assert shared_ranks(means, verdicts, lower=False).tolist() == [1, 1, 4, 1, pd.NA]
    # Without intervals the ranks are the means', equal means sharing the better one.
    few = pd.Series([BEST, FEW, FEW, FEW])
    assert shared_ranks(pd.Series([0.1, 0.1, 0.2, 0.3]), few, lower=True).tolist() == [1, 1, 3, 4]
    assert shared_ranks(pd.Series([0.1, 0.2, 0.2, 0.3]), few, lower=True).tolist() == [1, 2, 2, 4]


RATES = [(a, r) for a in ("relu", "tanh") for r in ("0.001", "0.01", "0.1")]


def tuning_runs(test: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Three seeds per activation and learning rate: the validation score of each, and a
    test metric from ``test``, which the pick must never read."""
    validation = {
        ("relu", "0.001"): [0.90, 0.91, 0.92],
        ("relu", "0.01"): [0.95, 0.96, 0.94],
        # Two of three diverged: their survivor's 0.99 must not win.
        ("relu", "0.1"): [0.99, np.nan, np.nan],
        ("tanh", "0.001"): [0.93, 0.94, 0.95],
        ("tanh", "0.01"): [0.92, 0.93, 0.91],
        ("tanh", "0.1"): [0.50, 0.52, 0.51],
    }
    return pd.DataFrame(
        [
            (activation, rate, score, np.isnan(score), test[activation, rate])
            for (activation, rate), scores in validation.items()
            for score in scores
        ],
        columns=["activation", "lr", "score", "lost", "test"],
    )


def test_pick_tuned_chooses_on_validation_and_never_on_test():
    honest = dict.fromkeys(RATES, 0.9)
    picked = pick_tuned(tuning_runs(honest), ["activation"], "lr", lower=False)
    assert picked["activation"].tolist() == ["relu", "tanh"]
    assert picked["lr"].tolist() == ["0.01", "0.001"]
    assert picked["score"].tolist() == pytest.approx([0.95, 0.94])
    assert picked["lost"].tolist() == [0, 0]
    # A test metric planted to favour the other rates changes nothing.
    planted = honest | {("relu", "0.1"): 1.0, ("tanh", "0.1"): 1.0, ("tanh", "0.01"): 0.99}
    again = pick_tuned(tuning_runs(planted), ["activation"], "lr", lower=False)
    pd.testing.assert_frame_equal(again, picked)


def test_pick_tuned_minimises_a_loss():
    frame = tuning_runs(dict.fromkeys(RATES, 0.0))
    frame["score"] = 1 - frame["score"]
    picked = pick_tuned(frame, ["activation"], "lr", lower=True)
    assert picked["lr"].tolist() == ["0.01", "0.001"]


def test_pick_tuned_breaks_a_tie_by_the_smallest_number_not_the_first_string():
    frame = pd.DataFrame(
        [("relu", rate, 0.98, False) for rate in ("0.001", "1e-05", "0.0003")],
        columns=["activation", "lr", "score", "lost"],
    )
    assert pick_tuned(frame, ["activation"], "lr", lower=False)["lr"].tolist() == ["1e-05"]
    frame["lr"] = ["b", "c", "a"]
    assert pick_tuned(frame, ["activation"], "lr", lower=False)["lr"].tolist() == ["a"]


def test_first_epoch_counts_from_1_and_is_nan_when_never_reached():
    assert first_epoch([0.5, 0.7, 0.9, 0.95], 0.9, lower=False) == 3
    assert first_epoch([1.0, 0.5, 0.3], 0.5, lower=True) == 2
    assert np.isnan(first_epoch([0.5, 0.7], 0.9, lower=False))


def test_curve_area_is_the_mean_height():
    assert curve_area([0.5, 0.7, 0.9, 0.9]) == pytest.approx(0.75)


def test_speed_per_group_with_never_counted_apart():
    curves = {
        # Reaches 0.9 at epochs 2, 3 and 3: mean 8/3, sd 0.57735, ± 4.3027 × 0.33333.
        ("relu", 0): [0.5, 0.9, 0.95],
        ("relu", 1): [0.4, 0.8, 0.9],
        ("relu", 2): [0.6, 0.85, 0.92],
        # One run never gets there; the other at epoch 1.
        ("sigmoid", 0): [0.2, 0.3, 0.4],
        ("sigmoid", 1): [0.9, 0.9, 0.9],
    }
    history = pd.DataFrame(
        [
            (activation, f"{activation}{seed}", step, value)
            # Shuffled steps: the store returns a history in no promised order.
            for (activation, seed), values in curves.items()
            for step, value in reversed(list(enumerate(values)))
        ],
        columns=["activation", "run", "step", "value"],
    )
    table = speed(history, ["activation"], 0.9, lower=False).set_index("activation")
    assert table.loc["relu", ["runs", "never"]].tolist() == [3, 0]
    half = 4.302653 * 0.57735 / np.sqrt(3)
    assert table.loc["relu", ["first", "first_low", "first_high"]].tolist() == pytest.approx(
        [8 / 3, 8 / 3 - half, 8 / 3 + half], abs=1e-5
    )
    areas = [np.mean(curves["relu", s]) for s in range(3)]
    assert table.loc["relu", "area"] == pytest.approx(np.mean(areas))
    assert table.loc["relu", ["area_low", "area_high"]].tolist() == pytest.approx(
        list(mean_interval(areas)[1:])
    )
    assert table.loc["sigmoid", ["runs", "never", "first"]].tolist() == [2, 1, 1]
    assert np.isnan(table.loc["sigmoid", "first_low"])
    assert table.loc["sigmoid", "area"] == pytest.approx((0.3 + 0.9) / 2)
