/**
 * src/train/ddp.ts on the cpu backend: gradient buckets fill during the backward pass (before tf.variableGrads
 * returns), the overlapped and the flat exchange return the same averaged gradients, and every tensor is freed; the
 * settings are checked; the calls src/train/loop.ts makes give, on 2 worker processes, the weights of 1 process with
 * the doubled batch (float32 exchange) or close to them (bf16).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '../src/backend/tfjs.js';
import { createModel } from '../src/models/mambaout.js';
import { DistributedDataParallel, outsideTape, readDistSettings, type Communicator } from '../src/train/ddp.js';
import type { CommPool } from '../src/distributed/pool.js';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findFreePort } from '../src/distributed/launcher.js';
import { UserError } from '../src/errors.js';

await tf.setBackend('cpu');

/** A stand-in for a 2-rank group whose other rank holds exactly these gradients times 3: avg = 2 x. */
class FakeGroup implements Communicator {
  readonly rank = 0;
  readonly worldSize = 2;
  calls: number[] = [];
  async allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg' }): Promise<void> {
    this.calls.push(buf.length);
    for (let i = 0; i < buf.length; i++) buf[i] = opts?.op === 'avg' ? (buf[i] + 3 * buf[i]) / 2 : buf[i] + 3 * buf[i];
  }
  async broadcast(): Promise<void> {}
  async allreduceScalars(v: readonly number[]): Promise<number[]> {
    return [...v];
  }
  close(): void {}
}

function setup(bucketBytes: number) {
  const model = createModel('mambaout_test', { seed: 3 });
  const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const y = tf.oneHot(tf.tensor1d([1, 7], 'int32'), model.numClasses);
  const loss = (): tf.Scalar => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar;
  return { model, params, x, y, loss, vars: params.map((p) => p.variable) };
}

test('overlapped buckets start during the backward pass and average to the same gradients as one flat buffer', async () => {
  const s = setup(40_000);
  const group = new FakeGroup();
  const ddp = new DistributedDataParallel(group, s.params, { bucketBytes: 40_000 });
  assert.ok(ddp.buckets.length >= 4, `${ddp.buckets.length} buckets`);
  // every parameter is in exactly one bucket, last-registered first
  assert.deepEqual([...ddp.buckets.flatMap((b) => b.members)].sort((a, b) => a - b), s.params.map((_, i) => i));
  assert.equal(ddp.buckets[0].members[0], s.params.length - 1);

  let startedInBackward = 0;
  const start = ddp.startReadback.bind(ddp);
  let inBackward = false;
  ddp.startReadback = (...args) => {
    if (inBackward) startedInBackward++;
    return start(...args);
  };
  const before = tf.memory().numTensors;
  inBackward = true;
  const a = tf.tidy(() => tf.variableGrads(ddp.watch(s.loss), s.vars));
  inBackward = false;
  // fused-free cpu path: fc1 weights and biases are read through three slices each (used 3x), the rest once
  assert.ok(startedInBackward >= 2, `${startedInBackward} buckets started while the backward pass ran`);
  const ga = new Map(s.params.map((p) => [p.name, a.grads[p.variable.name]]));
  const want = new Map([...ga].map(([k, t]) => [k, (t.dataSync() as Float32Array).map((v) => (v + 3 * v) / 2)]));
  const outA = await ddp.allreduceGrads(s.params, ga);
  assert.equal(group.calls.length, ddp.buckets.length);

  const b = tf.tidy(() => tf.variableGrads(s.loss, s.vars));
  const outB = await ddp.allreduceGrads(s.params, new Map(s.params.map((p) => [p.name, b.grads[p.variable.name]])));
  assert.equal(group.calls.length, ddp.buckets.length + 1, 'one flat buffer without watch()');
  for (const p of s.params) {
    const ea = outA.get(p.name)!.dataSync();
    const eb = outB.get(p.name)!.dataSync();
    assert.deepEqual(Array.from(ea), Array.from(want.get(p.name)!), p.name);
    assert.deepEqual(Array.from(ea), Array.from(eb), p.name);
  }
  tf.dispose([a.value, b.value, ...outA.values(), ...outB.values()]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
  tf.dispose([s.x, s.y]);
  s.model.dispose();
});

test('variableGrads issues the backward pass in pieces: the gradients of tf.variableGrads bit for bit, buckets started and the event loop run before it returns, every tensor freed', async () => {
  const s = setup(40_000);
  const group = new FakeGroup();
  const ddp = new DistributedDataParallel(group, s.params, { bucketBytes: 40_000 });
  const before = tf.memory().numTensors;
  const ref = tf.tidy(() => tf.variableGrads(s.loss, s.vars));
  let turns = 0;
  let ticking = true;
  const tick = (): void => {
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  let startedInBackward = 0;
  const start = ddp.startReadback.bind(ddp);
  let inBackward = true;
  ddp.startReadback = (...args) => {
    if (inBackward) startedInBackward++;
    return start(...args);
  };
  const turns0 = turns;
  const r = await ddp.variableGrads(s.loss, s.vars);
  inBackward = false;
  ticking = false;
  assert.ok(startedInBackward >= 2, `${startedInBackward} buckets started during the backward pass`);
  assert.ok(turns - turns0 >= 2, `the event loop ran ${turns - turns0} times during the backward pass`);
  assert.equal(r.value.dataSync()[0], ref.value.dataSync()[0]);
  assert.deepEqual(Object.keys(r.grads).sort(), Object.keys(ref.grads).sort());
  for (const p of s.params) {
    assert.deepEqual(Array.from(r.grads[p.variable.name].dataSync()), Array.from(ref.grads[p.variable.name].dataSync()), p.name);
  }
  const out = await ddp.allreduceGrads(s.params, new Map(s.params.map((p) => [p.name, r.grads[p.variable.name]])));
  assert.equal(group.calls.length, ddp.buckets.length, 'the buckets of the pieces, no flat buffer');
  for (const p of s.params) {
    const want = (ref.grads[p.variable.name].dataSync() as Float32Array).map((v) => (v + 3 * v) / 2);
    assert.deepEqual(Array.from(out.get(p.name)!.dataSync()), Array.from(want), p.name);
  }
  tf.dispose([r.value, ref.value, ...Object.values(ref.grads), ...out.values()]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
  // a loss that is not a scalar is an error, and leaks nothing either
  await assert.rejects(ddp.variableGrads(() => s.model.forward(s.x, { training: true }) as unknown as tf.Scalar, s.vars), /scalar/);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaks after the error');
  tf.dispose([s.x, s.y]);
  s.model.dispose();
});

test('onBucket hands over every averaged bucket once, in bucket order, runs of finished buckets together, and nothing is returned', async () => {
  const s = setup(40_000);
  const ddp = new DistributedDataParallel(new FakeGroup(), s.params, { bucketBytes: 40_000 });
  const r1 = tf.tidy(() => tf.variableGrads(ddp.watch(s.loss), s.vars));
  const whole = await ddp.allreduceGrads(s.params, new Map(s.params.map((p) => [p.name, r1.grads[p.variable.name]])));
  const r2 = tf.tidy(() => tf.variableGrads(ddp.watch(s.loss), s.vars));
  const seen: string[][] = [];
  const got = new Map<string, Float32Array>();
  const rest = await ddp.allreduceGrads(s.params, new Map(s.params.map((p) => [p.name, r2.grads[p.variable.name]])), {
    onBucket: (g) => {
      seen.push([...g.keys()]);
      for (const [k, t] of g) got.set(k, t.dataSync() as Float32Array);
      tf.dispose([...g.values()]);
    },
  });
  assert.equal(rest.size, 0);
  // every call is a run of whole buckets in bucket order; together they are all buckets once
  const order = ddp.buckets.map((b) => b.members.map((i) => s.params[i].name));
  assert.ok(ddp.buckets.length > 2, 'the test needs several buckets');
  assert.deepEqual(seen.flat(), order.flat());
  // (here the fake group has averaged every bucket by the time the first is awaited: they come in one call)
  assert.equal(seen.length, 1, "buckets that are back already are handed over together");
  let at = 0;
  for (const call of seen) {
    let n = 0;
    while (n < call.length) n += order[at++].length;
    assert.equal(n, call.length, 'a call ends at a bucket boundary');
  }
  for (const [k, t] of whole) assert.deepEqual(Array.from(got.get(k)!), Array.from(t.dataSync()), k);
  tf.dispose([r1.value, r2.value, ...whole.values(), s.x, s.y]);
  s.model.dispose();
});

test('with communication threads a finished bucket is all-reduced without waiting for earlier buckets of other channels, in bucket order on each channel', async () => {
  const s = setup(40_000);
  const calls: number[] = [];
  // a stand-in for CommPool with 2 channels (bucket k on channel k % 2); the other rank holds 3x these gradients
  const pool = {
    threads: 2,
    alloc: (n: number) => new Float32Array(new SharedArrayBuffer(n * 4)),
    allreduce: async (buf: Float32Array, _op: string, k: number) => {
      calls.push(k);
      for (let i = 0; i < buf.length; i++) buf[i] = (buf[i] + 3 * buf[i]) / 2;
    },
  } as unknown as CommPool;
  const ddp = new DistributedDataParallel(new FakeGroup(), s.params, { bucketBytes: 40_000, pool });
  const n = ddp.buckets.length;
  assert.ok(n >= 4, `${n} buckets`);
  // every readback is held until the test releases it: here in reverse bucket order
  const release = new Map<number, () => void>();
  const start = ddp.startReadback.bind(ddp);
  ddp.startReadback = (b, grads, host, layout, k = 0) => {
    const p = start(b, grads, host, layout, k);
    return new Promise<void>((resolve, reject) => release.set(k, () => void p.then(resolve, reject)));
  };
  const r = tf.tidy(() => tf.variableGrads(ddp.watch(s.loss), s.vars));
  const want = new Map(s.params.map((p) => [p.name, (r.grads[p.variable.name].dataSync() as Float32Array).map((v) => (v + 3 * v) / 2)]));
  const out = ddp.allreduceGrads(s.params, new Map(s.params.map((p) => [p.name, r.grads[p.variable.name]])));
  assert.equal(release.size, n, 'every bucket has started its readback');
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  for (let k = n - 1; k >= 0; k--) {
    release.get(k)!();
    for (let i = 0; i < 3; i++) await turn();
  }
  const got = await out;
  const odd = Array.from({ length: n }, (_, k) => k).filter((k) => k % 2 === 1);
  const even = Array.from({ length: n }, (_, k) => k).filter((k) => k % 2 === 0);
  // channel 1's buckets all went once bucket 1 was back, before bucket 0 was; each channel in bucket order
  assert.deepEqual(calls, [...odd, ...even]);
  for (const p of s.params) assert.deepEqual(Array.from(got.get(p.name)!.dataSync()), Array.from(want.get(p.name)!), p.name);
  tf.dispose([r.value, ...got.values(), s.x, s.y]);
  s.model.dispose();
});

test('without a tape to hook (or with other parameters) the exchange falls back to one flat buffer', async () => {
  const s = setup(1 << 20);
  const group = new FakeGroup();
  const ddp = new DistributedDataParallel(group, s.params);
  const sub = s.params.slice(0, 3);
  const r = tf.tidy(() => tf.variableGrads(ddp.watch(s.loss), sub.map((p) => p.variable)));
  const out = await ddp.allreduceGrads(sub, new Map(sub.map((p) => [p.name, r.grads[p.variable.name]])));
  assert.deepEqual(group.calls, [sub.reduce((n, p) => n + p.variable.size, 0)]);
  assert.deepEqual([...out.keys()], sub.map((p) => p.name));
  tf.dispose([r.value, ...out.values(), s.x, s.y]);
  s.model.dispose();
});

// ------------------------------------------------------------------------------------------ the training loop's calls

const LOOP_WORKER = fileURLToPath(new URL('./helpers/ddp_loop_worker.ts', import.meta.url));

/** Run the loop worker as `world` ranks (or 1 plain process for world 1); rank 0's JSON line. */
async function runLoop(world: number, env: Record<string, string> = {}): Promise<{ world: number; transfer: string | null; threads: number; compress: string | null; weights: number[] }> {
  const port = await findFreePort();
  const procs = Array.from({ length: world }, (_, r) =>
    spawn(process.execPath, ['--import', 'tsx', LOOP_WORKER], {
      env: { ...process.env, ...(world > 1 ? { RANK: String(r), WORLD_SIZE: String(world), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) } : {}), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const outs = await Promise.all(
    procs.map(
      (p) =>
        new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
          let out = '';
          let err = '';
          p.stdout!.on('data', (d) => (out += d));
          p.stderr!.on('data', (d) => (err += d));
          p.on('close', (code) => resolve({ code, out, err }));
        }),
    ),
  );
  outs.forEach((o, r) => assert.equal(o.code, 0, `rank ${r}: ${o.err}`));
  return JSON.parse(outs[0].out.trim().split('\n').filter((l) => l.startsWith('{')).pop()!);
}

test("the loop's calls (broadcastParams attaches, watch, exchange started before the loss is awaited) on 2 cpu workers equal 1 process with the doubled batch; bf16 stays close", { timeout: 600_000 }, async () => {
  const [one, two, threads, bf16] = await Promise.all([
    runLoop(1),
    runLoop(2),
    runLoop(2, { MAMBAOUT_DIST_THREADS: '2' }),
    runLoop(2, { MAMBAOUT_DIST_COMPRESS: 'bf16' }),
  ]);
  assert.equal(two.world, 2);
  assert.equal(two.transfer, 'tfjs'); // cpu backend
  assert.equal(two.threads, 0, 'auto: the main thread for small gradients');
  assert.equal(threads.threads, 2);
  assert.equal(bf16.compress, 'bf16');
  const scale = Math.max(...one.weights.map(Math.abs));
  const diff = (a: number[]): number => Math.max(...a.map((v, i) => Math.abs(v - one.weights[i])));
  assert.ok(diff(two.weights) < 1e-5 * scale, `float32 exchange: max |dw| ${diff(two.weights)}`);
  assert.ok(diff(threads.weights) < 1e-5 * scale, `float32 exchange on threads: max |dw| ${diff(threads.weights)}`);
  // bf16 has 8 significant bits: the averaged gradients are off by up to 2^-9 relative, the weights a little
  const d = diff(bf16.weights);
  assert.ok(d > 0 && d < 2e-3 * scale, `bf16 exchange: max |dw| ${d} (scale ${scale})`);
});

test('exchange settings come from the environment (src/settings.ts), checked', () => {
  const names = ['MAMBAOUT_DIST_TRANSPORT', 'MAMBAOUT_DIST_COMPRESS', 'MAMBAOUT_DIST_THREADS', 'MAMBAOUT_DIST_TRANSFER', 'MAMBAOUT_DIST_HANDOFF', 'MAMBAOUT_DIST_HOLD', 'MAMBAOUT_DIST_BUCKET_MB'];
  const saved = names.map((n) => process.env[n]);
  const withEnv = (env: Record<string, string>, fn: () => void): void => {
    for (const n of names) delete process.env[n];
    Object.assign(process.env, env);
    try {
      fn();
    } finally {
      names.forEach((n, i) => (saved[i] === undefined ? delete process.env[n] : (process.env[n] = saved[i])));
    }
  };
  withEnv({}, () => assert.deepEqual(readDistSettings(), { transport: 'auto', compress: 'none', transfer: 'auto', handoff: 'auto', hold: 'auto', threads: 'auto', bucketMb: 2 }));
  withEnv({ MAMBAOUT_DIST_COMPRESS: 'bf16', MAMBAOUT_DIST_THREADS: '0', MAMBAOUT_DIST_TRANSFER: 'tfjs', MAMBAOUT_DIST_HANDOFF: 'memcpy', MAMBAOUT_DIST_HOLD: 'off', MAMBAOUT_DIST_BUCKET_MB: '25' }, () =>
    assert.deepEqual(readDistSettings(), { transport: 'auto', compress: 'bf16', transfer: 'tfjs', handoff: 'memcpy', hold: 'off', threads: 0, bucketMb: 25 }));
  for (const [k, v, re] of [
    ['MAMBAOUT_DIST_COMPRESS', 'fp16', /^MAMBAOUT_DIST_COMPRESS must be none or bf16, got 'fp16'\.$/],
    ['MAMBAOUT_DIST_THREADS', '-1', /^MAMBAOUT_DIST_THREADS must be auto or a whole number/],
    ['MAMBAOUT_DIST_TRANSFER', 'fast', /^MAMBAOUT_DIST_TRANSFER must be auto, staged or tfjs, got 'fast'\.$/],
    ['MAMBAOUT_DIST_HANDOFF', 'file', /^MAMBAOUT_DIST_HANDOFF must be auto or memcpy, got 'file'\.$/],
    ['MAMBAOUT_DIST_HOLD', 'on', /^MAMBAOUT_DIST_HOLD must be auto or off, got 'on'\.$/],
    ['MAMBAOUT_DIST_BUCKET_MB', '0', /^MAMBAOUT_DIST_BUCKET_MB must be a number of MiB/],
    ['MAMBAOUT_DIST_TRANSPORT', 'rdma', /^MAMBAOUT_DIST_TRANSPORT must be auto, unix or tcp, got 'rdma'\.$/],
  ] as const) {
    withEnv({ [k]: v }, () => assert.throws(() => readDistSettings(), (e: unknown) => e instanceof UserError && re.test(e.message), `${k}=${v}`));
  }
});

test('between the pieces of a forward pass (outsideTape), new tensors outlive the pass and ops are not recorded on its tape', async () => {
  await tf.setBackend('cpu');
  type Eng = Parameters<typeof outsideTape>[0];
  const engine = tf.engine() as unknown as Eng & { state: { activeTape: unknown[] | null } };
  const x = tf.variable(tf.ones([2]));
  let between: tf.Tensor | null = null;
  engine.startTape();
  try {
    engine.startScope('forward');
    let y: tf.Tensor | undefined;
    try {
      y = tf.mul(x, 2);
      await outsideTape(engine, async () => {
        between = tf.add(x, 1); // e.g. an averaged gradient bucket uploaded between two blocks
      });
      y = tf.sum(y);
    } finally {
      engine.endScope(y);
    }
    const tape = engine.state.activeTape ?? [];
    const names = tape.map((n) => (n as { kernelName: string }).kernelName);
    assert.ok(names.includes('Multiply') && names.includes('Sum'), `the pass is on the tape: ${names}`);
    assert.ok(!names.some((k) => /add/i.test(k)), `the add made between pieces is not: ${names}`);
    assert.equal(tf.engine().state.gradientDepth, 1);
  } finally {
    engine.endTape();
    engine.state.activeTape = null;
  }
  assert.ok(between !== null && !(between as tf.Tensor).isDisposed, 'the tensor made between pieces survives the end of the pass');
  assert.deepEqual(await (between as unknown as tf.Tensor).data(), new Float32Array([2, 2]));
  tf.dispose([x, between as unknown as tf.Tensor]);
});
