/**
 * Classification losses as timm 0.6.11 defines them (timm/loss/*), and the train-loss choice of train.py.
 * All are built from differentiable tfjs ops (usable inside tf.variableGrads) and return a scalar
 * mean over the batch. Logits are [B, C]; hard labels are int class indices [B]; soft targets [B, C].
 * log-softmax is the numerically stable form z - max(z) - log(sum(exp(z - max(z)))) (tf.logSoftmax).
 */
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';

/** Hard labels: an int tensor [B] or a plain array of class indices. */
export type Labels = tf.Tensor | readonly number[] | Int32Array;

function labelTensor(labels: Labels): tf.Tensor1D {
  if (labels instanceof tf.Tensor) {
    const t = labels.dtype === 'int32' ? labels : tf.cast(labels, 'int32');
    return t.reshape([-1]) as tf.Tensor1D;
  }
  return tf.tensor1d(Array.from(labels), 'int32');
}

function check2d(logits: tf.Tensor, what: string): void {
  if (logits.rank !== 2) throw new Error(`${what}: logits must be [batch, classes], got [${logits.shape}]`);
}

/** Row-wise log-softmax (stable). */
export function logSoftmax(logits: tf.Tensor): tf.Tensor {
  return tf.logSoftmax(logits, -1);
}

/** timm SoftTargetCrossEntropy: mean_b sum_c -y[b,c] * log_softmax(z)[b,c]. */
export function softTargetCrossEntropy(logits: tf.Tensor, targets: tf.Tensor): tf.Scalar {
  check2d(logits, 'softTargetCrossEntropy');
  if (targets.rank !== 2 || targets.shape[0] !== logits.shape[0] || targets.shape[1] !== logits.shape[1]) {
    throw new Error(`softTargetCrossEntropy: targets [${targets.shape}] do not match logits [${logits.shape}]`);
  }
  return tf.tidy(() => tf.mean(tf.sum(tf.mul(tf.neg(targets), logSoftmax(logits)), -1)) as tf.Scalar);
}

/** Plain cross-entropy with int labels (torch nn.CrossEntropyLoss, mean reduction). */
export function crossEntropy(logits: tf.Tensor, labels: Labels): tf.Scalar {
  check2d(logits, 'crossEntropy');
  return tf.tidy(() => {
    const y = labelTensor(labels);
    const C = logits.shape[1] as number;
    const onehot = tf.oneHot(y, C).toFloat();
    return tf.mean(tf.neg(tf.sum(tf.mul(onehot, logSoftmax(logits)), -1))) as tf.Scalar;
  });
}

/**
 * timm LabelSmoothingCrossEntropy(smoothing s):
 * mean_b [(1 - s) * (-logp[b, y_b]) + s * mean_c(-logp[b, c])].
 */
export function labelSmoothingCrossEntropy(logits: tf.Tensor, labels: Labels, smoothing = 0.1): tf.Scalar {
  check2d(logits, 'labelSmoothingCrossEntropy');
  if (!(smoothing >= 0 && smoothing < 1)) throw new UserError(`Invalid label smoothing ${smoothing}; it must be in [0, 1).`);
  return tf.tidy(() => {
    const y = labelTensor(labels);
    const C = logits.shape[1] as number;
    const logp = logSoftmax(logits);
    const nll = tf.neg(tf.sum(tf.mul(tf.oneHot(y, C).toFloat(), logp), -1));
    const smooth = tf.neg(tf.mean(logp, -1));
    return tf.mean(tf.add(tf.mul(1 - smoothing, nll), tf.mul(smoothing, smooth))) as tf.Scalar;
  });
}

export interface BinaryCrossEntropyOptions {
  /** Label smoothing applied when converting int labels to one-hot targets (timm default 0.1). */
  smoothing?: number;
  /** If set, soft targets become 1 where target > threshold, else 0. */
  targetThreshold?: number | null;
}

/**
 * timm BinaryCrossEntropy: int labels become smoothed one-hots (off = s/C, on = 1 - s + off); optional
 * target thresholding; then mean-reduced BCE-with-logits max(z,0) - z*y + log(1 + exp(-|z|)).
 */
export function binaryCrossEntropy(
  logits: tf.Tensor,
  target: tf.Tensor | Labels,
  opts: BinaryCrossEntropyOptions = {},
): tf.Scalar {
  check2d(logits, 'binaryCrossEntropy');
  const smoothing = opts.smoothing ?? 0.1;
  if (!(smoothing >= 0 && smoothing < 1)) throw new UserError(`Invalid label smoothing ${smoothing}; it must be in [0, 1).`);
  return tf.tidy(() => {
    const C = logits.shape[1] as number;
    let y: tf.Tensor;
    if (target instanceof tf.Tensor && target.rank === 2) {
      y = target.toFloat();
    } else {
      const off = smoothing / C;
      const on = 1 - smoothing + off;
      y = tf.add(tf.mul(tf.oneHot(labelTensor(target), C).toFloat(), on - off), off);
    }
    if (opts.targetThreshold !== undefined && opts.targetThreshold !== null) {
      y = tf.greater(y, opts.targetThreshold).toFloat();
    }
    const z = logits;
    const loss = tf.add(tf.sub(tf.relu(z), tf.mul(z, y)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))));
    return tf.mean(loss) as tf.Scalar;
  });
}

/** The loss train.py uses for training, and whether it wants soft targets [B, C] or int labels [B]. */
export interface TrainLoss {
  /** timm class name, for logs. */
  name: 'SoftTargetCrossEntropy' | 'BinaryCrossEntropy' | 'LabelSmoothingCrossEntropy' | 'CrossEntropyLoss';
  /** 'soft': targets are [B, C] floats (mixup/cutmix output); 'labels': int class indices. */
  targets: 'soft' | 'labels';
  fn: (logits: tf.Tensor, target: tf.Tensor) => tf.Scalar;
}

export interface TrainLossArgs {
  jsdLoss?: boolean;
  /** mixup > 0 or cutmix > 0 or cutmix_minmax set. */
  mixupActive: boolean;
  bceLoss?: boolean;
  bceTargetThresh?: number | null;
  smoothing?: number;
}

/**
 * train.py's choice (first match wins): JSD (not supported here) -> mixup active: BCE or
 * SoftTargetCrossEntropy -> smoothing > 0: BCE(smoothing) or LabelSmoothingCrossEntropy -> CrossEntropy.
 */
export function createTrainLoss(args: TrainLossArgs): TrainLoss {
  const smoothing = args.smoothing ?? 0;
  if (args.jsdLoss) {
    throw new UserError('--jsd-loss needs augmentation splits, which are not supported; drop --jsd-loss.');
  }
  if (args.mixupActive) {
    if (args.bceLoss) {
      // timm: BinaryCrossEntropy(target_threshold=...); mixup already produced (smoothed) soft targets.
      const thr = args.bceTargetThresh ?? null;
      return {
        name: 'BinaryCrossEntropy',
        targets: 'soft',
        fn: (z, y) => binaryCrossEntropy(z, y, { targetThreshold: thr }),
      };
    }
    return { name: 'SoftTargetCrossEntropy', targets: 'soft', fn: softTargetCrossEntropy };
  }
  if (smoothing > 0) {
    if (args.bceLoss) {
      const thr = args.bceTargetThresh ?? null;
      return {
        name: 'BinaryCrossEntropy',
        targets: 'labels',
        fn: (z, y) => binaryCrossEntropy(z, y, { smoothing, targetThreshold: thr }),
      };
    }
    return { name: 'LabelSmoothingCrossEntropy', targets: 'labels', fn: (z, y) => labelSmoothingCrossEntropy(z, y, smoothing) };
  }
  return { name: 'CrossEntropyLoss', targets: 'labels', fn: (z, y) => crossEntropy(z, y) };
}

/** Validation loss: always plain cross-entropy on hard labels. */
export function createEvalLoss(): (logits: tf.Tensor, labels: Labels) => tf.Scalar {
  return crossEntropy;
}
