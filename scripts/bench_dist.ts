/**
 * Data-parallel scaling benchmark: the model step (forward, backward, gradient all-reduce, AdamW) on synthetic data,
 * one process per device. Run directly for 1 device or under the launcher for N:
 *
 *   node --import tsx scripts/bench_dist.ts --model mambaout_femto --batch 128 --backend webgpu
 *   node --import tsx bin/distributed_train.ts ... (not this) — use:
 *   MAMBAOUT_LAUNCH_SCRIPT=scripts/bench_dist.ts node --import tsx scripts/launch_bench_dist.ts 2 --model ... 
 *
 * Every rank takes its slice of one fixed global batch (generated from --seed), so N processes with --batch B see
 * exactly the data of 1 process with --batch N·B: `--save FILE` (1 process) and `--compare FILE` (N processes) check
 * that the weights after the timed steps agree. Prints img/s (global), step time and all-reduce time per step.
 */
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { DistContext } from '../src/distributed/context.js';
import { ProcessGroup } from '../src/distributed/group.js';
import { readDistEnv } from '../src/distributed/env.js';
import { readSafetensors, writeSafetensors } from '../src/checkpoint/safetensors.js';
import { Rng } from '../src/utils/rng.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'mambaout_femto' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
    seed: { type: 'string', default: '0' },
    save: { type: 'string' },
    compare: { type: 'string' },
  },
});
const env = readDistEnv();
const world = env.worldSize;
const rank = env.rank;
const B = Number(values.batch);
const S = Number(values['img-size']);
const steps = Number(values.steps);
const warmup = Number(values.warmup);
const group = world > 1 ? await ProcessGroup.init({ rank, worldSize: world, masterAddr: env.masterAddr, masterPort: env.masterPort, timeoutMs: 300_000 }) : null;
const dist = group ? new DistContext(group) : null;
const backend = await initBackend(values.backend, { training: true });
process.stderr.write(`${rank === 0 ? '[rank 0] ' : ''}${backend.message}\n`);
const model = createModel(getModelConfig(values.model!).name, { seed: 0 });
const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
if (dist) await dist.broadcastParams(params);

// This rank's slice of the fixed global batch [world·B, S, S, 3].
const rng = new Rng(Number(values.seed));
const per = S * S * 3;
const xs = new Float32Array(B * per);
const labels = new Int32Array(B);
for (let i = 0; i < world * B; i++) {
  const mine = i >= rank * B && i < (rank + 1) * B;
  for (let j = 0; j < per; j++) {
    const v = rng.random() * 2 - 1; // drawn for every image, so every rank walks the same stream
    if (mine) xs[(i - rank * B) * per + j] = v;
  }
  const y = rng.randrange(0, model.numClasses);
  if (mine) labels[i - rank * B] = y;
}
const x = tf.tensor4d(xs, [B, S, S, 3]);
const yOneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), model.numClasses);
const vars = params.map((p) => p.variable);

let reduceMs = 0;
async function step(): Promise<void> {
  const { value, grads } = tf.tidy(() => tf.variableGrads(() => tf.losses.softmaxCrossEntropy(yOneHot, model.forward(x, { training: false })) as tf.Scalar, vars));
  let g = new Map<string, tf.Tensor>(params.map((p) => [p.name, grads[p.variable.name]]));
  if (dist) {
    const t0 = performance.now();
    g = await dist.allreduceGrads(params, g);
    reduceMs += performance.now() - t0;
  }
  opt.step(g);
  for (const t of g.values()) t.dispose();
  await value.data();
  value.dispose();
}

for (let i = 0; i < warmup; i++) await step();
reduceMs = 0;
const t0 = performance.now();
for (let i = 0; i < steps; i++) await step();
const ms = (performance.now() - t0) / steps;
if (rank === 0) {
  console.log(JSON.stringify({
    model: values.model, backend: backend.description, world, batch_per_device: B, global_batch: B * world, img_size: S,
    img_s: +((B * world) / (ms / 1000)).toFixed(1), ms_per_step: +ms.toFixed(1), allreduce_ms_per_step: +(reduceMs / steps).toFixed(1),
  }));
  const sd = await model.stateDictAsync();
  if (values.save) await writeSafetensors(values.save, sd);
  if (values.compare) {
    const ref = await readSafetensors(values.compare);
    let worst = 0;
    let scale = 0;
    for (const [k, t] of sd) {
      const a = t.data as Float32Array;
      const b = ref.get(k)!.data as Float32Array;
      for (let i = 0; i < a.length; i++) {
        worst = Math.max(worst, Math.abs(a[i] - b[i]));
        scale = Math.max(scale, Math.abs(b[i]));
      }
    }
    console.log(JSON.stringify({ compare: values.compare, steps: warmup + steps, max_abs_weight_diff: worst, max_abs_weight: scale }));
  }
}
tf.dispose([x, yOneHot]);
model.dispose();
await group?.close();
await releaseBackend();
