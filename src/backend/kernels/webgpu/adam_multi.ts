/**
 * Adam / AdamW for many parameters in one dispatch (kernel MambaoutAdamMulti), updating the parameter and state
 * buffers in place.
 *
 * Why: the per-parameter kernel (./adam.ts) still costs one engine kernel, one bind group, three new tensors and three
 * `assign`s per parameter: 172 of each per femto step, where the step is bound by issuing work on the CPU (~91 ms
 * issue vs 87 ms GPU on an H200). Here the parameters, gradients and both moments are gathered into four flat buffers
 * with copyBufferToBuffer (a command-encoder copy: no bind group, no shader), one dispatch runs the same update as
 * ./adam.ts over all elements, and three sets of copies scatter parameters and moments back. The extra GPU traffic
 * is 7 x 4 bytes per parameter element (29 MB femto, ~0.1 ms at H200 bandwidth).
 *
 * Inputs: p0..p{n-1}, g0.., m0.., v0.. (attr count = n) and the scalars of ./adam.ts (one set: callers group the
 * parameters that share them). Outputs: none; p, m and v are written in place, so each must be the only tensor on its
 * buffer (the op checks refCount == 1).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { AdamKernelAttrs } from './adam.js';
import { adamSource, adamUniforms } from './adam.js';
import { dispatch2D, runCustomProgram, type BackendInternals } from './dispatch.js';
import type { KernelArgs } from './util.js';

const WG = 256;

export function adamMultiKernel(args: KernelArgs): TensorInfo[] {
  const a = args.attrs as unknown as AdamKernelAttrs & { count: number };
  const backend = args.backend as BackendInternals;
  const n = a.count;
  const get = (k: string, i: number) => {
    const t = args.inputs[`${k}${i}`];
    if (!t) throw new Error(`MambaoutAdamMulti: missing input ${k}${i}`);
    return t;
  };
  const sizes: number[] = [];
  for (let i = 0; i < n; i++) {
    const size = get('p', i).shape.reduce((x, y) => x * y, 1);
    for (const k of ['g', 'm', 'v']) {
      if (get(k, i).shape.reduce((x, y) => x * y, 1) !== size) throw new Error('MambaoutAdamMulti: p, g, m and v sizes differ');
    }
    sizes.push(size);
  }
  const total = sizes.reduce((x, y) => x + y, 0);
  if (total === 0) return [];
  const flat = ['p', 'm', 'v', 'g'].map(() => backend.makeTensorInfo([total], 'float32'));
  for (const f of flat) backend.uploadToGPU(f.dataId);
  const buf = (t: TensorInfo) => {
    backend.uploadToGPU(t.dataId);
    return backend.tensorMap.get(t.dataId).resource as GPUBuffer;
  };
  const [P, M, V, G] = flat.map(buf);
  const parts: Array<{ p: GPUBuffer; m: GPUBuffer; v: GPUBuffer; g: GPUBuffer; off: number; bytes: number }> = [];
  let off = 0;
  for (let i = 0; i < n; i++) {
    const bytes = sizes[i] * 4;
    if (bytes > 0) parts.push({ p: buf(get('p', i)), m: buf(get('m', i)), v: buf(get('v', i)), g: buf(get('g', i)), off, bytes });
    off += bytes;
    for (const k of ['p', 'g', 'm', 'v']) backend.commandQueueOwnedIds.add(get(k, i).dataId as object);
  }
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  let enc = backend.commandEncoder!;
  for (const x of parts) {
    enc.copyBufferToBuffer(x.p, 0, P, x.off, x.bytes);
    enc.copyBufferToBuffer(x.g, 0, G, x.off, x.bytes);
    enc.copyBufferToBuffer(x.m, 0, M, x.off, x.bytes);
    enc.copyBufferToBuffer(x.v, 0, V, x.off, x.bytes);
  }
  const flags = `${a.useDecay ? 1 : 0}${a.useL2 ? 1 : 0}${a.lowLerp ? 1 : 0}`;
  runCustomProgram(args.backend, {
    name: 'AdamMulti',
    key: `mambaout_adam_inplace_${flags}`,
    code: () => adamSource(a.useDecay, a.useL2, a.lowLerp, true),
    outputShapes: [[total], [total], [total]],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: adamUniforms(total, a),
  }, [flat[3]], flat.slice(0, 3));
  // runCustomProgram may have submitted (batch size reached or profiling): take the encoder it leaves.
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  enc = backend.commandEncoder!;
  for (const x of parts) {
    enc.copyBufferToBuffer(P, x.off, x.p, 0, x.bytes);
    enc.copyBufferToBuffer(M, x.off, x.m, 0, x.bytes);
    enc.copyBufferToBuffer(V, x.off, x.v, 0, x.bytes);
  }
  // Released when tfjs submits this encoder (commandQueueOwnedIds defers the release).
  for (const f of flat) {
    backend.commandQueueOwnedIds.add(f.dataId as object);
    backend.disposeData(f.dataId);
  }
  return [];
}
