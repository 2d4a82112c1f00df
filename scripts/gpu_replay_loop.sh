#!/usr/bin/env bash
# The training loop with and without the replayed step (MAMBAOUT_STEP_REPLAY, src/train/step_replay.ts) on one GPU,
# timm's loop in the same run, then the model step alone through bench_dist with the replay first (replay,none
# alternating: the order effect of gpu_replay_one.sh). Real JPEGs, the full recipe (scripts/bench_train.ts), femto,
# batch 128, 15 loader workers. ~8 minutes. From the repository root:
#   source .device/setup.sh && bash scripts/gpu_replay_loop.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_bench_lib.sh
TB=../shared/bench; [ -d shared/bench ] && TB=shared/bench
bench_init gpu_replay_loop
MODEL=${MODEL:-mambaout_femto}
W=${WORKERS:-15}
DIR=/tmp/mambaout_loop_jpegs_6400_0
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
[ "$(find "$DIR/train" -name '*.jpg' 2>/dev/null | wc -l)" -eq 6400 ] || {
  rm -rf "$DIR"
  part make_jpegs 90 node --import tsx scripts/make_jpeg_folder.ts "$DIR" --train 6400 --val 0 --classes 10 --jobs 16
}
part_json timm_train 90 python3 "$TB/timm_loop.py" "$DIR/train" --mode train --model "$MODEL" --workers "$W" --batch 128
i=0
for R in ${REPLAYS:-off on}; do
  i=$((i + 1))
  part "ours_train_${i}_$R" 150 env MAMBAOUT_STEP_REPLAY="$R" node --import tsx scripts/bench_train.ts --dir "$DIR/train" \
    --model "$MODEL" --batch 128 --workers "$W" --backend webgpu --steps "${STEPS:-45}" --warmup 3 --json
done
[ "${STEP_PATHS:-1}" = 1 ] && part step_paths 150 node --import tsx scripts/bench_dist.ts --model "$MODEL" --batch 128 --backend webgpu --img-size 224 \
  --warmup 3 --steps 25 --paths replay,none,replay,none,replay,none
node - "$OUT" <<'JS' | tee "$OUT/summary.txt"
const fs = require('fs');
const out = process.argv[2];
const lines = (f) => { try { return fs.readFileSync(`${out}/${f}.log`, 'utf8').split('\n').filter((s) => s.startsWith('{')).map((l) => JSON.parse(l)); } catch { return []; } };
const f = (v) => (typeof v === 'number' ? v.toFixed(1) : '-');
const timm = lines('timm_train').pop() ?? {};
console.log(`\n| run | img/s | vs timm | note |\n|---|---|---|---|\n| timm train loop | ${f(timm.img_s)} | 1.00x | |`);
const runs = fs.readdirSync(out).map((n) => n.match(/^ours_train_(\d+)_(on|off|auto)\.log$/)).filter(Boolean).sort((a, b) => a[1] - b[1]);
const by = { on: [], off: [], auto: [] };
for (const [name, , r] of runs) {
  const o = lines(name.slice(0, -4)).pop();
  if (!o) continue;
  by[r].push(o.steady_img_s);
  const x = timm.img_s ? (o.steady_img_s / timm.img_s).toFixed(2) + 'x' : '-';
  console.log(`| ours, MAMBAOUT_STEP_REPLAY=${r} | ${f(o.steady_img_s)} | ${x} | step alone ${f(o.model_step_alone_img_s)} (loop/step ${o.ratio_steady}), loop CPU ${o.loop_cpu_ms_per_image} ms/img |`);
}
const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
for (const r of ["off", "on", "auto"]) if (by[r].length) console.log(`| ours, MAMBAOUT_STEP_REPLAY=${r}, mean of ${by[r].length} | ${f(mean(by[r]))} | ${timm.img_s ? (mean(by[r]) / timm.img_s).toFixed(2) + 'x' : '-'} | |`);
for (const p of lines('step_paths')) console.log(`| bench_dist ${p.path} | ${f(p.img_s)} | | ${f(p.ms_per_step)} ms/step, issue ${f(p.issue_ms)} ms |`);
JS
say "done"
