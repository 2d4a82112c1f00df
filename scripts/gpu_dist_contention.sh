#!/usr/bin/env bash
# Issue 13, femto: why a rank's main thread issues a step slower on 2 GPUs than alone (GPU run 4 call 1: 67 vs 32.5 ms,
# every kernel-issuing function slower per call). Two tests, alternating, on nvidia-h200-x2:
#   1. 1 GPU (bench_dist --paths none) alone and beside HOGS busy CPU processes (plain loops): if the VM's cores slow
#      down when others are busy (Pillow's per-image CPU +42% at 15 processes, same machine), issue time grows here too;
#   2. 2 GPUs (launch_bench_dist 2 --paths default) with 1, 2 and 4 exchange threads (--comm-threads).
# PyTorch DDP once for the ratio. ~4 minutes.   source .device/setup.sh && bash scripts/gpu_dist_contention.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
HOGS=${HOGS:-12}
bench_init gpu_dist_contention
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
hog_on() { HP=(); for i in $(seq "$HOGS"); do (while :; do :; done) & HP+=($!); done; }
hog_off() { kill "${HP[@]}" 2>/dev/null; wait "${HP[@]}" 2>/dev/null; }
for r in 1 2; do
  tagged "1gpu-alone-$r" 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
  hog_on; tagged "1gpu-hogs-$r" 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none; hog_off
  for t in 4 2 1; do
    tagged "2gpu-threads$t-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default --comm-threads "$t"
  done
done
tagged torch-1gpu 120 python3 "$TB/torch_step.py" --model mambaout_femto --batch 128
tagged torch-2gpu 150 torchrun --nproc_per_node 2 "$TB/torch_step.py" --model mambaout_femto --batch 128
dist_table "$J"
say "done"
