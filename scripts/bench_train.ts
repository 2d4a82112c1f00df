/**
 * Whole training loop throughput: loader (RRC + RandAugment in worker threads) + mixup/cutmix + erasing + model
 * forward/backward + AdamW, as `mambaout-train` runs it with the MambaOut recipe.
 *
 *   npm run bench:train -- [--model mambaout_femto] [--batch 32] [--steps 6] [--workers 2] [--backend auto] [--img-size 224]
 *
 * Images: generated JPEGs of 375-500 px sides. img/s is measured between the first and the last optimizer update
 * (the first step's warm-up excluded).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs as nodeParseArgs } from 'node:util';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { createLogger } from '../src/log/logger.js';

const { values } = nodeParseArgs({
  options: {
    model: { type: 'string', default: 'mambaout_femto' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '6' },
    workers: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
  },
});
const B = Number(values.batch);
const steps = Number(values.steps);
const dir = await mkdtemp(path.join(os.tmpdir(), 'mambaout-bench-train-'));
try {
  const classes = 4;
  const perClass = Math.ceil((B * steps) / classes);
  const root = (await makeTinyImagenet({ root: path.join(dir, 'data'), classes, trainPerClass: perClass, valPerClass: 1, minSide: 375, maxSide: 500, seed: 2 })).root;
  const args = parseArgs({
    scriptName: 'bench', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
    argv: [root, '--model', values.model!, '-b', String(B), '--img-size', values['img-size']!, '--epochs', '1', '--warmup-epochs', '0',
      '--cooldown-epochs', '0', '--lr', '1e-3', '-j', values.workers!, '--backend', values.backend!, '--output', dir, '--experiment', 'bench', '--log-interval', '1000'],
  }).args;
  const times: number[] = [];
  const logger = createLogger({});
  await runTraining(args, { logger, dist: null, onUpdate: () => void times.push(performance.now()) });
  if (times.length < 2) throw new Error('need at least 2 steps');
  const secs = (times[times.length - 1] - times[0]) / 1000;
  const imgs = (times.length - 1) * B;
  console.log(`bench:train ${values.model} ${values['img-size']}px batch ${B} -j ${values.workers}: ${(imgs / secs).toFixed(2)} img/s over ${times.length - 1} steps (full recipe: RRC, RandAugment, mixup/cutmix, erasing, AdamW)`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
