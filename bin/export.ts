#!/usr/bin/env node
/**
 * mambaout-export: a model's weights as ONNX or as a PyTorch-named safetensors state dict. The command is
 * src/cli/export.ts.
 *
 *   mambaout-export --checkpoint output/train/EXP/model_best.safetensors --format onnx -o femto.onnx
 */
import { runMain } from '../src/cli/main.js';
import { exportCommand } from '../src/cli/export.js';

runMain(() => exportCommand(process.argv.slice(2)));
