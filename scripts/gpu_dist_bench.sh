#!/usr/bin/env bash
# Data-parallel scaling on the 2-GPU machine (nvidia-h200-x2), in one command (~5 min; every part has its own timeout):
#   source .device/setup.sh && bash scripts/gpu_dist_bench.sh
# 1. scripts/gpu_transfer_bench.ts (4, 32, 128 MB): Dawn readback/upload paths, host memcpy, /dev/shm mailbox speed.
# For mambaout_femto and mambaout_tiny, 224 px, fp32, synthetic data, 128 images per GPU:
# 2. 1 GPU, batch 128: path none (the model step alone: the baseline of every scaling figure), flat (tfjs transfer, run
#    1's readback/upload), flat+staged (persistent staging buffers), default (what training uses; 1 GPU: no transport)
# 3. 1 GPU, batch 256, path none: the weights after the same number of updates (--save), the reference of 4
# 4. 2 GPUs, 128 each (launch_bench_dist.ts 2): run 1's best path (femto overlap-sock, tiny overlap-mt), the levers one
#    by one (overlap+staged, overlap-mt+staged), default (= overlap+staged, on 4 comm threads when the gradients are
#    >= 64 MiB: tiny), default+bf16; every path starts from the same weights and is compared with 3 (max |dw|)
# 5. PyTorch + timm: python3 torch_step.py (1 GPU) and torchrun --nproc_per_node 2 torch_step.py (DDP over NCCL)
# Prints one table: img/s, scaling = 2-GPU img/s / 1-GPU img/s of path none (same code), PyTorch beside it.
# Logs (stdout/stderr of every part) go to $OUT/gpu_dist_bench.log (or /tmp); the JSON lines to $OUT/gpu_dist_bench.jsonl.
# NVLink multicast stays off (the machine's rule): NCCL_NVLS_ENABLE=0 also for torchrun.
# MODELS, BACKEND, IMG, BATCH override the defaults (a dry run on a CPU box: MODELS=mambaout_test BACKEND=cpu IMG=32 BATCH=4).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -f package.json ] || { echo "run from the project root" >&2; exit 2; }
out=${OUT:-/tmp/gpu_dist_bench}
mkdir -p "$out"
log="$out/gpu_dist_bench.log"
: > "$log"
ref=$(mktemp -d)
trap 'rm -rf "$ref"' EXIT
T=(node --import tsx)
MODELS=${MODELS:-mambaout_femto mambaout_tiny}
BACKEND=${BACKEND:-webgpu}
BATCH=${BATCH:-128}
COMMON=(--backend "$BACKEND" --img-size "${IMG:-224}" --warmup 2 --steps 5 --breakdown 2)
best_of_run1() { case $1 in mambaout_tiny) echo overlap-mt ;; *) echo overlap-sock ;; esac; }
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "$(date -u +%FT%TZ) $(nproc) cores, ${gpus} GPU(s); /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR==2 {print $2" size, "$4" free"}'); $(git rev-parse --short HEAD 2>/dev/null)"

run() { # name timeout_s cmd...: stdout to $ref/name.out, both streams to the log; prints the table part of stdout
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" > "$ref/$name.out" 2> "$ref/$name.err"
  local rc=$?
  { echo "=== $name: $*"; cat "$ref/$name.out" "$ref/$name.err"; } >> "$log"
  grep -h '^{' "$ref/$name.out" | sed "s/^{/{\"part\":\"$name\",/" >> "$out/gpu_dist_bench.jsonl"
  if [ $rc -ne 0 ]; then
    echo "!! $name failed (exit $rc$([ $rc -eq 124 ] && echo ", timed out after ${limit} s")) after $((SECONDS - t0)) s; last lines:"
    grep -v '^Warning' "$ref/$name.err" | tail -n 6
  else
    echo "-- $name ($((SECONDS - t0)) s)"
  fi
}
: > "$out/gpu_dist_bench.jsonl"

if [ "$BACKEND" = webgpu ]; then
  run transfer 120 "${T[@]}" scripts/gpu_transfer_bench.ts --sizes 4,32,128 --reps 5
  sed -n '/^dir /,$p' "$ref/transfer.out"
  grep -h '"latency"' "$ref/transfer.out" || true
fi

for M in $MODELS; do
  BEST=$(best_of_run1 "$M")
  run "$M-1gpu" 150 "${T[@]}" scripts/bench_dist.ts --model "$M" --batch "$BATCH" "${COMMON[@]}" --paths none,flat,flat+staged,default
  sed -n '/^path /,$p' "$ref/$M-1gpu.out"
  run "$M-1gpu-b2x" 120 "${T[@]}" scripts/bench_dist.ts --model "$M" --batch $((2 * BATCH)) "${COMMON[@]}" --paths none --save "$ref/$M.safetensors"
  run "$M-2gpu" 240 "${T[@]}" scripts/launch_bench_dist.ts 2 --model "$M" --batch "$BATCH" "${COMMON[@]}" \
    --paths "$BEST,overlap+staged,overlap-mt+staged,default,default+bf16" --compare "$ref/$M.safetensors"
  sed -n '/^path /,$p' "$ref/$M-2gpu.out"
  if command -v python3 >/dev/null && python3 -c 'import torch, timm' 2>/dev/null; then
    run "$M-torch-1gpu" 120 python3 ../shared/bench/torch_step.py --model "$M" --batch "$BATCH"
    run "$M-torch-2gpu" 150 torchrun --nproc_per_node 2 ../shared/bench/torch_step.py --model "$M" --batch "$BATCH"
  fi
done

# One table: img/s and scaling (2 GPUs / 1 GPU path none, batch 128 per GPU) for every path, PyTorch beside it.
node -e '
const fs = require("fs"); const dir = process.argv[1];
const lines = (f) => { try { return fs.readFileSync(`${dir}/${f}.out`, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)); } catch { return []; } };
const pad = (s, n) => String(s).padStart(n);
const num = (v, d = 1) => (v === undefined || v === null ? "-" : Number(v).toFixed(d));
console.log("\nmodel            path                1-GPU img/s  2-GPU img/s  scaling  step ms  exposed  copy  threads transfer compress  max|dw| vs 1 GPU 2x batch (|w|max)");
for (const m of process.argv[2].split(/\s+/).filter(Boolean)) {
  const one = lines(`${m}-1gpu`), two = lines(`${m}-2gpu`);
  const base = one.find((r) => r.path === "none");
  for (const r of one.filter((r) => r.path !== "none")) {
    console.log(`${m.padEnd(16)} ${("1 GPU " + r.path).padEnd(19)} ${pad(num(r.img_s), 11)} ${pad("-", 12)} ${pad("-", 8)} ${pad(num(r.ms_per_step), 8)} ${pad(num(r.breakdown?.exposed), 8)} ${pad(num(r.breakdown?.copy), 5)}`);
  }
  for (const r of two.filter((r) => r.path)) {
    const s = base ? (r.img_s / base.img_s).toFixed(2) + "x" : "-";
    const cmp = r.max_abs_weight_diff !== undefined ? `${r.max_abs_weight_diff.toExponential(2)} (${num(r.max_abs_weight, 2)})` : "-";
    console.log(`${m.padEnd(16)} ${r.path.padEnd(19)} ${pad(base ? num(base.img_s) : "-", 11)} ${pad(num(r.img_s), 12)} ${pad(s, 8)} ${pad(num(r.ms_per_step), 8)} ${pad(num(r.breakdown?.exposed), 8)} ${pad(num(r.breakdown?.copy), 5)} ${pad(r.threads, 8)} ${r.transfer.padEnd(8)} ${r.compress.padEnd(8)}  ${cmp}`);
  }
  const t1 = lines(`${m}-torch-1gpu`)[0], t2 = lines(`${m}-torch-2gpu`)[0];
  if (t1 && t2) console.log(`${m.padEnd(16)} ${"pytorch DDP".padEnd(19)} ${pad(t1.img_s, 11)} ${pad(t2.img_s, 12)} ${pad((t2.img_s / t1.img_s).toFixed(2) + "x", 8)}`);
}
' "$ref" "$MODELS"
echo "(logs: $log; JSON lines: $out/gpu_dist_bench.jsonl)"
