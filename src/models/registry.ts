/**
 * Model registry: the five MambaOut sizes of the paper plus a tiny CI model, with timm-style default configs.
 */
import { UserError } from '../errors.js';
import type { ExpectedModel } from '../checkpoint/types.js';
import { didYouMean } from '../utils/suggest.js';

export interface DefaultCfg {
  url: string;
  numClasses: number;
  inputSize: [number, number, number];
  cropPct: number;
  interpolation: string;
  mean: [number, number, number];
  std: [number, number, number];
  /** Expected parameter count of the 1000-class model (timm-reference §11.1). */
  paramCount?: number;
}

/** The registered model names, in listing order. */
export const MODEL_NAMES = ['mambaout_femto', 'mambaout_kobe', 'mambaout_tiny', 'mambaout_small', 'mambaout_base', 'mambaout_test'] as const;

/** A registered model name: the typings tell 'mambaout_femto' from any string (createModel takes only these). */
export type ModelName = (typeof MODEL_NAMES)[number];

/** Whether `s` names a registered model (narrows a CLI or config string to ModelName). */
export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}

export interface ModelConfig {
  name: ModelName;
  depths: number[];
  dims: number[];
  defaultCfg: DefaultCfg;
}

/**
 * The model every CLI uses when neither --model nor a checkpoint names one. A stated deviation from timm, whose
 * train.py defaults to resnet50 and validate.py to dpn92: neither exists here.
 */
export const DEFAULT_MODEL = 'mambaout_femto';

const RELEASE = 'https://github.com/yuweihao/MambaOut/releases/download/model';
const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];

function cfg(name: ModelName, numClasses = 1000, paramCount?: number): DefaultCfg {
  return {
    url: `${RELEASE}/${name}.pth`,
    numClasses,
    inputSize: [3, 224, 224],
    cropPct: 1.0,
    interpolation: 'bicubic',
    mean: IMAGENET_MEAN,
    std: IMAGENET_STD,
    paramCount,
  };
}

export const MODEL_CONFIGS: Readonly<Record<ModelName, ModelConfig>> = Object.freeze({
  mambaout_femto: { name: 'mambaout_femto', depths: [3, 3, 9, 3], dims: [48, 96, 192, 288], defaultCfg: cfg('mambaout_femto', 1000, 7_304_536) },
  mambaout_kobe: { name: 'mambaout_kobe', depths: [3, 3, 15, 3], dims: [48, 96, 192, 288], defaultCfg: cfg('mambaout_kobe', 1000, 9_141_208) },
  mambaout_tiny: { name: 'mambaout_tiny', depths: [3, 3, 9, 3], dims: [96, 192, 384, 576], defaultCfg: cfg('mambaout_tiny', 1000, 26_545_096) },
  mambaout_small: { name: 'mambaout_small', depths: [3, 4, 27, 3], dims: [96, 192, 384, 576], defaultCfg: cfg('mambaout_small', 1000, 48_488_072) },
  mambaout_base: { name: 'mambaout_base', depths: [3, 4, 27, 3], dims: [128, 256, 512, 768], defaultCfg: cfg('mambaout_base', 1000, 84_813_092) },
  // CI model: the configuration of the micro fixture (no released weights).
  mambaout_test: {
    name: 'mambaout_test',
    depths: [1, 1, 2, 1],
    dims: [8, 16, 24, 32],
    defaultCfg: { ...cfg('mambaout_test', 10), url: '' },
  },
});

export function listModels(filter?: string): ModelName[] {
  const names = [...MODEL_NAMES];
  if (!filter) return names;
  const re = new RegExp('^' + filter.split('*').map(escapeRe).join('.*') + '$');
  return names.filter((n) => re.test(n));
}

function escapeRe(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}

export function getModelConfig(name: string): ModelConfig {
  const c = isModelName(name) ? MODEL_CONFIGS[name] : undefined;
  if (!c) {
    throw new UserError(`unknown model '${name}'${didYouMean(name, listModels())}; known models: ${listModels().join(', ')}`);
  }
  return c;
}

/**
 * The registered model whose shapes a bare state dict has (stage widths and block counts), or null. Lets a plain
 * `.pth` / `.safetensors` state dict (e.g. a release file) name its architecture without --model.
 */
export function architectureOf(sd: ReadonlyMap<string, { shape: readonly number[] }>): string | null {
  for (const [name, c] of Object.entries(MODEL_CONFIGS)) {
    const widths = c.dims.every((d, i) => sd.get(i === 0 ? 'downsample_layers.0.conv2.weight' : `downsample_layers.${i}.conv.weight`)?.shape[0] === d);
    const blocks = c.depths.every((n, st) => sd.has(`stages.${st}.${n - 1}.fc1.weight`) && !sd.has(`stages.${st}.${n}.fc1.weight`));
    if (widths && blocks) return name;
  }
  return null;
}

/**
 * The architecture a checkpoint without our metadata holds: its timm `arch` when that is one of ours, else what its
 * shapes say, else the `arch` as written (an unknown name is then reported), else null.
 */
export function namedArchitecture(arch: string | null | undefined, sd: ReadonlyMap<string, { shape: readonly number[] }>): string | null {
  if (arch && isModelName(arch)) return arch;
  return architectureOf(sd) ?? arch ?? null;
}

/**
 * PyTorch state-dict shapes of a MambaOut configuration, in state-dict order (the shapes of §11.3). With
 * `numClasses` null, the class dimension of head.fc2 is -1 (any): what a checkpoint reader can check before it
 * knows how many classes the file was trained for.
 */
export function stateDictShapes(depths: readonly number[], dims: readonly number[], numClasses: number | null): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const c0 = dims[0];
  const half = Math.floor(c0 / 2);
  const lin = (p: string, o: number, i: number) => out.set(`${p}.weight`, [o, i]).set(`${p}.bias`, [o]);
  const norm = (p: string, c: number) => out.set(`${p}.weight`, [c]).set(`${p}.bias`, [c]);
  const conv = (p: string, o: number, i: number, k: number) => out.set(`${p}.weight`, [o, i, k, k]).set(`${p}.bias`, [o]);
  conv('downsample_layers.0.conv1', half, 3, 3);
  norm('downsample_layers.0.norm1', half);
  conv('downsample_layers.0.conv2', c0, half, 3);
  norm('downsample_layers.0.norm2', c0);
  for (let i = 1; i < 4; i++) {
    conv(`downsample_layers.${i}.conv`, dims[i], dims[i - 1], 3);
    norm(`downsample_layers.${i}.norm`, dims[i]);
  }
  for (let s = 0; s < 4; s++) {
    const c = dims[s];
    const h = Math.floor((8 / 3) * c); // GatedCNNBlock expansion_ratio 8/3
    for (let b = 0; b < depths[s]; b++) {
      const p = `stages.${s}.${b}`;
      norm(`${p}.norm`, c);
      lin(`${p}.fc1`, 2 * h, c);
      conv(`${p}.conv`, c, 1, 7); // depthwise 7x7, conv_ratio 1.0
      lin(`${p}.fc2`, c, h);
    }
  }
  const c3 = dims[3];
  norm('norm', c3);
  lin('head.fc1', 4 * c3, c3); // MlpHead, mlp_ratio 4
  norm('head.norm', 4 * c3);
  lin('head.fc2', numClasses ?? -1, 4 * c3);
  return out;
}

/** Exact parameter count of a MambaOut configuration. */
export function countParams(depths: readonly number[], dims: readonly number[], numClasses: number): number {
  let n = 0;
  for (const shape of stateDictShapes(depths, dims, numClasses).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * What loading a checkpoint into `name` needs (for the readers' checks before they allocate). `numClasses` null:
 * the class dimension is left open (checkpoints are read before the class count is known, and pretrained weights
 * with another head are loaded without it).
 */
export function expectedModel(name: string, numClasses: number | null = null): ExpectedModel {
  const c = getModelConfig(name);
  return {
    name: c.name,
    shapes: stateDictShapes(c.depths, c.dims, numClasses),
    numParams: countParams(c.depths, c.dims, numClasses ?? c.defaultCfg.numClasses),
  };
}
