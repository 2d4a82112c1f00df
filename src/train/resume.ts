/**
 * `--resume FILE`: the state a run continues from, read from our own training checkpoint (.safetensors) or from a
 * timm train.py checkpoint (.pth.tar written by torch.save), so a run started in PyTorch continues here.
 *
 * timm's resume_checkpoint (timm-reference §8.5): a dict with `state_dict` -> model weights (`module.` stripped),
 * the optimizer's state_dict unless --no-resume-opt (torch's own layout: `state` by parameter index, `param_groups`
 * with lr / initial_lr / betas ...; our optimizers load it as it is), `state_dict_ema` for --model-ema, and
 * resume epoch = epoch + 1 when `version` > 1. Anything else is a bare state dict: weights only, training starts at
 * epoch 0 (resume_epoch None). `amp_scaler` / `amp` (GradScaler / Apex state) have no counterpart in float32
 * training and are reported, not loaded.
 */
import { open } from 'node:fs/promises';
import { loadCheckpoint, stripPrefix, pickStateDict } from '../checkpoint/load.js';
import { isTrainCheckpointMeta, readTrainCheckpoint } from '../checkpoint/saver.js';
import { asFloat32, type HostTensor, type TensorMap } from '../checkpoint/types.js';
import { isHostTensor } from '../checkpoint/pickle.js';
import { fromTorchLayout, torchShape, type ParamKind } from '../models/layers.js';
import { readSafetensors } from '../checkpoint/safetensors.js';
import { unflattenOptimizerState, type LoadableStateDict, type OptimizerStateMeta } from './optim/index.js';
import { UserError } from '../errors.js';

export interface ResumeState {
  /** 'mambaout': our .safetensors training checkpoint; 'timm': a torch.save dict; 'weights': a bare state dict. */
  kind: 'mambaout' | 'timm' | 'weights';
  stateDict: TensorMap;
  stateDictEma: TensorMap | null;
  /** Optimizer state in the form Optimizer.loadStateDict takes (null: none in the file). */
  optimizer: LoadableStateDict | Map<unknown, unknown> | null;
  /** The epoch the checkpoint finished (null for bare weights). */
  epoch: number | null;
  /** First epoch to run: epoch + 1 when version > 1, else epoch; null when the file says nothing. */
  resumeEpoch: number | null;
  arch: string | null;
  /** Entries the file holds that this port does not restore (e.g. amp_scaler). */
  ignored: string[];
}

function isSafetensorsFile(head: Uint8Array, path: string): boolean {
  const isZip = head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b;
  return !isZip && (path.toLowerCase().endsWith('.safetensors') || (head.length >= 9 && head[8] === 0x7b));
}

export async function readResumeCheckpoint(path: string): Promise<ResumeState> {
  let head: Uint8Array;
  try {
    const fh = await open(path, 'r');
    try {
      const buf = new Uint8Array(9);
      const { bytesRead } = await fh.read(buf, 0, 9, 0);
      head = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    throw new UserError(`--resume checkpoint '${path}' does not exist or cannot be read`);
  }

  if (isSafetensorsFile(head, path)) {
    const map = await readSafetensors(path);
    if (!isTrainCheckpointMeta(map.metadata)) {
      return { kind: 'weights', stateDict: stripPrefix(map), stateDictEma: null, optimizer: null, epoch: null, resumeEpoch: null, arch: null, ignored: [] };
    }
    const ck = await readTrainCheckpoint(path);
    return {
      kind: 'mambaout',
      stateDict: ck.stateDict,
      stateDictEma: ck.stateDictEma ?? null,
      optimizer: ck.optimizer ? unflattenOptimizerState(ck.optimizer.tensors, ck.optimizer.meta as OptimizerStateMeta) : null,
      epoch: ck.epoch,
      resumeEpoch: ck.version > 1 ? ck.epoch + 1 : ck.epoch,
      arch: ck.arch || null,
      ignored: [],
    };
  }

  // torch.save file (timm train.py writes last.pth.tar / checkpoint-N.pth.tar / model_best.pth.tar)
  const { stateDict, meta } = await loadCheckpoint(path);
  const root = meta.raw;
  if (!(root instanceof Map) || !root.has('state_dict')) {
    return { kind: 'weights', stateDict, stateDictEma: null, optimizer: null, epoch: null, resumeEpoch: null, arch: meta.arch ?? null, ignored: [] };
  }
  let stateDictEma: TensorMap | null = null;
  if (root.get('state_dict_ema') !== undefined && root.get('state_dict_ema') !== null) {
    stateDictEma = stripPrefix(pickStateDict(root, true, path).stateDict);
  }
  const opt = root.get('optimizer');
  const optimizer = opt instanceof Map ? (opt as Map<unknown, unknown>) : null;
  const epoch = typeof meta.epoch === 'number' ? meta.epoch : null;
  const version = typeof meta.version === 'number' ? meta.version : 1;
  return {
    kind: 'timm',
    stateDict,
    stateDictEma,
    optimizer,
    epoch,
    resumeEpoch: epoch === null ? null : version > 1 ? epoch + 1 : epoch,
    arch: meta.arch ?? null,
    ignored: ['amp_scaler', 'amp'].filter((k) => root.get(k) !== undefined && root.get(k) !== null),
  };
}

/** A parameter as the optimizer numbers it: name, layout kind, tfjs shape. */
export interface ParamLayout {
  name: string;
  kind: ParamKind;
  shape: readonly number[];
}

/**
 * torch's optimizer state holds per-parameter tensors (exp_avg, exp_avg_sq, momentum_buffer...) in PyTorch layout;
 * ours are in the tfjs layout of each parameter (conv weights HWIO). Returns a copy of a torch optimizer state_dict
 * whose conv tensors are permuted to our layout. `params` are in the optimizer's order (groups in order), which is
 * how torch's parameter ids map onto parameters (by position in param_groups[*].params).
 */
export function torchOptimizerToTfjsLayout(opt: Map<unknown, unknown>, params: readonly ParamLayout[]): Map<unknown, unknown> {
  const groups = opt.get('param_groups');
  const state = opt.get('state');
  if (!Array.isArray(groups) || !(state instanceof Map)) return opt; // loadStateDict reports what is wrong
  const byId = new Map<string, ParamLayout>();
  let pos = 0;
  for (const g of groups) {
    const ids = g instanceof Map ? g.get('params') : null;
    if (!Array.isArray(ids)) return opt;
    for (const id of ids) if (pos < params.length) byId.set(String(id), params[pos++]);
  }
  const out = new Map<unknown, unknown>();
  for (const [id, entry] of state) {
    const p = byId.get(String(id));
    if (!p || !(entry instanceof Map) || (p.kind !== 'conv' && p.kind !== 'dwconv')) {
      out.set(id, entry);
      continue;
    }
    const want = torchShape(p.kind, p.shape);
    const converted = new Map<unknown, unknown>();
    for (const [k, v] of entry) {
      const t = v as HostTensor;
      const sameShape = isHostTensor(v) && t.shape.length === want.length && t.shape.every((d, i) => d === want[i]);
      converted.set(k, sameShape ? { dtype: 'float32', shape: [...p.shape], data: fromTorchLayout(p.kind, p.shape, asFloat32(t)) } : v);
    }
    out.set(id, converted);
  }
  const copy = new Map(opt);
  copy.set('state', out);
  return copy;
}
