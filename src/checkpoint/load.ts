/**
 * Loading a checkpoint the way timm 0.6.11's load_state_dict does (docs/timm-reference.md §8.4), whatever wrote it:
 * a PyTorch zip (`.pth`, `.pth.tar`, `.pt`: torch.save, timm's train.py) read by pth.ts, or `.safetensors` (ours,
 * Hugging Face's) read by safetensors.ts, told apart by content. Picks the state dict inside (EMA on request),
 * strips DataParallel's `module.` prefix and returns timm's other checkpoint fields (epoch, arch, args, metric,
 * optimizer) as `meta`.
 */
import { UserError } from '../errors.js';
import type { ExpectedModel, HostTensor, TensorMap } from './types.js';
import { isHostTensor, isPyRecord, type PyRecord, type PyValue } from './pickle.js';
import { openForRead, readAt } from './files.js';
import { withPth } from './pth.js';
import { readSafetensors } from './safetensors.js';
import { isTrainCheckpointMeta, parseTrainMeta, splitTrainTensors } from './saver.js';

/** Which entry of a checkpoint dict the state dict came from (null: the object itself). */
export type StateDictKey = 'state_dict_ema' | 'model_ema' | 'state_dict' | 'model' | null;

/**
 * Returns a copy of `map` in the same order with `prefix` removed from every key that
 * starts with it (timm's clean_state_dict; other keys are kept as they are).
 */
export function stripPrefix(map: TensorMap, prefix = 'module.'): TensorMap {
  const out: TensorMap = new Map();
  for (const [k, v] of map) {
    const name = k.startsWith(prefix) ? k.slice(prefix.length) : k;
    if (out.has(name)) throw new UserError(`state dict has both '${k}' and '${name}' after removing the '${prefix}' prefix`);
    out.set(name, v);
  }
  return out;
}

/**
 * Picks the state dict inside an unpickled checkpoint exactly like timm 0.6.11
 * `load_state_dict` (docs/timm-reference.md §8.4): if `obj` is a dict, take `state_dict_ema`
 * (only when useEma and present and not None), else `model_ema` (same rule), else
 * `state_dict` if the key exists, else `model` if the key exists, else the dict
 * itself. Keys must be strings and values tensors. The `module.` prefix is NOT
 * stripped here (see stripPrefix / loadCheckpoint).
 * `label` names the file in error messages.
 */
export function pickStateDict(obj: PyValue, useEma: boolean, label = 'checkpoint'): { stateDict: TensorMap; key: StateDictKey } {
  if (!(obj instanceof Map)) {
    throw new UserError(`'${label}' holds no state dict (its top-level object is ${describe(obj)}, not a dict of tensors)`);
  }
  let key: StateDictKey = null;
  const present = (k: string) => obj.has(k) && obj.get(k) !== null && obj.get(k) !== undefined;
  if (useEma && present('state_dict_ema')) key = 'state_dict_ema';
  else if (useEma && present('model_ema')) key = 'model_ema';
  else if (obj.has('state_dict')) key = 'state_dict';
  else if (obj.has('model')) key = 'model';
  const sd = key === null ? obj : (obj.get(key) as PyValue);
  const where = key === null ? `'${label}'` : `entry '${key}' of '${label}'`;
  if (!(sd instanceof Map)) throw new UserError(`${where} is ${describe(sd)}, not a dict of tensors`);
  const out: TensorMap = new Map();
  for (const [k, v] of sd) {
    if (typeof k !== 'string') throw new UserError(`${where} is not a state dict: it has a non-string key ${String(k)}`);
    if (!isHostTensor(v)) throw new UserError(`${where} is not a state dict: '${k}' is ${describe(v)}, not a tensor`);
    out.set(k, v);
  }
  return { stateDict: out, key };
}

function describe(v: PyValue | undefined): string {
  if (v === null || v === undefined) return 'None';
  if (Array.isArray(v)) return 'a list/tuple';
  if (v instanceof Map) return 'a dict';
  if (isHostTensor(v)) return 'a tensor';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

export interface LoadCheckpointOptions {
  /**
   * Prefer `state_dict_ema` / `model_ema` when present (timm's use_ema).
   * Default false (validate.py's default); note timm's load_checkpoint defaults to
   * true, which is what train.py's --initial-checkpoint uses: pass it explicitly.
   */
  useEma?: boolean;
  /**
   * Read only the tensors of the chosen state dict (saves memory and time for inference
   * on training checkpoints). Then `meta.optimizer` and `meta.raw` are left out.
   */
  stateDictOnly?: boolean;
  /**
   * The model the weights are for (models/registry.ts expectedModel): a state-dict tensor larger than the model's
   * parameter of that name is refused by name before it is read, and the inflate budget can grow with the model.
   */
  expect?: ExpectedModel;
}

export interface CheckpointMeta {
  format: 'pth' | 'safetensors';
  /** where the state dict came from; null = the top-level object itself */
  stateDictKey: StateDictKey;
  /** a `state_dict_ema` or `model_ema` entry is present (not None) */
  hasEma: boolean;
  /** timm train.py checkpoint fields, when present */
  epoch?: number;
  arch?: string;
  /** argparse.Namespace as a plain record of its attributes */
  args?: PyRecord;
  metric?: number | null;
  version?: number;
  /** torch optimizer state_dict as unpickled (Map with 'state' and 'param_groups') */
  optimizer?: PyValue;
  /** safetensors `__metadata__` */
  metadata?: Record<string, string>;
  /** the whole unpickled object (absent with stateDictOnly and for safetensors) */
  raw?: PyValue;
}

export interface LoadedCheckpoint {
  /** in the file's order, leading `module.` stripped from keys */
  stateDict: TensorMap;
  meta: CheckpointMeta;
}

/**
 * Loads a checkpoint the way timm's load_state_dict does (§8.4) from
 * `.pth` / `.pth.tar` / `.pt` (PyTorch zip) or `.safetensors` (detected by content):
 * picks `state_dict_ema` / `model_ema` (only with useEma, when present and not None),
 * else `state_dict`, else `model`, else the object itself; strips a leading `module.`
 * from keys; returns the other timm fields in `meta`.
 */
export async function loadCheckpoint(path: string, opts: LoadCheckpointOptions = {}): Promise<LoadedCheckpoint> {
  const useEma = opts.useEma ?? false;
  const { fh, size } = await openForRead(path);
  let head: Uint8Array;
  try {
    head = await readAt(fh, 0, Math.min(size, 9));
  } finally {
    await fh.close();
  }
  const isZip = head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const looksSafetensors = head.length === 9 && head[8] === 0x7b /* '{' */;
  if (!isZip && (looksSafetensors || path.toLowerCase().endsWith('.safetensors'))) {
    const map = await readSafetensors(path);
    if (isTrainCheckpointMeta(map.metadata)) {
      // A mambaout training checkpoint (saver.ts): pick EMA or model weights like timm's load_state_dict.
      const json = map.metadata.json === undefined ? {} : parseTrainMeta(map.metadata.json, path);
      const ck = splitTrainTensors(map, json);
      const ema = useEma && ck.stateDictEma ? ck.stateDictEma : null;
      return {
        stateDict: stripPrefix(ema ?? ck.stateDict),
        meta: {
          format: 'safetensors', stateDictKey: ema ? 'state_dict_ema' : 'state_dict', hasEma: Boolean(ck.stateDictEma),
          epoch: ck.epoch, arch: ck.arch, args: ck.args as PyRecord, metric: ck.metric ?? null, version: ck.version, metadata: map.metadata,
        },
      };
    }
    return {
      stateDict: stripPrefix(map),
      meta: { format: 'safetensors', stateDictKey: null, hasEma: false, metadata: map.metadata },
    };
  }
  return withPth(path, async (a) => {
    const root = a.root;
    const { stateDict, key } = pickStateDict(root, useEma, path);
    const names = new Map<HostTensor, string>();
    for (const [k, t] of stateDict) names.set(t, k.startsWith('module.') ? k.slice('module.'.length) : k);
    if (opts.stateDictOnly) await a.materialize(new Set(stateDict.values()), names);
    else await a.materialize(undefined, names);
    const meta: CheckpointMeta = { format: 'pth', stateDictKey: key, hasEma: false };
    if (root instanceof Map) {
      const get = (k: string) => root.get(k);
      meta.hasEma = [get('state_dict_ema'), get('model_ema')].some((v) => v !== undefined && v !== null);
      const epoch = get('epoch');
      if (typeof epoch === 'number') meta.epoch = epoch;
      const arch = get('arch');
      if (typeof arch === 'string') meta.arch = arch;
      const args = get('args');
      if (isPyRecord(args)) meta.args = args;
      const metric = get('metric');
      if (typeof metric === 'number' || metric === null) meta.metric = metric;
      const version = get('version');
      if (typeof version === 'number') meta.version = version;
      if (!opts.stateDictOnly) {
        if (root.has('optimizer')) meta.optimizer = get('optimizer') as PyValue;
        meta.raw = root;
      }
    } else if (!opts.stateDictOnly) {
      meta.raw = root;
    }
    return { stateDict: stripPrefix(stateDict), meta };
  }, { expect: opts.expect });
}
