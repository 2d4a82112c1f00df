/**
 * WebGPU (Dawn) device check: adapter/feature report, parity of our WGSL kernels against the cpu backend on
 * random shapes, and timing of tfjs's original kernels vs ours for MambaOut's shapes.
 *
 *   node --import tsx scripts/gpu_kernels.ts [--cases 60] [--seed 1] [--batches 64,128] [--iters 20]
 *        [--variants] [--variant-batch 64] [--f64-batch 64] [--no-parity] [--no-timing] [--no-probe]
 *
 * Helper modes (used by the probes, in child processes so that each gets a fresh Dawn/Vulkan instance):
 *   --list-adapters [--flag backend=opengles] [--low-power]   print the adapters dawn.node lists (JSON)
 *   --exit-probe                                              init, run one op, releaseWebGPU, then return
 *
 * Reads run with `await t.data()`: tfjs-webgpu's dataSync needs OffscreenCanvas, which Node lacks.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';
import '../src/backend/tfjs.js'; // the cpu backend and tfjs's gradients
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { initWebGPU, listWebGPUAdapters, releaseWebGPU, webgpuDevice, type WebGPUAdapterEntry } from '../src/backend/webgpu.js';
import {
  registerWebGPUKernels,
  setConv2DBackpropFilterTuning,
  setDepthwiseBackpropFilterTuning,
  unregisterWebGPUKernels,
  type Conv2DBackpropFilterTuning,
  type DepthwiseBackpropFilterTuning,
} from '../src/backend/kernels/webgpu/index.js';
import { Rng } from '../src/utils/rng.js';

export type KernelName = 'Conv2DBackpropFilter' | 'DepthwiseConv2dNativeBackpropFilter';

/** One filter-gradient problem. */
export interface ParityCase {
  kernel: KernelName;
  xShape: [number, number, number, number];
  /** [FH, FW, Cin, Cout] (conv) or [FH, FW, C, multiplier] (depthwise). */
  filterShape: [number, number, number, number];
  strides: [number, number];
  pad: 'same' | 'valid' | number | backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  /** Depthwise only. */
  dilations?: [number, number];
  /** Conv only ('NCHW' exercises the fallback). */
  dataFormat?: 'NHWC' | 'NCHW';
}

export interface ParityResult {
  maxAbsDiff: number;
  maxRef: number;
  /** maxAbsDiff / maxRef */
  rel: number;
  size: number;
}

export function describeCase(c: ParityCase): string {
  const pad = typeof c.pad === 'object' ? `[${c.pad[1].join(',')}|${c.pad[2].join(',')}]` : String(c.pad);
  const kind = c.kernel === 'Conv2DBackpropFilter' ? 'conv' : 'dw';
  const extra = (c.dilations && (c.dilations[0] > 1 || c.dilations[1] > 1) ? ` dil${c.dilations.join('x')}` : '') +
    (c.dataFormat === 'NCHW' ? ' NCHW' : '') + (c.dimRoundingMode ? ` ${c.dimRoundingMode}` : '');
  return `${kind} x[${c.xShape.join(',')}] f[${c.filterShape.join(',')}] s${c.strides.join('x')} pad ${pad}${extra}`;
}

function convInfoOf(c: ParityCase): backend_util.Conv2DInfo {
  const depthwise = c.kernel === 'DepthwiseConv2dNativeBackpropFilter';
  return backend_util.computeConv2DInfo(c.xShape, c.filterShape, c.strides, depthwise ? (c.dilations ?? 1) : 1, c.pad,
    c.dimRoundingMode, depthwise, c.dataFormat === 'NCHW' ? 'channelsFirst' : 'channelsLast');
}

/** dy's shape for the case, or null when the output would be empty. */
export function dyShapeOf(c: ParityCase): [number, number, number, number] | null {
  let info: backend_util.Conv2DInfo;
  try {
    info = convInfoOf(c);
  } catch {
    return null;
  }
  if (info.outHeight < 1 || info.outWidth < 1) return null;
  return info.outShape;
}

/** Random case in the brief's ranges: N 1..3, H/W 5..17, C 1..19, kernel 3/7 (sometimes 1/5/2x5), stride 1/2. */
export function randomCase(rng: Rng, kernel: KernelName): ParityCase {
  for (;;) {
    const n = rng.randint(1, 3);
    const h = rng.randint(5, 17);
    const w = rng.randint(5, 17);
    const cin = rng.randint(1, 19);
    const k = [3, 7, 3, 7, 1, 5][rng.randrange(0, 6)];
    const fh = k;
    const fw = rng.random() < 0.15 ? [1, 3, 5][rng.randrange(0, 3)] : k;
    const s = rng.randint(1, 2);
    const strides: [number, number] = rng.random() < 0.15 ? [s, 3 - s] : [s, s];
    const r = rng.random();
    let pad: ParityCase['pad'];
    let dimRoundingMode: ParityCase['dimRoundingMode'];
    if (r < 0.35) pad = 'same';
    else if (r < 0.6) pad = 'valid';
    else if (r < 0.75) {
      pad = rng.randint(0, 3);
      dimRoundingMode = (['floor', 'ceil', 'round'] as const)[rng.randrange(0, 3)];
    } else {
      pad = [[0, 0], [rng.randint(0, 3), rng.randint(0, 3)], [rng.randint(0, 3), rng.randint(0, 3)], [0, 0]];
    }
    const last = kernel === 'Conv2DBackpropFilter' ? rng.randint(1, 19) : rng.randint(1, 2);
    const c: ParityCase = { kernel, xShape: [n, h, w, cin], filterShape: [fh, fw, cin, last], strides, pad, dimRoundingMode };
    if (kernel === 'DepthwiseConv2dNativeBackpropFilter') c.dilations = [1, 1];
    if (dyShapeOf(c) !== null) return c;
  }
}

/** Fixed cases: MambaOut-like configurations at small size, multi-tile/multi-split sizes, and fallbacks. */
export function fixedCases(): ParityCase[] {
  const P1: backend_util.ExplicitPadding = [[0, 0], [1, 1], [1, 1], [0, 0]];
  const conv = (xShape: ParityCase['xShape'], cout: number, k: number, s: number, pad: ParityCase['pad']): ParityCase =>
    ({ kernel: 'Conv2DBackpropFilter', xShape, filterShape: [k, k, xShape[3], cout], strides: [s, s], pad });
  const dw = (xShape: ParityCase['xShape'], k: number, s: number, pad: ParityCase['pad'], mult = 1): ParityCase =>
    ({ kernel: 'DepthwiseConv2dNativeBackpropFilter', xShape, filterShape: [k, k, xShape[3], mult], strides: [s, s], pad, dilations: [1, 1] });
  return [
    conv([2, 32, 32, 3], 24, 3, 2, P1), // stem 1
    conv([2, 16, 16, 24], 48, 3, 2, P1), // stem 2
    conv([2, 14, 14, 48], 96, 3, 2, P1), // downsample
    conv([1, 9, 9, 130], 70, 3, 2, P1), // K = 1170: many K tiles, 2 Cout tiles
    conv([3, 33, 31, 40], 70, 3, 1, 'same'), // many P splits
    conv([1, 5, 5, 4], 3, 5, 1, 'valid'), // single position
    dw([2, 28, 28, 48], 7, 1, 'same'),
    dw([2, 14, 14, 96], 7, 1, [[0, 0], [3, 3], [3, 3], [0, 0]]),
    dw([3, 7, 7, 40], 7, 1, 'same', 2), // channel multiplier
    dw([2, 30, 29, 70], 7, 2, 'same'),
    dw([1, 6, 6, 5], 3, 2, 'valid'),
    // Fallbacks to tfjs's kernels:
    { ...conv([2, 9, 9, 5], 7, 3, 1, 'same'), dataFormat: 'NCHW', xShape: [2, 5, 9, 9], filterShape: [3, 3, 5, 7] },
    { ...dw([2, 11, 11, 6], 3, 1, 'same'), dilations: [2, 2] },
  ];
}

function randomData(rng: Rng, size: number): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < size; i++) a[i] = rng.normal();
  return a;
}

function attrsOf(c: ParityCase): tf.NamedAttrMap {
  if (c.kernel === 'Conv2DBackpropFilter') {
    return { strides: c.strides, pad: c.pad, dataFormat: c.dataFormat ?? 'NHWC', dimRoundingMode: c.dimRoundingMode, filterShape: c.filterShape } as unknown as tf.NamedAttrMap;
  }
  return { strides: c.strides, dilations: c.dilations ?? [1, 1], pad: c.pad, dimRoundingMode: c.dimRoundingMode, filterShape: c.filterShape } as unknown as tf.NamedAttrMap;
}

async function runOn(backendName: string, c: ParityCase, x: Float32Array, dy: Float32Array, dyShape: number[]): Promise<Float32Array> {
  await tf.setBackend(backendName);
  const tx = tf.tensor(x, c.xShape);
  const tdy = tf.tensor(dy, dyShape);
  const out = tf.engine().runKernel(c.kernel, { x: tx, dy: tdy }, attrsOf(c)) as tf.Tensor;
  const vals = (await out.data()) as Float32Array;
  tf.dispose([tx, tdy, out]);
  return vals;
}

/**
 * Compute the case on 'webgpu' (whatever kernels are registered there) and on 'cpu' from the same random data;
 * leaves 'webgpu' active.
 */
export async function runParityCase(c: ParityCase, rng: Rng): Promise<ParityResult> {
  const dyShape = dyShapeOf(c);
  if (dyShape === null) throw new Error(`empty output for ${describeCase(c)}`);
  const x = randomData(rng, c.xShape.reduce((a, b) => a * b, 1));
  const dy = randomData(rng, dyShape.reduce((a, b) => a * b, 1));
  const gpu = await runOn('webgpu', c, x, dy, dyShape);
  const cpu = await runOn('cpu', c, x, dy, dyShape);
  await tf.setBackend('webgpu');
  if (gpu.length !== cpu.length) throw new Error(`size mismatch ${gpu.length} vs ${cpu.length}`);
  let maxAbsDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < cpu.length; i++) {
    const d = Math.abs(gpu[i] - cpu[i]);
    if (!(d <= maxAbsDiff)) maxAbsDiff = Number.isNaN(d) ? Infinity : d;
    maxRef = Math.max(maxRef, Math.abs(cpu[i]));
  }
  return { maxAbsDiff, maxRef, rel: maxAbsDiff / Math.max(maxRef, 1e-30), size: cpu.length };
}

// ---------------------------------------------------------------------------------------------------------
// Timing

interface TimeResult {
  wallMs: number;
  gpuMs: number;
  iters: number;
}

function flush(): Promise<undefined> {
  const backend = tf.backend() as unknown as WebGPUBackend;
  // submitQueue() finishes the command encoder without ending tfjs's open compute pass: end it first.
  backend.ensureCommandEncoderReady();
  backend.endComputePassEncoder();
  backend.submitQueue();
  return backend.device.queue.onSubmittedWorkDone();
}

async function timeKernel(kernel: KernelName, x: tf.Tensor, dy: tf.Tensor, attrs: tf.NamedAttrMap, maxIters: number, budgetMs: number): Promise<TimeResult> {
  const run = (): void => {
    const o = tf.engine().runKernel(kernel, { x, dy }, attrs) as tf.Tensor;
    o.dispose();
  };
  // Warm-up (pipeline compile) and a first estimate.
  run();
  await flush();
  let t0 = performance.now();
  run();
  await flush();
  const first = performance.now() - t0;
  const iters = Math.max(1, Math.min(maxIters, Math.floor(budgetMs / Math.max(first, 0.01))));
  t0 = performance.now();
  for (let i = 0; i < iters; i++) run();
  await flush();
  const wallMs = (performance.now() - t0) / iters;
  // GPU time from timestamp queries (tfjs's tf.time: each program in its own pass), median of 7 (3 for slow ones).
  const gpu: number[] = [];
  const reps = first > 50 ? 3 : 7;
  for (let i = 0; i < reps; i++) {
    const info = await tf.time(run);
    gpu.push(info.kernelMs as number);
  }
  gpu.sort((a, b) => a - b);
  return { wallMs, gpuMs: gpu[(reps - 1) / 2], iters };
}

async function resultOf(kernel: KernelName, x: tf.Tensor, dy: tf.Tensor, attrs: tf.NamedAttrMap): Promise<Float32Array> {
  const o = tf.engine().runKernel(kernel, { x, dy }, attrs) as tf.Tensor;
  const v = (await o.data()) as Float32Array;
  o.dispose();
  return v;
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(m, 1e-30);
}

/** Deterministic, non-trivial GPU data without a CPU round trip of the big arrays. */
function gpuData(shape: number[], phase: number): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tidy(() => tf.sin(tf.add(tf.mul(tf.range(0, size, 1, 'float32'), 0.7548776662), phase)).reshape(shape));
}

interface TimingShape {
  kernel: KernelName;
  /** [H, W, C] of x without the batch. */
  hwc: [number, number, number];
  /** Cout (conv) or multiplier (depthwise). */
  last: number;
  k: number;
  stride: number;
}

const MAMBAOUT_SHAPES: TimingShape[] = [
  { kernel: 'DepthwiseConv2dNativeBackpropFilter', hwc: [56, 56, 48], last: 1, k: 7, stride: 1 },
  { kernel: 'DepthwiseConv2dNativeBackpropFilter', hwc: [28, 28, 96], last: 1, k: 7, stride: 1 },
  { kernel: 'DepthwiseConv2dNativeBackpropFilter', hwc: [14, 14, 192], last: 1, k: 7, stride: 1 },
  { kernel: 'DepthwiseConv2dNativeBackpropFilter', hwc: [7, 7, 288], last: 1, k: 7, stride: 1 },
  { kernel: 'Conv2DBackpropFilter', hwc: [224, 224, 3], last: 24, k: 3, stride: 2 },
  { kernel: 'Conv2DBackpropFilter', hwc: [112, 112, 24], last: 48, k: 3, stride: 2 },
  { kernel: 'Conv2DBackpropFilter', hwc: [56, 56, 48], last: 96, k: 3, stride: 2 },
  { kernel: 'Conv2DBackpropFilter', hwc: [28, 28, 96], last: 192, k: 3, stride: 2 },
  { kernel: 'Conv2DBackpropFilter', hwc: [14, 14, 192], last: 288, k: 3, stride: 2 },
];

function caseOfShape(s: TimingShape, batch: number): ParityCase {
  const xShape: ParityCase['xShape'] = [batch, s.hwc[0], s.hwc[1], s.hwc[2]];
  if (s.kernel === 'DepthwiseConv2dNativeBackpropFilter') {
    return { kernel: s.kernel, xShape, filterShape: [s.k, s.k, s.hwc[2], s.last], strides: [1, 1], pad: 'same', dilations: [1, 1] };
  }
  const p = (s.k - 1) / 2; // MambaOut's stem/downsample: k3 s2 p1 (explicit, like PyTorch)
  return { kernel: s.kernel, xShape, filterShape: [s.k, s.k, s.hwc[2], s.last], strides: [s.stride, s.stride], pad: [[0, 0], [p, p], [p, p], [0, 0]] };
}

function flopsOf(c: ParityCase): number {
  const dyShape = dyShapeOf(c)!;
  const positions = dyShape[0] * dyShape[1] * dyShape[2];
  const [fh, fw, cin, last] = c.filterShape;
  return 2 * positions * fh * fw * (c.kernel === 'Conv2DBackpropFilter' ? cin * last : cin * last);
}

const fmt = (v: number, d = 3): string => (v >= 100 ? v.toFixed(1) : v >= 10 ? v.toFixed(2) : v.toFixed(d));

/** Keep the GPU busy for ~1 s so that clocks are up before the first timed kernel. */
async function warmUpGpu(): Promise<void> {
  const c = caseOfShape(MAMBAOUT_SHAPES[0], 64);
  const x = gpuData(c.xShape, 0.3);
  const dy = gpuData(dyShapeOf(c)!, 1.1);
  const t0 = performance.now();
  while (performance.now() - t0 < 1000) {
    for (let i = 0; i < 20; i++) (tf.engine().runKernel(c.kernel, { x, dy }, attrsOf(c)) as tf.Tensor).dispose();
    await flush();
  }
  tf.dispose([x, dy]);
}

/** Filter gradient in float64 on the CPU (NHWC, dilation 1), as the accuracy reference. */
export function filterGradF64(c: ParityCase, x: Float32Array, dy: Float32Array): Float64Array {
  const info = convInfoOf(c);
  const [fh, fw, cin, last] = c.filterShape;
  const depthwise = c.kernel === 'DepthwiseConv2dNativeBackpropFilter';
  const outC = depthwise ? cin * last : last;
  const out = new Float64Array(fh * fw * cin * last);
  const { inHeight: H, inWidth: W, outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  for (let n = 0; n < info.batchSize; n++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const dyBase = ((n * OH + oh) * OW + ow) * outC;
        for (let kh = 0; kh < fh; kh++) {
          const ih = oh * sh - top + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < fw; kw++) {
            const iw = ow * sw - left + kw;
            if (iw < 0 || iw >= W) continue;
            const xBase = ((n * H + ih) * W + iw) * cin;
            const oBase = (kh * fw + kw) * cin * last;
            for (let ci = 0; ci < cin; ci++) {
              const xv = x[xBase + ci];
              if (depthwise) {
                for (let m = 0; m < last; m++) out[oBase + ci * last + m] += xv * dy[dyBase + ci * last + m];
              } else {
                const o = oBase + ci * last;
                for (let co = 0; co < last; co++) out[o + co] += xv * dy[dyBase + co];
              }
            }
          }
        }
      }
    }
  }
  return out;
}

function relErrVs(a: Float32Array, ref: Float64Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(a[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return d / Math.max(m, 1e-300);
}

/** Accuracy of ours and of tfjs's kernels against a float64 reference on full-size MambaOut shapes. */
async function f64Table(batch: number): Promise<void> {
  console.log(`\n## Accuracy vs float64 (batch ${batch}, same GPU inputs): max|err| / max|ref|\n`);
  for (const s of [MAMBAOUT_SHAPES[0], MAMBAOUT_SHAPES[3], MAMBAOUT_SHAPES[4]]) {
    const c = caseOfShape(s, batch);
    const x = gpuData(c.xShape, 0.3);
    const dy = gpuData(dyShapeOf(c)!, 1.1);
    const attrs = attrsOf(c);
    registerWebGPUKernels();
    const ours = await resultOf(c.kernel, x, dy, attrs);
    unregisterWebGPUKernels();
    const orig = await resultOf(c.kernel, x, dy, attrs);
    registerWebGPUKernels();
    const ref = filterGradF64(c, (await x.data()) as Float32Array, (await dy.data()) as Float32Array);
    tf.dispose([x, dy]);
    console.log(`- ${describeCase(c)}: ours ${relErrVs(ours, ref).toExponential(2)}, tfjs ${relErrVs(orig, ref).toExponential(2)}`);
  }
}

async function timingTable(batches: number[], iters: number): Promise<void> {
  await warmUpGpu();
  console.log('\n## Timing: tfjs 4.22 kernels vs ours (ms per call; wall = back-to-back calls incl. dispatch, gpu = timestamp queries)\n');
  console.log('| kernel | x shape | filter | tfjs wall | tfjs gpu | ours wall | ours gpu | speedup (wall) | ours GFLOP/s | rel diff |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const batch of batches) {
    for (const s of MAMBAOUT_SHAPES) {
      const c = caseOfShape(s, batch);
      const dyShape = dyShapeOf(c)!;
      const x = gpuData(c.xShape, 0.3);
      const dy = gpuData(dyShape, 1.1);
      const attrs = attrsOf(c);
      registerWebGPUKernels();
      const ours = await timeKernel(c.kernel, x, dy, attrs, iters, 1500);
      const oursVals = await resultOf(c.kernel, x, dy, attrs);
      unregisterWebGPUKernels();
      const orig = await timeKernel(c.kernel, x, dy, attrs, Math.max(2, Math.floor(iters / 4)), 2500);
      const origVals = await resultOf(c.kernel, x, dy, attrs);
      registerWebGPUKernels();
      tf.dispose([x, dy]);
      const kind = c.kernel === 'Conv2DBackpropFilter' ? 'Conv2DBackpropFilter' : 'DepthwiseBackpropFilter';
      const gflops = flopsOf(c) / (ours.gpuMs > 0 ? ours.gpuMs : ours.wallMs) / 1e6;
      console.log(`| ${kind} | [${c.xShape.join(',')}] | ${c.filterShape.join('x')} s${c.strides[0]} | ${fmt(orig.wallMs)} | ${fmt(orig.gpuMs)} | ` +
        `${fmt(ours.wallMs)} | ${fmt(ours.gpuMs)} | ${(orig.wallMs / ours.wallMs).toFixed(1)}x | ${gflops.toFixed(0)} | ${relDiff(oursVals, origVals).toExponential(1)} |`);
    }
  }
}

/** Alternative tile/split settings for our kernels at one batch size (to pick the defaults). */
async function variantTable(batch: number, iters: number): Promise<void> {
  const convVariants: Array<[string, Partial<Conv2DBackpropFilterTuning>]> = [
    ['default', {}],
    ['tileK 128', { tileK: 128 }],
    ['tileK 32', { tileK: 32 }],
    ['tileCout 64', { tileCout: 64 }],
    ['tileCout 32', { tileCout: 32 }],
    ['tileP 32', { tileP: 32 }],
    ['wg 512', { targetWorkgroups: 512 }],
    ['wg 2048', { targetWorkgroups: 2048 }],
    ['wg 4096', { targetWorkgroups: 4096 }],
  ];
  const dwVariants: Array<[string, Partial<DepthwiseBackpropFilterTuning>]> = [
    ['default', {}],
    ['wgsize 64', { workgroupSize: 64 }],
    ['wgsize 128', { workgroupSize: 128 }],
    ['threads 128K', { targetThreads: 131072 }],
    ['threads 512K', { targetThreads: 524288 }],
    ['threads 1M', { targetThreads: 1048576 }],
    ['minpos 128', { minPositionsPerThread: 128 }],
  ];
  console.log(`\n## Variants of our kernels at batch ${batch} (gpu ms per call, timestamp queries; wall in parentheses)\n`);
  registerWebGPUKernels();
  for (const s of MAMBAOUT_SHAPES) {
    const c = caseOfShape(s, batch);
    const x = gpuData(c.xShape, 0.3);
    const dy = gpuData(dyShapeOf(c)!, 1.1);
    const attrs = attrsOf(c);
    const cells: string[] = [];
    if (c.kernel === 'Conv2DBackpropFilter') {
      for (const [name, t] of convVariants) {
        const prev = setConv2DBackpropFilterTuning(t);
        const r = await timeKernel(c.kernel, x, dy, attrs, iters, 600);
        setConv2DBackpropFilterTuning(prev);
        cells.push(`${name}: ${fmt(r.gpuMs)} (${fmt(r.wallMs)})`);
      }
    } else {
      for (const [name, t] of dwVariants) {
        const prev = setDepthwiseBackpropFilterTuning(t);
        const r = await timeKernel(c.kernel, x, dy, attrs, iters, 600);
        setDepthwiseBackpropFilterTuning(prev);
        cells.push(`${name}: ${fmt(r.gpuMs)} (${fmt(r.wallMs)})`);
      }
    }
    tf.dispose([x, dy]);
    console.log(`- ${describeCase(c)}: ${cells.join('; ')}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Probes

function childRun(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60000): { code: number | null; out: string; ms: number } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, ms: performance.now() - t0 };
}

function childAdapters(args: string[], env: Record<string, string | undefined> = {}): string {
  const r = childRun(['--list-adapters', ...args], env, 60000);
  const line = r.out.split('\n').find((l) => l.startsWith('ADAPTERS '));
  if (!line) return `(failed: exit ${r.code}; ${r.out.split('\n').filter((l) => l.trim() !== '').slice(-2).join(' | ')})`;
  const list = JSON.parse(line.slice('ADAPTERS '.length)) as WebGPUAdapterEntry[];
  return list.length === 0 ? 'none' : list.map((a) => `${a.index}: '${a.name}' (${a.backend})`).join(', ');
}

async function probeAdapters(): Promise<void> {
  console.log('\n## Adapter enumeration (dawn.node lists one backend type per instance, in power-preference order)\n');
  const rows: Array<[string, string[], Record<string, string | undefined>]> = [
    ['default (vulkan, high-performance)', [], {}],
    ['low-power', ['--low-power'], {}],
    ['backend=opengles', ['--flag', 'backend=opengles'], {}],
    ['backend=opengl', ['--flag', 'backend=opengl'], {}],
    ['backend=null', ['--flag', 'backend=null'], {}],
    ['CUDA_VISIBLE_DEVICES=""', [], { CUDA_VISIBLE_DEVICES: '' }],
    ['CUDA_VISIBLE_DEVICES=1 (no such GPU here)', [], { CUDA_VISIBLE_DEVICES: '1' }],
    ['CUDA_VISIBLE_DEVICES=0', [], { CUDA_VISIBLE_DEVICES: '0' }],
  ];
  for (const [name, args, env] of rows) console.log(`- ${name}: ${childAdapters(args, env)}`);
  const r = childRun(['--exit-probe'], {}, 60000);
  const exited = r.code === 0 && r.out.includes('EXIT-PROBE released');
  console.log(`- exit check: a process that initialises webgpu, runs an op and calls releaseWebGPU() ` +
    (exited ? `exited by itself (code 0) after ${(r.ms / 1000).toFixed(1)} s` : `did NOT exit cleanly (code ${r.code}, ${(r.ms / 1000).toFixed(1)} s): ${r.out.slice(-300)}`));
}

async function probeUnsafeFeatures(): Promise<void> {
  console.log('\n## Features with enable-dawn-features=allow_unsafe_apis\n');
  const { create } = (await import('webgpu')) as unknown as { create: (f: string[]) => GPU };
  for (const flags of [[], ['enable-dawn-features=allow_unsafe_apis']]) {
    let gpu: GPU | null = create(flags);
    const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!a) {
      console.log(`- ${JSON.stringify(flags)}: no adapter`);
      continue;
    }
    const feats = [...a.features].map(String).sort();
    const info = a.info as unknown as { subgroupMatrixConfigs?: unknown[]; subgroupMinSize?: number; subgroupMaxSize?: number };
    console.log(`- flags ${JSON.stringify(flags)}: ${feats.length} features: ${feats.join(', ')}`);
    console.log(`  shader-f16: ${a.features.has('shader-f16')}, chromium-experimental-subgroup-matrix: ${a.features.has('chromium-experimental-subgroup-matrix')}, ` +
      `subgroups: ${a.features.has('subgroups')} (sizes ${info.subgroupMinSize}..${info.subgroupMaxSize})`);
    if (info.subgroupMatrixConfigs && info.subgroupMatrixConfigs.length > 0) {
      const cfgs = info.subgroupMatrixConfigs.map((c) => {
        const o = c as Record<string, unknown>;
        return `${String(o.componentType)}->${String(o.resultComponentType)} ${String(o.M)}x${String(o.N)}x${String(o.K)}`;
      });
      console.log(`  subgroupMatrixConfigs: ${cfgs.join('; ')}`);
    } else {
      console.log('  subgroupMatrixConfigs: none');
    }
    if (a.features.has('chromium-experimental-subgroup-matrix')) {
      try {
        const d = await a.requestDevice({ requiredFeatures: ['chromium-experimental-subgroup-matrix' as GPUFeatureName, 'shader-f16' as GPUFeatureName].filter((f) => a.features.has(f)) });
        console.log(`  device with subgroup-matrix: ok (features ${[...d.features].join(', ')})`);
        d.destroy();
      } catch (e) {
        console.log(`  device with subgroup-matrix: failed: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    gpu = null;
  }
}

// ---------------------------------------------------------------------------------------------------------

async function listMode(flags: string[], lowPower: boolean): Promise<void> {
  const list = await listWebGPUAdapters({ dawnFlags: flags, powerPreference: lowPower ? 'low-power' : 'high-performance' });
  console.log(`ADAPTERS ${JSON.stringify(list)}`);
}

async function exitProbe(): Promise<void> {
  const r = await initWebGPU();
  if (!r.ok) {
    console.log(`EXIT-PROBE no webgpu: ${r.reason}`);
    return;
  }
  const t = tf.square(tf.tensor([1, 2, 3]));
  await t.data();
  t.dispose();
  releaseWebGPU();
  console.log('EXIT-PROBE released');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      cases: { type: 'string', default: '60' },
      seed: { type: 'string', default: '1' },
      batches: { type: 'string', default: '64,128' },
      iters: { type: 'string', default: '20' },
      variants: { type: 'boolean', default: false },
      'variant-batch': { type: 'string', default: '64' },
      'f64-batch': { type: 'string', default: '0' },
      'no-parity': { type: 'boolean', default: false },
      'no-timing': { type: 'boolean', default: false },
      'no-probe': { type: 'boolean', default: false },
      'list-adapters': { type: 'boolean', default: false },
      'exit-probe': { type: 'boolean', default: false },
      flag: { type: 'string', multiple: true, default: [] },
      'low-power': { type: 'boolean', default: false },
    },
  });
  if (values['list-adapters']) return listMode(values.flag as string[], values['low-power'] as boolean);
  if (values['exit-probe']) return exitProbe();
  tf.env().set('PROD', true);

  if (!values['no-probe']) await probeAdapters();

  const r = await initWebGPU();
  if (!r.ok) {
    console.log(`initWebGPU: ok=false, reason: ${r.reason}`);
    process.exitCode = 2;
    return;
  }
  const info = r.info;
  console.log('\n## initWebGPU\n');
  console.log(`- description: ${r.description}`);
  console.log(`- adapter: ${JSON.stringify(info.adapter)}`);
  console.log(`- adapters listed: ${info.adapters.map((a) => `${a.index}: '${a.name}' (${a.backend})`).join(', ')}`);
  console.log(`- dawn flags: ${info.dawnFlags.join(' ')}`);
  console.log(`- adapter features: ${info.adapterFeatures.join(', ')}`);
  console.log(`- device features: ${info.deviceFeatures.join(', ')}`);
  console.log(`- limits raised (default -> now): ${Object.entries(info.raisedLimits).map(([k, [d, v]]) => `${k} ${d} -> ${v}`).join(', ')}`);
  console.log(`- tfjs backend: ${tf.getBackend()}`);
  if (!values['no-probe']) await probeUnsafeFeatures();

  if (!values['no-parity']) {
    const rng = new Rng(Number(values.seed));
    const n = Number(values.cases);
    const cases = [...fixedCases()];
    for (let i = 0; i < n; i++) cases.push(randomCase(rng, i % 2 === 0 ? 'Conv2DBackpropFilter' : 'DepthwiseConv2dNativeBackpropFilter'));
    console.log(`\n## Parity vs cpu backend (${cases.length} cases; tolerance: max |diff| <= 1e-4 * max |cpu|)\n`);
    registerWebGPUKernels();
    let worst = 0;
    let failed = 0;
    for (const c of cases) {
      const res = await runParityCase(c, rng);
      worst = Math.max(worst, res.rel);
      const ok = res.rel <= 1e-4;
      if (!ok) failed++;
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${describeCase(c)}: max|diff| ${res.maxAbsDiff.toExponential(2)}, max|ref| ${res.maxRef.toExponential(2)}, rel ${res.rel.toExponential(2)}`);
    }
    console.log(`parity: ${cases.length - failed}/${cases.length} within tolerance, worst rel ${worst.toExponential(2)}`);
    if (failed > 0) process.exitCode = 1;
  }

  if (!values['no-timing']) {
    const batches = (values.batches as string).split(',').map(Number).filter((b) => b > 0);
    await timingTable(batches, Number(values.iters));
  }
  if (values.variants) await variantTable(Number(values['variant-batch']), Number(values.iters));
  if (Number(values['f64-batch']) > 0) await f64Table(Number(values['f64-batch']));

  await flush();
  void webgpuDevice;
  releaseWebGPU();
  // Exit check for this process too: an unref'd timer cannot keep Node alive, so it fires only if Dawn does.
  setTimeout(() => {
    console.log('process still alive 15 s after releaseWebGPU(): something holds Dawn');
    process.exit(3);
  }, 15000).unref();
  console.log('\nreleased webgpu; the process should now exit by itself');
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
