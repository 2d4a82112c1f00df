/**
 * Kernel MambaoutPrepareBatch: the prefetcher's whole batch work in one dispatch (src/data/prefetch.ts plans it and
 * computes the same thing on the host and with tfjs ops). From the uint8 NHWC batch as uploaded (4 bytes packed
 * per int32 word: 4x less to move than float32) to the normalized, mixed and erased float32 batch the model takes:
 *
 *   v   = byte(i, e)                                 image i, element e = (y·W + x)·3 + c
 *   v   = rint(tab_i[v] + tab_i[256 + byte(B−1−i, e)])       kind 1 (mixup; tab = float32 product tables, so one
 *                                                             float32 add: nothing for an fma contraction to change)
 *   v   = byte(B−1−i, e) inside the CutMix box                kind 2
 *   out = lut[c·256 + v]                               timm's prefetcher normalization, float32-exact table
 *   out = 0 | colour_j[c] | counterNormal(key, posBase + i, e)   inside erase box j (modes const / rand / pixel)
 *
 * Every step except the pixel noise (log/cos on the GPU) gives the host's float32 values bit for bit.
 *
 * Inputs: words int32 [ceil(B·H·W·3 / 4)], lut float32 [768]; with `train` also ints int32 [B, 6 + 4·maxBoxes]
 * (kind, cut box y0 y1 x0 x1, erase count, then top left height width per erase box) and floats float32
 * [B, 512 + 3·maxBoxes] (the two 256-entry blend tables, then an rgb colour per erase box).
 * Attrs: n, height, width, train, maxBoxes, mode (0 const, 1 rand, 2 pixel), key, posBase (uint32).
 * One thread per output element (memory-bound: 19 MB in, 77 MB out for 128 images at 224 px).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelArgs } from './util.js';
import { dispatch2D, runCustomProgram, uniformStruct, type CustomProgram } from './dispatch.js';
import { COUNTER_NORMAL_WGSL } from '../../../utils/counter_rng.js';

const WG = 256;

export interface PrepareBatchAttrs {
  n: number;
  height: number;
  width: number;
  train: boolean;
  maxBoxes: number;
  mode: number;
  key: number;
  posBase: number;
}

function uniforms(a: PrepareBatchAttrs): NonNullable<CustomProgram['uniforms']> {
  const imgSize = a.height * a.width * 3;
  return [
    { name: 'total', type: 'i32', value: a.n * imgSize },
    { name: 'imgSize', type: 'i32', value: imgSize },
    { name: 'width', type: 'i32', value: a.width },
    { name: 'n', type: 'i32', value: a.n },
    { name: 'intStride', type: 'i32', value: 6 + 4 * a.maxBoxes },
    { name: 'floatStride', type: 'i32', value: 512 + 3 * a.maxBoxes },
    { name: 'mode', type: 'i32', value: a.mode },
    { name: 'key', type: 'u32', value: a.key >>> 0 },
    { name: 'posBase', type: 'u32', value: a.posBase >>> 0 },
  ];
}

function source(train: boolean): string {
  const u = uniforms({ n: 0, height: 0, width: 0, train, maxBoxes: 0, mode: 0, key: 0, posBase: 0 });
  return `
${uniformStruct(u, train ? 5 : 3)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> words : array<i32>;
@group(0) @binding(2) var<storage, read> lut : array<f32>;
${train ? `@group(0) @binding(3) var<storage, read> ints : array<i32>;
@group(0) @binding(4) var<storage, read> floats : array<f32>;
${COUNTER_NORMAL_WGSL}` : ''}
fn byteAt(e : i32) -> i32 {
  let w = bitcast<u32>(words[e >> 2u]);
  return i32((w >> (u32(e & 3) * 8u)) & 255u);
}

@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>,
        @builtin(local_invocation_index) lidx : u32) {
  let idx = i32(wid.y * nwg.x + wid.x) * ${WG} + i32(lidx);
  if (idx >= u.total) { return; }
  let img = idx / u.imgSize;
  let r = idx - img * u.imgSize;
  let c = r % 3;
  var v = byteAt(idx);
${train ? `  let p = r / 3;
  let y = p / u.width;
  let x = p - y * u.width;
  let ib = img * u.intStride;
  let fb = img * u.floatStride;
  let kind = ints[ib];
  if (kind != 0) {
    let b = byteAt((u.n - 1 - img) * u.imgSize + r);
    if (kind == 1) {
      v = i32(clamp(round(floats[fb + v] + floats[fb + 256 + b]), 0.0, 255.0));
    } else if (y >= ints[ib + 1] && y < ints[ib + 2] && x >= ints[ib + 3] && x < ints[ib + 4]) {
      v = b;
    }
  }` : ''}
  var o = lut[c * 256 + v];
${train ? `  let cnt = ints[ib + 5];
  var hit = -1;
  for (var j = 0; j < cnt; j++) {
    let q = ib + 6 + 4 * j;
    let top = ints[q];
    let left = ints[q + 1];
    if (y >= top && y < top + ints[q + 2] && x >= left && x < left + ints[q + 3]) { hit = j; }
  }
  if (hit >= 0) {
    if (u.mode == 1) {
      o = floats[fb + 512 + 3 * hit + c];
    } else if (u.mode == 2) {
      o = counterNormal(u.key, u.posBase + u32(img), u32(r));
    } else {
      o = 0.0;
    }
  }` : ''}
  result[idx] = o;
}
`;
}

export function prepareBatchKernel(args: KernelArgs): TensorInfo {
  const a = args.attrs as unknown as PrepareBatchAttrs;
  const { words, lut, ints, floats } = args.inputs;
  const inputs = a.train ? [words, lut, ints, floats] : [words, lut];
  const total = a.n * a.height * a.width * 3;
  return runCustomProgram(args.backend, {
    name: 'PrepareBatch',
    key: `mambaout_prepare_batch_${a.train ? 'train' : 'eval'}`,
    code: () => source(a.train),
    outputShapes: [[a.n, a.height, a.width, 3]],
    dispatch: dispatch2D(args.backend, Math.ceil(total / WG)),
    uniforms: uniforms(a),
  }, inputs)[0];
}
