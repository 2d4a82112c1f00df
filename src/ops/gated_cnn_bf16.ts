/**
 * --amp on WebGPU: the GatedCNN block after its LayerNorm, y = [x +] fc2(gate(fc1(xn))), as one custom-gradient op
 * whose large intermediates are stored as bfloat16 (src/backend/kernels/webgpu/bf16.ts: two values per u32, f32 math,
 * f32 accumulation; weights, their gradients and the optimizer state stay f32).
 *
 *   forward:  f   = xn · W1ᵀ + b1          MambaoutGemm, bias epilogue, bf16 out         [M, 2h]  bf16
 *             k   = dwconv7x7(f[.., c])    MambaoutGateConv reading bf16 f               [M, C]   f32
 *             a   = gelu(g) * cat(i, k+bk) MambaoutGatedGelu bf16                        [M, h]   bf16
 *             y   = a · W2ᵀ + b2 [+ x]     MambaoutGemm, bf16 A, bias/residual epilogue  [M, C]   f32
 *   backward: da  = dy · W2 (bf16 out), dW2 = dyᵀ · a, db2 = Σ dy; dk, dc, dWconv (reading bf16 f), dbconv;
 *             df  = gate gradient (bf16 out), dxn = df · W1, dW1 = dfᵀ · xn, db1 = Σ df (bf16 reads).
 * Saved for the backward pass: xn (f32, the op's input), f and a (bf16: half the bytes of the f32 path's f and a),
 * k (f32). The block's input/output x and every gradient leaving the op are f32, so tfjs's autodiff, drop path and
 * the optimizers see float32 tensors only. bf16 needs no loss scaling (f32's exponent range).
 * Used by src/ops/gated_cnn.ts when webgpuKernelSettings.bf16 is on (`enableMixedPrecision`, --amp) and the shapes fit
 * (C % 4 == 0, h % 4 == 0: every MambaOut size).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { CustomGradFn } from './fused.js';

export interface GatedBlockParams {
  fc1Weight: tf.Tensor;
  fc1Bias: tf.Tensor;
  convWeight: tf.Tensor;
  convBias: tf.Tensor;
  fc2Weight: tf.Tensor;
  fc2Bias: tf.Tensor;
  hidden: number;
}

/** Whether the bf16 block handles these shapes. */
export function gatedBlockBf16Fits(C: number, hidden: number, convWeight: tf.Tensor): boolean {
  const [kh, kw] = convWeight.shape;
  return C % 4 === 0 && hidden % 4 === 0 && kh === kw && kh % 2 === 1;
}

type Block = (...t: tf.Tensor[]) => tf.Tensor;
const blocks = new Map<string, Block>();

const gemm = (a: tf.Tensor, b: tf.Tensor, attrs: { transA?: boolean; transB?: boolean; M: number; N: number; K: number; aBf16?: boolean; bBf16?: boolean; outBf16?: boolean },
  extra: { bias?: tf.Tensor; residual?: tf.Tensor } = {}): tf.Tensor =>
  tf.engine().runKernel('MambaoutGemm', { a, b, ...extra }, {
    transA: false, transB: false, aBf16: false, bBf16: false, outBf16: false, ...attrs,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;

function block(hidden: number, C: number, withResidual: boolean): Block {
  const key = `${hidden}_${C}_${withResidual}`;
  let fn = blocks.get(key);
  if (fn) return fn;
  const h = hidden;
  const offset = 2 * h - C;
  const convAttrs = { strides: [1, 1], pad: 'same', dilations: [1, 1], dimRoundingMode: undefined };
  fn = tf.customGrad(((...args: unknown[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xn, w1, b1, cw, cb, w2, b2, res] = args as tf.Tensor[];
    const [N, H, W] = xn.shape;
    const M = N * H * W;
    const x2 = tf.reshape(xn, [M, C]);
    const f = tf.reshape(gemm(x2, w1, { transB: true, M, N: 2 * h, K: C, outBf16: true }, { bias: b1 }), [N, H, W, h]);
    const k = tf.engine().runKernel('MambaoutGateConv', { f, filter: cw }, { offset, bf16: true }) as tf.Tensor;
    const a = tf.reshape(tf.engine().runKernel('MambaoutGatedGelu', { f, k, kBias: cb }, { hidden: h, bf16: true }) as tf.Tensor, [M, h / 2]);
    const y = gemm(a, w2, { transB: true, M, N: C, K: h, aBf16: true }, withResidual ? { bias: b2, residual: tf.reshape(res, [M, C]) } : { bias: b2 });
    save([x2, w1, f, k, cw, cb, a, w2]);
    return {
      value: tf.reshape(y, [N, H, W, C]),
      gradFunc: (dyArg: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [xs, w1s, fs, ks, cws, cbs, as, w2s] = saved;
        const dy = tf.reshape(dyArg as tf.Tensor, [M, C]);
        const da = gemm(dy, w2s, { M, N: h, K: C, outBf16: true });
        const dW2 = gemm(dy, as, { transA: true, M: C, N: h, K: M, bBf16: true });
        const db2 = tf.sum(dy, 0);
        const da4 = tf.reshape(da, [N, H, W, h / 2]);
        const dk = tf.engine().runKernel('MambaoutGatedGeluGradConv', { dy: da4, f: fs }, { hidden: h, channels: C, bf16: true }) as tf.Tensor;
        const dc = tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: dk, filter: cws },
          { ...convAttrs, inputShape: [N, H, W, C] } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const dcw = tf.engine().runKernel('MambaoutGateConvFilterGrad', { f: fs, dk },
          { offset, filterShape: cws.shape, bf16: true } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const dcb = tf.sum(dk, [0, 1, 2]);
        const df = tf.reshape(tf.engine().runKernel('MambaoutGatedGeluGrad', { dy: da4, f: fs, k: ks, kBias: cbs, dc }, { hidden: h, bf16: true }) as tf.Tensor, [M, h]);
        const dxn = gemm(df, w1s, { M, N: C, K: 2 * h, aBf16: true });
        const dW1 = gemm(df, xs, { transA: true, M: 2 * h, N: C, K: M, aBf16: true });
        const db1 = tf.engine().runKernel('MambaoutSumRowsBf16', { x: df }, {}) as tf.Tensor;
        const grads = [tf.reshape(dxn, [N, H, W, C]), dW1, db1, dcw, dcb, dW2, db2];
        return withResidual ? [...grads, dyArg as tf.Tensor] : grads;
      },
    };
  }) as unknown as CustomGradFn) as unknown as Block;
  blocks.set(key, fn);
  return fn;
}

/** [residual +] fc2(gate(fc1(xn))) with bf16 intermediates; xn [N, H, W, C] f32. Check `gatedBlockBf16Fits` first. */
export function gatedBlockBf16(xn: tf.Tensor4D, p: GatedBlockParams, residual?: tf.Tensor4D): tf.Tensor4D {
  const C = xn.shape[3];
  const args = [xn, p.fc1Weight, p.fc1Bias, p.convWeight, p.convBias, p.fc2Weight, p.fc2Bias];
  if (residual) args.push(residual);
  return block(p.hidden, C, residual !== undefined)(...args) as tf.Tensor4D;
}
