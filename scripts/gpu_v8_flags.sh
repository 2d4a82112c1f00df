#!/usr/bin/env bash
# Issue 13: is the per-process spread of the main thread's issue time (femto, 1 GPU: 27-46 ms per step between
# processes of the same code, which decides a 2-GPU step) V8's doing? One GPU, several fresh processes per V8 flag set
# (FLAGS: '|'-separated node flag sets; the empty one = defaults), alternating, issue ms per process. First run
# (GPU run 6, call 4): defaults 52.7 / 32.5 / 32.8 ms, --max-semi-space-size=64 39.8 / 32.2 / 45.3; and with
# bench_dist --sweep-cores the issue time of one process moves between 24 and 45 ms from one 8-step window to the next
# on the same core: it is not the core, the process or the young generation.
#   source .device/setup.sh && bash scripts/gpu_v8_flags.sh        (~2 minutes on nvidia-h200)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_v8_flags
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 20 --paths none)
IFS='|' read -r -a SETS <<< "${FLAGS:-|--no-maglev|--max-semi-space-size=64}"
for r in $(seq "${REPEATS:-3}"); do
  for i in "${!SETS[@]}"; do
    # shellcheck disable=SC2086
    tagged "set$i-$r" 120 node ${SETS[$i]} --import tsx scripts/bench_dist.ts "${A[@]}"
  done
done
dist_table "$J"
for i in "${!SETS[@]}"; do echo "set$i = '${SETS[$i]}'"; done
say "done"
