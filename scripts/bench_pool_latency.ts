/**
 * Round trip of one CommPool.allreduce (src/distributed/pool.ts) between the local ranks of the environment (RANK,
 * WORLD_SIZE, MASTER_ADDR, MASTER_PORT; scripts/gpu_dist_wake.sh starts 2): 60 calls per size after a barrier each,
 * rank 0 prints the median, p10 and p90. Sizes: 4 KiB, 860 KiB (femto's last bucket) and 1.9 MiB (about a full bucket).
 *
 * Why: the last bucket's round trip is what the GPU waits for at the start of every 2-GPU step (docs/BENCHMARKS.md,
 * GPU run 8: 0.77 / 1.94 / 3.06 ms on the H200 x2 VM, 0.83 / 1.19 / 1.96 ms on the 2-core CPU box).
 */
import { ProcessGroup } from '../src/distributed/group.js';
import { CommPool } from '../src/distributed/pool.js';

const g = await ProcessGroup.fromEnv({ timeoutMs: 60_000 });
const pool = await CommPool.create(g, { threads: 4, masterAddr: process.env.MASTER_ADDR ?? '127.0.0.1' });
for (const floats of [1024, 220_000, 500_000]) {
  const buf = pool.alloc(floats);
  const ms: number[] = [];
  for (let i = 0; i < 60; i++) {
    await g.barrier();
    const t = performance.now();
    await pool.allreduce(buf, 'avg', i);
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  if (g.rank === 0) console.log(`${(floats * 4 / 1024).toFixed(0)} KiB: median ${ms[30].toFixed(3)} ms, p10 ${ms[6].toFixed(3)}, p90 ${ms[54].toFixed(3)}`);
}
await pool.close();
await g.close();
