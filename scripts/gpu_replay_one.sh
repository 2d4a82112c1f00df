#!/usr/bin/env bash
# The replayed step (src/backend/step_capture.ts) on one GPU, for the days the x2 kind is not lent: the GPU suite
# (webgpu + ddp_webgpu tests, the replay's bit-exactness included), then bench_dist's `none` against `replay`
# alternating in one process (femto FEMTO_REPEATS times, tiny once; batch 128, 224 px), PyTorch eager fp32 in the same
# run. What it shows: the JS issue time a replay saves and whether one GPU's img/s keeps up; what it cannot show is the
# 2-GPU scaling (gpu_dist_scaling.sh ONE_PATH=replay DIST_PATHS="default default+replay" on nvidia-h200-x2). ~6 min.
#   source .device/setup.sh && bash scripts/gpu_replay_one.sh          (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
bench_init gpu_replay_one
if [ "${TESTS:-1}" = 1 ]; then
  part gpu-tests 300 env MAMBAOUT_GPU_TESTS=1 node --import tsx --test test/webgpu.test.ts test/ddp_webgpu.test.ts
  grep -E '^# (tests|pass|fail|skipped)' "$OUT/gpu-tests.log"
fi
for M in ${MODELS:-femto tiny}; do
  R=${FEMTO_REPEATS:-2}; [ "$M" = tiny ] && R=1
  P=$(for r in $(seq "$R"); do printf 'none,replay,'; done); P=${P%,}
  part "$M-paths" 240 node --import tsx scripts/bench_dist.ts --model "mambaout_$M" --batch 128 --backend webgpu \
    --img-size 224 --warmup 3 --steps 25 --paths "$P"
  grep '^{' "$OUT/$M-paths.log" | while read -r l; do echo "{\"variant\":\"$M\",${l#\{}" >> "$J"; done
  tagged "$M-torch" 120 python3 "$TB/torch_step.py" --model "mambaout_$M" --batch 128
done
node - "$J" <<'JS'
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const f = (x) => (typeof x === 'number' ? x.toFixed(1) : '-');
console.log('| run | path | img/s | ms/step | issue ms |\n|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.variant} | ${r.path ?? r.mode ?? '-'} | ${f(r.img_s ?? r.train_img_s)} | ${f(r.ms_per_step)} | ${f(r.issue_ms)} |`);
JS
say "done"
