"""actlab's runner: ``python -m runner`` trains and records jobs, ``python -m runner.compare``
compares them."""

import os

# MLflow sends usage data unless told not to; a user who wants to share it sets this to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Through a server, MLflow prints each run's link as it ends, credentials included: the
# runner prints its own, masked, once per run or sweep.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
