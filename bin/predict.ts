#!/usr/bin/env node
/**
 * mambaout-predict: the top-k classes of each image. The command is src/cli/predict.ts.
 *
 *   mambaout-predict IMAGE_OR_DIR... --checkpoint output/train/EXP/model_best.safetensors [--json [FILE]]
 */
import { runMain } from '../src/cli/main.js';
import { predictCommand } from '../src/cli/predict.js';

runMain(() => predictCommand(process.argv.slice(2)));
