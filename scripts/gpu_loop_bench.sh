#!/usr/bin/env bash
# Whole training and validation loops, timm (PyTorch) against mambaout, on one GPU of the nvidia-h200-x2 machine
# (32 cores), on the same folder of JPEGs, in one run (issue 12). From the repository root:
#
#   source .device/setup.sh && bash scripts/gpu_loop_bench.sh
#
# 1. 6,400 train + 2,560 val generated JPEGs of 375-500 px (scripts/make_jpeg_folder.ts, 16 processes);
# 2. ../shared/bench/timm_loop.py DIR/train --mode train and DIR/val --mode eval, 15 workers, batch 128, fp32;
# 3. our bench:train (the real mambaout-train loop, webgpu, femto, batch 128, -j 15: 3 warm-up + 45 timed
#    updates, then the model step alone in the same process) and bench:validate (the real mambaout-validate
#    loop, tfjs engine on webgpu, then the engine alone);
# 4. one table with the ratios. Logs and the table go to $OUT (default /tmp/gpu_loop_bench).
# Each part has its own time limit (75+90+150+60+90 s) and a failure does not stop the others; typical total 3-4
# minutes, at most 8. The logs keep our loops' own log lines (which batch path ran, Data times) for diagnosis.
# Knobs (environment): PARTS ("train eval": which loops), MODEL (mambaout_femto), BATCH (128), WORKERS (15), STEPS (45), NTRAIN (6400), NVAL (2560),
# IMG_SIZE (224, ours only: a dry run on lavapipe), TIMM_LOOP (path of timm_loop.py; default: shared/bench/ in the
# checkout, else ../shared/bench/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_loop_bench}
mkdir -p "$OUT"
MODEL=${MODEL:-mambaout_femto}
B=${BATCH:-128}
W=${WORKERS:-15}
STEPS=${STEPS:-45}
NTRAIN=${NTRAIN:-6400}
NVAL=${NVAL:-2560}
IMG=${IMG_SIZE:-224}
DIR=/tmp/mambaout_loop_jpegs_${NTRAIN}_${NVAL}
TIMM_LOOP=${TIMM_LOOP:-}
for c in shared/bench/timm_loop.py ../shared/bench/timm_loop.py; do [ -n "$TIMM_LOOP" ] || { [ -f "$c" ] && TIMM_LOOP=$c; }; done
T0=$SECONDS
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}

. scripts/gpu_bench_lib.sh
say "machine: $(nproc) cores, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), node $(node --version)"
count() { find "$DIR/$1" -name '*.jpg' 2>/dev/null | wc -l; }
if [ "$(count train)" -ne "$NTRAIN" ] || [ "$(count val)" -ne "$NVAL" ]; then
  rm -rf "$DIR"
  part make_jpegs 75 node --import tsx scripts/make_jpeg_folder.ts "$DIR" --train "$NTRAIN" --val "$NVAL" --classes 10 --jobs "${GEN_JOBS:-16}"
fi
say "images: $(count train) train, $(count val) val, $(du -sh "$DIR" 2>/dev/null | cut -f1)"

[ -n "$TIMM_LOOP" ] || say "timm_loop.py not found (put ../shared/bench in the checkout as shared/bench, or set TIMM_LOOP): timm parts skipped"
timm() { if [ -n "$TIMM_LOOP" ]; then part_json "$@"; fi; return 0; }
PARTS=${PARTS:-train eval}
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if has train; then
timm timm_train 90 python3 "$TIMM_LOOP" "$DIR/train" --mode train --model "$MODEL" --workers "$W" --batch "$B"
part ours_train 150 node --import tsx scripts/bench_train.ts --dir "$DIR/train" --model "$MODEL" --batch "$B" --workers "$W" \
  --backend webgpu --steps "$STEPS" --warmup 3 --img-size "$IMG" --json
fi
if has eval; then
timm timm_eval 60 python3 "$TIMM_LOOP" "$DIR/val" --mode eval --model "$MODEL" --workers "$W" --batch "$B"
part ours_eval 90 node --import tsx scripts/bench_validate.ts --dir "$DIR/val" --model "$MODEL" --batch "$B" --workers "$W" \
  --engine tfjs --backend webgpu --img-size "$IMG" --log-freq 4 --json
fi

# the table (each log's last JSON line; a missing one prints as '-')
node - "$OUT" <<'JS' | tee "$OUT/summary.txt"
const fs = require('fs');
const out = process.argv[2];
const last = (f) => {
  try {
    const l = fs.readFileSync(`${out}/${f}.log`, 'utf8').split('\n').filter((s) => s.startsWith('{')).pop();
    return l ? JSON.parse(l) : {};
  } catch { return {}; }
};
const tt = last('timm_train'), te = last('timm_eval'), ot = last('ours_train'), oe = last('ours_eval');
const f = (v) => (typeof v === 'number' && isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '-');
const r = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? (a / b).toFixed(2) + 'x' : '-');
const rows = [
  ['training loop, steady', tt.img_s, ot.steady_img_s, r(ot.steady_img_s, tt.img_s)],
  ['training loop, with start-up', '', ot.startup_img_s, ''],
  ['our model step alone (same process)', '', ot.model_step_alone_img_s, `loop/step ${r(ot.steady_img_s, ot.model_step_alone_img_s)}`],
  ['validation loop, steady', te.img_s, oe.steady_img_s, r(oe.steady_img_s, te.img_s)],
  ['validation loop, with start-up', '', oe.startup_img_s, ''],
  ['our engine alone (same process)', '', oe.engine_alone_img_s, `loop/engine ${r(oe.steady_img_s, oe.engine_alone_img_s)}`],
];
console.log(`\n${ot.model ?? oe.model ?? ''} ${ot.img ?? ''}px batch ${ot.batch ?? oe.batch ?? ''}, ${ot.workers ?? ''} workers, fp32${tt.timm ? ', timm ' + tt.timm : ''}; img/s`);
console.log('| loop | timm (PyTorch) | mambaout | ratio |\n|---|---|---|---|');
for (const [name, a, b, c] of rows) console.log(`| ${name} | ${a === '' ? '' : f(a)} | ${f(b)} | ${c} |`);
JS
say "done in $((SECONDS - T0)) s; logs in $OUT"
