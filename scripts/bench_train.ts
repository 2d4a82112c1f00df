/**
 * The real `mambaout-train` loop (runTraining) with the MambaOut recipe — loader (RRC + RandAugment + flip + jitter
 * in worker threads), prefetcher (mixup/cutmix, normalize, pixel erasing), forward/backward, AdamW — on a folder of
 * JPEGs, and the model step alone on random input in the same process, so the two figures compare.
 *
 *   npm run bench:train -- [--dir DIR] [--model mambaout_femto] [--batch 32] [--steps 6] [--warmup 3] [--workers 2]
 *        [--backend auto] [--img-size 224] [--num-classes 1000] [--path auto|host|ops|webgpu] [--json]
 *
 * DIR: an ImageNet-style training folder (class folders, directly or under train/); without it, generated JPEGs
 * of 375-500 px sides. Recipe as timm_loop.py (../shared/bench): lr 4e-3, drop path 0.025 (femto), the train.py
 * defaults for the rest (rand-m9-mstd0.5-inc1, mixup .8, cutmix 1.0, reprob .25 pixel, smoothing .1, AdamW wd .05).
 * Steady img/s: from the end of update `warmup` to the end of update `warmup + steps` (the GPU is waited for at
 * both points); with start-up: from calling runTraining to the same end. The model step alone: the same model,
 * batch and optimizer on random input and soft targets, issued like the loop (at most 2 steps in flight).
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs as nodeParseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { resolveSplit } from '../src/data/folder.js';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { createLogger } from '../src/log/logger.js';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { softTargetCrossEntropy } from '../src/train/loss.js';
import { InFlight } from '../src/backend/fence.js';
import { bindGroupCacheStats } from '../src/backend/webgpu_hooks.js';
import { BATCH_PATHS, type BatchPath } from '../src/data/prefetch.js';

const { values } = nodeParseArgs({
  options: {
    dir: { type: 'string' },
    model: { type: 'string', default: 'mambaout_femto' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '3' },
    workers: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
    'num-classes': { type: 'string', default: '1000' },
    path: { type: 'string', default: 'auto' },
    json: { type: 'boolean', default: false },
  },
});
const B = Number(values.batch);
const steps = Number(values.steps);
const warm = Number(values.warmup);
const size = Number(values['img-size']);
const numClasses = Number(values['num-classes']);
const batchPath = values.path as BatchPath | 'auto';
if (batchPath !== 'auto' && !BATCH_PATHS.includes(batchPath)) throw new Error(`--path must be auto or one of ${BATCH_PATHS.join(', ')}`);
const DROP_PATH: Record<string, number> = { mambaout_femto: 0.025, mambaout_kobe: 0.025, mambaout_tiny: 0.2, mambaout_small: 0.4, mambaout_base: 0.6 };
const dropPath = DROP_PATH[values.model!] ?? 0;
const dir = await mkdtemp(path.join(os.tmpdir(), 'mambaout-bench-train-'));
/** CLOCK_MONOTONIC in µs: the clock of V8's CPU profiles, so `--cpu-prof` samples can be cut at these marks. */
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);
const marks = { loop_steady_start_us: 0, loop_steady_end_us: 0, alone_start_us: 0, alone_end_us: 0 };
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** The model step alone (forward, soft-target loss, backward, AdamW), img/s over `n` steps after 2 warm-up steps. */
async function modelStepAlone(backend: string, n: number): Promise<number> {
  await initBackend(backend === 'auto' ? undefined : backend, { training: true });
  const model = createModel(getModelConfig(values.model!).name, { numClasses, drop_path_rate: dropPath, seed: 0 });
  const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  const opt = createOptimizer(params, { opt: 'adamw', lr: 4e-3, weightDecay: 0.05, momentum: 0.9 });
  const x = tf.randomNormal([B, size, size, 3]) as tf.Tensor4D;
  const y = tf.tidy(() => tf.softmax(tf.randomNormal([B, numClasses])));
  const vars = params.map((p) => p.variable);
  const inFlight = new InFlight(2);
  const step = () => {
    const { value, grads } = tf.variableGrads(() => softTargetCrossEntropy(model.forward(x, { training: true }), y), vars);
    value.dispose();
    opt.step(new Map(params.map((p) => [p.name, grads[p.variable.name]])));
    tf.dispose(Object.values(grads));
  };
  const sync = () => params[0].variable.data();
  try {
    for (let i = 0; i < 2; i++) step();
    await sync();
    const t0 = performance.now();
    marks.alone_start_us = nowUs();
    for (let i = 0; i < n; i++) {
      step();
      await inFlight.push();
    }
    await sync();
    marks.alone_end_us = nowUs();
    return (n * B) / ((performance.now() - t0) / 1000);
  } finally {
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
    await releaseBackend();
  }
}

try {
  let root: string;
  if (values.dir) {
    root = path.resolve(values.dir);
    if (!existsSync(root)) throw new Error(`--dir ${root} does not exist`);
  } else {
    const classes = 4;
    const perClass = Math.ceil((B * (steps + warm + 1)) / classes);
    root = (await makeTinyImagenet({ root: path.join(dir, 'data'), classes, trainPerClass: perClass, valPerClass: 1, minSide: 375, maxSide: 500, seed: 2 })).root;
  }
  const trainDir = resolveSplit(root, 'train');
  const nClasses = (await readdir(trainDir, { withFileTypes: true })).filter((d) => d.isDirectory()).length;
  const args = parseArgs({
    scriptName: 'bench', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
    argv: [trainDir, '--model', values.model!, '-b', String(B), '--img-size', String(size), '--epochs', '1', '--warmup-epochs', '0',
      '--cooldown-epochs', '0', '--lr', '4e-3', '--drop-path', String(dropPath), '--num-classes', String(Math.max(numClasses, nClasses)),
      '-j', values.workers!, '--backend', values.backend!, '--output', dir, '--experiment', 'bench', '--log-interval', '50'],
  }).args;
  const logger = createLogger({}); // with --json the log lines stay (for diagnosis); the JSON line comes last
  let tWarm = 0;
  let tEnd = 0;
  let stop = false;
  let cWarm = 0;
  // bind groups created per steady step (src/backend/webgpu_hooks.ts cache misses: 0 when steps reuse their buffers)
  let newBindGroups = 0;
  const tStart = performance.now();
  await runTraining(args, {
    logger,
    dist: null,
    batchPath,
    stopRequested: () => stop,
    onUpdate: async ({ update, model }) => {
      if (update !== warm && update !== warm + steps) return;
      await model.parameterInfo()[0].variable.data(); // wait for the GPU
      if (update === warm) {
        tWarm = performance.now();
        marks.loop_steady_start_us = nowUs();
        cWarm = cpuMs();
        bindGroupCacheStats(true);
      } else {
        tEnd = performance.now();
        marks.loop_steady_end_us = nowUs();
        newBindGroups = bindGroupCacheStats(true).misses / steps;
        stop = true;
      }
    },
  });
  if (!tEnd) throw new Error(`the training folder is too small for ${warm + steps} steps of batch ${B}`);
  const cpuPerImg = (cpuMs() - cWarm) / (steps * B);
  const steady = (steps * B) / ((tEnd - tWarm) / 1000);
  const withStartup = ((warm + steps) * B) / ((tEnd - tStart) / 1000);
  const alone = await modelStepAlone(values.backend!, steps);
  const out = {
    bench: 'train', model: values.model, img: size, batch: B, workers: Number(values.workers), backend: values.backend, path: batchPath,
    steps, steady_img_s: +steady.toFixed(1), startup_img_s: +withStartup.toFixed(1), model_step_alone_img_s: +alone.toFixed(1),
    ratio_steady: +(steady / alone).toFixed(3), loop_cpu_ms_per_image: +cpuPerImg.toFixed(1), loop_new_bind_groups: +newBindGroups.toFixed(1), load: os.loadavg()[0], ...marks,
  };
  if (values.json) console.log(JSON.stringify(out));
  else {
    console.log(
      `bench:train ${values.model} ${size}px batch ${B} -j ${values.workers} (${batchPath} batch path): ${out.steady_img_s} img/s steady over ` +
        `${steps} steps, ${out.startup_img_s} with start-up; model step alone ${out.model_step_alone_img_s} img/s; ratio ${out.ratio_steady} ` +
        `(full recipe: RRC, RandAugment, mixup/cutmix, pixel erasing, AdamW; load ${out.load.toFixed(1)})`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
// worker threads or a GPU device left open must not keep the process (and a benchmark script waiting on it) alive
process.exit(0);
