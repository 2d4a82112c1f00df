/**
 * Common optimizer machinery: named parameters, parameter groups, per-parameter state held in tfjs
 * Variables, and a host-side state dict that mirrors torch's `Optimizer.state_dict()`.
 *
 * Conventions (torch semantics):
 * - `step(grads)` takes the gradients keyed by parameter name; a parameter without a gradient is skipped
 *   entirely (no state change, no weight decay), exactly as torch skips `p.grad is None`.
 * - Hyper-parameters live on the parameter groups; a scheduler changes `group.lr` between steps.
 * - Every step runs inside one `tf.tidy` and writes results into the parameter / state Variables with
 *   `assign`, so the number of live tensors does not grow with the number of steps.
 * - No step reads tensor data back to the host (no dataSync), so GPU backends are never stalled.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor, TensorMap } from '../../checkpoint/types.js';
import { UserError } from '../../errors.js';

/** A trainable parameter under its PyTorch state-dict name. */
export interface NamedParameter {
  name: string;
  variable: tf.Variable;
}

/** Gradients keyed by parameter name, each in the same layout/shape as its Variable. */
export type GradMap = Map<string, tf.Tensor>;

/** What optimizers are constructed from: a group specification: parameters plus optional per-group overrides. */
export interface GroupSpec {
  params: NamedParameter[];
  weightDecay?: number;
  lr?: number;
  lrScale?: number;
}

/** A parameter group (torch `param_groups[i]`). */
export interface ParamGroup {
  params: NamedParameter[];
  /** Current learning rate (set by the scheduler). */
  lr: number;
  weightDecay: number;
  /** timm `initial_lr`: the base lr the scheduler works from; set by the scheduler if missing. */
  initialLr?: number;
  /** timm `lr_scale` (layer-wise lr decay); the scheduler multiplies its values by it. */
  lrScale?: number;
}

/** A value in a serialized per-parameter state: a tensor (as host data) or a number (step counts). */
export type StateValue = HostTensor | number;

/** Serialized state of one parameter (torch: `state[index]`, e.g. {step, exp_avg, exp_avg_sq}). */
export type ParamStateDict = Record<string, StateValue>;

/**
 * Serialized parameter group (torch: `param_groups[i]`): torch's hyper-parameter names
 * (snake_case: lr, weight_decay, betas, eps, initial_lr, ...) and `params` = parameter indices.
 */
export interface GroupStateDict {
  params: number[];
  lr: number;
  weight_decay: number;
  initial_lr?: number;
  lr_scale?: number;
  [key: string]: unknown;
}

/**
 * Host-side optimizer state, shaped like torch's `optimizer.state_dict()`:
 * parameters are numbered consecutively over the groups in group order (torch's numbering), `state`
 * holds entries only for parameters that have state. Tensors are in the layout of the parameter
 * Variables (a checkpoint writer that stores PyTorch layout converts them like the weights).
 */
export interface OptimizerStateDict {
  /** Which optimizer wrote it ('adamw', 'adam', 'sgd', 'lamb'). Not part of torch's format. */
  optimizer: string;
  state: Record<number, ParamStateDict>;
  param_groups: GroupStateDict[];
  /** Parameter names by index. Not part of torch's format; checked on load when present. */
  param_names?: string[];
}

/**
 * What `loadStateDict` accepts: our own state dict, or one read from a torch checkpoint
 * (state keyed by number or numeric string, possibly a Map; steps as numbers, bigints or 0-d tensors).
 */
export interface LoadableStateDict {
  optimizer?: string;
  state: Record<string | number, Record<string, unknown>> | Map<string | number, unknown>;
  param_groups: Array<Record<string, unknown>>;
  param_names?: string[];
}

/** Per-parameter runtime state: numbers (e.g. step) and tensors (Variables, not trainable). */
export interface ParamState {
  scalars: Record<string, number>;
  tensors: Record<string, tf.Variable>;
}

/** Shared base of all optimizers. `G` is the optimizer's parameter-group type. */
export abstract class Optimizer<G extends ParamGroup = ParamGroup> {
  /** Short name ('adamw', 'adam', 'sgd', 'lamb'). */
  abstract readonly name: string;
  readonly paramGroups: G[];
  /** Runtime state by parameter name. */
  protected readonly state = new Map<string, ParamState>();
  private readonly byName = new Map<string, NamedParameter>();

  constructor(groups: G[]) {
    this.paramGroups = groups;
    for (const g of groups) {
      for (const p of g.params) {
        if (this.byName.has(p.name)) throw new Error(`optimizer: parameter ${p.name} appears twice`);
        if (p.variable.dtype !== 'float32') {
          throw new Error(`optimizer: parameter ${p.name} has dtype ${p.variable.dtype}, expected float32`);
        }
        this.byName.set(p.name, p);
      }
    }
  }

  /**
   * On the tfjs 'cpu' backend, tensor data already live in host memory, and every op allocates and
   * loops separately (~30-60 ns per element and op). Optimizers that support it then run one fused
   * loop per parameter instead, rounding to float32 after every operation exactly as the op-by-op
   * path does, so both paths give bit-identical results. Set false to force the op path.
   */
  hostFastPath = true;

  protected useHostPath(): boolean {
    return this.hostFastPath && tf.getBackend() === 'cpu';
  }

  /**
   * Whether step() writes every parameter into the GPU buffer it is already in (no new tensors): then a forward pass
   * may be issued before the step and executed after it (DistributedDataParallel's held forward pass). False here;
   * the Adam family says true on WebGPU with its multi-tensor kernel.
   */
  get updatesInPlace(): boolean {
    return false;
  }

  /** Mean of the groups' current learning rates (what timm's train log prints). */
  get meanLr(): number {
    if (this.paramGroups.length === 0) return 0;
    return this.paramGroups.reduce((s, g) => s + g.lr, 0) / this.paramGroups.length;
  }

  /** All parameters in group order (torch's index order). */
  parameters(): NamedParameter[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** One optimization step. Gradients are not modified or disposed. */
  step(grads: GradMap): void {
    for (const [name, g] of grads) {
      const p = this.byName.get(name);
      if (!p) throw new Error(`optimizer: gradient for unknown parameter ${name}`);
      if (!sameShape(g.shape, p.variable.shape)) {
        throw new Error(
          `optimizer: gradient of ${name} has shape [${g.shape}], parameter has [${p.variable.shape}]`,
        );
      }
    }
    tf.tidy(() => this.applyUpdates(grads));
  }

  /** The update itself; runs inside tf.tidy. Must `assign` into the Variables. */
  protected abstract applyUpdates(grads: GradMap): void;

  /** Serialize one group's hyper-parameters (torch names), without `params`. */
  protected abstract groupHyper(group: G): Record<string, unknown>;

  /** Restore one group's hyper-parameters from a serialized group (torch names). */
  protected abstract loadGroupHyper(group: G, saved: Record<string, unknown>): void;

  /** The state of a parameter, creating it (numbers at 0, tensors at zeros) when missing. */
  protected getState(p: NamedParameter, scalarKeys: readonly string[], tensorKeys: readonly string[]): ParamState {
    let st = this.state.get(p.name);
    if (!st) {
      st = { scalars: {}, tensors: {} };
      for (const k of scalarKeys) st.scalars[k] = 0;
      for (const k of tensorKeys) {
        // the zeros go at once (not at the end of the step's tidy): the state must be the only tensor on its buffer for
        // the in-place update (src/ops/adam.ts) from the first step on
        const z = tf.zerosLike(p.variable);
        st.tensors[k] = tf.variable(z, false);
        z.dispose();
      }
      this.state.set(p.name, st);
    }
    return st;
  }

  /** Host copy of the whole optimizer state (see OptimizerStateDict). */
  async stateDict(): Promise<OptimizerStateDict> {
    const params = this.parameters();
    const state: Record<number, ParamStateDict> = {};
    const reads: Promise<void>[] = [];
    params.forEach((p, index) => {
      const st = this.state.get(p.name);
      if (!st) return;
      const entry: ParamStateDict = { ...st.scalars };
      state[index] = entry;
      for (const [k, v] of Object.entries(st.tensors)) {
        reads.push(
          v.data().then((d) => {
            // Copy: backends may hand out their internal buffer.
            entry[k] = { dtype: 'float32', shape: [...v.shape], data: new Float32Array(d as Float32Array) };
          }),
        );
      }
    });
    await Promise.all(reads);
    let index = 0;
    const paramGroups: GroupStateDict[] = this.paramGroups.map((g) => {
      const out: GroupStateDict = {
        lr: g.lr,
        weight_decay: g.weightDecay,
        ...this.groupHyper(g),
        params: g.params.map(() => index++),
      };
      if (g.initialLr !== undefined) out.initial_lr = g.initialLr;
      if (g.lrScale !== undefined) out.lr_scale = g.lrScale;
      return out;
    });
    return { optimizer: this.name, state, param_groups: paramGroups, param_names: params.map((p) => p.name) };
  }

  /**
   * Restore a state dict (torch semantics: groups matched by position, parameters by index; the saved
   * hyper-parameters, lr and initial_lr included, replace the current ones). Throws UserError when the
   * state does not fit these parameters.
   */
  loadStateDict(input: LoadableStateDict | Map<unknown, unknown>): void {
    const sd = normalizeStateDict(input);
    if (sd.optimizer !== undefined && sd.optimizer !== this.name) {
      throw new UserError(`The optimizer state was written by '${sd.optimizer}', but this run uses '${this.name}'.`);
    }
    const params = this.parameters();
    if (sd.param_groups.length !== this.paramGroups.length) {
      throw new UserError(
        `The optimizer state has ${sd.param_groups.length} parameter groups, this model/optimizer has ${this.paramGroups.length}.`,
      );
    }
    sd.param_groups.forEach((sg, i) => {
      const n = Array.isArray(sg.params) ? sg.params.length : -1;
      if (n !== this.paramGroups[i].params.length) {
        throw new UserError(
          `The optimizer state's parameter group ${i} has ${n} parameters, this model has ${this.paramGroups[i].params.length}.`,
        );
      }
      this.checkGroupHyper(sg);
    });
    if (sd.param_names) {
      if (sd.param_names.length !== params.length) {
        throw new UserError(`The optimizer state holds ${sd.param_names.length} parameters, this model has ${params.length}.`);
      }
      params.forEach((p, i) => {
        if (sd.param_names![i] !== p.name) {
          throw new UserError(`The optimizer state's parameter ${i} is ${sd.param_names![i]}, expected ${p.name}.`);
        }
      });
    }
    // Saved parameter ids -> our parameters (torch maps saved ids to current params by position).
    const idToParam = new Map<string, NamedParameter>();
    let pos = 0;
    for (const sg of sd.param_groups) {
      for (const id of sg.params as unknown[]) idToParam.set(String(id), params[pos++]);
    }
    const entries = sd.state;

    // Validate everything before changing anything.
    const parsed: Array<{ p: NamedParameter; scalars: Record<string, number>; tensors: Record<string, HostTensor> }> = [];
    for (const [id, raw] of entries) {
      const p = idToParam.get(id);
      if (!p) throw new UserError(`The optimizer state has an entry for unknown parameter id ${id}.`);
      const scalars: Record<string, number> = {};
      const tensors: Record<string, HostTensor> = {};
      const rawEntries = raw instanceof Map ? [...raw.entries()] : Object.entries(raw as Record<string, unknown>);
      for (const [k, v] of rawEntries as Array<[string, unknown]>) {
        if (v === null || v === undefined) continue; // torch: momentum_buffer None
        if (typeof v === 'number' || typeof v === 'bigint') {
          scalars[k] = Number(v);
        } else if (isHostTensor(v)) {
          if (v.shape.length === 0 || (v.data.length === 1 && !sameShape(v.shape, p.variable.shape))) {
            scalars[k] = Number(v.data[0]); // torch >= 1.12 stores `step` as a 0-d tensor
          } else {
            if (!sameShape(v.shape, p.variable.shape)) {
              throw new UserError(
                `The optimizer state '${k}' of ${p.name} has shape [${v.shape}], the parameter has [${p.variable.shape}] (a layout mismatch?).`,
              );
            }
            tensors[k] = v;
          }
        } else {
          throw new UserError(`The optimizer state '${k}' of ${p.name} is neither a number nor a tensor.`);
        }
      }
      this.checkLoadedState(p, scalars, tensors);
      parsed.push({ p, scalars, tensors });
    }

    // Groups: hyper-parameters as saved.
    sd.param_groups.forEach((sg, i) => {
      const g = this.paramGroups[i];
      if (typeof sg.lr === 'number') g.lr = sg.lr;
      if (typeof sg.weight_decay === 'number') g.weightDecay = sg.weight_decay;
      if (typeof sg.initial_lr === 'number') g.initialLr = sg.initial_lr;
      if (typeof sg.lr_scale === 'number') g.lrScale = sg.lr_scale;
      this.loadGroupHyper(g, sg);
    });
    // Parameter state: replace everything.
    this.disposeState();
    for (const { p, scalars, tensors } of parsed) {
      const st: ParamState = { scalars, tensors: {} };
      for (const [k, ht] of Object.entries(tensors)) {
        // always a private copy: the cpu backend would otherwise keep (and share) the caller's array
        const data = ht.data instanceof Float32Array ? ht.data.slice() : Float32Array.from(ht.data as ArrayLike<number>, Number);
        st.tensors[k] = tf.tidy(() => tf.variable(tf.tensor(data, p.variable.shape, 'float32'), false));
      }
      this.state.set(p.name, st);
    }
  }

  /** Hook for subclasses to reject saved groups they cannot honour (runs before anything changes). */
  protected checkGroupHyper(_saved: Record<string, unknown>): void {}

  /** Hook for subclasses to reject state entries they do not understand. */
  protected checkLoadedState(
    _p: NamedParameter,
    _scalars: Record<string, number>,
    _tensors: Record<string, HostTensor>,
  ): void {}

  /** Free all state Variables (the parameters themselves are not touched). */
  dispose(): void {
    this.disposeState();
  }

  private disposeState(): void {
    for (const st of this.state.values()) for (const v of Object.values(st.tensors)) v.dispose();
    this.state.clear();
  }
}

/** The JSON part of a flattened optimizer state (see flattenOptimizerState). */
export interface OptimizerStateMeta {
  optimizer: string;
  /** Per-parameter numbers (e.g. step) by parameter index. */
  scalars: Record<string, Record<string, number>>;
  param_groups: GroupStateDict[];
  param_names?: string[];
}

/**
 * Split a state dict into flat tensors named `<index>.<key>` (e.g. `3.exp_avg`) and a JSON-able rest,
 * the shape src/checkpoint/saver.ts stores (`optimizer.<k>` tensors + metadata JSON).
 */
export function flattenOptimizerState(sd: OptimizerStateDict): { tensors: TensorMap; meta: OptimizerStateMeta } {
  const tensors: TensorMap = new Map();
  const scalars: Record<string, Record<string, number>> = {};
  for (const [index, entry] of Object.entries(sd.state)) {
    for (const [k, v] of Object.entries(entry)) {
      if (typeof v === 'number') (scalars[index] ??= {})[k] = v;
      else tensors.set(`${index}.${k}`, v);
    }
  }
  return {
    tensors,
    meta: { optimizer: sd.optimizer, scalars, param_groups: sd.param_groups, param_names: sd.param_names },
  };
}

/** Inverse of flattenOptimizerState. */
export function unflattenOptimizerState(tensors: TensorMap, meta: OptimizerStateMeta): OptimizerStateDict {
  if (!meta || typeof meta.optimizer !== 'string' || !Array.isArray(meta.param_groups)) {
    throw new UserError('The checkpoint has no readable optimizer state.');
  }
  const state: Record<number, ParamStateDict> = {};
  for (const [index, s] of Object.entries(meta.scalars ?? {})) state[Number(index)] = { ...s };
  for (const [key, t] of tensors) {
    const dot = key.indexOf('.');
    const index = Number(key.slice(0, dot));
    if (dot <= 0 || !Number.isInteger(index)) throw new UserError(`The checkpoint has an unexpected optimizer tensor '${key}'.`);
    (state[index] ??= {})[key.slice(dot + 1)] = t;
  }
  return { optimizer: meta.optimizer, state, param_groups: meta.param_groups, param_names: meta.param_names };
}

/** Plain-object view of a state dict that may come from a pickle (Maps, numeric or bigint keys). */
function normalizeStateDict(input: LoadableStateDict | Map<unknown, unknown>): {
  optimizer?: string;
  state: Array<[string, unknown]>;
  param_groups: Array<Record<string, unknown>>;
  param_names?: string[];
} {
  const top = toRecord(input);
  if (!top || top.state === undefined || !Array.isArray(top.param_groups)) {
    throw new UserError('The optimizer state is not a state dict (it needs "state" and "param_groups").');
  }
  const state = top.state instanceof Map ? [...top.state.entries()] : Object.entries(toRecord(top.state) ?? {});
  const groups = (top.param_groups as unknown[]).map((g) => {
    const r = toRecord(g);
    if (!r) throw new UserError('The optimizer state has a parameter group that is not a dict.');
    return r;
  });
  const names = top.param_names;
  return {
    optimizer: typeof top.optimizer === 'string' ? top.optimizer : undefined,
    state: state.map(([k, v]) => [String(k), v]),
    param_groups: groups,
    param_names: Array.isArray(names) ? (names as string[]) : undefined,
  };
}

function toRecord(v: unknown): Record<string, unknown> | null {
  if (v instanceof Map) return Object.fromEntries([...v.entries()].map(([k, x]) => [String(k), x]));
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  return null;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function isHostTensor(v: unknown): v is HostTensor {
  return (
    typeof v === 'object' &&
    v !== null &&
    Array.isArray((v as HostTensor).shape) &&
    ArrayBuffer.isView((v as HostTensor).data)
  );
}

/** Read a number-valued hyper-parameter from a saved group, keeping `fallback` when absent. */
export function num(saved: Record<string, unknown>, key: string, fallback: number): number {
  const v = saved[key];
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  return fallback;
}

/** Read a boolean hyper-parameter from a saved group. */
export function bool(saved: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = saved[key];
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  return fallback;
}

/** Read a (beta1, beta2) pair from a saved group. */
export function pair(saved: Record<string, unknown>, key: string, fallback: [number, number]): [number, number] {
  const v = saved[key];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  return fallback;
}
