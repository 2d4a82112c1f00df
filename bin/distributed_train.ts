#!/usr/bin/env node
/**
 * mambaout-distributed-train: one mambaout-train worker per GPU (torchrun / distributed_train.sh). The command is
 * src/cli/distributed_train.ts; the workers run bin/train next to this file.
 *
 *   mambaout-distributed-train NUM_GPUS DATA_DIR [mambaout-train flags]
 */
import { fileURLToPath } from 'node:url';
import { runMain } from '../src/cli/main.js';
import { distributedTrainCommand } from '../src/cli/distributed_train.js';

runMain(() => distributedTrainCommand(process.argv.slice(2), fileURLToPath(import.meta.url)));
