#!/usr/bin/env bash
# One GPU run for issue 14 (WebGPU model step vs PyTorch eager, fp32 and --amp), one H200, ~5-6 minutes, compact output.
#   source .device/setup.sh && bash scripts/gpu_step_bench.sh            (from the repository root)
# Sections (each with its own timeout; a section that fails prints why and the run goes on; optional sections start
# only while the elapsed time is under BUDGET, so a slow or failing section cannot eat the run):
#   1. PyTorch eager, femto + tiny x fp32/bf16 x train/infer, batch 128 (torch_step.py's measurement, one process per
#      model, 10 timed steps after 5 warm-up)
#   2. ours fp32 (npm run bench): femto, tiny, batch 128, train + infer, Dawn peak memory; tiny with the per-kernel
#      profile of one training step and one inference forward
#   3. ours --amp (bf16 activation storage): the same, tiny with profiles (the per-kernel effect of bf16)
#   4. summary table: ours fp32 / --amp next to PyTorch fp32 / bf16, ratios, peak memory
#   5. GPU test suite (MAMBAOUT_GPU_TESTS=1 test/webgpu.test.ts)
#   6. (optional, BUDGET) tiny fp32 with phase 1's GEMM tile rules (MAMBAOUT_GEMM_RULES=phase1): A/B of the retuned rules
#   Behind flags: V1=1 adds main-before-issue-14 kernels (MAMBAOUT_WEBGPU_KERNELS=v1); SWEEP=1 adds the GEMM tile sweep.
#   recap (summary again, test counts) at the end, so the output tail keeps it.
# Full logs go to $OUT (at most 8 files): torch.jsonl, ours_<model>_<fp32|amp>.log, gpu_tests.log, extras.log.
set -u
OUT=${OUT:-/tmp/gpu_step_bench}
mkdir -p "$OUT"
BUDGET=${BUDGET:-390}   # seconds; optional sections start only while elapsed < BUDGET
HARD=${HARD:-530}       # seconds; no command runs past this (each timeout is cut to what is left), the recap follows
TEST_RESERVE=150        # seconds kept for the test suite while the measurements run
[ -n "${SKIP_TESTS:-}" ] && TEST_RESERVE=0
B=${BATCH:-128}
IMG=${IMG:-224}
MODELS=${MODELS:-"femto tiny"}   # dry run on lavapipe: MODELS=test BATCH=2 IMG=64 SKIP_TESTS=1 SKIP_TORCH=1 bash scripts/gpu_step_bench.sh
PROFILE_MODEL=${PROFILE_MODEL:-tiny}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
# tmo WANT [RESERVE]: WANT seconds, or less so that RESERVE seconds remain before HARD (0: no time left, skip).
tmo() { local left=$(( HARD - $(el) - ${2:-0} )); [ "$left" -lt 10 ] && { echo 0; return; }; [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
sec() { echo; echo "== $1 [t=$(el)s]"; }
: > "$OUT/extras.log"

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
    except (OSError, ValueError):
        return {}
torch = {}
try:
    for l in open(os.path.join(out, 'torch.jsonl')):
        d = json.loads(l); torch[(d['model'][9:], d['mode'], d['amp'])] = d
except (OSError, ValueError):
    pass
def f(v, w=7): return f"{v:{w}.0f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
def r(a, b): return f"{a / b:5.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "    -"
def g(v): return f"{v:.2f}" if isinstance(v, (int, float)) else '-'
print("model | mode  | ours fp32 | ours amp | torch fp32 | torch bf16 | fp32/t32 | amp/t32 | amp/fp32 | amp/tbf16 | peak GB ours fp32/amp (Dawn) | torch fp32/bf16")
for m in sys.argv[2].split():
    n = last_json(os.path.join(out, f'ours_{m}_fp32.log')); a = last_json(os.path.join(out, f'ours_{m}_amp.log'))
    for mode, key in (('train', 'train_img_s'), ('infer', 'infer_img_s')):
        t32 = torch.get((m, mode, 0), {}); t16 = torch.get((m, mode, 1), {})
        pk = f"{g(n.get('train_dawn_peak_gb'))} / {g(a.get('train_dawn_peak_gb'))}" if mode == 'train' else '- / -'
        print(f"{m:5s} | {mode:5s} | {f(n.get(key), 9)} | {f(a.get(key), 8)} | {f(t32.get('img_s'), 10)} | {f(t16.get('img_s'), 10)} | "
              f"{r(n.get(key), t32.get('img_s'))}   | {r(a.get(key), t32.get('img_s'))}  | {r(a.get(key), n.get(key))}   | {r(a.get(key), t16.get('img_s'))}    | "
              f"{pk:>28} | {t32.get('peak_mem_gb', '-')} / {t16.get('peak_mem_gb', '-')}")
PY
}

sec "1. PyTorch eager (torch_step.py's measurement, batch $B, 10 steps after 5 warm-up, one process per model)"
: > "$OUT/torch.jsonl"
if [ -n "${SKIP_TORCH:-}" ]; then
  echo "skipped (SKIP_TORCH)"
else
  for m in $MODELS; do
    t=$(tmo 90 $((TEST_RESERVE + 200))); [ "$t" -eq 0 ] && { echo "torch $m: skipped (no time left)"; continue; }
    timeout "$t" python3 - "mambaout_$m" "$B" "$IMG" >> "$OUT/torch.jsonl" 2>> "$OUT/extras.log" <<'PY' || echo "torch $m: exit $? (timeout $t s; stderr in extras.log)"
# The measurement of ../shared/bench/torch_step.py (eager, cudnn.benchmark, timm AdamW, bf16 autocast for amp), for the
# four (amp, infer) cases of one model in one process (one torch/timm import instead of four).
import json, sys, time, warnings
warnings.filterwarnings('ignore')
import torch, timm
from timm.optim import create_optimizer_v2
name, B, S = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.backends.cudnn.benchmark = True
for amp in (0, 1):
    for infer in (0, 1):
        try:
            m = timm.create_model(name).cuda()
            x = torch.randn(B, 3, S, S, device='cuda'); y = torch.randint(0, 1000, (B,), device='cuda')
            ac = lambda: torch.autocast('cuda', dtype=torch.bfloat16, enabled=bool(amp))
            if infer:
                m.eval()
                def step():
                    with torch.no_grad(), ac(): m(x)
            else:
                m.train(); opt = create_optimizer_v2(m, opt='adamw', lr=1e-3, weight_decay=0.05)
                def step():
                    with ac(): loss = torch.nn.functional.cross_entropy(m(x), y)
                    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(5): step()
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(10): step()
            torch.cuda.synchronize(); r = B * 10 / (time.perf_counter() - t)
            print(json.dumps({'who': 'pytorch', 'torch': torch.__version__, 'model': name, 'mode': 'infer' if infer else 'train', 'amp': amp,
                              'compile': 0, 'gpus': 1, 'batch_per_gpu': B, 'img_s': round(r, 1),
                              'peak_mem_gb': round(torch.cuda.max_memory_allocated() / 1e9, 2)}), flush=True)
        except Exception as e:
            print(f'{name} amp={amp} infer={infer}: {type(e).__name__}: {e}', file=sys.stderr)
        finally:
            m = opt = x = y = None
            torch.cuda.empty_cache()
PY
  done
  python3 - "$OUT/torch.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    try:
        d = json.loads(l)
    except ValueError:
        continue
    print(f"torch {d['model'][9:]:6s} {d['mode']:5s} {'bf16' if d['amp'] else 'fp32'}: {d['img_s']:8.1f} img/s  peak {d['peak_mem_gb']} GB")
PY
fi

run_ours() {  # model precision(fp32|amp) log-suffix extra-args...
  local m=$1 p=$2 sfx=$3; shift 3
  local log="$OUT/ours_${m}_${sfx}.log"
  local ampflag=""; [ "$p" = amp ] && ampflag="--amp"
  local t; t=$(tmo 110 "${RESERVE:-$TEST_RESERVE}")
  [ "$t" -eq 0 ] && { echo "ours $m $p: skipped (no time left before the test suite)"; return 0; }
  timeout "$t" node --import tsx scripts/bench.ts --model mambaout_$m --backend webgpu --batch "$B" --img-size "$IMG" \
    --steps 4 --warmup 2 --json $ampflag "$@" > "$log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && echo "ours $m $p: exit $rc$([ $rc -eq 124 ] && echo " (timeout $t s)"): $(grep -v '^{' "$log" | grep -v -i warn | tail -2 | tr '\n' ' ' | cut -c1-300)"
  grep -E '^(kernels|train|inference):' "$log"
  # profile tables (header + rows), if asked
  awk '/^profile of/{p=1} /^(train|inference|bind groups|peak tfjs|\{)/{p=0} p' "$log"
  return 0
}
for p in fp32 amp; do
  sec "$([ $p = fp32 ] && echo 2 || echo 3). ours $p (npm run bench$([ $p = amp ] && echo ' --amp'), webgpu, batch $B, $IMG px, median of 4 steps after 2 warm-up)"
  for m in $MODELS; do
    echo "-- $m $p"
    if [ "$m" = "$PROFILE_MODEL" ]; then run_ours "$m" $p $p --profile --top 8; else run_ours "$m" $p $p; fi
  done
done

sec "4. summary (batch $B; t32 = PyTorch fp32 eager, tbf16 = PyTorch bf16 autocast, same run; goal amp/fp32 >= 1.5)"
summary

if [ -n "${SKIP_TESTS:-}" ]; then
  sec "5. GPU test suite skipped (SKIP_TESTS)"
else
  t=$(tmo 200)
  sec "5. GPU test suite (MAMBAOUT_GPU_TESTS=1 test/webgpu.test.ts, timeout $t s)"
  MAMBAOUT_GPU_TESTS=1 timeout "$t" node --import tsx --test test/webgpu.test.ts > "$OUT/gpu_tests.log" 2>&1
  rc=$?; echo "exit $rc$([ $rc -eq 124 ] && echo ' (timeout: the counts below are partial)')"
  grep -E '^# (tests|pass|fail|cancelled)|^not ok|^    not ok|worst' "$OUT/gpu_tests.log" | head -20
  grep -E -A3 '^ *not ok' "$OUT/gpu_tests.log" | grep -E "error:|rel " | head -6 | cut -c1-200
fi

if [ "$(el)" -lt "$BUDGET" ] && echo " $MODELS " | grep -q ' tiny '; then
  sec "6. A/B: tiny fp32 with phase 1's GEMM tile rules (MAMBAOUT_GEMM_RULES=phase1) vs section 2"
  RESERVE=0 MAMBAOUT_GEMM_RULES=phase1 run_ours tiny fp32 rules_phase1 >> "$OUT/extras.log" 2>&1
  grep -E '^(train|inference):' "$OUT/ours_tiny_rules_phase1.log" 2>/dev/null | sed 's/^/phase-1 rules: /'
  grep -E '^(train|inference):' "$OUT/ours_tiny_fp32.log" 2>/dev/null | sed 's/^/current rules: /'
else
  sec "6. rules A/B skipped (elapsed $(el)s, budget ${BUDGET}s; needs tiny in MODELS)"
fi

if [ -n "${V1:-}" ]; then
  sec "7. v1 kernels (MAMBAOUT_WEBGPU_KERNELS=v1, main before issue 14)"
  for m in $MODELS; do
    RESERVE=0 MAMBAOUT_WEBGPU_KERNELS=v1 run_ours "$m" fp32 v1 >> "$OUT/extras.log" 2>&1
    grep -E '^(train|inference):' "$OUT/ours_${m}_v1.log" 2>/dev/null | sed "s/^/$m v1: /"
  done
fi
if [ -n "${SWEEP:-}" ]; then
  sec "8. GEMM tile sweep (SWEEP=1)"
  timeout "$(tmo 200)" node --import tsx scripts/gemm_sweep.ts --models "$(for m in $MODELS; do printf 'mambaout_%s,' "$m"; done | sed 's/,$//')" \
    --batch "$B" --img-size "$IMG" --max-tiles 5 --reps 3 --out "$OUT/gemm_sweep.tsv" > "$OUT/gemm_sweep.log" 2>&1 || echo "sweep: exit $?"
  grep -v -E '^\s*$|Warning' "$OUT/gemm_sweep.log" | cut -c1-120 | tail -80
fi

sec "recap"
summary
grep -h -E '^# (pass|fail|cancelled) ' "$OUT/gpu_tests.log" 2>/dev/null | tr '\n' ' '; echo
echo "== done in $(el)s; logs in $OUT (torch.jsonl, ours_<model>_<fp32|amp>.log, gpu_tests.log, extras.log)"
