/**
 * Adam / AdamW for many parameters in one kernel call (kernel MambaoutAdamMulti), updating the parameter and state
 * buffers in place: one dispatch per parameter on its own buffers, all in one compute pass.
 *
 * Why: the per-parameter kernel (./adam.ts) costs one engine kernel, three new tensors and three `assign`s per
 * parameter: 172 of each per femto step, where the step is bound by the main thread issuing work. The first version
 * of this kernel gathered parameters, gradients and moments into four flat buffers (copyBufferToBuffer), ran one
 * dispatch and scattered three of them back: 7 copies per parameter, 1,204 native calls per femto step, and its
 * optimizer step took 4.1-4.4 ms of main thread on the 2-core box (Dawn's null backend, which runs nothing, so only
 * the issuing is timed: scratch probe, median of 30 steps, 2026-11-30). Here each parameter gets one copy (its
 * gradient into its slot), setBindGroup and dispatchWorkgroups on its own p, m, v: 516 native calls, and the optimizer
 * issues in 2.6-3.3 ms against 3.8-4.1 in the same runs (bench_dist `optimizer_ms`, docs/BENCHMARKS.md "CPU run,
 * 2026-11-30"). The bind groups come from the
 * cache of ../../webgpu_hooks.ts, so every bound buffer must be the same step after step: the scalars (new each step:
 * bias corrections) go into one uniform block per device, rewritten in command order; the element count is one cached
 * block per size; each gradient is copied into a slot of its own (below). No bind group is new after the first steps,
 * on 1 GPU and on 2 ranks (null backend; with the gradients bound where they came in, 16-34 per step were new there).
 * The scalar block requires that updates run on the GPU in the order they are recorded: true in tfjs's encoder and
 * in SubmitHold.before (src/backend/submit_hold.ts), which submits at once; an update recorded into held work would
 * read the scalars of a later call.
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
import { webgpuKernelSettings } from './settings.js';
import type { KernelArgs } from './util.js';

const WG = 256;

/** The scalars' uniform block of each device: one buffer, so that a parameter's bind group is the same every step. */
const scalarBlocks = new WeakMap<GPUDevice, GPUBuffer>();

/**
 * Put this call's scalars into the device's scalar block, in command order: written into a pooled staging buffer
 * (nothing recorded uses it), then copied by the encoder, so dispatches recorded before read the values they were
 * recorded with and the ones after read these.
 */
function scalarBlock(backend: BackendInternals, a: AdamKernelAttrs): GPUBuffer {
  const bytes = adamScalarBytes(a);
  let block = scalarBlocks.get(backend.device);
  if (!block) {
    block = backend.device.createBuffer({ size: bytes.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    scalarBlocks.set(backend.device, block);
  }
  const staging = backend.bufferManager.acquireBuffer(bytes.byteLength, GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
  backend.queue.writeBuffer(staging, 0, bytes, 0, bytes.byteLength);
  backend.uniformPendingDisposal.push(staging); // back to the pool once submitted
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.commandEncoder!.copyBufferToBuffer(staging, 0, block, 0, bytes.byteLength);
  return block;
}

/** The element count's uniform block (cached by content: one per parameter size). */
function sizeBlock(backend: BackendInternals, size: number): GPUBuffer {
  const bytes = new Int32Array([size, 0, 0, 0]).buffer;
  const cached = cachedUniformBuffer(backend.device, bytes);
  if (cached) return cached;
  const b = backend.bufferManager.acquireBuffer(bytes.byteLength, GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM);
  backend.queue.writeBuffer(b, 0, bytes, 0, bytes.byteLength);
  backend.uniformPendingDisposal.push(b);
  return b;
}

/**
 * Where the gradients are read from: a copy of each in a slot of one buffer per device, the same slot for a parameter
 * every step, so that its bind group does not depend on which pooled buffer its gradient came in (data-parallel
 * training uploads the averaged gradients into buffers that vary from step to step: 16-34 new bind groups per femto
 * step on 2 ranks, null backend, where a copy costs ~1.4 us and a new bind group ~30 us on Vulkan,
 * scripts/dawn_call_cost.mjs). Slots belong to the parameters (the tf.Variables that src/ops/adam.ts passes in, which
 * keep their identity when weights are loaded into them); when slots of parameters no longer updated (another model,
 * another optimizer) fill more than half of the slots in use, all slots are handed out again.
 */
interface GradSlots {
  buffer: GPUBuffer | null;
  next: number;
  slot: WeakMap<object, number>;
  /** Parameters updated since the last repeat (an epoch: each step updates each parameter once) and their bytes. */
  seen: WeakSet<object>;
  epochBytes: number;
  lastEpochBytes: number;
}
const gradSlots = new WeakMap<GPUDevice, GradSlots>();

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
  const items: Array<{ p: TensorInfo; g: TensorInfo; m: TensorInfo; v: TensorInfo; size: number; offset: number }> = [];
  const device = backend.device;
  let slots = gradSlots.get(device);
  if (!slots) gradSlots.set(device, (slots = { buffer: null, next: 0, slot: new WeakMap(), seen: new WeakSet(), epochBytes: 0, lastEpochBytes: 0 }));
  const align = Math.max(4, device.limits.minStorageBufferOffsetAlignment);
  const span = (size: number) => Math.ceil((size * 4) / align) * align;
  const take = (key: object, size: number): number => {
    const off = slots.next;
    slots.next += span(size);
    slots.slot.set(key, off);
    return off;
  };
  let newBytes = 0;
  for (let i = 0; i < n; i++) {
    const [p, g, m, v] = ['p', 'g', 'm', 'v'].map((k) => get(k, i));
    const size = p.shape.reduce((x, y) => x * y, 1);
    for (const t of [g, m, v]) {
      if (t.shape.reduce((x, y) => x * y, 1) !== size) throw new Error('MambaoutAdamMulti: p, g, m and v sizes differ');
    }
    if (size === 0) continue;
    if (slots.seen.has(p)) {
      slots.lastEpochBytes = slots.epochBytes;
      slots.epochBytes = 0;
      slots.seen = new WeakSet();
    }
    slots.seen.add(p);
    slots.epochBytes += span(size);
    if (!slots.slot.has(p)) newBytes += span(size);
    items.push({ p, g, m, v, size, offset: -1 });
  }
  if (newBytes > 0 && slots.lastEpochBytes > 0 && slots.next + newBytes > 2 * slots.lastEpochBytes) {
    slots.next = 0; // stale slots: all handed out again
    slots.slot = new WeakMap();
  }
  for (const it of items) it.offset = slots.slot.get(it.p) ?? take(it.p, it.size);
  if (items.length === 0) return [];
  const useSlots = webgpuKernelSettings.gradSlots;
  if (useSlots && (!slots.buffer || slots.buffer.size < slots.next)) {
    // (grown: work already recorded keeps the old buffer alive; the next steps bind the new one)
    const bytes = Math.ceil((slots.next * 1.25) / align) * align;
    slots.buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  }
  const G = useSlots ? slots.buffer : null;
  // The scalars change every step (bias corrections): one block per device, rewritten in command order.
  const scalars = scalarBlock(backend, a);
  const enc = backend.commandEncoder!; // scalarBlock ended the compute pass
  const list: BufferDispatch[] = [];
  for (const it of items) {
    const bytes = it.size * 4;
    if (G) enc.copyBufferToBuffer(buf(it.g), 0, G, it.offset, bytes);
    const grad = G ? { buffer: G, offset: it.offset, size: bytes } : buf(it.g);
    list.push({
      bindings: [buf(it.p), buf(it.m), buf(it.v), grad, scalars, sizeBlock(backend, it.size)],
      dispatch: dispatch2D(args.backend, Math.ceil(it.size / WG)),
    });
    for (const t of [it.p, it.g, it.m, it.v]) backend.commandQueueOwnedIds.add(t.dataId as object);
    // tfjs keeps a tensor's values on the host once read (tensor.data()) and answers later reads from that copy: after
    // this update it would hand out the old weights and moments (every checkpoint after the first held the first
    // epoch's; test/webgpu.test.ts). The GPU buffer is the only copy from here on.
    for (const t of [it.p, it.m, it.v]) backend.tensorMap.get(t.dataId).values = null;
  }
  const flags = `${a.useDecay ? 1 : 0}${a.useL2 ? 1 : 0}${a.lowLerp ? 1 : 0}`;
  recordDispatches(args.backend, {
    name: 'AdamMulti',
    key: `mambaout_adam_each_${flags}`,
    code: () => adamSource(a.useDecay, a.useL2, a.lowLerp, true),
  }, list);
  return [];
}
