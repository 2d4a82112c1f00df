/**
 * mambaout-demo: a local web page to classify images with a MambaOut model (the counterpart of the Gradio demo of
 * the MambaOut repository; bin/demo.ts).
 *
 *   mambaout-demo --checkpoint output/train/EXP/model_best.safetensors      (model, classes, size from the file)
 *   mambaout-demo [--model mambaout_femto] (--pretrained | --pretrained-path F)
 *       [--port 7860] [--host 127.0.0.1] [--max-upload-mb 20] [--max-image-pixels N] [--topk 5] [--engine auto|onnxruntime|tfjs] ...
 *
 * Loads the model once, starts the server, prints its address and serves until Ctrl-C (SIGINT) or SIGTERM.
 */
import { UserError } from '../errors.js';
import { BACKEND_FLAGS, IMAGE_LIMIT_FLAG, INFERENCE_MODEL_FLAGS, type Flag } from './options.js';
import { limits, setMaxImagePixels } from '../limits.js';
import { parseArgs, positiveInt } from './parse.js';
import { createLogger, type LogFormat } from '../log/logger.js';
import { getModelConfig } from '../models/registry.js';
import { resolveWeightSource, type EngineChoice } from '../inference/load.js';
import { DEFAULT_TOPK, Predictor, checkTopK } from '../inference/predict.js';
import { DEFAULT_DEMO_HOST, DEFAULT_DEMO_PORT, DEFAULT_MAX_UPLOAD_MB, startDemoServer } from '../demo/server.js';

const SV = 'Server:';

export const DEMO_FLAGS: Flag[] = [
  ...INFERENCE_MODEL_FLAGS,
  { dest: 'topk', type: 'number', default: DEFAULT_TOPK, describe: `classes shown per image (default: ${DEFAULT_TOPK})`, group: SV },
  { dest: 'port', type: 'number', default: DEFAULT_DEMO_PORT, describe: `TCP port (default: ${DEFAULT_DEMO_PORT}; 0 picks a free one)`, group: SV },
  { dest: 'host', type: 'string', default: DEFAULT_DEMO_HOST, describe: `interface to listen on (default: ${DEFAULT_DEMO_HOST}, this machine only; 0.0.0.0 exposes the demo to the network)`, group: SV },
  { dest: 'max_upload_mb', type: 'number', default: DEFAULT_MAX_UPLOAD_MB, describe: `largest accepted upload in MB (default: ${DEFAULT_MAX_UPLOAD_MB})`, group: SV },
  ...BACKEND_FLAGS,
  IMAGE_LIMIT_FLAG,
];

const USAGE =
  '$0 (--checkpoint FILE | [--model NAME] --pretrained | --pretrained-path FILE) [options]\n\n' +
  'Start a local web page where you can drop an image and see the classes the model predicts.';

export async function demoCommand(argv: readonly string[]): Promise<number> {
  const { args } = parseArgs({
    scriptName: 'mambaout-demo',
    usage: USAGE,
    flags: DEMO_FLAGS,
    positionals: [],
    argv,
    config: false,
    parserConfig: { 'camel-case-expansion': false },
    finiteNumbers: true,
    unexpectedHint: 'the demo takes images through its web page',
  });
  if (args.__help) return 0;
  const logger = createLogger({ format: (args.log_format as LogFormat | null) ?? 'text', stream: process.stderr });
  const model = (args.model as string | null) ?? null; // null: the checkpoint's architecture, else the default
  if (model) getModelConfig(model); // unknown model: a UserError with the closest names
  const weights = resolveWeightSource({
    model,
    checkpoint: String(args.checkpoint ?? ''),
    pretrained: Boolean(args.pretrained),
    pretrainedPath: String(args.pretrained_path ?? ''),
  });
  const port = args.port as number;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port must be an integer between 0 and 65535, got ${port}`);
  const maxMb = args.max_upload_mb as number;
  if (!(maxMb > 0)) throw new UserError(`--max-upload-mb must be a positive number, got ${maxMb}`);
  const topk = checkTopK(args.topk as number);
  setMaxImagePixels(args.max_image_pixels as number | null);
  const host = String(args.host);

  const predictor = await Predictor.create({
    model,
    ...weights,
    useEma: Boolean(args.use_ema),
    numClasses: positiveInt(args, 'num_classes'),
    engine: args.engine as EngineChoice,
    backend: (args.backend as string | null) ?? undefined,
    threads: positiveInt(args, 'threads') ?? undefined,
    interactive: Boolean(process.stderr.isTTY),
    log: (m) => logger.info(m),
    imgSize: positiveInt(args, 'img_size'),
    cropPct: (args.crop_pct as number | null) ?? null,
    interpolation: String(args.interpolation ?? '') || null,
    classMap: String(args.class_map ?? '') || null,
  });
  logger.info(predictor.description);
  logger.info(`Model ${predictor.modelName} (${predictor.numClasses} classes) weights ${predictor.loaded.source}`);

  let server;
  try {
    server = await startDemoServer({
      predictor,
      disposePredictorOnClose: true,
      port,
      host,
      topk,
      maxUploadBytes: Math.round(maxMb * 1024 * 1024),
      maxImagePixels: limits.maxImagePixels,
      log: { info: (m) => logger.info(m), warn: (m) => logger.warn(m), error: (m) => logger.error(m) },
    });
  } catch (e) {
    predictor.dispose();
    throw e;
  }
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '::1') {
    logger.warn(`listening on ${host}: the demo is reachable from other machines on the network`);
  }
  // The address goes to stdout (what a script waiting for the server reads); everything else to stderr.
  process.stdout.write(`Running on local URL: ${server.url}\n`);
  logger.info('Press Ctrl-C to stop.');

  const s = server;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) {
        process.exit(130); // a second Ctrl-C: do not wait any longer
      }
      stopping = true;
      logger.info(`${sig}: stopping the demo server`);
      s.close().then(resolve, (e: unknown) => {
        logger.error(`error while stopping: ${(e as Error).message}`);
        resolve();
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
