/**
 * SubmitHold: record work on tfjs's webgpu backend now, let the GPU run it only after work recorded later.
 *
 * Why. In data-parallel training the next step's forward pass needs the weights that the last gradient buckets update,
 * and on 2 GPUs those buckets come back from the exchange 5-20 ms after the backward pass was issued (femto, H200 x2,
 * docs/BENCHMARKS.md "GPU run 6"). The main thread sat idle in that time and only then issued the next forward pass,
 * although issuing is what bounds a 2-GPU step (the main thread issues a femto step in 25-55 ms). With a hold the
 * next forward pass is issued during the wait, and its command buffers are submitted right after the optimizer's
 * last update: the GPU executes in submission order, and the optimizer (src/backend/kernels/webgpu/adam_multi.ts)
 * updates parameters and moments in place, so the held forward pass reads the updated weights.
 *
 *   const hold = SubmitHold.start();        // null on other backends
 *   ... record the forward pass ...          // tfjs's submits only finish command buffers and keep them
 *   hold.before(() => optimizer.step(g));   // submitted at once, ahead of everything held
 *   hold.release();                          // the held command buffers go to the queue, in order
 *
 * While held, tfjs's submitQueue finishes its encoder into a kept command buffer and keeps the buffers of disposed
 * tensors that the kept work uses (tfjs releases them at a submit; here at release()). `before` swaps in a fresh
 * encoder and fresh disposal lists, so the work recorded in it is submitted (and its buffers released) on its own.
 * queue.writeBuffer (tfjs's uniforms, src/backend/webgpu_hooks.ts uploads) executes when called, i.e. ahead of held
 * work: it only writes buffers taken from the pool, which are not used by held work (theirs are only released at
 * release()). A read of a tensor while held (tensor.data()) resolves after release(). Nothing may await such a read
 * before releasing.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The fields of tfjs-backend-webgpu 4.22's WebGPUBackend that a submit touches. */
interface Internals {
  device: GPUDevice;
  queue: GPUQueue;
  commandEncoder: GPUCommandEncoder | null;
  dispatchCountInPass: number;
  commandQueueOwnedIds: WeakSet<object>;
  tensorDataPendingDisposal: unknown[];
  uniformPendingDisposal: unknown[];
  stagingPendingDisposal: unknown[];
  endComputePassEncoder(): void;
  submitQueue(): void;
}

type Context = Pick<Internals, 'commandEncoder' | 'dispatchCountInPass' | 'commandQueueOwnedIds' | 'tensorDataPendingDisposal' | 'uniformPendingDisposal' | 'stagingPendingDisposal'>;

function internals(): Internals | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const be = tf.backend() as unknown as Partial<Internals>;
  const ok = be.device && be.queue && typeof be.submitQueue === 'function' && typeof be.endComputePassEncoder === 'function' &&
    Array.isArray(be.tensorDataPendingDisposal) && Array.isArray(be.uniformPendingDisposal) && Array.isArray(be.stagingPendingDisposal) &&
    be.commandQueueOwnedIds instanceof WeakSet && typeof be.dispatchCountInPass === 'number';
  return ok ? (be as Internals) : null;
}

function take(be: Internals): Context {
  be.endComputePassEncoder();
  const c: Context = {
    commandEncoder: be.commandEncoder,
    dispatchCountInPass: be.dispatchCountInPass,
    commandQueueOwnedIds: be.commandQueueOwnedIds,
    tensorDataPendingDisposal: be.tensorDataPendingDisposal,
    uniformPendingDisposal: be.uniformPendingDisposal,
    stagingPendingDisposal: be.stagingPendingDisposal,
  };
  return c;
}

function put(be: Internals, c: Context): void {
  Object.assign(be, c);
}

export class SubmitHold {
  private readonly held: GPUCommandBuffer[] = [];
  /** The instance's own submitQueue (it may wrap tfjs's: src/train/ddp_gpu.ts hooks work after a submit). */
  private submit: () => void;
  private open = true;
  private constructor(private readonly be: Internals) {
    this.submit = be.submitQueue;
    const held = this.held;
    be.submitQueue = function (this: Internals): void {
      if (this.commandEncoder) held.push(this.commandEncoder.finish());
      this.commandEncoder = null;
      this.dispatchCountInPass = 0;
    };
  }

  /** Start holding the active webgpu backend's submits; null when the backend is not webgpu (or not tfjs 4.x's). */
  static start(): SubmitHold | null {
    const be = internals();
    if (!be) return null;
    be.endComputePassEncoder();
    // what was recorded before the hold is not held
    if (be.commandEncoder) be.submitQueue();
    return new SubmitHold(be);
  }

  /** Run `fn` with its own encoder; what it records is submitted before everything held (at the latest when it returns). */
  before<T>(fn: () => T): T {
    if (!this.open) return fn();
    const be = this.be;
    const mine = take(be);
    const hold = be.submitQueue;
    put(be, { commandEncoder: null, dispatchCountInPass: 0, commandQueueOwnedIds: new WeakSet(), tensorDataPendingDisposal: [], uniformPendingDisposal: [], stagingPendingDisposal: [] });
    be.submitQueue = this.submit;
    try {
      return fn();
    } finally {
      be.endComputePassEncoder();
      if (be.commandEncoder) be.submitQueue();
      this.submit = be.submitQueue; // a hook installed by fn wraps the real submit: keep it
      be.submitQueue = hold;
      put(be, mine);
    }
  }

  /** Submit what was held, in order, and end the hold (again: a no-op). */
  release(): void {
    if (!this.open) return;
    this.open = false;
    const be = this.be;
    be.endComputePassEncoder();
    if (be.commandEncoder) this.held.push(be.commandEncoder.finish());
    be.commandEncoder = null;
    be.submitQueue = this.submit;
    // One submit per held command buffer, in order: Dawn records a submit's command buffers into Vulkan before it hands
    // them to the GPU, so one submit of the whole held forward pass (~20 buffers for femto) left the GPU idle for all of
    // that recording; this way the GPU starts on the first buffer while the next ones are recorded (H200 x2: the held
    // pass with one submit was 1.38x against 1.47x without a hold, docs/BENCHMARKS.md "GPU run 6").
    for (const cb of this.held.splice(0)) be.queue.submit([cb]);
    // tfjs's own submit releases the buffers held work used and runs the work hooked to a submit
    be.commandEncoder = be.device.createCommandEncoder();
    be.dispatchCountInPass = 0;
    be.submitQueue();
  }
}
