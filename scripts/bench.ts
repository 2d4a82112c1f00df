/**
 * Model benchmark: training and inference throughput of a MambaOut model on a tfjs backend.
 *
 *   npm run bench -- --model mambaout_femto --backend webgpu --batch 64 --img-size 224 [--steps 10] [--profile]
 *
 * Train step = forward (training mode) + softmax cross-entropy + backward + AdamW update (our optimizer).
 * Inference = forward in eval mode with the logits read back. Reports img/s (median over timed steps after warm-up),
 * peak tfjs memory (bytes and tensors). `--profile` prints a per-kernel time table of one training step
 * (tf.profile; on webgpu it needs the timestamp-query feature).
 */
import * as tf from '@tensorflow/tfjs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/mambaout.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { isUserError } from '../src/errors.js';

const argv = yargs(hideBin(process.argv))
  .options({
    model: { type: 'string', default: 'mambaout_femto' },
    backend: { type: 'string', default: 'auto' },
    batch: { type: 'number', default: 32 },
    'img-size': { type: 'number', default: 224 },
    steps: { type: 'number', default: 5, describe: 'timed steps' },
    warmup: { type: 'number', default: 2 },
    train: { type: 'boolean', default: true, describe: 'measure training (--no-train to skip)' },
    infer: { type: 'boolean', default: true, describe: 'measure inference (--no-infer to skip)' },
    profile: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false, describe: 'print one JSON line with the results' },
  })
  .strict()
  .parseSync();

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const backend = await initBackend(argv.backend, { training: argv.train });
  console.log(backend.message);
  const B = argv.batch;
  const S = argv['img-size'];
  const model = createModel(argv.model, { seed: 0 });
  const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
  const x = tf.randomNormal([B, S, S, 3]) as tf.Tensor4D;
  const y = tf.oneHot(tf.randomUniform([B], 0, model.numClasses, 'int32') as tf.Tensor1D, model.numClasses);
  const vars = params.map((p) => p.variable);
  const result: Record<string, unknown> = { date: new Date().toISOString().slice(0, 10), model: argv.model, backend: backend.description, batch: B, img_size: S };

  const trainStep = async () => {
    const loss = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar, vars);
      const gm = new Map<string, tf.Tensor>();
      for (const p of params) gm.set(p.name, grads[p.variable.name]);
      opt.step(gm);
      return value;
    });
    await loss.data();
    loss.dispose();
  };
  const inferStep = async () => {
    const out = tf.tidy(() => model.forward(x));
    await out.data();
    out.dispose();
  };

  let peakBytes = 0;
  let peakTensors = 0;
  const track = () => {
    const m = tf.memory();
    peakBytes = Math.max(peakBytes, m.numBytes);
    peakTensors = Math.max(peakTensors, m.numTensors);
  };

  if (argv.train) {
    for (let i = 0; i < argv.warmup; i++) await trainStep();
    const times: number[] = [];
    for (let i = 0; i < argv.steps; i++) {
      const t0 = performance.now();
      await trainStep();
      times.push(performance.now() - t0);
      track();
    }
    const ms = median(times);
    result.train_img_s = +(B / (ms / 1000)).toFixed(2);
    result.train_ms_per_step = +ms.toFixed(1);
    console.log(`train: ${result.train_img_s} img/s (${ms.toFixed(1)} ms/step, batch ${B}, ${S}px, median of ${times.length})`);
    if (argv.profile) {
      const info = await tf.profile(async () => {
        await trainStep();
      });
      const byKernel = new Map<string, { ms: number; calls: number }>();
      let total = 0;
      for (const k of info.kernels) {
        const t = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
        const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
        e.ms += t;
        e.calls += 1;
        total += t;
        byKernel.set(k.name, e);
      }
      const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms);
      console.log(`profile of one training step: ${info.kernels.length} kernels, ${total.toFixed(1)} ms kernel time`);
      console.log('kernel'.padEnd(40) + 'calls'.padStart(7) + 'ms'.padStart(10) + '%'.padStart(7));
      for (const [name, e] of rows.slice(0, 25)) {
        console.log(name.padEnd(40) + String(e.calls).padStart(7) + e.ms.toFixed(2).padStart(10) + ((100 * e.ms) / Math.max(total, 1e-9)).toFixed(1).padStart(7));
      }
      result.profile = Object.fromEntries(rows.map(([n, e]) => [n, { calls: e.calls, ms: +e.ms.toFixed(3) }]));
    }
  }
  if (argv.infer) {
    for (let i = 0; i < argv.warmup; i++) await inferStep();
    const times: number[] = [];
    for (let i = 0; i < argv.steps; i++) {
      const t0 = performance.now();
      await inferStep();
      times.push(performance.now() - t0);
      track();
    }
    const ms = median(times);
    result.infer_img_s = +(B / (ms / 1000)).toFixed(2);
    console.log(`inference: ${result.infer_img_s} img/s (${ms.toFixed(1)} ms/batch, batch ${B}, ${S}px)`);
  }
  result.peak_mb = +(peakBytes / 2 ** 20).toFixed(1);
  result.peak_tensors = peakTensors;
  console.log(`peak tfjs memory: ${result.peak_mb} MiB in ${peakTensors} tensors`);
  if (argv.json) console.log(JSON.stringify(result));
  tf.dispose([x, y]);
  model.dispose();
  await releaseBackend();
}

main().catch((e) => {
  console.error(isUserError(e) ? `error: ${e.message}` : e);
  process.exit(1);
});
