"""Power: the smallest difference a table's n tells apart at 80% power and the 5% level,
and the seeds a given difference needs."""

from __future__ import annotations

import numpy as np
from scipy import stats

from runner.stats.intervals import ALPHA, MIN_N, POWER, Spread


def _power(delta: float, spread: Spread, n: int) -> float:
    """The chance that a two-sided t-test at :data:`ALPHA` tells apart a true difference
    ``delta`` with ``n`` per group (pairs, or runs on each side), from the noncentral t."""
    if spread.paired:
        df, nc = n - 1, delta * np.sqrt(n) / spread.sd
    else:
        df, nc = 2 * n - 2, delta / (spread.sd * np.sqrt(2 / n))
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    # scipy's far tail of the noncentral t comes out NaN where it is all but 0.
    wrong_side = np.nan_to_num(stats.nct.cdf(-critical, df, nc), nan=0.0)
    return float(stats.nct.sf(critical, df, nc) + wrong_side)


def detectable(spread: Spread) -> float:
    """The smallest difference that ``spread.n`` seeds tell apart with :data:`POWER` (80%)
    at the 5% level, given the observed spread: NaN without a spread or with fewer than
    :data:`MIN_N` seeds, where no interval is given either."""
    if not spread.sd or spread.n < MIN_N:
        return np.nan
    from scipy.optimize import brentq

    high = spread.sd
    while _power(high, spread, spread.n) < POWER:
        high *= 2
    return float(brentq(lambda d: _power(d, spread, spread.n) - POWER, 0.0, high, xtol=1e-12))


def seeds_needed(delta: float, spread: Spread, most: int = 100_000) -> int | None:
    """The fewest seeds per group that tell apart a difference ``delta`` with
    :data:`POWER` at the 5% level, given the observed spread; None when even ``most``
    would not, or there is no spread to go by."""
    if not spread.sd or not delta:
        return None

    def enough(n: int) -> bool:
        return _power(abs(delta), spread, n) >= POWER

    # Doubling, then halving the last step: the noncentral t is only ever asked about
    # sample sizes near the answer, where it is accurate.
    high = 2
    while not enough(high):
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(2, high // 2)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return low
