#!/usr/bin/env bash
# Issues 12 and 14 in one device call on nvidia-h200-x2 (2 GPUs, 32 cores), from the repository root:
#
#   source .device/setup.sh && bash scripts/gpu_bench_one_call.sh
#
# - the whole-loop benchmark (scripts/gpu_loop_bench.sh: timm's train/eval loops vs ours on one folder of JPEGs) on
#   the first GPU,
# - at the same time the model-step benchmark with the GPU test suite (scripts/gpu_step_bench.sh: PyTorch eager
#   fp32/bf16 vs ours fp32/--amp, femto and tiny) on the second GPU (each process sees only its GPU: on_gpu below),
# - the training loop again with 8 and 24 loader workers (EXTRA_WORKERS), then the loader alone on the loop's JPEGs
#   (bench:data at -j 1/8/15, and Pillow's per-image cost: bench_pillow.py; SKIP_DATA=1 skips them).
#
# Why both at once: device time is the scarce resource (30 minutes a session), and the two do not compete for what
# they measure: the loop uses 15 loader workers (+ timm's 15 in its own part), the step benchmark one or two busy
# cores, out of 32; each side has its own GPU. nvidia-smi's process list is sampled every 10 s ($OUT: smi.txt) so the
# GPU each process ran on is on record.
# Dry run on lavapipe (one adapter, so one after the other): MODEL=mambaout_test BATCH=8 WORKERS=2 STEPS=3 NTRAIN=64 NVAL=32 IMG_SIZE=64
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

# on_gpu N CMD...: run CMD on GPU N. PyTorch gets CUDA_VISIBLE_DEVICES=N. Our node processes get a private mount
# namespace in which the other GPUs' device nodes are covered (Dawn cannot tell identical GPUs apart and NVIDIA's
# Vulkan driver ignores CUDA_VISIBLE_DEVICES; mambaout-distributed-train does the same, src/distributed/launcher.ts):
# a `node` shim first in PATH does it, so the benchmark scripts run unchanged.
GPUS=$(ls /dev/nvidia[0-9]* 2>/dev/null | wc -l)
ISOLATE=0
if [ "$GPUS" -ge 2 ] && unshare -m true 2>/dev/null; then ISOLATE=1; fi
NODE=$(command -v node)
for g in 0 1; do
  mkdir -p "/tmp/gpu$g-bin"
  cat > "/tmp/gpu$g-bin/node" <<SH
#!/bin/sh
exec unshare -m sh -c 'for d in /dev/nvidia[0-9]*; do [ -e "\$d" ] && [ "\$d" != /dev/nvidia$g ] || continue; mount --bind /dev/null "\$d" || exit 97; done; exec "\$@"' sh "$NODE" "\$@"
SH
  chmod +x "/tmp/gpu$g-bin/node"
done
on_gpu() {
  local g=$1; shift
  if [ "$ISOLATE" = 1 ]; then PATH="/tmp/gpu$g-bin:$PATH" CUDA_VISIBLE_DEVICES=$g "$@"; else "$@"; fi
}
say "GPUs: $GPUS; per-process isolation: $([ $ISOLATE = 1 ] && echo 'yes (concurrent)' || echo 'no (one after the other)')"

step_bench() { OUT=/tmp/gpu_step_bench HARD=${STEP_HARD:-520} on_gpu 1 bash scripts/gpu_step_bench.sh > /tmp/gpu_step_bench.out 2>&1; }
if [ "$ISOLATE" = 1 ]; then step_bench & STEP=$!; fi

OUT=/tmp/gpu_loop_bench on_gpu 0 bash scripts/gpu_loop_bench.sh

# the training loop with fewer and more loader workers (is it loader- or main-thread-bound?)
for w in ${EXTRA_WORKERS:-8 24}; do
  TR=/tmp/mambaout_loop_jpegs_${NTRAIN:-6400}_${NVAL:-2560}/train
  [ -d "$TR" ] || break
  on_gpu 0 timeout -k 5 60 node --import tsx scripts/bench_train.ts --dir "$TR" --model "${MODEL:-mambaout_femto}" --batch "${BATCH:-128}" \
    --workers "$w" --backend webgpu --steps "${STEPS:-45}" --warmup 3 --img-size "${IMG_SIZE:-224}" --json > "/tmp/gpu_loop_bench/ours_train_j$w.log" 2>&1
  say "training loop -j $w: $(grep '^{' "/tmp/gpu_loop_bench/ours_train_j$w.log" | tail -1 | cut -c1-260)"
done

D=/tmp/mambaout_loop_jpegs_${NTRAIN:-6400}_${NVAL:-2560}/val
if [ -d "$D" ] && [ -z "${SKIP_DATA:-}" ]; then
  say "loader alone on $D (bench:data, -j 1/8/15; then Pillow)"
  timeout -k 5 100 node --import tsx scripts/bench_data.ts --dir "$D" --n 512 --batch 32 --workers 1,8,15 --mode eval,train \
    --json /tmp/gpu_loop_bench/bench_data.json > /tmp/gpu_loop_bench/bench_data.log 2>&1 || say "bench:data: exit $?"
  grep -v -E '^\s*$|Warning' /tmp/gpu_loop_bench/bench_data.log | tail -n 14 | cut -c1-200
  timeout -k 5 45 python3 scripts/bench_pillow.py "$D" --n 512 --json /tmp/gpu_loop_bench/bench_pillow.json \
    > /tmp/gpu_loop_bench/bench_pillow.log 2>&1 || say "bench_pillow: exit $?"
  tail -n 6 /tmp/gpu_loop_bench/bench_pillow.log | cut -c1-200
fi

if [ "$ISOLATE" = 1 ]; then say "waiting for the step benchmark"; wait $STEP; else step_bench; fi
kill $SMI 2>/dev/null
echo
echo "== step benchmark (second GPU): recap"
sed -n '/^== recap/,$p' /tmp/gpu_step_bench.out | cut -c1-220
tar -C /tmp -czf "$OUT/logs.tgz" gpu_loop_bench gpu_step_bench gpu_step_bench.out 2>/dev/null
say "done; logs in $OUT/logs.tgz"
