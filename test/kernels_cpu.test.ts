/**
 * Our typed-array kernels (src/backend/kernels/cpu): the convolution gradients against naive reference loops and
 * tfjs's original cpu kernels on random shapes (odd sizes, kernels 3/5/7, strides 1/2, same/valid/explicit padding,
 * channel multipliers 1-3); the forward convs, Conv2DBackpropInput, BatchMatMul, broadcasting binary ops, Sum and
 * SplitV against tfjs's cpu kernels; fallbacks and idempotent (un)registration; a full micro MambaOut gradient against
 * the PyTorch fixture on cpu (our kernels) and on wasm (where tfjs has no such gradient kernels at all), with the wasm
 * BatchMatMul wrapper checked against cpu.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import {
  CPU_KERNEL_NAMES, originalKernel, registerCpuKernels, registerWasmGradKernels, unregisterCpuKernels,
  unregisterWasmGradKernels,
} from '../src/backend/kernels/cpu/index.js';
import { createModel } from '../src/models/mambaout.js';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/utils/rng.js';
import { fixture, maxAbs, maxAbsDiff } from './helpers.js';
import { checkMicroGradients } from './helpers/micro_grads.js';

tf.env().set('PROD', true);
await tf.setBackend('cpu');
await tf.ready();

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
type Shape4 = [number, number, number, number];

interface Case {
  kind: 'conv' | 'depthwise';
  x: Shape4; // NHWC input shape
  filter: Shape4; // conv: [kh, kw, Ci, Co]; depthwise: [kh, kw, C, M]
  strides: [number, number];
  pad: Pad;
}

function info(c: Case) {
  return tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad as never, undefined, c.kind === 'depthwise', 'channelsLast');
}

function randomArray(rng: Rng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.uniform(-1, 1);
  return a;
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Naive references straight from the definitions (flat indexing, bounds checks per tap). */
function referenceFilterGrad(c: Case, x: Float32Array, dy: Float32Array): Float32Array {
  const ci = info(c);
  const [N, H, W, C] = c.x;
  const [kh, kw, , M] = c.filter;
  const depthwise = c.kind === 'depthwise';
  const Co = ci.outChannels;
  const out = new Float32Array(size(c.filter));
  for (let r = 0; r < kh; r++)
    for (let s = 0; s < kw; s++)
      for (let i = 0; i < C; i++)
        for (let j = 0; j < (depthwise ? M : Co); j++) {
          const d = depthwise ? i * M + j : j;
          let sum = 0;
          for (let b = 0; b < N; b++)
            for (let oy = 0; oy < ci.outHeight; oy++)
              for (let ox = 0; ox < ci.outWidth; ox++) {
                const iy = oy * ci.strideHeight + r - ci.padInfo.top;
                const ix = ox * ci.strideWidth + s - ci.padInfo.left;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                sum += x[((b * H + iy) * W + ix) * C + i] * dy[((b * ci.outHeight + oy) * ci.outWidth + ox) * Co + d];
              }
          out[((r * kw + s) * C + i) * (depthwise ? M : Co) + j] = sum;
        }
  return out;
}

function referenceDepthwiseInputGrad(c: Case, dy: Float32Array, w: Float32Array): Float32Array {
  const ci = info(c);
  const [N, H, W, C] = c.x;
  const [kh, kw, , M] = c.filter;
  const Co = C * M;
  const out = new Float32Array(size(c.x));
  for (let b = 0; b < N; b++)
    for (let oy = 0; oy < ci.outHeight; oy++)
      for (let ox = 0; ox < ci.outWidth; ox++)
        for (let r = 0; r < kh; r++)
          for (let s = 0; s < kw; s++) {
            const iy = oy * ci.strideHeight + r - ci.padInfo.top;
            const ix = ox * ci.strideWidth + s - ci.padInfo.left;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            for (let i = 0; i < C; i++)
              for (let m = 0; m < M; m++)
                out[((b * H + iy) * W + ix) * C + i] += dy[((b * ci.outHeight + oy) * ci.outWidth + ox) * Co + i * M + m] * w[((r * kw + s) * C + i) * M + m];
          }
  return out;
}

/** Random cases covering the brief's ranges: N 1-3, H/W 5-17, C 1-19, kernels 3/7 (and 5, 3x5), strides 1/2. */
function randomCases(rng: Rng, kind: Case['kind'], n: number): Case[] {
  const cases: Case[] = [];
  const pads: Array<() => Pad> = [
    () => 'same',
    () => 'valid',
    () => rng.randint(0, 3),
    () => [[0, 0], [rng.randint(0, 3), rng.randint(0, 3)], [rng.randint(0, 3), rng.randint(0, 3)], [0, 0]],
  ];
  for (let i = 0; i < n; i++) {
    const ks = [[3, 3], [7, 7], [3, 3], [7, 7], [5, 5], [3, 5]][i % 6];
    const strides: [number, number] = [[1, 1], [2, 2], [1, 2], [2, 1]][(i >> 1) % 4] as [number, number];
    const H = rng.randint(Math.max(5, ks[0]), 17);
    const W = rng.randint(Math.max(5, ks[1]), 17);
    const C = rng.randint(1, 19);
    const last = kind === 'conv' ? rng.randint(1, 19) : [1, 1, 2, 3][i % 4];
    cases.push({ kind, x: [rng.randint(1, 3), H, W, C], filter: [ks[0], ks[1], C, last], strides, pad: pads[i % 4]() });
  }
  // MambaOut's own shapes: stem/downsample conv (3x3, stride 2, pad 1 explicit) and 7x7 depthwise 'same'.
  if (kind === 'conv') cases.push({ kind, x: [2, 16, 16, 3], filter: [3, 3, 3, 4], strides: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] });
  else cases.push({ kind, x: [2, 8, 8, 16], filter: [7, 7, 16, 1], strides: [1, 1], pad: 'same' });
  return cases;
}

const label = (c: Case) => `${c.kind} x[${c.x}] f[${c.filter}] s[${c.strides}] pad ${JSON.stringify(c.pad)}`;

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-4): number {
  const rel = maxAbsDiff(got, want) / Math.max(maxAbs(want), 1e-12);
  assert.ok(rel <= tol, `${what}: rel diff ${rel}`);
  return rel;
}

function attrsOf(c: Case, ci: ReturnType<typeof info>) {
  return c.kind === 'conv'
    ? { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: undefined, filterShape: c.filter }
    : { strides: c.strides, pad: c.pad, dilations: 1, dimRoundingMode: undefined, filterShape: c.filter, inputShape: ci.inShape };
}

/** Random inputs of a case (drawn in this order: x, dy, filter), its kernel attributes and filter-gradient kernel. */
function caseInputs(c: Case, rng: Rng) {
  const ci = info(c);
  const dyShape: Shape4 = [c.x[0], ci.outHeight, ci.outWidth, ci.outChannels];
  return {
    dyShape,
    xv: randomArray(rng, size(c.x)),
    dyv: randomArray(rng, size(dyShape)),
    wv: randomArray(rng, size(c.filter)),
    attrs: attrsOf(c, ci) as unknown as tf.NamedAttrMap,
    name: c.kind === 'conv' ? 'Conv2DBackpropFilter' : 'DepthwiseConv2dNativeBackpropFilter',
  };
}

/** Run every case through the kernels registered on the current backend and compare with the references. */
function checkCases(cases: Case[], rng: Rng): number {
  let worst = 0;
  for (const c of cases) {
    const { dyShape, xv, dyv, wv, attrs, name } = caseInputs(c, rng);
    tf.tidy(() => {
      const x = tf.tensor4d(xv, c.x);
      const dy = tf.tensor4d(dyv, dyShape);
      const dw = tf.engine().runKernel(name, { x, dy }, attrs) as tf.Tensor;
      assert.deepEqual(dw.shape, c.filter, label(c));
      worst = Math.max(worst, assertClose(dw.dataSync(), referenceFilterGrad(c, xv, dyv), `${name} ${label(c)}`));
      if (c.kind === 'depthwise') {
        const dx = tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy, filter: tf.tensor4d(wv, c.filter) }, attrs) as tf.Tensor;
        assert.deepEqual(dx.shape, c.x, label(c));
        worst = Math.max(worst, assertClose(dx.dataSync(), referenceDepthwiseInputGrad(c, dyv, wv), `DepthwiseConv2dNativeBackpropInput ${label(c)}`));
      }
    });
  }
  return worst;
}

test('cpu: registration is idempotent, replaces tfjs\'s kernels and restores the originals', () => {
  const before = CPU_KERNEL_NAMES.map((n) => tf.getKernel(n, 'cpu')!.kernelFunc);
  const names = registerCpuKernels();
  assert.deepEqual(names, [
    'Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput',
    'Conv2D', 'Conv2DBackpropInput', 'DepthwiseConv2dNative', 'BatchMatMul', 'Add', 'Sub', 'Multiply', 'RealDiv', 'Sum', 'SplitV',
  ]);
  const mine = CPU_KERNEL_NAMES.map((n) => tf.getKernel(n, 'cpu')!.kernelFunc);
  assert.deepEqual(registerCpuKernels(), names);
  CPU_KERNEL_NAMES.forEach((n, i) => {
    assert.notEqual(mine[i], before[i]);
    assert.equal(tf.getKernel(n, 'cpu')!.kernelFunc, mine[i], `${n} re-registered`);
    assert.equal(originalKernel(n, 'cpu')!.kernelFunc, before[i]);
  });
  unregisterCpuKernels();
  unregisterCpuKernels();
  CPU_KERNEL_NAMES.forEach((n, i) => assert.equal(tf.getKernel(n, 'cpu')!.kernelFunc, before[i], `${n} restored`));
  registerCpuKernels();
});

test('cpu: naive references agree with tfjs\'s original kernels (explicit, same, valid padding)', () => {
  registerCpuKernels();
  const rng = new Rng(11);
  const cases: Case[] = [
    { kind: 'conv', x: [2, 9, 7, 3], filter: [3, 3, 3, 5], strides: [2, 2], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
    { kind: 'conv', x: [1, 8, 11, 4], filter: [3, 5, 4, 2], strides: [1, 2], pad: 'same' },
    { kind: 'depthwise', x: [2, 9, 10, 5], filter: [7, 7, 5, 1], strides: [1, 1], pad: 'same' },
    { kind: 'depthwise', x: [1, 11, 9, 3], filter: [3, 3, 3, 2], strides: [2, 2], pad: 'valid' },
  ];
  const backend = tf.backend();
  for (const c of cases) {
    const { dyShape, xv, dyv, wv, attrs, name } = caseInputs(c, rng);
    tf.tidy(() => {
      const x = tf.tensor4d(xv, c.x);
      const dy = tf.tensor4d(dyv, dyShape);
      const orig = originalKernel(name, 'cpu')!.kernelFunc({ inputs: { x, dy }, backend, attrs }) as TensorInfo;
      const want = backend.readSync(orig.dataId) as Float32Array;
      backend.disposeData(orig.dataId);
      assertClose(referenceFilterGrad(c, xv, dyv), want, `reference ${name} ${label(c)}`, 1e-5);
      assertClose((tf.engine().runKernel(name, { x, dy }, attrs) as tf.Tensor).dataSync(), want, `ours ${name} ${label(c)}`);
      if (c.kind === 'depthwise') {
        const filter = tf.tensor4d(wv, c.filter);
        const o = originalKernel('DepthwiseConv2dNativeBackpropInput', 'cpu')!.kernelFunc({ inputs: { dy, filter }, backend, attrs }) as TensorInfo;
        const wantDx = backend.readSync(o.dataId) as Float32Array;
        backend.disposeData(o.dataId);
        assertClose(referenceDepthwiseInputGrad(c, dyv, wv), wantDx, `reference dx ${label(c)}`, 1e-5);
        assertClose((tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy, filter }, attrs) as tf.Tensor).dataSync(), wantDx, `ours dx ${label(c)}`);
      }
    });
  }
});

test('cpu: Conv2DBackpropFilter matches the reference on 26 random shapes', () => {
  registerCpuKernels();
  const worst = checkCases(randomCases(new Rng(1), 'conv', 25), new Rng(2));
  assert.ok(worst < 1e-5, `worst ${worst}`);
});

test('cpu: depthwise filter and input gradients match the reference on 33 random shapes (multipliers 1-3)', () => {
  registerCpuKernels();
  const worst = checkCases(randomCases(new Rng(3), 'depthwise', 32), new Rng(4));
  assert.ok(worst < 1e-5, `worst ${worst}`);
});

test('cpu: Conv2D, Conv2DBackpropInput and DepthwiseConv2dNative equal tfjs\'s kernels on 40 random shapes', () => {
  registerCpuKernels();
  const rng = new Rng(14);
  const backend = tf.backend();
  const cases = [...randomCases(new Rng(15), 'conv', 20), ...randomCases(new Rng(16), 'depthwise', 18)];
  let worst = 0;
  for (const c of cases) {
    const ci = info(c);
    const dyShape: Shape4 = [c.x[0], ci.outHeight, ci.outWidth, ci.outChannels];
    const x = tf.tensor4d(randomArray(rng, size(c.x)), c.x);
    const filter = tf.tensor4d(randomArray(rng, size(c.filter)), c.filter);
    const dy = tf.tensor4d(randomArray(rng, size(dyShape)), dyShape);
    const attrs = { ...attrsOf(c, ci), dilations: 1, inputShape: c.x } as unknown as tf.NamedAttrMap;
    const runs: Array<[string, Record<string, tf.Tensor>]> = c.kind === 'conv'
      ? [['Conv2D', { x, filter }], ['Conv2DBackpropInput', { dy, filter }]]
      : [['DepthwiseConv2dNative', { x, filter }]];
    for (const [name, inputs] of runs) {
      const got = tf.engine().runKernel(name, inputs, attrs) as tf.Tensor;
      const o = originalKernel(name, 'cpu')!.kernelFunc({ inputs, backend, attrs }) as TensorInfo;
      assert.deepEqual(got.shape, o.shape, `${name} ${label(c)}`);
      worst = Math.max(worst, assertClose(got.dataSync(), backend.readSync(o.dataId) as Float32Array, `${name} ${label(c)}`, 1e-5));
      backend.disposeData(o.dataId);
      got.dispose();
    }
    tf.dispose([x, filter, dy]);
  }
  assert.ok(worst < 1e-5, `worst ${worst}`);
});

test('cpu: tf.grad through conv2d / depthwiseConv2d uses our kernels and equals tfjs\'s gradients', () => {
  const rng = new Rng(5);
  const x = tf.tensor4d(randomArray(rng, 2 * 13 * 11 * 6), [2, 13, 11, 6]);
  const w = tf.tensor4d(randomArray(rng, 9 * 6 * 7), [3, 3, 6, 7]);
  const dw = tf.tensor4d(randomArray(rng, 49 * 6), [7, 7, 6, 1]);
  const f = (a: tf.Tensor4D, b: tf.Tensor4D, c: tf.Tensor4D) =>
    tf.conv2d(tf.depthwiseConv2d(a, c, 1, 'same'), b, 2, [[0, 0], [1, 1], [1, 1], [0, 0]]).square().sum() as tf.Scalar;
  const grads = () => tf.grads(f)([x, w, dw] as tf.Tensor4D[]).map((g) => g.dataSync() as Float32Array);
  registerCpuKernels();
  const ours = grads();
  unregisterCpuKernels();
  const theirs = grads();
  registerCpuKernels();
  ours.forEach((g, i) => assertClose(g, theirs[i], `grad ${i}`));
  tf.dispose([x, w, dw]);
});

test('cpu: unsupported configurations fall back to tfjs\'s kernels (NCHW, dilation 2)', () => {
  registerCpuKernels();
  const rng = new Rng(6);
  const backend = tf.backend();
  tf.tidy(() => {
    // NCHW Conv2DBackpropFilter
    const x = tf.tensor4d(randomArray(rng, 2 * 3 * 8 * 9), [2, 3, 8, 9]);
    const dy = tf.tensor4d(randomArray(rng, 2 * 4 * 4 * 5), [2, 4, 4, 5]);
    const attrs = { strides: 2, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 3, 4] } as unknown as tf.NamedAttrMap;
    const got = (tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs) as tf.Tensor).dataSync();
    const o = originalKernel('Conv2DBackpropFilter', 'cpu')!.kernelFunc({ inputs: { x, dy }, backend, attrs }) as TensorInfo;
    assert.equal(maxAbsDiff(got, backend.readSync(o.dataId) as Float32Array), 0);
    backend.disposeData(o.dataId);
    // dilation 2 depthwise filter gradient
    const xd = tf.tensor4d(randomArray(rng, 9 * 9 * 2), [1, 9, 9, 2]);
    const dyd = tf.tensor4d(randomArray(rng, 5 * 5 * 2), [1, 5, 5, 2]);
    const ad = { strides: 1, pad: 'valid', dilations: 2, filterShape: [3, 3, 2, 1] } as unknown as tf.NamedAttrMap;
    const gd = (tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: xd, dy: dyd }, ad) as tf.Tensor).dataSync();
    const od = originalKernel('DepthwiseConv2dNativeBackpropFilter', 'cpu')!.kernelFunc({ inputs: { x: xd, dy: dyd }, backend, attrs: ad }) as TensorInfo;
    assert.equal(maxAbsDiff(gd, backend.readSync(od.dataId) as Float32Array), 0);
    backend.disposeData(od.dataId);
  });
});

test('cpu: broadcasting Add/Sub/Multiply/RealDiv and SplitV equal tfjs\'s kernels exactly, Sum to 1e-6', () => {
  const rng = new Rng(12);
  const rand = (shape: number[]) => tf.tensor(randomArray(rng, size(shape)), shape);
  const pairs: Array<[number[], number[]]> = [
    [[2, 5, 7, 6], [2, 5, 7, 6]], [[2, 5, 7, 6], [6]], [[2, 5, 7, 6], [2, 5, 7, 1]], [[2, 5, 7, 1], [2, 5, 7, 6]],
    [[2, 5, 7, 6], [1, 5, 1, 6]], [[3, 1, 4], [1, 5, 1]], [[4], []], [[], [3, 2]], [[], []], [[2, 3, 4], [3, 1]],
    [[1, 1, 9], [4, 1, 1]], [[2, 0, 3], [3]],
  ];
  const sums: Array<[number[], number | number[], boolean]> = [
    [[2, 5, 7, 6], [0, 1, 2], false], [[2, 5, 7, 6], 3, true], [[2, 5, 7, 6], [1, 2], true], [[2, 5, 7, 6], [0, 3], false],
    [[2, 5, 7, 6], [0, 1, 2, 3], false], [[4, 1, 3], [0, 1], false], [[4, 1, 3], 1, true], [[3, 4], [], false], [[7], 0, false],
    [[2, 3, 1, 5], [0, 2], false], [[2, 3, 4, 5, 2], [1, 3], false],
  ];
  const splits: Array<[number[], number[], number]> = [
    [[2, 5, 7, 11], [4, 4, 3], 3], [[2, 5, 7, 11], [2, 5], 2], [[6, 3], [1, 5], 0], [[2, 9, 4], [3, 3, 3], -2],
  ];
  const exact: boolean[] = [];
  const run = () => tf.tidy(() => {
    const r: Float32Array[] = [];
    exact.length = 0;
    for (const [sa, sb] of pairs) {
      const a = rand(sa);
      const b = rand(sb);
      for (const t of [a.add(b), a.sub(b), a.mul(b), a.div(b.abs().add(0.5))]) {
        r.push(new Float32Array([...t.shape, -1, ...t.dataSync()]));
        exact.push(true);
      }
    }
    for (const [sh, axis, keep] of sums) {
      const t = rand(sh).sum(axis, keep);
      r.push(new Float32Array([...t.shape, -1, ...t.dataSync()]));
      exact.push(false);
    }
    for (const [sh, sizes, axis] of splits) {
      for (const t of tf.split(rand(sh), sizes, axis)) {
        r.push(new Float32Array([...t.shape, -1, ...t.dataSync()]));
        exact.push(true);
      }
    }
    // int32 paths stay tfjs's (ours only take float32) and must still work
    r.push(Float32Array.from(tf.tensor([1, 2, 3], [3], 'int32').add(tf.scalar(2, 'int32')).dataSync()));
    exact.push(true);
    for (const t of tf.split(tf.tensor([[1, 2, 3], [4, 5, 6]], [2, 3], 'int32'), [1, 2], 1)) {
      r.push(Float32Array.from(t.dataSync()));
      exact.push(true);
    }
    return r;
  });
  registerCpuKernels();
  const before = rng.getState();
  const ours = run();
  unregisterCpuKernels();
  rng.setState(before);
  const theirs = run();
  registerCpuKernels();
  assert.equal(ours.length, theirs.length);
  ours.forEach((o, i) => {
    // Sums may differ in the last bit (we accumulate in float64 in another order): 1e-6 relative; the rest exact.
    const tol = exact[i] ? 0 : Math.max(maxAbs(theirs[i]), 1e-12) * 1e-6;
    assert.ok(maxAbsDiff(o, theirs[i]) <= tol, `result ${i}: diff ${maxAbsDiff(o, theirs[i])}`);
  });
  // shape errors still come from tfjs (fallback)
  assert.throws(() => tf.tidy(() => tf.ones([2, 3]).add(tf.ones([4]))), /broadcast|shape/i);
});

test('cpu: BatchMatMul equals tfjs\'s kernel (transposes, odd sizes, long K, batch broadcast)', () => {
  const rng = new Rng(13);
  const rand = (shape: number[]) => tf.tensor(randomArray(rng, size(shape)), shape);
  // [a shape, b shape, transposeA, transposeB]
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[5, 3], [3, 7], false, false], [[3, 5], [3, 7], true, false], [[5, 3], [7, 3], false, true], [[3, 5], [7, 3], true, true],
    [[37, 19], [13, 19], false, true], [[300, 6], [300, 9], true, false], [[2, 2000, 5], [2, 5, 11], false, false],
    [[3, 9, 4], [4, 6], false, false], [[8, 5], [2, 3, 8, 5], true, false], [[2, 3, 4, 6], [2, 3, 6, 5], false, false],
    [[1, 1], [1, 1], false, false], [[4, 0], [0, 3], false, false], [[2, 70, 65], [65, 66], false, false],
  ];
  const run = () => tf.tidy(() => cases.map(([sa, sb, ta, tb]) => {
    const t = tf.matMul(rand(sa), rand(sb), ta, tb);
    return new Float32Array([...t.shape, -1, ...t.dataSync()]);
  }));
  registerCpuKernels();
  const state = rng.getState();
  const ours = run();
  unregisterCpuKernels();
  rng.setState(state);
  const theirs = run();
  registerCpuKernels();
  ours.forEach((o, i) => {
    assert.equal(o.length, theirs[i].length, `case ${i} size`);
    // both sum in float64 within a block but add blocks in float32, in different block sizes
    assert.ok(maxAbsDiff(o, theirs[i]) <= Math.max(maxAbs(theirs[i]), 1e-12) * 1e-6, `case ${i}: diff ${maxAbsDiff(o, theirs[i])}`);
  });
  assert.throws(() => tf.tidy(() => tf.matMul(tf.ones([2, 3]), tf.ones([4, 2]))), /inner shapes/);
});

// ---- MambaOut gradients against the PyTorch fixture

/** Every gradient of micro's loss on the current backend, compared with PyTorch's; returns the worst rel diff. */
async function microGradients(): Promise<number> {
  const { stateDict } = await loadCheckpoint(fixture('micro.pth'));
  const m = createModel('mambaout_test', { noInit: true });
  try {
    m.loadStateDict(stateDict);
    return await checkMicroGradients(m);
  } finally {
    m.dispose();
  }
}

test('cpu: every micro MambaOut gradient matches PyTorch with our kernels', async () => {
  registerCpuKernels();
  const worst = await microGradients();
  assert.ok(worst <= 1e-4, `worst ${worst}`);
});

test('wasm: our gradient kernels fill the gaps, the BatchMatMul wrapper matches cpu, every micro gradient matches PyTorch', async () => {
  registerCpuKernels(); // for originalKernel('Conv2DBackpropInput', 'cpu') below
  unregisterWasmGradKernels();
  assert.equal(tf.getKernel('DepthwiseConv2dNativeBackpropInput', 'wasm'), undefined);
  const nativeBackpropInput = tf.getKernel('Conv2DBackpropInput', 'wasm');
  assert.ok(nativeBackpropInput, 'tfjs-backend-wasm has Conv2DBackpropInput');
  const nativeConv2D = tf.getKernel('Conv2D', 'wasm');
  const nativeMatMul = tf.getKernel('BatchMatMul', 'wasm')!;
  // matmul references on cpu, before switching (shapes: [a, b, transposeA, transposeB])
  const mmCases: Array<[number[], number[], boolean, boolean]> = [
    [[37, 19], [13, 19], false, true], [[300, 6], [300, 9], true, false], [[2, 7, 5], [2, 11, 7], true, true],
    [[3, 9, 4], [6, 4], false, true], [[8, 5], [2, 3, 8, 5], true, false], [[4, 6], [6, 3], false, false], [[1, 1], [1, 1], true, true],
  ];
  const mmRng = new Rng(17);
  const mmInputs = mmCases.map(([sa, sb]) => [randomArray(mmRng, size(sa)), randomArray(mmRng, size(sb))]);
  const mm = () => mmCases.map(([sa, sb, ta, tb], i) => tf.tidy(() => {
    const t = tf.matMul(tf.tensor(mmInputs[i][0], sa), tf.tensor(mmInputs[i][1], sb), ta, tb);
    return new Float32Array([...t.shape, -1, ...t.dataSync()]);
  }));
  const mmCpu = mm();
  // Conv2DBackpropInput references from tfjs's cpu kernel
  const bpiRng = new Rng(18);
  const bpiCases = randomCases(new Rng(19), 'conv', 8).map((c) => {
    const ci = info(c);
    const dyShape: Shape4 = [c.x[0], ci.outHeight, ci.outWidth, ci.outChannels];
    return { c, dyShape, dy: randomArray(bpiRng, size(dyShape)), w: randomArray(bpiRng, size(c.filter)), attrs: { ...attrsOf(c, ci), inputShape: c.x } as unknown as tf.NamedAttrMap };
  });
  const bpi = (useOriginal: boolean) => bpiCases.map(({ c, dyShape, dy, w, attrs }) => tf.tidy(() => {
    const inputs = { dy: tf.tensor4d(dy, dyShape), filter: tf.tensor4d(w, c.filter) };
    if (!useOriginal) return (tf.engine().runKernel('Conv2DBackpropInput', inputs, attrs) as tf.Tensor).dataSync() as Float32Array;
    const be = tf.backend();
    const o = originalKernel('Conv2DBackpropInput', 'cpu')!.kernelFunc({ inputs, backend: be, attrs }) as TensorInfo;
    const v = (be.readSync(o.dataId) as Float32Array).slice();
    be.disposeData(o.dataId);
    return v;
  }));
  const bpiCpu = bpi(true);

  const names = registerWasmGradKernels();
  assert.deepEqual(names, ['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput', 'BatchMatMul', 'Conv2DBackpropInput']);
  assert.deepEqual(registerWasmGradKernels(), names);
  assert.equal(tf.getKernel('Conv2D', 'wasm'), nativeConv2D, 'native kernels kept');
  assert.equal(originalKernel('Conv2DBackpropInput', 'wasm'), nativeBackpropInput);
  assert.notEqual(tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc, nativeMatMul.kernelFunc, 'BatchMatMul wrapped');
  assert.equal(tf.getKernel('BatchMatMul', 'wasm')!.setupFunc, nativeMatMul.setupFunc, 'native setup kept');
  // registered before the wasm backend starts: the wrapper carries the native setupFunc, which binds the C++ kernel
  await tf.setBackend('wasm');
  await tf.ready();
  try {
    assert.equal(tf.getBackend(), 'wasm');
    mm().forEach((r, i) => assertClose(r, mmCpu[i], `wasm matMul case ${i}`, 1e-5));
    bpi(false).forEach((r, i) => assertClose(r, bpiCpu[i], `wasm Conv2DBackpropInput ${label(bpiCases[i].c)}`, 1e-5));
    const worstKernels = Math.max(
      checkCases(randomCases(new Rng(7), 'conv', 8), new Rng(8)),
      checkCases(randomCases(new Rng(9), 'depthwise', 8), new Rng(10)),
    );
    assert.ok(worstKernels < 1e-5, `kernels worst ${worstKernels}`);
    // NCHW has no fallback on wasm: a clear UserError.
    assert.throws(
      () => tf.tidy(() => tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.zeros([1, 2, 5, 5]), dy: tf.zeros([1, 3, 5, 5]) },
        { strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 2, 3] } as unknown as tf.NamedAttrMap)),
      (e: Error) => e instanceof UserError && /Conv2DBackpropFilter on the wasm backend does not support NCHW/.test(e.message),
    );
    const worst = await microGradients();
    assert.ok(worst <= 1e-4, `worst ${worst}`);
  } finally {
    await tf.setBackend('cpu');
  }
  unregisterWasmGradKernels();
  assert.equal(tf.getKernel('BatchMatMul', 'wasm'), nativeMatMul, 'native BatchMatMul restored');
  assert.equal(tf.getKernel('Conv2DBackpropInput', 'wasm'), nativeBackpropInput, 'native Conv2DBackpropInput restored');
  assert.equal(tf.getKernel('DepthwiseConv2dNativeBackpropInput', 'wasm'), undefined);
  // registered again after the backend started: the wrapper calls the already bound native kernel
  registerWasmGradKernels();
  await tf.setBackend('wasm');
  try {
    mm().forEach((r, i) => assertClose(r, mmCpu[i], `wasm matMul (late registration) case ${i}`, 1e-5));
  } finally {
    await tf.setBackend('cpu');
  }
});
