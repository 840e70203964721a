#!/usr/bin/env bash
# GPU check, for a Linux machine with an NVIDIA GPU and JAX's CUDA build installed. It
# proves that the runner trains on the GPU and measures how fast, in under 3 minutes:
#
#   1. one job, device=gpu;
#   2. the 240-job fused sweep (4 activations x 2 losses x 5 learning rates x 6 seeds,
#      digits, 20 epochs) on the GPU, every run recorded in a temporary SQLite store;
#   3. the floor (bench/floor.py) on the GPU: one model, and 240 vmapped;
#
# then prints the devices the runs' `device` tags name, ms per epoch for each, and the
# sweep's training time against the 240-model floor.
#
#     bash bench/gpu_check.sh [WHEEL_DIR]
#
# TensorFlow need not be installed, and the machine needs no network: with WHEEL_DIR, the
# runner's Python dependencies are installed from the wheels there (pip --no-index) into a
# temporary folder, and the runner runs from this checkout. Without it, the project's
# .venv is used (`make install-gpu`). Exit status: 0 when every run trained on the GPU,
# 1 when one did not, 2 when there is no GPU to check.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true TF_CPP_MIN_LOG_LEVEL=2
work=$(mktemp -d -t gpu_check.XXXXXX)

if [ $# -ge 1 ]; then
    PY=${PYTHON:-python3}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$1"/*.whl
    export PYTHONPATH="$PWD:$work/site${PYTHONPATH:+:$PYTHONPATH}"
else
    PY=.venv/bin/python
    [ -x "$PY" ] || make install-gpu
fi

if ! command -v nvidia-smi >/dev/null 2>&1 \
    || ! gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists none)." >&2
    exit 2
fi
echo "GPU (nvidia-smi): $gpus"
if ! "$PY" -c '
import sys, jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
print(f"JAX {jax.__version__} sees:", ", ".join(map(str, gpus)) or "no GPU")
sys.exit(not gpus)'; then
    echo "gpu_check: nvidia-smi lists a GPU but JAX does not see it: install JAX's CUDA" \
        "build (make install-gpu)." >&2
    exit 1
fi

store="sqlite:///$work/mlflow.db"
export MLFLOW_TRACKING_URI="$store"
status=0

echo "== 1. one job, device=gpu"
start=$SECONDS
"$PY" -m runner device=gpu train.epochs=20 hydra.run.dir="$work/single" 2>&1 \
    | tee "$work/single.log" | grep -E "ms an epoch|test_accuracy" || status=1
echo "one job: $((SECONDS - start)) s in all"

echo "== 2. the 240-job fused sweep, device=gpu"
start=$SECONDS
"$PY" -m runner -m hydra/launcher=fused device=gpu train.epochs=20 \
    activation=sigmoid,tanh,relu,elu loss=mse,categorical_crossentropy \
    optimizer.learning_rate=0.0003,0.001,0.003,0.01,0.03 seed=0,1,2,3,4,5 \
    hydra.sweep.dir="$work/sweep" >"$work/sweep.log" 2>&1 || status=1
sweep_s=$((SECONDS - start))
grep -E "Launching|ms an epoch" "$work/sweep.log" || tail -20 "$work/sweep.log"
echo "sweep: ${sweep_s} s in all, recording included (target <= 60 s)"

echo "== 3. the floor on the GPU"
floor1=$("$PY" bench/floor.py --device gpu --models 1 --json)
floor240=$("$PY" bench/floor.py --device gpu --models 240 --json)
echo "floor, 1 model:    $floor1"
echo "floor, 240 models: $floor240"

"$PY" - "$store" "$work/sweep.log" "$floor240" <<'EOF' || status=1
import json
import re
import sys

from mlflow.tracking import MlflowClient

store, sweep_log, floor = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = MlflowClient(store)
experiments = [e.experiment_id for e in client.search_experiments()]
runs = client.search_runs(experiments, "tags.role = 'job'", max_results=1000)
devices = {}
for run in runs:
    key = (run.data.tags.get("device", "?"), run.info.status)
    devices[key] = devices.get(key, 0) + 1
print("runs by (device, status):", devices)
log = open(sweep_log).read()
epochs = [float(ms) for ms in re.findall(r"then ([0-9.]+) ms an epoch", log)]
if epochs:
    ms = sum(epochs)
    print(
        f"fused sweep training: {ms:.2f} ms an epoch for 240 models; floor "
        f"{floor['ms_per_epoch']:.2f} ms: {ms / floor['ms_per_epoch']:.2f}x (target <= 2x)"
    )
# The single job and the sweep's 240.
ok = len(runs) == 241 and set(devices) == {("gpu", "FINISHED")}
if not ok:
    print("gpu_check: not every run finished on the GPU (see above)", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
exit "$status"
