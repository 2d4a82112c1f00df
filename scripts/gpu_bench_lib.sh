# Shell helpers of the GPU benchmark scripts (gpu_loop_bench.sh, gpu_dist_loop_bench.sh): sourced, not run. The
# caller sets OUT (log folder) and T0=$SECONDS before sourcing, or calls bench_init after it.

# bench_init NAME: the start every benchmark script shares, after `cd` to the repository root and sourcing this
# file: OUT (default /tmp/NAME) made, T0 set, J (the JSONL that `tagged` appends to) emptied, the machine line said.
bench_init() {
  OUT=${OUT:-/tmp/$1}
  mkdir -p "$OUT"
  T0=$SECONDS
  J="$OUT/dist.jsonl"
  : > "$J"
  say "machine: $(nproc) cores, $(nvidia-smi -L 2>/dev/null | wc -l) GPU(s), node $(node --version), $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
}

# say MSG...: a line with the seconds since T0.
say() { echo "[$((SECONDS - T0))s] $*"; }

# part NAME SECONDS CMD...: run with a time limit, output to $OUT/NAME.log; on failure show the tail.
part() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  say "$name: exit $rc after $((SECONDS - start)) s"
  [ $rc -eq 0 ] || grep -v -i warn "$OUT/$name.log" | tail -n 10 | cut -c1-240
  return $rc
}

# part_json NAME SECONDS CMD...: as part, for timm_loop.py, which prints its JSON line at the end of the measurement
# and then can take a minute to exit (its DataLoader workers): once the line is there, the processes are stopped.
part_json() {
  local name=$1 limit=$2 start=$SECONDS rc=0 pid
  shift 2
  "$@" > "$OUT/$name.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - start)) -lt "$limit" ] && ! grep -q '^{' "$OUT/$name.log"; do sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    pkill -TERM -f timm_loop.py 2>/dev/null; sleep 2; pkill -KILL -f timm_loop.py 2>/dev/null
    wait "$pid" 2>/dev/null
    grep -q '^{' "$OUT/$name.log" || rc=124
  else
    wait "$pid"; rc=$?
  fi
  say "$name: exit $rc after $((SECONDS - start)) s"
  [ $rc -eq 0 ] || grep -v -i warn "$OUT/$name.log" | tail -n 8 | cut -c1-240
  return $rc
}

# tagged NAME LIMIT CMD...: run with a time limit, output to $OUT/NAME.log; its last JSON line goes to $J (a JSONL
# file the caller sets) with "variant": NAME first; on failure show the tail. CMD may start with `env VAR=value`.
tagged() {
  local name=$1 limit=$2
  shift 2
  # the log's name without '+' (bench_dist path modifiers): the device tool does not bring such names back
  local log="$OUT/${name//+/_}.log"
  timeout -k 10 "$limit" "$@" > "$log" 2>&1
  local l; l=$(grep '^{' "$log" | tail -1)
  if [ -n "$l" ]; then echo "{\"variant\":\"$name\",${l#\{}" >> "$J"; else say "$name failed:"; grep -v Warn "$log" | tail -4; fi
}

# dist_table JSONL: one row per run that `tagged` recorded from bench_dist / launch_bench_dist (img/s, ms per step,
# issue and exposed exchange ms).
dist_table() {
  node - "$1" <<'JS'
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const f = (x) => (typeof x === 'number' ? x.toFixed(1) : '-');
console.log('| run | img/s | ms/step | issue ms | exchange ms |\n|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.variant} | ${f(r.img_s)} | ${f(r.ms_per_step)} | ${f(r.issue_ms)} | ${f(r.exchange_ms)} |`);
JS
}

# trace_table LOG: the `TRACE` lines of bench_dist --trace (every rank's), per path: the mean of each step event and
# each bucket's phases over the traced steps, in ms from rank 0's step start, ranks side by side.
trace_table() {
  node - "$1" <<'JS'
const fs = require('fs');
const runs = fs.readFileSync(process.argv[2], 'utf8').split('\n').map((l) => l.match(/TRACE (\{.*\})\s*$/)).filter(Boolean).map((m) => JSON.parse(m[1]));
// garbage collections (bench_dist records them in traced steps: [step, 'gc-<kind>', pause µs, start]) apart
const gcs = runs.map((r) => r.rows.filter((x) => String(x[1]).startsWith('gc')));
for (const r of runs) r.rows = r.rows.filter((x) => !String(x[1]).startsWith('gc'));
const paths = [...new Set(runs.map((r) => r.path))];
for (const path of paths) {
  const rs = runs.filter((r) => r.path === path).sort((a, b) => a.rank - b.rank);
  const start = new Map(); // step -> rank 0's step start
  for (const [s, e, , t] of rs[0].rows) if (e === 'step') start.set(s, t);
  const mean = (rank, pred) => {
    const v = rs[rank].rows.filter(pred).filter((r) => start.has(r[0])).map((r) => r[3] - start.get(r[0]));
    return v.length ? (v.reduce((a, b) => a + b, 0) / v.length).toFixed(1) : '-';
  };
  console.log(`\ntrace of ${path}: mean over ${start.size} steps, ms from rank 0's step start`);
  const ranks = rs.map((r) => r.rank);
  console.log('| event | ' + ranks.map((r) => `rank ${r}`).join(' | ') + ' |\n|---|' + ranks.map(() => '---|').join(''));
  for (const e of ['step', 'issued', 'exchanged', 'optimizer', 'loss']) console.log(`| ${e} | ` + rs.map((_, i) => mean(i, (r) => r[1] === e)).join(' | ') + ' |');
  const nb = Math.max(-1, ...rs[0].rows.map((r) => r[2])) + 1;
  const evs = ['ready', 'read', 'reduced', 'uploaded', 'applied'];
  console.log('| bucket | ' + ranks.map((r) => evs.map((e) => `r${r} ${e}`).join(' | ')).join(' | ') + ' |\n|---|' + ranks.map(() => evs.map(() => '---|').join('')).join(''));
  for (let b = 0; b < nb; b++) console.log(`| ${b} | ` + rs.map((_, i) => evs.map((e) => mean(i, (r) => r[1] === e && r[2] === b)).join(' | ')).join(' | ') + ' |');
  // each traced step: its length on each rank (to the rank's next step start) and the main thread's GC pauses in it
  const steps = [...start.keys()].sort((a, b) => a - b);
  const rankIdx = rs.map((r) => runs.indexOf(r));
  console.log('| step | ' + ranks.map((r) => `r${r} ms | r${r} gc ms (n)`).join(' | ') + ' |\n|---|' + ranks.map(() => '---|---|').join(''));
  for (const st of steps) {
    const cells = rs.map((r, i) => {
      const t0 = r.rows.find((x) => x[0] === st && x[1] === 'step')?.[3];
      const t1 = r.rows.find((x) => x[0] === st + 1 && x[1] === 'step')?.[3] ?? r.rows.filter((x) => x[0] === st && x[1] === 'loss').pop()?.[3];
      const g = gcs[rankIdx[i]].filter((x) => x[0] === st);
      const pause = g.reduce((a, x) => a + x[2], 0) / 1000;
      return `${t0 !== undefined && t1 !== undefined ? (t1 - t0).toFixed(1) : '-'} | ${pause.toFixed(1)} (${g.map((x) => String(x[1]).slice(3)).join(',') || '-'})`;
    });
    console.log(`| ${st} | ${cells.join(' | ')} |`);
  }
}
JS
}
