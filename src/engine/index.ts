/**
 * Inference engines: what validate / predict / demo use to turn a batch of preprocessed images into logits.
 *
 * Two implementations:
 *   - onnxruntime (src/engine/onnxruntime.ts): the model exported to ONNX and run by onnxruntime-node on the CPU;
 *     the default on CPU (about 20x faster than tfjs-wasm for mambaout_femto on 2 cores).
 *   - tfjs (src/engine/tfjs.ts): the tfjs MambaOut model on the active tfjs backend (webgpu, tensorflow, wasm, cpu).
 *
 * Input is what the data pipeline produces: float32 NHWC images, already normalized, row-major
 * [n, h, w, 3]. Output is row-major logits [n, numClasses]. tfjs engines also take a batch that is already a tensor
 * on the device (`forward`, used with the prefetcher of src/data/prefetch.ts) and return logits there.
 */
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';

export interface InferenceEngine {
  /** Short identifier, e.g. 'onnxruntime' or 'tfjs-webgpu'. */
  readonly name: string;
  /** One line for logs: engine, threads/backend, model. */
  describe(): string;
  /** Logits [n, numClasses] (row-major) for a batch of NHWC float32 images [n, h, w, 3]. */
  infer(batchNHWC: Float32Array, n: number, h: number, w: number): Promise<Float32Array>;
  /** tfjs engines: logits [n, numClasses] on the device for normalized images [n, h, w, 3] on the device (no readback). */
  forward?(batch: Tensor4D): Tensor2D;
  /**
   * Whether timm's warm-up forward before the timed loop pays off on this engine (default true: tfjs compiles its
   * kernels/shaders at the first forward of a shape). onnxruntime says false (see OrtClassifier.warmUp).
   */
  readonly warmUp?: boolean;
  /** Free native resources; the engine must not be used afterwards. */
  dispose(): void;
}

export type EngineKind = 'onnxruntime' | 'tfjs';

/** Check the common contract of infer() arguments; throws a RangeError (a programming error, not a user error). */
export function checkBatchArgs(batch: Float32Array, n: number, h: number, w: number, channels = 3): void {
  for (const [k, v] of [['n', n], ['h', h], ['w', w]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new RangeError(`infer: ${k} must be a positive integer (got ${v})`);
  }
  const expected = n * h * w * channels;
  if (batch.length !== expected) {
    throw new RangeError(`infer: batch holds ${batch.length} values, expected n*h*w*${channels} = ${expected}`);
  }
}
