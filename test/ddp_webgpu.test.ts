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
import type { CommPool } from '../src/distributed/pool.js';

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
  fn: (m: { params: { name: string; variable: tf.Variable }[]; vars: tf.Variable[]; loss: () => tf.Scalar; ref: Map<string, Float32Array> }) => Promise<void>,
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
    const reference = tf.tidy(() => tf.variableGrads(loss, vars));
    const ref = new Map<string, Float32Array>();
    for (const p of params) ref.set(p.name, (await reference.grads[p.variable.name].data()) as Float32Array);
    tf.dispose([reference.value, ...Object.values(reference.grads)]);
    try {
      await fn({ params, vars, loss, ref });
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
