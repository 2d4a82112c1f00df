#!/usr/bin/env bash
# Issue 13: on 2 GPUs a rank's main thread runs the same functions ~1.5x slower than on 1 GPU (docs/BENCHMARKS.md,
# GPU run 6). Is it the machine or us? Two probes (scripts/cpu_probe.mjs: alu = arithmetic, mem = random reads in
# 24 MiB) run on cores of their own beside: nothing; 1 GPU (bench_dist --paths none); 2 ranks exchanging nothing
# (--paths none); 2 ranks with the default exchange. Each window also records /proc/stat steal and the mean cpu MHz.
#   source .device/setup.sh && bash scripts/gpu_dist_probe.sh        (~2.5 minutes on nvidia-h200-x2)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
bench_init gpu_dist_probe
A=(--model mambaout_femto --batch 128 --backend webgpu --img-size 224 --warmup 3 --steps ${STEPS:-60})
N=$(nproc)
probe_during() { # NAME CMD...: both probes run while CMD runs
  local name=$1; shift
  taskset -c $((N - 1)) node scripts/cpu_probe.mjs 600 alu > "$OUT/probe-$name-alu.jsonl" 2>/dev/null &
  local pa=$!
  taskset -c $((N - 2)) node scripts/cpu_probe.mjs 600 mem > "$OUT/probe-$name-mem.jsonl" 2>/dev/null &
  local pm=$!
  "$@"
  kill $pa $pm 2>/dev/null; wait $pa $pm 2>/dev/null
}
probe_during idle sleep 8
probe_during 1gpu tagged 1gpu 150 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
probe_during 2gpu-none tagged 2gpu-none 200 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths none
probe_during 2gpu-default tagged 2gpu-default 200 node --import tsx scripts/launch_bench_dist.ts 2 "${A[@]}" --paths default
probe_during 1gpu-again tagged 1gpu-again 150 node --import tsx scripts/bench_dist.ts "${A[@]}" --paths none
dist_table "$J"
node - "$OUT" <<'JS'
const fs = require('fs');
const out = process.argv[2];
const q = (v, p) => { const s = [...v].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN; };
console.log('\nprobe µs per unit over the run (250 ms windows, the first 2 s of a probe dropped): median / p10 / p90; steal %, MHz');
console.log('| during | alu median | alu p10-p90 | mem median | mem p10-p90 | busy % | steal % max | MHz |\n|---|---|---|---|---|---|---|---|');
for (const name of ['idle', '1gpu', '2gpu-none', '2gpu-default', '1gpu-again']) {
  const rows = (k) => { try { return fs.readFileSync(`${out}/probe-${name}-${k}.jsonl`, 'utf8').split('\n').filter(Boolean).map(JSON.parse).filter((r) => r.t >= 2); } catch { return []; } };
  const a = rows('alu'), m = rows('mem');
  const u = (r) => r.map((x) => x.us_per_unit);
  const busy = a.map((x) => x.busy_pct), steal = a.map((x) => x.steal_pct ?? 0), mhz = a.map((x) => x.mhz).filter((x) => x);
  console.log(`| ${name} | ${q(u(a), 0.5)} | ${q(u(a), 0.1)}-${q(u(a), 0.9)} | ${q(u(m), 0.5)} | ${q(u(m), 0.1)}-${q(u(m), 0.9)} | ${q(busy, 0.5)} | ${Math.max(0, ...steal)} | ${q(mhz, 0.5)} |`);
}
JS
say done
