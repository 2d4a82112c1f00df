#!/usr/bin/env bash
# Issue 13, femto: is a 2-GPU step waiting for sleeping threads to wake? The exchange's hops (main thread -> comm
# thread -> the peer's comm thread over a socket -> back) each wake a thread that sleeps in epoll; in a VM a wake-up
# of an idle vCPU can cost far more than on bare metal. Background busy loops at nice 19 keep every vCPU running
# (a woken thread preempts them at once), so the same runs with and without them, alternating, show what wake-ups
# cost; also the pool's all-reduce round trip alone (scripts/bench_pool_latency.ts), with and without.
# Answer (docs/BENCHMARKS.md, GPU run 8, call 5): no. With the busy loops everything ran slower (1 GPU 2,415 -> 1,894
# img/s, 2 GPUs 3,513-3,541 -> 2,458-2,749, the round trips 1.3-1.7x longer): a busy sibling or host core costs our
# threads more than the wake-ups, so spinning threads are not a lever.
#   source .device/setup.sh && bash scripts/gpu_dist_wake.sh        (~3 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_wake
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
SP=()
awake() { for i in $(seq "$(nproc)"); do nice -n 19 sh -c 'while :; do :; done' & SP+=($!); done; sleep 1; }
asleep() { kill "${SP[@]}" 2>/dev/null; wait "${SP[@]}" 2>/dev/null; SP=(); }
trap asleep EXIT
lat() {
  local pids=()
  for r in 0 1; do RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((29611 + ${1:-0})) \
    timeout 60 node --import tsx scripts/bench_pool_latency.ts & pids+=($!); done
  wait "${pids[@]}"   # not a bare wait: the busy loops are children too (call 4 of GPU run 8 hung on one)
}
say "pool round trip, plain:"; lat
awake; say "pool round trip, awake:"; lat 1; asleep
tagged 1gpu-plain 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
for r in ${ROUNDS:-1 2}; do
  tagged "2gpu-plain-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default
  awake; tagged "2gpu-awake-$r" 150 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default; asleep
done
awake; tagged 1gpu-awake 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none; asleep
dist_table "$J"
say "done"
