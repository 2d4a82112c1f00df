/**
 * Uniform buffers by content: one persistent GPU buffer per distinct uniform block, written once.
 *
 * Why: every dispatch (tfjs's `makeUniforms` and our `runCustomProgram`) took a buffer from tfjs's pool, wrote its
 * uniform block with `queue.writeBuffer` and released the buffer after the submit. Dawn turns each writeBuffer into a
 * staging copy plus a copy command that the next submit records (with its barrier): main-thread work on ~1,000
 * dispatches of a femto training step, the part of the step that bounds it (H200 CPU profile, 2026-11-30: makeUniforms,
 * the pool's acquire/release and Dawn's submit were 36 ms of a 64 ms step's main thread). With fixed shapes the
 * blocks repeat exactly from step to step (sizes, strides, constants), so the buffer written the first time serves every
 * later dispatch with the same bytes: no copy, no pool traffic, and the bind group (same buffers) comes from the cache
 * in webgpu_hooks.ts. Keyed by the exact bytes, so values that print alike (0 and -0) never share a buffer. Bounded:
 * past MAX_CACHED distinct blocks the caller's per-dispatch path is used (null), nothing is evicted (a buffer may
 * still be bound by work in flight). Switch: webgpuKernelSettings.uniformCache (MAMBAOUT_WEBGPU_OFF=uniformCache).
 */
import { webgpuKernelSettings } from './settings.js';

const MAX_CACHED = 8192;

interface DeviceCache {
  buffers: Map<string, GPUBuffer>;
}

const caches = new WeakMap<GPUDevice, DeviceCache>();

/** A buffer holding `bytes` (length a multiple of 4) for binding as a uniform block, or null (cache off or full). */
export function cachedUniformBuffer(device: GPUDevice, bytes: ArrayBuffer): GPUBuffer | null {
  if (!webgpuKernelSettings.uniformCache) return null;
  let c = caches.get(device);
  if (!c) caches.set(device, (c = { buffers: new Map() }));
  const key = new Int32Array(bytes).join(',');
  let buf = c.buffers.get(key);
  if (buf) return buf;
  if (c.buffers.size >= MAX_CACHED) return null;
  buf = device.createBuffer({ size: bytes.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, bytes, 0, bytes.byteLength);
  c.buffers.set(key, buf);
  return buf;
}

/** Number of cached uniform buffers on `device` (tests). */
export function cachedUniformCount(device: GPUDevice): number {
  return caches.get(device)?.buffers.size ?? 0;
}

/** Forget `device`'s buffers (they are destroyed with the device). */
export function dropUniformCache(device: GPUDevice): void {
  caches.delete(device);
}

/** One field of tfjs's program uniforms (`WebGPUProgram` + `makeUniforms`' argument). */
export interface TfjsUniform {
  type: string;
  data: number[];
}

/**
 * The bytes tfjs's `makeUniforms` writes for `fields` (tfjs-backend-webgpu 4.22): WGSL alignment of scalars and
 * vectors (4, 8, then 16 bytes for 3 to 6 components, and 16 after a field of 5 or 6), the block padded to its largest
 * alignment; an empty field holds the value 1 (tfjs rewrites it so, and so do we, in place).
 */
export function tfjsUniformBytes(fields: TfjsUniform[]): ArrayBuffer {
  let offset = 0;
  let prevLength = 0;
  let maxAlign = 1;
  const offsets: number[] = [];
  for (const d of fields) {
    if (d.data.length === 0) d.data = [1];
    const n = d.data.length;
    if (n > 6) throw new Error(`Unsupported ${n}D shape`);
    let align = n === 1 ? 4 : n === 2 ? 8 : 16;
    if (prevLength === 5 || prevLength === 6) align = 16;
    if (align > maxAlign) maxAlign = align;
    offset = Math.ceil(offset / align) * align;
    prevLength = n;
    offsets.push(offset);
    offset += n * 4;
  }
  const bytes = new ArrayBuffer(Math.ceil(offset / maxAlign) * maxAlign);
  fields.forEach((d, i) => {
    if (d.type === 'int32') new Int32Array(bytes, offsets[i], d.data.length).set(d.data);
    else if (d.type === 'uint32') new Uint32Array(bytes, offsets[i], d.data.length).set(d.data);
    else new Float32Array(bytes, offsets[i], d.data.length).set(d.data);
  });
  return bytes;
}
