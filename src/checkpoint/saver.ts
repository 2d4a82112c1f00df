/**
 * Training checkpoints: format and timm's CheckpointSaver policy (timm-reference §8.2-8.5).
 *
 * Format: one `.safetensors` file. Tensors: `state_dict.<name>` (model, PyTorch names and layouts, so the weights
 * load straight into PyTorch after stripping the prefix — or use exportWeights), `state_dict_ema.<name>` (EMA, when
 * enabled), `optimizer.<k>` (optimizer state tensors). `__metadata__` holds `format` = 'mambaout-train-checkpoint'
 * and `json` = everything else (epoch, arch, version 2, args, metric, optimizer hyper-parameters, RNG states, ...),
 * and `config` = what the model is (architecture, classes and their names, eval preprocessing: model_meta.ts), so
 * predict/validate/export/demo need nothing but the file.
 * Every file is written atomically (temporary name, fsync, rename), so a crash at any moment leaves the previous
 * `last` intact.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import { pyRepr } from '../utils/pyformat.js';
import type { TensorMap } from './types.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';
import { writeError } from './atomic.js';
import { modelMetaFromSafetensors, SAFETENSORS_META_KEY, type ModelMeta } from './model_meta.js';

export const TRAIN_CKPT_FORMAT = 'mambaout-train-checkpoint';
export const CKPT_EXT = '.safetensors';

export interface TrainCheckpoint {
  epoch: number;
  arch: string;
  version: number;
  args: Record<string, unknown>;
  metric?: number | null;
  stateDict: TensorMap;
  stateDictEma?: TensorMap | null;
  optimizer?: { tensors: TensorMap; meta: unknown } | null;
  /** Anything else resume needs (RNG states, num_updates, batch index of a recovery file...). */
  extra?: Record<string, unknown>;
  /** What the model is: architecture, classes, class names, eval preprocessing. */
  modelMeta?: ModelMeta | null;
}

export async function writeTrainCheckpoint(path: string, ck: TrainCheckpoint): Promise<void> {
  const map: TensorMap = new Map();
  for (const [k, v] of ck.stateDict) map.set(`state_dict.${k}`, v);
  if (ck.stateDictEma) for (const [k, v] of ck.stateDictEma) map.set(`state_dict_ema.${k}`, v);
  if (ck.optimizer) for (const [k, v] of ck.optimizer.tensors) map.set(`optimizer.${k}`, v);
  const json = {
    epoch: ck.epoch,
    arch: ck.arch,
    version: ck.version,
    args: ck.args,
    metric: ck.metric ?? null,
    optimizer: ck.optimizer ? ck.optimizer.meta : null,
    has_ema: Boolean(ck.stateDictEma),
    extra: ck.extra ?? {},
  };
  const metadata: Record<string, string> = { format: TRAIN_CKPT_FORMAT, json: JSON.stringify(json) };
  if (ck.modelMeta) metadata[SAFETENSORS_META_KEY] = JSON.stringify(ck.modelMeta);
  await writeSafetensors(path, map, metadata);
}

export function isTrainCheckpointMeta(meta: Record<string, string> | undefined | null): boolean {
  return meta?.format === TRAIN_CKPT_FORMAT;
}

export async function readTrainCheckpoint(path: string): Promise<TrainCheckpoint> {
  const { tensors, metadata } = await readSafetensorsWithMeta(path);
  if (!isTrainCheckpointMeta(metadata)) throw new UserError(`'${path}' is not a mambaout training checkpoint (no training state inside); use it with --initial-checkpoint instead of --resume`);
  return { ...splitTrainTensors(tensors, parseTrainMeta(metadata!.json, path)), modelMeta: modelMetaFromSafetensors(metadata, path) };
}

/**
 * The `json` metadata of a training checkpoint, checked field by field (a hand-edited or hostile file gets one
 * sentence, not a TypeError deep inside resume): a JSON object whose epoch is a whole number, arch a string, args,
 * optimizer and extra objects (or absent/null), metric a number or null.
 */
export function parseTrainMeta(text: string | undefined, path: string): Record<string, unknown> {
  const corrupt = (why: string) => new UserError(`'${path}' has corrupt checkpoint metadata (${why})`);
  let json: unknown;
  try {
    json = JSON.parse(text ?? '');
  } catch {
    throw corrupt('its json entry is not JSON');
  }
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(json)) throw corrupt('its json entry is not an object');
  const optObj = (k: string) => {
    if (json[k] !== undefined && json[k] !== null && !isObj(json[k])) throw corrupt(`'${k}' is not an object`);
  };
  if (!Number.isInteger(json.epoch) || (json.epoch as number) < 0) throw corrupt(`'epoch' is ${JSON.stringify(json.epoch) ?? 'missing'}, not a whole number`);
  if (json.arch !== undefined && typeof json.arch !== 'string') throw corrupt("'arch' is not a string");
  if (json.version !== undefined && !Number.isInteger(json.version)) throw corrupt("'version' is not a whole number");
  if (json.metric !== undefined && json.metric !== null && typeof json.metric !== 'number') throw corrupt("'metric' is not a number");
  optObj('args');
  optObj('optimizer');
  optObj('extra');
  return json;
}

export function splitTrainTensors(tensors: TensorMap, json: Record<string, unknown>): TrainCheckpoint {
  const stateDict: TensorMap = new Map();
  const ema: TensorMap = new Map();
  const opt: TensorMap = new Map();
  for (const [k, v] of tensors) {
    if (k.startsWith('state_dict_ema.')) ema.set(k.slice('state_dict_ema.'.length), v);
    else if (k.startsWith('state_dict.')) stateDict.set(k.slice('state_dict.'.length), v);
    else if (k.startsWith('optimizer.')) opt.set(k.slice('optimizer.'.length), v);
  }
  return {
    epoch: Number(json.epoch),
    arch: String(json.arch ?? ''),
    version: Number(json.version ?? 2),
    args: (json.args as Record<string, unknown>) ?? {},
    metric: (json.metric as number | null) ?? null,
    stateDict,
    stateDictEma: ema.size ? ema : null,
    optimizer: json.optimizer ? { tensors: opt, meta: json.optimizer } : null,
    extra: (json.extra as Record<string, unknown>) ?? {},
  };
}

async function readSafetensorsWithMeta(path: string): Promise<{ tensors: TensorMap; metadata: Record<string, string> | null }> {
  const map = await readSafetensors(path);
  return { tensors: map, metadata: map.metadata ?? null };
}

/** Replace `dst` by a hard link to `src` atomically (link to a temp name, then rename); copy if links fail. */
async function linkAtomic(src: string, dst: string): Promise<void> {
  const tmp = join(dirname(dst), `.${basename(dst)}.${process.pid}.tmp`);
  try {
    await fsp.rm(tmp, { force: true });
    try {
      await fsp.link(src, tmp);
    } catch {
      await fsp.copyFile(src, tmp);
    }
    await fsp.rename(tmp, dst);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(dst, e);
  }
}

/**
 * timm CheckpointSaver: `last`, top-`maxHistory` `checkpoint-<epoch>` by metric, `model_best`, recovery files.
 * The tracking list is not persisted (like timm): a resumed run starts a fresh list.
 */
export class CheckpointSaver {
  readonly checkpointFiles: [string, number][] = [];
  bestEpoch: number | null = null;
  bestMetric: number | null = null;
  private currRecovery = '';
  private prevRecovery = '';
  private readonly cmp: (a: number, b: number) => boolean;

  constructor(
    readonly dir: string,
    readonly maxHistory = 10,
    readonly decreasing = false,
    private readonly log: (msg: string) => void = () => {},
  ) {
    this.cmp = decreasing ? (a, b) => a < b : (a, b) => a > b;
  }

  path(name: string): string {
    return join(this.dir, name + CKPT_EXT);
  }

  /** Save the end-of-epoch checkpoint; returns the best (metric, epoch) so far. */
  async saveCheckpoint(epoch: number, ck: TrainCheckpoint, metric: number | null): Promise<{ bestMetric: number | null; bestEpoch: number | null }> {
    const last = this.path('last');
    await writeTrainCheckpoint(last, { ...ck, epoch, metric });
    const worst = this.checkpointFiles.length ? this.checkpointFiles[this.checkpointFiles.length - 1] : null;
    if (this.checkpointFiles.length < this.maxHistory || metric === null || worst === null || this.cmp(metric, worst[1])) {
      if (this.checkpointFiles.length >= this.maxHistory) await this.cleanup(this.maxHistory - 1);
      const file = this.path(`checkpoint-${epoch}`);
      await linkAtomic(last, file);
      this.checkpointFiles.push([file, metric ?? NaN]);
      // stable sort, best first
      const sorted = this.checkpointFiles
        .map((v, i) => [v, i] as const)
        .sort((a, b) => (a[0][1] === b[0][1] || (Number.isNaN(a[0][1]) && Number.isNaN(b[0][1])) ? a[1] - b[1] : this.cmp(a[0][1], b[0][1]) ? -1 : this.cmp(b[0][1], a[0][1]) ? 1 : a[1] - b[1]))
        .map((x) => x[0]);
      this.checkpointFiles.splice(0, this.checkpointFiles.length, ...sorted);
      this.log('Current checkpoints:\n' + this.checkpointFiles.map(([f, m]) => ` ('${f}', ${formatMetric(m)})`).join('\n'));
      if (metric !== null && (this.bestMetric === null || this.cmp(metric, this.bestMetric))) {
        this.bestEpoch = epoch;
        this.bestMetric = metric;
        await linkAtomic(last, this.path('model_best'));
      }
    }
    return { bestMetric: this.bestMetric, bestEpoch: this.bestEpoch };
  }

  private async cleanup(trim: number): Promise<void> {
    const drop = this.checkpointFiles.splice(Math.max(trim, 0));
    for (const [f] of drop) {
      this.log(`Cleaning checkpoint: ('${f}')`);
      await fsp.rm(f, { force: true });
    }
  }

  /** Recovery checkpoint `recovery-<epoch>-<batch>`; keeps the current and previous ones. */
  async saveRecovery(epoch: number, batchIdx: number, ck: TrainCheckpoint): Promise<string> {
    const file = this.path(`recovery-${epoch}-${batchIdx}`);
    await writeTrainCheckpoint(file, { ...ck, epoch });
    if (this.prevRecovery && this.prevRecovery !== file) {
      this.log(`Cleaning recovery: ${this.prevRecovery}`);
      await fsp.rm(this.prevRecovery, { force: true });
    }
    this.prevRecovery = this.currRecovery;
    this.currRecovery = file;
    return file;
  }
}

function formatMetric(m: number): string {
  return Number.isNaN(m) ? 'None' : pyRepr(m);
}
