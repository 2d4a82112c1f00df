/**
 * The data config, as timm/data/config.py: one place resolves it (`resolveDataConfig`, timm's
 * `resolve_data_config`: flags over the model's default_cfg over timm's defaults) and one place prints it
 * (`describeDataConfig`), for mambaout-train and mambaout-validate alike.
 *
 *   Data processing configuration for current model + dataset:
 *   \tinput_size: (3, 224, 224)
 *   \tinterpolation: bicubic
 *   \tmean: (0.485, 0.456, 0.406)
 *   \tstd: (0.229, 0.224, 0.225)
 *   \tcrop_pct: 1.0
 *
 * (timm logs `'\t%s: %s' % (n, str(v))` for each key: tuples of Python floats, so 1 prints as 1.0.)
 */
import { UserError } from '../errors.js';
import { pyRepr, pyTuple } from '../utils/pyformat.js';
import { INTERPOLATIONS, type Interpolation } from './transforms/resize.js';

export const IMAGENET_DEFAULT_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_DEFAULT_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];
export const DEFAULT_CROP_PCT = 0.875;

/** Resolved data config (timm `data_config`). */
export interface DataConfig {
  /** [channels, height, width]; channels is always 3 here. */
  inputSize: [number, number, number];
  interpolation: Interpolation;
  mean: [number, number, number];
  std: [number, number, number];
  cropPct: number;
}

/** A model's pretrained-config defaults (timm `default_cfg`), all optional. */
export interface ModelDataDefaults {
  inputSize?: readonly [number, number, number];
  testInputSize?: readonly [number, number, number];
  interpolation?: string;
  mean?: readonly number[];
  std?: readonly number[];
  cropPct?: number;
  testCropPct?: number;
}

/** MambaOut's `_cfg` (models/mambaout.py). */
export const MAMBAOUT_DATA_DEFAULTS: Readonly<ModelDataDefaults> = Object.freeze({
  inputSize: [3, 224, 224] as const,
  interpolation: 'bicubic',
  mean: IMAGENET_DEFAULT_MEAN,
  std: IMAGENET_DEFAULT_STD,
  cropPct: 1.0,
});

/** User overrides (CLI flags); null/undefined/'' mean "not given", as argparse's None/''. */
export interface DataConfigOverrides {
  /** --img-size */
  imgSize?: number | null;
  /** --input-size C H W (beats --img-size) */
  inputSize?: readonly number[] | null;
  /** --interpolation ('' -> model default) */
  interpolation?: string | null;
  /** --mean (one value is broadcast to all channels) */
  mean?: readonly number[] | null;
  /** --std (one value is broadcast) */
  std?: readonly number[] | null;
  /** --crop-pct */
  cropPct?: number | null;
  /** prefer the model's test_input_size / test_crop_pct (validate.py without --use-train-size) */
  useTestSize?: boolean;
}

const given = <T>(v: T | null | undefined): v is T => v !== null && v !== undefined;

/** timm `resolve_data_config` (plus `crop_pct or DEFAULT_CROP_PCT` of the eval transform). */
export function resolveDataConfig(model: ModelDataDefaults = {}, args: DataConfigOverrides = {}): DataConfig {
  let inChans = 3;
  let inputSize: readonly number[] = [inChans, 224, 224];
  if (given(args.inputSize)) {
    if (args.inputSize.length !== 3) {
      throw new UserError(`--input-size takes 3 numbers (channels height width), got ${args.inputSize.length}.`);
    }
    inputSize = args.inputSize;
    inChans = inputSize[0];
  } else if (given(args.imgSize)) {
    inputSize = [inChans, args.imgSize, args.imgSize];
  } else if (args.useTestSize && model.testInputSize) {
    inputSize = model.testInputSize;
  } else if (model.inputSize) {
    inputSize = model.inputSize;
  }
  if (inputSize[0] !== 3) {
    throw new UserError(`only 3-channel (RGB) input is supported, but the input size asks for ${inputSize[0]} channels.`);
  }
  for (const v of inputSize.slice(1)) {
    if (!Number.isInteger(v) || v <= 0) throw new UserError(`image size must be a positive integer, got ${v}.`);
  }

  let interpolation = 'bicubic';
  if (args.interpolation) interpolation = args.interpolation;
  else if (model.interpolation) interpolation = model.interpolation;
  if (!(INTERPOLATIONS as readonly string[]).includes(interpolation)) {
    throw new UserError(
      `unknown interpolation '${interpolation}' for evaluation; use one of ${INTERPOLATIONS.join(', ')}.`,
    );
  }

  const channels = (name: string, v: readonly number[] | null | undefined, def: readonly number[] | undefined,
    fallback: readonly number[]): [number, number, number] => {
    let r: readonly number[] = fallback;
    if (given(v)) {
      r = v.length === 1 ? [v[0], v[0], v[0]] : v;
      if (r.length !== inChans) throw new UserError(`--${name} takes 1 or ${inChans} values, got ${v.length}.`);
    } else if (def) {
      r = def;
    }
    if (r.length !== 3 || r.some((x) => !Number.isFinite(x))) {
      throw new UserError(`${name} must be 3 finite numbers, got ${JSON.stringify(r)}.`);
    }
    return [r[0], r[1], r[2]];
  };
  const mean = channels('mean', args.mean, model.mean, IMAGENET_DEFAULT_MEAN);
  const std = channels('std', args.std, model.std, IMAGENET_DEFAULT_STD);
  if (std.some((s) => s === 0)) throw new UserError('std must not contain 0.');

  let cropPct = DEFAULT_CROP_PCT;
  if (given(args.cropPct)) cropPct = args.cropPct;
  else if (args.useTestSize && given(model.testCropPct)) cropPct = model.testCropPct;
  else if (given(model.cropPct)) cropPct = model.cropPct;
  // transforms_imagenet_eval: `crop_pct = crop_pct or DEFAULT_CROP_PCT`
  if (!cropPct) cropPct = DEFAULT_CROP_PCT;
  if (!(cropPct > 0) || !Number.isFinite(cropPct)) throw new UserError(`crop-pct must be a positive number, got ${cropPct}.`);

  return {
    inputSize: [3, inputSize[1], inputSize[2]],
    interpolation: interpolation as Interpolation,
    mean,
    std,
    cropPct,
  };
}

/** timm's verbose resolve_data_config output, one line per entry (the caller logs them). */
export function describeDataConfig(cfg: DataConfig): string[] {
  return [
    'Data processing configuration for current model + dataset:',
    `\tinput_size: ${pyTuple(cfg.inputSize, true)}`,
    `\tinterpolation: ${cfg.interpolation}`,
    `\tmean: ${pyTuple(cfg.mean)}`,
    `\tstd: ${pyTuple(cfg.std)}`,
    `\tcrop_pct: ${pyRepr(cfg.cropPct)}`,
  ];
}
