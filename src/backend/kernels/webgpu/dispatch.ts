/**
 * Running our own complete WGSL compute shaders on tfjs's WebGPU backend, with several outputs.
 *
 * tfjs's `runWebGPUProgram` wraps a program's code in its own preamble (one `result` output, read-only inputs,
 * a uniform block with every shape and stride) and supports one output only. The fused kernels here (LayerNorm,
 * gated GELU, AdamW, ...) need two or three outputs, so `runCustomProgram` does what `runWebGPUProgram` +
 * `recordAndSubmit` do, for a shader we write in full:
 *   - outputs are new tensors (buffers from tfjs's buffer manager, released like any tensor's);
 *   - bindings: outputs first (`read_write`), then inputs (`read`), then one uniform struct (if any);
 *   - the dispatch goes into tfjs's current compute pass, counts towards WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE, and
 *     the buffers are marked as owned by the command queue so that tfjs defers their release until submission;
 *   - under tf.profile / tf.time each dispatch gets its own pass with timestamp queries, as tfjs's programs do,
 *     and is reported under the kernel name given here.
 * Uniforms are 4-byte scalars (i32 / u32 / f32), declared in order as `struct Uniforms` bound as `u`.
 *
 * Everything here touches tfjs-webgpu internals that are private in its typings (commandEncoder,
 * computePassEncoder, commandQueueOwnedIds, uniformPendingDisposal, activeTimers, ...): checked against
 * @tensorflow/tfjs-backend-webgpu 4.22.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DataType, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { cachedUniformBuffer } from './uniforms.js';

export type UniformType = 'i32' | 'u32' | 'f32';

export interface CustomProgram {
  /** Name reported by tf.profile (also the pipeline label). */
  name: string;
  /** Pipeline cache key: must identify the WGSL text. */
  key: string;
  /** Full WGSL source (entry point `main`); called only when the key is not cached. */
  code: () => string;
  /** Output shapes (float32 unless `outputDtypes` says otherwise). */
  outputShapes: number[][];
  outputDtypes?: DataType[];
  /** Workgroups in x, y, z. */
  dispatch: [number, number, number];
  /** Uniform values in declaration order. */
  uniforms?: Array<{ name: string; type: UniformType; value: number }>;
}

/** The private parts of tfjs's WebGPUBackend we use. */
export interface BackendInternals {
  device: GPUDevice;
  queue: GPUQueue;
  tensorMap: { get(dataId: unknown): { resource?: unknown; values?: unknown; shape: number[]; dtype: DataType } };
  bufferManager: { acquireBuffer(size: number, usage: number): GPUBuffer };
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  commandQueueOwnedIds: WeakSet<object>;
  uniformPendingDisposal: GPUBuffer[];
  dispatchCountInPass: number;
  activeTimers?: Array<{ name: string; query: Promise<number> }> | null;
  supportTimestampQuery: boolean;
  querySet: GPUQuerySet | null;
  querySetCount: number;
  makeTensorInfo(shape: number[], dtype: DataType): TensorInfo;
  disposeData(dataId: unknown, force?: boolean): boolean;
  refCount(dataId: unknown): number;
  uploadToGPU(dataId: unknown): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  getQueryTime(): Promise<number>;
}

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** WGSL declaration of the uniform struct for `uniforms` (empty string when there are none). */
export function uniformStruct(uniforms: CustomProgram['uniforms'], binding: number): string {
  if (!uniforms || uniforms.length === 0) return '';
  const fields = uniforms.map((u) => `  ${u.name} : ${u.type},`).join('\n');
  return `struct Uniforms {\n${fields}\n};\n@group(0) @binding(${binding}) var<uniform> u : Uniforms;\n`;
}

function getPipeline(device: GPUDevice, prog: Pick<CustomProgram, 'name' | 'key' | 'code'>): GPUComputePipeline {
  let cache = pipelines.get(device);
  if (!cache) {
    cache = new Map();
    pipelines.set(device, cache);
  }
  let p = cache.get(prog.key);
  if (!p) {
    const module = device.createShaderModule({ code: prog.code(), label: prog.name });
    p = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: prog.name });
    cache.set(prog.key, p);
  }
  return p;
}

/** Number of outputs + inputs: the uniform struct's binding index. */
export function uniformBinding(numOutputs: number, numInputs: number): number {
  return numOutputs + numInputs;
}

/**
 * Record one dispatch of `prog` on tfjs's WebGPU backend. Returns the new output tensors (TensorInfos owned by the
 * caller, as a kernel function's results are), or `inPlace` when given. Inputs must be float32/int32 tensors of this
 * backend.
 */
export function runCustomProgram(backendArg: unknown, prog: CustomProgram, inputs: TensorInfo[], inPlace?: TensorInfo[]): TensorInfo[] {
  const backend = backendArg as BackendInternals;
  const device = backend.device;
  // inPlace: existing tensors bound as the read_write outputs (the caller owns them; nothing new is created).
  const outputs = inPlace ?? prog.outputShapes.map((s, i) => backend.makeTensorInfo(s, prog.outputDtypes?.[i] ?? 'float32'));
  const empty = prog.dispatch.some((d) => d === 0) || outputs.some((o) => o.shape.some((d) => d === 0));
  for (const o of outputs) backend.uploadToGPU(o.dataId);
  if (empty) return outputs;
  for (const t of inputs) backend.uploadToGPU(t.dataId);

  const bindings: GPUBufferBinding[] = [];
  for (const t of [...outputs, ...inputs]) bindings.push({ buffer: backend.tensorMap.get(t.dataId).resource as GPUBuffer });
  if (prog.uniforms && prog.uniforms.length > 0) {
    const size = Math.max(16, Math.ceil((prog.uniforms.length * 4) / 16) * 16);
    const data = new ArrayBuffer(size);
    const i32 = new Int32Array(data);
    const u32 = new Uint32Array(data);
    const f32 = new Float32Array(data);
    prog.uniforms.forEach((uf, i) => {
      if (uf.type === 'i32') i32[i] = uf.value;
      else if (uf.type === 'u32') u32[i] = uf.value;
      else f32[i] = uf.value;
    });
    let ub = cachedUniformBuffer(device, data);
    if (!ub) {
      ub = backend.bufferManager.acquireBuffer(size, GPUBufferUsage.COPY_DST | GPUBufferUsage.UNIFORM);
      backend.queue.writeBuffer(ub, 0, data, 0, size);
      backend.uniformPendingDisposal.push(ub);
    }
    bindings.push({ buffer: ub, offset: 0, size });
  }
  for (const t of [...inputs, ...outputs]) backend.commandQueueOwnedIds.add(t.dataId as object);
  recordDispatches(backend, prog, [{ bindings, dispatch: prog.dispatch }]);
  return outputs;
}

/** One dispatch of `recordDispatches`: what is bound at 0, 1, ... (storage, then uniform blocks) and its workgroups. */
export interface BufferDispatch {
  bindings: Array<GPUBuffer | GPUBufferBinding>;
  dispatch: [number, number, number];
}

/**
 * Record dispatches of one shader, each on its own buffers, into tfjs's current compute pass (tf.profile: one timed
 * pass for them all), counted as one dispatch towards WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE (a submit in between would
 * cost more main-thread time than the dispatches). runCustomProgram records its one dispatch here; kernels that
 * update tensors in place (no outputs) call it directly and mark the tensors' dataIds in `commandQueueOwnedIds`.
 */
export function recordDispatches(backendArg: unknown, prog: Pick<CustomProgram, 'name' | 'key' | 'code'>, list: BufferDispatch[]): void {
  const backend = backendArg as BackendInternals;
  const device = backend.device;
  const pipeline = getPipeline(device, prog);
  const layout = pipeline.getBindGroupLayout(0);
  const timed = backend.activeTimers != null;
  backend.ensureCommandEncoderReady();
  if (timed && backend.supportTimestampQuery) {
    backend.endComputePassEncoder();
    if (backend.querySet == null) backend.querySet = device.createQuerySet({ type: 'timestamp', count: backend.querySetCount });
    backend.computePassEncoder = backend.commandEncoder!.beginComputePass({
      timestampWrites: { querySet: backend.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
  } else if (!backend.computePassEncoder) {
    backend.computePassEncoder = backend.commandEncoder!.beginComputePass({});
  }
  const pass = backend.computePassEncoder!;
  pass.setPipeline(pipeline);
  for (const d of list) {
    if (d.dispatch.some((n) => n === 0)) continue;
    const entries: GPUBindGroupEntry[] = d.bindings.map((b, binding) => ({ binding, resource: b instanceof GPUBuffer ? { buffer: b } : b }));
    pass.setBindGroup(0, device.createBindGroup({ layout, entries }));
    pass.dispatchWorkgroups(d.dispatch[0], d.dispatch[1], d.dispatch[2]);
  }
  backend.dispatchCountInPass++;
  if (timed || tf.env().getNumber('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') <= backend.dispatchCountInPass) {
    backend.endComputePassEncoder();
    if (timed) backend.activeTimers!.push({ name: prog.name, query: backend.getQueryTime() });
    else backend.submitQueue();
  }
}

/** Split a workgroup count over x and y so that neither exceeds the device limit. */
export function dispatch2D(backendArg: unknown, groups: number): [number, number, number] {
  const max = (backendArg as WebGPUBackend).device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(groups, 1), 1, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y, 1];
}

/** Dispose intermediate TensorInfos a kernel created (not returned). */
export function disposeInfos(backendArg: unknown, infos: TensorInfo[]): void {
  const backend = backendArg as WebGPUBackend;
  for (const t of infos) backend.disposeData(t.dataId);
}
