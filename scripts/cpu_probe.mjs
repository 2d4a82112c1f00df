// Issue 13: is a slow main thread the machine or us? A fixed piece of CPU work, timed over and over on one core,
// beside whatever else runs (a 1-GPU or 2-GPU bench_dist): if the machine's CPUs slow down (frequency, the
// hypervisor taking the vCPU: /proc/stat "steal", caches flushed by the exchange's copies), this work slows down too.
//   node scripts/cpu_probe.mjs SECONDS [alu|mem] > probe.jsonl     (one JSON line per ~250 ms window)
// alu: integer arithmetic in registers (frequency, steal). mem: dependent random reads in a 24 MiB table (the last-level
// cache and memory latency, as V8's heap walks and tfjs's bookkeeping see them).
import { readFileSync } from 'node:fs';

const seconds = Number(process.argv[2] ?? 10);
const kind = process.argv[3] ?? 'alu';
const N = (24 * 1024 * 1024) / 4;
let table = null;
if (kind === 'mem') {
  // a random cyclic permutation: each read depends on the previous one
  table = new Int32Array(N);
  const order = new Int32Array(N);
  for (let i = 0; i < N; i++) order[i] = i;
  let s = 12345;
  for (let i = N - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (let i = 0; i < N; i++) table[order[i]] = order[(i + 1) % N];
}

function unit() {
  if (kind === 'mem') {
    let p = 0;
    for (let i = 0; i < 20000; i++) p = table[p];
    return p;
  }
  let a = 1;
  for (let i = 0; i < 200000; i++) a = (Math.imul(a, 48271) + i) | 0;
  return a;
}

function cpuStat() {
  // aggregate line: user nice system idle iowait irq softirq steal
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { busy: f[0] + f[1] + f[2] + f[5] + f[6], idle: f[3] + f[4], steal: f[7] ?? 0 };
}

function mhz() {
  try {
    const m = readFileSync('/proc/cpuinfo', 'utf8').match(/^cpu MHz\s*:\s*([\d.]+)/gm) ?? [];
    const v = m.map((l) => Number(l.split(':')[1]));
    return v.length ? +(v.reduce((a, b) => a + b, 0) / v.length).toFixed(0) : null;
  } catch {
    return null;
  }
}

for (let i = 0; i < 50; i++) unit(); // warm-up (JIT)
const t0 = performance.now();
let sink = 0;
while (performance.now() - t0 < seconds * 1000) {
  const s0 = cpuStat();
  const w0 = performance.now();
  let n = 0;
  let best = Infinity;
  while (performance.now() - w0 < 250) {
    const u0 = performance.now();
    sink ^= unit();
    best = Math.min(best, performance.now() - u0);
    n++;
  }
  const w1 = performance.now();
  const s1 = cpuStat();
  const ticks = s1.busy + s1.idle + s1.steal - (s0.busy + s0.idle + s0.steal);
  console.log(JSON.stringify({
    t: +((w0 - t0) / 1000).toFixed(2),
    kind,
    us_per_unit: +(((w1 - w0) * 1000) / n).toFixed(1),
    best_us: +(best * 1000).toFixed(1),
    busy_pct: ticks ? +((100 * (s1.busy - s0.busy)) / ticks).toFixed(1) : null,
    steal_pct: ticks ? +((100 * (s1.steal - s0.steal)) / ticks).toFixed(2) : null,
    mhz: mhz(),
  }));
}
if (sink === 42) console.error('');
