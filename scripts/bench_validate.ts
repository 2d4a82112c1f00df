/**
 * The real `mambaout-validate` loop (validateOne: decode -> eval transform -> engine -> metrics) on a folder of
 * JPEGs, and the engine alone on random input in the same process, so the two figures compare.
 *
 *   npm run bench:validate -- [--dir DIR] [--n 256] [--model mambaout_femto] [--batch 32] [--workers 2]
 *        [--engine auto] [--backend auto] [--img-size 224] [--threads N] [--log-freq 4] [--json]
 *
 * DIR: an ImageNet-style folder (class folders, directly or under val/); without it, `--n` generated JPEGs of
 * 375-500 px sides. Random weights (1000 classes; a class map names the folder's classes).
 * Prints: steady img/s (after the first 3 batches; with fewer than 5 batches, after the first), img/s with start-up (model load, export/session, warm-up,
 * worker start; the process's own import time excluded), and the engine alone (onnxruntime: chunks of 16, as the
 * loop runs them; tfjs: batches of --batch on the device with the logits read back), measured before and after
 * the loop (the mean: the box is shared and its speed drifts). onnxruntime alone runs both with its default
 * (idle threads spin) and without spinning (as validate runs it), and the faster of the two is the reference.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { initBackend } from '../src/backend/index.js';
import { writeSafetensors } from '../src/checkpoint/safetensors.js';
import { chunkSize, validateOne } from '../src/inference/validate.js';
import { loadClassifier, type EngineChoice } from '../src/inference/load.js';
import { resolveSplit } from '../src/data/folder.js';
import { InFlight } from '../src/backend/fence.js';
import { createLogger } from '../src/log/logger.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    model: { type: 'string', default: 'mambaout_femto' },
    n: { type: 'string', default: '256' },
    batch: { type: 'string', default: '32' },
    workers: { type: 'string', default: '2' },
    engine: { type: 'string', default: 'auto' },
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
    threads: { type: 'string' },
    'log-freq': { type: 'string', default: '4' },
    json: { type: 'boolean', default: false },
  },
});
const B = Number(values.batch);
const size = Number(values['img-size']);
const threads = values.threads ? Number(values.threads) : undefined;
const tmp = await mkdtemp(path.join(os.tmpdir(), 'mambaout-bench-validate-'));

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** The engine alone: img/s and CPU ms per image (all threads) over `rounds` timed rounds after a warm-up round. */
async function engineAlone(ckpt: string, rounds: number, spinning?: boolean): Promise<{ rate: number; cpu: number; name: string }> {
  const c = await loadClassifier({ model: values.model!, checkpoint: ckpt, engine: values.engine as EngineChoice, backend: values.backend, threads, spinning });
  const { engine } = c;
  try {
    if (engine.forward) {
      rounds *= 6; // GPU batches are short
      // As the loop runs the engine (src/inference/validate.ts): each forward in a tidy reduced on the device, at
      // most 2 batches queued, values read every 4 batches and at the end; no images to upload.
      const x = tf.randomNormal([B, size, size, 3]) as tf.Tensor4D;
      const run = async (n: number): Promise<void> => {
        const inFlight = new InFlight(2);
        const pending: tf.Tensor[] = [];
        const read = async () => {
          const all = tf.stack(pending.splice(0));
          await all.data();
          all.dispose();
        };
        try {
          for (let r = 0; r < n; r++) {
            pending.push(tf.tidy(() => engine.forward!(x).max()));
            await inFlight.push();
            if (r % 4 === 3) await read();
          }
          if (pending.length) await read();
        } finally {
          tf.dispose(pending);
        }
      };
      await run(2);
      const t0 = performance.now();
      const c0 = cpuMs();
      await run(rounds);
      x.dispose();
      return { rate: (rounds * B) / ((performance.now() - t0) / 1000), cpu: (cpuMs() - c0) / (rounds * B), name: engine.name };
    }
    const m = chunkSize(B);
    const x = Float32Array.from({ length: m * size * size * 3 }, () => Math.random() * 2 - 1);
    await engine.infer(x, m, size, size);
    const perRound = Math.max(1, Math.ceil(32 / m));
    const t0 = performance.now();
    const c0 = cpuMs();
    for (let r = 0; r < rounds * perRound; r++) await engine.infer(x, m, size, size);
    return { rate: (rounds * perRound * m) / ((performance.now() - t0) / 1000), cpu: (cpuMs() - c0) / (rounds * perRound * m), name: engine.name };
  } finally {
    engine.dispose();
  }
}

try {
  let root: string;
  if (values.dir) {
    root = path.resolve(values.dir);
    if (!existsSync(root)) throw new Error(`--dir ${root} does not exist`);
  } else {
    const n = Number(values.n);
    const classes = 4;
    root = (await makeTinyImagenet({ root: path.join(tmp, 'data'), classes, trainPerClass: 0, valPerClass: Math.ceil(n / classes), minSide: 375, maxSide: 500, seed: 1 })).root;
  }
  const split = resolveSplit(root, 'validation');
  const classes = (await readdir(split, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const classMap = path.join(tmp, 'classes.txt');
  await writeFile(classMap, classes.join('\n') + '\n');
  await initBackend('cpu'); // random weights; validateOne picks the backend/engine being measured
  const model = createModel(getModelConfig(values.model!).name, { seed: 0 });
  const ckpt = path.join(tmp, 'weights.safetensors');
  await writeSafetensors(ckpt, model.stateDict());
  model.dispose();

  // onnxruntime alone at its default (idle threads spin) and as validate runs it (no spinning); the better one counts
  const aloneRuns = async () => {
    const a = await engineAlone(ckpt, 3);
    if (a.name !== 'onnxruntime') return { ...a, spin: a.rate, noSpin: NaN };
    const b = await engineAlone(ckpt, 3, false);
    return { rate: Math.max(a.rate, b.rate), cpu: a.rate >= b.rate ? a.cpu : b.cpu, spin: a.rate, noSpin: b.rate };
  };
  const before = await aloneRuns();
  const logger = createLogger({}); // with --json the log lines stay (for diagnosis); the JSON line comes last
  const marks: { images: number; idx: number; t: number }[] = [];
  const t0 = performance.now();
  const c0 = cpuMs();
  const r = await validateOne(
    {
      data: root, split: 'validation', model: values.model!, checkpoint: ckpt, pretrained: false, pretrainedPath: '', useEma: false,
      batchSize: B, workers: Number(values.workers), imgSize: size, inputSize: null, cropPct: null, mean: null, std: null,
      interpolation: '', numClasses: null, classMap, logFreq: Number(values['log-freq']), resultsFile: '',
      engine: values.engine as EngineChoice, backend: values.backend, amp: false, threads,
    },
    logger,
    { onBatch: (images, idx, t) => marks.push({ images, idx, t }) },
  );
  const t1 = performance.now();
  const loopCpu = (cpuMs() - c0) / r.images;
  const after = await aloneRuns();
  const alone = (before.rate + after.rate) / 2;
  const withStartup = r.images / ((t1 - t0) / 1000);
  const from = marks.find((m) => m.idx >= Math.min(2, marks.length - 2)); // after 3 batches (short runs: after the first)
  const last = marks[marks.length - 1];
  const steady = from && last.t > from.t ? (last.images - from.images) / ((last.t - from.t) / 1000) : NaN;
  const out = {
    bench: 'validate', model: values.model, img: size, batch: B, workers: Number(values.workers), engine: values.engine, backend: values.backend,
    images: r.images, steady_img_s: +steady.toFixed(1), startup_img_s: +withStartup.toFixed(1), engine_alone_img_s: +alone.toFixed(1),
    engine_alone_before_after: [+before.rate.toFixed(1), +after.rate.toFixed(1)],
    engine_alone_spinning_on_off: [+((before.spin + after.spin) / 2).toFixed(1), +((before.noSpin + after.noSpin) / 2).toFixed(1)],
    cpu_ms_per_image: { loop_with_startup: +loopCpu.toFixed(1), engine_alone: +((before.cpu + after.cpu) / 2).toFixed(1) },
    ratio_steady: +(steady / alone).toFixed(3), ratio_startup: +(withStartup / alone).toFixed(3), load: os.loadavg()[0],
  };
  if (values.json) console.log(JSON.stringify(out));
  else {
    console.log(
      `bench:validate ${values.model} ${size}px batch ${B} -j ${values.workers}, ${r.images} images: ${out.steady_img_s} img/s steady, ` +
        `${out.startup_img_s} with start-up; engine alone ${out.engine_alone_img_s} img/s (before ${before.rate.toFixed(1)}, after ${after.rate.toFixed(1)}); ` +
        `ratio ${out.ratio_steady} steady, ${out.ratio_startup} with start-up; CPU ms/image: loop ${loopCpu.toFixed(1)}, ` +
        `engine ${out.cpu_ms_per_image.engine_alone} (load ${out.load.toFixed(1)})`,
    );
  }
} finally {
  await rm(tmp, { recursive: true, force: true });
}
// worker threads or a GPU device left open must not keep the process (and a benchmark script waiting on it) alive
process.exit(0);
