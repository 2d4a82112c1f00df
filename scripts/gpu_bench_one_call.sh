#!/usr/bin/env bash
# Issues 12 and 14 in one device call on nvidia-h200-x2 (2 GPUs, 32 cores), from the repository root:
#
#   source .device/setup.sh && bash scripts/gpu_bench_one_call.sh
#
# - the whole-loop benchmark (scripts/gpu_loop_bench.sh: timm's train/eval loops vs ours on one folder of JPEGs) on
#   the first GPU (CUDA device 0, Dawn adapter 0),
# - at the same time the model-step benchmark with the GPU test suite (scripts/gpu_step_bench.sh: PyTorch eager
#   fp32/bf16 vs ours fp32/--amp, femto and tiny) on the second GPU (CUDA device 1, Dawn adapter 1),
# - then the loader alone on the loop's JPEGs (bench:data at -j 1/8/15, and Pillow's per-image cost: bench_pillow.py).
#
# Why both at once: device time is the scarce resource (30 minutes a session), and the two do not compete for what
# they measure: the loop uses 15 loader workers (+ timm's 15 in its own part), the step benchmark one or two busy
# cores, out of 32; each side has its own GPU. nvidia-smi's process list is sampled every 10 s ($OUT: smi.txt) so the
# GPU each process ran on is on record.
# Dry run on lavapipe (one adapter): STEP_GPU=0 MODEL=mambaout_test BATCH=8 WORKERS=2 STEPS=3 NTRAIN=64 NVAL=32 IMG_SIZE=64
#   MODELS=test IMG=64 SKIP_TESTS=1 SKIP_TORCH=1 bash scripts/gpu_bench_one_call.sh (gpu_step_bench.sh reads BATCH too).
# Output: the two tables and the test counts here; every log in $OUT/logs.tgz. At most ~9.5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_bench_one_call}
mkdir -p "$OUT"
T0=$SECONDS
say() { echo "[$((SECONDS - T0))s] $*"; }
nvidia-smi -L > "$OUT/smi.txt" 2>&1
nvidia-smi --query-compute-apps=timestamp,gpu_uuid,pid,process_name,used_memory --format=csv,noheader -l 10 >> "$OUT/smi.txt" 2>&1 &
SMI=$!

(
  export CUDA_VISIBLE_DEVICES=${STEP_GPU:-1} MAMBAOUT_WEBGPU_ADAPTER=${STEP_GPU:-1} OUT=/tmp/gpu_step_bench HARD=${STEP_HARD:-520}
  bash scripts/gpu_step_bench.sh > /tmp/gpu_step_bench.out 2>&1
) &
STEP=$!

CUDA_VISIBLE_DEVICES=0 MAMBAOUT_WEBGPU_ADAPTER=0 OUT=/tmp/gpu_loop_bench bash scripts/gpu_loop_bench.sh

D=/tmp/mambaout_loop_jpegs_${NTRAIN:-6400}_${NVAL:-2560}/val
if [ -d "$D" ]; then
  say "loader alone on $D (bench:data, -j 1/8/15; then Pillow)"
  timeout -k 5 100 node --import tsx scripts/bench_data.ts --dir "$D" --n 512 --batch 32 --workers 1,8,15 --mode eval,train \
    --json /tmp/gpu_loop_bench/bench_data.json > /tmp/gpu_loop_bench/bench_data.log 2>&1 || say "bench:data: exit $?"
  grep -v -E '^\s*$|Warning' /tmp/gpu_loop_bench/bench_data.log | tail -n 14 | cut -c1-200
  timeout -k 5 45 python3 scripts/bench_pillow.py "$D" --n 512 --json /tmp/gpu_loop_bench/bench_pillow.json \
    > /tmp/gpu_loop_bench/bench_pillow.log 2>&1 || say "bench_pillow: exit $?"
  tail -n 6 /tmp/gpu_loop_bench/bench_pillow.log | cut -c1-200
fi

say "waiting for the step benchmark"
wait $STEP
kill $SMI 2>/dev/null
echo
echo "== step benchmark (second GPU): recap"
sed -n '/^== recap/,$p' /tmp/gpu_step_bench.out | cut -c1-220
tar -C /tmp -czf "$OUT/logs.tgz" gpu_loop_bench gpu_step_bench gpu_step_bench.out 2>/dev/null
say "done; logs in $OUT/logs.tgz"
