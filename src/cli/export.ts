/**
 * mambaout-export: write a model's weights for use elsewhere (bin/export.ts).
 *
 *   mambaout-export --checkpoint output/train/EXP/model_best.safetensors --format onnx -o femto.onnx
 *   mambaout-export --checkpoint last.safetensors --format safetensors -o femto_weights.safetensors
 *   mambaout-export --model mambaout_femto --pretrained --format onnx
 *
 * onnx: an ONNX graph built from our own model definition (opset 17, input 'input' [N,3,H,W], output 'logits').
 * safetensors: the plain state dict with PyTorch names and layouts, loadable by the original PyTorch MambaOut class
 * (`model.load_state_dict(safetensors.torch.load_file(path))`).
 * Both carry the model's metadata (architecture, classes and their names, input size, mean/std, interpolation, crop;
 * src/checkpoint/model_meta.ts): ONNX as metadata_props, safetensors as the `config` entry of __metadata__.
 */
import { parseArgs } from './parse.js';
import type { Flag } from './options.js';
import { readWeights, stateDictClasses } from '../inference/load.js';
import { resolveClassNames } from '../inference/labels.js';
import { createModel } from '../models/mambaout.js';
import { DEFAULT_MODEL, getModelConfig } from '../models/registry.js';
import { buildOnnxModel, writeOnnx } from '../export/onnx.js';
import { buildModelMeta, onnxMetadataProps, SAFETENSORS_META_KEY } from '../checkpoint/model_meta.js';
import { writeSafetensors } from '../checkpoint/safetensors.js';
import { initBackend } from '../backend/index.js';

const G = 'Export options:';
export const EXPORT_FLAGS: Flag[] = [
  { dest: 'model', type: 'string', default: undefined, describe: `model name (default: the checkpoint's architecture, else ${DEFAULT_MODEL})`, group: G, alias: ['m'] },
  { dest: 'checkpoint', type: 'string', default: '', describe: 'checkpoint to export (.pth, .pth.tar, .safetensors, training checkpoints)', group: G },
  { dest: 'pretrained', type: 'boolean', default: false, describe: 'export the official release weights', group: G },
  { dest: 'pretrained_path', type: 'string', default: '', describe: 'local file with the release weights', group: G },
  { dest: 'use_ema', type: 'boolean', default: false, describe: 'export the EMA weights of a training checkpoint', group: G },
  { dest: 'format', type: 'string', default: 'onnx', describe: 'onnx or safetensors', group: G, choices: ['onnx', 'safetensors'] },
  { dest: 'output', type: 'string', default: '', describe: 'output file (default: <model>.<format>)', group: G, alias: ['o'] },
  { dest: 'opset', type: 'number', default: 17, describe: 'ONNX opset (17-21)', group: G },
  { dest: 'layout', type: 'string', default: 'nchw', describe: 'ONNX input layout: nchw ([N,3,H,W], as PyTorch) or nhwc', group: G, choices: ['nchw', 'nhwc'] },
];

export async function exportCommand(argv: readonly string[]): Promise<number> {
  const { args: a } = parseArgs({ scriptName: 'mambaout-export', usage: '$0 (--checkpoint F | [--model M] --pretrained) [--format onnx|safetensors] [-o FILE]', flags: EXPORT_FLAGS, positionals: [], argv });
  if (a.__help) return 0;
  const { stateDict, source, architecture, meta } = await readWeights({
    model: (a.model as string | null) || null,
    checkpoint: (a.checkpoint as string) || undefined,
    pretrained: a.pretrained as boolean,
    pretrainedPath: (a.pretrained_path as string) || undefined,
    useEma: a.use_ema as boolean,
  });
  const numClasses = stateDictClasses(stateDict) ?? undefined;
  // Strict check through the model: every key present with the right shape.
  await initBackend('cpu');
  const m = createModel(getModelConfig(architecture).name, { noInit: true, numClasses });
  m.loadStateDict(stateDict);
  // What the file says about itself, carried into the export; release weights get the model's default config and
  // the ImageNet names.
  const d = getModelConfig(architecture).defaultCfg;
  const modelMeta = meta ?? buildModelMeta({ ...d, architecture, numClasses: m.numClasses, classNames: m.numClasses === 1000 ? resolveClassNames(1000) : null });
  const format = a.format as string;
  const out = (a.output as string) || `${architecture}.${format}`;
  if (format === 'onnx') {
    const bytes = buildOnnxModel({ depths: m.depths, dims: m.dims, numClasses: m.numClasses }, stateDict, {
      opset: a.opset as number,
      layout: a.layout as 'nchw' | 'nhwc',
      metadata: onnxMetadataProps(modelMeta),
    });
    await writeOnnx(out, bytes);
    console.log(`wrote ${out} (${(bytes.byteLength / 1e6).toFixed(1)} MB, ONNX opset ${a.opset}, input [N,${a.layout === 'nchw' ? '3,H,W' : 'H,W,3'}], ${m.numClasses} classes) from ${source}`);
  } else {
    await writeSafetensors(out, m.stateDict(), { format: 'pt', model: architecture, [SAFETENSORS_META_KEY]: JSON.stringify(modelMeta) });
    console.log(`wrote ${out} (${m.numParams()} parameters, PyTorch names and layouts) from ${source}`);
  }
  m.dispose();
  return 0;
}
