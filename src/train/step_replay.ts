/**
 * The training loop's forward and backward passes as a replay (src/backend/step_capture.ts): captured on the first
 * batch, replayed for the next ones with each batch copied into the captured input, as torch.cuda.graphs replay a
 * captured step. Why: the loop's main thread also serves the loader and the prefetcher (and on 2 GPUs the exchange),
 * and a femto step costs 23-33 ms of it through tfjs against 6.4-7.9 ms as a replay. On one H200 with real JPEGs and
 * the full recipe the loop went from 2,147-2,371 img/s (mean 2,284) to 2,466-2,470 (timm's loop: 1,436), at its model
 * step's speed (docs/BENCHMARKS.md "GPU run 9", scripts/gpu_replay_loop.sh).
 *
 * A replay repeats the step exactly, so it is only used for steps that are the same every time (the loop decides,
 * src/train/loop.ts, with settings.stepReplay): one micro-batch per update, an optimizer that writes the parameters in
 * place, no clipping of the gradients (which replaces them). Drop-path masks are drawn again by every replay, in the
 * live step's order (drawnTensor), so the weights are those of the live step bit for bit (test/webgpu.test.ts,
 * test/ddp_webgpu.test.ts). A batch of another shape or dtype, or a parameter given a new buffer, makes a new capture.
 *
 * Data-parallel ranks replay through DistributedDataParallel.replayGrads, whose capture leaves the bucket readbacks at
 * their places; one process captures here.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CapturedStep, type CaptureBackend } from '../backend/step_capture.js';
import type { DistributedDataParallel } from './ddp.js';

interface Captured {
  /** null when the DistributedDataParallel holds the capture */
  step: CapturedStep | null;
  value: tf.Scalar;
  grads: tf.NamedTensorMap;
  kept: Set<tf.Tensor>;
  input: tf.Tensor;
  target: tf.Tensor;
  ids: object[];
}

export class StepReplay {
  private cap: Captured | null = null;
  /**
   * Set when the step could not be captured (it calls what a replay cannot repeat, CapturedStep.tryCapture): that
   * step ran live and the caller issues the following ones itself.
   */
  failed: string | null = null;

  private constructor(private readonly dist: DistributedDataParallel | null) {}

  /** A replayer when the backend can capture (webgpu on Dawn) and, for ranks, the exchange is staged; else null. */
  static create(dist: DistributedDataParallel | null): StepReplay | null {
    if (!CapturedStep.available()) return null;
    if (dist && dist.transfer !== 'staged') return null;
    return new StepReplay(dist);
  }

  /** Whether `t` belongs to the capture (the first batch, the gradients): the caller must not dispose it. */
  holds(t: tf.Tensor): boolean {
    const c = this.cap;
    return c !== null && (t === c.input || t === c.target || c.kept.has(t));
  }

  /**
   * The loss and gradients of `lossFn(input, target)`: captured on the first call, replayed after it. The loss is a
   * copy the caller owns; the gradients are the capture's (see holds). `input` and `target` are the caller's to
   * dispose unless held (the captured batch). When the capture fails (`failed`), this step ran live and its loss and
   * gradients are the caller's, as tf.variableGrads' are.
   */
  async grads(
    lossFn: (input: tf.Tensor, target: tf.Tensor) => tf.Scalar,
    vars: readonly tf.Variable[],
    input: tf.Tensor,
    target: tf.Tensor,
  ): Promise<{ value: tf.Scalar; grads: tf.NamedTensorMap }> {
    let c = this.cap;
    if (c && (!sameKind(c.input, input) || !sameKind(c.target, target) || vars.some((v, i) => v.dataId !== c!.ids[i]))) {
      await this.dist?.exchangeDone(); // (the exchange still running holds the captured gradients)
      this.drop();
      c = null;
    }
    if (!c) {
      const loss = (): tf.Scalar => lossFn(input, target);
      let value: tf.Scalar;
      let grads: tf.NamedTensorMap;
      let step: CapturedStep | null = null;
      let unsupported: string | null | undefined;
      if (this.dist) {
        ({ value, grads, unsupported } = await this.dist.replayGrads(loss, vars));
      } else {
        const got = CapturedStep.tryCapture(tf.backend() as unknown as CaptureBackend, () => tf.variableGrads(loss, [...vars]));
        ({ value, grads } = got.result);
        ({ step, unsupported } = got);
      }
      if (unsupported) {
        this.failed = `the step calls ${unsupported}, which a replay cannot repeat`;
        return { value, grads };
      }
      c = this.cap = { step, value, grads, kept: new Set(Object.values(grads)), input, target, ids: vars.map((v) => v.dataId) };
    } else {
      const feed = [[c.input, input], [c.target, target]] as const;
      if (this.dist) await this.dist.replayGrads(() => { throw new Error('StepReplay: replayGrads lost its capture'); }, vars, feed);
      else c.step!.replay(feed);
    }
    return { value: tf.tidy(() => c.value.add(0)) as tf.Scalar, grads: c.grads };
  }

  /** Forget the capture: its buffers go back to tfjs's pool, its tensors are disposed. */
  drop(): void {
    const c = this.cap;
    if (!c) return;
    this.cap = null;
    if (this.dist) this.dist.dropCapture();
    else {
      c.step!.release();
      tf.dispose([c.value, ...Object.values(c.grads)]);
    }
    tf.dispose([c.input, c.target]);
  }
}

function sameKind(a: tf.Tensor, b: tf.Tensor): boolean {
  return a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}
