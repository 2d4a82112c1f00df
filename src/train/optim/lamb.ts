/**
 * LAMB as timm 0.6.11 implements it (timm/optim/lamb.py, the NVIDIA FusedLAMB "NvLamb" variant).
 *
 * Per step:
 *   n = sqrt(sum over ALL parameters with a gradient of sum(g^2))          (global gradient norm)
 *   c = n / max_grad_norm if n > max_grad_norm else 1;  every g <- g / c      (global clipping)
 * Per group: step += 1 (the step count lives on the group and advances even when no parameter of the
 * group has a gradient); bc1 = 1 - b1^step, bc2 = 1 - b2^step (1 when bias_correction is off);
 * b3 = 1 - b1 with grad averaging, else 1. Per parameter with a gradient:
 *   m <- b1*m + b3*g;  v <- b2*v + (1-b2)*g*g
 *   u = (m / bc1) / (sqrt(v)/sqrt(bc2) + eps)
 *   if wd != 0: u <- u + wd*p                                   (L2 term added to the update)
 *   if wd != 0 or always_adapt:                                  (layer-wise trust ratio)
 *     r = ||p|| / ||u|| if both norms > 0 else 1;  with trust_clip (LAMBC) r <- min(r, 1);  u <- r*u
 *   p <- p - lr*u
 * Unlike timm (which divides p.grad in place), the caller's gradients are left untouched.
 * Everything, the clip factor and trust ratios included, stays on the device (no host reads).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../../checkpoint/types.js';
import { UserError } from '../../errors.js';
import {
  Optimizer,
  bool,
  num,
  pair,
  type GradMap,
  type GroupSpec,
  type NamedParameter,
  type ParamGroup,
} from './base.js';

export interface LambGroup extends ParamGroup {
  betas: [number, number];
  eps: number;
  biasCorrection: boolean;
  gradAveraging: boolean;
  trustClip: boolean;
  alwaysAdapt: boolean;
  /** Group step count (timm keeps it on the group). */
  step: number;
}

export interface LambOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  biasCorrection?: boolean;
  gradAveraging?: boolean;
  /** Global gradient-norm clip applied inside the step; null disables it. Default 1.0. */
  maxGradNorm?: number | null;
  /** LAMBC: clip the trust ratio at 1. */
  trustClip?: boolean;
  alwaysAdapt?: boolean;
}

const STATE_TENSORS = ['exp_avg', 'exp_avg_sq'] as const;

export class Lamb extends Optimizer<LambGroup> {
  readonly name = 'lamb';
  /** timm reads max_grad_norm from the optimizer defaults, not from the groups. */
  maxGradNorm: number | null;

  constructor(groups: GroupSpec[], opts: LambOptions = {}) {
    const lr = opts.lr ?? 1e-3;
    const betas = opts.betas ?? [0.9, 0.999];
    const eps = opts.eps ?? 1e-6;
    if (!(lr >= 0)) throw new UserError(`Invalid learning rate ${lr}; it must be >= 0.`);
    if (!(eps >= 0)) throw new UserError(`Invalid epsilon ${eps}; it must be >= 0.`);
    for (const b of betas) if (!(b >= 0 && b < 1)) throw new UserError(`Invalid beta ${b}; betas must be in [0, 1).`);
    super(
      groups.map((g) => ({
        params: g.params,
        lr: g.lr ?? lr,
        weightDecay: g.weightDecay ?? opts.weightDecay ?? 0.01,
        ...(g.lrScale !== undefined ? { lrScale: g.lrScale } : {}),
        betas: [betas[0], betas[1]] as [number, number],
        eps,
        biasCorrection: opts.biasCorrection ?? true,
        gradAveraging: opts.gradAveraging ?? true,
        trustClip: opts.trustClip ?? false,
        alwaysAdapt: opts.alwaysAdapt ?? false,
        step: 0,
      })),
    );
    this.maxGradNorm = opts.maxGradNorm === undefined ? 1.0 : opts.maxGradNorm;
  }

  protected applyUpdates(grads: GradMap): void {
    // Global clip factor c (a device scalar), over every parameter that has a gradient.
    let clip: tf.Scalar | null = null;
    if (this.maxGradNorm !== null) {
      const sq: tf.Tensor[] = [];
      for (const p of this.parameters()) {
        const g = grads.get(p.name);
        if (g) sq.push(tf.sum(tf.square(g)));
      }
      if (sq.length > 0) {
        const norm = tf.sqrt(sq.length === 1 ? sq[0] : tf.addN(sq));
        const maxNorm = tf.scalar(this.maxGradNorm);
        clip = tf.where(tf.greater(norm, maxNorm), tf.div(norm, maxNorm), tf.onesLike(norm)) as tf.Scalar;
      }
    }
    const one = tf.scalar(1);
    const zero = tf.scalar(0);

    for (const group of this.paramGroups) {
      const [b1, b2] = group.betas;
      const b3 = group.gradAveraging ? 1 - b1 : 1.0;
      group.step += 1;
      const bc1 = group.biasCorrection ? 1 - Math.pow(b1, group.step) : 1.0;
      const bc2 = group.biasCorrection ? 1 - Math.pow(b2, group.step) : 1.0;
      const beta1 = tf.scalar(b1);
      const beta3 = tf.scalar(b3);
      const beta2 = tf.scalar(b2);
      const oneMinusBeta2 = tf.scalar(1 - b2);
      const bc1S = tf.scalar(bc1);
      const bc2Sqrt = tf.scalar(Math.sqrt(bc2));
      const eps = tf.scalar(group.eps);
      const wd = group.weightDecay;
      const wdS = wd !== 0 ? tf.scalar(wd) : null;
      const adapt = wd !== 0 || group.alwaysAdapt;
      const negLr = tf.scalar(-group.lr);

      for (const p of group.params) {
        let g = grads.get(p.name);
        if (!g) continue;
        if (clip) g = tf.div(g, clip);
        const st = this.getState(p, [], STATE_TENSORS);
        const m = st.tensors.exp_avg;
        const v = st.tensors.exp_avg_sq;
        const mNew = tf.add(tf.mul(m, beta1), tf.mul(beta3, g));
        const vNew = tf.add(tf.mul(v, beta2), tf.mul(tf.mul(oneMinusBeta2, g), g));
        const denom = tf.add(tf.div(tf.sqrt(vNew), bc2Sqrt), eps);
        let update = tf.div(tf.div(mNew, bc1S), denom);
        if (wdS) update = tf.add(update, tf.mul(wdS, p.variable));
        if (adapt) {
          const wNorm = tf.norm(p.variable);
          const uNorm = tf.norm(update);
          let ratio = tf.where(
            tf.greater(wNorm, zero),
            tf.where(tf.greater(uNorm, zero), tf.div(wNorm, uNorm), one),
            one,
          );
          if (group.trustClip) ratio = tf.minimum(ratio, one);
          update = tf.mul(update, ratio);
        }
        m.assign(mNew);
        v.assign(vNew);
        p.variable.assign(tf.add(p.variable, tf.mul(negLr, update)));
      }
    }
  }

  protected groupHyper(g: LambGroup): Record<string, unknown> {
    return {
      betas: [g.betas[0], g.betas[1]],
      eps: g.eps,
      bias_correction: g.biasCorrection,
      grad_averaging: g.gradAveraging,
      max_grad_norm: this.maxGradNorm,
      trust_clip: g.trustClip,
      always_adapt: g.alwaysAdapt,
      step: g.step,
    };
  }

  protected loadGroupHyper(g: LambGroup, saved: Record<string, unknown>): void {
    g.betas = pair(saved, 'betas', g.betas);
    g.eps = num(saved, 'eps', g.eps);
    g.biasCorrection = bool(saved, 'bias_correction', g.biasCorrection);
    g.gradAveraging = bool(saved, 'grad_averaging', g.gradAveraging);
    g.trustClip = bool(saved, 'trust_clip', g.trustClip);
    g.alwaysAdapt = bool(saved, 'always_adapt', g.alwaysAdapt);
    g.step = num(saved, 'step', 0);
  }

  protected checkLoadedState(p: NamedParameter, _s: Record<string, number>, tensors: Record<string, HostTensor>): void {
    for (const k of STATE_TENSORS) {
      if (!tensors[k]) throw new UserError(`The optimizer state of ${p.name} lacks '${k}' (not a Lamb state?).`);
    }
  }
}
