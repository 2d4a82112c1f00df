/**
 * LayerNorm over the last axis (torch.nn.LayerNorm: biased variance, eps inside the square root), optionally followed
 * by GELU (the stem's gelu(norm1(conv1(x)))).
 * WebGPU: one kernel forward and one backward (+ a column-sum pair for the parameter gradients), see
 * src/backend/kernels/webgpu/layer_norm.ts; tfjs's op-by-op LayerNorm is ~9 kernels forward and ~25 backward, and its
 * Mean gradient builds `ones(x.shape)` on the host. Elsewhere: tf.moments composition.
 */
import * as tf from '@tensorflow/tfjs-core';
import { shouldFuse, type CustomGradFn } from './fused.js';
import { gelu } from './activations.js';

type LN = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor;
const fusedByKey = new Map<string, LN>();

function fusedLayerNorm(eps: number, geluOn: boolean): LN {
  const key = `${eps}_${geluOn}`;
  let f = fusedByKey.get(key);
  if (f) return f;
  f = tf.customGrad(((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, stats] = tf.engine().runKernel('MambaoutLayerNorm', { x: xi, weight: wi, bias: bi }, { eps, gelu: geluOn }) as tf.Tensor[];
    save([xi, wi, bi, stats]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [xs, ws, bs, st] = saved;
        const inputs: tf.NamedTensorMap = { dy: dy as tf.Tensor, x: xs, weight: ws, stats: st };
        if (geluOn) inputs.bias = bs;
        return tf.engine().runKernel('MambaoutLayerNormGrad', inputs, { gelu: geluOn }) as tf.Tensor[];
      },
    };
  }) as unknown as CustomGradFn) as unknown as LN;
  fusedByKey.set(key, f);
  return f;
}

export interface LayerNormOptions {
  activation?: 'gelu';
}

export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number, opts: LayerNormOptions = {}): tf.Tensor {
  const geluOn = opts.activation === 'gelu';
  if (shouldFuse('MambaoutLayerNorm') && (!geluOn || shouldFuse('MambaoutLayerNorm', 'layerNormGelu'))) {
    return fusedLayerNorm(eps, geluOn)(x, weight, bias);
  }
  let y: tf.Tensor;
  if (shouldFuse('MambaoutLayerNorm')) {
    y = fusedLayerNorm(eps, false)(x, weight, bias);
  } else {
    const { mean, variance } = tf.moments(x, x.rank - 1, true);
    y = x.sub(mean).mul(tf.rsqrt(variance.add(eps))).mul(weight).add(bias);
  }
  return geluOn ? gelu(y) : y;
}
