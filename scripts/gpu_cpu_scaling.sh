#!/usr/bin/env bash
# The loader's scaling target (issue 12: >= 0.9x linear from -j 1 to -j 15) against the machine's own: what the
# CPUs are (cores, threads per core, frequency), Pillow + timm's per-image work in 1, 8 and 15 processes
# (scripts/bench_pillow.py --procs), and our loader at -j 1, 8, 15 (bench:data) on the same JPEGs, one after the
# other in one call. From the repository root on an H200 machine:
#
#   source .device/setup.sh && bash scripts/gpu_cpu_scaling.sh
#
# About 3 minutes. Knobs: MODES (eval,train), PROCS (1,8,15), N (512 samples per process for Pillow; bench:data uses >= 10 batches per
# worker), DIR (default: bench:data's generated folder of 256 JPEGs of 375-500 px).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_cpu_scaling}
mkdir -p "$OUT"
T0=$SECONDS
. scripts/gpu_bench_lib.sh
PROCS=${PROCS:-1,8,15}
DIR=${DIR:-/tmp/mambaout-bench-data-375-500}
say "machine: $(nproc) CPUs; $(lscpu | grep -E '^(Model name|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|CPU max MHz|NUMA node\(s\))' | tr -s ' ' | paste -sd';')"
grep -m1 -E '^flags' /proc/cpuinfo | grep -o -w -E 'hypervisor|avx512f|avx2' | paste -sd' '
# bench:data first: it generates DIR when missing
part ours 240 node --import tsx scripts/bench_data.ts --dir "$DIR" --workers "$PROCS" --mode "${MODES:-eval,train}"
cat "$OUT/ours.log" | grep -E '^\||^bench'
part pillow 240 python3 scripts/bench_pillow.py "$DIR" --n "${N:-512}" --procs "$PROCS" --mode "${MODES:-eval,train}"
cat "$OUT/pillow.log"
say "done"
