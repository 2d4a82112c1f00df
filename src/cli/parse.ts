/**
 * The one way our commands read their command line (src/cli/<command>.ts): a flag table (options.ts `Flag[]`) given
 * to parseArgs, timm-style: `-c/--config FILE` (YAML) sets new defaults, explicit CLI flags win; the result is a
 * record keyed by argparse dest names (underscores), like Python's argparse.Namespace. The launcher
 * (distributed_train.ts) takes its own flags out with splitLauncherArgs and passes the rest to the workers unparsed.
 */
import { readFileSync, existsSync } from 'node:fs';
import yargs, { type Argv } from 'yargs';
import YAML from 'yaml';
import { UserError, errMessage, firstLine } from '../errors.js';
import { didYouMean } from '../utils/suggest.js';
import { flagName, toYargs, type Flag } from './options.js';

export interface ParsedArgs {
  args: Record<string, unknown>;
  /** YAML keys that match no flag. */
  unknownConfigKeys: string[];
  configFile: string;
}

export interface Positional {
  name: string;
  describe: string;
  type: 'string' | 'number';
  demand?: boolean;
  default?: unknown;
  /** Takes every remaining positional argument (a string[]; the last positional only). */
  variadic?: boolean;
}

export interface ParseArgsOptions {
  scriptName: string;
  usage: string;
  flags: readonly Flag[];
  positionals: readonly Positional[];
  argv: readonly string[];
  epilog?: string;
  /** Accept timm's `-c/--config FILE` (train, validate, export); default true. */
  config?: boolean;
  /** yargs parser settings on top of buildYargs's (e.g. `'camel-case-expansion': false`). */
  parserConfig?: Record<string, boolean>;
  /** Number flags must be finite (Infinity is refused like text); default: only text is refused. */
  finiteNumbers?: boolean;
  /** Added to the "unexpected argument" sentence, e.g. where the command takes its input instead. */
  unexpectedHint?: string;
}

/** Read the `-c/--config` value from raw argv without parsing everything. */
export function preParseConfig(argv: readonly string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-c' || a === '--config') return argv[i + 1] ?? '';
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return '';
}

export function loadYamlConfig(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new UserError(`config file '${file}' does not exist`);
  let doc: unknown;
  try {
    doc = YAML.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`config file '${file}' is not valid YAML: ${firstLine(errMessage(e))}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UserError(`config file '${file}' must hold a mapping of option names to values`);
  return doc as Record<string, unknown>;
}

/**
 * The yargs set-up every CLI shares: strict options, --help, no --version, no boolean negation (timm has real
 * --no-* flags), user errors as UserError instead of process.exit.
 */
export function buildYargs(scriptName: string, usage: string, argv: readonly string[], config: Record<string, boolean>): Argv {
  const y: Argv = yargs([...argv])
    .scriptName(scriptName)
    .usage(usage)
    // timm has flags spelled --no-aug, --no-resume-opt, --no-prefetcher: they are flags of their own, not negations.
    .parserConfiguration({ 'boolean-negation': false, ...config })
    .strictOptions(true)
    .help('help')
    .alias('help', 'h')
    .version(false)
    .wrap(Math.min(120, process.stdout.columns || 100))
    .exitProcess(false);
  return y.fail((msg, err) => {
    throw new UserError(unknownFlagMessage(msg, y) ?? (msg || err?.message || 'invalid arguments'));
  });
}

/** yargs' "Unknown argument(s): a, b" as one sentence with the closest known flags. */
function unknownFlagMessage(msg: string | undefined, y: Argv | undefined): string | null {
  const m = /^Unknown arguments?: (.*)$/.exec(msg ?? '');
  if (!m || !y) return null;
  // yargs lists every spelling it accepts (aliases, camelCase expansions); suggest the dashed ones.
  const known = Object.keys((y as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions().key).filter((k) => !/[A-Z_]/.test(k) && k !== '$0');
  const dash = (k: string) => (k.length === 1 ? `-${k}` : `--${k}`);
  const given = m[1].split(', ');
  // yargs also lists the camelCase expansion of an unknown dashed flag; name each flag once.
  const parts = given
    .filter((k) => !/[A-Z]/.test(k) || !given.some((g) => g.includes('-') && g.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) === k))
    .map((k) => `${dash(k)}${didYouMean(k, known, dash)}`);
  return `unknown option${parts.length > 1 ? 's' : ''} ${parts.join(', ')}; see --help for the options`;
}

/**
 * Spellings argparse accepts that yargs would read differently: a multi-letter alias after one dash (`-vb 64`,
 * which yargs splits into -v -b) and underscores in a flag name (`--local_rank 0`, timm's own spelling, and the
 * `--local-rank` that PyTorch >= 2 launchers pass). Both are rewritten to the dashed long flag.
 */
export function normalizeArgv(argv: readonly string[], flags: readonly Flag[]): string[] {
  const longByAlias = new Map<string, string>();
  for (const f of flags) for (const a of f.alias ?? []) if (a.length > 1) longByAlias.set(a, flagName(f.dest));
  const dests = new Set(flags.map((f) => f.dest));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const eq = a.indexOf('=');
    const head = eq >= 0 ? a.slice(0, eq) : a;
    const tail = eq >= 0 ? a.slice(eq) : '';
    if (/^-[A-Za-z][\w]+$/.test(head) && longByAlias.has(head.slice(1))) out.push(`--${longByAlias.get(head.slice(1))}${tail}`);
    else if (/^--\w+_\w*$/.test(head) && dests.has(head.slice(2))) out.push(`--${flagName(head.slice(2))}${tail}`);
    else out.push(a);
  }
  return out;
}

export function parseArgs(opts: ParseArgsOptions): ParsedArgs {
  const argv = normalizeArgv(opts.argv, opts.flags);
  const withConfig = opts.config ?? true;
  const configFile = withConfig ? preParseConfig(argv) : '';
  const overrides = configFile ? loadYamlConfig(configFile) : {};
  const byDest = new Map(opts.flags.map((f) => [f.dest, f]));
  const unknownConfigKeys: string[] = [];
  const flagDefs = toYargs(opts.flags);
  for (const [k, v] of Object.entries(overrides)) {
    const dest = k.replace(/-/g, '_');
    const f = byDest.get(dest);
    if (f) flagDefs[flagName(dest)].default = v;
    else if (!opts.positionals.some((p) => p.name === dest)) unknownConfigKeys.push(k);
  }
  let y = buildYargs(opts.scriptName, opts.usage, argv, opts.parserConfig ?? {});
  if (withConfig) y = y.option('config', { alias: 'c', type: 'string', default: '', describe: 'YAML config file specifying default arguments', group: 'Config:' });
  y = y.options(flagDefs);
  if (opts.epilog) y = y.epilog(opts.epilog);
  const parsed = y.parseSync() as Record<string, unknown>;
  if (parsed.help) return { args: { __help: true }, unknownConfigKeys, configFile };
  const positional = (parsed._ as (string | number)[]) ?? [];
  const args: Record<string, unknown> = {};
  opts.positionals.forEach((p, i) => {
    if (p.variadic) {
      args[p.name] = positional.slice(i).map(String);
      return;
    }
    let v: unknown = positional[i] ?? overrides[p.name] ?? p.default;
    if (v === undefined && p.demand) throw new UserError(`missing required argument <${p.name}>: ${p.describe}`);
    if (p.type === 'string' && v !== undefined) v = String(v);
    if (p.type === 'number' && v !== undefined) {
      v = Number(v);
      if (!Number.isFinite(v as number)) throw new UserError(`<${p.name}> must be a number, got '${positional[i]}'`);
    }
    args[p.name] = v;
  });
  if (positional.length > opts.positionals.length && !opts.positionals.some((p) => p.variadic)) {
    const hint = opts.unexpectedHint ? `; ${opts.unexpectedHint}` : '';
    throw new UserError(`unexpected argument '${positional[opts.positionals.length]}'${hint}`);
  }
  for (const f of opts.flags) {
    let v = parsed[flagName(f.dest)];
    const badNumber = opts.finiteNumbers ? typeof v !== 'number' || !Number.isFinite(v) : Number.isNaN(v);
    if (f.type === 'number' && v !== undefined && badNumber) throw new UserError(`--${flagName(f.dest)} expects a number`);
    if (f.type === 'array-number' && Array.isArray(v)) {
      if (v.some((x) => typeof x !== 'number' || Number.isNaN(x))) throw new UserError(`--${flagName(f.dest)} expects numbers`);
      if (f.nargs && v.length !== f.nargs) throw new UserError(`--${flagName(f.dest)} expects ${f.nargs} numbers`);
    }
    if (f.type === 'array-number' && typeof v === 'number') v = [v];
    args[f.dest] = v === undefined ? null : v;
  }
  if (withConfig) args.config = configFile;
  return { args, unknownConfigKeys, configFile };
}

/** `args[dest]` as a positive integer, null when not given; anything else is a UserError naming the flag. */
export function positiveInt(args: Record<string, unknown>, dest: string): number | null {
  const v = args[dest];
  if (v === undefined || v === null) return null;
  if (!Number.isInteger(v) || (v as number) < 1) throw new UserError(`--${flagName(dest)} must be a positive integer, got ${String(v)}`);
  return v as number;
}

/**
 * A launcher's command line (mambaout-distributed-train, torchrun's style): its own `flags` are taken out wherever
 * they stand (`--name value` or `--name=value`, dashes or underscores), a leading whole number is NUM_GPUS, and
 * everything else is passed on to the workers as it is (their own parser judges it). Values are keyed by dest.
 */
export function splitLauncherArgs(argv: readonly string[], flags: readonly Flag[]): { launcher: Record<string, string>; nproc: number | null; rest: string[] } {
  const names = new Set(flags.map((f) => flagName(f.dest)));
  const launcher: Record<string, string> = {};
  const rest: string[] = [];
  let nproc: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-_]+)(?:=(.*))?$/.exec(a);
    const name = m?.[1].replace(/_/g, '-');
    if (m && name && names.has(name)) {
      const v = m[2] ?? argv[++i];
      if (v === undefined) throw new UserError(`--${name} needs a value`);
      launcher[name.replace(/-/g, '_')] = v;
      continue;
    }
    if (i === 0 && /^\d+$/.test(a)) {
      nproc = Number(a);
      continue;
    }
    rest.push(a);
  }
  return { launcher, nproc, rest };
}
