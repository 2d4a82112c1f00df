#!/usr/bin/env bash
# Issue 13, femto: both ranks' main threads on 2 GPUs (default path) against one GPU (path none), CPU profiles over the
# timed steps only (bench_dist --marks windows, scripts/profile_summary.ts). Where does a rank's extra
# main-thread time per step go, and why is one rank slower than the other (gpu_dist_trace.sh)?
#   source .device/setup.sh && bash scripts/gpu_dist_profile.sh        (~2 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_profile
P=/tmp/mambaout_dist_profiles
rm -rf "$P"; mkdir -p "$P/d1" "$P/d2"
A=(${BENCH_ARGS:---model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps ${STEPS:-40}} --marks)
part dist1 150 node --cpu-prof --cpu-prof-dir "$P/d1" --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
NODE_OPTIONS="--cpu-prof --cpu-prof-dir=$P/d2" part dist2 200 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default
grep -h '^{' "$OUT/dist1.log" "$OUT/dist2.log" | cut -c1-400
summ() { node --import tsx scripts/profile_summary.ts "$@" 2>&1 | cut -c1-160; }
window() { grep -h "MARKS rank=$2 " "$1" | tail -1 | sed -E 's/.*from=([0-9]+) to=([0-9]+).*/--from \1 --to \2/'; }
# a rank's main-thread profile: CPU.<date>.<time>.<pid>.0.<seq>.cpuprofile of the pid its MARKS line names
pid_of() { grep -h "MARKS rank=$2 " "$1" | tail -1 | sed -E 's/.*pid=([0-9]+).*/\1/'; }
profile_of() { ls "$1"/CPU.*.*."$2".0.*.cpuprofile 2>/dev/null | head -1; }
W1=$(window "$OUT/dist1.log" 0); F1=$(profile_of "$P/d1" "$(pid_of "$OUT/dist1.log" 0)")
say "== 1 GPU, main thread, timed steps ($W1)"; [ -n "$F1" ] && summ "$F1" $W1 --top ${TOP:-30}
for r in 0 1; do
  W=$(window "$OUT/dist2.log" $r); F=$(profile_of "$P/d2" "$(pid_of "$OUT/dist2.log" $r)")
  say "== 2 GPUs, rank $r main thread, timed steps ($W)"; [ -n "$F" ] && summ "$F" $W --top ${TOP:-30}
done
say "done"
