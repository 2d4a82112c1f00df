/**
 * timm 0.6.11 train.py flags whose meaning on this port needs a decision: each one either does what timm does or is
 * refused with a sentence (never silently ignored).
 *
 * - --no-prefetcher: timm then mixes in float on the device (no uint8 rounding) and erases each image on the CPU
 *   *before* mixing; with the prefetcher (default) it mixes uint8 at collation and erases the mixed batch. Without
 *   mixup/cutmix the two paths compute the same batches (normalize, then erase each image), so the flag is
 *   accepted; with mixup/cutmix active it is refused (this port implements the prefetcher order only).
 * - --worker-seeding: 'all' (default) reseeds numpy in every loader worker; here every augmentation draw is already
 *   seeded per (seed, epoch, sample), which is what 'all' is for. 'part' exists to reproduce old results with an
 *   unseeded numpy in workers, which cannot be reproduced here: refused. Other values fail timm's assert: refused.
 * - --dist-bn: MambaOut has no BatchNorm buffers, so distribute_bn averages nothing; timm still logs
 *   "Distributing BatchNorm running means and vars" after each epoch of a distributed run with 'reduce' or
 *   'broadcast' (other strings: no log, no action) — distBnLogLine.
 * - --tta k > 1: timm's validate() averages the outputs of k consecutive images (there is no TTA loader in 0.6.11)
 *   and keeps every k-th target — ttaReduce, a faithful copy of that arithmetic.
 * - --model-ema-force-cpu: keeps the EMA off the accelerator and skips EMA validation (timm: "Disables EMA
 *   validation"); here the EMA stays where the weights are, and EMA validation is skipped likewise.
 * - --resplit: random erasing skips the first half of every batch (re_num_splits = num_aug_splits or 2).
 * - --patience-epochs: used by --sched plateau (PlateauLRScheduler in train/scheduler.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';

export function checkNoPrefetcher(noPrefetcher: boolean, mixupActive: boolean): string | null {
  if (!noPrefetcher) return null;
  if (mixupActive) {
    throw new UserError(
      '--no-prefetcher with mixup/cutmix is not supported: timm then erases each image before mixing in float, ' +
        'this port implements the prefetcher order only (mix uint8, normalize, erase); drop --no-prefetcher or pass --mixup 0 --cutmix 0',
    );
  }
  return '--no-prefetcher: without mixup/cutmix both timm paths give the same batches (normalize, then erase each image).';
}

export function checkWorkerSeeding(mode: string): void {
  if (mode === 'all') return;
  if (mode === 'part') {
    throw new UserError(
      "--worker-seeding part is not supported: it reproduces old timm runs through numpy's unseeded worker streams, " +
        "which cannot be reproduced here; every augmentation draw is seeded per sample, as 'all' (the default)",
    );
  }
  throw new UserError(`--worker-seeding must be 'all' or 'part' (timm asserts the same), got '${mode}'`);
}

/** timm's per-epoch log line of distribute_bn, or null when timm prints nothing. */
export function distBnLogLine(distBn: string, worldSize: number): string | null {
  return worldSize > 1 && (distBn === 'broadcast' || distBn === 'reduce') ? 'Distributing BatchNorm running means and vars' : null;
}

/**
 * timm validate() with --tta k > 1: `output.unfold(0, k, k).mean(dim=2)` and `target[0:n:k]` — the mean of each
 * group of k consecutive outputs (a trailing partial group is dropped) against every k-th label.
 */
export function ttaReduce(logits: tf.Tensor2D, labels: Int32Array, k: number): { logits: tf.Tensor2D; labels: Int32Array } {
  if (k <= 1) return { logits, labels };
  const [n, c] = logits.shape;
  const groups = Math.floor(n / k);
  if (groups === 0) throw new UserError(`--tta ${k} is larger than the validation batch (${n}); use a validation batch size that is a multiple of --tta`);
  const reduced = tf.tidy(() => logits.slice([0, 0], [groups * k, c]).reshape([groups, k, c]).mean(1) as tf.Tensor2D);
  const kept = new Int32Array(Math.ceil(n / k));
  for (let i = 0; i < kept.length; i++) kept[i] = labels[i * k];
  return { logits: reduced, labels: kept.subarray(0, groups) };
}

/** What timm 0.6.11 train.py does with the augmentation flags that interact (create_loader + PrefetchLoader). */
export interface TrainAugPlan {
  /** Mixup/CutMix on: `mixup > 0 or cutmix > 0 or cutmix_minmax` — --no-aug does not turn it off. */
  mixup: boolean;
  /** Interpolation of the train transform: the model's when --no-aug or --train-interpolation is ''. */
  interpolation: string;
  /** Erasing probability used by the prefetcher: 0 with --no-aug. */
  reprob: number;
  /** Leading batch splits left unerased: --resplit -> num_aug_splits or 2. */
  eraseSplits: number;
}

export function trainAugPlan(o: {
  noAug: boolean;
  mixupActive: boolean;
  trainInterpolation: string;
  modelInterpolation: string;
  reprob: number;
  resplit: boolean;
  augSplits?: number;
}): TrainAugPlan {
  return {
    mixup: o.mixupActive,
    interpolation: o.noAug || !o.trainInterpolation ? o.modelInterpolation : o.trainInterpolation,
    reprob: o.noAug ? 0 : o.reprob,
    eraseSplits: o.resplit ? o.augSplits || 2 : 0,
  };
}
