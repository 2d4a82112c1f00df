/**
 * A per-node launcher for the multi-node tests in test/dist.test.ts: what bin/distributed_train.ts does (node
 * configuration from flags and the scheduler's environment, then launch()), with test/helpers/dist_env_worker.ts as the
 * worker. Usage: dist_node.ts OUT_DIR [--nproc-per-node N] [...]; prints "RESULT <json>" with the launch result.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launch } from '../../src/distributed/launcher.js';
import { readNodeConfig } from '../../src/distributed/env.js';

const { values, positionals } = parseArgs({ options: { 'nproc-per-node': { type: 'string' } }, allowPositionals: true });
const node = readNodeConfig({ nprocPerNode: values['nproc-per-node'] ? Number(values['nproc-per-node']) : undefined });
const res = await launch({
  script: fileURLToPath(new URL('./dist_env_worker.ts', import.meta.url)),
  args: [positionals[0], 'group'],
  nprocPerNode: node.nprocPerNode ?? 1,
  nnodes: node.nnodes,
  nodeRank: node.nodeRank,
  masterAddr: node.masterAddr,
  masterPort: node.masterPort,
  nodeArgs: ['--import', 'tsx'],
});
process.stdout.write(`RESULT ${JSON.stringify({ ...res, source: node.source })}\n`);
process.exit(res.exitCode);
