/** Round-trip latency of CommPool.allreduce between local ranks (RANK/WORLD_SIZE/MASTER_* from the environment): 60 calls per size after a barrier each, rank 0 prints median/p10/p90. */
import { ProcessGroup } from '../src/distributed/group.js';
import { CommPool } from '../src/distributed/pool.js';
const g = await ProcessGroup.fromEnv({ timeoutMs: 60_000 });
const pool = await CommPool.create(g, { threads: 4, masterAddr: process.env.MASTER_ADDR ?? '127.0.0.1' });
for (const n of [1024, 220_000, 500_000]) {
  const buf = pool.alloc(n);
  const ts: number[] = [];
  for (let i = 0; i < 60; i++) {
    await g.barrier?.();
    const t = performance.now();
    await pool.allreduce(buf, 'avg', i);
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  if (g.rank === 0) console.log(`n=${n} median ${ts[30].toFixed(3)} ms p10 ${ts[6].toFixed(3)} p90 ${ts[54].toFixed(3)}`);
}
await pool.close();
await g.close();
