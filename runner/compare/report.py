"""The comparison as text: the table aligned for the console or as Markdown, the sentence
that concludes it, and the speed table."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from runner.compare.table import COUNTS, group_columns, group_labels
from runner.stats import BEST, FEW, LEVEL, TIED


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


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings: the groups, ``mean ± std`` of the metric (the mean alone when
    one run completed, ``—`` when none did), its 95% CI (``n < 3`` without one), min, max,
    the counts, the difference from the best with its CI, its test (paired by seed or
    Welch), the verdict and the rank."""
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
        "—"
        if verdict == BEST or pd.isna(diff)
        else f"{number(diff, True)} " + (f"({FEW})" if pd.isna(low) else interval(low, high, True))
        for diff, low, high, verdict in zip(
            table["diff"], table["diff_low"], table["diff_high"], table["verdict"], strict=True
        )
    ]
    for column in ("test", "verdict"):
        shown[column] = table[column].map(lambda v: "—" if pd.isna(v) else v)
    shown["rank"] = table["rank"].map(lambda r: "—" if pd.isna(r) else str(r))
    return shown


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text: ``mean ± std`` of the metric, min, max, the counts and
    the rank."""
    return _shown(table).to_string(index=False)


def format_markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table, numbers right-aligned."""
    return markdown_table(_shown(table), {*group_columns(table), "test", "verdict"})


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


def conclusion(table: pd.DataFrame) -> str:
    """The sentence under the table: the best group against the next best mean, either
    indistinguishable from it or better, at this n, with the difference and its 95% CI and
    test, then the other groups tied with the best; empty with fewer than two means."""
    ranked = table[table["mean"].notna()].reset_index(drop=True)
    if len(ranked) < 2:
        return ""
    labels = group_labels(ranked, group_columns(ranked))
    best = int(ranked.index[ranked["verdict"] == BEST][0])
    others = ranked.drop(index=best)
    second = int(others.sort_values("mean", ascending=table.attrs["lower_is_better"]).index[0])
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
        detail = (
            f"{labels[second]} − {labels[best]} = {number(row['diff'], True)}, {LEVEL:.0%} CI "
            f"{interval(row['diff_low'], row['diff_high'], True)}, {row['test']}"
        )
        claim = (
            f"{labels[best]} and {labels[second]} are indistinguishable"
            if row["verdict"] == TIED
            else f"{labels[best]} is better than {labels[second]}, the next best,"
        )
        sentence = f"{claim} at {at} ({detail})."
    tied = [labels[i] for i in others.index if i != second and others.loc[i, "verdict"] == TIED]
    return sentence + (f" Also tied with the best: {', '.join(tied)}." if tied else "")


def format_speed(pace: pd.DataFrame, markdown: bool) -> str:
    """The speed table under the sentence that says what its columns are: as Markdown, or
    as aligned text."""
    name, level = pace.attrs["metric"], pace.attrs["level"]
    op = "≤" if pace.attrs["lower_is_better"] else "≥"
    by = list(pace.columns[: list(pace.columns).index("runs")])
    shown = pace[by].astype(object).where(pace[by].notna(), "—").astype(str)
    shown["runs"] = pace["runs"].fillna(0).astype(int).astype(str)
    shown["never"] = pace["never"].fillna(0).astype(int).astype(str)

    def cell(mean: float, low: float, high: float, digits: int) -> str:
        """``mean [low, high]``, ``mean (n < 3)``, or ``—`` without a mean."""
        if pd.isna(mean):
            return "—"
        if pd.isna(low):
            return f"{mean:.{digits}f} ({FEW})"
        low, high = minus(f"{low:.{digits}f}"), minus(f"{high:.{digits}f}")
        return f"{mean:.{digits}f} [{low}, {high}]"

    shown[f"first epoch {op} {level:g}"] = [
        "never" if runs and runs == never else cell(first, low, high, 2)
        for runs, never, first, low, high in pace[
            ["runs", "never", "first", "first_low", "first_high"]
        ].to_numpy()
    ]
    shown[f"{name} area / epochs"] = [
        cell(*values, 4) for values in pace[["area", "area_low", "area_high"]].to_numpy()
    ]
    note = (
        f"Speed: the first epoch (from 1) whose `{name}` is {op} {level:g}, mean and "
        f"{LEVEL:.0%} CI over the runs that got there (`never`: the runs that did not); the "
        f"area under each run's `{name}` curve divided by its epochs, mean and {LEVEL:.0%} CI "
        "over every run."
    )
    if markdown:
        return f"{note}\n\n{markdown_table(shown, set(by))}"
    return f"{note.replace('`', '')}\n{shown.to_string(index=False)}"
