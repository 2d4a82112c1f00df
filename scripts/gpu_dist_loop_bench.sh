#!/usr/bin/env bash
# Issue 13 part 3: the whole training loop on 2 GPUs (mambaout-distributed-train 2, real JPEGs, the MambaOut recipe)
# against timm's loop on 1 GPU and our own loop on 1 GPU, on the nvidia-h200-x2 machine, from the repository root:
#
#   source .device/setup.sh && bash scripts/gpu_dist_loop_bench.sh
#
# timm on 2 GPUs is not measured: ../shared/bench/timm_loop.py has no distributed mode (its DataLoader is built with
# distributed=False); the 2-GPU PyTorch figure beside ours is torch_step.py's DDP model step (gpu_dist_bench.sh).
# Parts: JPEGs (NTRAIN train + 256 val, 375-500 px), timm 1 GPU (timm_loop.py, 15 workers), ours 1 GPU (bench:train:
# the real loop, steady img/s after 3 warm-up updates), ours 2 GPUs (mambaout-distributed-train 2, 128 per GPU,
# 15 workers per rank, one epoch, JSON log: img/s from the log lines' timestamps, after the 5th update).
# Knobs: MODEL (mambaout_femto), BATCH (128 per GPU), WORKERS (15), NTRAIN (12800), BACKEND (webgpu), IMG (224), STEPS
# (45). At most ~5 minutes. Dry run on a CPU box: MODEL=mambaout_test BACKEND=cpu IMG=32 BATCH=8 WORKERS=1 NTRAIN=160 STEPS=5
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_dist_loop_bench}
mkdir -p "$OUT"
MODEL=${MODEL:-mambaout_femto}
B=${BATCH:-128}
W=${WORKERS:-15}
NTRAIN=${NTRAIN:-12800}
BACKEND=${BACKEND:-webgpu}
IMG=${IMG:-224}
DIR=/tmp/mambaout_loop_jpegs_${NTRAIN}_256
TIMM_LOOP=${TIMM_LOOP:-}
for c in shared/bench/timm_loop.py ../shared/bench/timm_loop.py; do [ -n "$TIMM_LOOP" ] || { [ -f "$c" ] && TIMM_LOOP=$c; }; done
T0=$SECONDS
. scripts/gpu_bench_lib.sh
say "machine: $(nproc) cores, $(nvidia-smi -L 2>/dev/null | wc -l) GPU(s), node $(node --version)"
if [ "$(find "$DIR/train" -name '*.jpg' 2>/dev/null | wc -l)" -ne "$NTRAIN" ]; then
  rm -rf "$DIR"
  part make_jpegs 90 node --import tsx scripts/make_jpeg_folder.ts "$DIR" --train "$NTRAIN" --val 256 --classes 10 --jobs 16
fi
if [ -n "$TIMM_LOOP" ]; then
  CUDA_VISIBLE_DEVICES=0 part_json timm_1gpu 90 python3 "$TIMM_LOOP" "$DIR/train" --mode train --model "$MODEL" --workers "$W" --batch "$B"
fi
part ours_1gpu 120 node --import tsx scripts/bench_train.ts --dir "$DIR/train" --model "$MODEL" --batch "$B" --workers "$W" \
  --backend "$BACKEND" --img-size "$IMG" --steps "${STEPS:-45}" --warmup 3 --json
rm -rf /tmp/mambaout_dist_loop_out
part ours_2gpu 180 node --import tsx bin/distributed_train.ts 2 "$DIR" --model "$MODEL" -b "$B" -j "$W" --epochs 1 \
  --warmup-epochs 0 --cooldown-epochs 0 --lr 4e-3 --backend "$BACKEND" --img-size "$IMG" --log-interval 5 --log-format json \
  --output /tmp/mambaout_dist_loop_out --experiment d2

node - "$OUT" "$B" <<'JS' | tee "$OUT/summary.txt"
const fs = require('fs');
const [out, B] = [process.argv[2], Number(process.argv[3])];
const read = (f) => { try { return fs.readFileSync(`${out}/${f}.log`, 'utf8').split('\n'); } catch { return []; } };
const lastJson = (f) => { const l = read(f).filter((s) => s.startsWith('{')).pop(); try { return l ? JSON.parse(l) : {}; } catch { return {}; } };
const timm = lastJson('timm_1gpu').img_s, one = lastJson('ours_1gpu').steady_img_s, step = lastJson('ours_1gpu').model_step_alone_img_s;
// 2 GPUs: train events of rank 0 (world 2): images between the 5th update's line and the last one, over the time between them
const ev = read('ours_2gpu').filter((s) => s.startsWith('{')).map((s) => { try { return JSON.parse(s); } catch { return null; } })
  .filter((e) => e && e.event === 'train' && e.time);
let two = NaN;
const first = ev.find((e) => e.step >= 5), last = ev[ev.length - 1];
if (first && last && last.step > first.step) two = ((last.step - first.step) * B * 2) / ((Date.parse(last.time) - Date.parse(first.time)) / 1000);
const f = (v) => (typeof v === 'number' && isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '-');
const r = (a, b) => (typeof a === 'number' && typeof b === 'number' && isFinite(a) && b > 0 ? (a / b).toFixed(2) + 'x' : '-');
console.log(`\nwhole training loop, ${B} per GPU, real JPEGs, MambaOut recipe, fp32; img/s`);
console.log('| | timm 1 GPU | ours 1 GPU | ours 2 GPUs | 2-GPU scaling (ours) | ours 2 GPUs / timm 1 GPU |\n|---|---|---|---|---|---|');
console.log(`| loop | ${f(timm)} | ${f(one)} | ${f(two)} | ${r(two, one)} | ${r(two, timm)} |`);
console.log(`(our model step alone, 1 GPU, same run: ${f(step)} img/s; 2-GPU rank-0 log lines used: ${ev.length})`);
JS
say "done; logs in $OUT"
