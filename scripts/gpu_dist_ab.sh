#!/usr/bin/env bash
# Issue 13: A/B of gradient-exchange variants in the same pair of processes, alternating (this VM's run-to-run spread
# is larger than most effects), between 1-GPU runs of the same code. PATHS: bench_dist paths (default: `default`
# against the opt-in bf16 compression, three times). A path that comes first in a process pays its warm-up: compare
# pairs after the first.
#   source .device/setup.sh && bash scripts/gpu_dist_ab.sh        (~3 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_ab
A=(--model "${MODEL:-mambaout_femto}" --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps 25)
P=${PATHS:-default,default+bf16,default,default+bf16,default,default+bf16}
tagged 1gpu-before 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
part ab 400 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths "$P"
tagged 1gpu-after 120 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
dist_table "$J"
echo "2 GPUs, in this order:"
grep '^{' "$OUT/ab.log" | node -e 'const rows=require("fs").readFileSync(0,"utf8").split("\n").filter(Boolean).map(JSON.parse);
const by={};for(const r of rows){console.log(`| ${r.path} | ${r.img_s} | ${r.ms_per_step} | ${r.issue_ms} | ${r.exchange_ms} |`);(by[r.path]??=[]).push(r.img_s);}
for(const[k,v]of Object.entries(by))console.log(`${k}: mean ${(v.reduce((a,b)=>a+b,0)/v.length).toFixed(1)} img/s over ${v.length}`);'
say "done"
