/**
 * Which of our WebGPU kernels are in use: one object, filled from src/settings.ts when first used and changeable at
 * run time (benchmarks compare old and new kernels in one process). The variables (documented there):
 *
 *   MAMBAOUT_WEBGPU_FUSED=0     the model runs op by op (no fused LayerNorm / gate / Adam / Linear kernels)
 *   MAMBAOUT_WEBGPU_KERNELS=v1  the kernels of the first WebGPU work (main at 1652563): switches off everything
 *                               listed below at once, for old-vs-new comparisons in one GPU run
 *   MAMBAOUT_WEBGPU_OFF=a,b     switch off single features by name (the fields below), e.g. `gemm,adamMulti`
 *
 *   MAMBAOUT_WEBGPU_AMP=1       bf16 activations from the start (what --amp turns on)
 *
 * The model and the optimizers never read these: the ops in src/ops/ decide inside (tfjs-core's fused-op pattern).
 */
import { fromSettingsOnFirstUse, settings, WEBGPU_FEATURES } from '../../../settings.js';

export interface WebGPUKernelSettings {
  /** Fused LayerNorm, gated-GELU, spatial-mean and Adam kernels (the first WebGPU work). */
  fused: boolean;
  /** Register-tiled vec4 GEMM with the tile table (./matmul_tiles.ts) for BatchMatMul, else the v1 kernel. */
  gemm: boolean;
  /** Linear layers as one kernel: matmul + bias (+ residual add, + GELU) in the GEMM epilogue. */
  linearEpilogue: boolean;
  /** LayerNorm followed by GELU (the stem) as one kernel. */
  layerNormGelu: boolean;
  /** One Adam/AdamW kernel call per parameter group, in place (a dispatch per parameter: ./adam_multi.ts). */
  adamMulti: boolean;
  /** Our Conv2DBackpropInput (implicit GEMM split by output parity) instead of tfjs's. */
  convBackpropInput: boolean;
  /** Our Conv2D / FusedConv2D forward (implicit GEMM, bias in the epilogue) instead of tfjs's. */
  convForward: boolean;
  /** The 7x7 depthwise conv of the gate reads its channels straight from fc1's output (no Slice). */
  gateConv: boolean;
  /** Reuse bind groups for identical (layout, buffers) pairs instead of creating one per dispatch. */
  bindGroupCache: boolean;
  /** Tensors created from host values reach the GPU by queue.writeBuffer, not a new staging buffer each (webgpu_hooks.ts). */
  directUpload: boolean;
  /** One persistent uniform buffer per distinct uniform block instead of a pooled buffer written per dispatch (uniforms.ts). */
  uniformCache: boolean;
  /** A step marked with markPoolStep gets the last marked step's buffers where they are free (webgpu_hooks.ts). */
  poolAffinity: boolean;
  /** MambaoutAdamMulti reads each gradient from a slot of its own (one copy) instead of the buffer it came in. */
  gradSlots: boolean;
  /**
   * --amp: the GatedCNN block stores its large intermediates as bfloat16 (src/ops/gated_cnn_bf16.ts). Off by default;
   * the training loop turns it on for --amp (src/ops/fused.ts `enableMixedPrecision`), benchmarks with
   * MAMBAOUT_WEBGPU_AMP=1 or `npm run bench -- --amp`.
   */
  bf16: boolean;
}

const FEATURES = WEBGPU_FEATURES;

function fromSettings(): WebGPUKernelSettings {
  const v1 = settings.webgpuKernels === 'v1';
  const off = new Set<string>(settings.webgpuOff);
  const s: WebGPUKernelSettings = {
    fused: settings.webgpuFused,
    gemm: true,
    linearEpilogue: true,
    layerNormGelu: true,
    adamMulti: true,
    convBackpropInput: true,
    convForward: true,
    gateConv: true,
    bindGroupCache: true,
    directUpload: true,
    uniformCache: true,
    poolAffinity: true,
    gradSlots: true,
    bf16: settings.webgpuAmp,
  };
  for (const f of FEATURES) if (v1 || off.has(f)) s[f] = false;
  if (off.has('fused')) s.fused = false;
  return s;
}

/** The live settings (mutate through `setWebGPUKernelSettings`); read from the environment when first used. */
export const webgpuKernelSettings: WebGPUKernelSettings = fromSettingsOnFirstUse(['fused', ...FEATURES, 'bf16'], fromSettings);

/** Change some settings; returns the previous values (to restore). */
export function setWebGPUKernelSettings(s: Partial<WebGPUKernelSettings>): WebGPUKernelSettings {
  const prev = { ...webgpuKernelSettings };
  Object.assign(webgpuKernelSettings, s);
  return prev;
}

/** Settings of the kernels as on main before this work (everything new off). */
export const V1_SETTINGS: Partial<WebGPUKernelSettings> = Object.fromEntries(FEATURES.map((f) => [f, false]));

/** A short description for logs: the features that are on. */
export function describeWebGPUKernelSettings(s: WebGPUKernelSettings = webgpuKernelSettings): string {
  if (!s.fused) return 'op-by-op (fused kernels off)';
  const on = FEATURES.filter((f) => s[f]);
  const amp = s.bf16 ? ', bf16 activations (--amp)' : '';
  return (on.length === FEATURES.length ? 'all new kernels' : on.length === 0 ? 'v1 kernels' : `v1 + ${on.join(', ')}`) + amp;
}
