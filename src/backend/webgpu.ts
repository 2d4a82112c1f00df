/**
 * The tfjs WebGPU backend on Dawn (npm package `webgpu`, i.e. dawn.node) for Node.js.
 *
 * Why we do it by hand: @tensorflow/tfjs-backend-webgpu registers its backend factory only when
 * `navigator.gpu` exists at import time, which is never true in Node. So we create the Dawn instance,
 * adapter and device ourselves, construct `WebGPUBackend(device, adapterInfo)` and register it.
 *
 * How dawn.node enumerates adapters (webgpu 0.6.2, read from src/dawn/node/binding/GPU.cpp and checked on
 * the device machine):
 *  - `create(flags)` makes one Dawn instance. `gpu.requestAdapter(options)` asks Dawn for *all* adapters of
 *    ONE backend type (Vulkan on Linux; flag `backend=vulkan|opengl|opengles|null` or env DAWNNODE_BACKEND
 *    overrides), ordered by `powerPreference` (discrete GPUs first for 'high-performance').
 *  - It returns the first adapter whose device name contains the `adapter=<name>` flag (if given). There is
 *    no index-based selection in the API; but when no adapter matches, the promise rejects with a message
 *    that lists every adapter (" * backend: 'vulkan', name: 'NVIDIA H200'"). `listWebGPUAdapters()` uses
 *    exactly that to enumerate, and `initWebGPU({adapterIndex})` selects entry i by passing its name.
 *  - Several identical GPUs (8x "NVIDIA H200") share one name, so only the first of them can be picked by
 *    name: `initWebGPU` then returns ok:false. The process must be given one GPU from outside (a container
 *    exposing one /dev/nvidiaN, e.g. NVIDIA_VISIBLE_DEVICES); CUDA_VISIBLE_DEVICES does NOT work: NVIDIA's
 *    Vulkan driver ignores it (checked on the H200: with CUDA_VISIBLE_DEVICES="" or "1" the GPU is still listed).
 *  - Other backends on the H200 machine: 'opengl'/'opengles' list nothing (no EGL device), 'null' lists a
 *    'Null backend' adapter that executes nothing (useless for tfjs). Mesa's lavapipe (CPU Vulkan driver, via
 *    VK_DRIVER_FILES) works and runs our kernels, slowly: handy for testing without a GPU.
 *
 * Also: tfjs-webgpu's `dataSync()/arraySync()` need OffscreenCanvas and fail in Node: read with `await data()`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { registerWebGPUKernels, unregisterWebGPUKernels } from './kernels/webgpu/index.js';
import { errMessage, firstLine, isUserError } from '../errors.js';
import { settings } from '../settings.js';
import { cachedUniforms, directUploads, installWebGPUHooks, orderBufferPool, removeWebGPUHooks } from './webgpu_hooks.js';

export { bindGroupCacheStats, resetWebGPUPeak, webgpuMemory, type BindGroupCacheStats, type WebGPUMemory } from './webgpu_hooks.js';

export interface InitWebGPUOptions {
  /**
   * Index into the adapter list Dawn enumerates (`listWebGPUAdapters()`, same power preference).
   * Defaults to settings.webgpuAdapter (MAMBAOUT_WEBGPU_ADAPTER); when neither is set Dawn's first adapter is used.
   */
  adapterIndex?: number;
  /** Adapter ordering preference (default 'high-performance'). */
  powerPreference?: 'high-performance' | 'low-power';
  /**
   * Extra dawn.node flags, e.g. 'enable-dawn-features=allow_unsafe_apis' or 'backend=vulkan'.
   * Several enable/disable-dawn-features entries are merged.
   */
  dawnFlags?: string[];
  /** Register our parallel WGSL kernels over tfjs's (default true). */
  fastKernels?: boolean;
}

/** One adapter as dawn.node lists it. */
export interface WebGPUAdapterEntry {
  index: number;
  backend: string;
  name: string;
}

/** What `initWebGPU` found and asked for. */
export interface WebGPUInfo {
  adapter: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    /** The name dawn.node lists (and matches `adapter=` against). */
    name: string;
    backend: string;
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    isFallbackAdapter?: boolean;
  };
  /** Index used (null: Dawn's default choice). */
  adapterIndex: number | null;
  /** Adapters Dawn enumerated for the chosen backend type and power preference. */
  adapters: WebGPUAdapterEntry[];
  adapterFeatures: string[];
  /** Features enabled on the device. */
  deviceFeatures: string[];
  /** Every device limit (after requesting the adapter's maximum for each). */
  limits: Record<string, number>;
  /** Limits that ended above (or, for alignments, below) the WebGPU default: [default, now]. */
  raisedLimits: Record<string, [number, number]>;
  dawnFlags: string[];
}

export type InitWebGPUResult = { ok: true; description: string; info: WebGPUInfo } | { ok: false; reason: string };

type DawnModule = { create: (flags: string[]) => GPU; globals: Record<string, unknown> };

interface WebGPUState {
  gpu: GPU;
  device: GPUDevice;
  backend: WebGPUBackend;
  result: { ok: true; description: string; info: WebGPUInfo };
  createdNavigator: boolean;
  releasing: boolean;
}

let state: WebGPUState | null = null;

/** Features of the adapter that tfjs (or our kernels) can use; requested when present. */
const WANTED_FEATURES = ['timestamp-query', 'shader-f16', 'bgra8unorm-storage', 'subgroups'];

/**
 * WebGPU default limits (spec "Limits" table). Used to report which limits we raised and as the fallback list
 * of names when the adapter's limits object does not enumerate its properties.
 */
const DEFAULT_LIMITS: Record<string, number> = {
  maxTextureDimension1D: 8192,
  maxTextureDimension2D: 8192,
  maxTextureDimension3D: 2048,
  maxTextureArrayLayers: 256,
  maxBindGroups: 4,
  maxBindGroupsPlusVertexBuffers: 24,
  maxBindingsPerBindGroup: 1000,
  maxDynamicUniformBuffersPerPipelineLayout: 8,
  maxDynamicStorageBuffersPerPipelineLayout: 4,
  maxSampledTexturesPerShaderStage: 16,
  maxSamplersPerShaderStage: 16,
  maxStorageBuffersPerShaderStage: 8,
  maxStorageTexturesPerShaderStage: 4,
  maxUniformBuffersPerShaderStage: 12,
  maxUniformBufferBindingSize: 65536,
  maxStorageBufferBindingSize: 134217728,
  minUniformBufferOffsetAlignment: 256,
  minStorageBufferOffsetAlignment: 256,
  maxVertexBuffers: 8,
  maxBufferSize: 268435456,
  maxVertexAttributes: 16,
  maxVertexBufferArrayStride: 2048,
  maxInterStageShaderVariables: 16,
  maxColorAttachments: 8,
  maxColorAttachmentBytesPerSample: 32,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
};

const LIST_SENTINEL = 'mambaout-list-adapters-no-such-name';

async function loadDawn(): Promise<DawnModule> {
  const mod = (await import('webgpu')) as unknown as DawnModule;
  // tfjs reads GPUBufferUsage, GPUMapMode, GPUTextureUsage... as globals.
  const g = globalThis as Record<string, unknown>;
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in g)) g[k] = v;
  }
  return mod;
}

/** Merge several enable-/disable-dawn-features flags (dawn.node keeps only the last of each key). */
export function mergeDawnFlags(flags: string[]): string[] {
  const lists: Record<string, string[]> = {};
  const out: string[] = [];
  for (const f of flags) {
    const eq = f.indexOf('=');
    const key = eq < 0 ? f : f.slice(0, eq);
    if (key === 'enable-dawn-features' || key === 'disable-dawn-features') {
      (lists[key] ??= []).push(...f.slice(eq + 1).split(',').filter((s) => s !== ''));
    } else {
      out.push(f);
    }
  }
  for (const [key, vals] of Object.entries(lists)) out.push(`${key}=${[...new Set(vals)].join(',')}`);
  return out;
}

/** Default flags: precise (unquantized) timestamp queries so tf.time()/profile report real kernel times. */
const DEFAULT_FLAGS = ['disable-dawn-features=timestamp_quantization'];

/** Parse dawn.node's "Available adapters:" list out of a rejection message. */
export function parseAdapterList(message: string): WebGPUAdapterEntry[] {
  const out: WebGPUAdapterEntry[] = [];
  const re = /^\s*\*\s*backend:\s*'([^']*)',\s*name:\s*'(.*)'\s*$/;
  for (const line of message.split('\n')) {
    const m = re.exec(line);
    if (m) out.push({ index: out.length, backend: m[1], name: m[2] });
  }
  return out;
}

async function listWith(dawn: DawnModule, flags: string[], powerPreference: GPUPowerPreference): Promise<WebGPUAdapterEntry[]> {
  // A fresh instance whose `adapter=` flag matches nothing: requestAdapter rejects and lists all adapters.
  let gpu: GPU | null = dawn.create([...flags.filter((f) => !f.startsWith('adapter=')), `adapter=${LIST_SENTINEL}`]);
  try {
    const a = await gpu.requestAdapter({ powerPreference });
    if (a === null) return [];
    const info = a.info;
    return [{ index: 0, backend: '?', name: info.device || info.description }];
  } catch (e) {
    return parseAdapterList(errMessage(e));
  } finally {
    gpu = null; // drop the instance so it can be collected
  }
}

/**
 * Adapters Dawn enumerates (one backend type: Vulkan on Linux unless a `backend=` flag says otherwise), in the
 * order `adapterIndex` refers to. Empty when Dawn finds none (e.g. no GPU / no Vulkan driver).
 */
export async function listWebGPUAdapters(opts: Pick<InitWebGPUOptions, 'powerPreference' | 'dawnFlags'> = {}): Promise<WebGPUAdapterEntry[]> {
  const dawn = await loadDawn();
  return listWith(dawn, mergeDawnFlags([...DEFAULT_FLAGS, ...(opts.dawnFlags ?? [])]), opts.powerPreference ?? 'high-performance');
}

/** Every numeric limit the adapter reports, by name. */
function readLimits(limits: GPUSupportedLimits): Record<string, number> {
  const names = new Set<string>(Object.keys(DEFAULT_LIMITS));
  for (const k in limits) names.add(k);
  for (let p = Object.getPrototypeOf(limits); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const k of Object.getOwnPropertyNames(p)) if (k !== 'constructor') names.add(k);
  }
  const out: Record<string, number> = {};
  const rec = limits as unknown as Record<string, unknown>;
  for (const k of [...names].sort()) {
    const v = rec[k];
    if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  }
  return out;
}

function setNavigatorGpu(gpu: GPU): boolean {
  const g = globalThis as unknown as { navigator?: Record<string, unknown> };
  let created = false;
  if (g.navigator === undefined) {
    Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true, enumerable: false });
    created = true;
  }
  Object.defineProperty(g.navigator as object, 'gpu', { value: gpu, configurable: true, writable: true, enumerable: true });
  return created;
}

function clearNavigatorGpu(createdNavigator: boolean): void {
  const g = globalThis as unknown as { navigator?: Record<string, unknown> };
  if (g.navigator) {
    try {
      delete g.navigator.gpu;
    } catch {
      /* not configurable: nothing we can do */
    }
  }
  if (createdNavigator) delete (globalThis as Record<string, unknown>).navigator;
}

/**
 * Start the tfjs WebGPU backend on Dawn and make it the active backend. Never throws for a missing
 * adapter/driver: returns `{ok: false, reason}`. Calling it again while initialized returns the first result.
 */
export async function initWebGPU(opts: InitWebGPUOptions = {}): Promise<InitWebGPUResult> {
  if (state) {
    if (tf.getBackend() !== 'webgpu') await tf.setBackend('webgpu');
    return state.result;
  }
  const powerPreference = opts.powerPreference ?? 'high-performance';
  const flags = mergeDawnFlags([...DEFAULT_FLAGS, ...settings.dawnFlags, ...(opts.dawnFlags ?? [])]);
  let dawn: DawnModule;
  try {
    dawn = await loadDawn();
  } catch (e) {
    return { ok: false, reason: `could not load Dawn (npm package 'webgpu'): ${firstLine(errMessage(e))}` };
  }

  let adapterIndex = opts.adapterIndex;
  if (adapterIndex === undefined) {
    try {
      adapterIndex = settings.webgpuAdapter;
    } catch (e) {
      if (!isUserError(e)) throw e;
      return { ok: false, reason: e.message }; // MAMBAOUT_WEBGPU_ADAPTER='x' is not a non-negative integer
    }
  }
  if (adapterIndex !== undefined && !(Number.isInteger(adapterIndex) && adapterIndex >= 0)) {
    return { ok: false, reason: `adapter index ${adapterIndex} is not a non-negative integer` };
  }

  let adapters: WebGPUAdapterEntry[] = [];
  try {
    adapters = await listWith(dawn, flags, powerPreference);
  } catch {
    adapters = [];
  }
  const requestFlags = [...flags];
  if (adapterIndex !== undefined) {
    if (adapters.length === 0) return { ok: false, reason: 'Dawn found no WebGPU adapter (no GPU with a Vulkan driver visible to this process)' };
    if (adapterIndex >= adapters.length) {
      return {
        ok: false,
        reason: `adapter index ${adapterIndex} is out of range: Dawn lists ${adapters.length} adapter(s): ` +
          adapters.map((a) => `${a.index}='${a.name}' (${a.backend})`).join(', '),
      };
    }
    const name = adapters[adapterIndex].name;
    // dawn.node takes the FIRST adapter whose name contains the flag value.
    const first = adapters.findIndex((a) => a.name.includes(name));
    if (first !== adapterIndex) {
      return {
        ok: false,
        reason: `adapter index ${adapterIndex} ('${name}') cannot be selected: dawn.node picks adapters by name and ` +
          `adapter ${first} matches it first; with identical GPUs expose one GPU per process from outside ` +
          `(e.g. a container with NVIDIA_VISIBLE_DEVICES=<gpu>; NVIDIA's Vulkan driver ignores CUDA_VISIBLE_DEVICES) ` +
          `and use adapter index 0`,
      };
    }
    requestFlags.push(`adapter=${name}`);
  }

  let gpu: GPU;
  let adapter: GPUAdapter | null;
  try {
    gpu = dawn.create(requestFlags);
    adapter = await gpu.requestAdapter({ powerPreference });
  } catch (e) {
    return { ok: false, reason: `Dawn could not provide an adapter: ${firstLine(errMessage(e))}` };
  }
  if (adapter === null) {
    return { ok: false, reason: 'Dawn found no WebGPU adapter (no GPU with a Vulkan driver visible to this process)' };
  }

  // Device: every limit at the adapter's value, and the useful optional features.
  const adapterLimits = readLimits(adapter.limits);
  const adapterFeatures = [...adapter.features].map(String).sort();
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter!.features.has(f)) as GPUFeatureName[];
  let device: GPUDevice | null = null;
  let lastError = '';
  const attempts: Record<string, number>[] = [
    adapterLimits,
    Object.fromEntries(Object.entries(adapterLimits).filter(([k]) => k in DEFAULT_LIMITS)),
    {},
  ];
  for (const requiredLimits of attempts) {
    try {
      device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'mambaout' });
      break;
    } catch (e) {
      lastError = firstLine(errMessage(e));
    }
  }
  if (device === null) return { ok: false, reason: `requestDevice failed: ${lastError}` };

  const info = adapter.info;
  // Without an `adapter=` flag Dawn returns the first listed adapter. (info.device is a sanitized id such as
  // 'llvmpipe-llvm-15-0-6-256-bits-'; the listing has the readable name.)
  const entry: WebGPUAdapterEntry | undefined = adapters[adapterIndex ?? 0];
  const backendName = entry?.backend ?? 'vulkan';
  const limits = readLimits(device.limits);
  const raisedLimits: Record<string, [number, number]> = {};
  for (const [k, v] of Object.entries(limits)) {
    const d = DEFAULT_LIMITS[k];
    if (d !== undefined && v !== d) raisedLimits[k] = [d, v];
  }
  const extra = info as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number; isFallbackAdapter?: boolean };
  const webgpuInfo: WebGPUInfo = {
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      name: entry?.name ?? info.device,
      backend: backendName,
      subgroupMinSize: extra.subgroupMinSize,
      subgroupMaxSize: extra.subgroupMaxSize,
      isFallbackAdapter: extra.isFallbackAdapter,
    },
    adapterIndex: adapterIndex ?? null,
    adapters,
    adapterFeatures,
    deviceFeatures: [...device.features].map(String).sort(),
    limits,
    raisedLimits,
    dawnFlags: requestFlags,
  };

  // Memory accounting and the bind-group cache (./webgpu_hooks.ts), before tfjs creates any buffer.
  installWebGPUHooks(device);
  const createdNavigator = setNavigatorGpu(gpu);
  let backend: WebGPUBackend;
  try {
    backend = new WebGPUBackend(device, info);
  } catch (e) {
    removeWebGPUHooks();
    device.destroy();
    clearNavigatorGpu(createdNavigator);
    return { ok: false, reason: `tfjs WebGPUBackend failed: ${firstLine(errMessage(e))}` };
  }
  orderBufferPool(backend);
  directUploads(backend);
  cachedUniforms(backend);
  const description = `webgpu (${entry?.name || info.device || info.description || info.vendor}, ${backendName}` +
    (adapterIndex !== undefined ? `, adapter ${adapterIndex}` : '') + ')';
  const st: WebGPUState = {
    gpu,
    device,
    backend,
    result: { ok: true, description, info: webgpuInfo },
    createdNavigator,
    releasing: false,
  };

  device.lost.then((lost) => {
    if (!st.releasing) console.error(`[webgpu] device lost (${lost.reason}): ${lost.message}`);
  }, () => undefined);
  const reported = new Set<string>();
  device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
    const msg = ev.error.message;
    if (reported.size < 20 && !reported.has(msg)) {
      reported.add(msg);
      console.error(`[webgpu] ${msg}`);
    }
  };

  if (tf.findBackend('webgpu') !== null || tf.engine().registryFactory['webgpu'] !== undefined) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => backend, 3);
  if (opts.fastKernels ?? true) registerWebGPUKernels();
  let ok = false;
  try {
    ok = await tf.setBackend('webgpu');
  } catch (e) {
    lastError = firstLine(errMessage(e));
  }
  if (!ok) {
    state = st;
    releaseWebGPU();
    return { ok: false, reason: `tf.setBackend('webgpu') failed${lastError ? `: ${lastError}` : ''}` };
  }
  await tf.ready();
  state = st;
  return st.result;
}

/** The running backend's device (null before `initWebGPU` or after `releaseWebGPU`). */
export function webgpuDevice(): GPUDevice | null {
  return state?.device ?? null;
}

/** The result of the successful `initWebGPU`, or null. */
export function webgpuInfo(): WebGPUInfo | null {
  return state?.result.info ?? null;
}

/**
 * Destroy the device and drop every Dawn reference (tfjs backend, navigator.gpu, our state) so a Node
 * process can exit. Tensors on the webgpu backend become invalid; when it was the active backend, tfjs is
 * switched to 'cpu'. Our kernels are unregistered (tfjs's originals restored).
 */
export function releaseWebGPU(): void {
  const st = state;
  if (!st) return;
  st.releasing = true;
  state = null;
  const wasActive = tf.getBackend() === 'webgpu';
  unregisterWebGPUKernels();
  try {
    // Disposes the backend (its buffer pools, query set) when tfjs instantiated it.
    if (tf.engine().registryFactory['webgpu'] !== undefined) tf.removeBackend('webgpu');
  } catch {
    /* already removed */
  }
  try {
    st.backend.dispose();
  } catch {
    /* already disposed */
  }
  try {
    st.device.onuncapturederror = null;
    st.device.destroy();
  } catch {
    /* already destroyed */
  }
  removeWebGPUHooks();
  clearNavigatorGpu(st.createdNavigator);
  if (wasActive && tf.findBackend('cpu') !== null) void tf.setBackend('cpu');
}
