/**
 * WebGPU backend (Dawn) and our WGSL filter-gradient kernels, against the cpu backend.
 *
 * Gated: runs only with MAMBAOUT_GPU_TESTS=1 (it needs a WebGPU adapter: a GPU with a Vulkan driver, or Mesa's
 * lavapipe CPU driver via VK_DRIVER_FILES). Without it every test is skipped with a message. The adapter-list
 * parser and flag merging are pure and always run.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import type { backend_util } from '@tensorflow/tfjs';
import { initWebGPU, mergeDawnFlags, parseAdapterList, releaseWebGPU } from '../src/backend/webgpu.js';
import { registerWebGPUKernels, unregisterWebGPUKernels, webgpuKernelsRegistered } from '../src/backend/kernels/webgpu/index.js';
import { Rng } from '../src/utils/rng.js';
import { describeCase, fixedCases, randomCase, runParityCase, type ParityCase } from '../scripts/gpu_kernels.js';

const GPU = process.env.MAMBAOUT_GPU_TESTS === '1';
const SKIP = GPU ? false : 'set MAMBAOUT_GPU_TESTS=1 to run the WebGPU tests (needs a WebGPU adapter)';
const TOL = 1e-4; // max |gpu - cpu| <= TOL * max |cpu|

test('parseAdapterList reads dawn.node\'s adapter listing', () => {
  const msg = "no adapter with backend 'vulkan' and name 'x' found\nAvailable adapters:\n" +
    " * backend: 'vulkan', name: 'NVIDIA H200'\n * backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)'";
  assert.deepEqual(parseAdapterList(msg), [
    { index: 0, backend: 'vulkan', name: 'NVIDIA H200' },
    { index: 1, backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)' },
  ]);
  assert.deepEqual(parseAdapterList('unrelated error'), []);
});

test('mergeDawnFlags merges feature toggles and keeps other flags', () => {
  assert.deepEqual(
    mergeDawnFlags(['disable-dawn-features=a', 'backend=vulkan', 'enable-dawn-features=x,y', 'disable-dawn-features=b,a']),
    ['backend=vulkan', 'disable-dawn-features=a,b', 'enable-dawn-features=x,y'],
  );
});

test('initWebGPU returns ok:false (never throws) for an adapter index that does not exist', { skip: SKIP }, async () => {
  const r = await initWebGPU({ adapterIndex: 999 });
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.reason, /adapter index 999|no WebGPU adapter/);
});

test('webgpu kernels match the cpu backend', { skip: SKIP, timeout: 600_000 }, async (t) => {
  const r = await initWebGPU();
  assert.ok(r.ok, r.ok ? '' : r.reason);
  try {
    assert.equal(tf.getBackend(), 'webgpu');
    assert.ok(webgpuKernelsRegistered(), 'our kernels are registered by initWebGPU');
    assert.ok(r.info.limits.maxComputeWorkgroupStorageSize >= 16384);

    const rng = new Rng(7);
    const cases: ParityCase[] = [...fixedCases()];
    for (let i = 0; i < 16; i++) cases.push(randomCase(rng, i % 2 === 0 ? 'Conv2DBackpropFilter' : 'DepthwiseConv2dNativeBackpropFilter'));

    await t.test('ours vs cpu', async () => {
      for (const c of cases) {
        const res = await runParityCase(c, rng);
        assert.ok(res.rel <= TOL, `${describeCase(c)}: rel ${res.rel} (max|diff| ${res.maxAbsDiff}, max|ref| ${res.maxRef})`);
        assert.ok(res.maxRef > 0, `${describeCase(c)}: all-zero reference`);
      }
    });

    await t.test('tfjs originals restored by unregisterWebGPUKernels still match', async () => {
      unregisterWebGPUKernels();
      assert.equal(webgpuKernelsRegistered(), false);
      try {
        for (const c of cases.slice(0, 3)) {
          const res = await runParityCase(c, rng);
          assert.ok(res.rel <= TOL, `${describeCase(c)}: rel ${res.rel}`);
        }
      } finally {
        registerWebGPUKernels();
      }
      assert.ok(webgpuKernelsRegistered());
    });

    await t.test('gradients through tf.grad use our kernels and match cpu', async () => {
      // conv2d + depthwiseConv2d filter gradients as MambaOut's training step computes them.
      const x = Array.from({ length: 2 * 12 * 12 * 6 }, () => rng.normal());
      const w1 = Array.from({ length: 3 * 3 * 6 * 8 }, () => rng.normal() * 0.2);
      const w2 = Array.from({ length: 7 * 7 * 8 }, () => rng.normal() * 0.2);
      const grads = async (): Promise<Float32Array[]> => {
        const tx = tf.tensor4d(x, [2, 12, 12, 6]);
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
          const h = tf.conv2d(tx, a as tf.Tensor4D, 2, [[0, 0], [1, 1], [1, 1], [0, 0]]);
          const d = tf.depthwiseConv2d(h, b as tf.Tensor4D, 1, 'same');
          return tf.sum(tf.square(d));
        });
        const out = g([tf.tensor4d(w1, [3, 3, 6, 8]), tf.tensor4d(w2, [7, 7, 8, 1])]);
        const vals = await Promise.all(out.map(async (o) => (await o.data()) as Float32Array));
        tf.dispose([tx, ...out]);
        return vals;
      };
      const gpu = await grads();
      await tf.setBackend('cpu');
      const cpu = await grads();
      await tf.setBackend('webgpu');
      for (let k = 0; k < 2; k++) {
        let d = 0;
        let m = 0;
        for (let i = 0; i < cpu[k].length; i++) {
          d = Math.max(d, Math.abs(gpu[k][i] - cpu[k][i]));
          m = Math.max(m, Math.abs(cpu[k][i]));
        }
        assert.ok(d <= TOL * m, `grad ${k}: max|diff| ${d} vs max|ref| ${m}`);
      }
    });
  } finally {
    releaseWebGPU();
  }
  assert.notEqual(tf.getBackend(), 'webgpu');
  assert.equal(webgpuKernelsRegistered(), false, 'releaseWebGPU restores tfjs kernels');
});

// ---------------------------------------------------------------------------------------------------------
// Fused / replacement kernels (src/backend/kernels/webgpu: matmul, sum_rows, depthwise_backprop_input,
// layer_norm, gated_gelu, adam) and a whole training step, against the cpu backend's op-by-op results.

/** max |a - b| / max |b| (NaN -> Infinity). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    d = Number.isNaN(e) ? Infinity : Math.max(d, e);
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(m, 1e-30);
}

function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

/** Run `f` (building tensors from host arrays) on webgpu and on cpu; returns both results as host arrays. */
async function onBoth(f: () => tf.Tensor | tf.Tensor[]): Promise<{ gpu: Float32Array[]; cpu: Float32Array[] }> {
  const run = async (name: string): Promise<Float32Array[]> => {
    await tf.setBackend(name);
    const out = tf.tidy(f);
    const list = Array.isArray(out) ? out : [out];
    const vals = await Promise.all(list.map(async (t) => (await t.data()) as Float32Array));
    tf.dispose(list);
    return vals;
  };
  const gpu = await run('webgpu');
  const cpu = await run('cpu');
  await tf.setBackend('webgpu');
  return { gpu, cpu };
}

test('fused webgpu kernels and a training step match the cpu backend', { skip: SKIP, timeout: 900_000 }, async (t) => {
  const { createModel } = await import('../src/models/mambaout.js');
  const { toTorchLayout } = await import('../src/models/layers.js');
  const { loadCheckpoint } = await import('../src/checkpoint/pth.js');
  const { readSafetensors } = await import('../src/checkpoint/safetensors.js');
  const { fusedOpsActive, gatedConvGeluFused, layerNormFused, meanSpatialFused, setFusedOps } = await import('../src/backend/kernels/webgpu/ops.js');
  const { createOptimizer } = await import('../src/train/optim/index.js');
  const { fixture, nchwToNhwc } = await import('./helpers.js');

  const r = await initWebGPU();
  assert.ok(r.ok, r.ok ? '' : r.reason);
  const rng = new Rng(11);
  try {
    assert.ok(fusedOpsActive(), 'fused ops are active on webgpu');

    await t.test('BatchMatMul: every transpose combination, batches, split-K, odd sizes', async () => {
      const cases: Array<[number[], number[], boolean, boolean]> = [
        [[37, 19], [19, 23], false, false], [[37, 19], [23, 19], false, true], [[19, 37], [19, 23], true, false],
        [[19, 37], [23, 19], true, true], [[1, 1], [1, 1], false, false], [[130, 129], [129, 65], false, false],
        [[300, 48], [256, 48], false, true], // forward Linear shape
        [[5003, 13], [5003, 7], true, false], // dW shape: long K, split
        [[4100, 70], [4100, 33], true, false],
        [[3, 5, 7], [3, 7, 2], false, false], [[3, 5, 7], [1, 2, 7], false, true], [[1, 9, 4], [2, 4, 6], false, false],
        [[2, 3, 17, 5], [2, 3, 5, 9], false, false],
      ];
      for (const [sa, sb, ta, tb] of cases) {
        const a = randn(rng, sa.reduce((x, y) => x * y, 1));
        const b = randn(rng, sb.reduce((x, y) => x * y, 1));
        const { gpu, cpu } = await onBoth(() => tf.matMul(tf.tensor(a, sa), tf.tensor(b, sb), ta, tb));
        const e = relErr(gpu[0], cpu[0]);
        assert.ok(e <= TOL, `matMul [${sa}]${ta ? 'ᵀ' : ''} x [${sb}]${tb ? 'ᵀ' : ''}: rel ${e}`);
      }
    });

    await t.test('Sum over leading axes (bias gradients), with fallbacks', async () => {
      const cases: Array<[number[], number | number[], boolean]> = [
        [[3, 17, 19, 5], [0, 1, 2], false], [[700, 3], 0, false], [[2, 300, 37], [0, 1], true], [[4, 257, 130], [0, 1], false],
        [[50000, 2], 0, false], // many chunks
        [[3, 5, 7], [0, 1], false], // too few rows: tfjs's kernel
        [[300, 7, 3], [1], false], // not a leading prefix: tfjs's kernel
      ];
      for (const [shape, axis, keep] of cases) {
        const x = randn(rng, shape.reduce((a, b) => a * b, 1));
        const { gpu, cpu } = await onBoth(() => tf.sum(tf.tensor(x, shape), axis, keep));
        const e = relErr(gpu[0], cpu[0]);
        assert.ok(e <= TOL, `sum [${shape}] axis ${axis}: rel ${e}`);
      }
    });

    await t.test('DepthwiseConv2dNativeBackpropInput (rotated-filter forward), with fallbacks', async () => {
      const cases: Array<{ x: [number, number, number, number]; k: number; mult?: number; stride?: number; pad: 'same' | 'valid' | backend_util.ExplicitPadding }> = [
        { x: [2, 11, 9, 5], k: 7, pad: 'same' }, { x: [3, 7, 7, 8], k: 3, pad: 'same' }, { x: [1, 9, 10, 3], k: 3, pad: 'valid' },
        { x: [2, 8, 9, 4], k: 5, pad: [[0, 0], [1, 2], [0, 3], [0, 0]] },
        { x: [2, 9, 9, 3], k: 3, mult: 2, pad: 'same' }, // channel multiplier: tfjs's kernel
        { x: [2, 9, 9, 3], k: 3, stride: 2, pad: 'same' }, // stride 2: tfjs's kernel
      ];
      for (const c of cases) {
        const mult = c.mult ?? 1;
        const s = c.stride ?? 1;
        const filter = randn(rng, c.k * c.k * c.x[3] * mult);
        const fShape: [number, number, number, number] = [c.k, c.k, c.x[3], mult];
        const x = randn(rng, c.x.reduce((a, b) => a * b, 1));
        // Gradient of sum(R * depthwiseConv2d(x, W)) wrt x = backprop input of R.
        const outShape = tf.tidy(() => tf.depthwiseConv2d(tf.zeros(c.x) as tf.Tensor4D, tf.zeros(fShape) as tf.Tensor4D, s, c.pad).shape);
        const R = randn(rng, outShape.reduce((a, b) => a * b, 1));
        const { gpu, cpu } = await onBoth(() => {
          const w = tf.tensor4d(filter, fShape);
          const rt = tf.tensor(R, outShape);
          return tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(rt, tf.depthwiseConv2d(xi as tf.Tensor4D, w, s, c.pad))))(tf.tensor4d(x, c.x));
        });
        const e = relErr(gpu[0], cpu[0]);
        assert.ok(e <= TOL, `dw backprop input x[${c.x}] k${c.k} mult ${mult} s${s} pad ${JSON.stringify(c.pad)}: rel ${e}`);
      }
    });

    await t.test('LayerNorm: fused forward and backward vs the op-by-op formula', async () => {
      for (const [rows, C] of [[7, 5], [33, 24], [130, 37], [3, 130], [2, 1152], [1000, 48]] as [number, number][]) {
        const x = randn(rng, rows * C, 2);
        for (let i = 0; i < x.length; i++) x[i] += 0.5; // non-zero mean
        const w = randn(rng, C);
        const b = randn(rng, C);
        const R = randn(rng, rows * C);
        const gpu = await (async () => {
          await tf.setBackend('webgpu');
          const out = tf.tidy(() => {
            const rt = tf.tensor2d(R, [rows, C]);
            const f = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(rt, layerNormFused(xi, wi, bi, 1e-6)));
            const y = layerNormFused(tf.tensor2d(x, [rows, C]), tf.tensor1d(w), tf.tensor1d(b), 1e-6);
            return [y, ...tf.grads(f)([tf.tensor2d(x, [rows, C]), tf.tensor1d(w), tf.tensor1d(b)])];
          });
          const v = await Promise.all(out.map(async (o) => (await o.data()) as Float32Array));
          tf.dispose(out);
          return v;
        })();
        await tf.setBackend('cpu');
        const cpu = tf.tidy(() => {
          const rt = tf.tensor2d(R, [rows, C]);
          const ln = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => {
            const { mean, variance } = tf.moments(xi, 1, true);
            return xi.sub(mean).mul(tf.rsqrt(variance.add(1e-6))).mul(wi).add(bi);
          };
          const y = ln(tf.tensor2d(x, [rows, C]), tf.tensor1d(w), tf.tensor1d(b));
          const g = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(rt, ln(xi, wi, bi))))([tf.tensor2d(x, [rows, C]), tf.tensor1d(w), tf.tensor1d(b)]);
          return [y, ...g].map((o) => o.dataSync() as Float32Array);
        });
        await tf.setBackend('webgpu');
        ['y', 'dx', 'dweight', 'dbias'].forEach((name, i) => {
          const e = relErr(gpu[i], cpu[i]);
          assert.ok(e <= TOL, `LayerNorm [${rows}, ${C}] ${name}: rel ${e}`);
        });
      }
    });

    await t.test('gated GELU (split, 7x7 depthwise conv, gelu, concat, product): forward and gradients', async () => {
      for (const [n, hh, ww, h, C] of [[2, 9, 7, 13, 5], [1, 14, 14, 128, 48], [3, 5, 6, 8, 8]] as number[][]) {
        const f = randn(rng, n * hh * ww * 2 * h);
        const cw = randn(rng, 49 * C, 0.2);
        const cb = randn(rng, C);
        const R = randn(rng, n * hh * ww * h);
        const fShape = [n, hh, ww, 2 * h];
        const build = (useFused: boolean) => {
          const rt = tf.tensor(R, [n, hh, ww, h]);
          const gate = (fi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor): tf.Tensor => {
            if (useFused) return gatedConvGeluFused(fi as tf.Tensor4D, wi as tf.Tensor4D, bi as tf.Tensor1D, h);
            const [g, i, c] = tf.split(fi, [h, h - C, C], 3);
            const k = tf.depthwiseConv2d(c as tf.Tensor4D, wi as tf.Tensor4D, 1, 'same').add(bi);
            const gl = g.mul(tf.erf(g.mul(Math.SQRT1_2)).add(1)).mul(0.5);
            return gl.mul(tf.concat([i, k], 3));
          };
          const inputs = () => [tf.tensor(f, fShape), tf.tensor4d(cw, [7, 7, C, 1]), tf.tensor1d(cb)];
          const y = gate(...(inputs() as [tf.Tensor, tf.Tensor, tf.Tensor]));
          const g = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(rt, gate(a, b, c))))(inputs());
          return [y, ...g];
        };
        const gpu = await (async () => {
          await tf.setBackend('webgpu');
          const out = tf.tidy(() => build(true));
          const v = await Promise.all(out.map(async (o) => (await o.data()) as Float32Array));
          tf.dispose(out);
          return v;
        })();
        await tf.setBackend('cpu');
        const cpu = tf.tidy(() => build(false).map((o) => o.dataSync() as Float32Array));
        await tf.setBackend('webgpu');
        ['out', 'df', 'dconvW', 'dconvB'].forEach((name, i) => {
          const e = relErr(gpu[i], cpu[i]);
          assert.ok(e <= TOL, `gate n${n} ${hh}x${ww} h${h} C${C} ${name}: rel ${e}`);
        });
      }
    });

    await t.test('spatial mean with broadcast gradient', async () => {
      const x = randn(rng, 3 * 5 * 7 * 11);
      const R = randn(rng, 3 * 11);
      const { gpu, cpu } = await onBoth(() => {
        const useFused = tf.getBackend() === 'webgpu';
        const rt = tf.tensor2d(R, [3, 11]);
        const f = (xi: tf.Tensor) => tf.sum(tf.mul(rt, useFused ? meanSpatialFused(xi as tf.Tensor4D) : tf.mean(xi, [1, 2])));
        return tf.grad(f)(tf.tensor4d(x, [3, 5, 7, 11]));
      });
      assert.ok(relErr(gpu[0], cpu[0]) <= 1e-6);
    });

    await t.test('fused Adam/AdamW update vs the cpu host path and the webgpu op path (3 steps)', async () => {
      const shapes = [[5, 7], [13], [3, 3, 2, 4], [1000, 3]];
      const init = shapes.map((s) => randn(rng, s.reduce((a, b) => a * b, 1)));
      const gradsAt = [0, 1, 2].map(() => shapes.map((s) => randn(rng, s.reduce((a, b) => a * b, 1), 0.1)));
      for (const opt of ['adamw', 'adam'] as const) {
        const runOpt = async (backendName: string, fused: boolean): Promise<Float32Array[]> => {
          await tf.setBackend(backendName);
          const params = shapes.map((s, i) => ({ name: `p${i}`, variable: tf.variable(tf.tensor(init[i], s), true) }));
          const o = createOptimizer(params, { opt, lr: 1e-2, weightDecay: 0.05 });
          (o as unknown as { fusedKernelPath: boolean }).fusedKernelPath = fused;
          for (const step of gradsAt) {
            tf.tidy(() => o.step(new Map(params.map((p, i) => [p.name, tf.tensor(step[i], shapes[i])]))));
          }
          const sd = await o.stateDict();
          const out: Float32Array[] = [];
          for (let i = 0; i < params.length; i++) {
            out.push((await params[i].variable.data()) as Float32Array);
            const st = sd.state[i] as Record<string, { data: Float32Array }>;
            out.push(st.exp_avg.data, st.exp_avg_sq.data);
          }
          o.dispose();
          params.forEach((p) => p.variable.dispose());
          return out;
        };
        const fusedGpu = await runOpt('webgpu', true);
        const opsGpu = await runOpt('webgpu', false);
        const host = await runOpt('cpu', true);
        await tf.setBackend('webgpu');
        for (let i = 0; i < host.length; i++) {
          assert.ok(relErr(fusedGpu[i], host[i]) <= 1e-5, `${opt} tensor ${i}: fused vs cpu rel ${relErr(fusedGpu[i], host[i])}`);
          assert.ok(relErr(fusedGpu[i], opsGpu[i]) <= 1e-5, `${opt} tensor ${i}: fused vs op path rel ${relErr(fusedGpu[i], opsGpu[i])}`);
        }
      }
    });

    await t.test('mambaout_test training step on webgpu (fused and op-by-op): logits, loss and all 68 gradients match cpu and PyTorch', async () => {
      const io = await readSafetensors(fixture('micro_io.safetensors'));
      const inp = io.get('input_nchw')!;
      const [N, C, H, W] = inp.shape;
      const x = nchwToNhwc(inp.data as Float32Array, N, C, H, W);
      const labels = Array.from(io.get('labels')!.data as BigInt64Array, Number);
      const { stateDict } = await loadCheckpoint(fixture('micro.pth'));
      const step = async (backendName: string): Promise<{ loss: number; logits: Float32Array; grads: Map<string, Float32Array> }> => {
        await tf.setBackend(backendName);
        const m = createModel('mambaout_test', { noInit: true });
        m.loadStateDict(stateDict);
        const vars = m.parameterInfo();
        const { value, grads, logits } = tf.tidy(() => {
          const xt = tf.tensor4d(x, [N, H, W, 3]);
          const lg = m.forward(xt);
          const res = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 10), m.forward(xt, { training: true })) as tf.Scalar, vars.map((p) => p.variable));
          return { ...res, logits: lg };
        });
        const out = { loss: (await value.data())[0], logits: (await logits.data()) as Float32Array, grads: new Map<string, Float32Array>() };
        for (const p of vars) out.grads.set(p.name, toTorchLayout(p.kind, p.variable.shape, (await grads[p.variable.name].data()) as Float32Array));
        tf.dispose([value, logits, ...Object.values(grads)]);
        m.dispose();
        return out;
      };
      const fused = await step('webgpu');
      const prev = setFusedOps(false);
      let unfused: Awaited<ReturnType<typeof step>>;
      try {
        assert.equal(fusedOpsActive(), false);
        unfused = await step('webgpu'); // op-by-op model, still with our BatchMatMul / Sum / depthwise kernels
      } finally {
        setFusedOps(prev);
      }
      assert.ok(fusedOpsActive());
      const cpu = await step('cpu');
      await tf.setBackend('webgpu');
      let worst = 0;
      for (const [label, gpu] of [['fused', fused], ['op-by-op', unfused]] as const) {
        assert.ok(relErr(gpu.logits, cpu.logits) <= TOL, `${label} logits rel ${relErr(gpu.logits, cpu.logits)}`);
        assert.ok(relErr(gpu.logits, io.get('logits')!.data as Float32Array) <= TOL);
        assert.ok(Math.abs(gpu.loss - cpu.loss) <= 1e-5, `${label} loss ${gpu.loss} vs ${cpu.loss}`);
        assert.equal(gpu.grads.size, 68);
        for (const [name, g] of gpu.grads) {
          const eCpu = relErr(g, cpu.grads.get(name)!);
          const eTorch = relErr(g, io.get(`grad.${name}`)!.data as Float32Array);
          worst = Math.max(worst, eCpu);
          assert.ok(eCpu <= TOL, `${label} ${name}: webgpu vs cpu gradient rel ${eCpu}`);
          assert.ok(eTorch <= TOL, `${label} ${name}: webgpu vs PyTorch gradient rel ${eTorch}`);
        }
      }
      t.diagnostic(`worst gradient rel diff webgpu vs cpu: ${worst.toExponential(2)}`);
    });
  } finally {
    releaseWebGPU();
  }
  assert.equal(fusedOpsActive(), false, 'not active after releaseWebGPU');
});

describe('prefetch batch work in one WGSL kernel (MambaoutPrepareBatch) equals the host path', () => {
  test('mixup/cutmix, normalization and erasing: exact except the pixel noise (float tolerance)', { skip: SKIP, timeout: 600_000 }, async (t) => {
    const { PrefetchLoader, normalizeTable } = await import('../src/data/prefetch.js');
    const { Mixup } = await import('../src/data/mixup.js');
    const { fakeLoader, randomBatch } = await import('./helpers/batches.js');
    const r = await initWebGPU();
    assert.ok(r.ok, r.ok ? '' : r.reason);
    try {
      const MEAN = [0.485, 0.456, 0.406];
      const STD = [0.229, 0.224, 0.225];
      const rng = new Rng(12);
      const cases = [
        { mode: 'batch', erase: 'pixel', recount: 1, n: 8, H: 12, W: 10 },
        { mode: 'pair', erase: 'rand', recount: 2, n: 6, H: 9, W: 7 },
        { mode: 'elem', erase: 'const', recount: 3, n: 6, H: 11, W: 13 },
        { mode: 'elem', erase: 'pixel', recount: 2, n: 4, H: 33, W: 31 },
        { mode: null, erase: null, recount: 1, n: 3, H: 7, W: 9 }, // eval: normalize only
      ] as const;
      let worstNoise = 0;
      let noiseElems = 0;
      for (const c of cases) {
        const classes = 5;
        const batches = Array.from({ length: 4 }, () => randomBatch(rng, c.n, c.H, c.W, classes));
        const run = async (path: 'host' | 'webgpu') => {
          const train = c.mode === null ? undefined : {
            mixup: new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, mode: c.mode, numClasses: classes, labelSmoothing: 0.1 }),
            erasing: { probability: 0.6, mode: c.erase!, maxCount: c.recount },
            targets: 'soft' as const, numClasses: classes, smoothing: 0.1, seed: 7, rank: 0,
          };
          const pf = new PrefetchLoader(fakeLoader(batches), { mean: MEAN, std: STD, train, path });
          assert.equal(pf.path, path);
          pf.setEpoch(2);
          const out: Float32Array[] = [];
          for await (const b of pf) {
            out.push((await b.input.data()) as Float32Array);
            tf.dispose([b.input, b.target]);
          }
          pf.dispose();
          return out;
        };
        const host = await run('host');
        const gpu = await run('webgpu');
        const table = new Set(normalizeTable(MEAN, STD));
        for (let k = 0; k < host.length; k++) {
          for (let i = 0; i < host[k].length; i++) {
            const h = host[k][i];
            const g = gpu[k][i];
            if (Object.is(h, g)) continue;
            // only pixel noise may differ (WGSL log/cos), and never a value of the uint8 stages
            assert.equal(c.erase, 'pixel', `${JSON.stringify(c)} batch ${k} element ${i}: host ${h} gpu ${g}`);
            assert.ok(!table.has(h) && !table.has(g), `uint8 stage differs at ${i}: host ${h} gpu ${g}`);
            assert.ok(Math.abs(h - g) <= 3e-3, `noise at ${i}: host ${h} gpu ${g}`);
            worstNoise = Math.max(worstNoise, Math.abs(h - g));
            noiseElems++;
          }
        }
      }
      t.diagnostic(`pixel-noise elements that differ from the host: ${noiseElems}, worst |diff| ${worstNoise.toExponential(2)}`);
    } finally {
      releaseWebGPU();
    }
  });
});
