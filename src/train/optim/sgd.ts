/**
 * SGD with momentum (torch.optim.SGD). Per parameter with a gradient g:
 *   d = g + wd*p                         (if wd != 0)
 *   buf = d                              (first step: a copy of d)
 *   buf = momentum*buf + (1-dampening)*d (later steps)
 *   d = d + momentum*buf (nesterov)  or  d = buf (plain momentum)      (if momentum != 0)
 *   p = p - lr*d
 * timm's `sgd` (and `nesterov`) is nesterov=True; `momentum` is nesterov=False.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../../checkpoint/types.js';
import { UserError } from '../../errors.js';
import { Optimizer, bool, num, type GradMap, type GroupSpec, type NamedParameter, type ParamGroup } from './base.js';

export interface SgdGroup extends ParamGroup {
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

export class SGD extends Optimizer<SgdGroup> {
  readonly name = 'sgd';

  constructor(groups: GroupSpec[], opts: SgdOptions) {
    const momentum = opts.momentum ?? 0;
    const dampening = opts.dampening ?? 0;
    const nesterov = opts.nesterov ?? false;
    if (!(opts.lr >= 0)) throw new UserError(`Invalid learning rate ${opts.lr}; it must be >= 0.`);
    if (!(momentum >= 0)) throw new UserError(`Invalid momentum ${momentum}; it must be >= 0.`);
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new UserError('Nesterov momentum requires a momentum > 0 and zero dampening.');
    }
    super(
      groups.map((g) => ({
        params: g.params,
        lr: g.lr ?? opts.lr,
        weightDecay: g.weightDecay ?? opts.weightDecay ?? 0,
        ...(g.lrScale !== undefined ? { lrScale: g.lrScale } : {}),
        momentum,
        dampening,
        nesterov,
      })),
    );
  }

  protected applyUpdates(grads: GradMap): void {
    if (this.useHostPath()) {
      this.applyUpdatesHost(grads);
      return;
    }
    for (const group of this.paramGroups) {
      const { lr, weightDecay: wd, momentum, dampening, nesterov } = group;
      const wdS = wd !== 0 ? tf.scalar(wd) : null;
      const momS = tf.scalar(momentum);
      const oneMinusDamp = tf.scalar(1 - dampening);
      const negLr = tf.scalar(-lr);
      for (const p of group.params) {
        let d = grads.get(p.name);
        if (!d) continue;
        if (wdS) d = tf.add(d, tf.mul(wdS, p.variable));
        if (momentum !== 0) {
          const existing = this.state.get(p.name)?.tensors.momentum_buffer;
          let buf: tf.Tensor;
          if (!existing) {
            // torch: buf = clone(d) on the first step (no dampening applied)
            const st = this.getState(p, [], ['momentum_buffer']);
            buf = d;
            st.tensors.momentum_buffer.assign(buf);
          } else {
            buf = tf.add(tf.mul(existing, momS), tf.mul(oneMinusDamp, d));
            existing.assign(buf);
          }
          d = nesterov ? tf.add(d, tf.mul(momS, buf)) : buf;
        }
        p.variable.assign(tf.add(p.variable, tf.mul(negLr, d)));
      }
    }
  }

  /** The same maths as applyUpdates as one loop per parameter on host data (cpu backend only). */
  private applyUpdatesHost(grads: GradMap): void {
    const fr = Math.fround; // every intermediate is rounded to float32, as a tfjs cpu op stores it
    for (const group of this.paramGroups) {
      const { lr, weightDecay: wd, momentum, dampening, nesterov } = group;
      const wdS = fr(wd);
      const momS = fr(momentum);
      const oneMinusDamp = fr(1 - dampening);
      const negLr = fr(-lr);
      for (const p of group.params) {
        const gT = grads.get(p.name);
        if (!gT) continue;
        const P = p.variable.dataSync() as Float32Array; // read-only views of the backend's buffers
        const G = gT.dataSync() as Float32Array;
        const n = P.length;
        const Pn = new Float32Array(n);
        let B: Float32Array | null = null; // previous momentum buffer
        let Bn: Float32Array | null = null;
        const existing = momentum !== 0 ? this.state.get(p.name)?.tensors.momentum_buffer : undefined;
        if (momentum !== 0) {
          if (existing) B = existing.dataSync() as Float32Array;
          Bn = new Float32Array(n);
        }
        for (let i = 0; i < n; i++) {
          let d = G[i];
          if (wd !== 0) d = fr(d + fr(wdS * P[i]));
          if (Bn) {
            const buf = B ? fr(fr(B[i] * momS) + fr(oneMinusDamp * d)) : d;
            Bn[i] = buf;
            d = nesterov ? fr(d + fr(momS * buf)) : buf;
          }
          Pn[i] = P[i] + fr(negLr * d);
        }
        if (Bn) {
          const st = this.getState(p, [], ['momentum_buffer']);
          st.tensors.momentum_buffer.assign(tf.tensor(Bn, p.variable.shape, 'float32'));
        }
        p.variable.assign(tf.tensor(Pn, p.variable.shape, 'float32'));
      }
    }
  }

  protected groupHyper(g: SgdGroup): Record<string, unknown> {
    return { momentum: g.momentum, dampening: g.dampening, nesterov: g.nesterov };
  }

  protected loadGroupHyper(g: SgdGroup, saved: Record<string, unknown>): void {
    g.momentum = num(saved, 'momentum', g.momentum);
    g.dampening = num(saved, 'dampening', g.dampening);
    g.nesterov = bool(saved, 'nesterov', g.nesterov);
  }

  protected checkLoadedState(p: NamedParameter, _s: Record<string, number>, tensors: Record<string, HostTensor>): void {
    for (const k of Object.keys(tensors)) {
      if (k !== 'momentum_buffer') throw new UserError(`The optimizer state of ${p.name} has '${k}' (not an SGD state?).`);
    }
  }
}
