/**
 * Fused Adam / AdamW parameter update for the tfjs WebGPU backend: one dispatch per parameter instead of the
 * ~12 elementwise kernels of the op-by-op update (about 2,000 kernels per femto step).
 *
 * Kernel MambaoutAdam: inputs param, grad, m, v; attrs (float32 scalars computed on the host in float64, exactly
 * the scalars the op path uploads): decay, l2, lerpW, beta2, oneMinusBeta2, negStepSize, bc2Sqrt, eps, and the
 * switches useDecay, useL2, lowLerp. Outputs [param', m', v'] (new tensors; the caller assigns them):
 *   param = useDecay ? param * decay : param            (AdamW's decoupled decay)
 *   g     = useL2 ? g + l2 * param : g                 (Adam's L2 term)
 *   m'    = lowLerp ? m + lerpW * (g - m) : g - (g - m) * lerpW      (torch's lerp)
 *   v'    = v * beta2 + (oneMinusBeta2 * g) * g
 *   param'= param + (negStepSize * m') / (sqrt(v') / bc2Sqrt + eps)
 * Same order of operations as src/train/optim/adamw.ts; the GPU compiler may contract a multiply and an add
 * into one fma, so results agree with the op path to float32 rounding (a few ulp), not bit for bit.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelArgs } from './util.js';
import { dispatch2D, runCustomProgram, uniformStruct, type UniformType } from './dispatch.js';

const WG = 256;

export interface AdamKernelAttrs {
  decay: number;
  l2: number;
  lerpW: number;
  beta2: number;
  oneMinusBeta2: number;
  negStepSize: number;
  bc2Sqrt: number;
  eps: number;
  useDecay: boolean;
  useL2: boolean;
  lowLerp: boolean;
}

const FLOATS = ['decay', 'l2', 'lerpW', 'beta2', 'oneMinusBeta2', 'negStepSize', 'bc2Sqrt', 'eps'] as const;

/** Uniform values of the update over n elements. */
export function adamUniforms(n: number, a: AdamKernelAttrs): Array<{ name: string; type: UniformType; value: number }> {
  return [{ name: 'n', type: 'i32', value: n }, ...FLOATS.map((name) => ({ name, type: 'f32' as UniformType, value: a[name] }))];
}

/** Uniform block of the scalars alone (`adamSource` in place): FLOATS in order, as float32. */
export function adamScalarBytes(a: AdamKernelAttrs): ArrayBuffer {
  const bytes = new ArrayBuffer(FLOATS.length * 4);
  new Float32Array(bytes).set(FLOATS.map((k) => a[k]));
  return bytes;
}

/**
 * WGSL of the update. inPlace (./adam_multi.ts): bindings pOut/mOut/vOut are also the inputs (grad the only read-only
 * one), the scalars alone are the uniform block at binding 4 (adamScalarBytes) and the element count a block of its
 * own at binding 5 (`n: i32`, 16 bytes), so that one scalar block serves dispatches of every size. The arithmetic is
 * the same text in both variants.
 */
export function adamSource(useDecay: boolean, useL2: boolean, lowLerp: boolean, inPlace = false): string {
  const floats = FLOATS.map((name) => ({ name, type: 'f32' as UniformType, value: 0 }));
  const uniforms = inPlace ? floats : [{ name: 'n', type: 'i32' as UniformType, value: 0 }, ...floats];
  const n = inPlace ? 'size.n' : 'u.n';
  return `
${uniformStruct(uniforms, inPlace ? 4 : 7)}${inPlace ? `struct Size {\n  n : i32,\n};\n@group(0) @binding(5) var<uniform> size : Size;\n` : ''}
@group(0) @binding(0) var<storage, read_write> pOut : array<f32>;
@group(0) @binding(1) var<storage, read_write> mOut : array<f32>;
@group(0) @binding(2) var<storage, read_write> vOut : array<f32>;
${inPlace ? '@group(0) @binding(3) var<storage, read> grad : array<f32>;' : `@group(0) @binding(3) var<storage, read> p : array<f32>;
@group(0) @binding(4) var<storage, read> grad : array<f32>;
@group(0) @binding(5) var<storage, read> m : array<f32>;
@group(0) @binding(6) var<storage, read> v : array<f32>;`}

@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let i = i32(wid.y * nwg.x + wid.x) * ${WG} + i32(lidx);
  if (i >= ${n}) { return; }
  var param = ${inPlace ? 'pOut' : 'p'}[i];
  ${useDecay ? 'param = param * u.decay;' : ''}
  var g = grad[i];
  ${useL2 ? 'g = g + u.l2 * param;' : ''}
  let mo = ${inPlace ? 'mOut' : 'm'}[i];
  let diff = g - mo;
  let mNew = ${lowLerp ? 'mo + u.lerpW * diff' : 'g - diff * u.lerpW'};
  let vNew = ${inPlace ? 'vOut' : 'v'}[i] * u.beta2 + (u.oneMinusBeta2 * g) * g;
  let denom = sqrt(vNew) / u.bc2Sqrt + u.eps;
  pOut[i] = param + (u.negStepSize * mNew) / denom;
  mOut[i] = mNew;
  vOut[i] = vNew;
}
`;
}

/** Kernel MambaoutAdam: inputs param, grad, m, v. Outputs [param', m', v']. */
export function adamKernel(args: KernelArgs): TensorInfo[] {
  const { param, grad, m, v } = args.inputs;
  const a = args.attrs as unknown as AdamKernelAttrs;
  const n = param.shape.reduce((x, y) => x * y, 1);
  for (const t of [grad, m, v]) {
    if (t.shape.reduce((x, y) => x * y, 1) !== n) throw new Error('MambaoutAdam: param, grad, m and v must have the same size');
  }
  const flags = `${a.useDecay ? 1 : 0}${a.useL2 ? 1 : 0}${a.lowLerp ? 1 : 0}`;
  return runCustomProgram(args.backend, {
    name: 'AdamUpdate',
    key: `mambaout_adam_${flags}`,
    code: () => adamSource(a.useDecay, a.useL2, a.lowLerp),
    outputShapes: [param.shape.slice(), param.shape.slice(), param.shape.slice()],
    dispatch: dispatch2D(args.backend, Math.ceil(n / WG)),
    uniforms: adamUniforms(n, a),
  }, [param, grad, m, v]);
}
