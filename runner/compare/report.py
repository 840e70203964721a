"""The comparison as text: the table aligned for the console or as Markdown, the sentences
that conclude it (the verdict, the methods, the power), every pair, and the speed table."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from runner.compare.table import COUNTS, group_columns, group_labels
from runner.stats.intervals import (
    AHEAD_BY_RANKS,
    ALPHA,
    BEST,
    BOOTSTRAP,
    BOOTSTRAP_FROM,
    EFFECT,
    FEW,
    LEVEL,
    MIN_N,
    PERMUTATION,
    POWER,
    RESAMPLES,
    SEED,
    SIGN,
    STUDENT,
    TIED,
    Spread,
    method_for,
)
from runner.stats.power import detectable, seeds_needed

# How many groups a sentence names before it counts the rest.
NAMED = 10


def number(value: float, signed: bool = False) -> str:
    """Four decimals, three significant digits below 0.0001 (a vanishing gradient would read
    0.0000), a true minus, a plus too when ``signed`` (a difference), a dash for no value."""
    if pd.isna(value):
        return "—"
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    if value and abs(value) < 0.0001:
        text = f"{value:+.3g}" if signed else f"{value:.3g}"
    return minus(text)


def minus(text: str) -> str:
    """``text`` with a leading hyphen made a true minus, as typeset; an exponent's stays."""
    return "−" + text[1:] if text.startswith("-") else text


def interval(low: float, high: float, signed: bool = False) -> str:
    """``[low, high]``."""
    return f"[{number(low, signed)}, {number(high, signed)}]"


def p_value(p: float) -> str:
    """A p-value to two significant digits, ``< 0.0001`` below that, ``—`` for none."""
    if pd.isna(p):
        return "—"
    return "< 0.0001" if p < 0.0001 else f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def p_is(p: float) -> str:
    """:func:`p_value` after "p" in a sentence: ``= 0.011``, or ``< 0.0001`` (not ``= <``)."""
    text = p_value(p)
    return text if text.startswith("<") else f"= {text}"


def effect(value: float, test: str | None) -> str:
    """An effect size with its name (:data:`runner.stats.intervals.EFFECT`): ``d_z −1.23``."""
    if pd.isna(value) or test is None:
        return "—"
    return f"{EFFECT[test]} {minus(f'{value:+.2f}')}"


def difference(diff: float, low: float, high: float, verdict: str) -> str:
    """A difference with its interval; ``(n < 3)`` without a test, ``(no CI)`` where an
    exact test stands in for the interval."""
    if pd.isna(diff):
        return "—"
    if pd.isna(low):
        return f"{number(diff, True)} ({FEW if verdict == FEW else 'no CI'})"
    return f"{number(diff, True)} {interval(low, high, True)}"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings: the groups, ``mean ± std`` of the metric (the mean alone when
    one run completed, ``—`` when none did), its 95% CI (``n < 3`` without one), min, max,
    the counts, the difference from the best with its CI, its test, effect size and
    Holm-adjusted p-value, the verdict and the rank."""
    metric = table.attrs.get("metric", "metric")
    groups = table[group_columns(table)]
    shown = groups.astype(object).where(groups.notna(), "—").astype(str)
    shown[f"{metric} mean ± std"] = [
        number(m) if pd.isna(s) else f"{number(m)} ± {number(s)}"
        for m, s in zip(table["mean"], table["std"], strict=True)
    ]
    shown[f"{LEVEL:.0%} CI"] = [
        "—" if pd.isna(m) else FEW if pd.isna(low) else interval(low, high)
        for m, low, high in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
    ]
    shown["min"] = table["min"].map(number)
    shown["max"] = table["max"].map(number)
    for column in ("n", *COUNTS):
        shown[column] = table[column].astype(str)
    shown[f"vs best, {LEVEL:.0%} CI"] = [
        "—" if verdict == BEST else difference(diff, low, high, verdict)
        for diff, low, high, verdict in table[["diff", "diff_low", "diff_high", "verdict"]]
        .astype(object)
        .to_numpy()
    ]
    shown["test"] = table["test"].map(lambda v: "—" if pd.isna(v) else v)
    shown["effect"] = [
        effect(e, t if isinstance(t, str) else None)
        for e, t in zip(table["effect"], table["test"], strict=True)
    ]
    shown["p (Holm)"] = table["p_holm"].map(p_value)
    shown["verdict"] = table["verdict"].map(lambda v: "—" if pd.isna(v) else v)
    shown["rank"] = table["rank"].map(lambda r: "—" if pd.isna(r) else str(r))
    return shown


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text: ``mean ± std`` of the metric, min, max, the counts, the
    difference from the best with its test, and the rank."""
    return shown(table).to_string(index=False)


def format_markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table, numbers right-aligned."""
    return markdown_table(shown(table), {*group_columns(table), "test", "verdict"})


def markdown_table(shown: pd.DataFrame, groups: set[str]) -> str:
    """A table of strings as Markdown, left-aligned in the ``groups`` columns and
    right-aligned in the others. Written here rather than with ``DataFrame.to_markdown``,
    which needs ``tabulate`` for what is a few lines."""

    def row(cells: Iterable[str]) -> str:
        """One line of the table, with ``|`` in a cell escaped."""
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [
        row(shown.columns),
        row("---" if c in groups else "---:" for c in shown.columns),
        *(row(cells) for cells in shown.itertuples(index=False)),
    ]
    return "\n".join(lines) + "\n"


def strata(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The table's parts that are compared apart (one per dataset), each with the words
    that name it in a sentence (``On iris: ``), empty for a table of one."""
    columns = table.attrs.get("strata", [])
    if not columns:
        return [("", table)]
    parts = list(table.groupby(columns, sort=False, dropna=False))
    if len(parts) == 1:
        return [("", table)]
    return [(f"On {', '.join(map(str, key))}: ", part) for key, part in parts]


def named(labels: list[str]) -> str:
    """Up to :data:`NAMED` labels, and how many more there are."""
    if len(labels) <= NAMED:
        return ", ".join(labels)
    return f"{', '.join(labels[:NAMED])} and {len(labels) - NAMED} more"


def conclusion(table: pd.DataFrame) -> str:
    """The sentences under the table, one per dataset: the best group against the next
    best mean, either indistinguishable from it or better, at this n, with the difference,
    its 95% CI, test and Holm-adjusted p-value, then the other groups tied with the best;
    nothing for a dataset with fewer than two means."""
    lower = table.attrs["lower_is_better"]
    sentences = [
        prefix + _conclude(part[part["mean"].notna()].reset_index(drop=True), lower)
        for prefix, part in strata(table)
        if part["mean"].notna().sum() >= 2
    ]
    return " ".join(sentences)


def _conclude(ranked: pd.DataFrame, lower: bool) -> str:
    """:func:`conclusion` for one dataset's groups that have a mean."""
    labels = group_labels(ranked, group_columns(ranked))
    best = int(ranked.index[ranked["verdict"] == BEST][0])
    others = ranked.drop(index=best)
    second = int(others.sort_values("mean", ascending=lower, kind="stable").index[0])
    row = ranked.loc[second]
    n = ranked.loc[best, "n"]
    at = f"n = {n}" if n == row["n"] else f"n = {n} and {row['n']}"
    if row["verdict"] == FEW:
        sentence = (
            f"{labels[best]} has the best mean, {number(abs(row['diff']))} ahead of "
            f"{labels[second]}, but at {at} there is no {LEVEL:.0%} CI ({FEW}) to say whether "
            "that is more than noise."
        )
    else:
        ci = "" if pd.isna(row["diff_low"]) else f", {LEVEL:.0%} CI "
        ci += "" if pd.isna(row["diff_low"]) else interval(row["diff_low"], row["diff_high"], True)
        detail = (
            f"{labels[second]} − {labels[best]} = {number(row['diff'], True)}{ci}, "
            f"{row['test']}, Holm-adjusted p {p_is(row['p_holm'])}"
        )
        claim = {
            TIED: f"{labels[best]} and {labels[second]} are indistinguishable",
            AHEAD_BY_RANKS: f"{labels[best]} has the better mean and {labels[second]} the "
            "better ranks",
        }.get(row["verdict"], f"{labels[best]} is better than {labels[second]}, the next best,")
        sentence = f"{claim} at {at} ({detail})."
    tied = [labels[i] for i in others.index if i != second and others.loc[i, "verdict"] == TIED]
    return sentence + (f" Also tied with the best: {named(tied)}." if tied else "")


def methods(table: pd.DataFrame) -> str:
    """The sentence that says how the table's intervals and verdicts were worked out:
    which interval for which n, the clipping to the metric's range, the tests, and Holm's
    correction over how many comparisons."""
    ns = table.loc[table["mean"].notna() & (table["n"] >= MIN_N), "n"]
    found = {method_for(int(n)) for n in ns}
    how = {
        STUDENT: f"Student t below {BOOTSTRAP_FROM} runs",
        BOOTSTRAP: f"a {BOOTSTRAP} from {BOOTSTRAP_FROM} runs ({RESAMPLES:,} resamples, seed "
        f"{SEED})",
    }
    parts = []
    if found:
        intervals = " and ".join(how[m] for m in (STUDENT, BOOTSTRAP) if m in found)
        limits = table.attrs.get("bounds")
        within = "" if limits is None else f", kept within [{limits[0]:g}, {limits[1]:g}]"
        parts.append(f"Intervals: {LEVEL:.0%}, {intervals}{within}.")
    tested = table[table["p"].notna()]
    if len(tested):
        tests = ", ".join(dict.fromkeys(tested["test"]))
        exact = " and ".join(t for t in (SIGN, PERMUTATION) if t in set(tested["test"]))
        fallback = (
            f" The {exact} stands in, with no CI, where the values take too few distinct "
            "values for an interval."
            if exact
            else ""
        )
        count = f"{len(tested)} comparison{'s' * (len(tested) > 1)}"
        apart = len(strata(table)) > 1
        best = "the best of its dataset" if apart else "the best"
        over = f"each dataset's comparisons ({count} in all)" if apart else f"the table's {count}"
        parts.append(
            f"Verdicts: each group against {best} by {tests}; p-values Holm-adjusted over "
            f"{over}, tied when p ≥ {ALPHA:g}.{fallback}"
        )
    return " ".join(parts)


def _spread_words(spread: Spread) -> str:
    """``the paired spread (sd 0.0048)`` or ``the spread of the runs (sd 0.0048)``."""
    kind = "paired differences" if spread.paired else "runs about their means"
    return f"the observed sd of the {kind}, {number(spread.sd)}"


def power(table: pd.DataFrame, delta: float | None = None) -> str:
    """The sentence that ends the table, per dataset: the smallest difference its n tells
    apart with 80% power at the 5% level, from the observed spread; and with ``delta``, how
    many seeds per group would tell that difference apart."""
    spreads = table.attrs.get("spread", {})
    sentences = []
    for prefix, part in strata(table):
        columns = table.attrs.get("strata", [])
        key = tuple(part[columns].iloc[0]) if columns else ()
        spread = spreads.get(key)
        if spread is None:
            sentences.append(f"{prefix}Power: too few runs to estimate the spread.")
            continue
        smallest = detectable(spread)
        if not spread.sd:
            sentence = f"{prefix}Power: the runs do not spread, so there is none to work out."
        elif np.isnan(smallest):
            sentence = (
                f"{prefix}Power: n = {spread.n} is too few to tell any difference apart "
                f"({MIN_N} at least)."
            )
        else:
            sentence = (
                f"{prefix}Power: with n = {spread.n} and {_spread_words(spread)}, the smallest "
                f"difference told apart {POWER:.0%} of the time at the {ALPHA:.0%} level is "
                f"{number(smallest)}."
            )
        if delta is not None:
            needed = seeds_needed(delta, spread)
            count = "more than 100,000" if needed is None else f"{needed}"
            sentence += f" To tell apart {number(delta)}: {count} seeds per group."
        sentences.append(sentence)
    return " ".join(sentences)


def _pairs_shown(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs as strings: the two groups, ``other − group`` with its CI, test, effect,
    Holm-adjusted p-value and verdict."""
    label = " · ".join
    shown = pd.DataFrame(
        {
            "group": [label("—" if pd.isna(v) else str(v) for v in key) for key in pairs["group"]],
            "other": [label("—" if pd.isna(v) else str(v) for v in key) for key in pairs["other"]],
        }
    )
    shown[f"other − group, {LEVEL:.0%} CI"] = [
        difference(d, lo, hi, v)
        for d, lo, hi, v in pairs[["diff", "diff_low", "diff_high", "verdict"]].to_numpy()
    ]
    shown["test"] = pairs["test"].to_numpy()
    shown["effect"] = [effect(e, t) for e, t in zip(pairs["effect"], pairs["test"], strict=True)]
    shown["p (Holm)"] = pairs["p_holm"].map(p_value).to_numpy()
    shown["other vs group"] = pairs["verdict"].to_numpy()
    return shown


def format_pairs(pairs: pd.DataFrame, markdown: bool) -> str:
    """Every pair's difference under the sentence that says how to read it: as Markdown,
    or as aligned text."""
    over = (
        "each dataset's pairs"
        if pairs.attrs.get("strata")
        else f"the {pairs['p'].notna().sum()} pairs"
    )
    note = (
        f"Every pair: `other − group`, the better mean as `group`, with its {LEVEL:.0%} CI, "
        f"test and effect size; p-values Holm-adjusted over {over}, tied when p ≥ {ALPHA:g}."
    )
    shown = _pairs_shown(pairs)
    if markdown:
        return f"{note}\n\n{markdown_table(shown, {'group', 'other', 'test', 'other vs group'})}"
    return f"{note.replace('`', '')}\n{shown.to_string(index=False)}"


def format_speed(pace: pd.DataFrame, markdown: bool) -> str:
    """The speed table under the sentence that says what its columns are: as Markdown, or
    as aligned text."""
    name, level = pace.attrs["metric"], pace.attrs["level"]
    op = "≤" if pace.attrs["lower_is_better"] else "≥"
    by = list(pace.columns[: list(pace.columns).index("runs")])
    shown = pace[by].astype(object).where(pace[by].notna(), "—").astype(str)
    runs, reached = pace["runs"].fillna(0).astype(int), pace["reached"].fillna(0).astype(int)
    shown["runs"] = runs.astype(str)
    shown["reached"] = [f"{r}/{n}" for r, n in zip(reached, runs, strict=True)]

    def epoch(value: float) -> str:
        return "—" if pd.isna(value) else f"{value:.0f}"

    shown[f"median epoch {op} {level:g}, {LEVEL:.0%} CI"] = [
        "never"
        if n and not r
        else "—"
        if np.isnan(median)
        else f"{epoch(median)} [{epoch(low)}, {epoch(high)}]"
        for n, r, median, low, high in zip(
            runs,
            reached,
            pace["median"].astype(float),
            pace["median_low"].astype(float),
            pace["median_high"].astype(float),
            strict=True,
        )
    ]

    def cell(mean: float, low: float, high: float) -> str:
        """``mean [low, high]``, ``mean (n < 3)``, or ``—`` without a mean."""
        if pd.isna(mean):
            return "—"
        return (
            f"{number(mean)} ({FEW})" if pd.isna(low) else f"{number(mean)} {interval(low, high)}"
        )

    shown[f"{name} area / epochs"] = [
        cell(*values) for values in pace[["area", "area_low", "area_high"]].to_numpy()
    ]
    note = (
        f"Speed: the Kaplan–Meier median of the first epoch (from 1) whose `{name}` is {op} "
        f"{level:g}, each run that never got there censored at its last epoch, with its "
        f"{LEVEL:.0%} CI (log-log, Brookmeyer–Crowley; `—`: not within the epochs run); "
        f"`reached`: the runs that got there; the area under each run's `{name}` curve "
        f"divided by its epochs, mean and {LEVEL:.0%} CI over every run."
    )
    if markdown:
        return f"{note}\n\n{markdown_table(shown, set(by))}"
    return f"{note.replace('`', '')}\n{shown.to_string(index=False)}"
