/**
 * The typed configuration of a training run, built once from the parsed train.py flags (src/cli/options.ts
 * TRAIN_FLAGS): runTraining and its helpers read fields, never string keys. The parsed record itself stays in `args`:
 * it is timm's `args` (args.yaml and every checkpoint's `args` are written from it, byte for byte as before), and
 * train.py updates it at run time where timm does (`args.num_classes`).
 *
 * The data side follows timm 0.6.11's split: the model-dependent preprocessing (input size, interpolation, mean, std,
 * crop) is resolved from `dataOverrides` and the model's defaults by src/data/config.ts (resolve_data_config); the
 * loader settings (augmentation, batch size, workers) are the fields below (create_loader's arguments).
 *
 * A flag that train.py leaves as None is `undefined` here; numbers and strings are the parser's values (its table
 * checks types and choices), so reading a field is exactly what reading the record was.
 */
import type { DataConfigOverrides } from '../data/config.js';

/** The parsed flags as the parser returns them (keys are train.py's `dest` names; `__yaml` is ours). */
export type Args = Record<string, unknown>;

export interface TrainConfig {
  /** timm's args: written to args.yaml (its text as parsed: `__yaml`) and into every checkpoint. */
  readonly args: Args;

  // ---- dataset
  dataDir: string;
  /** --dataset: only '' or 'folder' (ImageNet-style folders) is supported. */
  dataset: string;
  trainSplit: string;
  valSplit: string;
  classMap: string;
  /** The inputs of resolve_data_config (img_size, input_size, crop_pct, mean, std, interpolation). */
  dataOverrides: DataConfigOverrides;

  // ---- model
  model: string;
  pretrained: boolean;
  pretrainedPath: string;
  initialCheckpoint: string;
  resume: string;
  noResumeOpt: boolean;
  numClasses: number | undefined;
  /** --drop-path, else --drop-connect, else undefined. */
  dropPath: number | undefined;
  backend: string | undefined;
  batchSize: number;
  validationBatchSize: number | undefined;
  gradAccumSteps: number;

  // ---- optimizer
  opt: string;
  optEps: number | undefined;
  optBetas: [number, number] | undefined;
  momentum: number;
  weightDecay: number;
  clipGrad: number | undefined;
  clipMode: string;
  layerDecay: number | undefined;

  // ---- learning rate schedule
  sched: string;
  lr: number;
  lrNoise: number[] | null;
  lrNoisePct: number;
  lrNoiseStd: number;
  lrCycleMul: number;
  lrCycleDecay: number;
  lrCycleLimit: number;
  lrKDecay: number;
  warmupLr: number;
  minLr: number;
  epochs: number;
  startEpoch: number | undefined;
  decayMilestones: number[];
  decayEpochs: number;
  warmupEpochs: number;
  cooldownEpochs: number;
  patienceEpochs: number;
  decayRate: number;

  // ---- augmentation and regularization (create_loader / Mixup / the loss)
  noAug: boolean;
  scale: [number, number];
  ratio: [number, number];
  hflip: number;
  vflip: number;
  colorJitter: number;
  aa: string;
  augRepeats: number;
  augSplits: number;
  jsdLoss: boolean;
  bceLoss: boolean;
  bceTargetThresh: number | undefined;
  reprob: number;
  remode: string;
  recount: number;
  resplit: boolean;
  mixup: number;
  cutmix: number;
  cutmixMinmax: [number, number] | null;
  mixupProb: number;
  mixupSwitchProb: number;
  mixupMode: string;
  mixupOffEpoch: number;
  smoothing: number;
  trainInterpolation: string;

  // ---- EMA
  modelEma: boolean;
  modelEmaForceCpu: boolean;
  modelEmaDecay: number;

  // ---- misc
  seed: number;
  workerSeeding: string;
  logInterval: number;
  recoveryInterval: number;
  checkpointHist: number;
  workers: number;
  saveImages: boolean;
  /** --amp, --native-amp or --apex-amp. */
  amp: boolean;
  noPrefetcher: boolean;
  output: string;
  experiment: string;
  evalMetric: string;
  tta: number;
  distBn: string;
  maxImagePixels: number | undefined;
}

const num = (a: Args, k: string): number => a[k] as number;
const optNum = (a: Args, k: string): number | undefined => (a[k] === null || a[k] === undefined ? undefined : (a[k] as number));
const str = (a: Args, k: string): string => (a[k] ?? '') as string;
const optStr = (a: Args, k: string): string | undefined => (a[k] as string | null) ?? undefined;
const bool = (a: Args, k: string): boolean => a[k] === true;
const pair = (a: Args, k: string): [number, number] | undefined => {
  const v = a[k] as number[] | null | undefined;
  return v ? [v[0], v[1]] : undefined;
};

/** The typed configuration of the parsed flags (`args` is kept as it is, by reference). */
export function trainConfig(args: Args): TrainConfig {
  return {
    args,
    dataDir: str(args, 'data_dir'),
    dataset: str(args, 'dataset'),
    trainSplit: str(args, 'train_split'),
    valSplit: str(args, 'val_split'),
    classMap: str(args, 'class_map'),
    dataOverrides: {
      imgSize: optNum(args, 'img_size'),
      inputSize: (args.input_size as number[] | null) ?? undefined,
      cropPct: optNum(args, 'crop_pct'),
      mean: (args.mean as number[] | null) ?? undefined,
      std: (args.std as number[] | null) ?? undefined,
      interpolation: str(args, 'interpolation') || undefined,
    },
    model: str(args, 'model'),
    pretrained: bool(args, 'pretrained'),
    pretrainedPath: str(args, 'pretrained_path'),
    initialCheckpoint: str(args, 'initial_checkpoint'),
    resume: str(args, 'resume'),
    noResumeOpt: bool(args, 'no_resume_opt'),
    numClasses: optNum(args, 'num_classes'),
    dropPath: optNum(args, 'drop_path') ?? optNum(args, 'drop_connect'),
    backend: optStr(args, 'backend'),
    batchSize: num(args, 'batch_size'),
    validationBatchSize: optNum(args, 'validation_batch_size'),
    gradAccumSteps: num(args, 'grad_accum_steps'),
    opt: str(args, 'opt'),
    optEps: optNum(args, 'opt_eps'),
    optBetas: pair(args, 'opt_betas'),
    momentum: num(args, 'momentum'),
    weightDecay: num(args, 'weight_decay'),
    clipGrad: optNum(args, 'clip_grad'),
    clipMode: str(args, 'clip_mode'),
    layerDecay: optNum(args, 'layer_decay'),
    sched: str(args, 'sched'),
    lr: num(args, 'lr'),
    lrNoise: (args.lr_noise as number[] | null) ?? null,
    lrNoisePct: num(args, 'lr_noise_pct'),
    lrNoiseStd: num(args, 'lr_noise_std'),
    lrCycleMul: num(args, 'lr_cycle_mul'),
    lrCycleDecay: num(args, 'lr_cycle_decay'),
    lrCycleLimit: num(args, 'lr_cycle_limit'),
    lrKDecay: num(args, 'lr_k_decay'),
    warmupLr: num(args, 'warmup_lr'),
    minLr: num(args, 'min_lr'),
    epochs: num(args, 'epochs'),
    startEpoch: optNum(args, 'start_epoch'),
    decayMilestones: args.decay_milestones as number[],
    decayEpochs: num(args, 'decay_epochs'),
    warmupEpochs: num(args, 'warmup_epochs'),
    cooldownEpochs: num(args, 'cooldown_epochs'),
    patienceEpochs: num(args, 'patience_epochs'),
    decayRate: num(args, 'decay_rate'),
    noAug: bool(args, 'no_aug'),
    scale: args.scale as [number, number],
    ratio: args.ratio as [number, number],
    hflip: num(args, 'hflip'),
    vflip: num(args, 'vflip'),
    colorJitter: num(args, 'color_jitter'),
    aa: str(args, 'aa'),
    augRepeats: num(args, 'aug_repeats'),
    augSplits: num(args, 'aug_splits'),
    jsdLoss: bool(args, 'jsd_loss'),
    bceLoss: bool(args, 'bce_loss'),
    bceTargetThresh: optNum(args, 'bce_target_thresh'),
    reprob: num(args, 'reprob'),
    remode: str(args, 'remode'),
    recount: num(args, 'recount'),
    resplit: bool(args, 'resplit'),
    mixup: num(args, 'mixup'),
    cutmix: num(args, 'cutmix'),
    cutmixMinmax: (args.cutmix_minmax as [number, number] | null) ?? null,
    mixupProb: num(args, 'mixup_prob'),
    mixupSwitchProb: num(args, 'mixup_switch_prob'),
    mixupMode: str(args, 'mixup_mode'),
    mixupOffEpoch: num(args, 'mixup_off_epoch'),
    smoothing: num(args, 'smoothing'),
    trainInterpolation: str(args, 'train_interpolation'),
    modelEma: bool(args, 'model_ema'),
    modelEmaForceCpu: bool(args, 'model_ema_force_cpu'),
    modelEmaDecay: num(args, 'model_ema_decay'),
    seed: num(args, 'seed'),
    workerSeeding: str(args, 'worker_seeding'),
    logInterval: num(args, 'log_interval'),
    recoveryInterval: num(args, 'recovery_interval'),
    checkpointHist: num(args, 'checkpoint_hist'),
    workers: num(args, 'workers'),
    saveImages: bool(args, 'save_images'),
    amp: bool(args, 'amp') || bool(args, 'native_amp') || bool(args, 'apex_amp'),
    noPrefetcher: bool(args, 'no_prefetcher'),
    output: str(args, 'output'),
    experiment: str(args, 'experiment'),
    evalMetric: str(args, 'eval_metric'),
    tta: num(args, 'tta'),
    distBn: str(args, 'dist_bn'),
    maxImagePixels: optNum(args, 'max_image_pixels'),
  };
}
