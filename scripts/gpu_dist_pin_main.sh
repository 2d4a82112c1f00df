#!/usr/bin/env bash
# Issue 13, femto: a rank's main thread is sometimes ~1.5x slower than the other rank's with the exchange on (GPU run 5,
# calls 2, 5, 7), never without it. Does its own communication threads' memory traffic on a core that shares its
# physical core slow it? 1 GPU, 2 GPUs as is, 2 GPUs with each main thread alone on a core (bench_dist
# --pin main), alternating, three times.   source .device/setup.sh && bash scripts/gpu_dist_pin_main.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_pin_main
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
for r in 1 2 3; do
  tagged "1gpu-$r" 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
  tagged "2gpu-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default
  tagged "2gpu-pinmain-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default --pin main
done
dist_table "$J"
grep -h "main thread on core\|taskset failed" "$OUT"/2gpu-pinmain-1.log | head -3
say "done"
