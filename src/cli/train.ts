/**
 * mambaout-train: timm 0.6.11 train.py (MambaOut copy) on tfjs (bin/train.ts).
 *
 *   mambaout-train DATA_DIR --model mambaout_tiny --opt adamw --lr 4e-3 --warmup-epochs 20 -b 128 --grad-accum-steps 4 --drop-path 0.2
 *
 * Without DATA_DIR it trains on the built-in tiny generated dataset (./data/tiny-imagenet, created on first use).
 */
import { parseArgs } from './parse.js';
import { TRAIN_FLAGS, inertNotices } from './options.js';
import { listModelsRequested } from './list_models.js';
import { createLogger, type LogFormat } from '../log/logger.js';
import { argsToYaml } from '../train/args_yaml.js';
import { runTraining } from '../train/loop.js';
import { makeTinyImagenet } from '../data/tiny.js';
import { setupDistributed } from '../train/ddp.js';
import { isDistError } from '../distributed/group.js';
import { PEER_FAILURE_EXIT_CODE } from '../distributed/launcher.js';

/** Where the built-in tiny dataset is generated when no DATA_DIR is given (relative to the working directory). */
export const TINY_DEFAULT_ROOT = 'data/tiny-imagenet';

export async function trainCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseArgs({
    scriptName: 'mambaout-train',
    usage: '$0 [data_dir] [options]\n\nTrain a MambaOut model with the timm 0.6.11 recipe (flags and defaults of MambaOut\'s train.py).',
    flags: TRAIN_FLAGS,
    positionals: [{ name: 'data_dir', describe: 'path to dataset (default: a generated tiny ImageNet-style dataset)', type: 'string' }],
    argv,
  });
  const args = parsed.args;
  if (args.__help || listModelsRequested(args)) return 0;
  const yamlText = argsToYaml(args); // timm writes args.yaml from the args right after parsing
  const rank = Number(process.env.RANK ?? 0);
  const logger = createLogger({ format: args.log_format as LogFormat, silent: rank !== 0 });
  for (const k of parsed.unknownConfigKeys) logger.warn(`config key '${k}' in ${parsed.configFile} matches no option; ignored`);
  for (const n of inertNotices(TRAIN_FLAGS, args)) logger.info(n);
  if (!args.data_dir) {
    const r = await makeTinyImagenet({ root: TINY_DEFAULT_ROOT });
    logger.info(r.created ? `No data_dir given: generated the tiny dataset in ${r.root} (${r.images} images).` : `No data_dir given: using the tiny dataset in ${r.root}.`);
    args.data_dir = r.root;
  }
  args.__yaml = yamlText;

  const dist = await setupDistributed(args, logger);
  let stop = false;
  let sigints = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    sigints++;
    if (sigints > 1) {
      process.stderr.write(`${sig} again: aborting without saving.\n`);
      process.exit(130);
    }
    stop = true;
    if (rank === 0) process.stderr.write(`\n${sig}: finishing this step, then saving a recovery checkpoint (press Ctrl-C again to abort).\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await runTraining(args, { logger, dist, stopRequested: () => stop });
    return r.interrupted ? 130 : 0;
  } catch (e) {
    // Another rank failed: say so and exit with the launcher's "peer failure" code, so the launcher blames that rank.
    if (isDistError(e) && e.rank !== rank) {
      process.stderr.write(`mambaout-train (rank ${rank}): ${e.message}\n`);
      return PEER_FAILURE_EXIT_CODE;
    }
    throw e;
  } finally {
    await dist?.close();
  }
}
