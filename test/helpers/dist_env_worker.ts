/**
 * Worker for the launcher tests in test/dist.test.ts: records its environment in <outDir>/rank<RANK>.json,
 * writes one line to stdout and to stderr (plus, except rank 0, an unterminated stderr fragment), and with argv[3] === 'group'
 * joins the process group from the environment and records the sum of all ranks.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProcessGroup } from '../../src/distributed/group.js';

const outDir = process.argv[2];
const keys = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'MAMBAOUT_WEBGPU_ADAPTER', 'CUDA_VISIBLE_DEVICES', 'DIST_TEST_MARK'];
const env: Record<string, string | undefined> = {};
for (const k of keys) env[k] = process.env[k];
const rec: Record<string, unknown> = { env, argv: process.argv.slice(4) };
if (process.argv[3] === 'group') {
  const g = await ProcessGroup.fromEnv({ timeoutMs: 30_000 });
  rec.sum = (await g.allreduceScalars([g.rank], 'sum'))[0];
  rec.transport = g.transport;
  rec.sharedMemory = g.sharedMemory;
  await g.close();
}
writeFileSync(join(outDir, `rank${process.env.RANK}.json`), JSON.stringify(rec));
process.stdout.write(`stdout from rank ${process.env.RANK}\n`);
// Rank 0's stderr passes through raw (progress bars use '\r'), so only the others end on a partial line.
process.stderr.write(`stderr from rank ${process.env.RANK}\n` + (process.env.RANK === '0' ? '' : `unterminated ${process.env.RANK}`));
