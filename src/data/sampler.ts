/**
 * Index samplers (torch.utils.data samplers as timm uses them).
 *
 * A sampler is an iterable of dataset indices with a known length. Samplers whose order
 * changes per epoch take `setEpoch(e)` (DistributedSampler, like torch) or draw a fresh order on
 * every iteration (RandomSampler, like torch's RandomSampler).
 */
import { Rng } from '../utils/rng.js';

export interface Sampler extends Iterable<number> {
  /** Number of indices one iteration yields. */
  readonly length: number;
  /** Called by the loader / training loop before each epoch (optional). */
  setEpoch?(epoch: number): void;
}

function checkSize(n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`dataset size must be a non-negative integer, got ${n}`);
}

/** 0, 1, ..., n-1 (eval, single process). */
export class SequentialSampler implements Sampler {
  constructor(readonly size: number) {
    checkSize(size);
  }
  get length(): number {
    return this.size;
  }
  *[Symbol.iterator](): Iterator<number> {
    for (let i = 0; i < this.size; i++) yield i;
  }
}

/**
 * A fresh random permutation of [0, n) on every iteration, drawn from `rng` (training, single
 * process; torch's RandomSampler draws from its generator in the same way).
 */
export class RandomSampler implements Sampler {
  constructor(readonly size: number, private readonly rng: Rng) {
    checkSize(size);
  }
  get length(): number {
    return this.size;
  }
  *[Symbol.iterator](): Iterator<number> {
    yield* this.rng.permutation(this.size);
  }
}

export interface DistributedSamplerOptions {
  numReplicas: number;
  rank: number;
  /** default true */
  shuffle?: boolean;
  /** default 0 (timm passes no seed, so torch's default 0 is used) */
  seed?: number;
  /** default false */
  dropLast?: boolean;
}

function checkRank(numReplicas: number, rank: number): void {
  if (!Number.isInteger(numReplicas) || numReplicas < 1) throw new Error(`numReplicas must be >= 1, got ${numReplicas}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= numReplicas) {
    throw new Error(`rank must be in [0, ${numReplicas - 1}], got ${rank}`);
  }
}

/** Python `list[start:stop:step]` for step > 0. */
function strided(list: readonly number[], start: number, stop: number, step: number): number[] {
  const out: number[] = [];
  for (let i = start; i < Math.min(stop, list.length); i += step) out.push(list[i]);
  return out;
}

/**
 * torch.utils.data.DistributedSampler: per epoch a permutation of [0, N) from a generator seeded
 * `seed + epoch` (our Rng — torch.randperm's exact stream cannot be reproduced), then either padded
 * by repeating its head up to `ceil(N / W)·W` (drop_last = false) or truncated to a multiple of W;
 * rank r takes positions r, r + W, r + 2W, ...
 */
export class DistributedSampler implements Sampler {
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly numSamples: number;
  readonly totalSize: number;
  private epoch = 0;

  constructor(readonly size: number, opts: DistributedSamplerOptions) {
    checkSize(size);
    checkRank(opts.numReplicas, opts.rank);
    this.numReplicas = opts.numReplicas;
    this.rank = opts.rank;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    this.dropLast = opts.dropLast ?? false;
    const W = this.numReplicas;
    this.numSamples = this.dropLast && size % W !== 0 ? Math.ceil((size - W) / W) : Math.ceil(size / W);
    this.totalSize = this.numSamples * W;
  }

  get length(): number {
    return this.numSamples;
  }

  setEpoch(epoch: number): void {
    this.epoch = epoch;
  }

  /** This rank's indices for the current epoch. */
  indices(): number[] {
    const n = this.size;
    let idx = this.shuffle ? new Rng(this.seed + this.epoch).permutation(n) : Array.from({ length: n }, (_, i) => i);
    if (!this.dropLast) {
      const pad = this.totalSize - idx.length;
      if (pad > 0 && idx.length > 0) {
        const head: number[] = [];
        // indices[:pad] when pad <= len, else (indices * ceil(pad / len))[:pad]
        for (let i = 0; i < pad; i++) head.push(idx[i % idx.length]);
        idx = idx.concat(head);
      }
    } else {
      idx = idx.slice(0, this.totalSize);
    }
    return strided(idx, this.rank, this.totalSize, this.numReplicas);
  }

  [Symbol.iterator](): Iterator<number> {
    return this.indices()[Symbol.iterator]();
  }
}

/**
 * timm's OrderedDistributedSampler (eval): [0, N) padded with its first `ceil(N/W)·W − N` indices,
 * rank r takes r::W. Python slicing semantics are kept: when N is smaller than the padding needed
 * (N < ceil(N/W)·W − N, i.e. tiny sets on many ranks) the padded list stays short and the last ranks
 * get fewer indices, exactly as timm's sampler yields (its __len__ would over-report them).
 */
export class OrderedDistributedSampler implements Sampler {
  readonly numSamples: number;
  readonly totalSize: number;
  private readonly count: number;
  constructor(readonly size: number, readonly numReplicas: number, readonly rank: number) {
    checkSize(size);
    checkRank(numReplicas, rank);
    this.numSamples = Math.ceil(size / numReplicas);
    this.totalSize = this.numSamples * numReplicas;
    this.count = this.indices().length;
  }

  indices(): number[] {
    const idx = Array.from({ length: this.size }, (_, i) => i);
    const padded = idx.concat(idx.slice(0, this.totalSize - idx.length));
    return strided(padded, this.rank, this.totalSize, this.numReplicas);
  }

  get length(): number {
    return this.count;
  }

  [Symbol.iterator](): Iterator<number> {
    return this.indices()[Symbol.iterator]();
  }
}
