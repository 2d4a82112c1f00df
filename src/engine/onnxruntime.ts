/**
 * CPU inference through onnxruntime-node (an optional dependency, loaded lazily).
 *
 * The model is the ONNX graph from src/export/onnx.ts. Its input is NCHW [N,3,H,W] by default or NHWC [N,H,W,3]
 * when exported with layout 'nhwc'; OrtClassifier reads the layout from the session's input metadata and
 * transposes in JS when the caller's layout differs (about 1 ms per 224 px image against ~16 ms of inference;
 * scripts/bench_cpu.ts measured no difference between the JS transpose and a Transpose node in the graph).
 *
 * Large batches are run in chunks of `maxBatch` images (default 8): onnxruntime's per-image throughput on
 * mambaout_femto peaks at batch 4-8 (the stage-0 activations of bigger batches spill out of the caches) and the
 * memory arena stays small.
 */
import { availableParallelism } from 'node:os';
import { readFile, stat } from 'node:fs/promises';
// onnxruntime-node 1.16 re-exports onnxruntime-common's API but ships no typings of its own.
import type * as Ort from 'onnxruntime-common';
import { UserError, errMessage, firstLine } from '../errors.js';
import type { TensorMap } from '../checkpoint/types.js';
import { buildOnnxModel, type OnnxExportOptions, type OnnxModelConfig } from '../export/onnx.js';
import { readProtoFields } from '../export/onnx_proto.js';
import { checkBatchArgs, type InferenceEngine } from './index.js';

type OrtModule = typeof Ort;

let ortPromise: Promise<OrtModule> | null = null;

/** What fixes a missing engine: the version range of our dependency (1.16.x: nothing downloaded at install). */
export const ORT_INSTALL_COMMAND = 'npm install onnxruntime-node@~1.16.3';

let fallbackNoticeGiven = false;

/**
 * The one warning a process prints when `--engine auto` falls back to tfjs because onnxruntime-node did not load
 * (null after the first call): what happened, what it costs, the command that fixes it.
 */
export function ortFallbackNotice(e: unknown): string | null {
  if (fallbackNoticeGiven) return null;
  fallbackNoticeGiven = true;
  return `${errMessage(e)}; until then inference runs on tfjs (about 10x slower on CPU)`;
}

/**
 * Import onnxruntime-node on first use. A missing package or a native binary that fails to load (unsupported
 * platform, missing libstdc++) becomes one UserError.
 */
export function loadOnnxRuntime(): Promise<OrtModule> {
  if (!ortPromise) {
    ortPromise = import('onnxruntime-node').then(
      (m) => {
        // The ESM wrapper of this CommonJS package exposes the API both as named exports and as `default`.
        const mod = ((m as unknown as { default?: OrtModule }).default ?? m) as OrtModule;
        if (!mod.InferenceSession) throw new Error('onnxruntime-node has no InferenceSession export');
        mod.env.logLevel = 'error';
        return mod;
      },
      (e: unknown) => {
        ortPromise = null;
        const why = firstLine(errMessage(e));
        const missing = (e as NodeJS.ErrnoException)?.code === 'ERR_MODULE_NOT_FOUND' || /Cannot find (module|package)/.test(why);
        throw new UserError(
          missing
            ? `onnxruntime-node is not installed; \`${ORT_INSTALL_COMMAND}\` installs it (or pass --engine tfjs)`
            : `onnxruntime-node could not be loaded (${why}); \`${ORT_INSTALL_COMMAND}\` reinstalls it, or pass --engine tfjs`,
        );
      },
    );
  }
  return ortPromise;
}

export interface OrtSessionOptions {
  /** Intra-op threads; default: the number of cores (os.availableParallelism()). */
  threads?: number;
  /**
   * Let idle intra-op threads spin-wait for the next op (onnxruntime's default, true). Turn it off when other
   * CPU work (image decoding workers) shares the cores with inference.
   */
  spinning?: boolean;
}

/** Default thread count: one per core. */
export function defaultOrtThreads(): number {
  return Math.max(1, availableParallelism());
}

/**
 * An onnxruntime InferenceSession on the CPU execution provider with all graph optimizations, sequential
 * execution, and `threads` intra-op threads. `model` is the serialized ModelProto or a path to a .onnx file.
 */
export async function createOrtSession(model: Uint8Array | string, opts: OrtSessionOptions = {}): Promise<Ort.InferenceSession> {
  const ort = await loadOnnxRuntime();
  const threads = opts.threads ?? defaultOrtThreads();
  if (!Number.isInteger(threads) || threads < 1) throw new UserError(`Thread count must be a positive integer (got ${threads}).`);
  const options: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    // No memory-pattern planning: with it, the first TWO runs at every new input shape are slow (the first
    // allocates from the arena and records the pattern, the second allocates the planned block: fresh pages), without
    // it only the first. femto, batch 8, 224 px, 2 threads, CPU ms per run (2026-11-30, 2-core box, 2 runs each):
    // pattern on 502, 491, then 264-281; off 501, 271, then 271-277. Steady state, two sessions alternated in one
    // process, 60 runs each, 3 processes: 268.7/301.8/311.3 (on) vs 271.9/298.4/309.5 (off) ms, i.e. no difference.
    // The arena (enableCpuMemArena) stays: without it every run costs ~2x (540-570 ms, 60-100 ms of it page faults).
    enableMemPattern: false,
  };
  if (opts.spinning === false) options.extra = { session: { intra_op: { allow_spinning: '0' } } };
  if (typeof model === 'string') {
    const st = await stat(model).catch(() => null);
    if (!st || !st.isFile()) throw new UserError(`ONNX model file not found: ${model}`);
  }
  try {
    return typeof model === 'string'
      ? await ort.InferenceSession.create(model, options)
      : await ort.InferenceSession.create(model, options);
  } catch (e) {
    const why = firstLine(errMessage(e));
    const what = typeof model === 'string' ? model : `an in-memory model of ${model.byteLength} bytes`;
    throw new UserError(`onnxruntime could not load ${what} (${why}); is it an ONNX model exported by mambaout?`);
  }
}

export type ImageLayout = 'nchw' | 'nhwc';

export interface OrtClassifierOptions extends OrtSessionOptions {
  /** Largest batch handed to onnxruntime at once; bigger batches run in chunks (default 8). */
  maxBatch?: number;
  /** Model label for describe(), e.g. 'mambaout_femto'. */
  label?: string;
}

/** NCHW <-> NHWC for 3-channel (or any C) image batches. */
export function nhwcToNchw(src: Float32Array, n: number, h: number, w: number, c = 3): Float32Array {
  const out = new Float32Array(src.length);
  const hw = h * w;
  for (let b = 0; b < n; b++) {
    const base = b * hw * c;
    for (let ch = 0; ch < c; ch++) {
      const o = base + ch * hw;
      for (let p = 0, s = base + ch; p < hw; p++, s += c) out[o + p] = src[s];
    }
  }
  return out;
}

export function nchwToNhwc(src: Float32Array, n: number, h: number, w: number, c = 3): Float32Array {
  const out = new Float32Array(src.length);
  const hw = h * w;
  for (let b = 0; b < n; b++) {
    const base = b * hw * c;
    for (let ch = 0; ch < c; ch++) {
      const s0 = base + ch * hw;
      for (let p = 0, o = base + ch; p < hw; p++, o += c) out[o] = src[s0 + p];
    }
  }
  return out;
}

/** An image classifier running an exported MambaOut graph in onnxruntime; also an InferenceEngine (NHWC input). */
export class OrtClassifier implements InferenceEngine {
  readonly name = 'onnxruntime';
  /**
   * No warm-up forward (validate.ts): the graph is prepared when the session is created, and the first run at the
   * shape the loop uses costs the same whether or not a run at another shape came before. femto, first run at batch
   * 8, 2 threads: 474/467/453 ms CPU after a 2-image warm-up run, 495/496/497 without; the warm-up itself cost 101 ms
   * (2026-11-30, 2-core box). Warming at the loop's own shape would only move that first-run cost earlier.
   */
  readonly warmUp = false;
  private disposed = false;
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly ort: OrtModule,
    private readonly session: Ort.InferenceSession,
    /** Layout of the graph input. */
    readonly inputLayout: ImageLayout,
    readonly threads: number,
    readonly maxBatch: number,
    readonly label: string,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  /** Load a serialized model (bytes or .onnx path). */
  static async create(model: Uint8Array | string, opts: OrtClassifierOptions = {}): Promise<OrtClassifier> {
    const ort = await loadOnnxRuntime();
    const threads = opts.threads ?? defaultOrtThreads();
    const maxBatch = opts.maxBatch ?? 8;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new UserError(`maxBatch must be a positive integer (got ${maxBatch}).`);
    const session = await createOrtSession(model, { threads, spinning: opts.spinning });
    const layout = inputLayoutOf(typeof model === 'string' ? new Uint8Array(await readFile(model)) : model);
    const inputName = session.inputNames[0];
    const outputName = session.outputNames.includes('logits') ? 'logits' : session.outputNames[0];
    const label = opts.label ?? (typeof model === 'string' ? model : 'onnx model');
    return new OrtClassifier(ort, session, layout, threads, maxBatch, label, inputName, outputName);
  }

  /**
   * Export a PyTorch-layout state dict to ONNX in memory and load it. The graph input defaults to NHWC (what the
   * data pipeline and infer() pass; the Transpose then runs inside onnxruntime instead of in JS).
   */
  static async fromStateDict(
    config: OnnxModelConfig,
    stateDict: TensorMap,
    opts: OrtClassifierOptions & { export?: OnnxExportOptions } = {},
  ): Promise<OrtClassifier> {
    const bytes = buildOnnxModel(config, stateDict, { layout: 'nhwc', ...opts.export });
    return OrtClassifier.create(bytes, opts);
  }

  describe(): string {
    return `onnxruntime-node ${this.ort.env.versions?.node ?? ''} (cpu, ${this.threads} thread${this.threads === 1 ? '' : 's'}, ` +
      `batch chunks of ${this.maxBatch}) model ${this.label}`;
  }

  /** Logits [n, numClasses] for NCHW images [n, 3, h, w]. */
  run(batchNCHW: Float32Array, n: number, h: number, w: number): Promise<Float32Array> {
    return this.runLayout(batchNCHW, 'nchw', n, h, w);
  }

  /** Logits [n, numClasses] for NHWC images [n, h, w, 3]. */
  runNHWC(batchNHWC: Float32Array, n: number, h: number, w: number): Promise<Float32Array> {
    return this.runLayout(batchNHWC, 'nhwc', n, h, w);
  }

  /** InferenceEngine entry point (the data pipeline's NHWC images). */
  infer(batchNHWC: Float32Array, n: number, h: number, w: number): Promise<Float32Array> {
    return this.runNHWC(batchNHWC, n, h, w);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // Release after any queued run has finished.
    void this.tail.then(() => this.session.release()).catch(() => undefined);
  }

  /**
   * Runs are serialized: two concurrent session runs would each start `threads` workers and oversubscribe the
   * cores (callers may overlap infer() with data loading freely).
   */
  private runLayout(batch: Float32Array, layout: ImageLayout, n: number, h: number, w: number): Promise<Float32Array> {
    if (this.disposed) return Promise.reject(new Error('OrtClassifier used after dispose()'));
    try {
      checkBatchArgs(batch, n, h, w);
    } catch (e) {
      return Promise.reject(e);
    }
    const next = this.tail.then(() => this.runNow(batch, layout, n, h, w));
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async runNow(batch: Float32Array, layout: ImageLayout, n: number, h: number, w: number): Promise<Float32Array> {
    const per = 3 * h * w;
    let out: Float32Array | null = null;
    let numClasses = 0;
    for (let start = 0; start < n; start += this.maxBatch) {
      const m = Math.min(this.maxBatch, n - start);
      let chunk = batch.subarray(start * per, (start + m) * per);
      if (layout !== this.inputLayout) chunk = layout === 'nhwc' ? nhwcToNchw(chunk, m, h, w) : nchwToNhwc(chunk, m, h, w);
      const dims = this.inputLayout === 'nchw' ? [m, 3, h, w] : [m, h, w, 3];
      const feeds = { [this.inputName]: new this.ort.Tensor('float32', chunk, dims) };
      const result = await this.session.run(feeds);
      const logits = result[this.outputName];
      const data = logits.data as Float32Array;
      if (m === n) return data;
      if (!out) {
        numClasses = data.length / m;
        out = new Float32Array(n * numClasses);
      }
      out.set(data, start * numClasses);
    }
    return out!;
  }
}

/**
 * 'nhwc' when the model's first graph input is declared [N,H,W,3], else 'nchw' (the exporter's default). Read from
 * the ModelProto itself (onnxruntime-node 1.16 has no input-metadata API); bytes that are not a readable model give
 * 'nchw' (onnxruntime has already accepted them, so this is only about the declared shape).
 */
export function inputLayoutOf(model: Uint8Array): ImageLayout {
  try {
    const sub = (b: Uint8Array | bigint | undefined): Map<number, (Uint8Array | bigint)[]> =>
      b instanceof Uint8Array ? readProtoFields(b) : new Map();
    // ModelProto.graph (7) -> GraphProto.input (11) -> ValueInfoProto.type (2) -> TypeProto.tensor_type (1)
    // -> shape (2) -> dim (1) -> Dimension.dim_value (1)
    const input = sub(sub(readProtoFields(model).get(7)?.[0]).get(11)?.[0]);
    const shape = sub(sub(sub(input.get(2)?.[0]).get(1)?.[0]).get(2)?.[0]);
    const dims = (shape.get(1) ?? []).map((d) => sub(d).get(1)?.[0]);
    if (dims.length === 4 && dims[3] === 3n && dims[1] !== 3n) return 'nhwc';
  } catch {
    // not a model we can read: keep the default
  }
  return 'nchw';
}
