/**
 * Registers our WGSL kernels on tfjs's 'webgpu' backend in place of tfjs's own, keeping tfjs's kernel as the
 * fallback for the cases ours do not cover (NCHW, dilation > 1, ...). `unregisterWebGPUKernels()` restores
 * tfjs's kernels exactly (used by releaseWebGPU and by the benchmark to time the originals).
 *
 * Kernels: Conv2DBackpropFilter (split-K implicit-im2col matrix product), DepthwiseConv2dNativeBackpropFilter
 * (split reduction with a sliding register window). Both are the filter gradients of MambaOut's training step.
 * BatchMatMul (register-tiled, split-K for long reductions), DepthwiseConv2dNativeBackpropInput (tfjs's forward
 * depthwise program on a rotated filter) and Sum over leading axes (bias gradients: split column sums) replace
 * tfjs's for the cases they cover.
 *
 * Fused kernels under new names (no tfjs original; used through src/ops/ when the
 * backend is 'webgpu'): MambaoutLayerNorm / MambaoutLayerNormGrad, MambaoutGatedGelu / MambaoutGatedGeluGradConv /
 * MambaoutGatedGeluGrad (GatedCNN's gate), MambaoutAdam (Adam/AdamW update); MambaoutPrepareBatch (the prefetcher's
 * mixup/normalize/erasing on the uint8 batch, used by src/data/prefetch.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { conv2dBackpropFilterWebGPU } from './conv2d_backprop_filter.js';
import { conv2dBackpropInputWebGPU } from './conv2d_backprop_input.js';
import { conv2dForwardWebGPU } from './conv2d_forward.js';
import type { KernelArgs } from './util.js';
import { depthwiseBackpropFilterWebGPU } from './depthwise_backprop_filter.js';
import { batchMatMulKernel, gemmKernel, linearKernel } from './matmul.js';
import { depthwiseBackpropInputWebGPU } from './depthwise_backprop_input.js';
import { layerNormGradKernel, layerNormKernel } from './layer_norm.js';
import { gatedGeluGradConvKernel, gatedGeluGradKernel, gatedGeluKernel, geluGradKernel } from './gated_gelu.js';
import { adamKernel } from './adam.js';
import { adamMultiKernel } from './adam_multi.js';
import { sumRowsBf16Kernel, sumRowsKernel } from './sum_rows.js';
import { gateConvFilterGradKernel, gateConvKernel } from './gate_conv.js';
import { prepareBatchKernel } from './prepare_batch.js';

export {
  conv2dBackpropFilterWebGPU,
  getConv2DBackpropFilterTuning,
  setConv2DBackpropFilterTuning,
  type Conv2DBackpropFilterTuning,
} from './conv2d_backprop_filter.js';
export {
  depthwiseBackpropFilterWebGPU,
  getDepthwiseBackpropFilterTuning,
  setDepthwiseBackpropFilterTuning,
  type DepthwiseBackpropFilterTuning,
} from './depthwise_backprop_filter.js';

export { getMatMulTuning, setMatMulTuning, type MatMulTuning } from './matmul.js';
export { GEMM_TILES, GEMM_RULES, gemmTuning, setGemmTuning, type GemmTile } from './matmul_tiles.js';
export { describeWebGPUKernelSettings, setWebGPUKernelSettings, webgpuKernelSettings, V1_SETTINGS, type WebGPUKernelSettings } from './settings.js';

type OurKernel = (args: KernelArgs, fallback?: KernelFunc) => TensorInfo | TensorInfo[];

const OURS: Array<{ kernelName: string; impl: OurKernel }> = [
  { kernelName: 'Conv2DBackpropFilter', impl: conv2dBackpropFilterWebGPU },
  { kernelName: 'Conv2DBackpropInput', impl: conv2dBackpropInputWebGPU },
  { kernelName: 'Conv2D', impl: conv2dForwardWebGPU },
  { kernelName: 'FusedConv2D', impl: conv2dForwardWebGPU },
  { kernelName: 'DepthwiseConv2dNativeBackpropFilter', impl: depthwiseBackpropFilterWebGPU },
  { kernelName: 'BatchMatMul', impl: batchMatMulKernel },
  { kernelName: 'DepthwiseConv2dNativeBackpropInput', impl: depthwiseBackpropInputWebGPU },
  { kernelName: 'Sum', impl: sumRowsKernel },
  // New kernels (no tfjs original).
  { kernelName: 'MambaoutLayerNorm', impl: layerNormKernel },
  { kernelName: 'MambaoutLayerNormGrad', impl: layerNormGradKernel },
  { kernelName: 'MambaoutGatedGelu', impl: gatedGeluKernel },
  { kernelName: 'MambaoutGatedGeluGradConv', impl: gatedGeluGradConvKernel },
  { kernelName: 'MambaoutGatedGeluGrad', impl: gatedGeluGradKernel },
  { kernelName: 'MambaoutAdam', impl: adamKernel },
  { kernelName: 'MambaoutLinear', impl: linearKernel },
  { kernelName: 'MambaoutGeluGrad', impl: geluGradKernel },
  { kernelName: 'MambaoutAdamMulti', impl: adamMultiKernel },
  // Our conv under its own name (src/ops/conv.ts registers its gradient); tfjs's FusedConv2D covers the rest.
  { kernelName: 'MambaoutConv2D', impl: (args) => conv2dForwardWebGPU(args, originals.get('FusedConv2D')?.kernelFunc) },
  { kernelName: 'MambaoutGateConv', impl: gateConvKernel },
  { kernelName: 'MambaoutGemm', impl: gemmKernel },
  { kernelName: 'MambaoutSumRowsBf16', impl: sumRowsBf16Kernel },
  { kernelName: 'MambaoutGateConvFilterGrad', impl: gateConvFilterGradKernel },
  { kernelName: 'MambaoutPrepareBatch', impl: prepareBatchKernel }, // the prefetcher's batch work (src/data/prefetch.ts)
];

/** Names of the kernels we replace on 'webgpu'. */
export const WEBGPU_KERNEL_NAMES: readonly string[] = OURS.map((k) => k.kernelName);

/** tfjs's kernel configs we replaced, to restore them. */
const originals = new Map<string, KernelConfig>();
/** Our registered configs, to recognise them. */
const registered = new Map<string, KernelConfig>();

/** Replace tfjs's webgpu kernels by ours (idempotent). Returns the kernel names now ours. */
export function registerWebGPUKernels(): string[] {
  for (const { kernelName, impl } of OURS) {
    const current = tf.getKernel(kernelName, 'webgpu');
    const mine = registered.get(kernelName);
    if (current && mine && current.kernelFunc === mine.kernelFunc) continue;
    let fallback: KernelFunc | undefined;
    if (current) {
      originals.set(kernelName, current);
      fallback = current.kernelFunc;
      tf.unregisterKernel(kernelName, 'webgpu');
    }
    const config: KernelConfig = {
      kernelName,
      backendName: 'webgpu',
      kernelFunc: ((args: KernelArgs) => impl(args, fallback)) as unknown as KernelFunc,
    };
    tf.registerKernel(config);
    registered.set(kernelName, config);
  }
  return OURS.map((k) => k.kernelName);
}

/** Put tfjs's original kernels back (idempotent). */
export function unregisterWebGPUKernels(): void {
  for (const { kernelName } of OURS) {
    const mine = registered.get(kernelName);
    const current = tf.getKernel(kernelName, 'webgpu');
    if (!mine || !current || current.kernelFunc !== mine.kernelFunc) continue;
    tf.unregisterKernel(kernelName, 'webgpu');
    registered.delete(kernelName);
    const orig = originals.get(kernelName);
    if (orig) tf.registerKernel(orig);
  }
}

/** Whether our kernels are the ones registered now. */
export function webgpuKernelsRegistered(): boolean {
  return OURS.every(({ kernelName }) => {
    const mine = registered.get(kernelName);
    return mine !== undefined && tf.getKernel(kernelName, 'webgpu')?.kernelFunc === mine.kernelFunc;
  });
}
