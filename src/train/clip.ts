/**
 * Gradient clipping as timm 0.6.11's dispatch_clip_grad (timm/utils/clip_grad.py, agc.py).
 *
 * All functions take gradients keyed by parameter name and return a NEW map of NEW tensors (entries
 * left unchanged are clones sharing the data), never modifying or disposing the input: the caller
 * disposes the input map when done. Nothing is read back to the host.
 *
 * - norm:  torch clip_grad_norm_: total = ||(||g_1||, ..., ||g_n||)|| (p-norm; inf = max |g|);
 *          every g <- g * min(max_norm / (total + 1e-6), 1).
 * - value: torch clip_grad_value_: clamp every element to [-v, v].
 * - agc:   adaptive gradient clipping: per parameter, unit-wise norms (whole tensor for rank <= 1,
 *          else per output unit, i.e. over every axis but the output axis); max = max(||p||_u, eps) * factor;
 *          where ||g||_u >= max: g <- g * max / max(||g||_u, 1e-6). train.py applies it to all parameters
 *          except the last two (the classifier weight and bias); dispatchClipGrad does that.
 *
 * Layout: PyTorch's AGC reduces over all dims but dim 0 because torch weights are [out, ...]. Weights
 * stored in tfjs layouts put the output units elsewhere (conv HWIO: axis 3; a Dense kernel [in, out]:
 * axis 1), so pass `outAxis(name, rank)` returning the axis that indexes output units in the Variable's
 * layout. The default is 0 (PyTorch layout).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradMap, NamedParameter } from './optim/base.js';
import { UserError } from '../errors.js';

export type ClipMode = 'norm' | 'value' | 'agc';
export const CLIP_MODES: readonly ClipMode[] = ['norm', 'value', 'agc'];

/** Axis of output units of a parameter in its stored layout (PyTorch layout: 0). */
export type OutAxisFn = (name: string, rank: number) => number;

/** p-norm of a whole tensor (p = Infinity: max |x|). */
function tensorNorm(x: tf.Tensor, p: number, axis?: number[], keepDims = false): tf.Tensor {
  if (p === Infinity) return tf.max(tf.abs(x), axis, keepDims);
  if (p === 2) return tf.sqrt(tf.sum(tf.square(x), axis, keepDims));
  if (p === 1) return tf.sum(tf.abs(x), axis, keepDims);
  return tf.pow(tf.sum(tf.pow(tf.abs(x), p), axis, keepDims), 1 / p);
}

/**
 * torch.nn.utils.clip_grad_norm_ (error_if_nonfinite False). Returns the clipped gradients and the
 * total norm before clipping (a scalar tensor the caller owns).
 */
export function clipGradNorm(
  grads: GradMap,
  maxNorm: number,
  normType = 2,
): { grads: GradMap; totalNorm: tf.Scalar } {
  if (!(maxNorm > 0)) throw new UserError(`Invalid clip value ${maxNorm}; it must be > 0.`);
  const out: GradMap = new Map();
  if (grads.size === 0) return { grads: out, totalNorm: tf.scalar(0) };
  const totalNorm = tf.tidy(() => {
    const norms = [...grads.values()].map((g) => tensorNorm(g, normType));
    return tensorNorm(tf.stack(norms), normType) as tf.Scalar;
  });
  const coef = tf.tidy(() => tf.minimum(tf.div(maxNorm, tf.add(totalNorm, 1e-6)), 1));
  for (const [name, g] of grads) out.set(name, tf.mul(g, coef));
  coef.dispose();
  return { grads: out, totalNorm };
}

/** torch.nn.utils.clip_grad_value_: clamp to [-clipValue, clipValue]. */
export function clipGradValue(grads: GradMap, clipValue: number): GradMap {
  if (!(clipValue >= 0)) throw new UserError(`Invalid clip value ${clipValue}; it must be >= 0.`);
  const out: GradMap = new Map();
  for (const [name, g] of grads) out.set(name, tf.clipByValue(g, -clipValue, clipValue));
  return out;
}

/** Unit-wise norm: whole tensor for rank <= 1, else over every axis but `outAxis` (kept as size-1 dims). */
export function unitwiseNorm(x: tf.Tensor, outAxis = 0, normType = 2): tf.Tensor {
  if (x.rank <= 1) return tensorNorm(x, normType);
  const ax = outAxis < 0 ? outAxis + x.rank : outAxis;
  if (!(ax >= 0 && ax < x.rank)) throw new Error(`unitwiseNorm: output axis ${outAxis} out of range for rank ${x.rank}`);
  const axes = [...Array(x.rank).keys()].filter((a) => a !== ax);
  return tensorNorm(x, normType, axes, true);
}

export interface AgcOptions {
  /** Floor for the parameter norm (timm eps 1e-3). */
  eps?: number;
  normType?: number;
  outAxis?: OutAxisFn;
}

/**
 * timm adaptive_clip_grad over `params` (parameters without a gradient are skipped). Gradients of
 * parameters not in `params` are passed through (cloned).
 */
export function adaptiveClipGrad(
  params: readonly NamedParameter[],
  grads: GradMap,
  clipFactor = 0.01,
  opts: AgcOptions = {},
): GradMap {
  const eps = opts.eps ?? 1e-3;
  const normType = opts.normType ?? 2;
  const outAxis = opts.outAxis ?? (() => 0);
  const clipped = new Map<string, tf.Tensor>();
  for (const p of params) {
    const g = grads.get(p.name);
    if (!g) continue;
    clipped.set(
      p.name,
      tf.tidy(() => {
        const ax = outAxis(p.name, p.variable.rank);
        const maxNorm = tf.mul(tf.maximum(unitwiseNorm(p.variable, ax, normType), eps), clipFactor);
        const gradNorm = unitwiseNorm(g, ax, normType);
        // g * where(||g|| < max, 1, max / max(||g||, 1e-6)): same values as torch's where(cond, g, g*factor)
        const factor = tf.where(
          tf.less(gradNorm, maxNorm),
          tf.onesLike(gradNorm),
          tf.div(maxNorm, tf.maximum(gradNorm, 1e-6)),
        );
        return tf.mul(g, factor);
      }),
    );
  }
  const out: GradMap = new Map();
  for (const [name, g] of grads) out.set(name, clipped.get(name) ?? tf.clone(g));
  return out;
}

export interface DispatchClipOptions {
  normType?: number;
  /** For agc: output-unit axis per parameter in its stored layout (default 0 = PyTorch layout). */
  outAxis?: OutAxisFn;
}

/**
 * train.py's clipping step: `--clip-grad value --clip-mode mode`. `params` is the model's parameter list in
 * registration order; for 'agc' the last two (the classifier) are excluded, as train.py's
 * model_parameters(model, exclude_head=True) does.
 */
export function dispatchClipGrad(
  params: readonly NamedParameter[],
  grads: GradMap,
  value: number,
  mode: string = 'norm',
  opts: DispatchClipOptions = {},
): GradMap {
  const normType = opts.normType ?? 2;
  switch (mode) {
    case 'norm': {
      const r = clipGradNorm(grads, value, normType);
      r.totalNorm.dispose();
      return r.grads;
    }
    case 'value':
      return clipGradValue(grads, value);
    case 'agc':
      return adaptiveClipGrad(params.slice(0, Math.max(0, params.length - 2)), grads, value, {
        normType,
        outAxis: opts.outAxis,
      });
    default:
      throw new UserError(`Unknown clip mode '${mode}'; supported: ${CLIP_MODES.join(', ')}.`);
  }
}
