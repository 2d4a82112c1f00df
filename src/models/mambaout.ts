/**
 * MambaOut (Yu & Wang 2024, models/mambaout.py) on tfjs. Activations are NHWC throughout, which is also what the
 * PyTorch code uses inside its blocks (channels-last), so no permutes are needed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';
import type { HostTensor, TensorMap } from '../checkpoint/types.js';
import { asFloat32, numel } from '../checkpoint/types.js';
import { Rng } from '../utils/rng.js';
import { runSteps, type Steps } from '../utils/steps.js';
import {
  Conv2d, DepthwiseConv2d, LayerNorm, Linear, Param, ParamStore, dropPath, dropout, fromTorchLayout,
  toTorchLayout, torchShape,
} from './layers.js';
import { getModelConfig, type ModelConfig, type ModelName } from './registry.js';
import { gatedCnnBlock } from '../ops/gated_cnn.js';
import { meanSpatial } from '../ops/mean.js';

export interface CreateModelOptions {
  numClasses?: number;
  /** Stochastic depth rate, spread linearly over all blocks (timm `--drop-path`). */
  drop_path_rate?: number;
  dropPathRate?: number;
  /** Dropout before the head's last Linear (MambaOut's head_dropout; 0 in the paper). */
  head_dropout?: number;
  headDropout?: number;
  /** Seed for weight init and for the drop-path/dropout masks. */
  seed?: number;
  /** Skip the random init (weights start at zero; use when a checkpoint is loaded right after). */
  noInit?: boolean;
}

class GatedCNNBlock {
  readonly norm: LayerNorm;
  readonly fc1: Linear;
  readonly conv: DepthwiseConv2d;
  readonly fc2: Linear;
  readonly hidden: number;
  constructor(store: ParamStore, prefix: string, readonly dim: number, readonly dropPathRate: number) {
    this.hidden = Math.floor((8 / 3) * dim);
    this.norm = store.layerNorm(`${prefix}.norm`, dim);
    this.fc1 = store.linear(`${prefix}.fc1`, dim, 2 * this.hidden);
    this.conv = store.dwconv(`${prefix}.conv`, dim, 7);
    this.fc2 = store.linear(`${prefix}.fc2`, this.hidden, dim);
  }

  apply(x: tf.Tensor4D, training: boolean, rng: Rng): tf.Tensor4D {
    // fc1, split, 7x7 depthwise conv, gelu gate, fc2 (src/ops/gated_cnn.ts decides how, per backend and --amp).
    const xn = this.norm.apply(x) as tf.Tensor4D;
    const p = {
      fc1Weight: this.fc1.weight, fc1Bias: this.fc1.bias, convWeight: this.conv.weight, convBias: this.conv.bias,
      fc2Weight: this.fc2.weight, fc2Bias: this.fc2.bias, hidden: this.hidden,
    };
    if (training && this.dropPathRate > 0) return x.add(dropPath(gatedCnnBlock(xn, p), this.dropPathRate, rng)) as tf.Tensor4D;
    // The residual add inside the op (fc2's epilogue on WebGPU).
    return gatedCnnBlock(xn, p, x);
  }
}

export class MambaOut {
  readonly config: ModelConfig;
  readonly numClasses: number;
  readonly depths: number[];
  readonly dims: number[];
  readonly headDropout: number;
  readonly dropPathRate: number;
  /** Generator for drop-path and dropout masks (seeded; state saved with checkpoints). */
  readonly rng: Rng;
  private readonly params: Param[];
  private readonly stem: { conv1: Conv2d; norm1: LayerNorm; conv2: Conv2d; norm2: LayerNorm };
  private readonly downsample: { conv: Conv2d; norm: LayerNorm }[] = [];
  private readonly stages: GatedCNNBlock[][] = [];
  private readonly norm: LayerNorm;
  private readonly head: { fc1: Linear; norm: LayerNorm; fc2: Linear };

  constructor(config: ModelConfig, opts: CreateModelOptions = {}) {
    this.config = config;
    this.depths = [...config.depths];
    this.dims = [...config.dims];
    this.numClasses = opts.numClasses ?? config.defaultCfg.numClasses;
    if (!Number.isInteger(this.numClasses) || this.numClasses < 1) {
      throw new UserError(`--num-classes must be a positive integer, got ${this.numClasses}`);
    }
    this.dropPathRate = opts.drop_path_rate ?? opts.dropPathRate ?? 0;
    this.headDropout = opts.head_dropout ?? opts.headDropout ?? 0;
    const seed = opts.seed ?? 0;
    const store = new ParamStore(opts.noInit ? null : new Rng(seed));
    this.rng = new Rng(seed + 0x5eed);
    const dims = this.dims;

    const half = Math.floor(dims[0] / 2);
    this.stem = {
      conv1: store.conv('downsample_layers.0.conv1', 3, half, 3, 2, 1),
      norm1: store.layerNorm('downsample_layers.0.norm1', half),
      conv2: store.conv('downsample_layers.0.conv2', half, dims[0], 3, 2, 1),
      norm2: store.layerNorm('downsample_layers.0.norm2', dims[0]),
    };
    for (let i = 1; i < 4; i++) {
      this.downsample.push({
        conv: store.conv(`downsample_layers.${i}.conv`, dims[i - 1], dims[i], 3, 2, 1),
        norm: store.layerNorm(`downsample_layers.${i}.norm`, dims[i]),
      });
    }
    // drop path rates: torch.linspace(0, rate, sum(depths)) in float32.
    const total = this.depths.reduce((a, b) => a + b, 0);
    const rates = Array.from({ length: total }, (_, k) => Math.fround(total > 1 ? (this.dropPathRate * k) / (total - 1) : 0));
    let cur = 0;
    for (let s = 0; s < 4; s++) {
      const blocks: GatedCNNBlock[] = [];
      for (let j = 0; j < this.depths[s]; j++) blocks.push(new GatedCNNBlock(store, `stages.${s}.${j}`, dims[s], rates[cur + j]));
      cur += this.depths[s];
      this.stages.push(blocks);
    }
    const c3 = dims[3];
    this.norm = store.layerNorm('norm', c3);
    this.head = {
      fc1: store.linear('head.fc1', c3, 4 * c3),
      norm: store.layerNorm('head.norm', 4 * c3),
      fc2: store.linear('head.fc2', 4 * c3, this.numClasses),
    };
    this.params = store.params;
  }

  get name(): string {
    return this.config.name;
  }

  /** Features before pooling: [N, H/32, W/32, C3]. */
  forwardFeatures(x: tf.Tensor4D, training = false): tf.Tensor4D {
    return runSteps(this.featureSteps(x, training));
  }

  /** NHWC float32 input [N, H, W, 3] (normalized) -> logits [N, numClasses]. Call inside tf.tidy. */
  forward(x: tf.Tensor4D, opts: { training?: boolean } = {}): tf.Tensor2D {
    return runSteps(this.forwardSteps(x, opts));
  }

  /**
   * `forward` in pieces: the generator pauses (yields) after the stem, each downsampling layer and each block, and
   * returns the logits. Whoever drives it may let other work run between the pieces: data-parallel training issues the
   * next step's forward pass while the previous exchange finishes, and gives that exchange's completions a turn at
   * each pause (src/train/ddp.ts variableGrads). The same ops in the same order as `forward`.
   */
  *forwardSteps(x: tf.Tensor4D, opts: { training?: boolean } = {}): Steps<tf.Tensor2D> {
    if (x.rank !== 4 || x.shape[3] !== 3) {
      throw new UserError(`model input must be NHWC [N, H, W, 3], got [${x.shape.join(', ')}]`);
    }
    const training = opts.training ?? false;
    const f = yield* this.featureSteps(x, training);
    let y = this.norm.apply(meanSpatial(f));
    y = this.head.norm.apply(this.head.fc1.apply(y, { activation: 'gelu' }));
    if (training && this.headDropout > 0) y = dropout(y, this.headDropout, this.rng);
    return this.head.fc2.apply(y) as tf.Tensor2D;
  }

  private *featureSteps(x: tf.Tensor4D, training: boolean): Steps<tf.Tensor4D> {
    const s = this.stem;
    let h = s.conv1.apply(x);
    h = s.norm1.apply(h, { activation: 'gelu' }) as tf.Tensor4D;
    h = s.norm2.apply(s.conv2.apply(h)) as tf.Tensor4D;
    yield;
    for (let st = 0; st < 4; st++) {
      if (st > 0) {
        const d = this.downsample[st - 1];
        h = d.norm.apply(d.conv.apply(h)) as tf.Tensor4D;
        yield;
      }
      for (const block of this.stages[st]) {
        h = block.apply(h, training, this.rng);
        yield;
      }
    }
    return h;
  }

  /** (PyTorch name, variable) pairs in state-dict order. Variables hold tfjs layouts (see layers.ts). */
  namedParameters(): [string, tf.Variable][] {
    return this.params.map((p) => [p.name, p.variable]);
  }

  /** Parameter descriptors (name, layout kind, variable) in state-dict order. */
  parameterInfo(): readonly Param[] {
    return this.params;
  }

  numParams(): number {
    return this.params.reduce((a, p) => a + p.variable.size, 0);
  }

  /** PyTorch-layout state dict (host copies). Synchronous: cpu/wasm/tensorflow backends; use stateDictAsync on webgpu. */
  stateDict(): TensorMap {
    return this.toTorch(this.params.map((p) => p.variable.dataSync() as Float32Array));
  }

  /** PyTorch-layout state dict read without blocking (works on every backend, webgpu included). */
  async stateDictAsync(): Promise<TensorMap> {
    return this.toTorch((await Promise.all(this.params.map((p) => p.variable.data()))) as Float32Array[]);
  }

  private toTorch(datas: Float32Array[]): TensorMap {
    const out: TensorMap = new Map();
    this.params.forEach((p, i) => {
      out.set(p.name, {
        dtype: 'float32',
        shape: torchShape(p.kind, p.variable.shape),
        data: toTorchLayout(p.kind, p.variable.shape, datas[i]),
      });
    });
    return out;
  }

  /**
   * Load a PyTorch-layout state dict. Strict by default: every missing, unexpected and mis-shaped key is listed in one
   * error. Non-strict loads what matches and returns the lists.
   */
  loadStateDict(map: TensorMap, opts: { strict?: boolean } = {}): { missing: string[]; unexpected: string[]; mismatched: string[] } {
    const strict = opts.strict ?? true;
    const missing: string[] = [];
    const mismatched: string[] = [];
    const known = new Set<string>();
    for (const p of this.params) {
      known.add(p.name);
      const t = map.get(p.name);
      if (!t) {
        missing.push(p.name);
        continue;
      }
      const want = torchShape(p.kind, p.variable.shape);
      if (!sameShape(t.shape, want)) mismatched.push(`${p.name} (checkpoint [${t.shape.join(', ')}], model [${want.join(', ')}])`);
    }
    const unexpected = [...map.keys()].filter((k) => !known.has(k));
    if (strict && (missing.length || unexpected.length || mismatched.length)) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing keys: ${abbreviate(missing)}`);
      if (unexpected.length) parts.push(`unexpected keys: ${abbreviate(unexpected)}`);
      if (mismatched.length) parts.push(`shape mismatch: ${abbreviate(mismatched)}`);
      throw new UserError(`checkpoint does not fit ${this.name} with ${this.numClasses} classes: ${parts.join('; ')}`);
    }
    const bad = new Set(mismatched.map((m) => m.split(' ')[0]));
    for (const p of this.params) {
      const t = map.get(p.name);
      if (!t || bad.has(p.name)) continue;
      assignHost(p, t);
    }
    return { missing, unexpected, mismatched };
  }

  dispose(): void {
    for (const p of this.params) p.variable.dispose();
  }
}

function assignHost(p: Param, t: HostTensor): void {
  const data = fromTorchLayout(p.kind, p.variable.shape, asFloat32(t));
  if (data.length !== numel(p.variable.shape)) throw new Error(`internal: size mismatch for ${p.name}`);
  tf.tidy(() => p.variable.assign(tf.tensor(data, p.variable.shape, 'float32')));
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function abbreviate(list: string[], max = 12): string {
  return list.length <= max ? list.join(', ') : `${list.slice(0, max).join(', ')} ... (${list.length} in all)`;
}

/** A model by registered name (a string from a user goes through getModelConfig first: it names the known ones). */
export function createModel(name: ModelName, opts: CreateModelOptions = {}): MambaOut {
  return new MambaOut(getModelConfig(name), opts);
}
