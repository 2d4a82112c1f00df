/**
 * timm's args.yaml: train.py writes the flags as YAML (keys sorted, block style) as they were right after parsing,
 * before runtime fields are added (docs/timm-reference.md §6, §8.2).
 */
import YAML from 'yaml';

/** YAML text of the parsed flags with sorted keys; keys starting with `__` are ours, not timm's, and left out. */
export function argsToYaml(args: Record<string, unknown>): string {
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(args).sort()) if (!k.startsWith('__')) sorted[k] = args[k];
  return YAML.stringify(sorted, { sortMapEntries: true });
}
