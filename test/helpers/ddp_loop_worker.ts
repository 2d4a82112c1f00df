/**
 * Worker for test/ddp.test.ts: the gradient exchange exactly as src/train/loop.ts should call it (the lines in
 * DistributedDataParallel's docs), on the cpu backend. Without WORLD_SIZE it is the 1-process reference. Global batch
 * of GLOBAL_BATCH images from a fixed seed, each rank takes its slice; STEPS SGD-momentum updates (the first momentum
 * step keeps the gradient tensor itself, so an exchange that reused its output memory would show). Prints one JSON
 * line: the flattened weights (rank 0), the transfer and threads in use.
 */
import * as tf from '@tensorflow/tfjs-core';
import '../../src/backend/tfjs.js';
import { createLogger } from '../../src/log/logger.js';
import { createModel } from '../../src/models/mambaout.js';
import { createOptimizer } from '../../src/train/optim/index.js';
import { setupDistributed } from '../../src/train/ddp.js';
import { Rng } from '../../src/utils/rng.js';

await tf.setBackend('cpu');
const logger = createLogger({ format: 'text', silent: true });
const dist = await setupDistributed({ dist_timeout: 60 }, logger);
const world = dist?.worldSize ?? 1;
const rank = dist?.rank ?? 0;
const G = Number(process.env.GLOBAL_BATCH ?? 8);
const B = G / world;
const S = 32;
const A = 1; // no gradient accumulation: the update's gradients are this micro-batch's
const model = createModel('mambaout_test', { seed: 0 });
const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
const vars = params.map((p) => p.variable);
if (dist && world > 1) await dist.broadcastParams(params); // loop.ts: DDP's broadcast at wrap time (attaches the parameters)
const optimizer = createOptimizer(params, { opt: 'momentum', lr: 0.05, momentum: 0.9, weightDecay: 0 });
const rng = new Rng(1);
for (let step = 0; step < Number(process.env.STEPS ?? 3); step++) {
  const per = S * S * 3;
  const xs = new Float32Array(B * per);
  const labels = new Int32Array(B);
  for (let i = 0; i < G; i++) {
    const mine = i >= rank * B && i < (rank + 1) * B;
    for (let j = 0; j < per; j++) {
      const v = rng.random() * 2 - 1;
      if (mine) xs[(i - rank * B) * per + j] = v;
    }
    const y = rng.randrange(0, model.numClasses);
    if (mine) labels[i - rank * B] = y;
  }
  // ---- the loop.ts lines
  const updateGrad = true;
  const { lossValue, grads } = tf.tidy(() => {
    const xt = tf.tensor4d(xs, [B, S, S, 3]);
    const target = tf.tensor1d(labels, 'int32');
    const lossFn = (): tf.Scalar => tf.losses.softmaxCrossEntropy(tf.oneHot(target, model.numClasses), model.forward(xt, { training: true })) as tf.Scalar;
    const { value, grads } = tf.variableGrads(dist && world > 1 && updateGrad && A === 1 ? dist.watch(lossFn) : lossFn, vars);
    return { lossValue: value, grads };
  });
  let g = new Map(params.map((p) => [p.name, grads[p.variable.name]]));
  const exchange = dist && world > 1 ? dist.allreduceGrads(params, g) : null; // started before the loss is awaited
  const lossNum = (await lossValue.data())[0];
  lossValue.dispose();
  if (!Number.isFinite(lossNum)) throw new Error('loss diverged');
  if (exchange) g = await exchange;
  optimizer.step(g);
  for (const t of g.values()) t.dispose();
}
const weights = await Promise.all(params.map(async (p) => Array.from((await p.variable.data()) as Float32Array)));
if (rank === 0) process.stdout.write(JSON.stringify({ world, transfer: dist?.transfer ?? null, threads: dist?.commThreads ?? 0, compress: dist?.compress ?? null, weights: weights.flat() }) + '\n');
await dist?.close();
