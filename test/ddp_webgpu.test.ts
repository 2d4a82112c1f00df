/**
 * src/train/ddp.ts on the webgpu backend (gated like test/webgpu.test.ts: MAMBAOUT_GPU_TESTS=1, a WebGPU adapter or
 * Mesa lavapipe): the staged transfer (persistent staging buffers, src/train/ddp_gpu.ts) gives the same averaged
 * gradients as tfjs's data()/upload path, step after step; the bf16 compression packs and unpacks on the GPU with
 * the same bits as the host reference; returned gradients are tfjs's own tensors (a kept one survives the next step).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initWebGPU, releaseWebGPU } from '../src/backend/webgpu.js';
import { createModel } from '../src/models/mambaout.js';
import { DistributedDataParallel, type Communicator, type GradCompression } from '../src/train/ddp.js';
import { addBf16x2 } from '../src/distributed/float32.js';
import { settings } from '../src/settings.js';
import { fromBf16, toBf16 } from '../src/distributed/bf16.js';
import { HandoffFile } from '../src/distributed/handoff.js';
import { createOptimizer } from '../src/train/optim/index.js';
import type { CommPool } from '../src/distributed/pool.js';
import { join } from 'node:path';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { createLogger } from '../src/log/logger.js';
import { tempDir } from './helpers.js';
import type { Steps } from '../src/utils/steps.js';
import { deviceFence } from '../src/backend/fence.js';
import { CapturedStep } from '../src/backend/step_capture.js';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findFreePort } from '../src/distributed/launcher.js';

const GPU = settings.gpuTests;
const SKIP = GPU ? false : 'set MAMBAOUT_GPU_TESTS=1 to run the WebGPU tests (needs a WebGPU adapter)';

/** A 2-rank stand-in whose peer holds 3x these gradients: the average is exactly 2x (also in bfloat16). */
class FakeGroup implements Communicator {
  readonly rank = 0;
  readonly worldSize = 2;
  async allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg'; dtype?: string }): Promise<void> {
    if (opts?.dtype === 'bf16x2') addBf16x2(buf, buf.slice());
    else for (let i = 0; i < buf.length; i++) buf[i] = 2 * buf[i];
  }
  async broadcast(): Promise<void> {}
  async allreduceScalars(v: readonly number[]): Promise<number[]> {
    return [...v];
  }
  close(): void {}
}

/**
 * CommPool's contract without threads or peers (the threads' side is test/dist.test.ts): the peer holds the same
 * gradients (the average is 2x); a bucket handed over through a file is read from and written back to the file.
 */
class FakePool {
  readonly threads = 2;
  throughFile = 0;
  private readonly files = new Map<ArrayBufferLike, HandoffFile | null>();
  alloc(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }
  handoff(buf: Float32Array): HandoffFile | null {
    if (!this.files.has(buf.buffer)) this.files.set(buf.buffer, HandoffFile.create(buf.buffer.byteLength));
    return this.files.get(buf.buffer) ?? null;
  }
  async allreduce(buf: Float32Array, _op: string, _channel: number, _dtype: string, through: HandoffFile | null): Promise<void> {
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    if (through) {
      buf.fill(NaN);
      await through.read(bytes, buf.byteOffset);
      this.throughFile++;
    }
    for (let i = 0; i < buf.length; i++) buf[i] = 2 * buf[i];
    if (through) await through.write(bytes, buf.byteOffset);
  }
  close(): void {
    for (const f of this.files.values()) f?.close();
  }
}

/** mambaout_test on the webgpu backend, a fixed batch, and its gradients on the host (the single-process reference). */
async function withWebGPUModel(
  fn: (m: {
    params: { name: string; variable: tf.Variable }[]; vars: tf.Variable[]; loss: () => tf.Scalar; lossSteps: () => Steps<tf.Scalar>;
    ref: Map<string, Float32Array>;
  }) => Promise<void>,
): Promise<void> {
  const r = await initWebGPU();
  assert.ok(r.ok, r.ok ? '' : r.reason);
  await tf.setBackend('webgpu');
  try {
    const model = createModel('mambaout_test', { seed: 3 });
    const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
    const vars = params.map((p) => p.variable);
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const y = tf.oneHot(tf.tensor1d([1, 7], 'int32'), model.numClasses);
    const loss = (): tf.Scalar => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar;
    const lossSteps = function* (): Steps<tf.Scalar> {
      return tf.losses.softmaxCrossEntropy(y, yield* model.forwardSteps(x, { training: true })) as tf.Scalar;
    };
    const reference = tf.tidy(() => tf.variableGrads(loss, vars));
    const ref = new Map<string, Float32Array>();
    for (const p of params) ref.set(p.name, (await reference.grads[p.variable.name].data()) as Float32Array);
    tf.dispose([reference.value, ...Object.values(reference.grads)]);
    try {
      await fn({ params, vars, loss, lossSteps, ref });
    } finally {
      tf.dispose([x, y]);
      model.dispose();
    }
  } finally {
    await tf.setBackend('cpu');
    releaseWebGPU();
  }
}

test('staged and tfjs transfers give the same averaged gradients on webgpu, with and without bf16, step after step', { skip: SKIP, timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss, ref }) => {
    for (const compress of ['none', 'bf16'] as GradCompression[]) {
      const want = (v: number): number => (compress === 'bf16' ? fromBf16(toBf16(2 * fromBf16(toBf16(v)))) : 2 * v);
      const staged = new DistributedDataParallel(new FakeGroup(), params, { bucketBytes: 40_000, compress, transfer: 'staged' });
      const plain = new DistributedDataParallel(new FakeGroup(), params, { bucketBytes: 40_000, compress, transfer: 'tfjs' });
      assert.equal(staged.transfer, 'staged');
      assert.equal(plain.transfer, 'tfjs');
      const before = tf.memory().numTensors;
      let kept: Map<string, Float32Array> | null = null;
      let keptTensor: tf.Tensor | null = null;
      for (let step = 0; step < 3; step++) {
        for (const [ddp, watched] of [[staged, true], [staged, false], [plain, true]] as const) {
          const g = tf.tidy(() => tf.variableGrads(watched ? ddp.watch(loss) : loss, vars));
          const out = await ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])));
          for (const p of params) {
            const got = (await out.get(p.name)!.data()) as Float32Array;
            const r0 = ref.get(p.name)!;
            for (let i = 0; i < got.length; i++) {
              if (got[i] !== want(r0[i])) assert.fail(`${compress} ${watched ? 'overlap' : 'flat'} step ${step} ${p.name}[${i}]: ${got[i]} != ${want(r0[i])}`);
            }
          }
          if (step === 0 && ddp === staged && watched) {
            // keep one gradient tensor across later exchanges: it must not change (no aliasing of staging memory)
            const name = params[params.length - 1].name;
            keptTensor = out.get(name)!;
            out.delete(name);
            kept = new Map([[name, ((await keptTensor.data()) as Float32Array).slice()]]);
          }
          tf.dispose([g.value, ...out.values()]);
        }
      }
      const [name, vals] = [...kept!][0];
      assert.deepEqual(Array.from(await keptTensor!.data()), Array.from(vals), `${name} kept from step 0 is unchanged`);
      keptTensor!.dispose();
      assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
      staged.dispose();
      plain.dispose();
    }
  });
});

test('disposing a DDP right after an exchange leaves its averaged gradients intact (its buffers go only after tfjs submitted the copies out of them)', { skip: SKIP, timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss, ref }) => {
    for (const transfer of ['staged', 'tfjs'] as const) {
      const ddp = new DistributedDataParallel(new FakeGroup(), params, { bucketBytes: 40_000, transfer });
      const g = tf.tidy(() => tf.variableGrads(ddp.watch(loss), vars));
      const out = await ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])));
      ddp.dispose(); // before anything reads the gradients (or submits)
      for (const p of params) {
        const got = (await out.get(p.name)!.data()) as Float32Array;
        const want = ref.get(p.name)!;
        for (let i = 0; i < got.length; i++) if (got[i] !== 2 * want[i]) assert.fail(`${transfer} ${p.name}[${i}]: ${got[i]} != ${2 * want[i]}`);
      }
      tf.dispose([g.value, ...out.values()]);
    }
  });
});

test('with communication threads, buckets read back while the backward pass is issued go through a /dev/shm hand-off file (copied by the kernel, off the main thread) and average as main-thread copies do', { skip: SKIP || (existsSync('/dev/shm') ? false : 'no /dev/shm'), timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss, ref }) => {
    for (const handoff of ['auto', 'memcpy'] as const) {
      const pool = new FakePool();
      const ddp = new DistributedDataParallel(new FakeGroup(), params, { bucketBytes: 40_000, transfer: 'staged', handoff, pool: pool as unknown as CommPool });
      for (let step = 0; step < 3; step++) {
        // DistributedDataParallel.variableGrads (the file while it issues the backward pass), tfjs's own (after it)
        for (const pieces of [true, false]) {
          const g = pieces ? await ddp.variableGrads(loss, vars) : tf.tidy(() => tf.variableGrads(ddp.watch(loss), vars));
          const out = await ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])));
          for (const p of params) {
            const got = (await out.get(p.name)!.data()) as Float32Array;
            const want = ref.get(p.name)!;
            for (let i = 0; i < got.length; i++) if (got[i] !== 2 * want[i]) assert.fail(`${handoff} step ${step} ${pieces} ${p.name}[${i}]: ${got[i]} != ${2 * want[i]}`);
          }
          tf.dispose([g.value, ...out.values()]);
        }
      }
      if (handoff === 'auto') assert.ok(pool.throughFile >= 3, `${pool.throughFile} buckets went through the file`);
      else assert.equal(pool.throughFile, 0);
      ddp.dispose();
      pool.close();
    }
  });
});

/** FakeGroup whose all-reduce takes a while: the next step's forward pass is issued while it runs. */
class SlowFakeGroup extends FakeGroup {
  override async allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg'; dtype?: string }): Promise<void> {
    await new Promise((r) => setTimeout(r, 15));
    return super.allreduce(buf, opts);
  }
}

/** FakeGroup whose all-reduces wait at a gate the test opens (then finish after 1-4 event-loop turns, out of call order). */
class GatedFakeGroup extends FakeGroup {
  private calls = 0;
  private gate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => {};
  shut(): void {
    this.gate = new Promise<void>((resolve) => (this.openGate = resolve));
  }
  open(): void {
    this.openGate();
  }
  override async allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg'; dtype?: string }): Promise<void> {
    await this.gate;
    const turns = 4 - (this.calls++ % 4);
    for (let t = 0; t < turns; t++) await new Promise<void>((r) => setImmediate(r));
    return super.allreduce(buf, opts);
  }
}

test('a forward pass issued while the previous exchange still runs (held until its last AdamW update, whole or in pieces that let the exchange finish and end the hold early) gives the same weights as awaiting the exchange', { skip: SKIP, timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss, lossSteps }) => {
    const initial = await Promise.all(vars.map(async (v) => (await v.data()).slice() as Float32Array));
    type Mode = 'awaited' | 'held' | 'pieces';
    const run = async (mode: Mode): Promise<{ weights: Float32Array[]; held: number; early: number }> => {
      tf.tidy(() => vars.forEach((v, i) => v.assign(tf.tensor(initial[i], v.shape, 'float32'))));
      const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-2, weightDecay: 0.05 });
      // in pieces: a step's all-reduces wait at a gate (shut at the end of its forward pass, so also those started during
      // its backward pass, however fast the GPU) until the next forward pass opens it; by then the readbacks are on the
      // host, so the exchange finishes at that pass's pauses and ends the hold mid-pass
      const gated = new GatedFakeGroup();
      const group = mode === 'pieces' ? gated : new SlowFakeGroup();
      const opening = function* (): Steps<tf.Scalar> {
        gated.open();
        const l = yield* lossSteps();
        for (let i = 0; i < 50; i++) yield; // pauses enough for the exchange's last turns whatever the pass's length
        gated.shut();
        return l;
      };
      const ddp = new DistributedDataParallel(group, params, { bucketBytes: 40_000, transfer: 'staged' });
      const onBucket = (g: Map<string, tf.Tensor>): void => {
        opt.step(g);
        for (const t of g.values()) t.dispose();
      };
      let exchange: Promise<Map<string, tf.Tensor>> | null = null;
      for (let step = 0; step < 4; step++) {
        const g = await ddp.variableGrads(mode === 'pieces' ? opening : loss, vars);
        g.value.dispose();
        exchange = ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])), { onBucket });
        if (mode === 'awaited') await exchange;
        if (mode === 'pieces') {
          await deviceFence(); // the GPU is done: the readbacks resolve and the all-reduces reach the gate
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      gated.open();
      await exchange;
      const weights = await Promise.all(vars.map(async (v) => (await v.data()).slice() as Float32Array));
      const { heldForwards: held, releasedEarly: early } = ddp;
      ddp.dispose();
      opt.dispose();
      return { weights, held, early };
    };
    const awaited = await run('awaited');
    assert.equal(awaited.held, 0);
    for (const mode of ['held', 'pieces'] as const) {
      const r = await run(mode);
      assert.equal(r.held, 3, `${mode}: steps 2-4 issued their forward pass during the previous exchange`);
      if (mode === 'pieces') assert.ok(r.early >= 1, 'pieces: a hold ended at a pause of the pass');
      else assert.equal(r.early, 0);
      vars.forEach((v, i) => {
        assert.ok(awaited.weights[i].some((x, j) => x !== initial[i][j]), `${v.name} was updated`);
        const a = awaited.weights[i];
        const b = r.weights[i];
        for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) assert.fail(`${mode}: ${v.name}[${j}]: ${b[j]} vs ${a[j]} awaited`);
      });
    }
  });
});

test('replayGrads (the forward and backward passes captured in the first step, replayed after it, each bucket readback started where the capture started it) gives the same weights as variableGrads, with the last AdamW updates still unsubmitted when the next replay comes', { skip: SKIP, timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss }) => {
    const initial = await Promise.all(vars.map(async (v) => (await v.data()).slice() as Float32Array));
    const run = async (replay: boolean): Promise<{ weights: Float32Array[]; startedInReplay: number[] }> => {
      tf.tidy(() => vars.forEach((v, i) => v.assign(tf.tensor(initial[i], v.shape, 'float32'))));
      const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-2, weightDecay: 0.05 });
      let inReplay = false;
      let started = 0;
      const trace = (event: string): void => {
        if (event === 'ready' && inReplay) started++;
      };
      const ddp = new DistributedDataParallel(new SlowFakeGroup(), params, { bucketBytes: 40_000, transfer: 'staged', trace });
      const onBucket = (g: Map<string, tf.Tensor>): void => {
        opt.step(g); // recorded into tfjs's encoder: the slow group's last buckets come after the loss was read
        for (const t of g.values()) t.dispose();
      };
      const startedInReplay: number[] = [];
      let exchange: Promise<Map<string, tf.Tensor>> | null = null;
      for (let step = 0; step < 4; step++) {
        let g: { value: tf.Scalar; grads: tf.NamedTensorMap };
        if (replay) {
          started = 0;
          inReplay = true;
          g = await ddp.replayGrads(loss, vars); // awaits the previous exchange itself
          inReplay = false;
          startedInReplay.push(started);
        } else {
          if (exchange) await exchange;
          g = tf.variableGrads(ddp.watch(loss), vars) as { value: tf.Scalar; grads: tf.NamedTensorMap };
        }
        exchange = ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])), { onBucket });
        const l = tf.tidy(() => g.value.add(0));
        await l.data(); // the step's loss, read as a training loop reads it (the exchange still runs)
        l.dispose();
        if (!replay) g.value.dispose();
      }
      await exchange;
      const weights = await Promise.all(vars.map(async (v) => (await v.data()).slice() as Float32Array));
      ddp.dispose();
      opt.dispose();
      return { weights, startedInReplay };
    };
    const issued = await run(false);
    const replayed = await run(true);
    assert.ok(replayed.startedInReplay.slice(1).every((n) => n > 0), `bucket readbacks started during the replays: ${replayed.startedInReplay}`);
    vars.forEach((v, i) => {
      assert.ok(issued.weights[i].some((x, j) => x !== initial[i][j]), `${v.name} was updated`);
      const a = issued.weights[i];
      const b = replayed.weights[i];
      for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) assert.fail(`${v.name}[${j}]: ${b[j]} replayed vs ${a[j]} issued`);
    });
  });
});

test('the training loop on 2 ranks issues each forward pass during the previous exchange (AdamW, no clipping) and ends with the same weights as when it awaits every exchange', { skip: SKIP, timeout: 600_000 }, async () => {
  const { dir, cleanup } = tempDir('mambaout-ddp-loop-');
  try {
    const data = (await makeTinyImagenet({ root: join(dir, 'data'), classes: 2, trainPerClass: 16, valPerClass: 4, minSide: 40, maxSide: 56, seed: 5 })).root;
    const args = (exp: string): Record<string, unknown> => parseArgs({
      scriptName: 'mambaout-train', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
      argv: [data, '--model', 'mambaout_test', '--img-size', '32', '--backend', 'webgpu', '--workers', '0', '-b', '4', '--epochs', '1',
        '--warmup-epochs', '0', '--cooldown-epochs', '0', '--lr', '1e-2', '--opt', 'adamw', '--log-interval', '100', '--output', dir, '--experiment', exp],
    }).args;
    const run = async (exp: string, awaitEach: boolean): Promise<number> => {
      // rank 0 of 2 whose peer holds the same gradients; the exchange takes 15 ms per bucket, so it is still running when
      // the next step starts. hold 'off' (MAMBAOUT_DIST_HOLD=off) makes the loop await every exchange.
      const ddp = new DistributedDataParallel(new SlowFakeGroup(), [], { bucketBytes: 40_000, transfer: 'staged', hold: awaitEach ? 'off' : 'auto' });
      await runTraining(args(exp), { logger: createLogger({ silent: true }), dist: ddp });
      return ddp.heldForwards;
    };
    assert.equal(await run('awaited', true), 0);
    assert.ok((await run('held', false)) >= 2, 'updates 2-4 issued their forward pass during the previous exchange');
    const a = await readTrainCheckpoint(join(dir, 'awaited', 'last.safetensors'));
    const b = await readTrainCheckpoint(join(dir, 'held', 'last.safetensors'));
    assert.ok(a.stateDict.size > 0);
    for (const [k, v] of a.stateDict) {
      const w = b.stateDict.get(k)!;
      const x = v.data as Float32Array, y = w.data as Float32Array;
      for (let j = 0; j < x.length; j++) if (x[j] !== y[j]) assert.fail(`${k}[${j}]: ${y[j]} held vs ${x[j]} awaited`);
    }
  } finally {
    cleanup();
  }
});

test('the training loop with MAMBAOUT_STEP_REPLAY=on (drop path, 2 epochs: a capture each) ends with the weights of the live step bit for bit, in one process and as rank 0 of 2', { skip: SKIP, timeout: 900_000 }, async () => {
  const { dir, cleanup } = tempDir('mambaout-replay-loop-');
  const prev = settings.stepReplay;
  try {
    const data = (await makeTinyImagenet({ root: join(dir, 'data'), classes: 2, trainPerClass: 12, valPerClass: 4, minSide: 40, maxSide: 56, seed: 9 })).root;
    const args = (exp: string): Record<string, unknown> => parseArgs({
      scriptName: 'mambaout-train', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
      argv: [data, '--model', 'mambaout_test', '--img-size', '32', '--backend', 'webgpu', '--workers', '0', '-b', '4', '--epochs', '2',
        '--warmup-epochs', '0', '--cooldown-epochs', '0', '--lr', '1e-2', '--opt', 'adamw', '--drop-path', '0.2', '--log-interval', '100',
        '--output', dir, '--experiment', exp],
    }).args;
    const run = async (exp: string, replay: 'on' | 'off', ranks: 1 | 2): Promise<number> => {
      settings.stepReplay = replay;
      const before = CapturedStep.replays;
      const dist = ranks === 2 ? new DistributedDataParallel(new SlowFakeGroup(), [], { bucketBytes: 40_000, transfer: 'staged' }) : null;
      await runTraining(args(exp), { logger: createLogger({ silent: true }), dist });
      return CapturedStep.replays - before;
    };
    for (const ranks of [1, 2] as const) {
      assert.equal(await run(`live${ranks}`, 'off', ranks), 0);
      // 24 images, batch 4 per rank: 6 steps an epoch in one process (5 replays), 3 as rank 0 of 2 (2 replays)
      assert.equal(await run(`replay${ranks}`, 'on', ranks), ranks === 1 ? 10 : 4, 'every step after an epoch\'s first replayed');
      const a = await readTrainCheckpoint(join(dir, `live${ranks}`, 'last.safetensors'));
      const b = await readTrainCheckpoint(join(dir, `replay${ranks}`, 'last.safetensors'));
      assert.ok(a.stateDict.size > 0);
      for (const [k, v] of a.stateDict) {
        const x = v.data as Float32Array, y = b.stateDict.get(k)!.data as Float32Array;
        for (let j = 0; j < x.length; j++) if (x[j] !== y[j]) assert.fail(`${ranks} rank(s), ${k}[${j}]: ${y[j]} replayed vs ${x[j]} live`);
      }
    }
  } finally {
    settings.stepReplay = prev;
    cleanup();
  }
});

test('without communication threads, allreduceScalars waits for an exchange left running (both queue collectives on one ring, in the same order on every rank)', { skip: SKIP, timeout: 600_000 }, async () => {
  await withWebGPUModel(async ({ params, vars, loss }) => {
    const order: string[] = [];
    class Recording extends SlowFakeGroup {
      override async allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg'; dtype?: string }): Promise<void> {
        order.push('bucket');
        return super.allreduce(buf, opts);
      }
      override async allreduceScalars(v: readonly number[]): Promise<number[]> {
        order.push('scalars');
        return [...v];
      }
    }
    const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-2, weightDecay: 0.05 });
    const ddp = new DistributedDataParallel(new Recording(), params, { bucketBytes: 40_000, transfer: 'staged' });
    const g = await ddp.variableGrads(loss, vars);
    g.value.dispose();
    const exchange = ddp.allreduceGrads(params, new Map(params.map((p) => [p.name, g.grads[p.variable.name]])), {
      onBucket: (m) => {
        opt.step(m);
        for (const t of m.values()) t.dispose();
      },
    });
    await ddp.allreduceScalars([1], 'avg'); // a log point while the buckets are still being read back
    await exchange;
    const buckets = ddp.buckets.length;
    assert.ok(buckets > 1);
    assert.deepEqual(order, [...new Array(buckets).fill('bucket'), 'scalars']);
    ddp.dispose();
    opt.dispose();
  });
});

test('2 real ranks training on WebGPU end with the same weights whether the next forward pass is held, every exchange awaited or the step replayed (losses reduced at every step)', { skip: SKIP, timeout: 600_000 }, async () => {
  const { dir, cleanup } = tempDir('mambaout-ddp-ranks-');
  try {
    const data = (await makeTinyImagenet({ root: join(dir, 'data'), classes: 2, trainPerClass: 16, valPerClass: 4, minSide: 40, maxSide: 56, seed: 7 })).root;
    const root = fileURLToPath(new URL('..', import.meta.url));
    const train = async (hold: 'auto' | 'off' | 'replay'): Promise<string> => {
      const port = await findFreePort();
      const ranks = [0, 1].map((r) => new Promise<string>((resolve, reject) => {
        // one adapter for both ranks (lavapipe has one); 2 communication threads, as for the real models
        const env = { ...process.env, RANK: String(r), LOCAL_RANK: String(r), WORLD_SIZE: '2', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: String(port), MAMBAOUT_WEBGPU_ADAPTER: '0', MAMBAOUT_DIST_HOLD: hold === 'off' ? 'off' : 'auto', MAMBAOUT_DIST_THREADS: '2',
          MAMBAOUT_STEP_REPLAY: hold === 'replay' ? 'on' : 'off' };
        const p = spawn(process.execPath, ['--import', 'tsx', join(root, 'bin', 'train.ts'), data, '--model', 'mambaout_test', '--img-size', '32',
          '--backend', 'webgpu', '-b', '4', '--epochs', '1', '--warmup-epochs', '0', '--cooldown-epochs', '0', '--opt', 'adamw', '--lr', '1e-2',
          '--workers', '0', '--log-interval', '1', '--output', dir, '--experiment', hold], { env, cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (out += d));
        p.on('error', reject);
        p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${r} (hold ${hold}) exited ${code}:\n${out.slice(-2000)}`))));
      }));
      return (await Promise.all(ranks))[0];
    };
    assert.doesNotMatch(await train('auto'), /replayed/);
    await train('off');
    assert.match(await train('replay'), /Training step: captured on each epoch's first batch and replayed/);
    const a = await readTrainCheckpoint(join(dir, 'off', 'last.safetensors'));
    for (const other of ['auto', 'replay']) {
      const b = await readTrainCheckpoint(join(dir, other, 'last.safetensors'));
      for (const [k, v] of a.stateDict) {
        const x = v.data as Float32Array, y = b.stateDict.get(k)!.data as Float32Array;
        for (let j = 0; j < x.length; j++) if (x[j] !== y[j]) assert.fail(`${k}[${j}]: ${y[j]} ${other} vs ${x[j]} awaited`);
      }
    }
  } finally {
    cleanup();
  }
});
