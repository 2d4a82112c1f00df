/**
 * The micro model's training-step check against PyTorch (micro_io.safetensors), shared by the model tests (cpu
 * backend) and the cpu/wasm kernel tests (our gradient kernels registered).
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import type { MambaOut } from '../../src/models/mambaout.js';
import { toTorchLayout } from '../../src/models/layers.js';
import { maxAbs, maxAbsDiff, microIo } from '../helpers.js';

/**
 * Every gradient of `m`'s cross-entropy loss on micro_io's input and labels, on the current backend, compared with
 * PyTorch's (max |ours - torch| / max |torch| <= tol, in PyTorch's layout); the loss within 1e-5, and all 68
 * parameters compared. Returns the worst relative difference.
 */
export async function checkMicroGradients(m: MambaOut, tol = 1e-4): Promise<number> {
  const { io, N, H, W, inputNhwc, labels } = await microIo();
  const params = m.parameterInfo();
  const { value, grads } = tf.tidy(() => {
    const x = tf.tensor4d(inputNhwc, [N, H, W, 3]);
    return tf.variableGrads(() => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 10), m.forward(x, { training: true })) as tf.Scalar, params.map((p) => p.variable));
  });
  try {
    assert.ok(Math.abs(value.dataSync()[0] - (io.get('loss')!.data as Float32Array)[0]) < 1e-5);
    let worst = 0;
    for (const p of params) {
      const ours = toTorchLayout(p.kind, p.variable.shape, grads[p.variable.name].dataSync() as Float32Array);
      const ref = io.get(`grad.${p.name}`)!.data as Float32Array;
      const rel = maxAbsDiff(ours, ref) / Math.max(maxAbs(ref), 1e-12);
      assert.ok(rel <= tol, `${p.name}: gradient rel diff ${rel}`);
      worst = Math.max(worst, rel);
    }
    assert.equal(params.length, 68);
    return worst;
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
}
