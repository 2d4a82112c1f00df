#!/usr/bin/env node
/**
 * mambaout-demo: a local web page that classifies the images dropped on it. The command is src/cli/demo.ts.
 *
 *   mambaout-demo --checkpoint output/train/EXP/model_best.safetensors [--port 7860]
 */
import { runMain } from '../src/cli/main.js';
import { demoCommand } from '../src/cli/demo.js';

runMain(() => demoCommand(process.argv.slice(2)));
