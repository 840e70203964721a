# Every target that runs Python installs first, so `make run` and `make test` work on a
# fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STORE := sqlite:///$(CURDIR)/mlflow.db
# Where `make ui` and `make server` serve: `make ui HOST=... PORT=...`, else MLflow's own
# MLFLOW_HOST and MLFLOW_PORT from the environment. The runner's links read those two, so
# `make ui PORT=5001` and `make sweep PORT=5001` agree, and so do `MLFLOW_PORT=5001 make ui`
# and `MLFLOW_PORT=5001 python -m runner`. Not HOST and PORT from the environment: shells
# and platforms set those for other things, and the runner would not follow them.
HOST = $(or $(MLFLOW_HOST),127.0.0.1)
PORT = $(or $(MLFLOW_PORT),5000)
export MLFLOW_HOST := $(HOST)
export MLFLOW_PORT := $(PORT)
# MLflow's usage data, off unless the caller sets it (MLFLOW_DISABLE_TELEMETRY=false).
export MLFLOW_DISABLE_TELEMETRY ?= true
# The ray extra holds joblib and cloudpickle back: it gets a venv of its own, so that
# .venv stays the default install that the other tests check.
RAY_VENV ?= .venv-ray

.PHONY: help install install-gpu run test test-tensorflow test-slow sweep compare ui server lint plots test-ray

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## Create .venv and install the runner with its dev tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install-gpu: install  ## Add the CUDA builds of JAX and TensorFlow (Linux, NVIDIA)
	$(PY) -m pip install "jax[cuda12]"
	$(PY) -m pip uninstall -y tensorflow-cpu
	$(PY) -m pip install "tensorflow[and-cuda]"

run: install  ## Train the default model (digits, relu, categorical cross-entropy)
	$(PY) -m runner

# The suite in one worker per core, up to 4 (pytest-xdist): most of a test's time is XLA
# compiling on one thread, and each worker is a process of its own. Stealing work keeps the
# workers busy to the end, where the longest tests would otherwise leave one waiting. The
# slow tests run one at a time: they start parallel sweeps and servers of their own.
WORKERS := -n auto --maxprocesses=4 --dist worksteal

test: install  ## Run the test suite on JAX, the default backend
	$(PY) -m pytest $(WORKERS)

test-tensorflow: install  ## Run the tests whose results depend on the backend, on TensorFlow
	$(PY) -m pytest $(WORKERS) --backend=tensorflow -m "backend and not slow"

test-slow: install  ## Run the slow tests: parallel and distributed sweeps, search, PostgreSQL, resume
	$(PY) -m pytest -m slow

$(RAY_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --upgrade pip
	$(RAY_VENV)/bin/python -m pip install -e ".[dev,ray]"
	touch $@

test-ray: $(RAY_VENV)/.installed  ## Run the Ray launcher's test in .venv-ray (the ray extra)
	$(RAY_VENV)/bin/python -m pytest -m slow tests/test_launchers.py -k ray

sweep: install  ## Compare 3 activations x 2 losses in one multirun sweep
	$(PY) -m runner -m activation=sigmoid,tanh,relu loss=mse,categorical_crossentropy

compare: install  ## Compare the latest sweep: table, CSV, Markdown and figure
	$(PY) -m runner.compare $(ARGS)

ui: install  ## MLflow UI over the default store, on http://127.0.0.1:5000 or HOST= PORT=
	@$(PY) -c 'from runner.tracking import latest_page; print(latest_page("$(STORE)"))'
	$(VENV)/bin/mlflow ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT)

server: install  ## MLflow tracking server over the default store, on 127.0.0.1:5000
	$(VENV)/bin/mlflow server --backend-store-uri $(STORE) \
		--artifacts-destination $(CURDIR)/mlartifacts --host $(HOST) --port $(PORT)

plots: install  ## Draw every activation with its derivative into activations.png
	$(PY) -m runner.reference_plot activations.png

lint: install  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
