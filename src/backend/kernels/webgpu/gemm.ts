/**
 * WGSL generator of a register-tiled GEMM, C = A · B (+ epilogue), shared by BatchMatMul, the fused Linear kernel
 * and the convolution input gradient (an implicit GEMM whose operands are gathered).
 *
 * Structure (one workgroup per bm x bn output tile, see ./matmul_tiles.ts for the shapes):
 *   - thread (tx, ty) of a (bn/tn) x (bm/tm) grid owns rows ty*4 + r + i*4*WY and columns tx*4 + c + j*4*WX
 *     (r, c < 4): its accumulators are vec4 registers, and its reads of the shared tiles are vec4 loads of 4
 *     consecutive rows (A, a broadcast within a row of threads) or columns (B, 16 consecutive vec4 across tx: no bank
 *     conflicts);
 *   - shared tiles are k-major (As[k][m], Bs[k][n]); an operand whose contiguous axis is K is read from global memory
 *     as vec4 along K and scattered into 4 k-rows (rows padded by one vec4 so that the scatter does not hit one bank);
 *     one whose contiguous axis is M or N is copied as vec4 directly. vec4 global reads need the contiguous length to
 *     be a multiple of 4; otherwise the operand is read one float at a time (same layout in shared memory);
 *   - optional register prefetch: the next K step's global reads are issued before the current step's arithmetic;
 *   - split-K: workgroup z takes one chunk of K and writes partial sums [S, M, N] (added by `sumSplits`); else z is
 *     the batch index;
 *   - epilogue (no split): + bias[n], then gelu (optionally also writing the pre-activation z), then + residual[m, n].
 * Operands are described by index functions (element index of A(m, k) / B(k, n), or -1 for an implicit zero), so a
 * convolution can gather its operands through the same tile code.
 */
import type { GemmTile } from './matmul_tiles.js';
import { WGSL_GELU, range, wgslTileMainHeader } from './util.js';
import { WGSL_BF16 } from './bf16.js';

/** Which axis of an operand is contiguous in memory: 'k' (A row-major / B transposed) or the other one. */
export type Contig = 'k' | 'mn';

export interface GemmOperand {
  contig: Contig;
  /** Read as vec4 along the contiguous axis (its length, and every index the function returns, a multiple of 4). */
  vec4: boolean;
  /**
   * WGSL body of `fn aIndex(m : i32, k : i32, z : i32) -> i32` (resp. bIndex(k, n, z)): the element index, or -1 for
   * an implicit zero. Only called for m < M, n < N, k < kEnd. For vec4 operands it is called for the first element
   * of a quad (k % 4 == 0 or m/n % 4 == 0) and must return an index that is a multiple of 4.
   */
  index: string;
  /** Stored as packed bf16 pairs (./bf16.ts; needs vec4): read 4 values as one vec2<u32> and widen to f32. */
  bf16?: boolean;
}

export interface GemmEpilogue {
  bias: boolean;
  gelu: boolean;
  /** With gelu: also write the pre-activation (bias added) as a second output `z`. */
  saveZ: boolean;
  residual: boolean;
}

export const NO_EPILOGUE: GemmEpilogue = { bias: false, gelu: false, saveZ: false, residual: false };

export interface GemmSpec {
  tile: GemmTile;
  a: GemmOperand;
  b: GemmOperand;
  /** z is a K chunk (partial sums out) rather than a batch index. */
  split: boolean;
  epilogue: GemmEpilogue;
  /** Output rows are vec4-storable (N % 4 == 0 and row starts aligned): store vec4. */
  vec4Out: boolean;
  /** Store the result as packed bf16 (needs vec4Out; not with split or saveZ). Accumulation stays f32. */
  bf16Out?: boolean;
  /**
   * WGSL body of `fn outIndex(m : i32, z : i32) -> i32`: index of output row m's first element (default
   * z * M * N + m * N). Column n is at outIndex(m, z) + n.
   */
  outIndex?: string;
  /** Extra uniforms (i32) appended after the standard ones, and extra WGSL declarations (helper functions). */
  extraUniforms?: string[];
  extraCode?: string;
  /** WGSL statements at the start of main (after z), e.g. per-z constants for the expressions below. */
  prologue?: string;
  /** WGSL expression for the K length seen by workgroup z (default u.K); must be uniform (depend on z only). */
  kLength?: string;
  /** WGSL expression for the row count seen by workgroup z (default u.M). */
  mLength?: string;
}

export const GEMM_UNIFORMS = ['M', 'N', 'K', 'kChunk', 'aBatchStride', 'bBatchStride'];

/** Binding order: outputs (result, [z]), inputs (A, B, [bias], [residual]), uniforms. */
export function gemmBindings(spec: GemmSpec): { outputs: string[]; inputs: string[] } {
  const outputs = ['result', ...(spec.epilogue.gelu && spec.epilogue.saveZ ? ['zOut'] : [])];
  const inputs = ['A', 'B', ...(spec.epilogue.bias ? ['bias'] : []), ...(spec.epilogue.residual ? ['residual'] : [])];
  return { outputs, inputs };
}

/** Pipeline cache key of a spec (everything that changes the WGSL text except custom code, which callers add). */
export function gemmKey(spec: GemmSpec): string {
  const e = spec.epilogue;
  return `gemm_${spec.tile.name}_a${spec.a.contig}${spec.a.vec4 ? 4 : 1}_b${spec.b.contig}${spec.b.vec4 ? 4 : 1}` +
    `_${spec.split ? 's' : 'b'}_${e.bias ? 'B' : ''}${e.gelu ? (e.saveZ ? 'GZ' : 'G') : ''}${e.residual ? 'R' : ''}_${spec.vec4Out ? 'o4' : 'o1'}` +
    `${spec.a.bf16 ? '_ah' : ''}${spec.b.bf16 ? '_bh' : ''}${spec.bf16Out ? '_oh' : ''}`;
}

export function gemmSource(spec: GemmSpec): string {
  const { bm, bn, bk, tm, tn, prefetch } = spec.tile;
  const WX = bn / tn;
  const WY = bm / tm;
  const WG = WX * WY;
  if (bm % tm || bn % tn || tm % 4 || tn % 4 || bk % 4 || WG > 1024) throw new Error(`bad gemm tile ${spec.tile.name}`);
  if ((spec.a.bf16 && !spec.a.vec4) || (spec.b.bf16 && !spec.b.vec4) || (spec.bf16Out && (!spec.vec4Out || spec.split || spec.epilogue.saveZ))) {
    throw new Error('gemm: bf16 operands need vec4 reads; a bf16 result needs vec4 stores, no split, no saveZ');
  }
  const anyBf16 = spec.a.bf16 || spec.b.bf16 || spec.bf16Out;
  const { outputs, inputs } = gemmBindings(spec);
  const ep = spec.epilogue;
  // Shared row lengths in vec4 units (k-major); +1 vec4 when the operand is scattered from k-contiguous reads.
  const aLd = bm / 4 + (spec.a.contig === 'k' ? 1 : 0);
  const bLd = bn / 4 + (spec.b.contig === 'k' ? 1 : 0);

  /** Load code for one operand: declarations (registers), global->register, register->shared. */
  const operand = (name: 'A' | 'B', op: GemmOperand, rows: number, ld: number) => {
    const sh = name === 'A' ? 'As' : 'Bs';
    const idxFn = name === 'A' ? 'aIndex' : 'bIndex';
    const lim = name === 'A' ? 'mLen' : 'u.N';
    const base = name === 'A' ? 'm0' : 'n0';
    const call = (r: string, k: string) => (name === 'A' ? `${idxFn}(${r}, ${k}, z)` : `${idxFn}(${k}, ${r}, z)`);
    const w = op.vec4 ? 4 : 1;
    // Items: vec4 (or scalar) reads of the rows x bk tile.
    const items = (rows * bk) / w;
    const perThread = Math.ceil(items / WG);
    const decl: string[] = [];
    const load: string[] = [];
    const store: string[] = [];
    for (const s of range(perThread)) {
      const reg = `r${name}${s}`;
      decl.push(`var ${reg} : ${op.vec4 ? 'vec4<f32>' : 'f32'};`);
      const guard = (s + 1) * WG > items ? `e${name}${s} < ${items}` : 'true';
      // Item e -> (row r, k) in the tile. k-contiguous: consecutive items walk k; else they walk the rows.
      const per = op.contig === 'k' ? bk / w : rows / w;
      const coords = op.contig === 'k'
        ? `let rr = e / ${per}; let kk = (e % ${per}) * ${w};`
        : `let kk = e / ${per}; let rr = (e % ${per}) * ${w};`;
      load.push(`{ let e = e${name}${s}; ${reg} = ${op.vec4 ? 'vec4<f32>(0.0)' : '0.0'};
      if (${guard}) { ${coords} let gr = ${base} + rr; let gk = k0 + kk;
        if (gr < ${lim} && gk < kEnd) { let gi = ${call('gr', 'gk')}; if (gi >= 0) { ${reg} = ${op.bf16 ? `unpackBf16x4(${name}[gi / 4])` : `${name}[${op.vec4 ? 'gi / 4' : 'gi'}]`}; } } } }`);
      let st: string;
      if (op.contig === 'k') {
        st = op.vec4
          ? `for (var c = 0; c < 4; c = c + 1) { ${sh}[(kk + c) * ${ld} + rr / 4][rr % 4] = ${reg}[c]; }`
          : `${sh}[kk * ${ld} + rr / 4][rr % 4] = ${reg};`;
      } else {
        st = op.vec4 ? `${sh}[kk * ${ld} + rr / 4] = ${reg};` : `${sh}[kk * ${ld} + rr / 4][rr % 4] = ${reg};`;
      }
      store.push(`if (${guard}) { let e = e${name}${s}; ${coords} ${st} }`);
      decl.push(`let e${name}${s} = li + ${s * WG};`);
    }
    return { decl: decl.join('\n  '), load: load.join('\n    '), store: store.join('\n    ') };
  };
  const A = operand('A', spec.a, bm, aLd);
  const B = operand('B', spec.b, bn, bLd);

  const accDecl: string[] = [];
  const inner: string[] = [];
  for (const i of range(tm / 4)) inner.push(`let a${i} = As[kk * ${aLd} + ty + ${i * WY}];`);
  for (const j of range(tn / 4)) inner.push(`let b${j} = Bs[kk * ${bLd} + tx + ${j * WX}];`);
  for (const i of range(tm / 4)) {
    for (const r of range(4)) {
      for (const j of range(tn / 4)) {
        accDecl.push(`var c${i}_${r}_${j} = vec4<f32>(0.0);`);
        inner.push(`c${i}_${r}_${j} = fma(vec4<f32>(a${i}[${r}]), b${j}, c${i}_${r}_${j});`);
      }
    }
  }

  // Epilogue and store.
  const store: string[] = [];
  const vecOut = spec.vec4Out;
  for (const i of range(tm / 4)) {
    for (const r of range(4)) {
      store.push(`{ let m = m0 + ty * 4 + ${r + i * 4 * WY}; if (m < mLen) { let ob = outIndex(m, z);`);
      for (const j of range(tn / 4)) {
        const n = `n0 + tx * 4 + ${j * 4 * WX}`;
        const acc = `c${i}_${r}_${j}`;
        if (vecOut) {
          const lines: string[] = [`var v = ${acc};`];
          if (ep.bias) lines.push('v = v + bias[n / 4];');
          if (ep.gelu) {
            if (ep.saveZ) lines.push('zOut[(ob + n) / 4] = v;');
            lines.push('v = vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));');
          }
          if (ep.residual) lines.push('v = v + residual[(m * u.N + n) / 4];');
          lines.push(spec.bf16Out ? 'result[(ob + n) / 4] = packBf16x4(v);' : 'result[(ob + n) / 4] = v;');
          store.push(`  { let n = ${n}; if (n < u.N) { ${lines.join(' ')} } }`);
        } else {
          for (const c of range(4)) {
            const lines: string[] = [`var v = ${acc}[${c}];`];
            if (ep.bias) lines.push('v = v + bias[n];');
            if (ep.gelu) {
              if (ep.saveZ) lines.push('zOut[ob + n] = v;');
              lines.push('v = gelu(v);');
            }
            if (ep.residual) lines.push('v = v + residual[m * u.N + n];');
            lines.push('result[ob + n] = v;');
            store.push(`  { let n = ${n} + ${c}; if (n < u.N) { ${lines.join(' ')} } }`);
          }
        }
      }
      store.push('} }');
    }
  }

  const f = (vec: boolean, bf16 = false) => (bf16 ? 'vec2<u32>' : vec ? 'vec4<f32>' : 'f32');
  const bindings: string[] = [];
  let bi = 0;
  bindings.push(`@group(0) @binding(${bi++}) var<storage, read_write> result : array<${f(vecOut, spec.bf16Out)}>;`);
  if (outputs.includes('zOut')) bindings.push(`@group(0) @binding(${bi++}) var<storage, read_write> zOut : array<${f(vecOut)}>;`);
  bindings.push(`@group(0) @binding(${bi++}) var<storage, read> A : array<${f(spec.a.vec4, spec.a.bf16)}>;`);
  bindings.push(`@group(0) @binding(${bi++}) var<storage, read> B : array<${f(spec.b.vec4, spec.b.bf16)}>;`);
  if (inputs.includes('bias')) bindings.push(`@group(0) @binding(${bi++}) var<storage, read> bias : array<${f(vecOut)}>;`);
  if (inputs.includes('residual')) bindings.push(`@group(0) @binding(${bi++}) var<storage, read> residual : array<${f(vecOut)}>;`);
  const uniforms = [...GEMM_UNIFORMS, ...(spec.extraUniforms ?? [])];

  const loop = prefetch
    ? `
  var k0 = kBegin;
  ${A.load}
  ${B.load}
  for (var st = 0; st < steps; st = st + 1) {
    ${A.store}
    ${B.store}
    workgroupBarrier();
    k0 = k0 + ${bk};
    if (st + 1 < steps) {
    ${A.load}
    ${B.load}
    }
    for (var kk = 0; kk < ${bk}; kk = kk + 1) {
      ${inner.join('\n      ')}
    }
    workgroupBarrier();
  }`
    : `
  for (var st = 0; st < steps; st = st + 1) {
    let k0 = kBegin + st * ${bk};
    ${A.load}
    ${B.load}
    ${A.store}
    ${B.store}
    workgroupBarrier();
    for (var kk = 0; kk < ${bk}; kk = kk + 1) {
      ${inner.join('\n      ')}
    }
    workgroupBarrier();
  }`;

  return `
struct Uniforms {
${uniforms.map((n) => `  ${n} : i32,`).join('\n')}
};
${bindings.join('\n')}
@group(0) @binding(${bi}) var<uniform> u : Uniforms;

var<workgroup> As : array<vec4<f32>, ${bk * aLd}>;
var<workgroup> Bs : array<vec4<f32>, ${bk * bLd}>;
${ep.gelu ? WGSL_GELU : ''}
${anyBf16 ? WGSL_BF16 : ''}
${spec.extraCode ?? ''}
fn aIndex(m : i32, k : i32, z : i32) -> i32 {
  ${spec.a.index}
}
fn bIndex(k : i32, n : i32, z : i32) -> i32 {
  ${spec.b.index}
}
fn outIndex(m : i32, z : i32) -> i32 {
  ${spec.outIndex ?? 'return z * u.M * u.N + m * u.N;'}
}

${wgslTileMainHeader(WG, WX, bm, bn)}
  ${spec.prologue ?? ''}
  let mLen = ${spec.mLength ?? 'u.M'};
  let kLen = ${spec.kLength ?? 'u.K'};
  ${spec.split ? 'let kBegin = z * u.kChunk;\n  let kEnd = min(kBegin + u.kChunk, kLen);' : 'let kBegin = 0;\n  let kEnd = kLen;'}
  // Depends on uniforms and the workgroup id only, so the barriers stay in uniform control flow.
  let steps = (max(kEnd - kBegin, 0) + ${bk - 1}) / ${bk};
  ${A.decl}
  ${B.decl}
  ${accDecl.join(' ')}
  ${loop}
  if (m0 >= mLen) { return; }
  ${store.join('\n  ')}
}
`;
}

/** Index function bodies for plain row-major operands (batch strides from the uniforms). */
export const PLAIN_INDEX = {
  /** A stored [M, K] (contig 'k') or [K, M] (contig 'mn'). */
  a: (contig: Contig): string => (contig === 'k'
    ? 'return z * u.aBatchStride + m * u.K + k;'
    : 'return z * u.aBatchStride + k * u.M + m;'),
  /** B stored [N, K] (contig 'k') or [K, N] (contig 'mn'). */
  b: (contig: Contig): string => (contig === 'k'
    ? 'return z * u.bBatchStride + n * u.K + k;'
    : 'return z * u.bBatchStride + k * u.N + n;'),
};
