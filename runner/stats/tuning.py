"""The tuned key of a comparison: each group's value of it, chosen on validation."""

from __future__ import annotations

import pandas as pd


def pick_tuned(frame: pd.DataFrame, groups: list[str], key: str, lower: bool) -> pd.DataFrame:
    """For each group, the value of ``key`` whose runs have the best mean ``score`` (a
    validation metric): among the values with the fewest lost runs, since a value where runs
    diverged or failed is not one to pick on its survivors' numbers.

    ``frame`` has one row per run: the ``groups`` columns, ``key``, ``score`` (NaN for a run
    that did not complete) and ``lost`` (True for such a run). Equal means go to the
    smallest value. Returns one row per group: its columns, ``key``'s chosen value, that
    value's ``score`` mean and ``lost`` count. Nothing else in ``frame`` is read, test
    metrics included."""
    per_value = (
        frame.groupby([*groups, key], dropna=False, sort=True)
        .agg(score=("score", "mean"), lost=("lost", "sum"))
        .reset_index()
    )
    per_value = per_value[per_value["score"].notna()]
    # Equal scores go to the smallest value, by number when the values are numbers: MLflow
    # keeps params as text, where "1e-05" would sort after "0.001".
    numbers = pd.to_numeric(per_value[key], errors="coerce")
    per_value = per_value.assign(_order=numbers if numbers.notna().all() else per_value[key])
    order = per_value.sort_values(
        ["lost", "score", "_order"], ascending=[True, lower, True], kind="stable"
    )
    chosen = order.groupby(groups, dropna=False, sort=True).head(1).drop(columns="_order")
    return chosen.reset_index(drop=True)
