/**
 * Fast float32 replacements for tfjs 'cpu' kernels that dominate a MambaOut training step once the convolution
 * gradients are fixed:
 *  - Add / Sub / Multiply / RealDiv with broadcasting: tfjs converts every output index to coordinates and back
 *    (indexToLoc + slice + forEach + locToIndex per element, ~1 µs each). Here the shapes are first reduced to a few
 *    merged dimensions (adjacent dimensions with the same broadcast pattern collapse), the outer ones are walked
 *    with an odometer and the innermost one by a tight loop (vector-vector, vector-scalar or scalar-vector).
 *  - Sum over any axes: tfjs transposes the reduced axes innermost first (a generic, slow Transpose). Here merged
 *    dimensions are walked in memory order, accumulating into a float64 buffer (or a local sum when the innermost
 *    dimension is reduced).
 *  - SplitV: tfjs slices each piece element by element when it is not contiguous; here each piece is a set of
 *    contiguous runs copied with TypedArray.set.
 */

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div';

/** Broadcast shape of a and b (numpy rules), or null when incompatible. */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] | null {
  const R = Math.max(a.length, b.length);
  const out: number[] = new Array(R);
  for (let i = 0; i < R; i++) {
    const da = i < R - a.length ? 1 : a[i - (R - a.length)];
    const db = i < R - b.length ? 1 : b[i - (R - b.length)];
    if (da !== db && da !== 1 && db !== 1) return null;
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * out = a ∘ b with numpy broadcasting (`∘` = op). `out` must have the broadcast shape's size.
 */
export function broadcastBinary(op: BinaryOp, a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[], out: Float32Array): void {
  const shape = broadcastShape(aShape, bShape);
  if (!shape) throw new Error(`broadcastBinary: shapes [${aShape}] and [${bShape}] do not broadcast`);
  const R = shape.length;
  // Merge dimensions: each merged dim has a size and whether a / b vary along it (1) or are broadcast (0).
  const sizes: number[] = [];
  const aVar: number[] = [];
  const bVar: number[] = [];
  for (let i = 0; i < R; i++) {
    const n = shape[i];
    if (n === 1) continue;
    const av = (i < R - aShape.length ? 1 : aShape[i - (R - aShape.length)]) === 1 ? 0 : 1;
    const bv = (i < R - bShape.length ? 1 : bShape[i - (R - bShape.length)]) === 1 ? 0 : 1;
    const k = sizes.length - 1;
    if (k >= 0 && aVar[k] === av && bVar[k] === bv) sizes[k] *= n;
    else {
      sizes.push(n);
      aVar.push(av);
      bVar.push(bv);
    }
  }
  const D = sizes.length;
  if (D === 0) {
    if (out.length) out[0] = apply1(op, a[0], b[0]);
    return;
  }
  // Element strides of a and b per merged dim (0 where broadcast).
  const aStr = new Array<number>(D);
  const bStr = new Array<number>(D);
  let sa = 1;
  let sb = 1;
  for (let k = D - 1; k >= 0; k--) {
    aStr[k] = aVar[k] ? sa : 0;
    bStr[k] = bVar[k] ? sb : 0;
    if (aVar[k]) sa *= sizes[k];
    if (bVar[k]) sb *= sizes[k];
  }
  const n = sizes[D - 1];
  const mode = (aVar[D - 1] ? 2 : 0) + (bVar[D - 1] ? 1 : 0); // 3 vv, 2 vs, 1 sv
  const outer = out.length / n;
  const idx = new Array<number>(D).fill(0);
  let ao = 0;
  let bo = 0;
  for (let row = 0, o = 0; row < outer; row++, o += n) {
    inner(op, mode, out, o, a, ao, b, bo, n);
    // odometer over the outer merged dims
    for (let k = D - 2; k >= 0; k--) {
      ao += aStr[k];
      bo += bStr[k];
      if (++idx[k] < sizes[k]) break;
      ao -= aStr[k] * sizes[k];
      bo -= bStr[k] * sizes[k];
      idx[k] = 0;
    }
  }
}

function apply1(op: BinaryOp, x: number, y: number): number {
  return op === 'add' ? x + y : op === 'sub' ? x - y : op === 'mul' ? x * y : x / y;
}

/** One innermost run: each op × pattern is its own monomorphic loop. */
function inner(op: BinaryOp, mode: number, out: Float32Array, o: number, a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): void {
  const end = o + n;
  if (mode === 3) {
    const d = ao - o;
    const e = bo - o;
    if (op === 'add') for (let i = o; i < end; i++) out[i] = a[i + d] + b[i + e];
    else if (op === 'sub') for (let i = o; i < end; i++) out[i] = a[i + d] - b[i + e];
    else if (op === 'mul') for (let i = o; i < end; i++) out[i] = a[i + d] * b[i + e];
    else for (let i = o; i < end; i++) out[i] = a[i + d] / b[i + e];
  } else if (mode === 2) {
    const d = ao - o;
    const y = b[bo];
    if (op === 'add') for (let i = o; i < end; i++) out[i] = a[i + d] + y;
    else if (op === 'sub') for (let i = o; i < end; i++) out[i] = a[i + d] - y;
    else if (op === 'mul') for (let i = o; i < end; i++) out[i] = a[i + d] * y;
    else for (let i = o; i < end; i++) out[i] = a[i + d] / y;
  } else {
    const e = bo - o;
    const x = a[ao];
    if (op === 'add') for (let i = o; i < end; i++) out[i] = x + b[i + e];
    else if (op === 'sub') for (let i = o; i < end; i++) out[i] = x - b[i + e];
    else if (op === 'mul') for (let i = o; i < end; i++) out[i] = x * b[i + e];
    else for (let i = o; i < end; i++) out[i] = x / b[i + e];
  }
}

/**
 * Sum of `x` (shape `shape`) over `axes` (non-negative, any order); `out` has the size of the kept dims (in order).
 */
export function reduceSum(x: Float32Array, shape: readonly number[], axes: readonly number[], out: Float32Array): void {
  const red = new Set(axes);
  // Merge adjacent dims with the same reduce status (size-1 dims are dropped).
  const sizes: number[] = [];
  const reduced: boolean[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1) continue;
    const r = red.has(i);
    const k = sizes.length - 1;
    if (k >= 0 && reduced[k] === r) sizes[k] *= shape[i];
    else {
      sizes.push(shape[i]);
      reduced.push(r);
    }
  }
  const D = sizes.length;
  if (x.length === 0) {
    out.fill(0);
    return;
  }
  if (D === 0 || (D === 1 && !reduced[0])) {
    // nothing to reduce (or a scalar)
    if (D === 0) out[0] = x[0];
    else out.set(x);
    return;
  }
  if (D === 1) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i];
    out[0] = s;
    return;
  }
  // Output stride per merged dim (0 for reduced dims).
  const oStr = new Array<number>(D);
  let so = 1;
  for (let k = D - 1; k >= 0; k--) {
    oStr[k] = reduced[k] ? 0 : so;
    if (!reduced[k]) so *= sizes[k];
  }
  const n = sizes[D - 1];
  const outer = x.length / n;
  const idx = new Array<number>(D).fill(0);
  let oo = 0;
  if (D === 2 && reduced[1]) {
    // [kept, reduced]: one contiguous row per output element
    for (let row = 0, xi = 0; row < outer; row++) {
      let s = 0;
      const end = xi + n;
      for (; xi < end; xi++) s += x[xi];
      out[row] = s;
    }
  } else {
    // Row by row along the innermost dim; oo, the row's first output element, advances as an odometer over the
    // outer dims.
    const innerReduced = reduced[D - 1];
    const acc = new Float64Array(out.length);
    for (let row = 0, xi = 0; row < outer; row++) {
      const end = xi + n;
      if (innerReduced) {
        // innermost reduced: the row sums into one output element
        let s = 0;
        for (; xi < end; xi++) s += x[xi];
        acc[oo] += s;
      } else {
        // innermost kept: the row adds into a contiguous output run
        const d = oo - xi;
        for (; xi < end; xi++) acc[xi + d] += x[xi];
      }
      for (let k = D - 2; k >= 0; k--) {
        oo += oStr[k];
        if (++idx[k] < sizes[k]) break;
        oo -= oStr[k] * sizes[k];
        idx[k] = 0;
      }
    }
    for (let i = 0; i < out.length; i++) out[i] = acc[i];
  }
}

/**
 * Split `x` (shape `shape`) along `axis` into pieces of `sizes` (summing to shape[axis]); returns the pieces' values.
 * Works for any typed array (copies runs with TypedArray.set).
 */
export function splitAlongAxis<T extends Float32Array | Int32Array | Uint8Array>(x: T, shape: readonly number[], axis: number, sizes: readonly number[]): T[] {
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i];
  let innerN = 1;
  for (let i = axis + 1; i < shape.length; i++) innerN *= shape[i];
  const rowLen = shape[axis] * innerN;
  const Ctor = x.constructor as new (n: number) => T;
  const pieces: T[] = [];
  let off = 0;
  for (const s of sizes) {
    const run = s * innerN;
    const piece = new Ctor(outer * run);
    for (let r = 0; r < outer; r++) {
      const src = r * rowLen + off;
      piece.set(x.subarray(src, src + run) as T, r * run);
    }
    pieces.push(piece);
    off += run;
  }
  return pieces;
}
