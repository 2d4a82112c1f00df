/**
 * ModelEmaV2 (timm/utils/model_ema.py): an exponential moving average of the model weights.
 * Holds a copy of every tensor (parameters and any buffers passed in); after every optimizer step
 * `update(params)` sets, element-wise in float32,  ema <- d*ema + (1 - d)*p  with a constant decay d
 * (timm default 0.9998): no warmup, no bias correction. Tensors are matched by name (timm matches the
 * state-dict entries by order; the names are the same).
 * The copies are non-trainable Variables in the same layout as the model's Variables; stateDict()
 * returns them as host tensors in that layout (a checkpoint writer converts layouts like the weights).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor, TensorMap } from '../checkpoint/types.js';
import { UserError } from '../errors.js';
import type { NamedParameter } from './optim/base.js';
import { sameShape } from './optim/base.js';

export class ModelEmaV2 {
  readonly decay: number;
  /** The averaged tensors, by name, in the order given at construction. */
  readonly params: NamedParameter[];
  private readonly byName = new Map<string, NamedParameter>();

  constructor(params: readonly NamedParameter[], decay = 0.9998) {
    if (!(decay >= 0 && decay <= 1)) throw new UserError(`Invalid EMA decay ${decay}; it must be in [0, 1].`);
    this.decay = decay;
    this.params = params.map((p) => ({
      name: p.name,
      variable: tf.variable(p.variable, false, undefined, p.variable.dtype),
    }));
    for (const p of this.params) {
      if (this.byName.has(p.name)) throw new Error(`ModelEmaV2: ${p.name} appears twice`);
      this.byName.set(p.name, p);
    }
  }

  private pairs(params: readonly NamedParameter[]): Array<[tf.Variable, tf.Tensor]> {
    if (params.length !== this.params.length) {
      throw new Error(`ModelEmaV2: got ${params.length} tensors, the EMA holds ${this.params.length}`);
    }
    return params.map((p) => {
      const e = this.byName.get(p.name);
      if (!e) throw new Error(`ModelEmaV2: unknown tensor ${p.name}`);
      if (!sameShape(e.variable.shape, p.variable.shape)) {
        throw new Error(`ModelEmaV2: ${p.name} has shape [${p.variable.shape}], the EMA copy [${e.variable.shape}]`);
      }
      return [e.variable, p.variable];
    });
  }

  /** ema <- decay*ema + (1 - decay)*model, for every tensor. Call after each optimizer step. */
  update(params: readonly NamedParameter[]): void {
    const pairs = this.pairs(params);
    tf.tidy(() => {
      const d = tf.scalar(this.decay);
      const oneMinusD = tf.scalar(1 - this.decay);
      for (const [e, m] of pairs) {
        if (e.dtype !== 'float32') {
          e.assign(tf.clone(m)); // non-float buffers (none in MambaOut) are copied, not averaged
          continue;
        }
        e.assign(tf.add(tf.mul(d, e), tf.mul(oneMinusD, m)));
      }
    });
  }

  /** Copy the model's values into the EMA (timm `set`). */
  set(params: readonly NamedParameter[]): void {
    const pairs = this.pairs(params);
    tf.tidy(() => {
      for (const [e, m] of pairs) e.assign(tf.clone(m));
    });
  }

  /** Host copies of the averaged tensors, by name (float32, Variable layout). */
  async stateDict(): Promise<TensorMap> {
    const datas = await Promise.all(this.params.map((p) => p.variable.data()));
    const out: TensorMap = new Map();
    this.params.forEach((p, i) => {
      const d = datas[i];
      const data = p.variable.dtype === 'int32' ? new Int32Array(d as Int32Array) : new Float32Array(d as Float32Array);
      const t: HostTensor = { dtype: p.variable.dtype === 'int32' ? 'int32' : 'float32', shape: [...p.variable.shape], data };
      out.set(p.name, t);
    });
    return out;
  }

  /** Load averaged values (every tensor must be present with the Variable's shape). */
  loadStateDict(state: TensorMap): void {
    for (const p of this.params) {
      const t = state.get(p.name);
      if (!t) throw new UserError(`The EMA state lacks ${p.name}.`);
      if (!sameShape(t.shape, p.variable.shape)) {
        throw new UserError(`The EMA state's ${p.name} has shape [${t.shape}], expected [${p.variable.shape}].`);
      }
    }
    for (const p of this.params) {
      const t = state.get(p.name)!;
      const values =
        p.variable.dtype === 'int32'
          ? Int32Array.from(t.data as ArrayLike<number>, Number)
          : t.data instanceof Float32Array
            ? t.data.slice() // private copy (the cpu backend would keep the caller's array)
            : Float32Array.from(t.data as ArrayLike<number>, Number);
      tf.tidy(() => p.variable.assign(tf.tensor(values, p.variable.shape, p.variable.dtype)));
    }
  }

  dispose(): void {
    for (const p of this.params) p.variable.dispose();
  }
}
