#!/usr/bin/env bash
# Main-thread CPU profiles on the H200 (issues 12 and 13): where the training loop's main thread spends the time
# the model step alone does not, what validate's main thread and a loader worker do, and what a rank's main thread
# does on 2 GPUs against 1. From the repository root on nvidia-h200-x2:
#
#   source .device/setup.sh && bash scripts/gpu_profile.sh
#
# Summaries (scripts/profile_summary.ts) print to stdout; the main-thread profiles go gzipped to $OUT/profiles.tgz.
# About 5 minutes. Knobs: PARTS ("train val dist": which of the three), MODEL (mambaout_femto), WORKERS (15), NTRAIN (6400), NVAL (2560), IMG_SIZE (224), STEPS (45)
# (a dry run on lavapipe: MODEL=mambaout_test IMG_SIZE=32 NTRAIN=256 NVAL=128 WORKERS=2 STEPS=5).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_profile}
mkdir -p "$OUT"
MODEL=${MODEL:-mambaout_femto}
W=${WORKERS:-15}
NTRAIN=${NTRAIN:-6400}
NVAL=${NVAL:-2560}
IMG=${IMG_SIZE:-224}
STEPS=${STEPS:-45}
DIR=/tmp/mambaout_loop_jpegs_${NTRAIN}_${NVAL}
P=/tmp/mambaout_profiles
rm -rf "$P"; mkdir -p "$P"
T0=$SECONDS
. scripts/gpu_bench_lib.sh
say "machine: $(nproc) cores, $(nvidia-smi -L | wc -l) GPU(s), node $(node --version), $(git rev-parse --short HEAD 2>/dev/null)"
PARTS=${PARTS:-train val dist}
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
count() { find "$DIR/$1" -name '*.jpg' 2>/dev/null | wc -l; }
if { has train || has val; } && { [ "$(count train)" -ne "$NTRAIN" ] || [ "$(count val)" -ne "$NVAL" ]; }; then
  rm -rf "$DIR"
  part make_jpegs 90 node --import tsx scripts/make_jpeg_folder.ts "$DIR" --train "$NTRAIN" --val "$NVAL" --classes 10 --jobs "$(nproc)"
fi
summ() { node --import tsx scripts/profile_summary.ts "$@" 2>&1 | cut -c1-200; }
main_of() { ls "$1"/CPU.*.*.*.0.*.cpuprofile 2>/dev/null | head -1; }
worker_of() { ls -S "$1"/CPU.*.cpuprofile 2>/dev/null | grep -v '\.0\.[0-9]*\.cpuprofile$' | head -1; }

MAIN= MAINV= D1= D2=
# 1. training loop, then the model step alone, in one process (bench_train prints both windows' marks)
export CUDA_VISIBLE_DEVICES=0
if has train; then
mkdir -p "$P/train"
part train 200 node --cpu-prof --cpu-prof-dir "$P/train" --import tsx scripts/bench_train.ts --dir "$DIR/train" --model "$MODEL" \
  --batch 128 --workers "$W" --backend webgpu --steps "$STEPS" --warmup 3 --img-size "$IMG" --json
J=$(grep '^{' "$OUT/train.log" | tail -1)
echo "$J"
m() { node -e "console.log(JSON.parse(process.argv[1])[process.argv[2]])" "$J" "$1"; }
MAIN=$(main_of "$P/train")
if [ -n "$J" ] && [ -n "$MAIN" ]; then
  say "== loop, steady window"; summ "$MAIN" --from "$(m loop_steady_start_us)" --to "$(m loop_steady_end_us)" --top 30
  say "== model step alone"; summ "$MAIN" --from "$(m alone_start_us)" --to "$(m alone_end_us)" --top 30
  WK=$(worker_of "$P/train"); [ -n "$WK" ] && { say "== one train loader worker (whole run)"; summ "$WK" --top 12; }
fi

fi

# 2. validation loop
if has val; then
mkdir -p "$P/val"
part val 120 node --cpu-prof --cpu-prof-dir "$P/val" --import tsx scripts/bench_validate.ts --dir "$DIR/val" --model "$MODEL" \
  --batch 128 --workers "$W" --engine tfjs --backend webgpu --log-freq 4 --img-size "$IMG" --json
grep '^{' "$OUT/val.log" | tail -1
MAINV=$(main_of "$P/val"); [ -n "$MAINV" ] && { say "== validate main thread (whole run)"; summ "$MAINV" --top 25; }
WV=$(worker_of "$P/val"); [ -n "$WV" ] && { say "== one eval loader worker (whole run)"; summ "$WV" --top 12; }

fi

# 3. one rank's main thread, 1 GPU (path none) against 2 GPUs (default path), femto, batch 128 per GPU
unset CUDA_VISIBLE_DEVICES
if has dist; then
mkdir -p "$P/d1" "$P/d2"
part dist1 150 node --cpu-prof --cpu-prof-dir "$P/d1" --import tsx scripts/bench_dist.ts --model "$MODEL" --batch 128 --backend webgpu \
  --img-size "$IMG" --warmup 2 --steps 20 --paths none
grep -h '^{' "$OUT/dist1.log" | cut -c1-300
NODE_OPTIONS="--cpu-prof --cpu-prof-dir=$P/d2" part dist2 200 node --import tsx scripts/launch_bench_dist.ts 2 --model "$MODEL" \
  --batch 128 --backend webgpu --img-size "$IMG" --warmup 2 --steps 20 --paths default
grep -h '^{' "$OUT/dist2.log" | cut -c1-400
D1=$(main_of "$P/d1"); [ -n "$D1" ] && { say "== 1 GPU rank main thread (whole run)"; summ "$D1" --top 25; }
# the 2-GPU profiles: the launcher's, then one per rank; the largest main-thread profile is a rank's
D2=$(ls -S "$P"/d2/CPU.*.*.*.0.*.cpuprofile 2>/dev/null | head -1); [ -n "$D2" ] && { say "== 2 GPU rank main thread (whole run)"; summ "$D2" --top 25; }
ls -la "$P"/d2 | head
fi
tar czf "$OUT/profiles.tgz" -C "$P" $(cd "$P" && for f in "$MAIN" "$MAINV" "$D1" "$D2"; do [ -n "$f" ] && echo "${f#$P/}"; done) 2>/dev/null
ls -la "$OUT"
say "done"
