/**
 * Load a classifier for inference (validate, predict, demo): weights from --checkpoint or --pretrained, engine
 * chosen by measurement: onnxruntime on CPU (about 20x faster than tfjs-wasm on 2 cores), tfjs on a GPU backend.
 */
import { loadCheckpoint } from '../checkpoint/pth.js';
import type { TensorMap } from '../checkpoint/types.js';
import { UserError } from '../errors.js';
import { createModel } from '../models/mambaout.js';
import { getModelConfig, type ModelConfig } from '../models/registry.js';
import { initBackend, type BackendResult } from '../backend/index.js';
import { resolvePretrained } from '../pretrained.js';
import type { InferenceEngine } from '../engine/index.js';

export type EngineChoice = 'auto' | 'onnxruntime' | 'tfjs';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', 'onnxruntime', 'tfjs'];

export interface LoadOptions {
  model: string;
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

export async function readWeights(opts: LoadOptions): Promise<{ stateDict: TensorMap; source: string }> {
  const config = getModelConfig(opts.model);
  if (opts.checkpoint) {
    const { stateDict } = await loadCheckpoint(opts.checkpoint, { useEma: opts.useEma ?? false, stateDictOnly: true });
    return { stateDict, source: opts.checkpoint };
  }
  if (opts.pretrained || opts.pretrainedPath) {
    let sd: TensorMap | null = null;
    const file = await resolvePretrained(config.name, {
      path: opts.pretrainedPath,
      interactive: opts.interactive,
      log: opts.log,
      verify: async (f) => {
        const { stateDict } = await loadCheckpoint(f, { stateDictOnly: true });
        const probe = createModel(config.name, { noInit: true, numClasses: stateDictClasses(stateDict) ?? undefined });
        try {
          probe.loadStateDict(stateDict); // strict: throws a UserError listing what does not fit
        } finally {
          probe.dispose();
        }
        sd = stateDict;
      },
    });
    if (!sd) sd = (await loadCheckpoint(file, { stateDictOnly: true })).stateDict;
    return { stateDict: sd, source: file };
  }
  throw new UserError(`no weights given for ${opts.model}: pass --checkpoint FILE or --pretrained`);
}

export async function loadClassifier(opts: LoadOptions): Promise<LoadedClassifier> {
  const config = getModelConfig(opts.model);
  const { stateDict, source } = await readWeights(opts);
  const ckClasses = stateDictClasses(stateDict);
  if (opts.numClasses != null && ckClasses != null && opts.numClasses !== ckClasses) {
    throw new UserError(`the checkpoint ${source} has ${ckClasses} classes but --num-classes is ${opts.numClasses}`);
  }
  const numClasses = opts.numClasses ?? ckClasses ?? config.defaultCfg.numClasses;
  const choice = opts.engine ?? 'auto';
  let backend: BackendResult | null = null;
  let engine: InferenceEngine | null = null;
  let why = '';

  if (choice === 'onnxruntime' || choice === 'auto') {
    // auto: a GPU backend (webgpu/tensorflow) wins; on CPU onnxruntime is the fast path.
    if (choice === 'auto') {
      backend = await initBackend(opts.backend ?? 'auto', {});
      if (backend.name === 'webgpu' || backend.name === 'tensorflow') why = `GPU backend ${backend.name} available`;
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
        why = `onnxruntime unavailable: ${(e as Error).message}`;
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
      ? `engine: ${engine.describe()}; tfjs ${backend ? backend.message : 'not used'}`
      : `engine: ${engine.describe()}${why ? ` (${why})` : ''}; ${backend?.message ?? ''}`;
  return { engine, config, numClasses, paramCount, source, description, backend };
}
