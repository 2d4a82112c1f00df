#!/usr/bin/env bash
# Data-parallel scaling on the 2-GPU machine (nvidia-h200-x2), in one command (~5 min, under 8):
#   source .device/setup.sh && bash scripts/gpu_dist_bench.sh
# For mambaout_femto and mambaout_tiny, 224 px, fp32, synthetic data, 128 images per GPU:
#   1. 1 GPU, batch 128: paths none (the baseline), flat, overlap: readback/upload costs with nothing to exchange
#   2. 1 GPU, batch 256: the gradient paths of 3, weights saved (reference for 3)
#   3. 2 GPUs, 128 each (launch_bench_dist.ts 2): paths old (the path before issue 13: one flat buffer after the
#      backward pass, over unix sockets), flat (the same through shared memory), overlap-sock (buckets during the
#      backward pass, sockets), overlap (buckets, shared memory: the default), overlap-mt (buckets on 4 communication
#      threads per rank), each with a phase breakdown; the weights after all steps are compared with 2 (--compare)
#   4. PyTorch + timm: python3 torch_step.py (1 GPU) and torchrun --nproc_per_node 2 torch_step.py (DDP over NCCL)
# and prints one table with img/s and scaling ratios. Logs (stdout/stderr of every run) go to $OUT (or /tmp).
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
BATCH=${BATCH:-128}
PATHS2=old,flat,overlap-sock,overlap,overlap-mt
COMMON=(--backend "${BACKEND:-webgpu}" --img-size "${IMG:-224}" --warmup 2 --steps 5 --breakdown 2)
echo "$(date -u +%FT%TZ) $(nproc) cores; /dev/shm: $(df -h /dev/shm | awk 'NR==2 {print $2" size, "$4" free"}'); $(nvidia-smi -L | tr '\n' ' ')"

run() { # name cmd...: stdout (JSON lines + table) to $ref/name.out, both streams also to the log in $out
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$ref/$name.out" 2> "$ref/$name.err"
  local rc=$?
  { echo "=== $name: $*"; cat "$ref/$name.out" "$ref/$name.err"; } >> "$log"
  if [ $rc -ne 0 ]; then
    echo "!! $name failed (exit $rc) after $((SECONDS - t0)) s; last lines:"; grep -v '^Warning' "$ref/$name.err" | tail -n 8
  else
    echo "-- $name ($((SECONDS - t0)) s)"
    sed -n '/^mambaout_/,$p' "$ref/$name.out" | grep -v '^{' || true
    grep -h '"compare"' "$ref/$name.out" || true
  fi
}

for M in $MODELS; do
  run "$M-1gpu" "${T[@]}" scripts/bench_dist.ts --model $M --batch $BATCH "${COMMON[@]}" --paths none,flat,overlap
  run "$M-1gpu-b2x" "${T[@]}" scripts/bench_dist.ts --model $M --batch $((2 * BATCH)) "${COMMON[@]}" --paths $PATHS2 --save "$ref/$M.safetensors"
  run "$M-2gpu" "${T[@]}" scripts/launch_bench_dist.ts 2 --model $M --batch $BATCH "${COMMON[@]}" --paths $PATHS2 --compare "$ref/$M.safetensors"
  run "$M-torch-1gpu" python3 ../shared/bench/torch_step.py --model $M --batch $BATCH
  run "$M-torch-2gpu" torchrun --nproc_per_node 2 ../shared/bench/torch_step.py --model $M --batch $BATCH
done

# One table: img/s and scaling (2 GPUs / 1 GPU at batch 128 per GPU) for every path, PyTorch beside it.
node -e '
const fs = require("fs"); const dir = process.argv[1];
const lines = (f) => { try { return fs.readFileSync(`${dir}/${f}.out`, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)); } catch { return []; } };
const pad = (s, n) => String(s).padStart(n);
console.log("\nmodel            path          1 GPU img/s   2 GPUs img/s   scaling   2-GPU step ms   exposed ms (2 GPUs)   max |dw| vs 1 GPU x2 batch");
for (const m of process.argv[2].split(/\s+/).filter(Boolean)) {
  const one = lines(`${m}-1gpu`), two = lines(`${m}-2gpu`);
  const base = one.find((r) => r.path === "none");
  const cmp = two.find((r) => r.compare !== undefined);
  for (const r of two.filter((r) => r.path)) {
    const s = base ? (r.img_s / base.img_s).toFixed(2) + "x" : "-";
    console.log(`${m.padEnd(16)} ${r.path.padEnd(12)} ${pad(base ? base.img_s : "-", 12)} ${pad(r.img_s, 14)} ${pad(s, 9)} ${pad(r.ms_per_step, 15)} ${pad(r.breakdown ? r.breakdown.exposed : "-", 21)}   ${cmp ? cmp.max_abs_weight_diff.toExponential(2) : "-"}`);
  }
  const t1 = lines(`${m}-torch-1gpu`)[0], t2 = lines(`${m}-torch-2gpu`)[0];
  if (t1 && t2) console.log(`${m.padEnd(16)} ${"pytorch DDP".padEnd(12)} ${pad(t1.img_s, 12)} ${pad(t2.img_s, 14)} ${pad((t2.img_s / t1.img_s).toFixed(2) + "x", 9)}`);
}
' "$ref" "$MODELS"
echo "(logs: $log)"
