/**
 * WebGPU backend (Dawn) and our WGSL filter-gradient kernels, against the cpu backend.
 *
 * Gated: runs only with MAMBAOUT_GPU_TESTS=1 (it needs a WebGPU adapter: a GPU with a Vulkan driver, or Mesa's
 * lavapipe CPU driver via VK_DRIVER_FILES). Without it every test is skipped with a message. The adapter-list
 * parser and flag merging are pure and always run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
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
