#!/usr/bin/env bash
# Issue 13's figure in one run on nvidia-h200-x2: 1 GPU (bench_dist --paths none) against 2 GPUs (launch_bench_dist 2,
# default path), batch 128 per GPU, femto three times alternating (its run-to-run spread is large) and tiny once,
# PyTorch (torch_step.py, 1 GPU and torchrun DDP on 2) in the same run. ~5 minutes. Knobs: MODELS, FEMTO_REPEATS, EXTRA
# (more bench_dist arguments, e.g. "--read-loss step"), DIST_PATHS (bench_dist paths of the 2-GPU runs, each in its own
# processes after the same 1-GPU run; default "default"), ONE_PATH (the 1-GPU runs' path: none, or replay to compare
# DIST_PATHS="default+replay" with the same replayed step on 1 GPU).
#   source .device/setup.sh && bash scripts/gpu_dist_scaling.sh          (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
bench_init gpu_dist_scaling
for M in ${MODELS:-femto tiny}; do
  A=(--model "mambaout_$M" --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 20 ${EXTRA:-})
  R=${FEMTO_REPEATS:-3}; [ "$M" = tiny ] && R=1
  for r in $(seq "$R"); do
    tagged "$M-1gpu-$r" 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths "${ONE_PATH:-none}"
    for P in ${DIST_PATHS:-default}; do
      tagged "$M-2gpu-$P-$r" 180 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths "$P"
    done
  done
  tagged "$M-torch-1gpu" 120 python3 "$TB/torch_step.py" --model "mambaout_$M" --batch 128
  tagged "$M-torch-2gpu" 150 torchrun --nproc_per_node 2 "$TB/torch_step.py" --model "mambaout_$M" --batch 128
done
dist_table "$J"
node - "$J" <<'JS'
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const by = Object.fromEntries(rows.map((r) => [r.variant, r]));
const f = (x) => (typeof x === 'number' ? x.toFixed(1) : '-');
for (const m of ['femto', 'tiny']) {
  const one = rows.filter((r) => r.variant.startsWith(`${m}-1gpu`)).map((r) => r.img_s);
  const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length;
  const paths = [...new Set(rows.filter((r) => r.variant.startsWith(`${m}-2gpu-`)).map((r) => r.variant.slice(`${m}-2gpu-`.length).replace(/-\d+$/, '')))];
  for (const p of paths) {
    const two = rows.filter((r) => r.variant.startsWith(`${m}-2gpu-${p}-`)).map((r) => r.img_s);
    if (!one.length || !two.length) continue;
    const t1 = by[`${m}-torch-1gpu`]?.img_s, t2 = by[`${m}-torch-2gpu`]?.img_s;
    console.log(`${m} ${p}: ours 1 GPU mean ${f(mean(one))}, 2 GPUs mean ${f(mean(two))} -> scaling ${(mean(two) / mean(one)).toFixed(2)}x ` +
      `(pairs: ${two.map((x, i) => (x / one[i]).toFixed(2) + 'x').join(', ')}); PyTorch ${f(t1)} -> ${f(t2)} (${t1 && t2 ? (t2 / t1).toFixed(2) : '-'}x); ` +
      `ours 2 GPUs / PyTorch DDP ${t2 ? (mean(two) / t2).toFixed(2) : '-'}x`);
  }
}
JS
say "done"
