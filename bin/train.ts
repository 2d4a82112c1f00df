#!/usr/bin/env node
/**
 * mambaout-train: timm 0.6.11 train.py (MambaOut copy) on tfjs. The command is src/cli/train.ts.
 *
 *   mambaout-train DATA_DIR --model mambaout_tiny --opt adamw --lr 4e-3 --warmup-epochs 20 -b 128 --grad-accum-steps 4 --drop-path 0.2
 */
import { runMain } from '../src/cli/main.js';
import { trainCommand } from '../src/cli/train.js';

runMain(() => trainCommand(process.argv.slice(2)));
