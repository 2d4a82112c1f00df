/**
 * Linear layer y = x · Wᵀ + b (PyTorch weight layout [out, in]), optionally followed by GELU and/or a residual add:
 *   linear(x, w, b)                       = x · Wᵀ + b
 *   linear(x, w, b, {activation: 'gelu'}) = gelu(x · Wᵀ + b)
 *   linear(x, w, b, {residual: r})        = r + (x · Wᵀ + b)
 * On WebGPU this is one GEMM with the bias/GELU/residual in its epilogue (kernel MambaoutLinear; MambaOut's fc1,
 * fc2 + the block's residual, the head's fc1 + GELU), where tfjs runs a matmul and one kernel per elementwise op
 * forward and backward. Backward: dz = dy [* gelu'(z)], dx = dz · W, dW = dzᵀ · x, db = Σ dz, dr = dy.
 * Elsewhere: the same composition of tfjs ops the model always used.
 */
import * as tf from '@tensorflow/tfjs-core';
import { shouldFuse, type CustomGradFn } from './fused.js';
import { gelu } from './activations.js';

export interface LinearOptions {
  activation?: 'gelu';
  /** Added after the activation; same shape as the output. */
  residual?: tf.Tensor;
}

type Fused = (...t: tf.Tensor[]) => tf.Tensor;
const fusedByKind = new Map<string, Fused>();

function fusedLinear(geluOn: boolean, withResidual: boolean): Fused {
  const key = `${geluOn ? 'g' : ''}${withResidual ? 'r' : ''}`;
  let f = fusedByKind.get(key);
  if (f) return f;
  f = tf.customGrad(((...args: unknown[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [x, w, b, r] = args as tf.Tensor[];
    const inputs: tf.NamedTensorMap = { x, weight: w, bias: b };
    if (withResidual) inputs.residual = r;
    const outs = tf.engine().runKernel('MambaoutLinear', inputs, { gelu: geluOn, saveZ: geluOn } as unknown as tf.NamedAttrMap);
    const [y, z] = Array.isArray(outs) ? (outs as tf.Tensor[]) : [outs as tf.Tensor];
    save(geluOn ? [x, w, z] : [x, w]);
    return {
      value: y,
      gradFunc: (dyArg: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const dy = dyArg as tf.Tensor;
        const [xs, ws, zs] = saved;
        const dz = geluOn ? (tf.engine().runKernel('MambaoutGeluGrad', { dy, z: zs }, {}) as tf.Tensor) : dy;
        const grads = [tf.matMul(dz, ws), tf.matMul(dz, xs, true, false), tf.sum(dz, 0)];
        return withResidual ? [...grads, dy] : grads;
      },
    };
  }) as unknown as CustomGradFn) as unknown as Fused;
  fusedByKind.set(key, f);
  return f;
}

/** x [..., in] -> [..., out]; see the file header. */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, opts: LinearOptions = {}): tf.Tensor {
  const inF = x.shape[x.shape.length - 1];
  const outF = weight.shape[0];
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 2 ? x : x.reshape([-1, inF]);
  const geluOn = opts.activation === 'gelu';
  let y: tf.Tensor;
  if (shouldFuse('MambaoutLinear', 'linearEpilogue') && (!geluOn || shouldFuse('MambaoutGeluGrad'))) {
    const args = [x2, weight, bias];
    if (opts.residual) args.push(opts.residual.reshape([-1, outF]));
    y = fusedLinear(geluOn, opts.residual !== undefined)(...args);
  } else {
    y = tf.matMul(x2 as tf.Tensor2D, weight as tf.Tensor2D, false, true).add(bias);
    if (geluOn) y = gelu(y);
    if (opts.residual) y = opts.residual.reshape([-1, outF]).add(y);
  }
  return x.rank === 2 ? y : y.reshape([...lead, outF]);
}
