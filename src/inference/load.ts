/**
 * Load a classifier for inference (validate, predict, demo, export): weights from --checkpoint or --pretrained, engine
 * chosen by measurement: onnxruntime on CPU (about 20x faster than tfjs-wasm on 2 cores), tfjs on a GPU backend.
 *
 * A checkpoint describes itself (checkpoint/model_meta.ts): its architecture, classes, class names and eval
 * preprocessing come from the file, so `--checkpoint F` alone is enough. `--model` may repeat the architecture;
 * a different one is an error naming both. Without either, the model is DEFAULT_MODEL (mambaout_femto).
 */
import { existsSync } from 'node:fs';
import { loadCheckpoint, type CheckpointMeta } from '../checkpoint/load.js';
import type { TensorMap } from '../checkpoint/types.js';
import { buildModelMeta, modelMetaFromSafetensors, metaDataDefaults, type ModelMeta } from '../checkpoint/model_meta.js';
import { UserError } from '../errors.js';
import { createModel } from '../models/mambaout.js';
import { DEFAULT_MODEL, MODEL_CONFIGS, expectedModel, getModelConfig, isModelName, listModels, namedArchitecture, type ModelConfig } from '../models/registry.js';
import { resolveDataConfig, type ModelDataDefaults } from '../data/config.js';
import { initBackend, initGpuBackend, type BackendResult } from '../backend/index.js';
import { resolvePretrained } from '../pretrained.js';
import type { InferenceEngine } from '../engine/index.js';

export type EngineChoice = 'auto' | 'onnxruntime' | 'tfjs';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', 'onnxruntime', 'tfjs'];

export interface LoadOptions {
  /** `--model` as given; null/undefined: the checkpoint's architecture, else DEFAULT_MODEL. */
  model?: string | null;
  checkpoint?: string;
  pretrained?: boolean;
  pretrainedPath?: string;
  useEma?: boolean;
  numClasses?: number | null;
  engine?: EngineChoice;
  backend?: string;
  threads?: number;
  /** onnxruntime: let idle intra-op threads spin (its default); validate turns it off because decoding shares the cores */
  spinning?: boolean;
  interactive?: boolean;
  log?: (msg: string) => void;
}

export interface LoadedClassifier {
  engine: InferenceEngine;
  config: ModelConfig;
  /** What the checkpoint says about itself (null: release weights or a bare state dict). */
  meta: ModelMeta | null;
  /** Eval data defaults: the checkpoint's metadata, else the model's default_cfg. */
  dataDefaults: ModelDataDefaults;
  /** Class names from the checkpoint (null when it has none). */
  classNames: string[] | null;
  numClasses: number;
  paramCount: number;
  /** Where the weights came from. */
  source: string;
  /** First log line: engine and backend in use. */
  description: string;
  backend: BackendResult | null;
}

/** Number of classes a state dict was trained for (rows of head.fc2). */
export function stateDictClasses(sd: TensorMap): number | null {
  const b = sd.get('head.fc2.bias');
  return b && b.shape.length === 1 ? b.shape[0] : null;
}

/** Where the weights come from: a checkpoint file, or the release weights (cache/download, or a local copy). */
export interface WeightSource {
  checkpoint: string | undefined;
  pretrained: boolean;
  pretrainedPath: string | undefined;
}

/** A `--checkpoint` that is not there is the user's to fix: one sentence naming it. */
export function assertCheckpointExists(checkpoint: string): void {
  if (checkpoint && !existsSync(checkpoint)) throw new UserError(`checkpoint '${checkpoint}' does not exist`);
}

/**
 * The weight flags of predict and demo, checked before anything loads: exactly one of --checkpoint FILE and
 * --pretrained / --pretrained-path FILE, and a checkpoint that exists. `model` (--model, or null) names the model
 * in the sentence when no weights are given.
 */
export function resolveWeightSource(o: { model: string | null; checkpoint: string; pretrained: boolean; pretrainedPath: string }): WeightSource {
  const pretrained = o.pretrained || Boolean(o.pretrainedPath);
  if (!o.checkpoint && !pretrained) throw new UserError(`no weights given for ${o.model ?? DEFAULT_MODEL}: pass --pretrained, --pretrained-path FILE or --checkpoint FILE`);
  if (o.checkpoint && pretrained) throw new UserError('pass either --checkpoint or --pretrained/--pretrained-path, not both');
  assertCheckpointExists(o.checkpoint);
  return { checkpoint: o.checkpoint || undefined, pretrained, pretrainedPath: o.pretrainedPath || undefined };
}

export interface LoadedWeights {
  stateDict: TensorMap;
  source: string;
  /** The model to build: --model, else the checkpoint's architecture, else DEFAULT_MODEL. */
  architecture: string;
  meta: ModelMeta | null;
}

/**
 * The architecture to build: `requested` (--model) must agree with what the checkpoint `source` says it holds.
 */
export function resolveArchitecture(requested: string | null | undefined, found: string | null | undefined, source: string): string {
  if (requested) getModelConfig(requested); // unknown --model: a UserError with "did you mean"
  if (requested && found && requested !== found) {
    throw new UserError(`--model ${requested} conflicts with the checkpoint ${source}, which holds a ${found} model; drop --model or pass --model ${found}`);
  }
  const arch = requested || found || DEFAULT_MODEL;
  if (!requested && found && !isModelName(found)) {
    throw new UserError(`the checkpoint ${source} holds a '${found}' model, which mambaout does not have; known models: ${listModels().join(', ')}`);
  }
  return arch;
}

/**
 * Metadata of a timm train.py checkpoint (`arch` + the pickled `args`): what the PyTorch run trained with.
 * Null when the architecture is not one of ours or the args do not describe a usable data config.
 */
export function metaFromTimmCheckpoint(ck: CheckpointMeta, numClasses: number | null): ModelMeta | null {
  const named = ck.arch ?? (typeof ck.args?.model === 'string' ? ck.args.model : undefined);
  if (!named || !isModelName(named) || numClasses === null) return null;
  const arch = named;
  const a = ck.args ?? {};
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const nums = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : null);
  try {
    const dc = resolveDataConfig(MODEL_CONFIGS[arch].defaultCfg, {
      imgSize: num(a.img_size),
      inputSize: nums(a.input_size),
      cropPct: num(a.crop_pct),
      mean: nums(a.mean),
      std: nums(a.std),
      interpolation: typeof a.interpolation === 'string' ? a.interpolation : null,
    });
    return buildModelMeta({ architecture: arch, numClasses, ...dc });
  } catch {
    return null; // args that do not make a data config: fall back to the model's defaults
  }
}

export async function readWeights(opts: LoadOptions): Promise<LoadedWeights> {
  if (opts.checkpoint) {
    // The architecture is known only once the file is read: the general size caps apply (src/limits.ts), and a
    // --model that disagrees is reported by name below.
    const { stateDict, meta: ck } = await loadCheckpoint(opts.checkpoint, { useEma: opts.useEma ?? false, stateDictOnly: true });
    const source = opts.checkpoint;
    const meta = modelMetaFromSafetensors(ck.metadata, source) ?? metaFromTimmCheckpoint(ck, stateDictClasses(stateDict));
    const architecture = resolveArchitecture(opts.model, meta?.architecture ?? namedArchitecture(ck.arch, stateDict), source);
    const ckClasses = stateDictClasses(stateDict);
    if (meta && ckClasses !== null && meta.num_classes !== ckClasses) {
      throw new UserError(`the checkpoint ${source} says it has ${meta.num_classes} classes but its classifier has ${ckClasses}`);
    }
    return { stateDict, source, architecture, meta };
  }
  const architecture = resolveArchitecture(opts.model, null, '');
  const config = getModelConfig(architecture);
  if (opts.pretrained || opts.pretrainedPath) {
    let sd: TensorMap | null = null;
    const file = await resolvePretrained(config.name, {
      path: opts.pretrainedPath,
      interactive: opts.interactive,
      log: opts.log,
      verify: async (f) => {
        const { stateDict } = await loadCheckpoint(f, { stateDictOnly: true, expect: expectedModel(config.name) });
        const probe = createModel(config.name, { noInit: true, numClasses: stateDictClasses(stateDict) ?? undefined });
        try {
          probe.loadStateDict(stateDict); // strict: throws a UserError listing what does not fit
        } finally {
          probe.dispose();
        }
        sd = stateDict;
      },
    });
    if (!sd) sd = (await loadCheckpoint(file, { stateDictOnly: true, expect: expectedModel(config.name) })).stateDict;
    return { stateDict: sd, source: file, architecture, meta: null };
  }
  throw new UserError(`no weights given for ${architecture}: pass --checkpoint FILE or --pretrained`);
}

/** Eval data defaults of read weights: the checkpoint's metadata, else the model's default_cfg. */
export function weightsDataDefaults(w: Pick<LoadedWeights, 'architecture' | 'meta'>): ModelDataDefaults {
  return w.meta ? metaDataDefaults(w.meta) : getModelConfig(w.architecture).defaultCfg;
}

/**
 * The classifier: weights (read here, or `weights` already read by readWeights, as validate does to start its
 * loader before the slow part) and the engine built on them.
 */
/** The classes the classifier will have: --num-classes, else the checkpoint's classifier rows, else the model's default. */
export function classifierClasses(w: Pick<LoadedWeights, 'stateDict' | 'architecture'>, numClasses?: number | null): number {
  return numClasses ?? stateDictClasses(w.stateDict) ?? getModelConfig(w.architecture).defaultCfg.numClasses;
}

export async function loadClassifier(opts: LoadOptions, weights?: LoadedWeights): Promise<LoadedClassifier> {
  const { stateDict, source, architecture, meta } = weights ?? (await readWeights(opts));
  const config = getModelConfig(architecture);
  const ckClasses = stateDictClasses(stateDict);

  if (opts.numClasses != null && ckClasses != null && opts.numClasses !== ckClasses) {
    throw new UserError(`the checkpoint ${source} has ${ckClasses} classes but --num-classes is ${opts.numClasses}`);
  }
  const numClasses = classifierClasses({ stateDict, architecture }, opts.numClasses);
  const choice = opts.engine ?? 'auto';
  let backend: BackendResult | null = null;
  let engine: InferenceEngine | null = null;
  let why = '';
  let noGpu = '';

  if (choice === 'onnxruntime' || choice === 'auto') {
    // auto: a GPU backend (webgpu/tensorflow) wins; on CPU onnxruntime is the fast path, and no tfjs backend is
    // started for it (the wasm one cost ~0.15 s of CPU at start-up; initGpuBackend).
    if (choice === 'auto') {
      const gpu = await initGpuBackend(opts.backend ?? 'auto');
      backend = gpu.backend;
      noGpu = gpu.skipped;
      if (backend) why = `GPU backend ${backend.name} available`;
    }
    if (!why) {
      try {
        const { OrtClassifier } = await import('../engine/onnxruntime.js');
        engine = await OrtClassifier.fromStateDict({ depths: config.depths, dims: config.dims, numClasses }, stateDict, {
          threads: opts.threads,
          spinning: opts.spinning,
          label: config.name,
        });
      } catch (e) {
        if (choice === 'onnxruntime') throw e;
        why = 'onnxruntime unavailable';
        const { ortFallbackNotice } = await import('../engine/onnxruntime.js');
        const notice = ortFallbackNotice(e);
        if (notice) (opts.log ?? ((m: string) => process.stderr.write(`warning: ${m}\n`)))(notice);
      }
    }
  }
  if (!engine) {
    if (!backend) backend = await initBackend(opts.backend ?? 'auto', {});
    const model = createModel(config.name, { noInit: true, numClasses });
    model.loadStateDict(stateDict);
    const { TfjsEngine } = await import('../engine/tfjs.js');
    engine = new TfjsEngine(model, backend.description);
  }
  const paramCount = [...stateDict.values()].reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  const description =
    engine.name === 'onnxruntime'
      ? `engine: ${engine.describe()}; tfjs not used${noGpu ? ` (no GPU backend: ${noGpu})` : ''}`
      : `engine: ${engine.describe()}${why ? ` (${why})` : ''}; ${backend?.message ?? ''}`;
  return {
    engine, config, numClasses, paramCount, source, description, backend, meta,
    dataDefaults: weightsDataDefaults({ architecture, meta }),
    classNames: meta?.label_names ?? null,
  };
}
