#!/usr/bin/env bash
# Issue 13, femto: is a rank's slower issue on 2 GPUs (44-73 ms vs 25-27 ms alone, GPU run 4) caused by the exchange,
# or by two GPU processes on one VM slowing each other? Alternating, twice, on nvidia-h200-x2:
#   1gpu-alone      bench_dist --paths none, one process
#   2gpu-none       two ranks, each on its own GPU, exchanging nothing (--paths none): the exchange's share is zero
#   2gpu-default    two ranks, the real exchange
#   ...-pinned      the same with each rank (all its threads) on its own half of the cores (bench_dist --pin halves)
# PyTorch DDP once for the ratio. ~5 minutes.   source .device/setup.sh && bash scripts/gpu_dist_interference.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
bench_init gpu_dist_interference
nvidia-smi topo -m 2>/dev/null | head -5
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
for r in 1 2; do
  tagged "1gpu-alone-$r" 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
  tagged "2gpu-none-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths none
  tagged "2gpu-none-pinned-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths none --pin halves
  tagged "2gpu-default-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default
  tagged "2gpu-default-pinned-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default --pin halves
done
tagged torch-1gpu 120 python3 "$TB/torch_step.py" --model mambaout_femto --batch 128
tagged torch-2gpu 150 torchrun --nproc_per_node 2 "$TB/torch_step.py" --model mambaout_femto --batch 128
dist_table "$J"
grep -h "pinned to" "$OUT"/2gpu-*pinned-1.log | head -2
say "done"
