/**
 * Keeping a bounded amount of work queued on an asynchronous device.
 *
 * On webgpu, tfjs records kernels and returns at once; nothing waits for the GPU until a value is read back. A loop
 * that never reads could run arbitrarily far ahead of the GPU (its uploads pile up in staging memory, and the first
 * readback then waits for all of it). `InFlight` holds a fence per step and, once more than `max` steps are
 * outstanding, waits for the oldest: the GPU always has the next step queued, and the loop stays at most `max`
 * steps ahead. A fence is `queue.onSubmittedWorkDone()` taken right after the step's work was submitted, so
 * waiting for step k−1 does not wait for step k (a readback would: it is queued behind everything).
 *
 * The cpu and wasm backends compute synchronously and the tensorflow backend runs each op before returning, so
 * their fences are already resolved.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The private parts of tfjs's WebGPUBackend used here (tfjs-backend-webgpu 4.22). */
interface WebGPUInternals {
  queue: GPUQueue;
  commandEncoder: GPUCommandEncoder | null;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

/**
 * Submit what tfjs's webgpu backend has recorded but not submitted yet (it submits every
 * WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE dispatches), ending its open compute pass first as its own flushes do. `backend`:
 * that webgpu backend (default: the active one; a no-op when that is not webgpu). A no-op when nothing is recorded.
 */
export function submitRecorded(backend?: Pick<WebGPUInternals, 'commandEncoder' | 'endComputePassEncoder' | 'submitQueue'>): void {
  if (!backend && tf.getBackend() !== 'webgpu') return;
  const be = backend ?? (tf.backend() as unknown as WebGPUInternals);
  if (be.commandEncoder) {
    be.endComputePassEncoder();
    be.submitQueue();
  }
}

/** A promise that resolves when all device work recorded so far has finished. */
export function deviceFence(): Promise<void> {
  if (tf.getBackend() !== 'webgpu') return Promise.resolve();
  submitRecorded();
  return (tf.backend() as unknown as WebGPUInternals).queue.onSubmittedWorkDone();
}

/** At most `max` steps outstanding on the device (see the file header). */
export class InFlight {
  private readonly fences: Promise<void>[] = [];

  constructor(readonly max = 2) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`InFlight: max must be a positive integer, got ${max}`);
  }

  /** Call after recording a step: fences it, and waits while more than `max` steps are outstanding. */
  async push(): Promise<void> {
    this.fences.push(deviceFence());
    while (this.fences.length > this.max) await this.fences.shift();
  }

  /** Wait for every outstanding step. */
  async drain(): Promise<void> {
    while (this.fences.length) await this.fences.shift();
  }
}

/**
 * Read many small results back in one transfer (timm's `.item()` at log points, once for all the steps since the
 * last read): the tensors, flattened and concatenated in order, as one Float32Array. Disposes them, also on failure.
 *
 * The list is padded with zeros up to a power-of-two count before the concat: a backend that compiles a program per
 * concat signature (webgpu: one shader per number and shape of inputs) then sees a handful of signatures instead of
 * one per distinct count of steps between two reads (a profile of the training loop on webgpu spent more time
 * compiling those concat shaders than in any kernel of its own). The padding is cut off on the host.
 */
export async function readBack(tensors: readonly tf.Tensor[]): Promise<Float32Array> {
  try {
    let n = 0;
    const all = tf.tidy(() => {
      const flat = tensors.map((t) => (t.rank === 1 ? t : t.reshape([-1])));
      n = flat.reduce((a, t) => a + t.size, 0);
      let count = 1;
      while (count < flat.length) count *= 2;
      const pad = flat.length > 1 && count > flat.length ? tf.zeros([flat[flat.length - 1].size], flat[flat.length - 1].dtype) : null;
      while (pad && flat.length < count) flat.push(pad);
      return tf.concat(flat);
    });
    try {
      const v = (await all.data()) as Float32Array;
      return v.length === n ? v : v.subarray(0, n);
    } finally {
      all.dispose();
    }
  } finally {
    for (const t of tensors) t.dispose();
  }
}
