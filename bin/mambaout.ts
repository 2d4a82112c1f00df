#!/usr/bin/env node
/**
 * mambaout: `mambaout train|validate|predict|export|demo|distributed-train [flags]`, the per-tool programs under one
 * name. Drops the subcommand from argv and runs the tool's own entry file (the sibling bin), so flags, help and exit
 * codes are exactly those of `mambaout-<tool>`; without a known subcommand, src/cli/subcommands.ts answers.
 */
import { runMain } from '../src/cli/main.js';
import { SUBCOMMANDS, isSubcommand, umbrellaCommand } from '../src/cli/subcommands.js';

const sub = process.argv[2];
if (isSubcommand(sub)) {
  process.argv.splice(2, 1);
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  await import(new URL(`./${SUBCOMMANDS[sub].file}${ext}`, import.meta.url).href);
} else {
  runMain(() => umbrellaCommand(sub));
}
