#!/usr/bin/env node
/**
 * mambaout-predict: classify images with a MambaOut model and print the top-k ImageNet classes.
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
import { UserError } from '../src/errors.js';
import { BACKEND_FLAGS, IMAGE_LIMIT_FLAG, INFERENCE_MODEL_FLAGS, flagName, toYargs, type Flag } from '../src/cli/options.js';
import { setMaxImagePixels } from '../src/limits.js';
import { buildYargs, normalizeArgv } from '../src/cli/parse.js';
import { runMain } from '../src/cli/main.js';
import { createLogger, type LogFormat } from '../src/log/logger.js';
import { DEFAULT_MODEL, getModelConfig } from '../src/models/registry.js';
import { resolveWeightSource, type EngineChoice } from '../src/inference/load.js';
import { writeFileAtomic } from '../src/checkpoint/atomic.js';
import { pyRepr } from '../src/utils/pyformat.js';
import {
  DEFAULT_BATCH_SIZE, DEFAULT_TOPK, IMAGE_EXTENSIONS, Predictor, checkTopK, collectImagePaths, formatPrediction,
  type Prediction,
} from '../src/inference/predict.js';

const DT = 'Data parameters:';
const OUT = 'Output:';

const PREDICT_FLAGS: Flag[] = [
  ...INFERENCE_MODEL_FLAGS,
  { dest: 'batch_size', type: 'number', default: DEFAULT_BATCH_SIZE, describe: `images per batch (default: ${DEFAULT_BATCH_SIZE})`, group: DT, alias: ['b'] },
  { dest: 'topk', type: 'number', default: DEFAULT_TOPK, describe: `number of classes to show per image (default: ${DEFAULT_TOPK})`, group: OUT },
  { dest: 'json', type: 'string', default: undefined, describe: 'print the predictions as JSON, or write them to FILE (--json FILE)', group: OUT },
  ...BACKEND_FLAGS,
  IMAGE_LIMIT_FLAG,
];

interface PredictArgs {
  inputs: string[];
  /** --model as given (null: the checkpoint's architecture, else the default model). */
  model: string | null;
  pretrained: boolean;
  pretrainedPath: string;
  checkpoint: string;
  useEma: boolean;
  numClasses: number | null;
  classMap: string;
  engine: EngineChoice;
  threads: number | null;
  imgSize: number | null;
  cropPct: number | null;
  interpolation: string;
  batchSize: number;
  topk: number;
  /** null: no JSON; '': JSON on stdout; otherwise the output file. */
  json: string | null;
  backend: string | undefined;
  logFormat: LogFormat;
  maxImagePixels: number | null;
}

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

function parse(argv: readonly string[]): PredictArgs | null {
  const parsed = buildYargs('mambaout-predict', USAGE, normalizeArgv(argv, PREDICT_FLAGS), { 'parse-positional-numbers': false, 'camel-case-expansion': false })
    .options(toYargs(PREDICT_FLAGS))
    .parseSync() as Record<string, unknown>;
  if (parsed.help) return null;
  const get = (dest: string): unknown => parsed[flagName(dest)];
  const inputs = ((parsed._ as unknown[]) ?? []).map(String);

  // `--json` takes an optional FILE. `--json a.jpg b.jpg` must not overwrite a.jpg: a value that looks like an
  // image or is a folder is an input, and the JSON goes to stdout. `--json=FILE` is always a file name.
  let json = get('json') as string | undefined;
  if (json !== undefined && json !== '') {
    const explicit = argv.some((a) => a.startsWith('--json='));
    if (looksLikeInput(json)) {
      if (explicit) throw new UserError(`--json=${json} names an image or a folder; give a .json file name`);
      inputs.unshift(json);
      json = '';
    }
  }
  if (json === '-') json = '';

  const num = (dest: string): number | null => {
    const v = get(dest);
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`--${flagName(dest)} expects a number`);
    return v;
  };
  const posInt = (dest: string): number | null => {
    const v = num(dest);
    if (v !== null && (!Number.isInteger(v) || v < 1)) throw new UserError(`--${flagName(dest)} must be a positive integer, got ${v}`);
    return v;
  };
  return {
    inputs,
    model: (get('model') as string | undefined) ?? null,
    pretrained: Boolean(get('pretrained')),
    pretrainedPath: String(get('pretrained_path') ?? ''),
    checkpoint: String(get('checkpoint') ?? ''),
    useEma: Boolean(get('use_ema')),
    numClasses: posInt('num_classes'),
    classMap: String(get('class_map') ?? ''),
    engine: get('engine') as EngineChoice,
    threads: posInt('threads'),
    imgSize: posInt('img_size'),
    cropPct: num('crop_pct'),
    interpolation: String(get('interpolation') ?? ''),
    batchSize: posInt('batch_size') ?? DEFAULT_BATCH_SIZE,
    topk: checkTopK(num('topk') ?? DEFAULT_TOPK),
    json: json === undefined ? null : json,
    backend: get('backend') as string | undefined,
    logFormat: (get('log_format') as LogFormat) ?? 'text',
    maxImagePixels: posInt('max_image_pixels'),
  };
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parse(argv);
  if (!args) return 0;
  // Log lines and warnings on stderr: stdout carries only the predictions (pipeable JSON).
  const logger = createLogger({ format: args.logFormat, stream: process.stderr });

  if (args.model) getModelConfig(args.model); // unknown model: a UserError with the closest names
  setMaxImagePixels(args.maxImagePixels);
  const weights = resolveWeightSource({ model: args.model, checkpoint: args.checkpoint, pretrained: args.pretrained, pretrainedPath: args.pretrainedPath });
  if (args.json) {
    const dir = dirname(resolve(args.json));
    if (!existsSync(dir)) throw new UserError(`the folder of the --json file '${args.json}' does not exist`);
    if (existsSync(args.json) && statSync(args.json).isDirectory()) throw new UserError(`--json '${args.json}' is a folder; give a file name`);
  }
  const paths = await collectImagePaths(args.inputs, { onWarning: (m) => logger.warn(m) });

  const predictor = await Predictor.create({
    model: args.model,
    ...weights,
    useEma: args.useEma,
    numClasses: args.numClasses,
    engine: args.engine,
    backend: args.backend,
    threads: args.threads ?? undefined,
    interactive: Boolean(process.stderr.isTTY),
    log: (m) => logger.info(m),
    imgSize: args.imgSize,
    cropPct: args.cropPct,
    interpolation: args.interpolation || null,
    classMap: args.classMap || null,
  });
  try {
    logger.info(predictor.description);
    const [, h, w] = predictor.dataConfig.inputSize;
    logger.info(
      `Model ${predictor.modelName} (${predictor.numClasses} classes) weights ${predictor.loaded.source}; input ${h}x${w}, ` +
        `crop_pct ${pyRepr(predictor.dataConfig.cropPct)}, ${predictor.dataConfig.interpolation}; ${paths.length} image(s)`,
    );
    const jsonToStdout = args.json === '';
    const t0 = performance.now();
    const { predictions, skipped } = await predictor.predictFiles(paths, {
      topk: args.topk,
      batchSize: args.batchSize,
      onSkip: (s) => logger.warn(`skipped ${s.path}: ${s.reason}`),
      onBatch: jsonToStdout ? undefined : (ps: Prediction[]) => {
        for (const p of ps) process.stdout.write(formatPrediction(p) + '\n');
      },
    });
    const secs = (performance.now() - t0) / 1000;
    const json = JSON.stringify(predictions, null, 2) + '\n';
    if (jsonToStdout) process.stdout.write(json);
    else if (args.json) {
      await writeFileAtomic(args.json, json);
      logger.info(`Wrote ${predictions.length} prediction(s) to ${args.json}`);
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

runMain(() => main(process.argv.slice(2)));
