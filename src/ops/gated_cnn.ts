/**
 * The token mixer of MambaOut's GatedCNN block, from the normalised input to the gated activation:
 *   g, i, c = split(fc1(xn), [h, h - C, C]);  out = gelu(g) * cat(i, dwconv7x7(c) + convBias)      [..., h]
 * WebGPU: one fc1 GEMM (bias in its epilogue), then the split / conv / gelu / concat / product as fused kernels
 * forward and backward (src/backend/kernels/webgpu/gated_gelu.ts). Elsewhere: fc1 as three matmuls with row blocks of
 * the fc1 weight (slicing the small weight beats splitting the large activation with tfjs's cpu SplitV), then tfjs ops.
 */
import * as tf from '@tensorflow/tfjs-core';
import { shouldFuse, type CustomGradFn } from './fused.js';
import { gelu } from './activations.js';
import { linear } from './linear.js';
import { gatedBlockBf16, gatedBlockBf16Fits, type GatedBlockParams } from './gated_cnn_bf16.js';

export interface GatedCnnParams {
  fc1Weight: tf.Tensor;
  fc1Bias: tf.Tensor;
  /** [k, k, C, 1] depthwise ('same'). */
  convWeight: tf.Tensor;
  convBias: tf.Tensor;
  hidden: number;
}

const gateByShape = new Map<string, (f: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor>();

/**
 * From f = fc1 output [N, H, W, 2h]: gelu(g) * concat(i, depthwiseConv(c) + convBias) [N, H, W, h] with the fused
 * kernels (WebGPU only; callers use `gatedCnnMixer`).
 */
function gatedConvGeluFused(f: tf.Tensor4D, convWeight: tf.Tensor4D, convBias: tf.Tensor1D, hidden: number): tf.Tensor4D {
  const C = convWeight.shape[2];
  // The conv reads its channels out of f (no Slice) when they sit on vec4 boundaries (every MambaOut size).
  const direct = shouldFuse('MambaoutGateConv', 'gateConv') && C % 4 === 0 && hidden % 2 === 0 && convWeight.shape[0] % 2 === 1 &&
    convWeight.shape[0] === convWeight.shape[1];
  const key = `${hidden}_${C}_${direct}`;
  let fn = gateByShape.get(key);
  if (!fn) {
    const offset = 2 * hidden - C;
    const convAttrs = { strides: [1, 1], pad: 'same', dilations: [1, 1], dimRoundingMode: undefined } as unknown as tf.NamedAttrMap;
    fn = tf.customGrad(((fi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
      const f4 = fi as tf.Tensor4D;
      let k: tf.Tensor;
      let cIn: tf.Tensor | null = null;
      if (direct) {
        k = tf.engine().runKernel('MambaoutGateConv', { f: fi, filter: wi }, { offset }) as tf.Tensor;
      } else {
        cIn = tf.slice(f4, [0, 0, 0, offset], [-1, -1, -1, C]);
        k = tf.depthwiseConv2d(cIn as tf.Tensor4D, wi as tf.Tensor4D, 1, 'same');
      }
      const out = tf.engine().runKernel('MambaoutGatedGelu', { f: fi, k, kBias: bi }, { hidden }) as tf.Tensor;
      // Saved: f, k, the filter and bias (and the slice when the conv could not read f directly).
      save(cIn ? [fi, k, wi, bi, cIn] : [fi, k, wi, bi]);
      return {
        value: out,
        gradFunc: (dyArg: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
          const dy = dyArg as tf.Tensor;
          const [fs, ks, ws, bs, cs] = saved;
          const dk = tf.engine().runKernel('MambaoutGatedGeluGradConv', { dy, f: fs }, { hidden, channels: C }) as tf.Tensor4D;
          const cShape = [...fs.shape.slice(0, 3), C];
          const dc = tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: dk, filter: ws },
            { ...convAttrs, inputShape: cShape } as unknown as tf.NamedAttrMap) as tf.Tensor;
          const dw = cs
            ? tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: cs, dy: dk },
              { ...convAttrs, filterShape: ws.shape } as unknown as tf.NamedAttrMap) as tf.Tensor
            : tf.engine().runKernel('MambaoutGateConvFilterGrad', { f: fs, dk }, { offset, filterShape: ws.shape } as unknown as tf.NamedAttrMap) as tf.Tensor;
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

/** xn [N, H, W, C] (normalised block input) -> gated activation [N, H, W, h]; see the file header. */
export function gatedCnnMixer(xn: tf.Tensor4D, p: GatedCnnParams): tf.Tensor4D {
  const h = p.hidden;
  const C = p.convWeight.shape[2] as number;
  if (shouldFuse('MambaoutGatedGelu')) {
    const f = linear(xn, p.fc1Weight, p.fc1Bias) as tf.Tensor4D;
    return gatedConvGeluFused(f, p.convWeight as tf.Tensor4D, p.convBias as tf.Tensor1D, h);
  }
  const inF = xn.shape[3];
  const lead = xn.shape.slice(0, -1);
  const x2 = xn.reshape([-1, inF]) as tf.Tensor2D;
  const parts: tf.Tensor4D[] = [];
  let row = 0;
  for (const n of [h, h - C, C]) {
    const w = p.fc1Weight.slice([row, 0], [n, inF]) as tf.Tensor2D;
    const b = p.fc1Bias.slice([row], [n]);
    parts.push(tf.matMul(x2, w, false, true).add(b).reshape([...lead, n]) as tf.Tensor4D);
    row += n;
  }
  const [g, i, cc] = parts;
  const cConv = tf.depthwiseConv2d(cc, p.convWeight as tf.Tensor4D, 1, 'same').add(p.convBias);
  return gelu(g).mul(tf.concat([i, cConv], 3)) as tf.Tensor4D;
}

/**
 * The block after its LayerNorm: [residual +] fc2(gatedCnnMixer(xn)). With --amp on WebGPU (webgpuKernelSettings.bf16)
 * one op with bf16 intermediates (./gated_cnn_bf16.ts); else the mixer and fc2 (+ residual in its epilogue).
 */
export function gatedCnnBlock(xn: tf.Tensor4D, p: GatedBlockParams, residual?: tf.Tensor4D): tf.Tensor4D {
  if (shouldFuse('MambaoutGemm', 'bf16') && gatedBlockBf16Fits(xn.shape[3], p.hidden, p.convWeight)) return gatedBlockBf16(xn, p, residual);
  const gated = gatedCnnMixer(xn, p);
  return linear(gated, p.fc2Weight, p.fc2Bias, residual ? { residual } : {}) as tf.Tensor4D;
}

/** The fused gate alone (parity tests compare it with the op composition). */
export const gatedConvGeluForTests = gatedConvGeluFused;
