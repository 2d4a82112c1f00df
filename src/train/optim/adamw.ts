/**
 * AdamW (torch.optim.AdamW, amsgrad=False) and the shared Adam-family update.
 *
 * Per parameter with a gradient g, per step (t = that parameter's own step count, as in torch):
 *   AdamW: p <- p * (1 - lr*wd)                       (decoupled decay, before the moment updates)
 *   Adam:  g <- g + wd * p                            (classic L2 term added to the gradient)
 *   m <- lerp(m, g, 1 - b1)                           (= b1*m + (1-b1)*g; torch evaluates it as a lerp)
 *   v <- b2*v + (1 - b2)*g*g
 *   denom = sqrt(v) / sqrt(1 - b2^t) + eps
 *   p <- p - (lr / (1 - b1^t)) * m / denom
 * The scalar factors are computed in float64 on the host and applied as float32 scalars, as torch does.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../../checkpoint/types.js';
import { UserError } from '../../errors.js';
import { adamFusedAvailable, adamInPlaceAvailable, adamStep, type AdamItem } from '../../ops/adam.js';
import { Optimizer, num, pair, type GradMap, type GroupSpec, type NamedParameter, type ParamGroup } from './base.js';

export interface AdamGroup extends ParamGroup {
  betas: [number, number];
  eps: number;
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

const STATE_TENSORS = ['exp_avg', 'exp_avg_sq'] as const;

/** Adam / AdamW core; `decoupled` selects AdamW's decay. */
export abstract class AdamFamily extends Optimizer<AdamGroup> {
  protected abstract readonly decoupled: boolean;

  constructor(groups: GroupSpec[], opts: AdamOptions, defaultWeightDecay: number) {
    const lr = opts.lr ?? 1e-3;
    const betas = opts.betas ?? [0.9, 0.999];
    const eps = opts.eps ?? 1e-8;
    checkAdamHyper(lr, betas, eps);
    super(
      groups.map((g) => ({
        params: g.params,
        lr: g.lr ?? lr,
        weightDecay: g.weightDecay ?? opts.weightDecay ?? defaultWeightDecay,
        ...(g.lrScale !== undefined ? { lrScale: g.lrScale } : {}),
        betas: [betas[0], betas[1]] as [number, number],
        eps,
      })),
    );
  }

  /**
   * On the WebGPU backend, update the parameters with fused kernels (src/ops/adam.ts: one dispatch per group, or one
   * per parameter) instead of ~12 elementwise kernels each; same maths and float32 scalars as the op path below. Set
   * false to force the op path.
   */
  fusedKernelPath = true;

  override get updatesInPlace(): boolean {
    return this.fusedKernelPath && !this.useHostPath() && adamInPlaceAvailable();
  }

  protected applyUpdates(grads: GradMap): void {
    if (this.useHostPath()) {
      this.applyUpdatesHost(grads);
      return;
    }
    if (this.fusedKernelPath && adamFusedAvailable()) {
      this.applyUpdatesFused(grads);
      return;
    }
    for (const group of this.paramGroups) {
      const [b1, b2] = group.betas;
      const { lr, weightDecay: wd } = group;
      // Scalars shared by the whole group: created once per step, not per parameter.
      const decayFactor = this.decoupled && wd !== 0 ? tf.scalar(1 - lr * wd) : null;
      const l2 = !this.decoupled && wd !== 0 ? tf.scalar(wd) : null;
      const lerpWeight = 1 - b1;
      const lerpW = tf.scalar(lerpWeight < 0.5 ? lerpWeight : 1 - lerpWeight);
      const beta2 = tf.scalar(b2);
      const oneMinusBeta2 = tf.scalar(1 - b2);
      const eps = tf.scalar(group.eps);
      // Bias-correction scalars depend on each parameter's step; usually all share one step.
      const perStep = new Map<number, { negStepSize: tf.Scalar; bc2Sqrt: tf.Scalar }>();
      const stepScalars = (t: number) => {
        let s = perStep.get(t);
        if (!s) {
          const bc1 = 1 - Math.pow(b1, t);
          const bc2 = 1 - Math.pow(b2, t);
          s = { negStepSize: tf.scalar(-(lr / bc1)), bc2Sqrt: tf.scalar(Math.sqrt(bc2)) };
          perStep.set(t, s);
        }
        return s;
      };

      for (const p of group.params) {
        let g = grads.get(p.name);
        if (!g) continue; // torch: p.grad is None -> untouched
        const st = this.getState(p, ['step'], STATE_TENSORS);
        const t = (st.scalars.step += 1);
        const m = st.tensors.exp_avg;
        const v = st.tensors.exp_avg_sq;

        let param: tf.Tensor = p.variable;
        if (decayFactor) param = tf.mul(param, decayFactor);
        if (l2) g = tf.add(g, tf.mul(l2, param));

        // torch lerp: weight < 0.5 -> m + w*(g - m), else g - (g - m)*(1 - w)
        const diff = tf.sub(g, m);
        const mNew = lerpWeight < 0.5 ? tf.add(m, tf.mul(lerpW, diff)) : tf.sub(g, tf.mul(diff, lerpW));
        // torch addcmul: v*b2 + ((1-b2)*g)*g
        const vNew = tf.add(tf.mul(v, beta2), tf.mul(tf.mul(oneMinusBeta2, g), g));
        const { negStepSize, bc2Sqrt } = stepScalars(t);
        const denom = tf.add(tf.div(tf.sqrt(vNew), bc2Sqrt), eps);
        // torch addcdiv: p + (value*m)/denom
        const pNew = tf.add(param, tf.div(tf.mul(negStepSize, mNew), denom));

        m.assign(mNew);
        v.assign(vNew);
        p.variable.assign(pNew);
      }
    }
  }

  /** The same maths as applyUpdates with fused WebGPU kernels: parameters that share their scalars go together. */
  private applyUpdatesFused(grads: GradMap): void {
    for (const group of this.paramGroups) {
      const [b1, b2] = group.betas;
      const { lr, weightDecay: wd } = group;
      const lerpWeight = 1 - b1;
      const lowLerp = lerpWeight < 0.5;
      const shared = {
        decay: 1 - lr * wd,
        l2: wd,
        lerpW: lowLerp ? lerpWeight : 1 - lerpWeight,
        beta2: b2,
        oneMinusBeta2: 1 - b2,
        eps: group.eps,
        useDecay: this.decoupled && wd !== 0,
        useL2: !this.decoupled && wd !== 0,
        lowLerp,
      };
      const byStep = new Map<number, AdamItem[]>();
      for (const p of group.params) {
        const g = grads.get(p.name);
        if (!g) continue;
        const st = this.getState(p, ['step'], STATE_TENSORS);
        const t = (st.scalars.step += 1);
        let list = byStep.get(t);
        if (!list) byStep.set(t, (list = []));
        list.push({ param: p.variable, grad: g, m: st.tensors.exp_avg, v: st.tensors.exp_avg_sq });
      }
      for (const [t, items] of byStep) {
        adamStep(items, { ...shared, negStepSize: -(lr / (1 - Math.pow(b1, t))), bc2Sqrt: Math.sqrt(1 - Math.pow(b2, t)) });
      }
    }
  }

  /** The same maths as applyUpdates as one loop per parameter on host data (cpu backend only). */
  private applyUpdatesHost(grads: GradMap): void {
    const fr = Math.fround; // every intermediate is rounded to float32, as a tfjs cpu op stores it
    for (const group of this.paramGroups) {
      const [b1, b2] = group.betas;
      const { lr, weightDecay: wd } = group;
      const useDecay = this.decoupled && wd !== 0;
      const useL2 = !this.decoupled && wd !== 0;
      const decayFactor = fr(1 - lr * wd);
      const l2 = fr(wd);
      const lerpWeight = 1 - b1;
      const lowLerp = lerpWeight < 0.5;
      const lerpW = fr(lowLerp ? lerpWeight : 1 - lerpWeight);
      const beta2 = fr(b2);
      const oneMinusBeta2 = fr(1 - b2);
      const eps = fr(group.eps);
      for (const p of group.params) {
        const gT = grads.get(p.name);
        if (!gT) continue;
        const st = this.getState(p, ['step'], STATE_TENSORS);
        const t = (st.scalars.step += 1);
        const negStepSize = fr(-(lr / (1 - Math.pow(b1, t))));
        const bc2Sqrt = fr(Math.sqrt(1 - Math.pow(b2, t)));
        const mV = st.tensors.exp_avg;
        const vV = st.tensors.exp_avg_sq;
        // read-only views of the backend's buffers
        const P = p.variable.dataSync() as Float32Array;
        const G = gT.dataSync() as Float32Array;
        const M = mV.dataSync() as Float32Array;
        const V = vV.dataSync() as Float32Array;
        const n = P.length;
        const Pn = new Float32Array(n);
        const Mn = new Float32Array(n);
        const Vn = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          let param = P[i];
          if (useDecay) param = fr(param * decayFactor);
          let g = G[i];
          if (useL2) g = fr(g + fr(l2 * param));
          const m = M[i];
          const diff = fr(g - m);
          const mNew = lowLerp ? fr(m + fr(lerpW * diff)) : fr(g - fr(diff * lerpW));
          const vNew = fr(fr(V[i] * beta2) + fr(fr(oneMinusBeta2 * g) * g));
          const denom = fr(fr(fr(Math.sqrt(vNew)) / bc2Sqrt) + eps);
          Pn[i] = param + fr(fr(negStepSize * mNew) / denom);
          Mn[i] = mNew;
          Vn[i] = vNew;
        }
        mV.assign(tf.tensor(Mn, mV.shape, 'float32'));
        vV.assign(tf.tensor(Vn, vV.shape, 'float32'));
        p.variable.assign(tf.tensor(Pn, p.variable.shape, 'float32'));
      }
    }
  }

  protected groupHyper(g: AdamGroup): Record<string, unknown> {
    // torch's keys (torch >= 2.x also writes the flags below; older torch versions ignore extra keys)
    return {
      betas: [g.betas[0], g.betas[1]],
      eps: g.eps,
      amsgrad: false,
      maximize: false,
      foreach: null,
      capturable: false,
      differentiable: false,
      fused: null,
      decoupled_weight_decay: this.decoupled,
    };
  }

  protected checkGroupHyper(saved: Record<string, unknown>): void {
    if (saved.amsgrad === true) throw new UserError('The optimizer state uses amsgrad, which is not supported.');
    if (saved.maximize === true) throw new UserError('The optimizer state uses maximize, which is not supported.');
    const d = saved.decoupled_weight_decay;
    if (typeof d === 'boolean' && d !== this.decoupled) {
      throw new UserError(
        `The optimizer state is ${d ? 'AdamW' : 'Adam'}'s (decoupled_weight_decay ${d}), but this run uses '${this.name}'.`,
      );
    }
  }

  protected loadGroupHyper(g: AdamGroup, saved: Record<string, unknown>): void {
    g.betas = pair(saved, 'betas', g.betas);
    g.eps = num(saved, 'eps', g.eps);
  }

  protected checkLoadedState(p: NamedParameter, scalars: Record<string, number>, tensors: Record<string, HostTensor>): void {
    for (const k of STATE_TENSORS) {
      if (!tensors[k]) throw new UserError(`The optimizer state of ${p.name} lacks '${k}' (not an Adam state?).`);
    }
    if (!(scalars.step >= 0)) throw new UserError(`The optimizer state of ${p.name} lacks its step count.`);
  }
}

/** torch.optim.AdamW (defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2). */
export class AdamW extends AdamFamily {
  readonly name = 'adamw';
  protected readonly decoupled = true;
  constructor(groups: GroupSpec[], opts: AdamOptions = {}) {
    super(groups, opts, 1e-2);
  }
}

function checkAdamHyper(lr: number, betas: [number, number], eps: number): void {
  if (!(lr >= 0)) throw new UserError(`Invalid learning rate ${lr}; it must be >= 0.`);
  if (!(eps >= 0)) throw new UserError(`Invalid epsilon ${eps}; it must be >= 0.`);
  for (const b of betas) {
    if (!(b >= 0 && b < 1)) throw new UserError(`Invalid beta ${b}; betas must be in [0, 1).`);
  }
}
