/**
 * Every environment variable mambaout reads, in one documented object (as transformers.js's `env`): each setting
 * names its variable and its default. Code reads `settings.<name>`; no other file reads a MAMBAOUT_* variable.
 *
 *   import { settings } from 'mambaout';
 *   settings.home = '/data/weights';      // same as MAMBAOUT_HOME=/data/weights
 *
 * A setting is read from the environment each time it is asked for, and assigning one writes its variable: worker
 * threads and child processes copy the environment when they start, so a value set here (e.g. by
 * `--max-image-pixels`) reaches them, and a test can change a variable between runs.
 *
 * A variable whose value does not parse is the user's to fix: reading the setting throws a UserError naming the
 * variable and the value (one sentence, exit 2). Unset or blank means the default.
 *
 * | setting          | variable                    | default                                  |
 * |------------------|-----------------------------|------------------------------------------|
 * | backend          | MAMBAOUT_BACKEND            | 'auto'                                   |
 * | webgpuAdapter    | MAMBAOUT_WEBGPU_ADAPTER     | undefined (Dawn's first adapter)         |
 * | webgpuFused      | MAMBAOUT_WEBGPU_FUSED       | true (0 turns the fused kernels off)     |
 * | webgpuKernels    | MAMBAOUT_WEBGPU_KERNELS     | 'current' (v1: the first WebGPU kernels) |
 * | webgpuOff        | MAMBAOUT_WEBGPU_OFF         | [] (kernel features switched off)        |
 * | webgpuAmp        | MAMBAOUT_WEBGPU_AMP         | false (1: bf16 activations, as --amp)    |
 * | dawnFlags        | MAMBAOUT_DAWN_FLAGS         | [] (extra dawn.node flags, space-separated) |
 * | gemmRules        | MAMBAOUT_GEMM_RULES         | 'current' (phase1: the first tile rules) |
 * | noShrinkOnLoad   | MAMBAOUT_NO_SHRINK_ON_LOAD  | false (1: timm's training pixels)        |
 * | regionDecode     | MAMBAOUT_REGION_DECODE      | 'on' (off: whole JPEG decodes; poison)   |
 * | home             | MAMBAOUT_HOME               | ~/.cache/mambaout                        |
 * | maxImagePixels   | MAMBAOUT_MAX_IMAGE_PIXELS   | undefined (src/limits.ts: 178,956,970)   |
 * | distTransport    | MAMBAOUT_DIST_TRANSPORT     | 'auto'                                   |
 * | distCompress     | MAMBAOUT_DIST_COMPRESS      | 'none' (bf16: bfloat16 gradient buckets) |
 * | distTransfer     | MAMBAOUT_DIST_TRANSFER      | 'auto' (staged on webgpu, else tfjs)     |
 * | distHandoff      | MAMBAOUT_DIST_HANDOFF       | 'auto' (memcpy: main-thread copies)      |
 * | distHold         | MAMBAOUT_DIST_HOLD          | 'auto' (off: await every exchange)       |
 * | stepReplay       | MAMBAOUT_STEP_REPLAY        | 'auto' (one process; on: ranks too; off) |
 * | distThreads      | MAMBAOUT_DIST_THREADS       | 'auto' (4 from 16 MiB of gradients)      |
 * | distBucketMb     | MAMBAOUT_DIST_BUCKET_MB     | 2                                        |
 * | distShmDir       | MAMBAOUT_DIST_SHM_DIR       | '/dev/shm' ('' or 'none': sockets only)  |
 * | distNoSimd       | MAMBAOUT_DIST_NO_SIMD       | false (1: scalar float32 sums)           |
 * | debug            | MAMBAOUT_DEBUG              | false (any value: stack traces)          |
 * | gpuTests         | MAMBAOUT_GPU_TESTS          | false (1: run test/webgpu.test.ts)       |
 * | installTest      | MAMBAOUT_INSTALL_TEST       | false (1: the npm-install test)          |
 * | installNode      | MAMBAOUT_INSTALL_NODE       | this node binary                         |
 *
 * This module sits at the bottom of the import graph (docs/ARCHITECTURE.md): it imports nothing of ours but errors.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UserError } from './errors.js';

/** The environment variable behind each setting. */
export const SETTING_VARIABLES = {
  backend: 'MAMBAOUT_BACKEND',
  webgpuAdapter: 'MAMBAOUT_WEBGPU_ADAPTER',
  webgpuFused: 'MAMBAOUT_WEBGPU_FUSED',
  webgpuKernels: 'MAMBAOUT_WEBGPU_KERNELS',
  webgpuOff: 'MAMBAOUT_WEBGPU_OFF',
  webgpuAmp: 'MAMBAOUT_WEBGPU_AMP',
  dawnFlags: 'MAMBAOUT_DAWN_FLAGS',
  gemmRules: 'MAMBAOUT_GEMM_RULES',
  noShrinkOnLoad: 'MAMBAOUT_NO_SHRINK_ON_LOAD',
  regionDecode: 'MAMBAOUT_REGION_DECODE',
  home: 'MAMBAOUT_HOME',
  maxImagePixels: 'MAMBAOUT_MAX_IMAGE_PIXELS',
  distTransport: 'MAMBAOUT_DIST_TRANSPORT',
  distCompress: 'MAMBAOUT_DIST_COMPRESS',
  distTransfer: 'MAMBAOUT_DIST_TRANSFER',
  distHandoff: 'MAMBAOUT_DIST_HANDOFF',
  distHold: 'MAMBAOUT_DIST_HOLD',
  stepReplay: 'MAMBAOUT_STEP_REPLAY',
  distThreads: 'MAMBAOUT_DIST_THREADS',
  distBucketMb: 'MAMBAOUT_DIST_BUCKET_MB',
  distShmDir: 'MAMBAOUT_DIST_SHM_DIR',
  distNoSimd: 'MAMBAOUT_DIST_NO_SIMD',
  debug: 'MAMBAOUT_DEBUG',
  gpuTests: 'MAMBAOUT_GPU_TESTS',
  installTest: 'MAMBAOUT_INSTALL_TEST',
  installNode: 'MAMBAOUT_INSTALL_NODE',
} as const;

/** Default bucket size (MiB) of the overlapped gradient exchange (see settings.distBucketMb). */
export const DEFAULT_DIST_BUCKET_MB = 2;

export type SettingName = keyof typeof SETTING_VARIABLES;

/** MAMBAOUT_REGION_DECODE: JPEG region decode on, off, or on with the rest of the frame poisoned (tests). */
export type RegionDecodeSetting = 'on' | 'off' | 'poison';

/** The transports a distributed run can be forced to (src/distributed/tcp.ts TransportKind). */
export type DistTransportSetting = 'auto' | 'unix' | 'tcp';

/**
 * The WebGPU kernel features MAMBAOUT_WEBGPU_OFF can switch off by name (the fields of WebGPUKernelSettings in
 * src/backend/kernels/webgpu/settings.ts, which takes its list from here).
 */
export const WEBGPU_FEATURES = ['gemm', 'linearEpilogue', 'layerNormGelu', 'adamMulti', 'convBackpropInput', 'convForward', 'gateConv', 'bindGroupCache', 'directUpload', 'uniformCache', 'poolAffinity', 'gradSlots'] as const;
export type WebGPUFeature = (typeof WEBGPU_FEATURES)[number];

const raw = (name: SettingName): string | undefined => process.env[SETTING_VARIABLES[name]];
/** The value, or undefined when the variable is unset or blank. */
const given = (name: SettingName): string | undefined => {
  const v = raw(name);
  return v === undefined || v.trim() === '' ? undefined : v;
};
const write = (name: SettingName, v: string | number | boolean | undefined): void => {
  if (v === undefined) delete process.env[SETTING_VARIABLES[name]];
  else process.env[SETTING_VARIABLES[name]] = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
};
const bad = (name: SettingName, what: string): UserError => new UserError(`${SETTING_VARIABLES[name]}='${raw(name)}' ${what}`);
/** A whole number >= min, undefined when unset or blank; otherwise a UserError saying `what` it must be. */
const wholeNumber = (name: SettingName, min: number, what: string): number | undefined => {
  const v = given(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw bad(name, what);
  return n;
};
/** One of `allowed` (trimmed), `dflt` when unset or blank; otherwise "<VAR> must be a, b or c, got 'x'." */
const oneOf = <T extends string>(name: SettingName, allowed: readonly T[], dflt: T): T => {
  const v = (raw(name) ?? '').trim();
  if (v === '') return dflt;
  if ((allowed as readonly string[]).includes(v)) return v as T;
  throw new UserError(`${SETTING_VARIABLES[name]} must be ${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}, got '${v}'.`);
};

export const settings = {
  /**
   * tfjs backend when `--backend` is not given: auto, webgpu, tensorflow, wasm or cpu (checked, case-insensitive, by
   * src/backend/index.ts). `MAMBAOUT_BACKEND`, default 'auto'. An empty value is not a backend (an error there).
   */
  get backend(): string {
    return raw('backend') ?? 'auto';
  },
  set backend(v: string) {
    write('backend', v);
  },

  /**
   * Index of the WebGPU adapter to use, in the order Dawn lists them (multi-GPU machines: one worker per GPU; the
   * launcher sets it per worker). `MAMBAOUT_WEBGPU_ADAPTER`, default undefined: Dawn's first adapter.
   */
  get webgpuAdapter(): number | undefined {
    return wholeNumber('webgpuAdapter', 0, 'is not a non-negative integer');
  },
  set webgpuAdapter(v: number | undefined) {
    write('webgpuAdapter', v);
  },

  /**
   * Our fused WebGPU kernels in the model (LayerNorm, gated GELU, Adam); false runs the model op by op.
   * `MAMBAOUT_WEBGPU_FUSED`, default true; the value 0 turns them off.
   */
  get webgpuFused(): boolean {
    return raw('webgpuFused') !== '0';
  },
  set webgpuFused(v: boolean) {
    write('webgpuFused', v);
  },

  /**
   * The kernels of the first WebGPU work (main at 1652563) for old-vs-new comparisons in one GPU run: 'v1' switches
   * off every feature of WEBGPU_FEATURES at once. `MAMBAOUT_WEBGPU_KERNELS`, default 'current' (case-insensitive).
   */
  get webgpuKernels(): 'current' | 'v1' {
    const v = (raw('webgpuKernels') ?? '').trim().toLowerCase();
    if (v === '' || v === 'current') return 'current';
    if (v === 'v1') return 'v1';
    throw bad('webgpuKernels', 'is not v1 or current');
  },
  set webgpuKernels(v: 'current' | 'v1') {
    write('webgpuKernels', v);
  },

  /**
   * WebGPU kernel features switched off by name, comma-separated (WEBGPU_FEATURES, or 'fused' as
   * MAMBAOUT_WEBGPU_FUSED=0), e.g. `gemm,adamMulti`, for A/B runs. `MAMBAOUT_WEBGPU_OFF`, default none.
   */
  get webgpuOff(): Array<WebGPUFeature | 'fused'> {
    const names = (raw('webgpuOff') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const known: readonly string[] = ['fused', ...WEBGPU_FEATURES];
    const unknown = names.find((n) => !known.includes(n));
    if (unknown !== undefined) throw bad('webgpuOff', `names '${unknown}', which is not one of ${known.join(', ')}`);
    return names as Array<WebGPUFeature | 'fused'>;
  },
  set webgpuOff(v: Array<WebGPUFeature | 'fused'>) {
    write('webgpuOff', v.length ? v.join(',') : undefined);
  },

  /**
   * Extra dawn.node flags for every WebGPU device, separated by spaces, e.g.
   * `enable-dawn-features=skip_validation` (for A/B runs of Dawn toggles; src/backend/webgpu.ts merges them with its
   * own; that one was measured on the H200 and did not pay, docs/BENCHMARKS.md). `MAMBAOUT_DAWN_FLAGS`, default none.
   */
  get dawnFlags(): string[] {
    return (raw('dawnFlags') ?? '').split(/\s+/).filter(Boolean);
  },
  set dawnFlags(v: string[]) {
    write('dawnFlags', v.length ? v.join(' ') : undefined);
  },

  /**
   * Store the GatedCNN block's large intermediates as bfloat16 from the start (what --amp turns on; for benchmarks).
   * `MAMBAOUT_WEBGPU_AMP`, default false; the value 1 turns it on.
   */
  get webgpuAmp(): boolean {
    return raw('webgpuAmp') === '1';
  },
  set webgpuAmp(v: boolean) {
    write('webgpuAmp', v);
  },

  /**
   * Which GEMM tile rules decide (src/backend/kernels/webgpu/matmul_tiles.ts): 'current' (tuned on the H200 sweep)
   * or 'phase1' (the first guesses, for A/B runs). `MAMBAOUT_GEMM_RULES`, default 'current'.
   */
  get gemmRules(): 'current' | 'phase1' {
    return oneOf('gemmRules', ['current', 'phase1'], 'current');
  },
  set gemmRules(v: 'current' | 'phase1') {
    write('gemmRules', v);
  },

  /**
   * Turn JPEG shrink-on-load off in the training transform (timm's training pixels exactly; docs/ARCHITECTURE.md).
   * `MAMBAOUT_NO_SHRINK_ON_LOAD`, default false; the value 1 turns shrink-on-load off. Read once per process.
   */
  get noShrinkOnLoad(): boolean {
    return raw('noShrinkOnLoad') === '1';
  },
  set noShrinkOnLoad(v: boolean) {
    write('noShrinkOnLoad', v);
  },

  /**
   * JPEG region decode in the data loader (src/data/jpeg.ts): 'on' decodes only the part of a JPEG the transform reads
   * (the same pixels), 'off' decodes every JPEG whole (A/B runs), 'poison' (tests) also fills the rest of the frame
   * with noise so that a transform reading outside its declared region shows. `MAMBAOUT_REGION_DECODE`, default 'on';
   * read once per thread.
   */
  get regionDecode(): RegionDecodeSetting {
    return oneOf('regionDecode', ['on', 'off', 'poison'], 'on');
  },
  set regionDecode(v: RegionDecodeSetting) {
    write('regionDecode', v);
  },

  /** Folder of the downloaded release weights (`--pretrained`). `MAMBAOUT_HOME`, default ~/.cache/mambaout. */
  get home(): string {
    return raw('home') || join(homedir(), '.cache', 'mambaout');
  },
  set home(v: string) {
    write('home', v);
  },

  /**
   * Images with more pixels than this are refused from their header (src/limits.ts, where the default lives:
   * 2x Pillow's MAX_IMAGE_PIXELS); `--max-image-pixels` sets it. `MAMBAOUT_MAX_IMAGE_PIXELS`, default undefined.
   */
  get maxImagePixels(): number | undefined {
    return wholeNumber('maxImagePixels', 1, 'is not a positive whole number of pixels');
  },
  set maxImagePixels(v: number | undefined) {
    write('maxImagePixels', v);
  },

  /**
   * Transport between the ranks of a distributed run: auto (shared memory between the ranks of one machine, TCP
   * across machines), unix or tcp. `MAMBAOUT_DIST_TRANSPORT`, default 'auto'.
   */
  get distTransport(): DistTransportSetting {
    return oneOf('distTransport', ['auto', 'unix', 'tcp'], 'auto');
  },
  set distTransport(v: DistTransportSetting) {
    write('distTransport', v);
  },

  /**
   * Gradient buckets cross GPU->host, the wire and host->GPU as bfloat16, summed and averaged in bfloat16 (torch
   * DDP's bf16_compress_hook); 'none' keeps float32 (results equal 1 process with the W-fold batch).
   * `MAMBAOUT_DIST_COMPRESS`, default 'none'.
   */
  get distCompress(): 'none' | 'bf16' {
    return oneOf('distCompress', ['none', 'bf16'], 'none');
  },
  set distCompress(v: 'none' | 'bf16') {
    write('distCompress', v);
  },

  /**
   * GPU<->host path of the gradient buckets (src/train/ddp_gpu.ts): staged, tfjs, or auto (staged on webgpu).
   * `MAMBAOUT_DIST_TRANSFER`, default 'auto'.
   */
  get distTransfer(): 'auto' | 'staged' | 'tfjs' {
    return oneOf('distTransfer', ['auto', 'staged', 'tfjs'], 'auto');
  },
  set distTransfer(v: 'auto' | 'staged' | 'tfjs') {
    write('distTransfer', v);
  },

  /**
   * Who copies staged gradient bytes between Dawn's mapped memory and the exchange (src/train/ddp.ts GradHandoff):
   * auto (the kernel on libuv's threads through a /dev/shm file, when communication threads exchange) or memcpy (the
   * main thread). `MAMBAOUT_DIST_HANDOFF`, default 'auto'.
   */
  get distHandoff(): 'auto' | 'memcpy' {
    return oneOf('distHandoff', ['auto', 'memcpy'], 'auto');
  },
  set distHandoff(v: 'auto' | 'memcpy') {
    write('distHandoff', v);
  },

  /**
   * Whether the training loop may issue the next forward pass while the previous gradient exchange still runs (src/
   * train/ddp.ts GradHold): auto (when nothing between two updates needs the exchange done: src/train/loop.ts) or off
   * (await every exchange). `MAMBAOUT_DIST_HOLD`, default 'auto'.
   */
  get distHold(): 'auto' | 'off' {
    return oneOf('distHold', ['auto', 'off'], 'auto');
  },
  set distHold(v: 'auto' | 'off') {
    write('distHold', v);
  },

  /**
   * Whether the training loop captures its forward and backward passes on an epoch's first batch and replays them
   * for the others (src/train/step_replay.ts), where the step allows it (webgpu, no gradient accumulation, no
   * --clip-grad, an optimizer that updates in place): 'auto' in one process (H200, femto, real JPEGs: 2,468 against
   * 2,284 img/s, docs/BENCHMARKS.md "GPU run 9"), not yet for data-parallel ranks (not measured on 2 GPUs); 'on' for
   * ranks too; 'off'. `MAMBAOUT_STEP_REPLAY`, default 'auto'.
   */
  get stepReplay(): 'auto' | 'on' | 'off' {
    return oneOf('stepReplay', ['auto', 'on', 'off'], 'auto');
  },
  set stepReplay(v: 'auto' | 'on' | 'off') {
    write('stepReplay', v);
  },

  /**
   * Communication threads per rank (src/distributed/pool.ts), 0 for the main thread, or 'auto' (4 when the gradients
   * are 16 MiB or more, else the main thread; src/train/ddp.ts). `MAMBAOUT_DIST_THREADS`, default 'auto'.
   */
  get distThreads(): 'auto' | number {
    const t = (raw('distThreads') ?? '').trim();
    if (t === '' || t === 'auto') return 'auto';
    const n = Number(t);
    if (!Number.isInteger(n) || n < 0 || n > 64) throw new UserError(`${SETTING_VARIABLES.distThreads} must be auto or a whole number from 0 to 64, got '${t}'.`);
    return n;
  },
  set distThreads(v: 'auto' | number) {
    write('distThreads', v);
  },

  /**
   * Bucket size in MiB of the overlapped gradient exchange. `MAMBAOUT_DIST_BUCKET_MB`, default 2 (H200 x2, 2026-11-30:
   * 2 MiB gave femto 1.63x and tiny 1.90x on 2 GPUs against 1.41x and 1.82x at 4 MiB, means of 2-4 runs;
   * docs/BENCHMARKS.md).
   */
  get distBucketMb(): number {
    const b = (raw('distBucketMb') ?? '').trim();
    const mb = b === '' ? DEFAULT_DIST_BUCKET_MB : Number(b);
    if (!(mb > 0 && mb <= 1024)) throw new UserError(`${SETTING_VARIABLES.distBucketMb} must be a number of MiB between 0 and 1024, got '${b}'.`);
    return mb;
  },
  set distBucketMb(v: number) {
    write('distBucketMb', v);
  },

  /**
   * Folder of the shared-memory mailboxes between ranks of one machine (used when it exists); '' or 'none' sends
   * everything through sockets. `MAMBAOUT_DIST_SHM_DIR`, default '/dev/shm'.
   */
  get distShmDir(): string {
    return raw('distShmDir') ?? '/dev/shm';
  },
  set distShmDir(v: string) {
    write('distShmDir', v);
  },

  /**
   * Sum gradients with the scalar loop instead of the WebAssembly SIMD kernel (the same bits; for comparisons).
   * `MAMBAOUT_DIST_NO_SIMD`, default false; the value 1 turns SIMD off. Read once, when the kernel is first used.
   */
  get distNoSimd(): boolean {
    return raw('distNoSimd') === '1';
  },
  set distNoSimd(v: boolean) {
    write('distNoSimd', v);
  },

  /** Print the stack trace of an unexpected error (exit 3). `MAMBAOUT_DEBUG`, default false; any value turns it on. */
  get debug(): boolean {
    return Boolean(raw('debug'));
  },
  set debug(v: boolean) {
    write('debug', v ? '1' : undefined);
  },

  /** Test suite: run the WebGPU tests (they need an adapter). `MAMBAOUT_GPU_TESTS`, default false; 1 runs them. */
  get gpuTests(): boolean {
    return raw('gpuTests') === '1';
  },

  /**
   * Test suite: run the npm-install test (packs the package, installs it in a fresh project; CI does).
   * `MAMBAOUT_INSTALL_TEST`, default false; 1 runs it.
   */
  get installTest(): boolean {
    return raw('installTest') === '1';
  },

  /** Test suite: the node binary the install test installs with. `MAMBAOUT_INSTALL_NODE`, default this one. */
  get installNode(): string {
    return raw('installNode') || process.execPath;
  },
};

/**
 * An object of settings-derived fields that is filled by `make` the first time one of its fields is read or written,
 * not at import: a module-level table (the WebGPU kernel switches, the GEMM tuning) then reports a bad variable as
 * a UserError where the command runs (exit 2) instead of failing the import. Later writes change the object only.
 */
export function fromSettingsOnFirstUse<T extends object>(keys: readonly (keyof T)[], make: () => T): T {
  let live: T | undefined;
  const get = (): T => (live ??= make());
  const obj = {} as T;
  for (const k of keys) {
    Object.defineProperty(obj, k, { enumerable: true, get: () => get()[k], set: (v: T[typeof k]) => void (get()[k] = v) });
  }
  return obj;
}
