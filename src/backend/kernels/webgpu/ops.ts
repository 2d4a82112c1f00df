/**
 * Fused operations built on the WebGPU kernels registered by ./index.ts, for the model and the optimizers.
 *
 * Everything here is used only when `fusedOpsActive()` is true: the active backend is 'webgpu', our kernels are
 * registered (initWebGPU does that) and fused ops are not switched off (`setFusedOps(false)` or the environment
 * variable MAMBAOUT_WEBGPU_FUSED=0). Other backends keep the op-by-op code and its parity tests unchanged.
 *
 * This module imports tfjs only (not the WebGPU backend or Dawn), so the model can import it on any backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdamKernelAttrs } from './adam.js';

/** The function type tf.customGrad takes (its inputs are tensors followed by the save function). */
type CustomGradFn = Parameters<typeof tf.customGrad>[0];

let enabled = process.env.MAMBAOUT_WEBGPU_FUSED !== '0';

/** Switch the fused WebGPU ops on or off (for A/B timing and parity tests). Returns the previous setting. */
export function setFusedOps(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}

/** Whether the model/optimizers should use the fused WebGPU ops now. */
export function fusedOpsActive(): boolean {
  return enabled && tf.getBackend() === 'webgpu' && tf.getKernel('MambaoutLayerNorm', 'webgpu') !== undefined;
}

/** Whether the fused kernel `name` (e.g. 'MambaoutAdam') can be used now (same conditions as fusedOpsActive). */
export function fusedKernelActive(name: string): boolean {
  return enabled && tf.getBackend() === 'webgpu' && tf.getKernel(name, 'webgpu') !== undefined;
}

const lnByEps = new Map<number, (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor>();

/** LayerNorm over the last axis (torch semantics) with its fused backward. */
export function layerNormFused(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  let f = lnByEps.get(eps);
  if (!f) {
    f = tf.customGrad(((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
      const [y, stats] = tf.engine().runKernel('MambaoutLayerNorm', { x: xi, weight: wi, bias: bi }, { eps }) as tf.Tensor[];
      save([xi, wi, stats]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
          const [xs, ws, st] = saved;
          return tf.engine().runKernel('MambaoutLayerNormGrad', { dy: dy as tf.Tensor, x: xs, weight: ws, stats: st }, {}) as tf.Tensor[];
        },
      };
    }) as unknown as CustomGradFn) as unknown as (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor;
    lnByEps.set(eps, f);
  }
  return f(x, weight, bias);
}

const gateByShape = new Map<string, (f: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor>();

/**
 * GatedCNN's gate from the fc1 output f [N, H, W, 2h]: with g = f[..., :h], i = f[..., h:2h-C], c = f[..., 2h-C:],
 * returns gelu(g) * concat(i, depthwiseConv7x7(c) + convBias) [N, H, W, h]. convWeight: [k, k, C, 1] ('same').
 */
export function gatedConvGeluFused(f: tf.Tensor4D, convWeight: tf.Tensor4D, convBias: tf.Tensor1D, hidden: number): tf.Tensor4D {
  const C = convWeight.shape[2];
  const key = `${hidden}_${C}`;
  let fn = gateByShape.get(key);
  if (!fn) {
    fn = tf.customGrad(((fi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
      const f4 = fi as tf.Tensor4D;
      const cIn = tf.slice(f4, [0, 0, 0, 2 * hidden - C], [-1, -1, -1, C]);
      const k = tf.depthwiseConv2d(cIn, wi as tf.Tensor4D, 1, 'same');
      const out = tf.engine().runKernel('MambaoutGatedGelu', { f: fi, k, kBias: bi }, { hidden }) as tf.Tensor;
      save([fi, cIn, k, wi, bi]);
      return {
        value: out,
        gradFunc: (dyArg: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
          const dy = dyArg as tf.Tensor;
          const [fs, cs, ks, ws, bs] = saved;
          const dk = tf.engine().runKernel('MambaoutGatedGeluGradConv', { dy, f: fs }, { hidden, channels: C }) as tf.Tensor4D;
          const convAttrs = { strides: [1, 1], pad: 'same', dilations: [1, 1], dimRoundingMode: undefined } as unknown as tf.NamedAttrMap;
          const dc = tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: dk, filter: ws },
            { ...convAttrs, inputShape: cs.shape } as unknown as tf.NamedAttrMap) as tf.Tensor;
          const dw = tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: cs, dy: dk },
            { ...convAttrs, filterShape: ws.shape } as unknown as tf.NamedAttrMap) as tf.Tensor;
          const db = tf.sum(dk, [0, 1, 2]);
          const df = tf.engine().runKernel('MambaoutGatedGeluGrad', { dy, f: fs, k: ks, kBias: bs, dc }, { hidden }) as tf.Tensor;
          return [df, dw, db];
        },
      };
    }) as unknown as CustomGradFn) as unknown as (f: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor;
    gateByShape.set(key, fn);
  }
  return fn(f, convWeight, convBias) as tf.Tensor4D;
}

let meanHW: ((x: tf.Tensor) => tf.Tensor) | null = null;

/**
 * Mean over axes 1 and 2 of [N, H, W, C]. Its gradient broadcasts dy / (H*W) instead of tfjs's Mean gradient,
 * which multiplies by a `ones(x.shape)` tensor built on the host and uploaded on every backward pass.
 * dy * 1 / n and dy / n are the same float, so the values equal tfjs's.
 */
export function meanSpatialFused(x: tf.Tensor4D): tf.Tensor2D {
  if (!meanHW) {
    meanHW = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
      const [n, h, w, c] = xi.shape;
      save([]);
      return {
        value: tf.mean(xi, [1, 2]),
        gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
          [tf.broadcastTo(tf.div(tf.reshape(dy as tf.Tensor, [n, 1, 1, c]), h * w), [n, h, w, c])],
      };
    }) as unknown as CustomGradFn) as unknown as (x: tf.Tensor) => tf.Tensor;
  }
  return meanHW(x) as tf.Tensor2D;
}

/** Scalars of one fused Adam/AdamW update (the kernel's attributes). */
export type AdamScalars = AdamKernelAttrs;

/** One fused Adam/AdamW update: returns [param', m', v'] (see ./adam.ts for the maths). */
export function adamUpdateFused(param: tf.Tensor, grad: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: AdamScalars): tf.Tensor[] {
  return tf.engine().runKernel('MambaoutAdam', { param, grad, m, v }, s as unknown as tf.NamedAttrMap) as tf.Tensor[];
}
