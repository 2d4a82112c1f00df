/**
 * The 7x7 depthwise convolution of MambaOut's gate, reading its channels straight out of fc1's output.
 *
 * GatedCNN splits f = fc1(x) [rows, 2h] into (g, i, c) and convolves c = f[..., 2h-C : 2h]. tfjs needs c as its own
 * tensor: a Slice copied it (2.8 ms of tiny's 51.8 ms inference forward on an H200, batch 128) before tfjs's
 * depthwise program (2.4 ms). Here the convolution reads f at channel offset 2h - C with a pixel stride of 2h:
 *
 *   MambaoutGateConv (f, filter) -> k [N,H,W,C]      k = depthwiseConv2d(c, filter, 1, 'same') (no bias: the gate
 *       kernel adds it). One thread per (n, y, 4 consecutive x, 4 channels): vec4 loads of a sliding row of
 *       KW + 3 pixels per filter row, KW vec4 weights, 4 x KW vec4 FMAs; consecutive threads take consecutive
 *       channel quads (coalesced).
 *   MambaoutGateConvFilterGrad (f, dk) -> dW [KH,KW,C,1]: ./depthwise_backprop_filter.ts's split reduction with the
 *       same offset and stride.
 * The input gradient needs no offset (it is written into df by the gate's gradient kernel), so tfjs's
 * DepthwiseConv2dNativeBackpropInput (ours) is used as is.
 * Needs C % 4 == 0 and 2h % 4 == 0 (vec4 reads at the offset); src/ops/gated_cnn.ts checks before using it.
 * attr bf16 (--amp): f is packed bf16 (./bf16.ts); k and the filter gradient stay float32.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { dispatch2D, runCustomProgram, uniformStruct } from './dispatch.js';
import { depthwiseFilterGradStrided } from './depthwise_backprop_filter.js';
import { range, type KernelArgs } from './util.js';
import { WGSL_BF16 } from './bf16.js';

/** Output pixels along W per thread. */
const TX = 4;
const WG = 128;

const UNIFORMS = ['total', 'H', 'W', 'C4', 'P4', 'off4', 'XB', 'KH', 'padT', 'padL'];

function source(kw: number, bf16: boolean): string {
  const nv = TX + kw - 1;
  const loads = range(nv).map((j) => `let v${j} = ld(rb, x0 - u.padL + ${j});`).join('\n    ');
  const weights = range(kw).map((k) => `let w${k} = wt[(ky * ${kw} + ${k}) * u.C4 + cq];`).join('\n    ');
  const fmas = range(TX).map((o) => range(kw).map((k) => `a${o} = fma(v${o + k}, w${k}, a${o});`).join(' ')).join('\n    ');
  const stores = range(TX).map((o) => `if (x0 + ${o} < u.W) { result[(rowOut + x0 + ${o}) * u.C4 + cq] = a${o}; }`).join('\n  ');
  return `
${uniformStruct(UNIFORMS.map((name) => ({ name, type: 'i32', value: 0 })), 3)}
@group(0) @binding(0) var<storage, read_write> result : array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> f : array<${bf16 ? 'vec2<u32>' : 'vec4<f32>'}>;
@group(0) @binding(2) var<storage, read> wt : array<vec4<f32>>;
${bf16 ? WGSL_BF16 : ''}
fn ld(rb : i32, x : i32) -> vec4<f32> {
  if (x < 0 || x >= u.W) { return vec4<f32>(0.0); }
  return ${bf16 ? 'unpackBf16x4(f[rb + x * u.P4])' : 'f[rb + x * u.P4]'};
}

@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let idx = i32(wid.y * nwg.x + wid.x) * ${WG} + i32(lidx);
  if (idx >= u.total) { return; }
  let cq = idx % u.C4;
  let t = idx / u.C4;
  let xb = t % u.XB;
  let t2 = t / u.XB;
  let y = t2 % u.H;
  let n = t2 / u.H;
  let x0 = xb * ${TX};
  ${range(TX).map((o) => `var a${o} = vec4<f32>(0.0);`).join(' ')}
  for (var ky = 0; ky < u.KH; ky = ky + 1) {
    let iy = y + ky - u.padT;
    if (iy < 0 || iy >= u.H) { continue; }
    let rb = (n * u.H + iy) * u.W * u.P4 + u.off4 + cq;
    ${weights}
    ${loads}
    ${fmas}
  }
  let rowOut = (n * u.H + y) * u.W;
  ${stores}
}
`;
}

interface GateConvAttrs {
  /** Channel offset of the conv input in f (2h - C). */
  offset: number;
  /** f is packed bf16 (--amp): int32 [N, H, W, P / 2]. */
  bf16?: boolean;
}

function check(f: TensorInfo, C: number, offset: number, bf16: boolean): { N: number; H: number; W: number; P: number } {
  const [N, H, W] = f.shape;
  const P = f.shape[3] * (bf16 ? 2 : 1);
  if (f.shape.length !== 4 || C % 4 !== 0 || P % 4 !== 0 || offset % 4 !== 0 || offset + C > P) {
    throw new Error(`MambaoutGateConv: f [${f.shape}], ${C} channels at offset ${offset}: needs NHWC and multiples of 4`);
  }
  return { N, H, W, P };
}

/** Kernel MambaoutGateConv: inputs f [N,H,W,P], filter [KH,KW,C,1]; attr offset. Output [N,H,W,C] ('same', stride 1). */
export function gateConvKernel(args: KernelArgs): TensorInfo {
  const { f, filter } = args.inputs;
  const { offset, bf16 = false } = args.attrs as unknown as GateConvAttrs;
  const [KH, KW, C] = filter.shape;
  const { N, H, W, P } = check(f, C, offset, bf16);
  const XB = Math.ceil(W / TX);
  const total = N * H * XB * (C / 4);
  const vals: Record<string, number> = {
    total, H, W, C4: C / 4, P4: P / 4, off4: offset / 4, XB, KH, padT: Math.floor((KH - 1) / 2), padL: Math.floor((KW - 1) / 2),
  };
  return runCustomProgram(args.backend, {
    name: 'GateConv',
    key: `mambaout_gate_conv_${KW}${bf16 ? '_bf16' : ''}`,
    code: () => source(KW, bf16),
    outputShapes: [[N, H, W, C]],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: UNIFORMS.map((name) => ({ name, type: 'i32' as const, value: vals[name] })),
  }, [f, filter])[0];
}

/** Kernel MambaoutGateConvFilterGrad: inputs f, dk [N,H,W,C]; attrs offset, filterShape. Output [KH,KW,C,1]. */
export function gateConvFilterGradKernel(args: KernelArgs): TensorInfo {
  const { f, dk } = args.inputs;
  const { offset, filterShape, bf16 = false } = args.attrs as unknown as GateConvAttrs & { filterShape: [number, number, number, number] };
  const C = filterShape[2];
  const { P } = check(f, C, offset, bf16);
  return depthwiseFilterGradStrided(args.backend as WebGPUBackend, f, dk, filterShape, { pixelStride: P, channelOffset: offset, bf16 });
}
