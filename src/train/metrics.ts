/**
 * timm 0.6.11 metrics (timm/utils/metrics.py): top-k accuracy and AverageMeter.
 *
 * accuracy(output, target, topk): maxk = min(max(topk), C); take the maxk highest-scoring classes per row
 * (largest first); acc@k = 100 * (rows whose target is among the first min(k, maxk)) / batch_size.
 * Ties between equal logits are broken by tf.topk (lower class index first); torch's order for exact
 * ties is unspecified, so results can differ only for rows with tied scores at the k-th place.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Labels } from './loss.js';

function labelTensor(labels: Labels): tf.Tensor1D {
  if (labels instanceof tf.Tensor) {
    const t = labels.dtype === 'int32' ? labels : tf.cast(labels, 'int32');
    return t.reshape([-1]) as tf.Tensor1D;
  }
  return tf.tensor1d(Array.from(labels), 'int32');
}

/**
 * Number of correct rows for each k (a float32 tensor [topk.length], stays on the device).
 * Useful for summing counts over batches before one host read.
 */
export function accuracyCounts(logits: tf.Tensor, targets: Labels, topk: readonly number[] = [1]): tf.Tensor1D {
  if (logits.rank !== 2) throw new Error(`accuracy: logits must be [batch, classes], got [${logits.shape}]`);
  if (topk.length === 0) throw new Error('accuracy: topk is empty');
  const [B, C] = logits.shape as [number, number];
  const maxk = Math.min(Math.max(...topk), C);
  return tf.tidy(() => {
    const y = labelTensor(targets);
    if (y.shape[0] !== B) throw new Error(`accuracy: ${y.shape[0]} targets for ${B} rows`);
    const { indices } = tf.topk(logits, maxk, true); // [B, maxk], best first
    const correct = tf.cast(tf.equal(indices, tf.reshape(y, [B, 1])), 'float32'); // [B, maxk]
    const counts = topk.map((k) => tf.sum(tf.slice(correct, [0, 0], [B, Math.min(k, maxk)])));
    return tf.stack(counts) as tf.Tensor1D;
  });
}

/** timm computes `count * 100. / batch_size` on float32 tensors: reproduce that rounding. */
function percent(count: number, batch: number): number {
  return Math.fround(Math.fround(count * 100) / batch);
}

/** acc@k in percent for each k (timm `accuracy`), read back asynchronously. */
export async function accuracy(logits: tf.Tensor, targets: Labels, topk: readonly number[] = [1]): Promise<number[]> {
  const B = logits.shape[0] as number;
  const counts = accuracyCounts(logits, targets, topk);
  try {
    const c = await counts.data();
    return Array.from(c, (v) => percent(v, B));
  } finally {
    counts.dispose();
  }
}

/** Synchronous variant of `accuracy` (blocks on a host read). */
export function accuracySync(logits: tf.Tensor, targets: Labels, topk: readonly number[] = [1]): number[] {
  const B = logits.shape[0] as number;
  const counts = accuracyCounts(logits, targets, topk);
  try {
    return Array.from(counts.dataSync(), (v) => percent(v, B));
  } finally {
    counts.dispose();
  }
}

/** timm AverageMeter: val = last value, sum += val*n, count += n, avg = sum/count. */
export class AverageMeter {
  val = 0;
  avg = 0;
  sum = 0;
  count = 0;

  reset(): void {
    this.val = 0;
    this.avg = 0;
    this.sum = 0;
    this.count = 0;
  }

  update(val: number, n = 1): void {
    this.val = val;
    this.sum += val * n;
    this.count += n;
    this.avg = this.sum / this.count;
  }
}
