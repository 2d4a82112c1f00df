#!/usr/bin/env node
/**
 * mambaout-validate: timm validate.py for MambaOut. The command is src/cli/validate.ts.
 *
 *   mambaout-validate /data/imagenet --model mambaout_femto --pretrained -b 128
 *   mambaout-validate DATA --checkpoint output/train/EXP/model_best.safetensors
 */
import { runMain } from '../src/cli/main.js';
import { validateCommand } from '../src/cli/validate.js';

runMain(() => validateCommand(process.argv.slice(2)));
