/**
 * Whole validate loop throughput (decode -> eval transform -> engine -> metrics), as `mambaout-validate` runs it.
 *
 *   npm run bench:validate -- [--model mambaout_femto] [--n 256] [--batch 32] [--workers 2] [--engine auto] [--backend auto] [--img-size 224]
 *
 * Images: generated JPEGs of 375-500 px sides (ImageNet-like sizes) in a temporary folder; random weights (throughput
 * only). Prints img/s and the engine/backend line.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeTinyImagenet, TINY_CLASSES } from '../src/data/tiny.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { initBackend } from '../src/backend/index.js';
import { writeSafetensors } from '../src/checkpoint/safetensors.js';
import { validateOne } from '../src/inference/validate.js';
import { createLogger } from '../src/log/logger.js';
import type { EngineChoice } from '../src/inference/load.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'mambaout_femto' },
    n: { type: 'string', default: '256' },
    batch: { type: 'string', default: '32' },
    workers: { type: 'string', default: '2' },
    engine: { type: 'string', default: 'auto' },
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
  },
});
const n = Number(values.n);
const dir = await mkdtemp(path.join(os.tmpdir(), 'mambaout-bench-validate-'));
try {
  const classes = 4;
  const root = (await makeTinyImagenet({ root: path.join(dir, 'data'), classes, trainPerClass: 0, valPerClass: Math.ceil(n / classes), minSide: 375, maxSide: 500, seed: 1 })).root;
  const classMap = path.join(dir, 'classes.txt');
  await writeFile(classMap, TINY_CLASSES.slice(0, classes).join('\n') + '\n');
  await initBackend('cpu'); // for building the random weights; validateOne picks the backend/engine to measure
  const model = createModel(getModelConfig(values.model!).name, { seed: 0 });
  const ckpt = path.join(dir, 'weights.safetensors');
  await writeSafetensors(ckpt, model.stateDict());
  model.dispose();
  const logger = createLogger({});
  const t0 = performance.now();
  const r = await validateOne(
    {
      data: root, split: 'val', model: values.model!, checkpoint: ckpt, pretrained: false, pretrainedPath: '', useEma: false,
      batchSize: Number(values.batch), workers: Number(values.workers), imgSize: Number(values['img-size']), inputSize: null,
      cropPct: null, mean: null, std: null, interpolation: '', numClasses: null, classMap, logFreq: 1000, resultsFile: '',
      engine: values.engine as EngineChoice, backend: values.backend, amp: false,
    },
    logger,
  );
  const secs = (performance.now() - t0) / 1000;
  console.log(`bench:validate ${values.model} ${values['img-size']}px batch ${values.batch} -j ${values.workers}: ${r.images} images, ${(r.images / secs).toFixed(1)} img/s including model load and warm-up`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
