"""The statistics of a comparison: intervals of means and of differences, the tests behind
the verdicts with Holm's correction, effect sizes, ranks shared by groups the data cannot
tell apart, power, a tuned key chosen on validation, and how fast a curve gets somewhere.

Plain functions over numpy arrays and pandas DataFrames, with no MLflow in sight:
``runner.compare`` reads the runs and hands their numbers here. docs/statistics.md says
which method is used when, and why.

- Intervals are 95%: Student t below :data:`BOOTSTRAP_FROM` values, a percentile bootstrap
  (:data:`RESAMPLES` resamples, seed :data:`SEED`) from there on; none below :data:`MIN_N`.
  A metric bounded to ``bounds`` (an accuracy, a fraction) has its intervals clipped there.
- A difference's test matches its interval (paired or Welch t; the bootstrap's own
  p-value), unless its values are too few to spread (:data:`DISTINCT`): then an exact sign
  or permutation test decides. ``test=WILCOXON`` takes rank tests instead.
- The verdicts of one table are Holm-adjusted together, at the 5% level.
"""
