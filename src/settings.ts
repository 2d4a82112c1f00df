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
 * | home             | MAMBAOUT_HOME               | ~/.cache/mambaout                        |
 * | maxImagePixels   | MAMBAOUT_MAX_IMAGE_PIXELS   | undefined (src/limits.ts: 178,956,970)   |
 * | distTransport    | MAMBAOUT_DIST_TRANSPORT     | 'auto'                                   |
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
  home: 'MAMBAOUT_HOME',
  maxImagePixels: 'MAMBAOUT_MAX_IMAGE_PIXELS',
  distTransport: 'MAMBAOUT_DIST_TRANSPORT',
  distShmDir: 'MAMBAOUT_DIST_SHM_DIR',
  distNoSimd: 'MAMBAOUT_DIST_NO_SIMD',
  debug: 'MAMBAOUT_DEBUG',
  gpuTests: 'MAMBAOUT_GPU_TESTS',
  installTest: 'MAMBAOUT_INSTALL_TEST',
  installNode: 'MAMBAOUT_INSTALL_NODE',
} as const;

export type SettingName = keyof typeof SETTING_VARIABLES;

/** The transports a distributed run can be forced to (src/distributed/tcp.ts TransportKind). */
export type DistTransportSetting = 'auto' | 'unix' | 'tcp';

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
    const v = (raw('distTransport') ?? '').trim();
    if (v === '') return 'auto';
    if (v === 'auto' || v === 'unix' || v === 'tcp') return v;
    throw new UserError(`${SETTING_VARIABLES.distTransport} must be auto, unix or tcp, got '${v}'.`);
  },
  set distTransport(v: DistTransportSetting) {
    write('distTransport', v);
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
