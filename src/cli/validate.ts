/**
 * mambaout-validate: timm validate.py for MambaOut (bin/validate.ts).
 *
 *   mambaout-validate /data/imagenet --model mambaout_femto --pretrained -b 128
 *   mambaout-validate DATA --checkpoint output/train/EXP/model_best.safetensors   (model, classes, size from the file)
 *   mambaout-validate DATA --checkpoint output/train/EXP/   (bulk: every checkpoint in the folder)
 *   mambaout-validate IMAGENET --pretrained --real-labels real.json   (ImageNet-ReaL top-1/top-5)
 */
import { existsSync, statSync } from 'node:fs';
import { parseArgs } from './parse.js';
import { BACKEND_FLAGS, IMAGE_LIMIT_FLAG, LIST_MODELS_FLAG, inertNotices, type Flag } from './options.js';
import { setMaxImagePixels } from '../limits.js';
import { listModelsRequested } from './list_models.js';
import { createLogger, type LogFormat } from '../log/logger.js';
import { checkpointsIn, expandModels, resultJson, validateOne, writeResults, type ValidateArgs, type ValidateResult } from '../inference/validate.js';
import { DEFAULT_MODEL } from '../models/registry.js';
import { UserError, isUserError } from '../errors.js';
import { ENGINE_CHOICES, assertCheckpointExists, type EngineChoice } from '../inference/load.js';

const G = 'Validation options:';
export const VALIDATE_FLAGS: Flag[] = [
  { dest: 'dataset', type: 'string', default: '', describe: 'dataset type (default: ImageFolder/ImageTar if empty)', group: G, alias: ['d'] },
  { dest: 'split', type: 'string', default: 'validation', describe: 'dataset split (default: validation)', group: G },
  { dest: 'dataset_download', type: 'boolean', default: false, describe: 'Allow download of dataset for torch/ and tfds/ datasets', group: G, inert: 'only folder datasets are supported' },
  { dest: 'model', type: 'string', default: undefined, describe: `model architecture: a name, "all", a wildcard, or a file of names (default: the checkpoint's architecture, else ${DEFAULT_MODEL}; timm's "dpn92" does not exist here)`, group: G, alias: ['m'] },
  { dest: 'workers', type: 'number', default: 4, describe: 'number of data loading workers (default: 4)', group: G, alias: ['j'] },
  { dest: 'batch_size', type: 'number', default: 256, describe: 'mini-batch size (default: 256)', group: G, alias: ['b'] },
  { dest: 'img_size', type: 'number', default: undefined, describe: 'Input image dimension, uses model default if empty', group: G },
  { dest: 'input_size', type: 'array-number', default: undefined, describe: 'Input all image dimensions (d h w, e.g. --input-size 3 224 224)', group: G, nargs: 3 },
  { dest: 'use_train_size', type: 'boolean', default: false, describe: 'force use of train input size, even when test size is specified in pretrained cfg', group: G, inert: 'MambaOut configs have no separate test size' },
  { dest: 'crop_pct', type: 'number', default: undefined, describe: 'Input image center crop pct', group: G },
  { dest: 'mean', type: 'array-number', default: undefined, describe: 'Override mean pixel value of dataset', group: G },
  { dest: 'std', type: 'array-number', default: undefined, describe: 'Override std deviation of of dataset', group: G },
  { dest: 'interpolation', type: 'string', default: '', describe: 'Image resize interpolation type (overrides model)', group: G },
  { dest: 'num_classes', type: 'number', default: undefined, describe: 'Number classes in dataset', group: G },
  { dest: 'class_map', type: 'string', default: '', describe: 'path to class to idx mapping file (default: "")', group: G },
  { dest: 'gp', type: 'string', default: undefined, describe: 'Global pool type', group: G, inert: 'MambaOut always mean-pools' },
  { dest: 'log_freq', type: 'number', default: 10, describe: 'batch logging frequency (default: 10)', group: G },
  { dest: 'checkpoint', type: 'string', default: '', describe: 'path to latest checkpoint (file, or a folder of checkpoints for bulk mode)', group: G },
  { dest: 'pretrained', type: 'boolean', default: false, describe: 'use pre-trained model (default when no --checkpoint)', group: G },
  { dest: 'pretrained_path', type: 'string', default: '', describe: 'local file with the release weights (instead of the cache/download)', group: G },
  { dest: 'num_gpu', type: 'number', default: 1, describe: 'Number of GPUS to use', group: G, inert: 'one device per process' },
  { dest: 'test_pool', type: 'boolean', default: false, describe: 'enable test time pool', group: G, inert: 'not meaningful for MambaOut' },
  { dest: 'no_prefetcher', type: 'boolean', default: false, describe: 'disable fast prefetcher', group: G, inert: 'evaluation batches are the same numbers with or without it (no mixup or erasing at eval)' },
  { dest: 'pin_mem', type: 'boolean', default: false, describe: 'Pin CPU memory in DataLoader', group: G, inert: 'no pinned memory in tfjs' },
  { dest: 'channels_last', type: 'boolean', default: false, describe: 'Use channels_last memory layout', group: G, inert: 'tfjs activations are always NHWC' },
  { dest: 'amp', type: 'boolean', default: false, describe: 'Use AMP mixed precision (warns and uses float32 where unsupported)', group: G },
  { dest: 'apex_amp', type: 'boolean', default: false, describe: 'Use NVIDIA Apex AMP mixed precision', group: G, inert: 'no Apex on tfjs' },
  { dest: 'native_amp', type: 'boolean', default: false, describe: 'Use Native Torch AMP mixed precision', group: G },
  { dest: 'tf_preprocessing', type: 'boolean', default: false, describe: 'Use Tensorflow preprocessing pipeline', group: G, inert: 'timm-style preprocessing is always used' },
  { dest: 'use_ema', type: 'boolean', default: false, describe: 'use ema version of weights if present', group: G },
  { dest: 'torchscript', type: 'boolean', default: false, describe: 'torch.jit.script the full model', group: G, inert: 'no TorchScript on tfjs' },
  { dest: 'fuser', type: 'string', default: '', describe: 'Select jit fuser', group: G, inert: 'no jit fuser on tfjs' },
  { dest: 'results_file', type: 'string', default: '', describe: 'Output csv (or .json) file for validation results (summary)', group: G },
  { dest: 'real_labels', type: 'string', default: '', describe: 'Real labels JSON file for imagenet evaluation (ImageNet-ReaL; replaces top-1/top-5)', group: G },
  { dest: 'valid_labels', type: 'string', default: '', describe: 'Valid label indices txt file for validation of partial label space', group: G },
  { dest: 'engine', type: 'string', default: 'auto', describe: 'inference engine: auto (onnxruntime on CPU, tfjs on GPU), onnxruntime, tfjs', group: 'Runtime (mambaout):', choices: ENGINE_CHOICES },
  { dest: 'threads', type: 'number', default: undefined, describe: 'CPU threads for onnxruntime (default: all cores)', group: 'Runtime (mambaout):' },
  ...BACKEND_FLAGS,
  IMAGE_LIMIT_FLAG,
  LIST_MODELS_FLAG,
];

export async function validateCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseArgs({
    scriptName: 'mambaout-validate',
    usage: '$0 <data> [options]\n\nValidate a MambaOut model on an ImageNet-style folder (timm validate.py).',
    flags: VALIDATE_FLAGS,
    positionals: [{ name: 'data', describe: 'path to dataset', type: 'string', demand: !argv.includes('--list-models') }],
    argv,
  });
  const r = parsed.args;
  if (r.__help || listModelsRequested(r)) return 0;
  const logger = createLogger({ format: r.log_format as LogFormat });
  for (const n of inertNotices(VALIDATE_FLAGS, r)) logger.info(n);
  if (r.dataset && !/^(folder\/?)$/.test(r.dataset as string)) throw new UserError(`--dataset '${r.dataset}' is not supported: only ImageNet-style folders`);
  const base: ValidateArgs = {
    data: r.data as string,
    split: r.split as string,
    model: (r.model as string | null) || null,
    checkpoint: r.checkpoint as string,
    pretrained: r.pretrained as boolean,
    pretrainedPath: r.pretrained_path as string,
    useEma: r.use_ema as boolean,
    batchSize: r.batch_size as number,
    workers: r.workers as number,
    imgSize: r.img_size as number | null,
    inputSize: r.input_size as number[] | null,
    cropPct: r.crop_pct as number | null,
    mean: r.mean as number[] | null,
    std: r.std as number[] | null,
    interpolation: r.interpolation as string,
    numClasses: r.num_classes as number | null,
    classMap: r.class_map as string,
    logFreq: Math.max(1, r.log_freq as number),
    resultsFile: r.results_file as string,
    realLabels: r.real_labels as string,
    validLabels: r.valid_labels as string,
    engine: r.engine as EngineChoice,
    backend: (r.backend as string | null) ?? undefined,
    amp: Boolean(r.amp || r.native_amp || r.apex_amp),
    threads: (r.threads as number | null) ?? undefined,
  };
  if (!Number.isInteger(base.batchSize) || base.batchSize < 1) throw new UserError(`--batch-size must be a positive integer, got ${base.batchSize}`);
  if (!Number.isInteger(base.workers) || base.workers < 0) throw new UserError(`--workers must be a whole number >= 0, got ${base.workers}`);
  setMaxImagePixels(r.max_image_pixels as number | null | undefined);
  const { names, bulk: bulkModels } = await expandModels(base.model);
  const ckptIsDir = base.checkpoint !== '' && existsSync(base.checkpoint) && statSync(base.checkpoint).isDirectory();
  assertCheckpointExists(base.checkpoint);

  if (!bulkModels && !ckptIsDir) {
    const result = await validateOne({ ...base, model: names[0] }, logger);
    if (base.resultsFile) await writeResults(base.resultsFile, [result]);
    process.stdout.write('--result\n' + resultJson(result) + '\n');
    return 0;
  }
  // bulk mode
  const jobs: ValidateArgs[] = [];
  if (ckptIsDir) {
    const files = await checkpointsIn(base.checkpoint);
    if (!files.length) throw new UserError(`no checkpoints (*.pth.tar, *.pth, *.safetensors) in '${base.checkpoint}'`);
    for (const f of files) for (const m of names) jobs.push({ ...base, model: m, checkpoint: f });
  } else {
    for (const m of names) jobs.push({ ...base, model: m });
  }
  logger.info(`Running bulk validation on these pretrained models: ${jobs.map((j) => (j.model ?? '(from checkpoint)') + (j.checkpoint ? `:${j.checkpoint}` : '')).join(', ')}`);
  const results: ValidateResult[] = [];
  for (const j of jobs) {
    try {
      const res = await validateOne(j, logger);
      if (j.checkpoint) res.checkpoint = j.checkpoint;
      results.push(res);
    } catch (e) {
      if (!isUserError(e)) throw e;
      logger.error(`${j.model ?? "(model from checkpoint)"}${j.checkpoint ? ` (${j.checkpoint})` : ''}: ${e.message}`);
    }
  }
  results.sort((a, b) => b.top1 - a.top1);
  const file = base.resultsFile || './results-all.csv';
  await writeResults(file, results);
  logger.info(`Results of ${results.length} validation(s) written to ${file}`);
  return results.length === jobs.length ? 0 : 1;
}
