/**
 * The `mambaout` command: `mambaout <tool> [flags]` runs the same program as `mambaout-<tool> [flags]` (git-style
 * subcommands beside the per-tool bins, so `npx mambaout train ...` works without knowing the bin names).
 * bin/mambaout.ts runs the tool's own bin for a known subcommand; anything else comes here (umbrellaCommand).
 */
import { UserError } from '../errors.js';

export const SUBCOMMANDS = {
  train: { file: 'train', about: 'train a model (timm train.py flags; without DATA: the built-in tiny dataset)' },
  validate: { file: 'validate', about: 'top-1/top-5/loss of a model on an ImageNet-style folder (timm validate.py)' },
  predict: { file: 'predict', about: 'top-5 ImageNet classes per image' },
  export: { file: 'export', about: 'write a model as ONNX or as a PyTorch-named safetensors state dict' },
  demo: { file: 'demo', about: 'a local web page that classifies the images you drop on it' },
  'distributed-train': { file: 'distributed_train', about: 'one training process per GPU (torchrun-style)' },
} as const;

export type Subcommand = keyof typeof SUBCOMMANDS;

export function isSubcommand(s: string | undefined): s is Subcommand {
  return s !== undefined && Object.hasOwn(SUBCOMMANDS, s);
}

export function subcommandUsage(): string {
  const w = Math.max(...Object.keys(SUBCOMMANDS).map((k) => k.length));
  const lines = Object.entries(SUBCOMMANDS).map(([k, v]) => `  ${k.padEnd(w)}  ${v.about}`);
  return [
    'usage: mambaout <command> [flags]   (the same as mambaout-<command> [flags])',
    '',
    'commands:',
    ...lines,
    '',
    '`mambaout <command> --help` lists its flags; `mambaout --version` prints the version.',
  ].join('\n');
}

/** `mambaout` without a known subcommand: --help prints the table (exit 0); anything else prints it and names the problem. */
export async function umbrellaCommand(sub: string | undefined): Promise<number> {
  if (sub === '--help' || sub === '-h') {
    process.stdout.write(subcommandUsage() + '\n');
    return 0;
  }
  process.stderr.write(subcommandUsage() + '\n\n');
  throw new UserError(sub === undefined ? 'give a command' : `unknown command '${sub}'; choose one of ${Object.keys(SUBCOMMANDS).join(', ')}`);
}
