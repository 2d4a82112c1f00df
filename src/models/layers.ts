/**
 * Building blocks of MambaOut on tfjs, NHWC activations.
 *
 * Parameters are tf.Variables named with their PyTorch state-dict names. Layouts:
 *  - Linear weight: PyTorch layout [out, in] (y = x · Wᵀ + b), used with matMul(..., transposeB).
 *  - Conv2d weight: tfjs layout HWIO [kh, kw, in, out]; PyTorch's is [out, in, kh, kw].
 *  - Depthwise Conv2d weight: tfjs layout [kh, kw, C, 1]; PyTorch's is [C, 1, kh, kw].
 *  - LayerNorm weight/bias: [C] in both.
 * `toTorchLayout` / `fromTorchLayout` convert one tensor between the two at load/save time.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../utils/rng.js';
import '../backend/tfjs.js';
import { drawnTensor } from '../backend/step_capture.js';
import { linear, type LinearOptions } from '../ops/linear.js';
import { layerNorm, type LayerNormOptions } from '../ops/layer_norm.js';
import { conv2dBias } from '../ops/conv.js';

export { gelu } from '../ops/activations.js';

export type ParamKind = 'linear' | 'conv' | 'dwconv' | 'vector';

export interface Param {
  name: string;
  kind: ParamKind;
  variable: tf.Variable;
}

/** Registry of parameters in state-dict (registration) order. */
export class ParamStore {
  readonly params: Param[] = [];
  constructor(private readonly rng: Rng | null) {}

  private add(name: string, kind: ParamKind, shape: number[], values: Float32Array): tf.Variable {
    const v = tf.tidy(() => tf.variable(tf.tensor(values, shape, 'float32'), true));
    this.params.push({ name, kind, variable: v });
    return v;
  }

  /** trunc_normal_(std=.02) with timm's absolute bounds [-2, 2]. */
  private truncNormal(n: number): Float32Array {
    const out = new Float32Array(n);
    if (!this.rng) return out;
    for (let i = 0; i < n; i++) out[i] = this.rng.truncNormal(0, 0.02, -2, 2);
    return out;
  }

  linear(prefix: string, inF: number, outF: number): Linear {
    const w = this.add(`${prefix}.weight`, 'linear', [outF, inF], this.truncNormal(inF * outF));
    const b = this.add(`${prefix}.bias`, 'vector', [outF], new Float32Array(outF));
    return new Linear(w, b);
  }

  conv(prefix: string, inC: number, outC: number, k: number, stride: number, pad: number): Conv2d {
    const w = this.add(`${prefix}.weight`, 'conv', [k, k, inC, outC], this.truncNormal(k * k * inC * outC));
    const b = this.add(`${prefix}.bias`, 'vector', [outC], new Float32Array(outC));
    return new Conv2d(w, b, stride, pad);
  }

  dwconv(prefix: string, c: number, k: number): DepthwiseConv2d {
    const w = this.add(`${prefix}.weight`, 'dwconv', [k, k, c, 1], this.truncNormal(k * k * c));
    const b = this.add(`${prefix}.bias`, 'vector', [c], new Float32Array(c));
    return new DepthwiseConv2d(w, b, Math.floor(k / 2));
  }

  layerNorm(prefix: string, c: number, eps = 1e-6): LayerNorm {
    const w = this.add(`${prefix}.weight`, 'vector', [c], new Float32Array(c).fill(1));
    const b = this.add(`${prefix}.bias`, 'vector', [c], new Float32Array(c));
    return new LayerNorm(w, b, eps);
  }
}

export class Linear {
  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable) {}
  /** x: [..., in] -> [..., out], optionally with GELU and/or a residual added (src/ops/linear.ts). */
  apply(x: tf.Tensor, opts: LinearOptions = {}): tf.Tensor {
    return linear(x, this.weight, this.bias, opts);
  }
}

export class Conv2d {
  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable, readonly stride: number, readonly pad: number) {}
  apply(x: tf.Tensor4D): tf.Tensor4D {
    const p = this.pad;
    // Explicit symmetric padding: PyTorch's padding=1 with stride 2 differs from tfjs 'same' (which pads bottom/right only).
    // Bias inside the convolution's kernel (src/ops/conv.ts).
    return conv2dBias(x, this.weight as tf.Tensor4D, this.bias as tf.Tensor1D, this.stride, [[0, 0], [p, p], [p, p], [0, 0]]);
  }
}

export class DepthwiseConv2d {
  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable, readonly pad: number) {}
  apply(x: tf.Tensor4D): tf.Tensor4D {
    // stride 1, odd kernel, pad k//2: tfjs 'same' pads symmetrically, equal to PyTorch.
    return tf.depthwiseConv2d(x, this.weight as tf.Tensor4D, 1, 'same').add(this.bias);
  }
}

export class LayerNorm {
  constructor(readonly weight: tf.Variable, readonly bias: tf.Variable, readonly eps: number) {}
  /** Normalises over the last axis (biased variance, as torch.nn.LayerNorm), optionally followed by GELU. */
  apply(x: tf.Tensor, opts: LayerNormOptions = {}): tf.Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps, opts);
  }
}

/**
 * DropPath (stochastic depth), timm semantics: per sample keep with prob 1-p and scale the kept
 * residual by 1/(1-p). The mask is a host-drawn [N] array of 0 or 1/(1-p) (from a seeded Rng), drawn again by every
 * replay of a captured step (drawnTensor).
 */
export function dropPath(x: tf.Tensor, p: number, rng: Rng): tf.Tensor {
  if (p <= 0) return x;
  const keep = 1 - p;
  const n = x.shape[0];
  const draw = (): Float32Array => {
    const mask = new Float32Array(n);
    for (let i = 0; i < n; i++) mask[i] = Math.floor(keep + rng.random()) / keep;
    return mask;
  };
  return x.mul(drawnTensor(draw, [n, ...new Array(x.rank - 1).fill(1)]));
}

/** Dropout with a host-drawn mask (inverted scaling). */
export function dropout(x: tf.Tensor, p: number, rng: Rng): tf.Tensor {
  if (p <= 0) return x;
  const size = x.size;
  const keep = 1 - p;
  const draw = (): Float32Array => {
    const mask = new Float32Array(size);
    for (let i = 0; i < size; i++) mask[i] = rng.random() < keep ? 1 / keep : 0;
    return mask;
  };
  return x.mul(drawnTensor(draw, x.shape));
}

/** PyTorch layout of a parameter's shape. */
export function torchShape(kind: ParamKind, shape: readonly number[]): number[] {
  switch (kind) {
    case 'conv': // [kh, kw, in, out] -> [out, in, kh, kw]
      return [shape[3], shape[2], shape[0], shape[1]];
    case 'dwconv': // [kh, kw, C, 1] -> [C, 1, kh, kw]
      return [shape[2], 1, shape[0], shape[1]];
    default:
      return [...shape];
  }
}

/** Convert tfjs-layout data of a parameter to PyTorch layout (a permutation for conv weights). */
export function toTorchLayout(kind: ParamKind, shape: readonly number[], data: Float32Array): Float32Array {
  if (kind === 'conv') return permute(data, shape, [3, 2, 0, 1]);
  if (kind === 'dwconv') return permute(data, shape, [2, 3, 0, 1]);
  return data;
}

/** Convert PyTorch-layout data to the tfjs layout of a parameter whose tfjs shape is `shape`. */
export function fromTorchLayout(kind: ParamKind, shape: readonly number[], data: Float32Array): Float32Array {
  const ts = torchShape(kind, shape);
  if (kind === 'conv') return permute(data, ts, [2, 3, 1, 0]); // [out,in,kh,kw] -> [kh,kw,in,out]
  if (kind === 'dwconv') return permute(data, ts, [2, 3, 0, 1]); // [C,1,kh,kw] -> [kh,kw,C,1]
  return data;
}

/** Row-major transpose of a 4-D array: out axis i = in axis perm[i]. */
export function permute(data: Float32Array, shape: readonly number[], perm: readonly number[]): Float32Array {
  const out = new Float32Array(data.length);
  const [, s1, s2, s3] = shape;
  const inStrides = [s1 * s2 * s3, s2 * s3, s3, 1];
  const os = perm.map((p) => shape[p]);
  const st = perm.map((p) => inStrides[p]);
  let o = 0;
  for (let a = 0; a < os[0]; a++)
    for (let b = 0; b < os[1]; b++)
      for (let c = 0; c < os[2]; c++) {
        const base = a * st[0] + b * st[1] + c * st[2];
        for (let d = 0; d < os[3]; d++) out[o++] = data[base + d * st[3]];
      }
  return out;
}
