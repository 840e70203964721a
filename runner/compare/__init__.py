"""Comparison: MLflow runs -> each combination's metric over seeds, as a table and a figure.

``python -m runner.compare`` picks runs (the latest sweep, a named sweep, an experiment, an
MLflow filter), groups them by the params that vary, ranks the groups by a metric within
each dataset, prints the table and writes ``comparison.md``, ``comparison.csv`` and
``comparison.png``, which it also records on the sweep's parent runs; the end of a sweep
records the sweep's own comparison there (:func:`record_sweep`).

- :mod:`~runner.compare.runs`: the runs from the store, as ``mlflow.search_runs`` returns
  them (``params.*``, ``metrics.*``, ``tags.*`` columns), and their metrics' histories;
- :mod:`~runner.compare.table`: the groups, their statistics and ranks, and their speed;
- :mod:`~runner.compare.report`: the table as text and Markdown, and its conclusion;
- :mod:`~runner.compare.figure`: the comparison's figures;
- :mod:`~runner.compare.record`: its files, and what a parent run keeps of it for the UI;
- :mod:`~runner.compare.cli`: the command line.
"""

from runner.compare.cli import main
from runner.compare.record import record_sweep, report_sweep
from runner.compare.report import format_table
from runner.compare.runs import distinct, sweep_runs
from runner.compare.table import summarize

__all__ = [
    "distinct",
    "format_table",
    "main",
    "record_sweep",
    "report_sweep",
    "summarize",
    "sweep_runs",
]
