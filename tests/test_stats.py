"""runner/stats/ against values worked out by hand and against scipy.stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from runner.stats.differences import (
    against_best,
    holm,
    paired_difference,
    pairwise,
    shared_ranks,
    unpaired_difference,
)
from runner.stats.intervals import (
    AHEAD_BY_RANKS,
    BEST,
    FEW,
    PAIRED_BOOTSTRAP,
    PAIRED_T,
    PERMUTATION,
    RANK_SUM,
    RESAMPLES,
    SEED,
    SIGN,
    SIGNED_RANK,
    TIED,
    UNPAIRED_BOOTSTRAP,
    WELCH,
    WILCOXON,
    WORSE,
    Spread,
    mean_interval,
    resolution,
    rounded,
)
from runner.stats.power import detectable, seeds_needed
from runner.stats.speed import curve_area, first_epoch, median_epoch, speed
from runner.stats.tuning import pick_tuned


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
    found = paired_difference(a, best)
    assert found[:3] == pytest.approx((-0.006667, -0.021009, 0.007676), abs=1e-6)
    want = scipy_stats.ttest_rel(a, best)
    assert found[1:3] == pytest.approx(tuple(want.confidence_interval()))
    assert (found.test, found.p) == (PAIRED_T, pytest.approx(want.pvalue))
    # d_z: the mean difference over the differences' sd, −0.00667 / 0.00577.
    assert found.effect == pytest.approx(-1.154701, abs=1e-6)


def test_welch_difference_matches_scipy_and_the_satterthwaite_df():
    a, best = [1, 2, 3], [2, 4, 6, 8]
    estimate, low, high, test, effect, p = unpaired_difference(a, best)
    # Variances of the means 1/3 and 5/3: se sqrt(2), df 4 / (1/18 + 25/27) = 4.0755.
    assert (estimate, test) == (-3, WELCH)
    half = scipy_stats.t.ppf(0.975, 4 / (1 / 18 + 25 / 27)) * np.sqrt(2)
    assert (low, high) == pytest.approx((-3 - half, -3 + half))
    want = scipy_stats.ttest_ind(a, best, equal_var=False)
    assert (low, high) == pytest.approx(tuple(want.confidence_interval()))
    assert p == pytest.approx(want.pvalue)
    # Cohen's d over the two variances' average: −3 / sqrt((1 + 20/3) / 2).
    assert effect == pytest.approx(-3 / np.sqrt((1 + 20 / 3) / 2))
    assert np.isnan(unpaired_difference([1, 2], best).low)


def test_runs_with_no_spread_on_either_side_take_the_exact_permutation_test_not_a_point():
    found = unpaired_difference([0.5, 0.5, 0.5], [0.7, 0.7, 0.7])
    # 3 against 3 split 20 ways; the observed split and its mirror are the 2 as extreme.
    assert (found.test, found.p) == (PERMUTATION, pytest.approx(0.1))
    assert found.estimate == pytest.approx(-0.2)
    assert np.isnan(found.low) and np.isnan(found.high)


def test_pairing_removes_what_a_seed_does_to_both():
    # Seeds move both groups alike; every seed puts the best 0.010 to 0.012 ahead.
    best = np.array([0.90, 0.95, 0.99])
    other = best - [0.010, 0.012, 0.011]
    paired = paired_difference(other, best)
    assert paired.test == PAIRED_T and paired.high < 0
    assert paired.p == pytest.approx(scipy_stats.ttest_rel(other, best).pvalue)
    low, high = unpaired_difference(other, best)[1:3]
    assert low < 0 < high


def test_three_seeds_each_exactly_two_samples_behind_are_no_evidence_by_the_sign_test():
    # Test accuracy on digits moves in steps of 1/360: three seeds each 2 samples behind
    # once printed −0.0056 [−0.0056, −0.0056], "worse than the best". 3 of 3 one way is
    # a sign-test p of 2 × 1/8.
    # As float32 logs them, and as compared: each difference differs from the others by a
    # rounding error of 1e-7, which must not pass for a spread.
    best = rounded(np.float32(np.array([348, 346, 350]) / 360))
    behind = rounded(np.float32(np.array([346, 344, 348]) / 360))
    assert len(set(behind - best)) > 1
    found = paired_difference(behind, best)
    assert found.test == SIGN and found.p == pytest.approx(0.25)
    assert found.estimate == pytest.approx(-2 / 360, abs=1e-6)
    assert np.isnan(found.low) and np.isnan(found.high)
    assert found.effect == -1.0
    assert found.p == pytest.approx(scipy_stats.binomtest(0, 3).pvalue)


def test_ten_pairs_with_two_distinct_differences_take_the_sign_test_not_the_bootstrap():
    best = np.linspace(0.95, 0.97, 10)
    # Eight seeds 1 sample behind, two level: the bootstrap could only draw a lattice of
    # means; the sign test counts 8 of 8 non-zero differences one way.
    found = paired_difference(best - np.r_[[1 / 360] * 8, 0, 0], best)
    assert found.test == SIGN
    assert found.p == pytest.approx(2 / 2**8)


def test_from_ten_values_the_mean_interval_is_scipys_percentile_bootstrap_with_a_fixed_seed():
    values = np.array([0.961, 0.972, 0.956, 0.930, 0.990, 0.947, 0.958, 0.966, 0.951, 0.969])
    want = scipy_stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(SEED),
    ).confidence_interval
    assert mean_interval(values) == pytest.approx((values.mean(), want.low, want.high))
    # The same report every time.
    assert mean_interval(values) == mean_interval(values)
    # Below ten values: Student t.
    t = scipy_stats.t.interval(0.95, 8, values[:9].mean(), scipy_stats.sem(values[:9]))
    assert mean_interval(values[:9])[1:] == pytest.approx(t)


def scipys_bootstrap(differences: np.ndarray):
    """scipy's percentile bootstrap of the mean, as runner.stats calls it."""
    return scipy_stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )


def test_a_paired_difference_of_ten_seeds_is_bootstrapped_and_its_p_agrees_with_its_interval():
    rng = np.random.default_rng(3)
    best = rng.normal(0.95, 0.01, 10)
    # Near 0: hundreds of the resamples fall past it; the p-value counts them.
    near = best - rng.normal(0.0015, 0.004, 10)
    found, want = paired_difference(near, best), scipys_bootstrap(near - best)
    assert found.test == PAIRED_BOOTSTRAP
    assert found[1:3] == pytest.approx(tuple(want.confidence_interval))
    # A resampled mean within the resolution of 0 (values compared on 6 digits) is a tie.
    draws, tie = want.bootstrap_distribution, resolution(best.max())
    past = np.sum(draws > tie) + np.sum(np.abs(draws) <= tie) / 2
    assert past > 100 and found.p == pytest.approx(2 * (past + 1) / 10_000)
    assert found.low < 0 < found.high and found.p > 0.05


def test_a_resample_whose_differences_cancel_is_a_tie_at_0_not_float_noise_on_one_side():
    # The activations report's relu − tanh, in test samples of 360, as Keras's float32
    # accuracies give them: resamples such as (−1, +1, ...) cancel to a mean of ±1e-17.
    tanh = np.float32(np.array([350, 347, 347, 352, 350, 349, 347, 347, 349, 347]) / 360)
    relu = np.float32(np.array([349, 347, 346, 345, 346, 350, 346, 346, 343, 348]) / 360)
    found = paired_difference(relu.astype(float), tanh.astype(float))
    # The same resamples in whole samples, where a cancelling resample is exactly 0.
    draws = scipys_bootstrap(np.round((relu - tanh) * 360).astype(float)).bootstrap_distribution
    ties, past = np.sum(draws == 0), np.sum(draws > 0)
    assert ties > 0
    assert found.test == PAIRED_BOOTSTRAP
    assert found.p == pytest.approx(2 * (past + ties / 2 + 1) / 10_000)


def test_a_bootstrap_p_value_far_past_its_resamples_comes_from_their_normal_approximation():
    rng = np.random.default_rng(3)
    best = rng.normal(0.95, 0.01, 10)
    far = best - rng.normal(0.006, 0.004, 10)
    found, want = paired_difference(far, best), scipys_bootstrap(far - best)
    draws = want.bootstrap_distribution
    # No resample reaches 0: counted, p would be 2 / 10,000 at most, and Holm's correction
    # over more than 250 pairs could never find anything.
    assert np.sum(draws >= 0) == 0 and found.high < 0
    z = abs((far - best).mean()) / draws.std(ddof=1)
    assert found.p == pytest.approx(2 * scipy_stats.norm.sf(z)) and found.p < 1e-10


def test_every_pair_of_many_groups_of_ten_seeds_can_still_be_told_apart_after_holm():
    rng = np.random.default_rng(5)
    seeds = rng.normal(0, 0.01, 10)
    # 30 groups 0.01 apart, each seed moving all of them alike, with a little noise: 435
    # pairs, and a group 0.1 behind another is told apart from it by any measure.
    frame = runs(
        [
            (f"g{g:02d}", s, 0, 0.95 - g / 100 + seeds[s] + rng.normal(0, 0.003))
            for g in range(30)
            for s in range(10)
        ]
    )
    pairs = pairwise(frame, ["activation"], ["seed", "data_seed"], lower=False)
    assert len(pairs) == 435 and set(pairs["test"]) == {PAIRED_BOOTSTRAP}
    far = pairs[
        [
            int(o[0][1:]) - int(g[0][1:]) >= 10
            for g, o in zip(pairs["group"], pairs["other"], strict=True)
        ]
    ]
    assert (far["verdict"] == "worse").all()


def test_two_groups_of_ten_unpaired_runs_take_the_two_sample_bootstrap():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.90, 0.02, 10), rng.normal(0.95, 0.02, 12)
    found = unpaired_difference(a, b)
    want = scipy_stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(SEED),
    ).confidence_interval
    assert found.test == UNPAIRED_BOOTSTRAP
    assert found[1:3] == pytest.approx((want.low, want.high))
    assert found.p < 0.001


def test_an_accuracys_interval_never_leaves_0_to_1():
    # Student t on [1.0, 1.0, 0.9944] reaches 1.008: clipped to 1, as no mean exceeds it.
    mean, low, high = mean_interval([1.0, 1.0, 0.9944], bounds=(0.0, 1.0))
    assert mean == pytest.approx(0.998133, abs=1e-6) and high == 1.0 and low < mean
    assert mean_interval([1.0, 1.0, 0.9944])[2] > 1
    # The bootstrap never leaves the values' range in the first place.
    values = np.r_[[1.0] * 8, 0.9972, 0.9944]
    assert mean_interval(values, bounds=(0.0, 1.0))[2] <= 1.0
    # A difference of two accuracies stays within [−1, 1].
    far = paired_difference([0.02, 0.5, 0.98], [0.99, 0.51, 0.03], bounds=(0.0, 1.0))
    assert -1 <= far.low and far.high <= 1


def test_holm_matches_a_hand_computed_adjustment():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04, then never
    # below the one before: 0.02, 0.03, 0.06, 0.06. NaN is no comparison.
    assert holm([0.01, 0.04, 0.03, 0.005, np.nan])[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([0.01, np.nan])[1])
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])


def test_wilcoxon_matches_scipy_and_reports_the_rank_biserial_correlation():
    a = np.array([0.91, 0.93, 0.90, 0.95, 0.92, 0.94])
    best = np.array([0.93, 0.94, 0.93, 0.95, 0.95, 0.96])
    found = paired_difference(a, best, test=WILCOXON)
    assert found.test == SIGNED_RANK
    assert found.p == pytest.approx(scipy_stats.wilcoxon(a - best).pvalue)
    # Every non-zero difference is negative: r = (0 − R−) / R− = −1.
    assert found.effect == pytest.approx(-1.0)
    # The interval beside it is the mean difference's, as for the default test.
    assert found[1:3] == pytest.approx(tuple(scipy_stats.ttest_rel(a, best).confidence_interval()))


def test_runs_that_cannot_be_paired_take_mann_whitney_under_wilcoxon():
    a, b = np.array([0.90, 0.92, 0.91, 0.89]), np.array([0.93, 0.91, 0.95])
    found = unpaired_difference(a, b, test=WILCOXON)
    want = scipy_stats.mannwhitneyu(a, b)
    assert (found.test, found.p) == (RANK_SUM, pytest.approx(want.pvalue))
    # a wins 1 of the 12 comparisons (0.92 > 0.91) and ties 1 (0.91): U = 1.5, and the
    # rank-biserial r = 2 × 1.5 / 12 − 1.
    assert want.statistic == 1.5 and found.effect == pytest.approx(-0.75)


def test_a_rank_test_can_find_a_group_ahead_by_ranks_though_behind_by_mean():
    best = np.r_[0.50, [0.90] * 19]
    # Ahead by 0.01 on 19 seeds, 0.4 behind on the first: a lower mean (by 0.0105), and
    # better ranks (W− = 20 of 210, p = 0.0004).
    other = np.r_[0.10, best[1:] + 0.01]
    frame = pd.DataFrame(
        [("a", s, 0, v) for s, v in enumerate(best)]
        + [("b", s, 0, v) for s, v in enumerate(other)],
        columns=["activation", "seed", "data_seed", "value"],
    )
    table = against_best(frame, ["activation"], ["seed", "data_seed"], False, WILCOXON)
    assert table["verdict"].tolist() == [BEST, AHEAD_BY_RANKS]


def runs(rows: list[tuple]) -> pd.DataFrame:
    """Completed runs as ``against_best`` takes them: activation, seed, data seed, value."""
    return pd.DataFrame(rows, columns=["activation", "seed", "data_seed", "value"])


def test_against_best_pairs_when_the_seeds_match_and_says_tied_or_worse():
    frame = runs(
        [
            *[("tanh", s, 0, v) for s, v in enumerate([0.97, 0.97, 0.96])],
            # The same seeds and data: paired; the differences -0.01, 0, -0.01 hold 0.
            *[("relu", s, 0, v) for s, v in enumerate([0.96, 0.97, 0.95])],
            # Always 0.05 behind: no spread, so the sign test: 3 of 3, p = 0.25, tied.
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
        "linear": TIED,
        "elu": TIED,
        "sigmoid": FEW,
    }
    assert pd.isna(table.loc["tanh", "test"])
    assert table["test"].drop("tanh").to_dict() == {
        "relu": PAIRED_T,
        "linear": SIGN,
        "elu": WELCH,
        "sigmoid": WELCH,
    }
    assert table.loc["relu", ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [-0.006667, -0.021009, 0.007676], abs=1e-6
    )
    assert table.loc["linear", "diff"] == pytest.approx(-0.05)
    assert table.loc["linear", ["diff_low", "diff_high"]].isna().all()
    welch = scipy_stats.ttest_ind([0.99, 0.90, 0.93], [0.97, 0.97, 0.96], equal_var=False)
    assert table.loc["elu", ["diff_low", "diff_high"]].tolist() == pytest.approx(
        list(welch.confidence_interval())
    )
    assert table.loc["sigmoid", "diff"] == pytest.approx(0.905 - 0.9667, abs=1e-4)
    # Holm over the three comparisons with a test; sigmoid's has none.
    raw = table.loc[["relu", "linear", "elu"], "p"].to_numpy()
    assert table.loc[["relu", "linear", "elu"], "p_holm"].tolist() == pytest.approx(holm(raw))
    assert raw[1] == pytest.approx(0.25) and pd.isna(table.loc["sigmoid", "p_holm"])


def test_verdicts_are_holm_adjusted_over_the_tables_comparisons():
    best = [0.95, 0.96, 0.97, 0.94]
    # Each behind on every seed; alone, each paired t-test gives p < 0.05 (0.00013, 0.032,
    # 0.048). Holm: 3 × 0.00013, then 2 × 0.032 = 0.064, and 0.048 no lower than that.
    behind = {
        "a": [0.92, 0.926, 0.938, 0.904],
        "b": [0.946, 0.94, 0.958, 0.924],
        "c": [0.948, 0.94, 0.958, 0.924],
    }
    frame = runs(
        [("best", s, 0, v) for s, v in enumerate(best)]
        + [(name, s, 0, v) for name, values in behind.items() for s, v in enumerate(values)]
    )
    table = against_best(frame, ["activation"], ["seed", "data_seed"], lower=False)
    others = table.drop("best")
    assert others["p"].tolist() == pytest.approx([0.000131, 0.031874, 0.047979], abs=1e-6)
    assert others["p_holm"].tolist() == pytest.approx([0.000394, 0.063748, 0.063748], abs=1e-6)
    assert others["verdict"].tolist() == [WORSE, TIED, TIED]


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


def test_groups_on_different_datasets_are_each_compared_with_their_own_best():
    frame = pd.DataFrame(
        [("iris", "relu", s, v) for s, v in enumerate([1.0, 0.97, 0.93])]
        + [("iris", "tanh", s, v) for s, v in enumerate([0.97, 0.93, 0.9])]
        + [("wine", "relu", s, v) for s, v in enumerate([0.94, 0.97, 0.92])]
        + [("wine", "tanh", s, v) for s, v in enumerate([0.97, 1.0, 0.94])],
        columns=["dataset", "activation", "seed", "value"],
    )
    table = against_best(
        frame, ["dataset", "activation"], ["seed", "dataset"], False, strata=["dataset"]
    )
    assert table["verdict"].to_dict() == {
        ("iris", "relu"): BEST,
        ("iris", "tanh"): table.loc[("iris", "tanh"), "verdict"],
        ("wine", "relu"): table.loc[("wine", "relu"), "verdict"],
        ("wine", "tanh"): BEST,
    }
    # Each within its dataset, paired by seed there.
    assert table.loc[("wine", "relu"), "diff"] == pytest.approx(-0.0267, abs=1e-4)
    assert table.loc[("iris", "tanh"), "test"] == PAIRED_T
    assert set(table.attrs["spread"]) == {("iris",), ("wine",)}


def test_pairwise_compares_every_pair_within_a_dataset_with_holm():
    frame = runs(
        [
            *[("tanh", s, 0, v) for s, v in enumerate([0.97, 0.975, 0.96])],
            *[("relu", s, 0, v) for s, v in enumerate([0.96, 0.97, 0.95])],
            *[("sigmoid", s, 0, v) for s, v in enumerate([0.88, 0.90, 0.87])],
        ]
    )
    pairs = pairwise(frame, ["activation"], ["seed", "data_seed"], lower=False)
    assert [(g[0], o[0]) for g, o in zip(pairs["group"], pairs["other"], strict=True)] == [
        ("tanh", "relu"),
        ("tanh", "sigmoid"),
        ("relu", "sigmoid"),
    ]
    want = scipy_stats.ttest_rel([0.88, 0.90, 0.87], [0.96, 0.97, 0.95])
    assert pairs.loc[2, ["diff_low", "diff_high"]].tolist() == pytest.approx(
        list(want.confidence_interval())
    )
    assert pairs["p_holm"].tolist() == pytest.approx(holm(pairs["p"].to_numpy()).tolist())
    assert pairs["verdict"].tolist()[1:] == ["worse", "worse"]


def test_shared_ranks_give_the_tied_rank_1_and_the_rest_follow_after_them():
    means = pd.Series([0.97, 0.96, 0.95, 0.90, np.nan])
    verdicts = pd.Series([BEST, TIED, WORSE, TIED, None])
    assert shared_ranks(means, verdicts, lower=False).tolist() == [1, 1, 4, 1, pd.NA]
    # Without intervals the ranks are the means', equal means sharing the better one.
    few = pd.Series([BEST, FEW, FEW, FEW])
    assert shared_ranks(pd.Series([0.1, 0.1, 0.2, 0.3]), few, lower=True).tolist() == [1, 1, 3, 4]
    assert shared_ranks(pd.Series([0.1, 0.2, 0.2, 0.3]), few, lower=True).tolist() == [1, 2, 2, 4]


def test_equal_results_logged_with_float32_noise_share_their_rank():
    # 669/720 as two runs logged it; the 7th significant digit is float32 rounding.
    assert rounded([0.929166704, 0.929166675]).tolist() == [0.929167, 0.929167]
    # Means of the rounded values: equal to the bit whatever the order they are summed in.
    elu = rounded([0.95, 0.929166704, 0.96]).mean()
    gelu = rounded([0.96, 0.929166675, 0.95]).mean()
    means = pd.Series({"relu": 0.99, "elu": elu, "gelu": gelu})
    verdicts = pd.Series({"relu": BEST, "elu": WORSE, "gelu": WORSE})
    assert shared_ranks(means, verdicts, lower=False).tolist() == [1, 2, 2]


def test_the_detectable_difference_and_the_seeds_needed_match_the_textbook_t_tests():
    # Paired t, two-sided 5%, 80% power: d_z = 0.5 needs 34 pairs, d_z = 0.8 needs 15; two
    # independent groups need 64 each for d = 0.5 (Cohen's tables, G*Power).
    paired = Spread(sd=0.01, n=34, paired=True)
    assert seeds_needed(0.005, paired) == 34
    assert seeds_needed(0.008, paired) == 15
    assert seeds_needed(0.005, Spread(sd=0.01, n=5, paired=False)) == 64
    # So 34 pairs tell 0.005 apart and 33 do not quite.
    assert detectable(paired) < 0.005 < detectable(paired._replace(n=33))
    assert seeds_needed(1e-7, paired) is None
    assert np.isnan(detectable(Spread(0.0, 3, True)))


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


def test_kaplan_meier_median_epoch_matches_a_hand_computed_censored_sample():
    # Ten runs: eight reach the level at epochs 1, 2, 2, 3, 3, 3, 4, 5; two never do in 6.
    # S(t), the share not there yet: 0.9, 0.7, 0.4, 0.3, 0.2 at t = 1..5; the median is 3,
    # where S first drops to 0.5 or below. Greenwood's sums: 0.01111, 0.04286, 0.15,
    # 0.23333, 0.4. The log-log band S^exp(±1.96 √G / |log S|): its lower side is 0.4733
    # at t = 1, its upper side 0.985, 0.892, 0.670, 0.578, 0.475 at t = 1..5, first at or
    # below 0.5 at t = 5. So the median is 3 with the interval [1, 5].
    epochs = np.array([1, 2, 2, 3, 3, 3, 4, 5, 6, 6])
    reached = np.array([True] * 8 + [False] * 2)
    assert median_epoch(epochs, reached) == (3, 1, 5)
    # Half the runs never there: S stops at 0.5 at epoch 3 (6 → 5 → 3 at risk), its band
    # never reaches 0.5: no upper end, rather than one past the last epoch.
    median, low, high = median_epoch(np.array([2, 3, 3, 5, 4, 6]), np.array([1, 1, 1, 1, 0, 0]) > 0)
    assert (median, low) == (3, 2) and np.isnan(high)
    assert all(np.isnan(median_epoch(np.array([4, 4]), np.array([False, False]))))


def test_speed_counts_the_runs_that_never_reach_the_level_as_censored():
    curves = {
        # Reaches 0.9 at epochs 2, 3 and 3.
        ("relu", 0): [0.5, 0.9, 0.95],
        ("relu", 1): [0.4, 0.8, 0.9],
        ("relu", 2): [0.6, 0.85, 0.92],
        # One run never gets there in its 3 epochs; the other at epoch 1.
        ("sigmoid", 0): [0.2, 0.3, 0.4],
        ("sigmoid", 1): [0.9, 0.9, 0.9],
        # 0.9 as float32 logs it, 0.8999999762: it has reached 0.9.
        ("tanh", 0): [0.5, 0.8999999762, 0.9],
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
    assert table.loc["relu", ["runs", "reached", "epochs"]].tolist() == [3, 3, 3]
    # S: 2/3 at epoch 2, 0 at epoch 3: the median is 3.
    assert table.loc["relu", "median"] == 3
    areas = [np.mean(curves["relu", s]) for s in range(3)]
    assert table.loc["relu", "area"] == pytest.approx(np.mean(areas))
    assert table.loc["relu", ["area_low", "area_high"]].tolist() == pytest.approx(
        list(mean_interval(areas)[1:])
    )
    # One of two reached it at epoch 1, the other is censored at 3: S(1) = 0.5.
    assert table.loc["sigmoid", ["runs", "reached", "median"]].tolist() == [2, 1, 1]
    assert table.loc["sigmoid", "area"] == pytest.approx((0.3 + 0.9) / 2)
    assert table.loc["tanh", "median"] == 2
