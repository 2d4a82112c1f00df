/**
 * mambaout public API. The CLIs in bin/ are thin shells over these functions. One ES module graph without top-level
 * await, so `require('mambaout')` works too (require(esm), Node 22.12+).
 *
 *   import * as m from 'mambaout';      // or: const m = require('mambaout');
 *   await m.initBackend('auto');
 *   const model = m.createModel('mambaout_femto', { numClasses: 1000 });
 *   model.loadStateDict((await m.loadCheckpoint('mambaout_femto.pth')).stateDict);
 *   const logits = model.forward(imagesNHWC);
 */
export { createModel, MambaOut, type CreateModelOptions } from './models/mambaout.js';
export {
  listModels,
  getModelConfig,
  countParams,
  isModelName,
  MODEL_CONFIGS,
  MODEL_NAMES,
  type ModelName,
  type ModelConfig,
  type DefaultCfg,
} from './models/registry.js';
export { VERSION } from './version.js';
export { loadCheckpoint, type LoadedCheckpoint, type CheckpointMeta } from './checkpoint/load.js';
export { readPth } from './checkpoint/pth.js';
export { readSafetensors, writeSafetensors } from './checkpoint/safetensors.js';
export { writeFileAtomic } from './checkpoint/atomic.js';
export { readTrainCheckpoint, writeTrainCheckpoint, CheckpointSaver, type TrainCheckpoint } from './checkpoint/saver.js';
export type { HostTensor, TensorMap, StoredDType } from './checkpoint/types.js';
export { initBackend, releaseBackend, activeBackend, BACKEND_CHOICES, type BackendResult, type BackendChoice } from './backend/index.js';
export { UserError, isUserError } from './errors.js';
export { settings, SETTING_VARIABLES, type SettingName } from './settings.js';
export { Rng } from './utils/rng.js';
export { loadClassifier, type LoadedClassifier, type LoadOptions } from './inference/load.js';
export { resolvePretrained, cacheDir } from './pretrained.js';
export type { InferenceEngine } from './engine/index.js';
export { buildOnnxModel } from './export/onnx.js';

import type { TensorMap } from './checkpoint/types.js';
import { writeSafetensors } from './checkpoint/safetensors.js';

/** Write a name -> tensor map as .safetensors (atomic). Same as writeSafetensors. */
export async function saveSafetensors(path: string, map: TensorMap, metadata?: Record<string, string>): Promise<void> {
  await writeSafetensors(path, map, metadata);
}

