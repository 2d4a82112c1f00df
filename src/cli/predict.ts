/**
 * mambaout-predict: classify images with a MambaOut model and print the top-k ImageNet classes (bin/predict.ts).
 *
 *   mambaout-predict IMAGE_OR_DIR... --checkpoint output/train/EXP/model_best.safetensors
 *   mambaout-predict IMAGE_OR_DIR... [--model mambaout_femto] (--pretrained | --pretrained-path F)
 *       [--topk 5] [--json [FILE]] [--img-size N] [--crop-pct P] [--interpolation M] [--num-classes N]
 *       [--class-map FILE] [--engine auto|onnxruntime|tfjs] [--backend B] [-b BATCH]
 *
 * A checkpoint written by mambaout-train (or exported) names its architecture, classes and preprocessing, so
 * --checkpoint alone is enough; --model, when given, must agree with it.
 * Predictions go to stdout (text, or JSON with --json); log lines and warnings go to stderr. Exit codes: 0 all
 * images classified, 1 some images could not be decoded (skipped, named in a warning), 2 user error.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { BACKEND_FLAGS, IMAGE_LIMIT_FLAG, INFERENCE_MODEL_FLAGS, type Flag } from './options.js';
import { setMaxImagePixels } from '../limits.js';
import { parseArgs, positiveInt } from './parse.js';
import { createLogger, type LogFormat } from '../log/logger.js';
import { DEFAULT_MODEL, getModelConfig } from '../models/registry.js';
import { resolveWeightSource, type EngineChoice } from '../inference/load.js';
import { writeFileAtomic } from '../checkpoint/atomic.js';
import { pyRepr } from '../utils/pyformat.js';
import {
  DEFAULT_BATCH_SIZE, DEFAULT_TOPK, IMAGE_EXTENSIONS, Predictor, checkTopK, collectImagePaths, formatPrediction,
  type Prediction,
} from '../inference/predict.js';

const DT = 'Data parameters:';
const OUT = 'Output:';

export const PREDICT_FLAGS: Flag[] = [
  ...INFERENCE_MODEL_FLAGS,
  { dest: 'batch_size', type: 'number', default: DEFAULT_BATCH_SIZE, describe: `images per batch (default: ${DEFAULT_BATCH_SIZE})`, group: DT, alias: ['b'] },
  { dest: 'topk', type: 'number', default: DEFAULT_TOPK, describe: `number of classes to show per image (default: ${DEFAULT_TOPK})`, group: OUT },
  { dest: 'json', type: 'string', default: undefined, describe: 'print the predictions as JSON, or write them to FILE (--json FILE)', group: OUT },
  ...BACKEND_FLAGS,
  IMAGE_LIMIT_FLAG,
];

const USAGE =
  '$0 IMAGE_OR_DIR... (--checkpoint FILE | [--model NAME] --pretrained | --pretrained-path FILE) [options]\n\n' +
  'Classify images and print the top-k classes with their probabilities. A checkpoint brings its architecture, class ' +
  'names and preprocessing; without one the model is ' + DEFAULT_MODEL + '. Folders are searched recursively for ' +
  `${IMAGE_EXTENSIONS.join(', ')} files.`;

/** Whether a token looks like an image input rather than a JSON output file name. */
function looksLikeInput(token: string): boolean {
  if (IMAGE_EXTENSIONS.includes(extname(token).toLowerCase())) return true;
  try {
    return statSync(token).isDirectory();
  } catch {
    return false;
  }
}

export async function predictCommand(argv: readonly string[]): Promise<number> {
  const { args: a } = parseArgs({
    scriptName: 'mambaout-predict',
    usage: USAGE,
    flags: PREDICT_FLAGS,
    positionals: [{ name: 'inputs', describe: 'images or folders', type: 'string', variadic: true }],
    argv,
    config: false,
    parserConfig: { 'parse-positional-numbers': false, 'camel-case-expansion': false },
    finiteNumbers: true,
  });
  if (a.__help) return 0;
  const inputs = a.inputs as string[];

  // `--json` takes an optional FILE. `--json a.jpg b.jpg` must not overwrite a.jpg: a value that looks like an
  // image or is a folder is an input, and the JSON goes to stdout. `--json=FILE` is always a file name.
  let json = a.json as string | null;
  if (json !== null && json !== '') {
    const explicit = argv.some((t) => t.startsWith('--json='));
    if (looksLikeInput(json)) {
      if (explicit) throw new UserError(`--json=${json} names an image or a folder; give a .json file name`);
      inputs.unshift(json);
      json = '';
    }
  }
  if (json === '-') json = '';

  const model = (a.model as string | null) ?? null; // null: the checkpoint's architecture, else the default
  const numClasses = positiveInt(a, 'num_classes');
  const threads = positiveInt(a, 'threads');
  const imgSize = positiveInt(a, 'img_size');
  const cropPct = a.crop_pct as number | null;
  const batchSize = positiveInt(a, 'batch_size') ?? DEFAULT_BATCH_SIZE;
  const topk = checkTopK((a.topk as number | null) ?? DEFAULT_TOPK);
  const maxImagePixels = positiveInt(a, 'max_image_pixels');

  // Log lines and warnings on stderr: stdout carries only the predictions (pipeable JSON).
  const logger = createLogger({ format: (a.log_format as LogFormat | null) ?? 'text', stream: process.stderr });

  if (model) getModelConfig(model); // unknown model: a UserError with the closest names
  setMaxImagePixels(maxImagePixels);
  const weights = resolveWeightSource({
    model,
    checkpoint: String(a.checkpoint ?? ''),
    pretrained: Boolean(a.pretrained),
    pretrainedPath: String(a.pretrained_path ?? ''),
  });
  if (json) {
    const dir = dirname(resolve(json));
    if (!existsSync(dir)) throw new UserError(`the folder of the --json file '${json}' does not exist`);
    if (existsSync(json) && statSync(json).isDirectory()) throw new UserError(`--json '${json}' is a folder; give a file name`);
  }
  const paths = await collectImagePaths(inputs, { onWarning: (m) => logger.warn(m) });

  const predictor = await Predictor.create({
    model,
    ...weights,
    useEma: Boolean(a.use_ema),
    numClasses,
    engine: a.engine as EngineChoice,
    backend: (a.backend as string | null) ?? undefined,
    threads: threads ?? undefined,
    interactive: Boolean(process.stderr.isTTY),
    log: (m) => logger.info(m),
    imgSize,
    cropPct,
    interpolation: String(a.interpolation ?? '') || null,
    classMap: String(a.class_map ?? '') || null,
  });
  try {
    logger.info(predictor.description);
    const [, h, w] = predictor.dataConfig.inputSize;
    logger.info(
      `Model ${predictor.modelName} (${predictor.numClasses} classes) weights ${predictor.loaded.source}; input ${h}x${w}, ` +
        `crop_pct ${pyRepr(predictor.dataConfig.cropPct)}, ${predictor.dataConfig.interpolation}; ${paths.length} image(s)`,
    );
    const jsonToStdout = json === '';
    const t0 = performance.now();
    const { predictions, skipped } = await predictor.predictFiles(paths, {
      topk,
      batchSize,
      onSkip: (s) => logger.warn(`skipped ${s.path}: ${s.reason}`),
      onBatch: jsonToStdout ? undefined : (ps: Prediction[]) => {
        for (const p of ps) process.stdout.write(formatPrediction(p) + '\n');
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const text = JSON.stringify(predictions, null, 2) + '\n';
    if (jsonToStdout) process.stdout.write(text);
    else if (json) {
      await writeFileAtomic(json, text);
      logger.info(`Wrote ${predictions.length} prediction(s) to ${json}`);
    }
    logger.info(`Classified ${predictions.length} image(s) in ${secs.toFixed(2)} s` + (skipped.length ? `; skipped ${skipped.length} that could not be decoded` : ''));
    if (skipped.length) {
      logger.warn(`${skipped.length} image(s) could not be decoded and were skipped: ${skipped.map((s) => s.path).join(', ')}`);
      return 1;
    }
    return 0;
  } finally {
    predictor.dispose();
  }
}
