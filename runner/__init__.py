"""actlab's runner: ``python -m runner`` trains and records jobs, ``python -m runner.compare``
compares them."""

import os

# MLflow sends usage data unless told not to; a user who wants to share it sets this to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
