/**
 * DepthwiseConv2dNativeBackpropInput for the tfjs WebGPU backend, as a forward depthwise convolution.
 *
 * For stride 1, dilation 1 and channel multiplier 1 the input gradient is a depthwise convolution of dy with the
 * filter rotated by 180 degrees:
 *   dx[n, i, j, c] = Σ_{a,b} dy[n, i - (FH-1-padT) + a, j - (FW-1-padL) + b, c] * W[FH-1-a, FW-1-b, c]
 * i.e. tfjs's (fast, vec4) DepthwiseConv2dNative on dy with padding (FH-1-padT, FH-1-padB) x (FW-1-padL, FW-1-padR).
 * tfjs's own backprop-input program is ~8x slower than its forward program for MambaOut's 7x7 'same'
 * convolutions (30 ms vs 3.5 ms per femto step at batch 64 on an H200).
 *
 * Not covered (tfjs's kernel is used): strides or dilations other than 1, channel multiplier > 1, paddings larger
 * than the filter, non-float32 inputs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';
import type { DepthwiseConv2dNativeBackpropInputAttrs, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelArgs } from './util.js';
import { dispatch2D, disposeInfos, runCustomProgram, uniformStruct } from './dispatch.js';

function rotateSource(): string {
  return `
${uniformStruct([{ name: 'fh', type: 'i32', value: 0 }, { name: 'fw', type: 'i32', value: 0 }, { name: 'inner', type: 'i32', value: 0 }], 2)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> w : array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let i = i32(wid.y * nwg.x + wid.x) * 64 + i32(lidx);
  if (i >= u.fh * u.fw * u.inner) { return; }
  let pos = i / u.inner;
  let rest = i - pos * u.inner;
  let a = pos / u.fw;
  let b = pos - a * u.fw;
  result[i] = w[((u.fh - 1 - a) * u.fw + (u.fw - 1 - b)) * u.inner + rest];
}
`;
}

/** Our DepthwiseConv2dNativeBackpropInput; `fallback` (tfjs's kernel) handles what it does not cover. */
export function depthwiseBackpropInputWebGPU(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { dy, filter } = args.inputs;
  const attrs = (args.attrs ?? {}) as unknown as DepthwiseConv2dNativeBackpropInputAttrs;
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('DepthwiseConv2dNativeBackpropInput: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  const pair = (v: number | [number, number] | undefined): [number, number] => (v === undefined ? [1, 1] : typeof v === 'number' ? [v, v] : v);
  const [sh, sw] = pair(attrs.strides);
  const [dh, dw] = pair(attrs.dilations);
  const [fh, fw, inC, mult] = filter.shape;
  if (sh !== 1 || sw !== 1 || dh !== 1 || dw !== 1 || mult !== 1 || dy.dtype !== 'float32' || filter.dtype !== 'float32' || dy.shape.length !== 4) {
    return useFallback();
  }
  const conv = backend_util.computeConv2DInfo(attrs.inputShape, filter.shape as [number, number, number, number], 1, 1, attrs.pad, attrs.dimRoundingMode, true);
  const { top, bottom, left, right } = conv.padInfo;
  const pads = [fh - 1 - top, fh - 1 - bottom, fw - 1 - left, fw - 1 - right];
  if (pads.some((p) => p < 0) || conv.outHeight !== dy.shape[1] || conv.outWidth !== dy.shape[2]) return useFallback();
  const forward = tf.getKernel('DepthwiseConv2dNative', 'webgpu');
  if (!forward) return useFallback();
  const inner = inC * mult;
  const [rotated] = runCustomProgram(args.backend, {
    name: 'RotateFilter180',
    key: 'mambaout_rotate_filter_180',
    code: rotateSource,
    outputShapes: [filter.shape.slice()],
    dispatch: dispatch2D(args.backend, Math.ceil((fh * fw * inner) / 64)),
    uniforms: [{ name: 'fh', type: 'i32', value: fh }, { name: 'fw', type: 'i32', value: fw }, { name: 'inner', type: 'i32', value: inner }],
  }, [filter]);
  const explicit: backend_util.ExplicitPadding = [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]];
  const out = forward.kernelFunc({
    inputs: { x: dy, filter: rotated },
    backend: args.backend as tf.KernelBackend,
    attrs: { strides: [1, 1], pad: explicit, dilations: [1, 1], dataFormat: 'NHWC' } as unknown as tf.NamedAttrMap,
  }) as TensorInfo;
  disposeInfos(args.backend, [rotated]);
  return out;
}
