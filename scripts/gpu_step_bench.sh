#!/usr/bin/env bash
# One GPU run for issue 14 (WebGPU model step vs PyTorch eager), for one H200, ~6-7 minutes, compact output.
#   source .device/setup.sh && bash scripts/gpu_step_bench.sh            (from the repository root)
# Sections, in order of importance (each with its own timeout; a section that fails prints why and the run goes on;
# sections after the time budget are skipped with a note):
#   1. PyTorch eager (../shared/bench/torch_step.py): femto, tiny x fp32/bf16 x train/infer, batch 128
#   2. ours (npm run bench): femto, tiny, batch 128, train + infer, NEW kernels (+ per-kernel profile of one training
#      step and one inference forward, Dawn peak memory) and V1 kernels (MAMBAOUT_WEBGPU_KERNELS=v1 = main's kernels)
#   3. summary table: ours new / v1 / PyTorch fp32 and bf16, ratios, peak memory
#   4. GEMM tile sweep on the exact products of a femto and a tiny step (scripts/gemm_sweep.ts)
#   5. GPU test suite (MAMBAOUT_GPU_TESTS=1 test/webgpu.test.ts)
# Full logs go to $OUT (at most 8 files): torch.jsonl, ours_<model>_<kernels>.log, gemm_sweep.tsv/.log, gpu_tests.log.
set -u
OUT=${OUT:-/tmp/gpu_step_bench}
mkdir -p "$OUT"
BUDGET=${BUDGET:-400}   # seconds; optional sections start only while elapsed < BUDGET
B=${BATCH:-128}
IMG=${IMG:-224}
MODELS=${MODELS:-"femto tiny"}   # dry run on lavapipe: MODELS=test BATCH=2 IMG=64 SKIP_TESTS=1 bash scripts/gpu_step_bench.sh
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
sec() { echo; echo "== $1 [t=$(el)s]"; }

sec "machine"
echo "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1); node $(node --version); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"

summary() {
python3 - "$OUT" "$MODELS" <<'PY'
import json, os, sys
out = sys.argv[1]
def last_json(path):
    try:
        ls = [l for l in open(path) if l.startswith('{')]
        return json.loads(ls[-1]) if ls else {}
    except OSError:
        return {}
torch = {}
try:
    for l in open(os.path.join(out, 'torch.jsonl')):
        d = json.loads(l); torch[(d['model'][9:], d['mode'], d['amp'])] = d
except OSError:
    pass
def f(v, w=7): return f"{v:{w}.0f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
def r(a, b): return f"{a / b:5.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "    -"
print("model | mode  |  ours new |  ours v1 | torch fp32 | new/fp32 | v1/fp32 | torch bf16 | ours peak GB (Dawn) | torch peak GB")
for m in sys.argv[2].split():
    n = last_json(os.path.join(out, f'ours_{m}_new.log')); v = last_json(os.path.join(out, f'ours_{m}_v1.log'))
    for mode, key in (('train', 'train_img_s'), ('infer', 'infer_img_s')):
        t32 = torch.get((m, mode, 0), {}); t16 = torch.get((m, mode, 1), {})
        peak = n.get('train_dawn_peak_gb') if mode == 'train' else '-'
        print(f"{m:5s} | {mode:5s} | {f(n.get(key), 9)} | {f(v.get(key), 8)} | {f(t32.get('img_s'), 10)} | {r(n.get(key), t32.get('img_s'))}   | {r(v.get(key), t32.get('img_s'))}  | {f(t16.get('img_s'), 10)} | {peak!s:>19} | {t32.get('peak_mem_gb', '-')}")
PY
}

TORCH=""
for p in ../shared/bench/torch_step.py shared/bench/torch_step.py "${TORCH_STEP:-}"; do
  [ -n "$p" ] && [ -f "$p" ] && { TORCH=$p; break; }
done

sec "1. PyTorch eager (torch_step.py, batch $B, 20 steps after 5 warm-up)"
: > "$OUT/torch.jsonl"
if [ -z "$TORCH" ]; then
  echo "torch_step.py not found (looked in ../shared/bench, shared/bench, \$TORCH_STEP): PyTorch figures skipped"
else
  for m in $MODELS; do
    for amp in 0 1; do
      for inf in 0 1; do
        line=$(timeout 60 python3 "$TORCH" --model mambaout_$m --batch "$B" --amp $amp --infer $inf 2>&1 | grep '^{' | tail -1)
        if [ -n "$line" ]; then echo "$line" >> "$OUT/torch.jsonl"; else echo "torch $m amp=$amp infer=$inf: failed or timed out"; fi
      done
    done
  done
  python3 - "$OUT/torch.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    print(f"torch {d['model'][9:]:6s} {d['mode']:5s} {'bf16' if d['amp'] else 'fp32'}: {d['img_s']:8.1f} img/s  peak {d['peak_mem_gb']} GB")
PY
fi

sec "2. ours (npm run bench, webgpu, batch $B, $IMG px, median of 5 steps after 2 warm-up)"
run_ours() {  # model kernels(new|v1) extra-args...
  local m=$1 k=$2; shift 2
  local log="$OUT/ours_${m}_${k}.log"
  local kv=MAMBAOUT_WEBGPU_KERNELS=; [ "$k" = v1 ] && kv=MAMBAOUT_WEBGPU_KERNELS=v1
  env "$kv" timeout 150 node --import tsx scripts/bench.ts --model mambaout_$m --backend webgpu --batch "$B" --img-size "$IMG" \
    --steps 5 --warmup 2 --json "$@" > "$log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && echo "ours $m $k: exit $rc: $(grep -v '^{' "$log" | tail -2 | tr '\n' ' ')"
  return 0
}
for m in $MODELS; do
  run_ours "$m" new --profile --top 10
  echo "-- $m, new kernels"
  grep -E '^(kernels|train|inference|bind groups):' "$OUT/ours_${m}_new.log"
  # the two profile tables (header + 12 rows each)
  awk '/^profile of/{p=1} /^(train|inference|bind groups|peak tfjs|\{)/{p=0} p' "$OUT/ours_${m}_new.log"
  run_ours "$m" v1
  echo "-- $m, v1 kernels (main's)"
  grep -E '^(train|inference):' "$OUT/ours_${m}_v1.log"
done

sec "3. summary (batch $B; ratio = ours / PyTorch fp32 eager, same run)"
summary

if [ "$(el)" -lt "$BUDGET" ]; then
  sec "4. GEMM tile sweep (products recorded from one femto and one tiny step, batch $B; GPU ms by timestamp queries)"
  timeout 170 node --import tsx scripts/gemm_sweep.ts --models "$(for m in $MODELS; do printf 'mambaout_%s,' "$m"; done | sed 's/,$//')" \
    --batch "$B" --img-size "$IMG" --max-tiles 5 --reps 3 \
    --out "$OUT/gemm_sweep.tsv" > "$OUT/gemm_sweep.log" 2>&1 || echo "sweep: exit $? (partial log below)"
  grep -v -E '^\s*$|Warning' "$OUT/gemm_sweep.log" | cut -c1-120
else
  sec "4. GEMM tile sweep skipped (elapsed $(el)s >= budget ${BUDGET}s)"
fi

if [ -n "${SKIP_TESTS:-}" ]; then
  sec "5. GPU test suite skipped (SKIP_TESTS)"
elif [ "$(el)" -lt $((BUDGET + 60)) ]; then
  sec "5. GPU test suite (MAMBAOUT_GPU_TESTS=1 test/webgpu.test.ts)"
  MAMBAOUT_GPU_TESTS=1 timeout 200 node --import tsx --test test/webgpu.test.ts > "$OUT/gpu_tests.log" 2>&1
  echo "exit $?"
  grep -E '^# (tests|pass|fail|cancelled)|^not ok|^    not ok|worst gradient' "$OUT/gpu_tests.log" | head -20
else
  sec "5. GPU test suite skipped (elapsed $(el)s)"
fi
sec "recap"
summary
grep -h '^# per step' "$OUT/gemm_sweep.log" 2>/dev/null
grep -h -E '^# (pass|fail) ' "$OUT/gpu_tests.log" 2>/dev/null | tr '\n' ' '; echo
echo "== done in $(el)s; logs in $OUT (torch.jsonl, ours_<model>_<new|v1>.log, gemm_sweep.tsv/.log, gpu_tests.log)"
