#!/usr/bin/env bash
# Issue 13, femto: how many communication threads per rank (bench_dist --comm-threads; AUTO_THREADS = 4 since GPU
# run 2)? The main thread's own functions ran ~1.5x slower per call on 2 GPUs than on 1 (GPU run 6, call 6: e.g.
# runCustomProgram 6.2 vs 3.9 ms per step): do the threads' copies slow it (cache, memory bandwidth, turbo)?
# 1 GPU, then 2 GPUs with THREADS (default "1 2 4") twice over, alternating; the default path and, in the same
# processes, +memcpy and +bf16.
#   source .device/setup.sh && bash scripts/gpu_dist_threads.sh        (~4 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_threads
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 20)
tagged 1gpu 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
for r in 1 2; do
  for t in ${THREADS:-1 2 4}; do
    part "t$t-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --comm-threads "$t" --paths default,default+memcpy,default,default+bf16
    grep '^{' "$OUT/t$t-$r.log" | node -e 'const rows=require("fs").readFileSync(0,"utf8").split("\n").filter(Boolean).map(JSON.parse);
      for(const r of rows)console.log(`| '"$t"' threads, round '"$r"' | ${r.path} | ${r.img_s} | ${r.ms_per_step} | ${r.issue_ms} | ${r.exchange_ms} |`);'
  done
done
dist_table "$J"
say "done"
