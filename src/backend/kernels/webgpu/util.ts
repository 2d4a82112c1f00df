/**
 * Helpers shared by the WebGPU kernels of this folder (as tfjs-backend-webgpu's webgpu_util.ts is for its own):
 * the kernel-function argument type, the deterministic split-sum pass, and WGSL snippets used by several shaders.
 */
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

/** Arguments tfjs passes to a kernel function. */
export interface KernelArgs {
  inputs: { [name: string]: TensorInfo };
  backend: unknown;
  attrs?: NamedAttrMap;
}

type Uniform = { type: 'int32' | 'float32' | 'uint32'; data: number[] };

/**
 * Pass 2 (shared with the depthwise kernel): result[i] = sum over s < S of partials[s * numOut + i].
 * L lanes per output split the S terms (L = 1 .. 64, a power of two); consecutive threads take consecutive
 * outputs so every load is coalesced; the L lane sums meet in shared memory.
 */
export class SplitSumProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  variableNames = ['partials'];
  uniforms = 'numOut : i32, numSplits : i32,';
  workgroupSize: [number, number, number] = [256, 1, 1];

  constructor(outputShape: number[], private lanes: number, maxPerDim: number) {
    this.outputShape = outputShape;
    const numOut = outputShape.reduce((a, b) => a * b, 1);
    const perWg = 256 / lanes;
    const groups = Math.ceil(numOut / perWg);
    const gx = Math.min(groups, maxPerDim);
    this.dispatch = [gx, Math.ceil(groups / gx), 1];
    this.shaderKey = `mambaout_split_sum_${lanes}`;
  }

  getUserCode(): string {
    const L = this.lanes;
    const perWg = 256 / L;
    if (L === 1) {
      return `
      fn main() {
        let i = i32(workgroupId.y * numWorkgroups.x + workgroupId.x) * 256 + i32(localIndex);
        if (i >= uniforms.numOut) { return; }
        var s = 0.0;
        for (var k = 0; k < uniforms.numSplits; k = k + 1) {
          s = s + partials[k * uniforms.numOut + i];
        }
        result[i] = s;
      }
    `;
    }
    return `
      var<workgroup> laneSums : array<f32, 256>;

      fn main() {
        let li = i32(localIndex);
        let lane = li / ${perWg};
        let o = li - lane * ${perWg};
        let i = i32(workgroupId.y * numWorkgroups.x + workgroupId.x) * ${perWg} + o;
        var s = 0.0;
        if (i < uniforms.numOut) {
          for (var k = lane; k < uniforms.numSplits; k = k + ${L}) {
            s = s + partials[k * uniforms.numOut + i];
          }
        }
        laneSums[li] = s;
        workgroupBarrier();
        if (lane == 0 && i < uniforms.numOut) {
          var total = laneSums[o];
          for (var l = 1; l < ${L}; l = l + 1) {
            total = total + laneSums[l * ${perWg} + o];
          }
          result[i] = total;
        }
      }
    `;
  }
}

/** Largest power of two <= v (v >= 1). */
function floorPow2(v: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, v)));
}

/**
 * Sum S partial buffers of `numOut` values each into a new tensor of `outShape`, then dispose the partials.
 */
export function sumSplits(backend: WebGPUBackend, partials: TensorInfo, numSplits: number, outShape: number[]): TensorInfo {
  const numOut = outShape.reduce((a, b) => a * b, 1);
  // Enough lanes to keep ~64K threads busy, but each lane should still add a few terms.
  const lanes = Math.max(1, Math.min(64, floorPow2(65536 / numOut), floorPow2(numSplits / 4)));
  const program = new SplitSumProgram(outShape, lanes, backend.device.limits.maxComputeWorkgroupsPerDimension);
  const uniforms: Uniform[] = [
    { type: 'int32', data: [numOut] },
    { type: 'int32', data: [numSplits] },
  ];
  const out = backend.runWebGPUProgram(program, [partials], 'float32', uniforms);
  backend.disposeData(partials.dataId);
  return out;
}


/**
 * GELU as MambaOut's model computes it with tfjs ops: 0.5 x (1 + erf(x / √2)), erf by Abramowitz & Stegun 7.1.26
 * (|error| <= 1.5e-7), the formula and constants of tfjs's Erf kernels (cpu and webgpu), so fused kernels match the
 * op-by-op model to float rounding. geluGrad(x) = 0.5 (1 + erf(x / √2)) + x exp(-x²/2) / √(2π) is what tfjs's
 * autodiff of that expression gives (its Erf gradient is the exact 2/√π exp(-x²)).
 */
export const WGSL_GELU = `
fn erfAS(x : f32) -> f32 {
  // Abramowitz & Stegun 7.1.26, as tfjs's Erf kernels.
  let p = 0.3275911;
  let a1 = 0.254829592;
  let a2 = -0.284496736;
  let a3 = 1.421413741;
  let a4 = -1.453152027;
  let a5 = 1.061405429;
  let ax = abs(x);
  let t = 1.0 / (1.0 + p * ax);
  let y = 1.0 - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * exp(-ax * ax);
  return select(-y, y, x >= 0.0);
}
fn gelu(x : f32) -> f32 {
  return x * (erfAS(x * 0.7071067811865476) + 1.0) * 0.5;
}
fn geluGrad(x : f32) -> f32 {
  return 0.5 * (erfAS(x * 0.7071067811865476) + 1.0) + x * exp(-0.5 * x * x) * 0.3989422804014327;
}
`;

/** [0, 1, ..., n-1] */
export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * Entry point and thread coordinates of the register-tiled matrix-product shaders (gemm.ts, and matmul.ts's v1 kernel
 * kept for A/B runs): a one-dimensional workgroup of `wx` x (size / wx) threads; thread (tx, ty) of workgroup
 * (x, y, z) works on the output tile whose first column is n0 = x * bn and first row m0 = y * bm; z is the batch or
 * the K chunk. The caller's body follows and closes the function.
 */
export function wgslTileMainHeader(workgroupSize: number, wx: number, bm: number, bn: number): string {
  return `@compute @workgroup_size(${workgroupSize}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lidx : u32) {
  let li = i32(lidx);
  let tx = li % ${wx};
  let ty = li / ${wx};
  let n0 = i32(wid.x) * ${bn};
  let m0 = i32(wid.y) * ${bm};
  let z = i32(wid.z);`;
}
