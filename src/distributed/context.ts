/**
 * What the training loop needs from distributed training: rank/world, weight broadcast from rank 0, gradient
 * averaging, scalar averaging (metrics). Implemented over the ring all-reduce process group (group.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedParameter } from '../train/optim/base.js';

/** The process-group operations the context uses (see group.ts). */
export interface GroupLike {
  readonly rank: number;
  readonly worldSize: number;
  allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg' }): Promise<Float32Array | void>;
  broadcast(buf: Float32Array, root: number): Promise<Float32Array | void>;
  allreduceScalars(values: readonly number[], op: 'sum' | 'avg'): Promise<number[]>;
  close(): void | Promise<void>;
}

export class DistContext {
  constructor(readonly group: GroupLike) {}

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** Flatten tensors (in the given order) into one host buffer. */
  private static async flatten(tensors: tf.Tensor[]): Promise<Float32Array> {
    const total = tensors.reduce((a, t) => a + t.size, 0);
    const buf = new Float32Array(total);
    const datas = await Promise.all(tensors.map((t) => t.data()));
    let off = 0;
    for (const d of datas) {
      buf.set(d as Float32Array, off);
      off += d.length;
    }
    return buf;
  }

  /** Rank 0's parameter values everywhere (DDP's broadcast at wrap time). */
  async broadcastParams(params: readonly NamedParameter[]): Promise<void> {
    const buf = await DistContext.flatten(params.map((p) => p.variable));
    await this.group.broadcast(buf, 0);
    let off = 0;
    tf.tidy(() => {
      for (const p of params) {
        p.variable.assign(tf.tensor(buf.subarray(off, off + p.variable.size), p.variable.shape, 'float32'));
        off += p.variable.size;
      }
    });
  }

  /**
   * Average gradients over ranks; returns new tensors (the inputs are disposed). The gradients travel as one flat
   * buffer each way: one concat + one readback, one upload + one split on the device (per-tensor readbacks and
   * uploads cost a buffer creation each on webgpu: ~0.25 s per femto step).
   */
  async allreduceGrads(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>): Promise<Map<string, tf.Tensor>> {
    const order = params.filter((p) => grads.has(p.name));
    const tensors = order.map((p) => grads.get(p.name)!);
    const flat = tf.tidy(() => tf.concat(tensors.map((t) => t.reshape([-1]))));
    const buf = new Float32Array((await flat.data()) as Float32Array);
    flat.dispose();
    for (const t of tensors) t.dispose();
    await this.group.allreduce(buf, { op: 'avg' });
    const out = new Map<string, tf.Tensor>();
    tf.tidy(() => {
      const parts = tf.split(tf.tensor1d(buf), tensors.map((t) => t.size));
      order.forEach((p, i) => out.set(p.name, tf.keep(parts[i].reshape(tensors[i].shape))));
    });
    return out;
  }

  /** Sum or average a few numbers over ranks (metrics: timm's reduce_tensor), in float64 and rank order. */
  async allreduceScalars(values: number[], op: 'sum' | 'avg'): Promise<number[]> {
    return this.group.allreduceScalars(values, op);
  }

  async close(): Promise<void> {
    await this.group.close();
  }
}
