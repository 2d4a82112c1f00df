/**
 * Fused LayerNorm over the last axis (torch.nn.LayerNorm: biased variance, eps inside the square root) for the
 * tfjs WebGPU backend, forward and backward.
 *
 * With tfjs ops a LayerNorm is ~9 kernels forward and ~25 backward, and tfjs's Mean gradient multiplies by
 * `ones(x.shape)` built ON THE HOST: a 77 MB Float32Array filled, staged and uploaded per Mean for femto's
 * stage 0 at batch 128, which took ~2 s of a 2.7 s training step on the H200. Here:
 *   MambaoutLayerNorm     (x [.., C], weight [C], bias [C]) -> y [.., C], stats [rows, 2] = (mean, 1/sqrt(var+eps))
 *   MambaoutLayerNormGrad (dy, x, weight, stats) -> dx, dweight, dbias
 *     dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)),  g = dy * weight,  x̂ = (x - mean) * rstd
 *     dweight = Σ_rows dy * x̂,  dbias = Σ_rows dy   (column partial sums over row chunks, then a reduction)
 * With attr gelu (the stem's gelu(norm1(conv1(x)))): y = gelu(x̂ w + b), and the backward kernels recompute
 * z = x̂ w + b to use dz = dy * gelu'(z) in place of dy (one kernel instead of LayerNorm + 5 GELU kernels forward and
 * ~10 backward, and no stored pre-activation).
 * Row kernels: T threads per row (T = 8..32, a power of two), 256 / T rows per workgroup; each thread keeps its
 * ceil(C / T) values in registers (C is compiled in), row sums meet in shared memory. Mean and variance are two
 * passes over the registers, as tf.moments computes them (mean, then mean of squared differences).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { WGSL_GELU, type KernelArgs } from './util.js';
import { dispatch2D, disposeInfos, runCustomProgram, uniformStruct, type CustomProgram } from './dispatch.js';

const WG = 256;

/** Threads per row for C channels. */
export function threadsPerRow(C: number): number {
  let t = 1;
  while (t < 32 && t * 4 < C) t *= 2;
  return Math.max(t, 1);
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Shared-memory tree sum of `vals` (one per name) over the T threads of a row; results in `${name}Tot`. */
function rowSums(names: string[], T: number): string {
  const lines: string[] = [];
  names.forEach((n, i) => lines.push(`red${i}[li] = ${n};`));
  lines.push('workgroupBarrier();');
  for (let off = T / 2; off >= 1; off /= 2) {
    lines.push(`if (t < ${off}) { ${names.map((_, i) => `red${i}[li] = red${i}[li] + red${i}[li + ${off}];`).join(' ')} }`);
    lines.push('workgroupBarrier();');
  }
  names.forEach((n, i) => lines.push(`let ${n}Tot = red${i}[rowStart];`));
  lines.push('workgroupBarrier();');
  return lines.join('\n  ');
}

function rowHeader(C: number, T: number, numRed: number): string {
  return `
${range(numRed).map((i) => `var<workgroup> red${i} : array<f32, ${WG}>;`).join('\n')}

@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let li = i32(lidx);
  let t = li % ${T};
  let rowStart = li - t;
  let group = i32(wid.y * nwg.x + wid.x);
  let row = group * ${WG / T} + li / ${T};
  let valid = row < u.rows;
  let base = row * ${C};`;
}

export function layerNormForwardSource(C: number, T: number, gelu = false): string {
  const per = Math.ceil(C / T);
  const loads = range(per).map((i) => {
    const c = `t + ${i * T}`;
    return `var v${i} = 0.0; if (valid && ${c} < ${C}) { v${i} = x[base + ${c}]; }`;
  });
  const inRow = (i: number) => (i * T + T - 1 < C ? 'true' : `t + ${i * T} < ${C}`);
  return `
${uniformStruct([{ name: 'rows', type: 'i32', value: 0 }, { name: 'eps', type: 'f32', value: 0 }], 5)}
@group(0) @binding(0) var<storage, read_write> y : array<f32>;
@group(0) @binding(1) var<storage, read_write> stats : array<f32>;
@group(0) @binding(2) var<storage, read> x : array<f32>;
@group(0) @binding(3) var<storage, read> weight : array<f32>;
@group(0) @binding(4) var<storage, read> bias : array<f32>;
${gelu ? WGSL_GELU : ''}
${rowHeader(C, T, 1)}
  ${loads.join('\n  ')}
  var s = ${range(per).map((i) => `v${i}`).join(' + ')};
  ${rowSums(['s'], T)}
  let mean = sTot / f32(${C});
  var q = 0.0;
  ${range(per).map((i) => `if (${inRow(i)}) { let d = v${i} - mean; q = q + d * d; }`).join('\n  ')}
  ${rowSums(['q'], T)}
  let rstd = inverseSqrt(qTot / f32(${C}) + u.eps);
  if (valid) {
    ${range(per).map((i) => `if (${inRow(i)}) { let c = t + ${i * T}; y[base + c] = ${gelu ? 'gelu(' : '('}(v${i} - mean) * rstd * weight[c] + bias[c]); }`).join('\n    ')}
    if (t == 0) { stats[row * 2] = mean; stats[row * 2 + 1] = rstd; }
  }
}
`;
}

export function layerNormBackwardSource(C: number, T: number, gelu = false): string {
  const per = Math.ceil(C / T);
  const inRow = (i: number) => (i * T + T - 1 < C ? 'true' : `t + ${i * T} < ${C}`);
  const loads = range(per).map((i) => {
    const c = `t + ${i * T}`;
    return `var xh${i} = 0.0; var g${i} = 0.0;
  if (valid && ${inRow(i)}) { let c = ${c}; xh${i} = (x[base + c] - mean) * rstd; g${i} = ${gelu ? `dy[base + c] * geluGrad(xh${i} * weight[c] + bias[c])` : 'dy[base + c]'} * weight[c]; }`;
  });
  return `
${uniformStruct([{ name: 'rows', type: 'i32', value: 0 }], gelu ? 6 : 5)}
@group(0) @binding(0) var<storage, read_write> dx : array<f32>;
@group(0) @binding(1) var<storage, read> dy : array<f32>;
@group(0) @binding(2) var<storage, read> x : array<f32>;
@group(0) @binding(3) var<storage, read> weight : array<f32>;
@group(0) @binding(4) var<storage, read> stats : array<f32>;
${gelu ? `@group(0) @binding(5) var<storage, read> bias : array<f32>;
${WGSL_GELU}` : ''}
${rowHeader(C, T, 2)}
  var mean = 0.0;
  var rstd = 0.0;
  if (valid) { mean = stats[row * 2]; rstd = stats[row * 2 + 1]; }
  ${loads.join('\n  ')}
  var s1 = ${range(per).map((i) => `g${i}`).join(' + ')};
  var s2 = ${range(per).map((i) => `g${i} * xh${i}`).join(' + ')};
  ${rowSums(['s1', 's2'], T)}
  let m1 = s1Tot / f32(${C});
  let m2 = s2Tot / f32(${C});
  if (valid) {
    ${range(per).map((i) => `if (${inRow(i)}) { dx[base + t + ${i * T}] = rstd * (g${i} - m1 - xh${i} * m2); }`).join('\n    ')}
  }
}
`;
}

/**
 * Column partial sums of dy * x̂ and dy over chunks of rows: partial [S, 2, C] (dweight terms, then dbias terms).
 * Thread = (column, chunk); 64 threads per workgroup along the columns.
 */
export function layerNormParamGradSource(gelu = false): string {
  return `
${uniformStruct([{ name: 'rows', type: 'i32', value: 0 }, { name: 'C', type: 'i32', value: 0 }, { name: 'rowsPerChunk', type: 'i32', value: 0 }], gelu ? 6 : 4)}
@group(0) @binding(0) var<storage, read_write> partial : array<f32>;
@group(0) @binding(1) var<storage, read> dy : array<f32>;
@group(0) @binding(2) var<storage, read> x : array<f32>;
@group(0) @binding(3) var<storage, read> stats : array<f32>;
${gelu ? `@group(0) @binding(4) var<storage, read> weight : array<f32>;
@group(0) @binding(5) var<storage, read> bias : array<f32>;
${WGSL_GELU}` : ''}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lidx : u32) {
  let c = i32(wid.x) * 64 + i32(lidx);
  let chunk = i32(wid.y);
  if (c >= u.C) { return; }
  let r0 = chunk * u.rowsPerChunk;
  let r1 = min(r0 + u.rowsPerChunk, u.rows);
  var dw = 0.0;
  var db = 0.0;
  ${gelu ? 'let wc = weight[c]; let bc = bias[c];' : ''}
  for (var r = r0; r < r1; r = r + 1) {
    let xh = (x[r * u.C + c] - stats[r * 2]) * stats[r * 2 + 1];
    let g = ${gelu ? 'dy[r * u.C + c] * geluGrad(xh * wc + bc)' : 'dy[r * u.C + c]'};
    dw = fma(g, xh, dw);
    db = db + g;
  }
  partial[chunk * 2 * u.C + c] = dw;
  partial[chunk * 2 * u.C + u.C + c] = db;
}
`;
}

/** outA[i] = Σ_s partial[s, 0, i], outB[i] = Σ_s partial[s, 1, i]: one workgroup of 64 threads per output. */
export function pairSumSource(): string {
  return `
${uniformStruct([{ name: 'C', type: 'i32', value: 0 }, { name: 'S', type: 'i32', value: 0 }], 3)}
@group(0) @binding(0) var<storage, read_write> outA : array<f32>;
@group(0) @binding(1) var<storage, read_write> outB : array<f32>;
@group(0) @binding(2) var<storage, read> partial : array<f32>;
var<workgroup> red : array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lidx : u32) {
  let o = i32(wid.x);
  let li = i32(lidx);
  var s = 0.0;
  for (var k = li; k < u.S; k = k + 64) { s = s + partial[k * 2 * u.C + o]; }
  red[li] = s;
  workgroupBarrier();
  for (var off = 32; off > 0; off = off / 2) {
    if (li < off) { red[li] = red[li] + red[li + off]; }
    workgroupBarrier();
  }
  if (li == 0) {
    if (o < u.C) { outA[o] = red[0]; } else { outB[o - u.C] = red[0]; }
  }
}
`;
}

function rowsOf(shape: number[]): number {
  return shape.slice(0, -1).reduce((a, b) => a * b, 1);
}

/** Kernel MambaoutLayerNorm: inputs x, weight, bias; attrs eps, gelu. Outputs [y, stats]. */
export function layerNormKernel(args: KernelArgs): TensorInfo[] {
  const { x, weight, bias } = args.inputs;
  const { eps, gelu } = args.attrs as { eps: number; gelu?: boolean };
  const C = x.shape[x.shape.length - 1];
  const rows = rowsOf(x.shape);
  const T = threadsPerRow(C);
  const prog: CustomProgram = {
    name: 'LayerNorm',
    key: `mambaout_ln_fwd_${C}_${T}${gelu ? '_gelu' : ''}`,
    code: () => layerNormForwardSource(C, T, !!gelu),
    outputShapes: [x.shape.slice(), [rows, 2]],
    dispatch: dispatch2D(args.backend, Math.ceil(rows / (WG / T))),
    uniforms: [{ name: 'rows', type: 'i32', value: rows }, { name: 'eps', type: 'f32', value: eps }],
  };
  return runCustomProgram(args.backend, prog, [x, weight, bias]);
}

/** Target number of threads for the column partial sums. */
const PARAM_GRAD_THREADS = 131072;

/** Kernel MambaoutLayerNormGrad: inputs dy, x, weight, stats (+ bias with attr gelu). Outputs [dx, dweight, dbias]. */
export function layerNormGradKernel(args: KernelArgs): TensorInfo[] {
  const { dy, x, weight, stats, bias } = args.inputs;
  const gelu = !!(args.attrs as { gelu?: boolean } | undefined)?.gelu;
  if (gelu && !bias) throw new Error('MambaoutLayerNormGrad: gelu needs the bias input');
  const C = x.shape[x.shape.length - 1];
  const rows = rowsOf(x.shape);
  const T = threadsPerRow(C);
  const [dx] = runCustomProgram(args.backend, {
    name: 'LayerNormGrad',
    key: `mambaout_ln_bwd_${C}_${T}${gelu ? '_gelu' : ''}`,
    code: () => layerNormBackwardSource(C, T, gelu),
    outputShapes: [x.shape.slice()],
    dispatch: dispatch2D(args.backend, Math.ceil(rows / (WG / T))),
    uniforms: [{ name: 'rows', type: 'i32', value: rows }],
  }, gelu ? [dy, x, weight, stats, bias] : [dy, x, weight, stats]);
  const colGroups = Math.ceil(C / 64);
  const maxDim = 65535;
  let chunks = Math.max(1, Math.min(Math.ceil(PARAM_GRAD_THREADS / (colGroups * 64)), Math.ceil(rows / 16), maxDim));
  const rowsPerChunk = Math.ceil(rows / chunks);
  chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  const [partial] = runCustomProgram(args.backend, {
    name: 'LayerNormParamGrad',
    key: `mambaout_ln_param_grad${gelu ? '_gelu' : ''}`,
    code: () => layerNormParamGradSource(gelu),
    outputShapes: [[chunks, 2, C]],
    dispatch: [colGroups, chunks, 1],
    uniforms: [
      { name: 'rows', type: 'i32', value: rows },
      { name: 'C', type: 'i32', value: C },
      { name: 'rowsPerChunk', type: 'i32', value: rowsPerChunk },
    ],
  }, gelu ? [dy, x, stats, weight, bias] : [dy, x, stats]);
  const [dw, db] = runCustomProgram(args.backend, {
    name: 'LayerNormParamGradSum',
    key: 'mambaout_pair_sum',
    code: pairSumSource,
    outputShapes: [[C], [C]],
    dispatch: [2 * C, 1, 1],
    uniforms: [{ name: 'C', type: 'i32', value: C }, { name: 'S', type: 'i32', value: chunks }],
  }, [partial]);
  disposeInfos(args.backend, [partial]);
  return [dx, dw, db];
}
