/**
 * Adam / AdamW for many parameters in one kernel call (kernel MambaoutAdamMulti), updating the parameter and state
 * buffers in place: one dispatch per parameter on its own buffers, all in one compute pass.
 *
 * Why: the per-parameter kernel (./adam.ts) costs one engine kernel, three new tensors and three `assign`s per
 * parameter: 172 of each per femto step, where the step is bound by the main thread issuing work. The first version
 * of this kernel gathered parameters, gradients and moments into four flat buffers (copyBufferToBuffer), ran one
 * dispatch and scattered three of them back: 7 copies per parameter, 1,204 native calls per femto step, and its
 * optimizer step took 4.1-4.4 ms of main thread on the 2-core box (Dawn's null backend, which runs nothing, so only
 * the issuing is timed: scratch probe, median of 30 steps, 2026-11-30). Here each parameter gets setBindGroup +
 * dispatchWorkgroups on its own p, m, v, g (bind groups come from the cache of ../../webgpu_hooks.ts, the same
 * buffers step after step): 344 native calls. The scalars are one uniform block per call (a pooled buffer written
 * once), the element count one cached block per size, so no block is new from step to step but the scalars'.
 *
 * Inputs: p0..p{n-1}, g0.., m0.., v0.. (attr count = n) and the scalars of ./adam.ts (one set: callers group the
 * parameters that share them). Outputs: none; p, m and v are written in place, so each must be the only tensor on its
 * buffer (the op checks refCount == 1) or a held forward pass must read them after the update (src/ops/adam.ts).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { AdamKernelAttrs } from './adam.js';
import { adamScalarBytes, adamSource } from './adam.js';
import { dispatch2D, recordDispatches, type BackendInternals, type BufferDispatch } from './dispatch.js';
import { cachedUniformBuffer } from './uniforms.js';
import type { KernelArgs } from './util.js';

const WG = 256;

/** A uniform block holding `bytes`: the cached buffer for that content, else a pooled one written now. */
function uniformBlock(backend: BackendInternals, bytes: ArrayBuffer, cache: boolean): GPUBuffer {
  const cached = cache ? cachedUniformBuffer(backend.device, bytes) : null;
  if (cached) return cached;
  const b = backend.bufferManager.acquireBuffer(bytes.byteLength, GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM);
  backend.queue.writeBuffer(b, 0, bytes, 0, bytes.byteLength);
  backend.uniformPendingDisposal.push(b); // back to the pool once submitted
  return b;
}

export function adamMultiKernel(args: KernelArgs): TensorInfo[] {
  const a = args.attrs as unknown as AdamKernelAttrs & { count: number };
  const backend = args.backend as BackendInternals;
  const n = a.count;
  const get = (k: string, i: number) => {
    const t = args.inputs[`${k}${i}`];
    if (!t) throw new Error(`MambaoutAdamMulti: missing input ${k}${i}`);
    return t;
  };
  const buf = (t: TensorInfo) => {
    backend.uploadToGPU(t.dataId);
    return backend.tensorMap.get(t.dataId).resource as GPUBuffer;
  };
  // The scalars change every step (bias corrections): a pooled block, not one more cached buffer per step.
  let scalars: GPUBuffer | null = null;
  const list: BufferDispatch[] = [];
  for (let i = 0; i < n; i++) {
    const [p, g, m, v] = ['p', 'g', 'm', 'v'].map((k) => get(k, i));
    const size = p.shape.reduce((x, y) => x * y, 1);
    for (const t of [g, m, v]) {
      if (t.shape.reduce((x, y) => x * y, 1) !== size) throw new Error('MambaoutAdamMulti: p, g, m and v sizes differ');
    }
    if (size === 0) continue;
    scalars ??= uniformBlock(backend, adamScalarBytes(a), false);
    const sizeBlock = uniformBlock(backend, new Int32Array([size, 0, 0, 0]).buffer, true);
    list.push({ buffers: [buf(p), buf(m), buf(v), buf(g), scalars, sizeBlock], dispatch: dispatch2D(args.backend, Math.ceil(size / WG)) });
    for (const t of [p, g, m, v]) backend.commandQueueOwnedIds.add(t.dataId as object);
  }
  if (list.length === 0) return [];
  const flags = `${a.useDecay ? 1 : 0}${a.useL2 ? 1 : 0}${a.lowLerp ? 1 : 0}`;
  recordDispatches(args.backend, {
    name: 'AdamMulti',
    key: `mambaout_adam_each_${flags}`,
    code: () => adamSource(a.useDecay, a.useL2, a.lowLerp, true, true),
  }, list);
  return [];
}
