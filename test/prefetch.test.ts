/**
 * The prefetch stage (src/data/prefetch.ts): the tfjs-ops path (what the tensorflow backend runs) gives the host
 * path's batches bit for bit on the cpu backend, for every mixup mode and erasing mode; the counter-based noise is
 * the same in JS and in tfjs ops and is standard normal; batches are deterministic per (seed, rank, epoch).
 * The WGSL path is compared with the host in test/webgpu.test.ts (GPU-gated; CI runs it on lavapipe).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/backend/index.js';
import { counterNormal, counterBits } from '../src/utils/counter_rng.js';
import { counterNormalOps } from '../src/data/prefetch_ops.js';
import { normalizeTable, packBytes, PrefetchLoader, type BatchPath, type DeviceBatch, type PrefetchOptions } from '../src/data/prefetch.js';
import { Mixup, type MixupMode } from '../src/data/mixup.js';
import { Rng } from '../src/utils/rng.js';
import { fakeLoader, randomBatch } from './helpers/batches.js';
import type { EraseMode } from '../src/data/transforms/erasing.js';

await initBackend('cpu');

async function read(b: DeviceBatch): Promise<{ x: Float32Array; t: Float32Array | Int32Array }> {
  const x = (await b.input.data()) as Float32Array;
  const t = (await b.target.data()) as Float32Array | Int32Array;
  tf.dispose([b.input, b.target]);
  return { x, t };
}

const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

function options(mode: MixupMode | null, erase: EraseMode | null, recount: number, classes: number): PrefetchOptions {
  return {
    mean: MEAN,
    std: STD,
    train: {
      mixup: mode ? new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, mode, numClasses: classes, labelSmoothing: 0.1, switchProb: 0.5 }) : null,
      erasing: erase ? { probability: 0.6, mode: erase, maxCount: recount } : null,
      targets: mode ? 'soft' : 'labels',
      numClasses: classes,
      smoothing: 0.1,
      seed: 42,
      rank: 0,
    },
  };
}

test('the counter-based normal is the same in JS and in tfjs ops, and is standard normal', async () => {
  const key = 0xdeadbeef;
  const P = 40;
  const E = 5000;
  const pos = tf.range(1000, 1000 + P, 1, 'int32').reshape([P, 1]);
  const elem = tf.range(0, E, 1, 'int32').reshape([1, E]);
  const ops = (await counterNormalOps(key, pos, elem).data()) as Float32Array;
  tf.dispose([pos, elem]);
  let s = 0, s2 = 0, s4 = 0, big = 0;
  for (let p = 0; p < P; p++) {
    for (let e = 0; e < E; e++) {
      const v = counterNormal(key, 1000 + p, e);
      assert.equal(ops[p * E + e], v, `pos ${p} elem ${e}`);
      s += v;
      s2 += v * v;
      s4 += v ** 4;
      if (Math.abs(v) > 3) big++;
    }
  }
  const N = P * E;
  assert.ok(Math.abs(s / N) < 0.01, `mean ${s / N}`);
  assert.ok(Math.abs(s2 / N - 1) < 0.015, `variance ${s2 / N}`);
  assert.ok(Math.abs(s4 / N - 3) < 0.1, `fourth moment ${s4 / N}`); // a normal's kurtosis, not just any unit-variance law
  assert.ok(Math.abs(big / N - 0.0027) < 0.001, `P(|z| > 3) = ${big / N}`);
  // neighbouring counters are not correlated
  let c = 0;
  for (let e = 0; e < 20000; e++) c += counterNormal(7, 3, e) * counterNormal(7, 3, e + 1);
  assert.ok(Math.abs(c / 20000) < 0.03, `lag-1 correlation ${c / 20000}`);
  // the bits are uniform: each of 16 buckets of the top 4 bits within 5% of its share
  const buckets = new Array(16).fill(0);
  for (let e = 0; e < 64000; e++) buckets[counterBits(11, 0, e) >>> 28]++;
  for (const b of buckets) assert.ok(Math.abs(b - 4000) < 200, `bucket ${b}`);
});

test('packing bytes into int32 words: a view when aligned, a padded copy otherwise', () => {
  const u8 = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const w = packBytes(u8);
  assert.equal(w.buffer, u8.buffer);
  assert.deepEqual([...w], [0x04030201, 0x08070605]);
  const odd = packBytes(u8.subarray(1, 6));
  assert.notEqual(odd.buffer, u8.buffer);
  assert.deepEqual([...odd], [0x05040302, 0x06]);
});

test("the normalization table is timm's prefetcher arithmetic in float32", () => {
  const lut = normalizeTable(MEAN, STD);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    for (const v of [0, 1, 117, 123, 124, 254, 255]) {
      assert.equal(lut[c * 256 + v], f(f(v - f(255 * MEAN[c])) / f(255 * STD[c])));
      // and within a float32 rounding of the exact (v/255 - mean)/std
      assert.ok(Math.abs(lut[c * 256 + v] - (v / 255 - MEAN[c]) / STD[c]) < 1e-6);
    }
  }
});

test('the tfjs-ops path gives the host path\'s batches bit for bit (every mixup and erasing mode, odd sizes)', async () => {
  const rng = new Rng(5);
  const cases: Array<{ mode: MixupMode | null; erase: EraseMode | null; recount: number; n: number; H: number; W: number }> = [
    { mode: 'batch', erase: 'pixel', recount: 1, n: 8, H: 12, W: 10 },
    { mode: 'pair', erase: 'rand', recount: 2, n: 6, H: 9, W: 7 },
    { mode: 'elem', erase: 'const', recount: 3, n: 6, H: 11, W: 13 },
    { mode: 'elem', erase: 'pixel', recount: 2, n: 4, H: 5, W: 5 },
    { mode: null, erase: 'pixel', recount: 1, n: 5, H: 8, W: 8 },
    { mode: 'batch', erase: null, recount: 1, n: 4, H: 16, W: 16 },
  ];
  let mixedSeen = 0;
  let erasedSeen = 0;
  for (const c of cases) {
    const classes = 5;
    const batches = Array.from({ length: 6 }, () => randomBatch(rng, c.n, c.H, c.W, classes));
    const out: Record<BatchPath, { x: Float32Array; t: Float32Array | Int32Array }[]> = { host: [], ops: [], webgpu: [] };
    for (const path of ['host', 'ops'] as const) {
      const pf = new PrefetchLoader(fakeLoader(batches), { ...options(c.mode, c.erase, c.recount, classes), path });
      pf.setEpoch(3);
      for await (const b of pf) out[path].push(await read(b));
      pf.dispose();
    }
    assert.equal(out.host.length, 6);
    for (let k = 0; k < 6; k++) {
      const h = out.host[k];
      const o = out.ops[k];
      const label = `${JSON.stringify(c)} batch ${k}`;
      assert.equal(h.x.length, c.n * c.H * c.W * 3, label);
      for (let i = 0; i < h.x.length; i++) {
        if (!Object.is(h.x[i], o.x[i])) assert.fail(`${label}: element ${i}: host ${h.x[i]} ops ${o.x[i]}`);
      }
      assert.deepEqual([...o.t], [...h.t], `${label} targets`);
      // count what was exercised: values outside the table are erased, rows of targets not one-hot are mixed
      const lut = normalizeTable(MEAN, STD);
      const inTable = new Set(lut);
      if (h.x.some((v) => !inTable.has(v) || v === 0)) erasedSeen++;
      const off = Math.fround(0.1 / classes);
      const on = Math.fround(1 - 0.1 + 0.1 / classes);
      if (h.t instanceof Float32Array && h.t.some((v) => v !== off && v !== on)) mixedSeen++;
    }
  }
  assert.ok(mixedSeen >= 10, `mixed batches seen: ${mixedSeen}`);
  assert.ok(erasedSeen >= 20, `erased batches seen: ${erasedSeen}`);
});

test('eval batches: normalize only, int32 labels, host and ops equal', async () => {
  const rng = new Rng(9);
  const batches = [randomBatch(rng, 3, 7, 9, 4), randomBatch(rng, 1, 7, 9, 4)];
  const res: Record<string, { x: Float32Array; t: Float32Array | Int32Array }[]> = {};
  for (const path of ['host', 'ops'] as const) {
    const pf = new PrefetchLoader(fakeLoader(batches), { mean: MEAN, std: STD, path });
    res[path] = [];
    for await (const b of pf) {
      assert.equal(b.target.dtype, 'int32');
      res[path].push(await read(b));
    }
    pf.dispose();
  }
  const lut = normalizeTable(MEAN, STD);
  for (let k = 0; k < 2; k++) {
    assert.deepEqual([...res.ops[k].x], [...res.host[k].x]);
    assert.deepEqual([...res.host[k].t], [...batches[k].labels]);
    const u8 = batches[k].images;
    for (let i = 0; i < u8.length; i++) assert.equal(res.host[k].x[i], lut[(i % 3) * 256 + u8[i]]);
  }
});

test('the same epoch gives the same batches; another epoch or rank gives other draws', async () => {
  const rng = new Rng(2);
  const batches = Array.from({ length: 3 }, () => randomBatch(rng, 4, 8, 8, 3));
  const run = async (epoch: number, rank: number) => {
    const o = options('batch', 'pixel', 1, 3);
    o.train!.rank = rank;
    const pf = new PrefetchLoader(fakeLoader(batches), { ...o, path: 'host' });
    pf.setEpoch(epoch);
    const xs: number[] = [];
    for await (const b of pf) xs.push(...(await read(b)).x);
    return xs;
  };
  const a = await run(1, 0);
  assert.deepEqual(await run(1, 0), a);
  assert.notDeepEqual(await run(2, 0), a);
  assert.notDeepEqual(await run(1, 1), a);
});

test('a consumer that stops early leaves no tensors behind', async () => {
  const rng = new Rng(3);
  const batches = Array.from({ length: 4 }, () => randomBatch(rng, 2, 4, 4, 2));
  const pf = new PrefetchLoader(fakeLoader(batches), { ...options('batch', 'pixel', 1, 2), path: 'ops' });
  const before = tf.memory().numTensors;
  for await (const b of pf) {
    tf.dispose([b.input, b.target]);
    break;
  }
  pf.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('a batch buffer given back to the loader (recycle) is only reused after its pixels were consumed', async () => {
  const rng = new Rng(21);
  const batches = [randomBatch(rng, 4, 9, 7, 5), randomBatch(rng, 4, 9, 7, 5), randomBatch(rng, 2, 9, 7, 5)];
  const copies = batches.map((b) => ({ ...b, images: b.images.slice() }));
  const run = async (recycle: boolean): Promise<Float32Array[]> => {
    const src = fakeLoader(recycle ? batches : copies) as unknown as { recycle?: (b: { images: Uint8Array }) => void };
    const given: Uint8Array[] = [];
    // a loader that writes the next batch into a given-back buffer at once: any later read of it sees garbage
    if (recycle) src.recycle = (b) => (given.push(b.images), b.images.fill(77));
    const pf = new PrefetchLoader(src as never, { ...options('elem', 'pixel', 2, 5), path: 'host' });
    pf.setEpoch(1);
    const out: Float32Array[] = [];
    for await (const b of pf) out.push((await read(b)).x);
    pf.dispose();
    if (recycle) assert.equal(given.length, batches.length, 'every host-path batch is given back');
    return out;
  };
  const ref = await run(false);
  const got = await run(true);
  assert.equal(got.length, ref.length);
  for (let k = 0; k < ref.length; k++) assert.deepEqual([...got[k]], [...ref[k]], `batch ${k}`);
});
