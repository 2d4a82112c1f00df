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

type Op = [string, ...unknown[]];
const G = globalThis as unknown as Record<string, { prototype: Record<string, (...a: unknown[]) => unknown> }>;
const targets: [string, string[]][] = [
  ['GPUCommandEncoder', ['beginComputePass', 'copyBufferToBuffer', 'finish', 'clearBuffer']],
  ['GPUComputePassEncoder', ['setPipeline', 'setBindGroup', 'dispatchWorkgroups', 'end']],
  ['GPUQueue', ['submit', 'writeBuffer']],
];
const orig = new Map<string, (...a: unknown[]) => unknown>();
let rec: Op[] | null = null;
for (const [cls, names] of targets) {
  const proto = G[cls].prototype;
  for (const n of names) {
    const f = proto[n];
    orig.set(`${cls}.${n}`, f);
    proto[n] = function (this: unknown, ...a: unknown[]) {
      if (rec) {
        if (n === 'writeBuffer') {
          const d = a[2] as ArrayBufferView | ArrayBuffer;
          const bytes = d instanceof ArrayBuffer ? new Uint8Array(d.slice(0)) : new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
          rec.push([n, a[0], a[1], bytes, a[3], a[4]]);
        } else if (n === 'submit') rec.push([n, (a[0] as unknown[]).length]);
        else rec.push([n, ...a]);
      }
      return f.apply(this, a);
    };
  }
}
const call = (cls: string, n: string, self: unknown, ...a: unknown[]): unknown => orig.get(`${cls}.${n}`)!.apply(self, a);

for (let i = 0; i < 5; i++) await readBack([issue()]);
// tfjs: the main thread's time to issue a step
const N = Number(process.env.N ?? 30);
let tfjsMs = 0;
for (let i = 0; i < N; i++) {
  const t = performance.now();
  const v = issue();
  tfjsMs += performance.now() - t;
  await readBack([v]);
  v.dispose();
}
// record one step
rec = [];
const v = issue();
const ops = rec;
rec = null;
await readBack([v]);
v.dispose();
const backend = tf.backend() as unknown as { device: GPUDevice };
const device = backend.device;
const queue = device.queue;
function replay(): void {
  let enc: GPUCommandEncoder | null = null;
  let pass: GPUComputePassEncoder | null = null;
  const done: GPUCommandBuffer[] = [];
  for (const op of ops) {
    switch (op[0]) {
      case 'beginComputePass':
        enc ??= device.createCommandEncoder();
        pass = call('GPUCommandEncoder', 'beginComputePass', enc, ...op.slice(1)) as GPUComputePassEncoder;
        break;
      case 'setPipeline': case 'setBindGroup': case 'dispatchWorkgroups': case 'end':
        call('GPUComputePassEncoder', op[0], pass, ...op.slice(1));
        break;
      case 'copyBufferToBuffer': case 'clearBuffer':
        enc ??= device.createCommandEncoder();
        call('GPUCommandEncoder', op[0], enc, ...op.slice(1));
        break;
      case 'finish':
        done.push(call('GPUCommandEncoder', 'finish', enc) as GPUCommandBuffer);
        enc = null;
        break;
      case 'submit':
        call('GPUQueue', 'submit', queue, done.splice(0, op[1] as number));
        break;
      case 'writeBuffer':
        call('GPUQueue', 'writeBuffer', queue, op[1], op[2], op[3], op[4], op[5]);
        break;
    }
  }
}
const count = (n: string): number => ops.filter((o) => o[0] === n).length;
for (let i = 0; i < 3; i++) replay();
let replayMs = 0;
for (let i = 0; i < N; i++) {
  const t = performance.now();
  replay();
  replayMs += performance.now() - t;
  await new Promise((r) => setImmediate(r));
}
console.log(JSON.stringify({ B, S, steps: N, tfjs_issue_ms: +(tfjsMs / N).toFixed(2), replay_ms: +(replayMs / N).toFixed(2),
  dispatches: count('dispatchWorkgroups'), setBindGroup: count('setBindGroup'), passes: count('beginComputePass'), copies: count('copyBufferToBuffer'), writeBuffer: count('writeBuffer'), submits: count('submit') }));
