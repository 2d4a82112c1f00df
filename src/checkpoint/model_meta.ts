/**
 * What a checkpoint says about the model inside it, so that `--checkpoint F` alone is enough to predict, validate,
 * export or serve it: architecture, number of classes, class names and the eval preprocessing (input size, mean/std,
 * interpolation, crop).
 *
 * Shape: timm's Hugging Face `config.json` (timm/models/_hub.py save_config_for_hf), so a timm user reads it without
 * a legend:
 *
 *   { "architecture": "mambaout_femto", "num_classes": 4, "num_features": 288, "global_pool": "avg",
 *     "label_names": ["cat", "dog", ...],
 *     "pretrained_cfg": { "input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [...], "std": [...],
 *                         "crop_pct": 1.0, "crop_mode": "center", "num_classes": 4 } }
 *
 * Where it is stored:
 * - our `.safetensors` files (training checkpoints and `mambaout-export --format safetensors`): `__metadata__`
 *   key `config`, the JSON text above;
 * - ONNX exports: flat `metadata_props` (ONNX_META_KEYS below), readable by any runtime
 *   (`onnx.load(f).metadata_props` in Python, `InferenceSession`'s model metadata in others);
 * - timm `.pth.tar` files have none; `fromTimmCheckpoint` rebuilds what their `arch` and `args` say.
 *
 * Everything read from a file is checked (types, ranges, sizes): a hostile file gets a one-sentence error.
 */
import { UserError } from '../errors.js';

export interface PretrainedCfgMeta {
  input_size: [number, number, number];
  interpolation: string;
  mean: [number, number, number];
  std: [number, number, number];
  crop_pct: number;
  crop_mode: 'center';
  num_classes: number;
}

export interface ModelMeta {
  architecture: string;
  num_classes: number;
  num_features?: number;
  global_pool?: string;
  /** Class name of output index i; absent when the checkpoint does not know them. */
  label_names?: string[];
  pretrained_cfg: PretrainedCfgMeta;
}

/** safetensors `__metadata__` key holding the JSON text. */
export const SAFETENSORS_META_KEY = 'config';

/** ONNX metadata_props written by mambaout-export (values are strings; JSON where noted). */
export const ONNX_META_KEYS = {
  architecture: 'architecture', // model name, e.g. mambaout_femto
  numClasses: 'num_classes', // decimal integer
  classNames: 'class_names', // JSON array of strings, index = output column
  inputSize: 'input_size', // JSON [3, H, W]
  mean: 'mean', // JSON [r, g, b], for pixel / 255
  std: 'std', // JSON [r, g, b]
  interpolation: 'interpolation', // bicubic | bilinear | nearest | ...
  cropPct: 'crop_pct', // Python float text, e.g. 1.0
  cropMode: 'crop_mode', // center
} as const;

/** Limits for values read from files. */
const MAX_CLASSES = 1_000_000;
const MAX_NAME_CHARS = 1000;
const MAX_SIDE = 16384;
const MAX_JSON_CHARS = 64 * 1024 * 1024;

export interface ModelMetaInput {
  architecture: string;
  numClasses: number;
  numFeatures?: number;
  classNames?: readonly string[] | null;
  inputSize: readonly [number, number, number] | readonly number[];
  interpolation: string;
  mean: readonly number[];
  std: readonly number[];
  cropPct: number;
}

export function buildModelMeta(m: ModelMetaInput): ModelMeta {
  const meta: ModelMeta = {
    architecture: m.architecture,
    num_classes: m.numClasses,
    ...(m.numFeatures !== undefined ? { num_features: m.numFeatures } : {}),
    global_pool: 'avg',
    pretrained_cfg: {
      input_size: [m.inputSize[0], m.inputSize[1], m.inputSize[2]],
      interpolation: m.interpolation,
      mean: [m.mean[0], m.mean[1], m.mean[2]],
      std: [m.std[0], m.std[1], m.std[2]],
      crop_pct: m.cropPct,
      crop_mode: 'center',
      num_classes: m.numClasses,
    },
  };
  if (m.classNames && m.classNames.length === m.numClasses) meta.label_names = [...m.classNames];
  return checkModelMeta(meta, 'model metadata');
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(source: string, what: string): never {
  throw new UserError(`${source} has unusable model metadata: ${what}`);
}

function triple(v: unknown, source: string, name: string, check: (x: number) => boolean): [number, number, number] {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && check(x))) {
    bad(source, `${name} must be 3 numbers in range, got ${JSON.stringify(v)?.slice(0, 80)}`);
  }
  return [v[0], v[1], v[2]];
}

/** Validate a parsed metadata object (from our JSON or rebuilt from ONNX props); returns a clean copy. */
export function checkModelMeta(v: unknown, source: string): ModelMeta {
  if (!isObj(v)) bad(source, 'not a JSON object');
  const arch = v.architecture;
  if (typeof arch !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(arch)) bad(source, 'architecture is not a model name');
  const nc = v.num_classes;
  if (!Number.isSafeInteger(nc) || (nc as number) < 1 || (nc as number) > MAX_CLASSES) bad(source, `num_classes must be a whole number from 1 to ${MAX_CLASSES}`);
  const numClasses = nc as number;
  const pc = v.pretrained_cfg;
  if (!isObj(pc)) bad(source, 'pretrained_cfg is missing');
  const inputSize = triple(pc.input_size, source, 'input_size', (x) => Number.isInteger(x) && x >= 1 && x <= MAX_SIDE);
  if (inputSize[0] !== 3) bad(source, 'input_size must have 3 channels');
  const interpolation = pc.interpolation;
  if (typeof interpolation !== 'string' || !/^[a-z]{1,20}$/.test(interpolation)) bad(source, 'interpolation is not a filter name');
  const mean = triple(pc.mean, source, 'mean', (x) => x >= -10 && x <= 10);
  const std = triple(pc.std, source, 'std', (x) => x > 0 && x <= 10);
  const cropPct = pc.crop_pct;
  if (typeof cropPct !== 'number' || !(cropPct > 0 && cropPct <= 4)) bad(source, 'crop_pct must be a number in (0, 4]');
  if (pc.crop_mode !== undefined && pc.crop_mode !== 'center') bad(source, `crop_mode '${String(pc.crop_mode).slice(0, 20)}' is not supported (only center)`);
  let labelNames: string[] | undefined;
  if (v.label_names !== undefined && v.label_names !== null) {
    const names = v.label_names;
    if (!Array.isArray(names) || names.length !== numClasses) bad(source, `label_names must list ${numClasses} class names`);
    for (const n of names as unknown[]) {
      if (typeof n !== 'string' || n.length > MAX_NAME_CHARS) bad(source, `class names must be strings of at most ${MAX_NAME_CHARS} characters`);
    }
    labelNames = [...(names as string[])];
  }
  // timm's key order: architecture, num_classes, num_features, global_pool, label_names, pretrained_cfg
  return {
    architecture: arch as string,
    num_classes: numClasses,
    ...(Number.isSafeInteger(v.num_features) ? { num_features: v.num_features as number } : {}),
    global_pool: 'avg',
    ...(labelNames ? { label_names: labelNames } : {}),
    pretrained_cfg: { input_size: inputSize, interpolation: interpolation as string, mean, std, crop_pct: cropPct, crop_mode: 'center', num_classes: numClasses },
  };
}

/** Parse the JSON text of a safetensors `config` entry. */
export function parseModelMeta(text: string, source: string): ModelMeta {
  if (text.length > MAX_JSON_CHARS) bad(source, 'the metadata text is too large');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    bad(source, 'not valid JSON');
  }
  return checkModelMeta(v, source);
}

/** The metadata of a safetensors file's `__metadata__`, or null when it has none. */
export function modelMetaFromSafetensors(metadata: Record<string, string> | null | undefined, source: string): ModelMeta | null {
  const text = metadata?.[SAFETENSORS_META_KEY];
  return typeof text === 'string' ? parseModelMeta(text, source) : null;
}

/** Python's repr of a float for metadata text ('1.0', '0.875'). */
function floatText(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/** ONNX metadata_props entries (see ONNX_META_KEYS). */
export function onnxMetadataProps(m: ModelMeta): { key: string; value: string }[] {
  const K = ONNX_META_KEYS;
  const props: { key: string; value: string }[] = [
    { key: K.architecture, value: m.architecture },
    { key: K.numClasses, value: String(m.num_classes) },
    { key: K.inputSize, value: JSON.stringify(m.pretrained_cfg.input_size) },
    { key: K.mean, value: JSON.stringify(m.pretrained_cfg.mean) },
    { key: K.std, value: JSON.stringify(m.pretrained_cfg.std) },
    { key: K.interpolation, value: m.pretrained_cfg.interpolation },
    { key: K.cropPct, value: floatText(m.pretrained_cfg.crop_pct) },
    { key: K.cropMode, value: m.pretrained_cfg.crop_mode },
  ];
  if (m.label_names) props.push({ key: K.classNames, value: JSON.stringify(m.label_names) });
  return props;
}

/** Rebuild (and check) the metadata from ONNX metadata_props; null when the model carries none. */
export function modelMetaFromOnnxProps(props: readonly { key?: string | null; value?: string | null }[], source: string): ModelMeta | null {
  const get = (k: string) => props.find((p) => p.key === k)?.value ?? undefined;
  const K = ONNX_META_KEYS;
  if (get(K.architecture) === undefined) return null;
  const json = (k: string): unknown => {
    const t = get(k);
    if (t === undefined) return undefined;
    if (t.length > MAX_JSON_CHARS) bad(source, `${k} is too large`);
    try {
      return JSON.parse(t);
    } catch {
      return bad(source, `${k} is not valid JSON`);
    }
  };
  return checkModelMeta(
    {
      architecture: get(K.architecture),
      num_classes: Number(get(K.numClasses)),
      label_names: json(K.classNames),
      pretrained_cfg: {
        input_size: json(K.inputSize),
        mean: json(K.mean),
        std: json(K.std),
        interpolation: get(K.interpolation),
        crop_pct: Number(get(K.cropPct)),
        crop_mode: get(K.cropMode),
      },
    },
    source,
  );
}

/** Model defaults a metadata record stands in for (the shape of registry DefaultCfg / data ModelDataDefaults). */
export function metaDataDefaults(m: ModelMeta): {
  inputSize: [number, number, number];
  interpolation: string;
  mean: [number, number, number];
  std: [number, number, number];
  cropPct: number;
} {
  const c = m.pretrained_cfg;
  return { inputSize: [...c.input_size], interpolation: c.interpolation, mean: [...c.mean], std: [...c.std], cropPct: c.crop_pct };
}
