/**
 * Gradient buckets between the GPU and the host without per-step allocations (webgpu backend; src/train/ddp.ts's
 * 'staged' transfer), and the bfloat16 pack/unpack kernels of the compressed exchange.
 *
 * Why. tfjs moves a tensor to the host with a pooled MAP_READ staging buffer but returns `getMappedRange().slice(0)`,
 * a new ArrayBuffer per read, and moves host data to the GPU through a MAP_WRITE staging buffer that it creates and
 * destroys on every upload (uploadToGPU: acquireBuffer(..., reuse=false)); queue.writeBuffer above 4 MiB makes Dawn
 * create and destroy a mapped staging buffer of the full size per call (DynamicUploader: kRingBufferSize 4 MiB).
 * New memory is what costs: every page is faulted in (and for Dawn allocated, mapped and pinned) again on every step.
 * On the 2-core sandbox (scripts/gpu_transfer_bench.ts on lavapipe, 2026-11-30, load ~5): a copy into fresh JS
 * memory runs at 0.1 GB/s, into reused memory at 14 GB/s; a 4 MB readback takes 7.0 ms through tensor.data() and
 * 1.1 ms through a reused staging buffer copied into a reused array; a 4 MB upload 31 ms through tfjs, 0.45 ms
 * through a reused, re-mapped MAP_WRITE buffer. On the H200 (run 1) readback and upload of 29-106 MB ran at 1-3 GB/s.
 *
 * So every bucket owns, for the life of the DistributedDataParallel:
 *   - a MAP_READ|COPY_DST buffer: the bucket's gradients are copied into it straight from the gradient tensors'
 *     GPU buffers (one copyBufferToBuffer per parameter, no concat kernel), mapped, and copied into the bucket's
 *     slice of the persistent host array (one memcpy, into memory that is already faulted in);
 *   - a MAP_WRITE|COPY_SRC buffer: the averaged bucket is copied into it while mapped, then one copy per parameter
 *     goes into a GPU buffer that tfjs hands out from its own pool (so the gradient tensors are ordinary tfjs
 *     tensors: an optimizer may keep one, as SGD's first momentum step does, without aliasing our memory). It is
 *     mapped again right after the submit, so the next step finds it ready.
 * All GPU commands are recorded into tfjs's own command encoder and submitted with it, so they are ordered with the
 * kernels tfjs has issued (no queue.writeBuffer, which would jump ahead of commands tfjs has not submitted yet).
 *
 * bf16 (DistributedDataParallel compress 'bf16', torch's bf16_compress_hook): before the readback a WGSL kernel packs
 * the bucket to bfloat16 pairs (src/distributed/bf16.ts: round to nearest even, NaN -> 0x7fc0); after the upload one
 * unpacks it. Readback, exchange and upload move half the bytes.
 *
 * This file reaches into tfjs-backend-webgpu 4.x internals (tensorMap, commandEncoder, submitQueue, uploadToGPU,
 * makeTensorInfo); `stagingSupported()` checks they are there, else ddp.ts keeps tfjs's public data()/tensor() path.
 */
import * as tf from '@tensorflow/tfjs-core';
import { bf16Words } from '../distributed/bf16.js';
import { submitRecorded } from '../backend/fence.js';
import type { HandoffFile } from '../distributed/handoff.js';

/** The parts of tfjs-backend-webgpu's backend that the staging uses. */
interface WebGPUBackendInternals {
  device: GPUDevice;
  commandEncoder: GPUCommandEncoder | null;
  tensorMap: { get(dataId: object): { resource?: unknown } | undefined };
  uploadToGPU(dataId: object): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  makeTensorInfo(shape: number[], dtype: 'float32'): { dataId: object; shape: number[]; dtype: 'float32' };
}

/** tfjs's webgpu backend when it is active and has what the staging needs, else null. */
export function webgpuInternals(): WebGPUBackendInternals | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const be = tf.backend() as unknown as Partial<WebGPUBackendInternals>;
  const fns = ['uploadToGPU', 'ensureCommandEncoderReady', 'endComputePassEncoder', 'submitQueue', 'makeTensorInfo'] as const;
  if (!be.device || !be.tensorMap || fns.some((f) => typeof be[f] !== 'function')) return null;
  if (typeof GPUBufferUsage === 'undefined' || typeof GPUMapMode === 'undefined') return null;
  return be as WebGPUBackendInternals;
}

export function stagingSupported(): boolean {
  return webgpuInternals() !== null;
}

const WG = 256;
const MAX_GROUPS = 65535;

// Pack: word j = bf16(x[2j]) | bf16(x[2j+1]) << 16 (a missing last element is +0). Grid-stride loop, so any size
// fits in one dispatch.
const PACK_WGSL = /* wgsl */ `
struct U { n: u32, words: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> u: U;
fn bf16(b: u32) -> u32 {
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0x7fc0u; }
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let stride = nw.x * ${WG}u;
  for (var j = g.x; j < u.words; j = j + stride) {
    let i = 2u * j;
    var hi = 0u;
    if (i + 1u < u.n) { hi = bf16(x[i + 1u]); }
    y[j] = bf16(x[i]) | (hi << 16u);
  }
}`;

// Unpack: the inverse (exact: a bfloat16 is a float32 with 16 zero low bits).
const UNPACK_WGSL = /* wgsl */ `
struct U { n: u32, words: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> y: array<u32>;
@group(0) @binding(1) var<storage, read_write> x: array<u32>;
@group(0) @binding(2) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let stride = nw.x * ${WG}u;
  for (var j = g.x; j < u.words; j = j + stride) {
    let w = y[j];
    let i = 2u * j;
    x[i] = w << 16u;
    if (i + 1u < u.n) { x[i + 1u] = w & 0xffff0000u; }
  }
}`;

const pipelines = new WeakMap<GPUDevice, { pack: GPUComputePipeline; unpack: GPUComputePipeline }>();

function bf16Pipelines(device: GPUDevice): { pack: GPUComputePipeline; unpack: GPUComputePipeline } {
  let p = pipelines.get(device);
  if (!p) {
    const make = (code: string): GPUComputePipeline =>
      device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
    p = { pack: make(PACK_WGSL), unpack: make(UNPACK_WGSL) };
    pipelines.set(device, p);
  }
  return p;
}

/**
 * Work to run right after tfjs's next submit of its command encoder (one queue per backend, run in order). An upload
 * records its copies out of the bucket's MAP_WRITE buffer into tfjs's encoder, and the buffer may be mapped again only
 * once they are submitted; submitting at once cost one more submit per bucket (femto on 2 GPUs: 18 per step, each
 * ~0.1-0.25 ms of main-thread time on the H200; submitQueue's self time 4.7 ms per step on 1 GPU, 9.5 on 2,
 * gpu_dist_profile.sh). The next submit comes soon anyway: the next bucket's readback, tfjs's own every
 * WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE dispatches, or the next upload of this bucket, which submits first if none did.
 */
const afterSubmit = new WeakMap<WebGPUBackendInternals, (() => void)[]>();
function onNextSubmit(be: WebGPUBackendInternals, fn: () => void): void {
  let queue = afterSubmit.get(be);
  if (!queue) {
    const q: (() => void)[] = [];
    queue = q;
    afterSubmit.set(be, q);
    const submit = be.submitQueue;
    be.submitQueue = function (this: WebGPUBackendInternals): void {
      submit.call(this);
      for (const f of q.splice(0)) f();
    };
  }
  queue.push(fn);
}

/** Host-side milliseconds of the staging, for the profile (memcpy in and out of mapped memory). */
export const stagingClock = { ms: 0 };

/**
 * Where a bucket's host bytes go: `host` itself (a memcpy on the main thread), or, with `file`, the hand-off file at
 * `host`'s byte offset (src/distributed/handoff.ts: the kernel copies on libuv's threads; the communication thread
 * moves them between the file and `host`).
 */
export interface HostSlot {
  host: Float32Array;
  file: HandoffFile | null;
}

/**
 * One bucket's persistent staging: readback(grads) fills the host slot, upload(slot) returns new gradient tensors.
 * A readback must be followed by its upload before the next readback (one exchange at a time per bucket).
 */
export class StagedBucket {
  readonly n: number;
  /** 4-byte words on the host and on the wire: n (float32) or ceil(n/2) (bf16 pairs). */
  readonly words: number;
  private readonly offsets: number[] = [];
  private readonly sizes: number[] = [];
  private readonly read: GPUBuffer;
  private readonly write: GPUBuffer;
  private writeReady: Promise<void>;
  private writeMapped = true;
  /** The last upload's copies wait in tfjs's encoder: the write buffer is mapped again after the next submit. */
  private remapPending = false;
  private readonly own: GPUBuffer[] = [];
  /** A hand-off read or write into a mapped range is running on a libuv thread: the buffers must outlive it. */
  private inflight: Promise<void> | null = null;
  private readonly bf16: { flat: GPUBuffer; packed: GPUBuffer; packGroup: GPUBindGroup; unpackGroup: GPUBindGroup; pack: GPUComputePipeline; unpack: GPUComputePipeline } | null = null;

  constructor(
    private readonly be: WebGPUBackendInternals,
    private readonly shapes: number[][],
    readonly compress: 'none' | 'bf16',
  ) {
    let n = 0;
    for (const s of shapes) {
      const size = s.reduce((a, b) => a * b, 1);
      this.offsets.push(n);
      this.sizes.push(size);
      n += size;
    }
    this.n = n;
    this.words = compress === 'bf16' ? bf16Words(n) : n;
    const bytes = Math.max(4, this.words * 4);
    const d = be.device;
    const U = GPUBufferUsage;
    this.read = this.buffer({ size: bytes, usage: U.MAP_READ | U.COPY_DST });
    this.write = this.buffer({ size: bytes, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
    this.writeReady = Promise.resolve();
    if (compress === 'bf16') {
      const { pack, unpack } = bf16Pipelines(d);
      // one float32 buffer and one packed buffer serve both directions: the GPU runs this bucket's pack, copy-out,
      // copy-in and unpack in queue order, and the next readback is recorded only after this upload
      const flat = this.buffer({ size: Math.max(4, n * 4), usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
      const packed = this.buffer({ size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
      const uni = this.buffer({ size: 16, usage: U.UNIFORM | U.COPY_DST });
      d.queue.writeBuffer(uni, 0, new Uint32Array([n, this.words, 0, 0]));
      const group = (p: GPUComputePipeline, a: GPUBuffer, b: GPUBuffer): GPUBindGroup =>
        d.createBindGroup({ layout: p.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: a } }, { binding: 1, resource: { buffer: b } }, { binding: 2, resource: { buffer: uni } }] });
      this.bf16 = { flat, packed, pack, unpack, packGroup: group(pack, flat, packed), unpackGroup: group(unpack, packed, flat) };
    }
  }

  private buffer(desc: GPUBufferDescriptor): GPUBuffer {
    const b = this.be.device.createBuffer(desc);
    this.own.push(b);
    return b;
  }

  private encoder(): GPUCommandEncoder {
    this.be.ensureCommandEncoderReady();
    this.be.endComputePassEncoder();
    return this.be.commandEncoder!;
  }

  private dispatch(enc: GPUCommandEncoder, p: GPUComputePipeline, g: GPUBindGroup): void {
    const pass = enc.beginComputePass();
    pass.setPipeline(p);
    pass.setBindGroup(0, g);
    pass.dispatchWorkgroups(Math.max(1, Math.min(MAX_GROUPS, Math.ceil(this.words / WG))));
    pass.end();
  }

  /** GPU buffer of float32 data (uploaded first when tfjs still holds it on the host). */
  private bufferOf(dataId: object, bytes: number): GPUBuffer {
    this.be.uploadToGPU(dataId);
    const r = this.be.tensorMap.get(dataId)?.resource;
    if (!(r instanceof GPUBuffer) || r.size < bytes) throw new Error('gradient tensor without a GPU buffer');
    return r;
  }

  /** Copy the gradients (in bucket order) into the slot (this.words floats). Records and submits now. */
  async readback(grads: readonly tf.Tensor[], slot: HostSlot): Promise<void> {
    const srcs = grads.map((g) => this.bufferOf(g.dataId, g.size * 4));
    const enc = this.encoder();
    const dst = this.bf16 ? this.bf16.flat : this.read;
    grads.forEach((g, k) => enc.copyBufferToBuffer(srcs[k], 0, dst, this.offsets[k] * 4, g.size * 4));
    if (this.bf16) {
      this.dispatch(enc, this.bf16.pack, this.bf16.packGroup);
      enc.copyBufferToBuffer(this.bf16.packed, 0, this.read, 0, this.words * 4);
    }
    this.be.submitQueue();
    await this.read.mapAsync(GPUMapMode.READ, 0, this.words * 4);
    const t0 = performance.now();
    try {
      const mapped = this.read.getMappedRange(0, this.words * 4);
      if (slot.file) await this.handoff(slot.file.write(new Uint8Array(mapped), slot.host.byteOffset));
      else slot.host.set(new Float32Array(mapped));
    } finally {
      this.read.unmap();
    }
    if (!slot.file) stagingClock.ms += performance.now() - t0;
  }

  private handoff(p: Promise<void>): Promise<void> {
    const settled = p.then(() => {}, () => {});
    this.inflight = settled;
    void settled.then(() => {
      if (this.inflight === settled) this.inflight = null;
    });
    return p;
  }

  /** The averaged bucket (the slot's this.words floats) as new gradient tensors, one per member, on the GPU. */
  async upload(slot: HostSlot, record: <T>(fn: () => T) => T = (fn) => fn()): Promise<tf.Tensor[]> {
    if (this.remapPending) submitRecorded(this.be); // nothing was submitted since this bucket's last upload
    // (a SubmitHold keeps submits: then that upload's copies are held, and mapping the buffer again would fail)
    if (this.remapPending) throw new Error('a bucket upload is held in an unsubmitted command buffer (src/backend/submit_hold.ts)');
    if (!this.writeMapped) {
      await this.writeReady;
      this.writeMapped = true;
    }
    const t0 = performance.now();
    try {
      const mapped = this.write.getMappedRange(0, this.words * 4);
      if (slot.file) await this.handoff(slot.file.read(new Uint8Array(mapped), slot.host.byteOffset));
      else new Float32Array(mapped).set(slot.host);
    } finally {
      this.write.unmap();
      this.writeMapped = false;
    }
    if (!slot.file) stagingClock.ms += performance.now() - t0;
    return record(() => this.recordUpload());
  }

  /** The copies out of the unmapped MAP_WRITE buffer into new gradient tensors (`upload`'s GPU part). */
  private recordUpload(): tf.Tensor[] {
    // new tensors without values: uploadToGPU just takes a buffer from tfjs's pool for each
    const outs = this.shapes.map((shape) => this.be.makeTensorInfo(shape, 'float32'));
    const dsts = outs.map((info, k) => this.bufferOf(info.dataId, this.sizes[k] * 4));
    const enc = this.encoder();
    let src = this.write;
    if (this.bf16) {
      enc.copyBufferToBuffer(this.write, 0, this.bf16.packed, 0, this.words * 4);
      this.dispatch(enc, this.bf16.unpack, this.bf16.unpackGroup);
      src = this.bf16.flat;
    }
    dsts.forEach((dst, k) => enc.copyBufferToBuffer(src, this.offsets[k] * 4, dst, 0, this.sizes[k] * 4));
    // the staging buffer must be in a submitted command buffer before it is mapped again: after the next submit
    this.remapPending = true;
    onNextSubmit(this.be, () => {
      this.remapPending = false;
      this.writeReady = this.write.mapAsync(GPUMapMode.WRITE, 0, this.words * 4);
      this.writeReady.catch(() => {}); // awaited (and reported) by the next upload
    });
    return outs.map((info) => tf.engine().makeTensorFromTensorInfo(info, tf.backend()));
  }

  dispose(): void {
    // the last upload's copies may still wait in tfjs's encoder: submitted first, they read the buffers before the
    // destroy takes effect (a destroyed buffer in an unsubmitted encoder invalidates the whole command buffer)
    if (this.remapPending) submitRecorded(this.be);
    const own = this.own.splice(0);
    const destroy = (): void => own.forEach((b) => b.destroy());
    // a libuv thread may still copy into or out of a mapped range: destroying the buffer would unmap it under it
    if (this.inflight) void this.inflight.then(destroy);
    else destroy();
  }
}
