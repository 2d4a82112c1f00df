/**
 * Where a thread's time went, from a V8 CPU profile (`node --cpu-prof`), optionally inside a time window: self time
 * per function and per area (garbage collection, idle, tfjs-core, the webgpu backend, Dawn's native calls, our code).
 * Used to compare the training loop's main thread with the model step alone (bench_train.ts prints the window marks
 * of both in µs of CLOCK_MONOTONIC, the clock V8 stamps its samples with).
 *
 *   node --import tsx scripts/profile_summary.ts PROFILE.cpuprofile [--from US --to US] [--top 40]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { from: { type: 'string' }, to: { type: 'string' }, top: { type: 'string', default: '40' } },
});
if (positionals.length !== 1) {
  console.error('usage: profile_summary.ts PROFILE.cpuprofile [--from US --to US] [--top N]');
  process.exit(2);
}
const prof = JSON.parse(readFileSync(positionals[0], 'utf8')) as Profile;
const from = values.from ? Number(values.from) : -Infinity;
const to = values.to ? Number(values.to) : Infinity;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));

/** The area a frame belongs to, from its script URL (or V8's pseudo-frames). */
function area(f: CallFrame): string {
  const u = f.url;
  if (f.functionName === '(garbage collector)') return 'gc';
  if (f.functionName === '(idle)') return 'idle';
  if (f.functionName === '(program)') return 'program (native, unattributed)';
  if (!u) return 'native / builtin';
  if (u.includes('tfjs-backend-webgpu')) return 'tfjs-backend-webgpu';
  if (u.includes('tfjs-core')) return 'tfjs-core';
  if (u.includes('node_modules')) return 'other node_modules';
  if (u.includes('/src/backend/') || u.includes('/kernels/')) return 'ours: backend/kernels';
  if (u.includes('/src/ops/')) return 'ours: ops';
  if (u.includes('/src/models/')) return 'ours: models';
  if (u.includes('/src/data/')) return 'ours: data';
  if (u.includes('/src/train/')) return 'ours: train';
  if (u.startsWith('node:')) return 'node internals';
  return 'ours: other';
}

const self = new Map<number, number>();
let t = prof.startTime;
let total = 0;
for (let i = 0; i < prof.samples.length; i++) {
  t += prof.timeDeltas[i];
  if (t < from || t > to) continue;
  const dt = prof.timeDeltas[i + 1] ?? 0;
  self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + dt);
  total += dt;
}
const fnTime = new Map<string, number>();
const areaTime = new Map<string, number>();
for (const [id, us] of self) {
  const f = byId.get(id)!.callFrame;
  const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|src|scripts)\//, '$1/')}:${f.lineNumber + 1}`;
  fnTime.set(key, (fnTime.get(key) ?? 0) + us);
  const a = area(f);
  areaTime.set(a, (areaTime.get(a) ?? 0) + us);
}
const ms = (us: number) => (us / 1000).toFixed(1);
const pct = (us: number) => ((100 * us) / total).toFixed(1);
console.log(`${positionals[0]}: ${ms(total)} ms sampled${values.from ? ` between ${values.from} and ${values.to} µs` : ''}`);
console.log('\n| area | ms | % |\n|---|---|---|');
for (const [a, us] of [...areaTime].sort((x, y) => y[1] - x[1])) console.log(`| ${a} | ${ms(us)} | ${pct(us)} |`);
console.log(`\n| function (self time) | ms | % |\n|---|---|---|`);
for (const [k, us] of [...fnTime].sort((x, y) => y[1] - x[1]).slice(0, Number(values.top))) console.log(`| ${k} | ${ms(us)} | ${pct(us)} |`);
