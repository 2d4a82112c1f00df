/**
 * 2-D convolution with bias, NHWC, HWIO filter (MambaOut's stem and downsampling convs).
 *
 * WebGPU: kernel MambaoutConv2D (our implicit-GEMM conv with the bias in its epilogue,
 * src/backend/kernels/webgpu/conv2d_forward.ts) with a registered gradient whose parts are computed only for the
 * inputs that need one. tf.fused.conv2d's custom gradient computes all three eagerly, so every training step also
 * computed the input gradient of the stem's first conv, i.e. of the image (a Conv2DBackpropInput over
 * [B, 224, 224, 3] that nothing reads). Elsewhere: tf.fused.conv2d, which adds the bias inside its kernel
 * (webgpu, wasm; cpu adds it after, the same values).
 */
import * as tf from '@tensorflow/tfjs-core';
import { shouldFuse } from './fused.js';

export type ConvPad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];

interface ConvAttrs {
  strides: [number, number];
  pad: ConvPad;
  dataFormat: 'NHWC';
  dilations: [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

let gradientRegistered = false;

function registerGradient(): void {
  if (gradientRegistered) return;
  gradientRegistered = true;
  tf.registerGradient({
    kernelName: 'MambaoutConv2D',
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const g = dy as tf.Tensor4D;
      const [x, filter] = saved;
      const a = attrs as unknown as ConvAttrs;
      const conv = { strides: a.strides, pad: a.pad, dataFormat: 'NHWC', dimRoundingMode: a.dimRoundingMode };
      return {
        x: () => tf.engine().runKernel('Conv2DBackpropInput', { dy: g, filter }, { ...conv, inputShape: x.shape } as unknown as tf.NamedAttrMap) as tf.Tensor,
        filter: () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: g }, { ...conv, filterShape: filter.shape } as unknown as tf.NamedAttrMap) as tf.Tensor,
        bias: () => tf.sum(g, [0, 1, 2]),
      };
    },
  });
}

/** conv2d(x, filter, stride, pad) + bias; see the file header. */
export function conv2dBias(x: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor1D, stride: number, pad: ConvPad): tf.Tensor4D {
  if (shouldFuse('MambaoutConv2D', 'convForward')) {
    registerGradient();
    const attrs: ConvAttrs = { strides: [stride, stride], pad, dataFormat: 'NHWC', dilations: [1, 1] };
    return tf.engine().runKernel('MambaoutConv2D', { x, filter, bias }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
  }
  return tf.fused.conv2d({ x, filter, strides: stride, pad, bias });
}
