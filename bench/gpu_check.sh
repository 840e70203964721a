#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, train a short sweep with device=gpu, in
# float32 and with train.mixed_precision=true, and print the device each run trained on (its
# `device` tag in MLflow) and its training throughput. Sized for under 3 minutes; see
# bench/README.md.
#
#     bash bench/gpu_check.sh [OVERRIDE ...]     # e.g. dataset=mnist train.epochs=5
#
# Extra arguments are added to the sweep's command line. Exit status: 0 when every run
# finished on the GPU, 1 when one did not, 2 when this machine has no NVIDIA GPU to check.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
PY=.venv/bin/python

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi is not installed), so there" \
        "is nothing to check. Run it where nvidia-smi lists a GPU." >&2
    exit 2
fi
if ! gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); then
    echo "gpu_check: nvidia-smi is installed but lists no usable GPU (see its message above)." >&2
    exit 2
fi
echo "GPU (nvidia-smi): $gpus"

make install
# The project installs TensorFlow's CPU build on Linux x86_64; the CUDA build replaces it.
if ! "$PY" -c 'import sys, tensorflow as tf; sys.exit(not tf.test.is_built_with_cuda())'; then
    echo "gpu_check: TensorFlow is the CPU build here; installing the CUDA build (make install-gpu)"
    make install-gpu
fi
if ! "$PY" -c '
import sys, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__} sees:", ", ".join(g.name for g in gpus) or "no GPU")
sys.exit(not gpus)'; then
    echo "gpu_check: nvidia-smi lists a GPU but TensorFlow does not see it: check that the" \
        "driver supports the CUDA version in tf.sysconfig.get_build_info()." >&2
    exit 1
fi

# 3 activations x 2 losses x 2 precisions on the real MNIST sample; wide layers and large
# batches give the GPU some work. A temporary store keeps these runs out of mlflow.db.
work=$(mktemp -d -t gpu_check.XXXXXX)
store="sqlite:///$work/mlflow.db"
start=$SECONDS
status=0
"$PY" -m runner -m device=gpu dataset=mnist5k 'model.units=[1024,1024]' train.batch_size=256 \
    train.epochs=20 activation=relu,tanh,sigmoid loss=mse,categorical_crossentropy \
    train.mixed_precision=false,true tracking.uri="$store" hydra.sweep.dir="$work/multirun" \
    "$@" || status=$?
echo "sweep: $((SECONDS - start)) s in all (exit status $status); runs in $store"

"$PY" - "$store" <<'EOF' || status=1
"""One line per run: where it trained and how fast, then the median per precision.
samples/s = training samples x epochs / train_seconds (fit's time: the per-epoch
validation and diagnostics included)."""
import json
import statistics
import sys

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

client = MlflowClient(sys.argv[1])
experiments = [e.experiment_id for e in client.search_experiments()]
runs = client.search_runs(experiments, "tags.role = 'job'", order_by=["attributes.start_time"])
by_precision = {}
ok = bool(runs)
print(f"{'run':<44} {'precision':<9} {'status':<8} {'device':<6} {'samples/s':>10}")
for run in runs:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    precision = "mixed" if params.get("train.mixed_precision") == "True" else "float32"
    device = tags.get("device", "?")
    rate = float("nan")
    for given in run.inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in given.tags}.get(MLFLOW_DATASET_CONTEXT)
        if context == "train" and "train_seconds" in metrics:
            samples = json.loads(given.dataset.profile)["features_shape"][0]
            rate = samples * int(params["train.epochs"]) / metrics["train_seconds"]
            by_precision.setdefault(precision, []).append(rate)
    ok = ok and run.info.status == "FINISHED" and device == "gpu"
    print(f"{run.info.run_name:<44} {precision:<9} {run.info.status:<8} {device:<6} {rate:>10.0f}")
for precision, rates in by_precision.items():
    print(f"{precision}: median {statistics.median(rates):.0f} samples/s over {len(rates)} runs")
if not ok:
    print("gpu_check: not every run finished on the GPU (see the table above)", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
exit "$status"
