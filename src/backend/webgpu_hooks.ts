/**
 * Wrappers around the Dawn device and tfjs's backend that tfjs and our kernels share, installed by initWebGPU:
 *
 * 1. Memory accounting. tfjs's `tf.memory()` counts live tensors; what the GPU holds is what Dawn allocated: tfjs's
 *    buffer manager keeps every released buffer in a free pool (keyed by size and usage) and never destroys it, so
 *    the pool grows to the peak of the step and stays. `webgpuMemory()` reports live bytes (createBuffer minus
 *    destroy) and their peak since `resetWebGPUPeak()`; that is the figure to put next to PyTorch's
 *    `torch.cuda.max_memory_allocated()` (which, like our live bytes after warm-up, counts what tensors occupy).
 *
 * 2. A bind-group cache. Every dispatch creates a bind group (31 us each on the H200: 26.5 ms of a 91 ms femto
 *    step's issue time). A bind group is an immutable (layout, buffers, offsets, sizes) tuple, and with fixed shapes
 *    tfjs's buffer pool hands the same buffers to the same dispatches step after step, so an identical tuple returns
 *    the bind group created the first time. Keys use identities (layouts memoised per pipeline, buffers numbered on
 *    first sight); a destroyed buffer never matches again (numbers are not reused). Bounded: cleared when full.
 *    For the tuples to repeat, the buffer pool must hand out the same buffers in the same order every step: tfjs's
 *    pool is a LIFO stack per size, and the order in which a step releases buffers permutes the stacks for the next
 *    step (on lavapipe only ~20% of a mambaout_test step's bind groups repeated). `orderBufferPool` makes the pool
 *    return the oldest free buffer of a size instead: with the same free set at the start of each step (all
 *    temporaries released by tf.tidy) and the same sequence of requests, every step then sees the same buffers.
 *    Where the free set varies (data-parallel training: the exchange returns buffers at moments that vary), a step
 *    marked with `markPoolStep` gets the buffers of the last marked step where they are free (2 ranks on the null
 *    backend: 50 -> 13-15 new bind groups per femto step with the next forward pass held, 9-12 -> 0.1-0.5 awaited).
 *    Switch: webgpuKernelSettings.bindGroupCache (MAMBAOUT_WEBGPU_OFF=bindGroupCache).
 *
 * 3. Uploads without a staging buffer each (`directUploads`). tfjs uploads every tensor made from host values (a
 *    drop-path mask, a scalar, the mixed targets) through a new MAP_WRITE buffer created mapped, copied from and
 *    destroyed (tfjs-backend-webgpu 4.22 acquires staging buffers with reuse = false). On the H200 (Dawn, Vulkan)
 *    that creation cost 340 us per upload: femto's 18 drop-path masks alone took 6.2 ms of a 64 ms model step's
 *    main thread, all uploads 7.8 ms, and 11 ms in the training loop (CPU profile, 2026-11-30, scripts/gpu_profile.sh).
 *    Here a tensor whose storage buffer comes back from tfjs's pool gets its values by `queue.writeBuffer` (Dawn
 *    copies into its own reused staging ring). Safe because writeBuffer runs on the queue before any command buffer
 *    submitted after it, and a pooled buffer is never referenced by commands recorded but not yet submitted: tfjs
 *    defers the release of buffers its encoder uses (commandQueueOwnedIds), and our dispatches register theirs too
 *    (kernels/webgpu/dispatch.ts). A newly created buffer is written while mapped at creation, as tfjs does.
 *    Switch: webgpuKernelSettings.directUpload (MAMBAOUT_WEBGPU_OFF=directUpload).
 *
 * 4. tfjs's uniform blocks from the content cache of kernels/webgpu/uniforms.ts (`cachedUniforms`), as our own
 *    dispatches do: no pooled buffer and writeBuffer per dispatch. Switch: webgpuKernelSettings.uniformCache.
 */
import { webgpuKernelSettings } from './kernels/webgpu/settings.js';
import { cachedUniformBuffer, dropUniformCache, tfjsUniformBytes, type TfjsUniform } from './kernels/webgpu/uniforms.js';

export interface WebGPUMemory {
  /** Bytes in buffers created and not destroyed. */
  liveBytes: number;
  /** Highest liveBytes since the last resetWebGPUPeak (or since init). */
  peakBytes: number;
  buffersCreated: number;
  buffersDestroyed: number;
}

export interface BindGroupCacheStats {
  hits: number;
  misses: number;
  size: number;
}

const MAX_CACHED = 50_000;

interface HookState {
  device: GPUDevice;
  restore: Array<() => void>;
  sizes: WeakMap<GPUBuffer, number>;
  mem: WebGPUMemory;
  ids: WeakMap<object, number>;
  nextId: number;
  layouts: WeakMap<GPUComputePipeline, Map<number, GPUBindGroupLayout>>;
  cache: Map<string, GPUBindGroup>;
  stats: BindGroupCacheStats;
}

let hooks: HookState | null = null;

function idOf(h: HookState, o: object): number {
  let id = h.ids.get(o);
  if (id === undefined) {
    id = h.nextId++;
    h.ids.set(o, id);
  }
  return id;
}

/** Install the wrappers on `device` (once per device; removeWebGPUHooks undoes them). */
/** The buffers each bind group made since the hooks were installed binds (src/backend/step_capture.ts). */
const boundBuffers = new WeakMap<GPUBindGroup, readonly GPUBuffer[]>();
export function bindGroupBuffers(bg: GPUBindGroup): readonly GPUBuffer[] | undefined {
  return boundBuffers.get(bg);
}

export function installWebGPUHooks(device: GPUDevice): void {
  if (hooks?.device === device) return;
  removeWebGPUHooks();
  const h: HookState = {
    device,
    restore: [],
    sizes: new WeakMap(),
    mem: { liveBytes: 0, peakBytes: 0, buffersCreated: 0, buffersDestroyed: 0 },
    ids: new WeakMap(),
    nextId: 1,
    layouts: new WeakMap(),
    cache: new Map(),
    stats: { hits: 0, misses: 0, size: 0 },
  };
  hooks = h;
  const dev = device as unknown as Record<string, unknown>;

  // createBuffer / destroy: on the instance (createBuffer) and on GPUBuffer's prototype (destroy), found from a probe.
  const origCreateBuffer = device.createBuffer.bind(device);
  dev.createBuffer = (desc: GPUBufferDescriptor): GPUBuffer => {
    const b = origCreateBuffer(desc);
    idOf(h, b); // creation order: the pool hands out the oldest first (orderBufferPool)
    h.sizes.set(b, desc.size);
    h.mem.liveBytes += desc.size;
    h.mem.buffersCreated++;
    if (h.mem.liveBytes > h.mem.peakBytes) h.mem.peakBytes = h.mem.liveBytes;
    return b;
  };
  h.restore.push(() => {
    delete dev.createBuffer;
  });
  const probe = origCreateBuffer({ size: 4, usage: GPUBufferUsage.COPY_DST });
  const bufProto = Object.getPrototypeOf(probe) as Record<string, unknown>;
  probe.destroy();
  const origDestroy = bufProto.destroy as (this: GPUBuffer) => void;
  bufProto.destroy = function (this: GPUBuffer): void {
    const size = hooks?.sizes.get(this);
    if (size !== undefined && hooks) {
      hooks.sizes.delete(this);
      hooks.mem.liveBytes -= size;
      hooks.mem.buffersDestroyed++;
    }
    origDestroy.call(this);
  };
  h.restore.push(() => {
    bufProto.destroy = origDestroy;
  });

  // getBindGroupLayout memoised per pipeline (Dawn returns a new wrapper per call), so layouts have stable ids.
  const pipeline = device.createComputePipeline({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code: '@compute @workgroup_size(1) fn main() {}' }), entryPoint: 'main' },
  });
  const pipeProto = Object.getPrototypeOf(pipeline) as Record<string, unknown>;
  const origGetLayout = pipeProto.getBindGroupLayout as (this: GPUComputePipeline, i: number) => GPUBindGroupLayout;
  pipeProto.getBindGroupLayout = function (this: GPUComputePipeline, i: number): GPUBindGroupLayout {
    const st = hooks;
    if (!st) return origGetLayout.call(this, i);
    let m = st.layouts.get(this);
    if (!m) st.layouts.set(this, (m = new Map()));
    let l = m.get(i);
    if (!l) m.set(i, (l = origGetLayout.call(this, i)));
    return l;
  };
  h.restore.push(() => {
    pipeProto.getBindGroupLayout = origGetLayout;
  });

  const origCreateBindGroup = device.createBindGroup.bind(device);
  const create = (desc: GPUBindGroupDescriptor): GPUBindGroup => {
    const bg = origCreateBindGroup(desc);
    const bufs: GPUBuffer[] = [];
    for (const e of desc.entries as GPUBindGroupEntry[]) {
      const r = e.resource as GPUBufferBinding;
      if (r && typeof r === 'object' && 'buffer' in r) bufs.push(r.buffer);
    }
    boundBuffers.set(bg, bufs);
    return bg;
  };
  dev.createBindGroup = (desc: GPUBindGroupDescriptor): GPUBindGroup => {
    if (!webgpuKernelSettings.bindGroupCache) return create(desc);
    let key = `${idOf(h, desc.layout)}`;
    for (const e of desc.entries as GPUBindGroupEntry[]) {
      const r = e.resource as GPUBufferBinding;
      if (!r || typeof r !== 'object' || !('buffer' in r)) return create(desc); // textures, samplers: not cached
      key += `|${e.binding}:${idOf(h, r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}`;
    }
    const hit = h.cache.get(key);
    if (hit) {
      h.stats.hits++;
      return hit;
    }
    h.stats.misses++;
    if (h.cache.size >= MAX_CACHED) h.cache.clear();
    const bg = create(desc);
    h.cache.set(key, bg);
    return bg;
  };
  h.restore.push(() => {
    delete dev.createBindGroup;
  });
}

export function removeWebGPUHooks(): void {
  const h = hooks;
  if (!h) return;
  hooks = null;
  for (const r of h.restore.reverse()) r();
  h.cache.clear();
}

/** Dawn buffer memory (see the file header); zeros before initWebGPU. */
export function webgpuMemory(): WebGPUMemory {
  return hooks ? { ...hooks.mem } : { liveBytes: 0, peakBytes: 0, buffersCreated: 0, buffersDestroyed: 0 };
}

/** Start a new peak measurement at the current live bytes. */
export function resetWebGPUPeak(): void {
  if (hooks) hooks.mem.peakBytes = hooks.mem.liveBytes;
}

export function bindGroupCacheStats(reset = false): BindGroupCacheStats {
  if (!hooks) return { hits: 0, misses: 0, size: 0 };
  const s = { ...hooks.stats, size: hooks.cache.size };
  if (reset) hooks.stats = { hits: 0, misses: 0, size: 0 };
  return s;
}

interface UploadInternals {
  device: GPUDevice;
  bufferManager: { acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer };
  tensorMap: { get(dataId: unknown): { dtype: string; shape: number[]; values: ArrayLike<number> | null; resource: unknown } | undefined };
  uploadToGPU(dataId: unknown): void;
}

/** Values as the 32-bit array tfjs stores on the GPU (int32 and bool as Int32Array, the rest as Float32Array). */
export function gpuWords(dtype: string, values: ArrayLike<number>): Int32Array | Float32Array {
  if (dtype === 'int32' || dtype === 'bool') return values instanceof Int32Array ? values : Int32Array.from(values);
  return values instanceof Float32Array ? values : Float32Array.from(values);
}

/** Replace tfjs's per-tensor staging upload by queue.writeBuffer (see the file header, 3). Undone by removeWebGPUHooks. */
export function directUploads(backend: unknown): void {
  const h = hooks;
  const be = backend as UploadInternals;
  if (!h || typeof be.uploadToGPU !== 'function' || !be.tensorMap || !be.bufferManager || !be.device) return;
  const orig = be.uploadToGPU;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  be.uploadToGPU = function (this: UploadInternals, dataId: unknown): void {
    const d = this.tensorMap.get(dataId);
    if (!webgpuKernelSettings.directUpload || !d || d.resource != null || !d.values || d.dtype === 'string' || d.dtype === 'complex64') {
      orig.call(this, dataId);
      return;
    }
    const words = gpuWords(d.dtype, d.values);
    const size = words.byteLength;
    if (size === 0) {
      orig.call(this, dataId);
      return;
    }
    const buffer = this.bufferManager.acquireBuffer(size, usage, true);
    if (buffer.mapState === 'mapped') {
      new (words.constructor as Int32ArrayConstructor)(buffer.getMappedRange(), 0, words.length).set(words);
      buffer.unmap();
    } else {
      // dawn.node takes views of ArrayBuffers only; values in shared memory are copied first
      const src = (words.buffer instanceof ArrayBuffer ? words : words.slice()) as Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>;
      this.device.queue.writeBuffer(buffer, 0, src);
    }
    d.values = null;
    d.resource = buffer;
  };
  h.restore.push(() => {
    be.uploadToGPU = orig;
  });
}

interface UniformInternals {
  device: GPUDevice;
  makeUniforms(fields: TfjsUniform[]): { offset: number; size: number; buffer: GPUBuffer };
}

/** tfjs's makeUniforms through the content cache (see the file header, 4). Undone by removeWebGPUHooks. */
export function cachedUniforms(backend: unknown): void {
  const h = hooks;
  const be = backend as UniformInternals;
  if (!h || typeof be.makeUniforms !== 'function' || !be.device) return;
  const orig = be.makeUniforms;
  const device = be.device;
  be.makeUniforms = function (this: UniformInternals, fields: TfjsUniform[]) {
    if (!webgpuKernelSettings.uniformCache) return orig.call(this, fields);
    const bytes = tfjsUniformBytes(fields);
    const buffer = cachedUniformBuffer(this.device, bytes);
    return buffer ? { offset: 0, size: bytes.byteLength, buffer } : orig.call(this, fields);
  };
  h.restore.push(() => {
    be.makeUniforms = orig;
    dropUniformCache(device);
  });
}

interface PoolInternals {
  freeBuffers: Map<string, GPUBuffer[]>;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
}

/**
 * Buffer affinity across steps (see `markPoolStep`): per stream of requests, the buffer the n-th request of each
 * pool key got in the last step, and what this step's requests got so far.
 */
interface PoolStream {
  prev: Map<string, GPUBuffer[]>;
  now: Map<string, GPUBuffer[]>;
  count: Map<string, number>;
}
export type PoolStreamName = 'main' | 'exchange';
const STREAMS: Record<PoolStreamName, PoolStream> = {
  main: { prev: new Map(), now: new Map(), count: new Map() },
  exchange: { prev: new Map(), now: new Map(), count: new Map() },
};
let stream: PoolStreamName = 'main';
let affinity = false;
let recorded = 0;
/** Requests remembered per step at most (a caller that stops marking steps does not grow this without bound). */
const MAX_RECORDED = 200_000;

/**
 * A training step starts: from now on the pool prefers, for the n-th request of a size, the buffer the n-th request of
 * that size got in the last marked step, when it is free (else the oldest free one, as before).
 *
 * Why: with every step's requests in the same order and the same buffers free, `orderBufferPool` alone hands out the
 * same buffers every step, and every bind group comes from the cache (1 GPU: no new bind group after the first
 * steps). In data-parallel training the last step's exchange returns buffers to the pool at moments that vary (its
 * completions run between pieces of the next forward pass, src/train/ddp.ts), so the free set differs from step to
 * step, and 2 ranks on Dawn's null backend created 50-80 bind groups per femto step (each ~30 us of main thread on
 * Vulkan: scripts/dawn_call_cost.mjs). The exchange's own requests (uploads) are a separate stream (`withPoolStream`),
 * so that where they fall between the forward pass's requests does not shift its counts.
 */
export function markPoolStep(): void {
  if (!hooks) return;
  affinity = webgpuKernelSettings.poolAffinity;
  recorded = 0;
  for (const st of Object.values(STREAMS)) {
    st.prev = st.now;
    st.now = new Map();
    st.count = new Map();
  }
}

/** Run `fn` with its buffer requests counted in `name`'s stream (see markPoolStep). */
export function withPoolStream<T>(name: PoolStreamName, fn: () => T): T {
  const before = stream;
  stream = name;
  try {
    return fn();
  } finally {
    stream = before;
  }
}

/** Forget the affinity (the hooks are removed). */
function dropAffinity(): void {
  affinity = false;
  for (const st of Object.values(STREAMS)) {
    st.prev = new Map();
    st.now = new Map();
    st.count = new Map();
  }
}

/**
 * Make tfjs's buffer pool (backend.bufferManager) hand out the oldest free buffer of a size (lowest creation number)
 * instead of the most recently released one, or, once steps are marked, the one of the last step (markPoolStep); see
 * the file header. Undone by removeWebGPUHooks.
 */
export function orderBufferPool(backend: unknown): void {
  const h = hooks;
  const pool = (backend as { bufferManager?: PoolInternals }).bufferManager;
  if (!h || !pool || typeof pool.acquireBuffer !== 'function' || !(pool.freeBuffers instanceof Map)) return;
  const orig = pool.acquireBuffer;
  pool.acquireBuffer = function (this: PoolInternals, size: number, usage: number, mappedAtCreation = false, reuse = true): GPUBuffer {
    if (!reuse || !webgpuKernelSettings.bindGroupCache) return orig.call(this, size, usage, mappedAtCreation, reuse);
    const key = `${size}_${usage}`;
    const st = affinity ? STREAMS[stream] : null;
    const n = st ? (st.count.get(key) ?? 0) : 0;
    const list = this.freeBuffers.get(key);
    if (list && list.length > 1) {
      const last = list.length - 1;
      const want = st?.prev.get(key)?.[n];
      let pick = want ? list.lastIndexOf(want) : -1;
      if (pick < 0) {
        pick = last;
        let bestId = idOf(h, list[last]);
        for (let i = 0; i < last; i++) {
          const id = idOf(h, list[i]);
          if (id < bestId) {
            bestId = id;
            pick = i;
          }
        }
      }
      // tfjs pops the last entry: put the chosen one there.
      [list[pick], list[last]] = [list[last], list[pick]];
    }
    const buffer = orig.call(this, size, usage, mappedAtCreation, reuse);
    if (st) {
      st.count.set(key, n + 1);
      if (recorded < MAX_RECORDED) {
        recorded++;
        let got = st.now.get(key);
        if (!got) st.now.set(key, (got = []));
        got[n] = buffer;
      }
    }
    return buffer;
  };
  h.restore.push(() => {
    pool.acquireBuffer = orig;
    dropAffinity();
  });
}
