/**
 * The gated part of MambaOut's GatedCNN block as fused WebGPU kernels.
 *
 * PyTorch: g, i, c = split(fc1(x), [h, h - C, C]); c = dwconv(c); out = gelu(g) * cat(i, c).
 * With f = fc1 output [rows, 2h] (one matmul) and k = the depthwise conv output before its bias [rows, C]:
 *   MambaoutGatedGelu         (f, k, kBias)        -> out [rows, h]
 *       out[r, j] = gelu(f[r, j]) * (j < h - C ? f[r, h + j] : k[r, j - (h - C)] + kBias[j - (h - C)])
 *   MambaoutGatedGeluGradConv (dOut, f)            -> dk [rows, C]      (gradient at the conv output)
 *       dk[r, q] = dOut[r, h - C + q] * gelu(f[r, h - C + q])
 *   MambaoutGatedGeluGrad     (dOut, f, k, kBias, dc) -> df [rows, 2h]  (dc: gradient at the conv input)
 *       df[r, j] = dOut[r, j] * value[r, j] * gelu'(f[r, j])   for j < h
 *                = dOut[r, j - h] * gelu(f[r, j - h])          for h <= j < 2h - C
 *                = dc[r, j - (2h - C)]                          for j >= 2h - C
 * so the split, the concat, the bias add and their gradients (SplitV, Concat, Slice/PadV2 + Add) disappear.
 *
 * gelu and its derivative: WGSL_GELU in ./util.ts (tfjs's erf formula, so results match the op-by-op model).
 *
 * attr bf16 (--amp, ./bf16.ts): f, dOut, the output and df are packed bf16 (int32 tensors of half the last dim);
 * k, kBias, dc and dk stay float32. One thread per pair of values (h and C are even, so a pair never straddles
 * the g / i / c boundaries); arithmetic in f32.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { dispatch2D, runCustomProgram, uniformStruct } from './dispatch.js';
import { WGSL_GELU, type KernelArgs } from './util.js';
import { WGSL_BF16 } from './bf16.js';

const WG = 256;


const HEADER = `
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let idx = i32(wid.y * nwg.x + wid.x) * ${WG} + i32(lidx);
  if (idx >= u.total) { return; }`;

const U = (n: number) => uniformStruct([
  { name: 'total', type: 'i32', value: 0 },
  { name: 'h', type: 'i32', value: 0 },
  { name: 'C', type: 'i32', value: 0 },
], n);

function forwardSource(): string {
  return `
${U(4)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> f : array<f32>;
@group(0) @binding(2) var<storage, read> k : array<f32>;
@group(0) @binding(3) var<storage, read> kBias : array<f32>;
${WGSL_GELU}
${HEADER}
  let r = idx / u.h;
  let j = idx - r * u.h;
  let split = u.h - u.C;
  let fRow = r * 2 * u.h;
  var v = 0.0;
  if (j < split) { v = f[fRow + u.h + j]; } else { let q = j - split; v = k[r * u.C + q] + kBias[q]; }
  result[idx] = gelu(f[fRow + j]) * v;
}
`;
}

function gradConvSource(): string {
  return `
${U(3)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> dy : array<f32>;
@group(0) @binding(2) var<storage, read> f : array<f32>;
${WGSL_GELU}
${HEADER}
  let r = idx / u.C;
  let q = idx - r * u.C;
  let j = u.h - u.C + q;
  result[idx] = dy[r * u.h + j] * gelu(f[r * 2 * u.h + j]);
}
`;
}

function gradSource(): string {
  return `
${U(6)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> dy : array<f32>;
@group(0) @binding(2) var<storage, read> f : array<f32>;
@group(0) @binding(3) var<storage, read> k : array<f32>;
@group(0) @binding(4) var<storage, read> kBias : array<f32>;
@group(0) @binding(5) var<storage, read> dc : array<f32>;
${WGSL_GELU}
${HEADER}
  let w = 2 * u.h;
  let r = idx / w;
  let j = idx - r * w;
  let split = u.h - u.C;
  let fRow = r * w;
  var d = 0.0;
  if (j < u.h) {
    var v = 0.0;
    if (j < split) { v = f[fRow + u.h + j]; } else { let q = j - split; v = k[r * u.C + q] + kBias[q]; }
    d = dy[r * u.h + j] * v * geluGrad(f[fRow + j]);
  } else if (j < w - u.C) {
    let jg = j - u.h;
    d = dy[r * u.h + jg] * gelu(f[fRow + jg]);
  } else {
    d = dc[r * u.C + j - (w - u.C)];
  }
  result[idx] = d;
}
`;
}

/** bf16 forward: pairs of out [rows, h] from f [rows, 2h] (both packed). */
function forwardSourceBf16(): string {
  return `
${U(4)}
@group(0) @binding(0) var<storage, read_write> result : array<u32>;
@group(0) @binding(1) var<storage, read> f : array<u32>;
@group(0) @binding(2) var<storage, read> k : array<f32>;
@group(0) @binding(3) var<storage, read> kBias : array<f32>;
${WGSL_GELU}
${WGSL_BF16}
${HEADER}
  let hh = u.h / 2;
  let r = idx / hh;
  let p = idx - r * hh;
  let j = 2 * p;
  let split = u.h - u.C;
  let g = unpackBf16x2(f[r * u.h + p]);
  var v : vec2<f32>;
  if (j < split) { v = unpackBf16x2(f[r * u.h + hh + p]); } else {
    let q = j - split;
    v = vec2<f32>(k[r * u.C + q] + kBias[q], k[r * u.C + q + 1] + kBias[q + 1]);
  }
  result[idx] = packBf16x2(gelu(g.x) * v.x, gelu(g.y) * v.y);
}
`;
}

/** bf16 gradient at the conv output: dk [rows, C] f32 (pairs) from dOut [rows, h] and f (packed). */
function gradConvSourceBf16(): string {
  return `
${U(3)}
@group(0) @binding(0) var<storage, read_write> result : array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> dy : array<u32>;
@group(0) @binding(2) var<storage, read> f : array<u32>;
${WGSL_GELU}
${WGSL_BF16}
${HEADER}
  let c2 = u.C / 2;
  let r = idx / c2;
  let q = 2 * (idx - r * c2);
  let j = u.h - u.C + q;
  let d = unpackBf16x2(dy[(r * u.h + j) / 2]);
  let g = unpackBf16x2(f[r * u.h + j / 2]);
  result[idx] = vec2<f32>(d.x * gelu(g.x), d.y * gelu(g.y));
}
`;
}

/** bf16 gradient at f: df [rows, 2h] (packed pairs) from dOut, f (packed), k, kBias, dc (f32). */
function gradSourceBf16(): string {
  return `
${U(6)}
@group(0) @binding(0) var<storage, read_write> result : array<u32>;
@group(0) @binding(1) var<storage, read> dy : array<u32>;
@group(0) @binding(2) var<storage, read> f : array<u32>;
@group(0) @binding(3) var<storage, read> k : array<f32>;
@group(0) @binding(4) var<storage, read> kBias : array<f32>;
@group(0) @binding(5) var<storage, read> dc : array<f32>;
${WGSL_GELU}
${WGSL_BF16}
${HEADER}
  let hh = u.h / 2;
  let r = idx / u.h;
  let p = idx - r * u.h;
  let j = 2 * p;
  let split = u.h - u.C;
  var d : vec2<f32>;
  if (j < u.h) {
    var v : vec2<f32>;
    if (j < split) { v = unpackBf16x2(f[r * u.h + hh + p]); } else {
      let q = j - split;
      v = vec2<f32>(k[r * u.C + q] + kBias[q], k[r * u.C + q + 1] + kBias[q + 1]);
    }
    let dd = unpackBf16x2(dy[r * hh + p]);
    let g = unpackBf16x2(f[r * u.h + p]);
    d = dd * v * vec2<f32>(geluGrad(g.x), geluGrad(g.y));
  } else if (j < 2 * u.h - u.C) {
    let pg = p - hh;
    let dd = unpackBf16x2(dy[r * hh + pg]);
    let g = unpackBf16x2(f[r * u.h + pg]);
    d = dd * vec2<f32>(gelu(g.x), gelu(g.y));
  } else {
    let q = j - (2 * u.h - u.C);
    d = vec2<f32>(dc[r * u.C + q], dc[r * u.C + q + 1]);
  }
  result[idx] = packBf16x2(d.x, d.y);
}
`;
}

interface GateAttrs {
  hidden: number;
  /** f, dOut, out and df as packed bf16 (see the file header). */
  bf16?: boolean;
}

function dims(f: TensorInfo, attrs: GateAttrs, convChannels: number): { rows: number; h: number; C: number } {
  const h = attrs.hidden;
  const w = f.shape[f.shape.length - 1] * (attrs.bf16 ? 2 : 1);
  if (attrs.bf16 && (h % 2 !== 0 || convChannels % 2 !== 0)) throw new Error('MambaoutGatedGelu: bf16 needs even hidden and conv channels');
  if (w !== 2 * h) throw new Error(`MambaoutGatedGelu: fc1 output has ${w} channels, expected 2 x ${h}`);
  if (!(convChannels > 0 && convChannels <= h)) throw new Error(`MambaoutGatedGelu: conv channels ${convChannels} not in 1..${h}`);
  const rows = f.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return { rows, h, C: convChannels };
}

function uniforms(total: number, h: number, C: number) {
  return [
    { name: 'total', type: 'i32' as const, value: total },
    { name: 'h', type: 'i32' as const, value: h },
    { name: 'C', type: 'i32' as const, value: C },
  ];
}

/** Kernel MambaoutGatedGelu: inputs f, k, kBias; attrs hidden, bf16. Output [..., h] (bf16: int32 [..., h / 2]). */
export function gatedGeluKernel(args: KernelArgs): TensorInfo {
  const { f, k, kBias } = args.inputs;
  const attrs = args.attrs as unknown as GateAttrs;
  const { rows, h, C } = dims(f, attrs, k.shape[k.shape.length - 1]);
  const bf = !!attrs.bf16;
  const total = bf ? rows * (h / 2) : rows * h;
  return runCustomProgram(args.backend, {
    name: 'GatedGelu',
    key: bf ? 'mambaout_gated_gelu_bf16' : 'mambaout_gated_gelu',
    code: bf ? forwardSourceBf16 : forwardSource,
    outputShapes: [[...f.shape.slice(0, -1), bf ? h / 2 : h]],
    outputDtypes: [bf ? 'int32' : 'float32'],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: uniforms(total, h, C),
  }, [f, k, kBias])[0];
}

/** Kernel MambaoutGatedGeluGradConv: inputs dy, f; attrs hidden, channels, bf16. Output float32 [..., channels]. */
export function gatedGeluGradConvKernel(args: KernelArgs): TensorInfo {
  const { dy, f } = args.inputs;
  const attrs = args.attrs as unknown as GateAttrs & { channels: number };
  const { rows, h, C } = dims(f, attrs, attrs.channels);
  const bf = !!attrs.bf16;
  const total = bf ? rows * (C / 2) : rows * C;
  return runCustomProgram(args.backend, {
    name: 'GatedGeluGradConv',
    key: bf ? 'mambaout_gated_gelu_grad_conv_bf16' : 'mambaout_gated_gelu_grad_conv',
    code: bf ? gradConvSourceBf16 : gradConvSource,
    outputShapes: [[...f.shape.slice(0, -1), C]],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: uniforms(total, h, C),
  }, [dy, f])[0];
}

/** Kernel MambaoutGatedGeluGrad: inputs dy, f, k, kBias, dc; attrs hidden, bf16. Output [..., 2h] (bf16: int32 [..., h]). */
export function gatedGeluGradKernel(args: KernelArgs): TensorInfo {
  const { dy, f, k, kBias, dc } = args.inputs;
  const attrs = args.attrs as unknown as GateAttrs;
  const { rows, h, C } = dims(f, attrs, k.shape[k.shape.length - 1]);
  const bf = !!attrs.bf16;
  const total = bf ? rows * h : rows * 2 * h;
  return runCustomProgram(args.backend, {
    name: 'GatedGeluGrad',
    key: bf ? 'mambaout_gated_gelu_grad_bf16' : 'mambaout_gated_gelu_grad',
    code: bf ? gradSourceBf16 : gradSource,
    outputShapes: [f.shape.slice()],
    outputDtypes: [bf ? 'int32' : 'float32'],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: uniforms(total, h, C),
  }, [dy, f, k, kBias, dc])[0];
}

function geluGradSource(): string {
  return `
${uniformStruct([{ name: 'total', type: 'i32', value: 0 }], 3)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> dy : array<f32>;
@group(0) @binding(2) var<storage, read> z : array<f32>;
${WGSL_GELU}
${HEADER}
  result[idx] = dy[idx] * geluGrad(z[idx]);
}
`;
}

/** Kernel MambaoutGeluGrad: inputs dy, z (the pre-activation). Output dy * gelu'(z) (the Linear + GELU backward). */
export function geluGradKernel(args: KernelArgs): TensorInfo {
  const { dy, z } = args.inputs;
  const total = z.shape.reduce((a, b) => a * b, 1);
  return runCustomProgram(args.backend, {
    name: 'GeluGrad',
    key: 'mambaout_gelu_grad',
    code: geluGradSource,
    outputShapes: [z.shape.slice()],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: [{ name: 'total', type: 'i32', value: total }],
  }, [dy, z])[0];
}
