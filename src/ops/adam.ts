/**
 * Fused Adam / AdamW updates for the optimizers (src/train/optim/adamw.ts keeps the maths of record and the op-by-op
 * path; this is the WebGPU fast path). `adamStep` updates a list of parameters that share one set of scalars:
 *   - MambaoutAdamMulti (one kernel call for the whole list, in place; src/backend/kernels/webgpu/adam_multi.ts) when
 *     enabled and every parameter / moment is the only tensor on its buffer;
 *   - otherwise MambaoutAdam per parameter (three new tensors, assigned).
 * Callers check `adamFusedAvailable()` first and use their op path when it is false.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdamKernelAttrs } from '../backend/kernels/webgpu/adam.js';
import { shouldFuse } from './fused.js';

/** Scalars of one fused Adam/AdamW update (see src/backend/kernels/webgpu/adam.ts for the maths). */
export type AdamScalars = AdamKernelAttrs;

export interface AdamItem {
  param: tf.Variable;
  grad: tf.Tensor;
  m: tf.Variable;
  v: tf.Variable;
}

/** Whether the fused update can run now. */
export function adamFusedAvailable(): boolean {
  return shouldFuse('MambaoutAdam');
}

/**
 * Whether adamStep updates parameters and moments in the buffers they are in (MambaoutAdamMulti enabled): what a
 * forward pass issued before the update but executed after it needs (src/train/ddp.ts, the held forward pass).
 */
export function adamInPlaceAvailable(): boolean {
  return adamFusedAvailable() && shouldFuse('MambaoutAdamMulti', 'adamMulti');
}

/** Parameters per MambaoutAdamMulti call (bounds the kernel's input list; it makes one dispatch per parameter). */
const MAX_PER_CALL = 512;

function alone(t: tf.Tensor): boolean {
  const b = tf.backend() as unknown as { refCount?: (id: unknown) => number };
  return typeof b.refCount === 'function' && b.refCount(t.dataId) === 1;
}

let sharedInPlace = 0;
/**
 * Run `fn` with parameters updated in place even while other tensors share their buffers. For a forward pass that was
 * issued before this update but runs on the GPU after it (src/backend/submit_hold.ts, src/train/ddp.ts): its views of
 * the weights (reshapes share the buffer) must read the updated values, and an update into new buffers would leave
 * it reading the old ones.
 */
export function updateSharedInPlace<T>(fn: () => T): T {
  sharedInPlace++;
  try {
    return fn();
  } finally {
    sharedInPlace--;
  }
}

/** Update every item with the same scalars (fused kernels only: check adamFusedAvailable first). */
export function adamStep(items: AdamItem[], s: AdamScalars): void {
  const multi = shouldFuse('MambaoutAdamMulti', 'adamMulti');
  const batch: AdamItem[] = [];
  for (const it of items) {
    if (multi && (sharedInPlace > 0 || alone(it.param)) && alone(it.m) && alone(it.v)) batch.push(it);
    else {
      const [p, m, v] = tf.engine().runKernel('MambaoutAdam', { param: it.param, grad: it.grad, m: it.m, v: it.v },
        s as unknown as tf.NamedAttrMap) as tf.Tensor[];
      it.m.assign(m);
      it.v.assign(v);
      it.param.assign(p);
      tf.dispose([p, m, v]);
    }
  }
  for (let i = 0; i < batch.length; i += MAX_PER_CALL) {
    const part = batch.slice(i, i + MAX_PER_CALL);
    const inputs: tf.NamedTensorMap = {};
    part.forEach((it, j) => {
      inputs[`p${j}`] = it.param;
      inputs[`g${j}`] = it.grad;
      inputs[`m${j}`] = it.m;
      inputs[`v${j}`] = it.v;
    });
    tf.engine().runKernel('MambaoutAdamMulti', inputs, { ...s, count: part.length } as unknown as tf.NamedAttrMap);
  }
}
