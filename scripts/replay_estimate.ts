/**
 * How much of a training step's main-thread time is tfjs and how much is Dawn: a femto step (forward, backward,
 * AdamW) issued through tfjs, against the same Dawn calls replayed from a recording of one step (what a captured-step
 * replay, as CUDA graphs do it, would leave to the main thread). Run on Dawn's null backend, where nothing executes
 * and issuing is all a step costs:
 *
 *   source .lavapipe/env.sh && MAMBAOUT_DAWN_FLAGS=backend=null node --import tsx scripts/replay_estimate.ts
 *   (B=16 S=64 N=30 by default: batch, image size, timed steps; the kernel sequence is the same at any size)
 *
 * Why: on 2 GPUs femto is bound by the main thread (docs/BENCHMARKS.md, GPU runs 5-8): it issues ~30-60 ms of a
 * ~57 ms step, and cuts of ~1 ms do not get through the VM's noise. Only an estimate: the replay reuses the recorded
 * bind groups and staging contents as they are (the AdamW scalars, the loss readback, random masks would have to be
 * rewritten per step, the batch copied in), and on the null backend nothing checks what it computes.
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/mambaout.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { readBack } from '../src/backend/fence.js';
import { CapturedStep, type CaptureBackend } from '../src/backend/step_capture.js';

const B = Number(process.env.B ?? 16), S = Number(process.env.S ?? 64);
await initBackend('webgpu', { training: true });
const model = createModel('mambaout_femto', { seed: 0 });
const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
const x = tf.randomNormal([B, S, S, 3]) as tf.Tensor4D;
const y = tf.oneHot(tf.tensor1d(Array.from({ length: B }, (_, i) => i % 10), 'int32'), model.numClasses);
const vars = params.map((p) => p.variable);
function issue(): tf.Scalar {
  const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar, vars);
  const g = new Map<string, tf.Tensor>(params.map((p) => [p.name, grads[p.variable.name]]));
  opt.step(g);
  for (const t of g.values()) t.dispose();
  return value;
}

for (let i = 0; i < 5; i++) await readBack([issue()]);
// tfjs: the main thread's time to issue a step
const N = Number(process.env.N ?? 30);
let tfjsMs = 0;
for (let i = 0; i < N; i++) {
  const t = performance.now();
  const v = issue();
  tfjsMs += performance.now() - t;
  await readBack([v]);
}
// one step recorded, AdamW included (CapturedStep; a replay repeats AdamW's scalars of that step: an estimate only)
const { result: kept, step } = CapturedStep.capture(tf.backend() as unknown as CaptureBackend, issue);
await readBack([kept]);
for (let i = 0; i < 3; i++) step.replay();
let replayMs = 0;
for (let i = 0; i < N; i++) {
  const t = performance.now();
  step.replay();
  replayMs += performance.now() - t;
  await new Promise((r) => setImmediate(r));
}
const c = step.calls;
console.log(JSON.stringify({ B, S, steps: N, tfjs_issue_ms: +(tfjsMs / N).toFixed(2), replay_ms: +(replayMs / N).toFixed(2),
  dispatches: c.dispatch ?? 0, setBindGroup: c.bind ?? 0, passes: c.pass ?? 0, copies: c.copy ?? 0, writeBuffer: c.write ?? 0, submits: c.submit ?? 0 }));
