#!/usr/bin/env bash
# Issue 13, femto: where a 2-GPU step goes, bucket by bucket, on both ranks (bench_dist --trace: when each bucket's
# gradients were issued, on the host, averaged, back on the GPU, applied; no synchronisation added). Two ranks that
# exchange nothing run as fast as one alone (gpu_dist_interference.sh), so the time is the exchange's.
#   source .device/setup.sh && bash scripts/gpu_dist_trace.sh        (~4 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_trace
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
tagged 1gpu-none 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none --trace 5
for p in ${PATHS:-default overlap+staged default+bf16 default}; do
  n=$(( ${n:-0} + 1 ))
  tagged "2gpu-$p-$n" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths "$p" --trace 5
done
dist_table "$J"
for f in "$OUT"/1gpu-none.log "$OUT"/2gpu-*.log; do echo "== $(basename "$f")"; trace_table "$f"; done
say "done"
