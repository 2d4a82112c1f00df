/**
 * Run scripts/bench_dist.ts on N devices with the same launcher (and GPU isolation) as mambaout-distributed-train.
 *   node --import tsx scripts/launch_bench_dist.ts 2 --model mambaout_femto --batch 128 --backend webgpu
 */
import { fileURLToPath } from 'node:url';
import { canIsolateGpus, launch } from '../src/distributed/launcher.js';

const n = Number(process.argv[2]);
const can = canIsolateGpus(n);
console.error(`launch_bench_dist: ${n} workers, GPU isolation ${can.ok ? 'mount' : `off (${can.why})`}`);
const r = await launch({
  script: fileURLToPath(new URL('./bench_dist.ts', import.meta.url)),
  args: process.argv.slice(3),
  nprocPerNode: n,
  nodeArgs: ['--import', 'tsx'],
  gpuIsolation: can.ok ? 'mount' : 'none',
});
if (r.exitCode !== 0) console.error(r.message);
process.exit(r.exitCode);
