#!/usr/bin/env bash
# A/B of the main thread's per-step costs on the H200 (2026-11-30 profile, scripts/gpu_profile.sh: the femto step is
# bound by the main thread issuing GPU work; tfjs's per-upload staging buffers cost 7.8 ms of a 64 ms step):
#   1. model step (npm run bench, batch 128, train + infer), femto and tiny: tfjs's uploads (MAMBAOUT_WEBGPU_OFF=
#      directUpload) vs queue.writeBuffer uploads (default), and the latter with Dawn's skip_validation toggle;
#      variants alternate, femto twice; PyTorch eager fp32 (torch_step.py) in the same run;
#   2. femto on 1 GPU (bench_dist --paths none) and on 2 (launch_bench_dist 2, default path), with and without
#      skip_validation, PyTorch DDP in the same run.
# From the repository root on nvidia-h200-x2: source .device/setup.sh && bash scripts/gpu_upload_ab.sh  (~7 min)
# ONLY=uniforms: just the A/B of the uniform-block cache on femto (~2 min).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_upload_ab}
mkdir -p "$OUT"
T0=$SECONDS
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
SKIPVAL='enable-dawn-features=skip_validation'
J="$OUT/ab.jsonl"; : > "$J"
say "machine: $(nproc) cores, $(nvidia-smi -L | wc -l) GPU(s), node $(node --version), $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
# v NAME MODEL LIMIT [ENV=VAL...]: one npm run bench process, its JSON line tagged with NAME
v() {
  local name=$1 model=$2 limit=$3; shift 3
  tagged "$name" "$limit" env "$@" node --import tsx scripts/bench.ts --model "mambaout_$model" --backend webgpu --batch 128 \
    --img-size 224 --steps 15 --json
}
export CUDA_VISIBLE_DEVICES=0
if [ "${ONLY:-}" = uniforms ]; then
  # the uniform-block cache (kernels/webgpu/uniforms.ts), femto, alternating, then the step part ends here
  for round in 1 2; do
    v "femto-uniformsoff-$round" femto 90 MAMBAOUT_WEBGPU_OFF=uniformCache
    v "femto-uniforms-$round" femto 90
  done
  node -e 'const fs=require("fs");for(const l of fs.readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean)){const r=JSON.parse(l);console.log(`| ${r.variant} | ${r.train_img_s} | ${r.infer_img_s} |`)}' "$J"
  exit 0
fi
for round in 1 2; do
  v "femto-tfjsupload-$round" femto 90 MAMBAOUT_WEBGPU_OFF=directUpload
  v "femto-direct-$round" femto 90
  v "femto-direct+skipval-$round" femto 90 MAMBAOUT_DAWN_FLAGS="$SKIPVAL"
done
v tiny-tfjsupload tiny 120 MAMBAOUT_WEBGPU_OFF=directUpload
v tiny-direct tiny 120
v tiny-direct+skipval tiny 120 MAMBAOUT_DAWN_FLAGS="$SKIPVAL"
for m in femto tiny; do
  for inf in 0 1; do timeout 120 python3 "$TB/torch_step.py" --model "mambaout_$m" --batch 128 --infer "$inf" 2>/dev/null | grep '^{' >> "$OUT/torch.jsonl"; done
done
say "step A/B done"
unset CUDA_VISIBLE_DEVICES
DA=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 20)
tagged dist1 120 node --import tsx scripts/bench_dist.ts "${DA[@]}" --paths none
tagged dist2 180 node --import tsx scripts/launch_bench_dist.ts 2 "${DA[@]}" --paths default
tagged dist1-skipval 120 env MAMBAOUT_DAWN_FLAGS="$SKIPVAL" node --import tsx scripts/bench_dist.ts "${DA[@]}" --paths none
tagged dist2-skipval 180 env MAMBAOUT_DAWN_FLAGS="$SKIPVAL" node --import tsx scripts/launch_bench_dist.ts 2 "${DA[@]}" --paths default
tagged dist2-again 180 node --import tsx scripts/launch_bench_dist.ts 2 "${DA[@]}" --paths default
timeout 150 torchrun --nproc_per_node 2 "$TB/torch_step.py" --model mambaout_femto --batch 128 2>/dev/null | grep '^{' | head -1 >> "$OUT/torch.jsonl"
say "dist done"
node - "$J" "$OUT/torch.jsonl" <<'JS'
const fs = require('fs');
const rows = (f) => { try { return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)); } catch { return []; } };
const f = (x) => (typeof x === 'number' ? x.toFixed(1) : '-');
console.log('| variant | train img/s | infer img/s | dist img/s | ms/step |\n|---|---|---|---|---|');
for (const r of rows(process.argv[2])) console.log(`| ${r.variant} | ${f(r.train_img_s)} | ${f(r.infer_img_s)} | ${f(r.img_s)} | ${f(r.ms_per_step ?? r.train_ms_per_step)} |`);
console.log('\nPyTorch (same run):');
for (const r of rows(process.argv[3])) console.log(JSON.stringify(r).slice(0, 300));
JS
say "done"
