/**
 * Learning-rate schedulers as in timm 0.6.11 (timm/scheduler/*): cosine, tanh, step, multistep, poly, plateau,
 * and `createScheduler(args, optimizer)` (timm's create_scheduler).
 *
 * timm semantics:
 * - The base lr of each group is its `initialLr` (timm `initial_lr`), set from `lr` only when missing, so
 *   a resumed optimizer state keeps the original run's base lr.
 * - Construction writes the base values into the groups, then, when warmup_t > 0, `warmupLrInit`
 *   (so epoch 0 runs at the warmup lr before any step() call).
 * - `step(epoch)` sets the lr for `epoch` (t_in_epochs = true); `stepUpdate(numUpdates)` does so per
 *   update only when t_in_epochs = false. A group's `lrScale` multiplies the value written into it.
 * - `lrAt(t)` is the pure function behind both: per-group values (before lrScale), noise included.
 *
 * Noise: when `noiseRangeT` covers t ([a, b): a <= t < b; scalar: t >= value), lr <- lr*(1 + n) where n
 * is drawn from a generator seeded with noiseSeed + t: a standard normal resampled until |n| < noisePct
 * ('normal'), or uniform in (-noisePct, noisePct) ('uniform'). timm draws n from a torch.Generator; that
 * stream cannot be reproduced here, so we use our own seeded Rng (src/utils/rng.ts): the noise has the
 * same distribution and is deterministic per (seed, t), but its values differ from PyTorch's.
 * As in timm 0.6.11, `noiseStd` is accepted and ignored (the normal draw has unit std).
 */
import { UserError } from '../errors.js';
import { Rng } from '../utils/rng.js';

/** The part of an optimizer a scheduler touches (our Optimizer satisfies it). */
export interface SchedulableGroup {
  lr: number;
  initialLr?: number;
  lrScale?: number;
}
export interface Schedulable {
  paramGroups: SchedulableGroup[];
}

export interface NoiseOptions {
  /** null: no noise; number: t >= value; [a, b]: a <= t < b. */
  noiseRangeT?: number | [number, number] | null;
  noiseType?: 'normal' | 'uniform';
  noisePct?: number;
  noiseStd?: number;
  noiseSeed?: number;
}

export interface SchedulerCommonOptions extends NoiseOptions {
  warmupT?: number;
  warmupLrInit?: number;
  tInEpochs?: boolean;
  /** false: take base values from existing `initialLr` (must be set), as timm's initialize=False. */
  initialize?: boolean;
}

export abstract class Scheduler {
  readonly baseValues: number[];
  readonly warmupT: number;
  readonly warmupLrInit: number;
  readonly tInEpochs: boolean;
  readonly noiseRangeT: number | [number, number] | null;
  readonly noiseType: 'normal' | 'uniform';
  readonly noisePct: number;
  readonly noiseStd: number;
  readonly noiseSeed: number;
  /** Last metric passed to step()/stepUpdate() (unused by these schedules; kept as timm does). */
  metric: number | undefined = undefined;
  protected warmupSteps: number[];

  constructor(
    readonly optimizer: Schedulable,
    opts: SchedulerCommonOptions,
  ) {
    const initialize = opts.initialize ?? true;
    optimizer.paramGroups.forEach((g, i) => {
      if (initialize) {
        if (g.initialLr === undefined) g.initialLr = g.lr;
      } else if (g.initialLr === undefined) {
        throw new Error(`scheduler: initialLr missing from param group ${i}`);
      }
    });
    this.baseValues = optimizer.paramGroups.map((g) => g.initialLr as number);
    this.noiseRangeT = opts.noiseRangeT ?? null;
    this.noiseType = opts.noiseType ?? 'normal';
    this.noisePct = opts.noisePct ?? 0.67;
    this.noiseStd = opts.noiseStd ?? 1.0;
    this.noiseSeed = opts.noiseSeed ?? 42;
    this.warmupT = opts.warmupT ?? 0;
    this.warmupLrInit = opts.warmupLrInit ?? 0;
    this.tInEpochs = opts.tInEpochs ?? true;
    if (!(this.warmupT >= 0)) throw new UserError(`Invalid warmup length ${this.warmupT}; it must be >= 0.`);
    this.updateGroups(this.baseValues);
    this.warmupSteps = this.baseValues.map(() => 1);
  }

  /** Subclass constructors call this last (timm sets the warmup steps after its own fields). */
  protected initWarmup(warmupTargets: number[] = this.baseValues): void {
    if (this.warmupT) {
      this.warmupSteps = warmupTargets.map((v) => (v - this.warmupLrInit) / this.warmupT);
      this.updateGroups(this.warmupLrInit);
    } else {
      this.warmupSteps = this.baseValues.map(() => 1);
    }
  }

  /** The schedule without noise, per group (before lrScale). */
  protected abstract getLr(t: number): number[];

  /** Learning rates at time t (epoch or update), per group, before lrScale; noise applied when in range. */
  lrAt(t: number): number[] {
    const lrs = this.getLr(t);
    if (!this.isApplyNoise(t)) return lrs;
    const noise = this.calculateNoise(t);
    return lrs.map((v) => v + v * noise);
  }

  /** Call at the end of each epoch with the next epoch's index (and once at start-up when resuming). */
  step(epoch: number, metric?: number): void {
    this.metric = metric;
    if (this.tInEpochs) this.updateGroups(this.lrAt(epoch));
  }

  /** Call after every update with the update count; only acts when tInEpochs is false. */
  stepUpdate(numUpdates: number, metric?: number): void {
    this.metric = metric;
    if (!this.tInEpochs) this.updateGroups(this.lrAt(numUpdates));
  }

  protected updateGroups(values: number[] | number): void {
    this.optimizer.paramGroups.forEach((g, i) => {
      const v = typeof values === 'number' ? values : values[i];
      g.lr = g.lrScale !== undefined ? v * g.lrScale : v;
    });
  }

  protected warmupLr(t: number): number[] {
    return this.warmupSteps.map((s) => this.warmupLrInit + t * s);
  }

  protected isApplyNoise(t: number): boolean {
    const r = this.noiseRangeT;
    if (r === null) return false;
    if (Array.isArray(r)) return r[0] <= t && t < r[1];
    return t >= r;
  }

  protected calculateNoise(t: number): number {
    const rng = new Rng(this.noiseSeed + t);
    if (this.noiseType === 'normal') {
      for (;;) {
        const n = rng.normal();
        if (Math.abs(n) < this.noisePct) return n;
      }
    }
    return 2 * (rng.random() - 0.5) * this.noisePct;
  }
}

export interface CycleOptions extends SchedulerCommonOptions {
  tInitial: number;
  lrMin?: number;
  cycleMul?: number;
  cycleDecay?: number;
  cycleLimit?: number;
  warmupPrefix?: boolean;
}

/** Shared cycle bookkeeping of cosine / tanh / poly. */
abstract class CycleScheduler extends Scheduler {
  readonly tInitial: number;
  readonly lrMin: number;
  readonly cycleMul: number;
  readonly cycleDecay: number;
  readonly cycleLimit: number;
  readonly warmupPrefix: boolean;

  constructor(optimizer: Schedulable, opts: CycleOptions) {
    super(optimizer, opts);
    if (!(opts.tInitial > 0)) throw new UserError(`Invalid schedule length ${opts.tInitial}; it must be > 0.`);
    this.tInitial = opts.tInitial;
    this.lrMin = opts.lrMin ?? 0;
    if (!(this.lrMin >= 0)) throw new UserError(`Invalid minimum lr ${this.lrMin}; it must be >= 0.`);
    this.cycleMul = opts.cycleMul ?? 1;
    this.cycleDecay = opts.cycleDecay ?? 1;
    this.cycleLimit = opts.cycleLimit ?? 1;
    this.warmupPrefix = opts.warmupPrefix ?? false;
  }

  /** Cycle index i, its length T_i and the position t_cur inside it, for a post-warmup time t. */
  /**
   * The shared frame of the cyclic schedules: warmup below warmupT, lrMin after the last cycle, otherwise
   * `shape(lrMax, tCurr, tI)` with lrMax = base lr x cycleDecay^i for each group.
   */
  protected cycleLr(t: number, shape: (lrMax: number, tCurr: number, tI: number) => number): number[] {
    if (t < this.warmupT) return this.warmupLr(t);
    const { i, tI, tCurr } = this.cycle(t);
    if (!(i < this.cycleLimit)) return this.baseValues.map(() => this.lrMin);
    const gamma = Math.pow(this.cycleDecay, i);
    return this.baseValues.map((v) => shape(v * gamma, tCurr, tI));
  }

  protected cycle(t: number): { i: number; tI: number; tCurr: number } {
    if (this.warmupPrefix) t = t - this.warmupT;
    const T = this.tInitial;
    const mul = this.cycleMul;
    if (mul !== 1) {
      const i = Math.floor(Math.log(1 - (t / T) * (1 - mul)) / Math.log(mul));
      const tI = Math.pow(mul, i) * T;
      const tCurr = t - ((1 - Math.pow(mul, i)) / (1 - mul)) * T;
      return { i, tI, tCurr };
    }
    const i = Math.floor(t / T);
    return { i, tI: T, tCurr: t - T * i };
  }

  /** timm get_cycle_length: total length of `cycles` cycles (default cycleLimit). */
  getCycleLength(cycles = 0): number {
    cycles = Math.max(1, cycles || this.cycleLimit);
    if (this.cycleMul === 1.0) return this.tInitial * cycles;
    return Math.floor((-this.tInitial * (Math.pow(this.cycleMul, cycles) - 1)) / (1 - this.cycleMul));
  }
}

export interface CosineOptions extends CycleOptions {
  kDecay?: number;
}

/**
 * timm CosineLRScheduler: warmup lr = warmupLrInit + t*(base - warmupLrInit)/warmupT for t < warmupT, then
 * lr = lrMin + 0.5*(base*cycleDecay^i - lrMin)*(1 + cos(pi * t_cur^k / T_i^k)), and lrMin once i >= cycleLimit.
 */
export class CosineLRScheduler extends CycleScheduler {
  readonly kDecay: number;
  constructor(optimizer: Schedulable, opts: CosineOptions) {
    super(optimizer, opts);
    this.kDecay = opts.kDecay ?? 1.0;
    this.initWarmup();
  }

  protected getLr(t: number): number[] {
    const k = this.kDecay;
    return this.cycleLr(t, (lrMax, tCurr, tI) => this.lrMin + 0.5 * (lrMax - this.lrMin) * (1 + Math.cos((Math.PI * Math.pow(tCurr, k)) / Math.pow(tI, k))));
  }
}

export interface TanhOptions extends CycleOptions {
  lb?: number;
  ub?: number;
}

/** timm TanhLRScheduler: lr = lrMin + 0.5*(lrMax - lrMin)*(1 - tanh(lb*(1 - r) + ub*r)), r = t_cur/T_i. */
export class TanhLRScheduler extends CycleScheduler {
  readonly lb: number;
  readonly ub: number;
  constructor(optimizer: Schedulable, opts: TanhOptions) {
    super(optimizer, opts);
    this.lb = opts.lb ?? -7;
    this.ub = opts.ub ?? 3;
    if (!(this.lb < this.ub)) throw new UserError(`Invalid tanh bounds: lb ${this.lb} must be < ub ${this.ub}.`);
    // timm: without warmup_prefix the warmup ramps towards the value the schedule has at warmup_t.
    this.initWarmup(this.warmupPrefix ? this.baseValues : this.warmupT ? this.getLr(this.warmupT) : this.baseValues);
  }

  protected getLr(t: number): number[] {
    return this.cycleLr(t, (lrMax, tCurr, tI) => {
      const tr = tCurr / tI;
      return this.lrMin + 0.5 * (lrMax - this.lrMin) * (1 - Math.tanh(this.lb * (1 - tr) + this.ub * tr));
    });
  }
}

export interface PolyOptions extends CycleOptions {
  power?: number;
  kDecay?: number;
}

/** timm PolyLRScheduler: lr = lrMin + (lrMax - lrMin)*(1 - t_cur^k/T_i^k)^power. */
export class PolyLRScheduler extends CycleScheduler {
  readonly power: number;
  readonly kDecay: number;
  constructor(optimizer: Schedulable, opts: PolyOptions) {
    super(optimizer, opts);
    this.power = opts.power ?? 0.5;
    this.kDecay = opts.kDecay ?? 1.0;
    this.initWarmup();
  }

  protected getLr(t: number): number[] {
    const k = this.kDecay;
    return this.cycleLr(t, (lrMax, tCurr, tI) => this.lrMin + (lrMax - this.lrMin) * Math.pow(1 - Math.pow(tCurr, k) / Math.pow(tI, k), this.power));
  }
}

export interface StepOptions extends SchedulerCommonOptions {
  decayT: number;
  decayRate?: number;
}

/** timm StepLRScheduler: lr = base * decayRate^floor(t / decayT) after warmup. */
export class StepLRScheduler extends Scheduler {
  readonly decayT: number;
  readonly decayRate: number;
  constructor(optimizer: Schedulable, opts: StepOptions) {
    super(optimizer, opts);
    if (!(opts.decayT > 0)) throw new UserError(`Invalid decay interval ${opts.decayT}; it must be > 0.`);
    this.decayT = opts.decayT;
    this.decayRate = opts.decayRate ?? 1;
    this.initWarmup();
  }

  protected getLr(t: number): number[] {
    if (t < this.warmupT) return this.warmupLr(t);
    return this.baseValues.map((v) => v * Math.pow(this.decayRate, Math.floor(t / this.decayT)));
  }
}

export interface MultiStepOptions extends SchedulerCommonOptions {
  /** Milestones, sorted ascending. */
  decayT: number[];
  decayRate?: number;
}

/**
 * timm MultiStepLRScheduler: lr = base * decayRate^d, d = bisect_right(milestones, t + 1), i.e. the number
 * of milestones <= t + 1. (timm's "+1" means the decay already applies at epoch milestone - 1.)
 */
export class MultiStepLRScheduler extends Scheduler {
  readonly decayT: number[];
  readonly decayRate: number;
  constructor(optimizer: Schedulable, opts: MultiStepOptions) {
    super(optimizer, opts);
    this.decayT = [...opts.decayT];
    for (let i = 1; i < this.decayT.length; i++) {
      if (this.decayT[i] < this.decayT[i - 1]) throw new UserError('Decay milestones must be sorted in ascending order.');
    }
    this.decayRate = opts.decayRate ?? 1;
    this.initWarmup();
  }

  protected getLr(t: number): number[] {
    if (t < this.warmupT) return this.warmupLr(t);
    const d = bisectRight(this.decayT, t + 1);
    return this.baseValues.map((v) => v * Math.pow(this.decayRate, d));
  }
}

/** Python bisect.bisect_right on a sorted array. */
function bisectRight(a: readonly number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x < a[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * timm 0.6.11 PlateauLRScheduler (timm/scheduler/plateau_lr.py): linear warmup, then torch's ReduceLROnPlateau
 * on the eval metric (`--sched plateau`, `--patience-epochs`, `--decay-rate`, `--min-lr`):
 *
 *   step(epoch, metric):  epoch <= warmup_t -> lr = warmup_lr_init + epoch · (base - warmup_lr_init) / warmup_t
 *                         else: undo last epoch's noise, then ReduceLROnPlateau.step(metric): the metric improves
 *                         when it beats the best by a relative 1e-4 (mode 'max' for top-1, 'min' when the eval
 *                         metric is a loss); after more than `patience` epochs without improvement every group's
 *                         lr becomes max(lr · decay_rate, min_lr) (changes under 1e-8 are skipped) and the bad-epoch
 *                         count restarts; then noise (when in range) perturbs the lr for one epoch.
 *
 * Unlike the other schedules it has state (best metric, bad epochs), which timm does not save in checkpoints either:
 * a resumed run starts counting afresh from the lr stored in the optimizer state. Where timm fails on resume past the
 * warmup (ReduceLROnPlateau.step(None)), a step without a metric here leaves the lr as it is.
 */
export interface PlateauOptions extends SchedulerCommonOptions {
  decayRate?: number;
  patienceT?: number;
  threshold?: number;
  cooldownT?: number;
  lrMin?: number;
  mode?: 'min' | 'max';
}

export class PlateauLRScheduler extends Scheduler {
  readonly decayRate: number;
  readonly patienceT: number;
  readonly threshold: number;
  readonly cooldownT: number;
  readonly lrMin: number;
  readonly mode: 'min' | 'max';
  private best: number;
  private numBadEpochs = 0;
  private cooldownCounter = 0;
  private restoreLr: number[] | null = null;

  constructor(optimizer: Schedulable, opts: PlateauOptions) {
    super(optimizer, { ...opts, tInEpochs: true });
    this.decayRate = opts.decayRate ?? 0.1;
    this.patienceT = opts.patienceT ?? 10;
    this.threshold = opts.threshold ?? 1e-4;
    this.cooldownT = opts.cooldownT ?? 0;
    this.lrMin = opts.lrMin ?? 0;
    this.mode = opts.mode ?? 'max';
    if (!(this.decayRate < 1)) throw new UserError(`--decay-rate for the plateau schedule must be < 1, got ${this.decayRate}`);
    if (!Number.isInteger(this.patienceT) || this.patienceT < 0) throw new UserError(`--patience-epochs must be a whole number >= 0, got ${this.patienceT}`);
    this.best = this.mode === 'max' ? -Infinity : Infinity;
    this.initWarmup();
  }

  /** Only the warmup part is a function of t; after it the lr depends on the metrics seen. */
  protected getLr(t: number): number[] {
    return this.warmupLr(t);
  }

  private isBetter(a: number): boolean {
    return this.mode === 'max' ? a > this.best * (1 + this.threshold) : a < this.best * (1 - this.threshold);
  }

  override step(epoch: number, metric?: number): void {
    this.metric = metric;
    if (epoch <= this.warmupT) {
      this.updateGroups(this.warmupLr(epoch));
      return;
    }
    if (this.restoreLr) {
      this.optimizer.paramGroups.forEach((g, i) => (g.lr = this.restoreLr![i]));
      this.restoreLr = null;
    }
    if (metric === undefined || !Number.isFinite(metric)) return;
    if (this.isBetter(metric)) {
      this.best = metric;
      this.numBadEpochs = 0;
    } else {
      this.numBadEpochs++;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter--;
      this.numBadEpochs = 0;
    }
    if (this.numBadEpochs > this.patienceT) {
      for (const g of this.optimizer.paramGroups) {
        const next = Math.max(g.lr * this.decayRate, this.lrMin);
        if (g.lr - next > 1e-8) g.lr = next;
      }
      this.cooldownCounter = this.cooldownT;
      this.numBadEpochs = 0;
    }
    if (this.isApplyNoise(epoch)) {
      const noise = this.calculateNoise(epoch);
      this.restoreLr = this.optimizer.paramGroups.map((g) => g.lr);
      for (const g of this.optimizer.paramGroups) g.lr = g.lr + g.lr * noise;
    }
  }
}

export const SUPPORTED_SCHEDULERS = ['cosine', 'tanh', 'step', 'multistep', 'poly', 'plateau'] as const;

/** timm train.py's scheduler arguments (yargs camelCase of the flag names). Absent values take train.py defaults. */
export interface SchedulerArgs {
  sched: string;
  epochs: number;
  minLr?: number;
  warmupLr?: number;
  warmupEpochs?: number;
  cooldownEpochs?: number;
  /** `--lr-noise`: fractions of `epochs`; one value = start, two = [start, end). */
  lrNoise?: number | number[] | null;
  lrNoisePct?: number;
  lrNoiseStd?: number;
  seed?: number;
  lrCycleMul?: number;
  lrCycleDecay?: number;
  lrCycleLimit?: number;
  lrKDecay?: number;
  decayEpochs?: number;
  decayMilestones?: number[];
  decayRate?: number;
  /** `--patience-epochs` (plateau only). */
  patienceEpochs?: number;
  /** `--eval-metric`: the plateau schedule minimises when it names a loss, else maximises (timm). */
  evalMetric?: string;
}

/**
 * timm create_scheduler: returns the scheduler and the number of epochs to train
 * (cosine/tanh/poly: cycle length + cooldown epochs, e.g. 300 + 10 = 310; step/multistep: epochs).
 */
export function createScheduler(
  args: SchedulerArgs,
  optimizer: Schedulable,
): { scheduler: Scheduler; numEpochs: number } {
  const numEpochs = args.epochs;
  if (!(Number.isFinite(numEpochs) && numEpochs > 0)) {
    throw new UserError(`Invalid number of epochs ${args.epochs}; it must be > 0.`);
  }
  let noiseRangeT: number | [number, number] | null = null;
  if (args.lrNoise !== undefined && args.lrNoise !== null) {
    if (Array.isArray(args.lrNoise)) {
      const r = args.lrNoise.map((n) => n * numEpochs);
      if (r.length === 1) noiseRangeT = r[0];
      else if (r.length === 2) noiseRangeT = [r[0], r[1]];
      else throw new UserError('--lr-noise takes one or two values.');
    } else {
      noiseRangeT = args.lrNoise * numEpochs;
    }
  }
  const noise: NoiseOptions = {
    noiseRangeT,
    noisePct: args.lrNoisePct ?? 0.67,
    noiseStd: args.lrNoiseStd ?? 1.0,
    noiseSeed: args.seed ?? 42,
  };
  const cycle = {
    cycleMul: args.lrCycleMul ?? 1.0,
    cycleDecay: args.lrCycleDecay ?? 0.1, // create_scheduler's getattr default (train.py's flag default is 0.5)
    cycleLimit: args.lrCycleLimit ?? 1,
  };
  const minLr = args.minLr ?? 1e-5;
  const warmupLrInit = args.warmupLr ?? 1e-6;
  const warmupT = args.warmupEpochs ?? 5;
  const cooldown = args.cooldownEpochs ?? 10;
  const decayRate = args.decayRate ?? 0.1;

  // Every schedule warms up the same way and shares the noise settings; the cyclic ones also share the cycle.
  const common = { warmupLrInit, warmupT, ...noise };
  const cyclic = { tInitial: numEpochs, lrMin: minLr, ...common, ...cycle };
  const withCooldown = (s: CycleScheduler) => ({ scheduler: s, numEpochs: s.getCycleLength() + cooldown });
  switch (args.sched) {
    case 'cosine':
      return withCooldown(new CosineLRScheduler(optimizer, { ...cyclic, kDecay: args.lrKDecay ?? 1.0 }));
    case 'tanh':
      return withCooldown(new TanhLRScheduler(optimizer, { ...cyclic, tInEpochs: true }));
    case 'poly':
      // timm overloads decay_rate as the polynomial power
      return withCooldown(new PolyLRScheduler(optimizer, { ...cyclic, power: decayRate, kDecay: args.lrKDecay ?? 1.0 }));
    case 'step':
      return { scheduler: new StepLRScheduler(optimizer, { ...common, decayT: args.decayEpochs ?? 100, decayRate }), numEpochs };
    case 'multistep':
      return { scheduler: new MultiStepLRScheduler(optimizer, { ...common, decayT: args.decayMilestones ?? [30, 60], decayRate }), numEpochs };
    case 'plateau':
      return {
        scheduler: new PlateauLRScheduler(optimizer, {
          ...common, decayRate, patienceT: args.patienceEpochs ?? 10, lrMin: minLr, cooldownT: 0,
          mode: (args.evalMetric ?? 'top1').includes('loss') ? 'min' : 'max',
        }),
        numEpochs,
      };
    default:
      throw new UserError(`Unknown or unsupported scheduler '${args.sched}'; supported: ${SUPPORTED_SCHEDULERS.join(', ')}.`);
  }
}
