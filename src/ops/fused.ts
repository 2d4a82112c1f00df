/**
 * When an op may use one of our fused WebGPU kernels: the op asks here, never the model (tfjs-core's
 * ops/fused/mat_mul.ts pattern: `shouldFuse` inside the op, the unfused composition as the fallback).
 *
 * A fused kernel is used when the active backend is 'webgpu', our kernel of that name is registered there
 * (initWebGPU registers them) and the settings allow it (src/backend/kernels/webgpu/settings.ts: MAMBAOUT_WEBGPU_FUSED,
 * MAMBAOUT_WEBGPU_KERNELS, MAMBAOUT_WEBGPU_OFF). Other backends keep the op-by-op code and its parity tests.
 * This module imports tfjs and the settings object only (no Dawn), so every backend can load it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { webgpuKernelSettings, type WebGPUKernelSettings } from '../backend/kernels/webgpu/settings.js';

/** The function type tf.customGrad takes (its inputs are tensors followed by the save function). */
export type CustomGradFn = Parameters<typeof tf.customGrad>[0];

type Feature = Exclude<keyof WebGPUKernelSettings, 'fused'>;

/** Whether kernel `name` runs now (fused ops on, backend webgpu, kernel registered, and `feature` on if given). */
export function shouldFuse(name: string, feature?: Feature): boolean {
  if (!webgpuKernelSettings.fused || (feature !== undefined && !webgpuKernelSettings[feature])) return false;
  return tf.getBackend() === 'webgpu' && tf.getKernel(name, 'webgpu') !== undefined;
}

/** Switch every fused op on or off (A/B timing, parity tests). Returns the previous setting. */
export function setFusedOps(on: boolean): boolean {
  const prev = webgpuKernelSettings.fused;
  webgpuKernelSettings.fused = on;
  return prev;
}

/**
 * --amp: store the GatedCNN blocks' large intermediates as bfloat16 on WebGPU (f32 math and master weights; see
 * src/ops/gated_cnn_bf16.ts). Returns whether it takes effect now (backend webgpu with our kernels); elsewhere the
 * setting is left off and the caller keeps float32.
 */
export function enableMixedPrecision(on: boolean): boolean {
  webgpuKernelSettings.bf16 = on && shouldFuse('MambaoutGemm');
  return webgpuKernelSettings.bf16;
}

/** Whether the fused ops are active now (the LayerNorm kernel stands for the set). */
export function fusedOpsActive(): boolean {
  return shouldFuse('MambaoutLayerNorm');
}
