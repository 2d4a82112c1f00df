/**
 * Optimizers, schedulers, losses, clipping, EMA and metrics (src/train/*) on the tfjs cpu backend.
 * Fixtures (test/fixtures, from the original PyTorch code): micro.pth (starting weights),
 * micro_io.safetensors (grads, weights after one AdamW step, eval logits/labels/loss),
 * micro_timm_checkpoint.pth.tar (timm checkpoint holding torch's AdamW state after that step).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '../src/backend/tfjs.js'; // the cpu backend and tfjs's gradients
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { readSafetensors } from '../src/checkpoint/safetensors.js';
import type { HostTensor, TensorMap } from '../src/checkpoint/types.js';
import { UserError } from '../src/errors.js';
import {
  Adam,
  AdamW,
  Lamb,
  SGD,
  createOptimizer,
  flattenOptimizerState,
  paramGroupsWeightDecay,
  unflattenOptimizerState,
  type GradMap,
  type NamedParameter,
  type Optimizer,
  type ParamGroup,
} from '../src/train/optim/index.js';
import {
  CosineLRScheduler,
  MultiStepLRScheduler,
  PolyLRScheduler,
  StepLRScheduler,
  TanhLRScheduler,
  createScheduler,
} from '../src/train/scheduler.js';
import {
  binaryCrossEntropy,
  createTrainLoss,
  crossEntropy,
  labelSmoothingCrossEntropy,
  softTargetCrossEntropy,
} from '../src/train/loss.js';
import { adaptiveClipGrad, clipGradNorm, clipGradValue, dispatchClipGrad, unitwiseNorm } from '../src/train/clip.js';
import { ModelEmaV2 } from '../src/train/ema.js';
import { AverageMeter, accuracy, accuracySync } from '../src/train/metrics.js';
import { maxAbsDiff } from './helpers.js';
import { readBack } from '../src/backend/fence.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

before(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

// ---------------------------------------------------------------------------------------------
// helpers

function f32(t: HostTensor): Float32Array {
  assert.ok(t.data instanceof Float32Array, 'expected float32 data');
  return t.data;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = ''): void {
  const d = maxAbsDiff(actual, expected);
  assert.ok(d <= tol, `${what}: max abs diff ${d} > ${tol}`);
}

/** Relative closeness with an absolute floor, for float32 results against float64 references. */
function assertRel(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const tol = rel * Math.max(1e-3, Math.abs(expected[i]));
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

function variablesFrom(map: TensorMap): NamedParameter[] {
  return [...map.entries()].map(([name, t]) => ({
    name,
    variable: tf.variable(tf.tensor(f32(t), t.shape, 'float32'), true, `${name}#${Math.random()}`),
  }));
}

function disposeParams(ps: NamedParameter[]): void {
  for (const p of ps) p.variable.dispose();
}

function disposeGrads(g: GradMap): void {
  for (const t of g.values()) t.dispose();
}

/** A deterministic pseudo-random float array (LCG), values in [-scale, scale). */
function pseudo(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** A tiny "model": conv weight [4,3,3,3], its bias, a norm weight, a linear weight [5,4] and bias. */
const TOY_SHAPES: Array<[string, number[]]> = [
  ['stem.conv.weight', [4, 3, 3, 3]],
  ['stem.conv.bias', [4]],
  ['stem.norm.weight', [4]],
  ['head.fc.weight', [5, 4]],
  ['head.fc.bias', [5]],
];

function toyParams(seed = 1): NamedParameter[] {
  return TOY_SHAPES.map(([name, shape], i) => ({
    name,
    variable: tf.variable(tf.tensor(pseudo(shape.reduce((a, b) => a * b, 1), seed * 100 + i, 0.5), shape), true),
  }));
}

function toyGrads(params: NamedParameter[], seed: number, scale = 1): GradMap {
  const m: GradMap = new Map();
  params.forEach((p, i) => m.set(p.name, tf.tensor(pseudo(p.variable.size, seed * 1000 + i, scale), p.variable.shape)));
  return m;
}

function readParams(params: NamedParameter[]): Float32Array[] {
  return params.map((p) => p.variable.dataSync() as Float32Array).map((a) => new Float32Array(a));
}

// float64 reference implementations (written from the torch/timm formulas, independently of src/)
interface RefParam {
  w: number[];
  wd: number;
}

function refAdam(params: RefParam[], grads: number[][][], lr: number, b1: number, b2: number, eps: number, decoupled: boolean): number[][] {
  const w = params.map((p) => [...p.w]);
  const m = params.map((p) => p.w.map(() => 0));
  const v = params.map((p) => p.w.map(() => 0));
  grads.forEach((gs, s) => {
    const t = s + 1;
    params.forEach((p, j) => {
      for (let i = 0; i < w[j].length; i++) {
        let g = gs[j][i];
        if (decoupled) w[j][i] *= 1 - lr * p.wd;
        else g += p.wd * w[j][i];
        m[j][i] = b1 * m[j][i] + (1 - b1) * g;
        v[j][i] = b2 * v[j][i] + (1 - b2) * g * g;
        const mh = m[j][i] / (1 - b1 ** t);
        const vh = Math.sqrt(v[j][i]) / Math.sqrt(1 - b2 ** t);
        w[j][i] -= (lr * mh) / (vh + eps);
      }
    });
  });
  return w;
}

function refSgd(params: RefParam[], grads: number[][][], lr: number, mom: number, nesterov: boolean): number[][] {
  const w = params.map((p) => [...p.w]);
  const buf: (number[] | null)[] = params.map(() => null);
  for (const gs of grads) {
    params.forEach((p, j) => {
      const d = gs[j].map((g, i) => g + p.wd * w[j][i]);
      let b = buf[j];
      if (b === null) b = [...d];
      else b = b.map((x, i) => mom * x + d[i]);
      buf[j] = b;
      const step = nesterov ? d.map((x, i) => x + mom * b![i]) : b;
      for (let i = 0; i < w[j].length; i++) w[j][i] -= lr * step[i];
    });
  }
  return w;
}

function refLamb(params: RefParam[], grads: number[][][], lr: number, b1: number, b2: number, eps: number, maxNorm: number, trustClip: boolean): number[][] {
  const w = params.map((p) => [...p.w]);
  const m = params.map((p) => p.w.map(() => 0));
  const v = params.map((p) => p.w.map(() => 0));
  grads.forEach((gs, s) => {
    const t = s + 1;
    const norm = Math.sqrt(gs.reduce((acc, g) => acc + g.reduce((a, x) => a + x * x, 0), 0));
    const clip = norm > maxNorm ? norm / maxNorm : 1;
    params.forEach((p, j) => {
      const u: number[] = [];
      for (let i = 0; i < w[j].length; i++) {
        const g = gs[j][i] / clip;
        m[j][i] = b1 * m[j][i] + (1 - b1) * g;
        v[j][i] = b2 * v[j][i] + (1 - b2) * g * g;
        const denom = Math.sqrt(v[j][i]) / Math.sqrt(1 - b2 ** t) + eps;
        u.push(m[j][i] / (1 - b1 ** t) / denom + p.wd * w[j][i]);
      }
      let ratio = 1;
      if (p.wd !== 0) {
        const wn = Math.sqrt(w[j].reduce((a, x) => a + x * x, 0));
        const un = Math.sqrt(u.reduce((a, x) => a + x * x, 0));
        ratio = wn > 0 && un > 0 ? wn / un : 1;
        if (trustClip) ratio = Math.min(ratio, 1);
      }
      for (let i = 0; i < w[j].length; i++) w[j][i] -= lr * ratio * u[i];
    });
  });
  return w;
}

/**
 * Runs `steps` optimizer steps on toy parameters and compares with a float64 reference, once through the fused cpu
 * loop (hostFastPath) and once through tfjs ops.
 */
function checkAgainstReference(
  make: (ps: NamedParameter[]) => Optimizer<ParamGroup>,
  ref: (rp: RefParam[], grads: number[][][]) => number[][],
  steps: number,
  gradScale: number,
  rel: number,
  what: string,
): void {
  for (const hostFastPath of [true, false]) {
    const label = `${what} (${hostFastPath ? 'fused cpu loop' : 'tfjs ops'})`;
    const params = toyParams(3);
    const opt = make(params);
    opt.hostFastPath = hostFastPath;
    const wdByName = new Map<string, number>();
    for (const g of opt.paramGroups) for (const p of g.params) wdByName.set(p.name, g.weightDecay);
    const rp: RefParam[] = params.map((p) => ({ w: Array.from(p.variable.dataSync()), wd: wdByName.get(p.name)! }));
    const allGrads: number[][][] = [];
    for (let s = 0; s < steps; s++) {
      const grads = toyGrads(params, 10 + s, gradScale);
      allGrads.push(params.map((p) => Array.from(grads.get(p.name)!.dataSync())));
      opt.step(grads);
      disposeGrads(grads);
    }
    const expected = ref(rp, allGrads);
    params.forEach((p, j) => assertRel(p.variable.dataSync(), expected[j], rel, `${label} ${p.name}`));
    opt.dispose();
    disposeParams(params);
  }
}

// ---------------------------------------------------------------------------------------------
// optimizers

describe('AdamW parity with PyTorch (micro fixture)', () => {
  test('one step from micro.pth with the fixture grads gives after_step within 1e-5; state equals torch', async () => {
    const start = await loadCheckpoint(fixture('micro.pth'));
    const io = await readSafetensors(fixture('micro_io.safetensors'));
    const ckpt = await loadCheckpoint(fixture('micro_timm_checkpoint.pth.tar'));
    const params = variablesFrom(start.stateDict);
    assert.equal(params.length, 68);

    const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
    assert.ok(opt instanceof AdamW);
    // timm grouping: 46 no-decay (1-D and biases), 22 decay; torch's checkpoint has the same split
    assert.deepEqual(opt.paramGroups.map((g) => [g.params.length, g.weightDecay]), [[46, 0], [22, 0.05]]);
    const torchOpt = ckpt.meta.optimizer as Map<string, unknown>;
    const torchGroups = torchOpt.get('param_groups') as Array<Map<string, unknown>>;
    assert.deepEqual(torchGroups.map((g) => [(g.get('params') as unknown[]).length, g.get('weight_decay')]), [[46, 0], [22, 0.05]]);

    const grads: GradMap = new Map();
    for (const p of params) {
      const g = io.get(`grad.${p.name}`);
      assert.ok(g, `grad.${p.name} missing from fixture`);
      grads.set(p.name, tf.tensor(f32(g), g.shape));
    }
    opt.step(grads);
    disposeGrads(grads);

    let worst = 0;
    for (const p of params) {
      const want = io.get(`after_step.${p.name}`)!;
      const d = maxAbsDiff(p.variable.dataSync(), f32(want));
      worst = Math.max(worst, d);
      assert.ok(d <= 1e-5, `${p.name}: max abs diff ${d}`);
      // the checkpoint's state_dict holds the same weights after the step
      assert.ok(maxAbsDiff(p.variable.dataSync(), f32(ckpt.stateDict.get(p.name)!)) <= 1e-5);
    }
    // measured on the cpu backend: ~1e-9 (float32 rounding only)
    assert.ok(worst < 1e-6, `worst after-step diff ${worst}`);

    // our state vs torch's optimizer state (same parameter numbering: groups in the same order)
    const ours = await opt.stateDict();
    const torchState = torchOpt.get('state') as Map<number, Map<string, HostTensor>>;
    assert.equal(torchState.size, 68);
    for (const [id, entry] of torchState) {
      const mine = ours.state[Number(id)];
      assert.equal(mine.step, 1);
      assert.equal(Number(entry.get('step')!.data[0]), 1);
      assertClose(f32(mine.exp_avg as HostTensor), f32(entry.get('exp_avg')!), 1e-9, `exp_avg ${id}`);
      assertClose(f32(mine.exp_avg_sq as HostTensor), f32(entry.get('exp_avg_sq')!), 1e-12, `exp_avg_sq ${id}`);
    }
    assert.equal(ours.param_groups[1].weight_decay, 0.05);
    assert.deepEqual(ours.param_groups[0].betas, [0.9, 0.999]);
    opt.dispose();
    disposeParams(params);
  });

  test("torch's AdamW state from the timm checkpoint loads and continues like our own state", async () => {
    const ckpt = await loadCheckpoint(fixture('micro_timm_checkpoint.pth.tar'));
    const io = await readSafetensors(fixture('micro_io.safetensors'));
    const start = await loadCheckpoint(fixture('micro.pth'));

    // path A: our own first step, then a second step
    const pa = variablesFrom(start.stateDict);
    const oa = createOptimizer(pa, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
    const gradsOf = (ps: NamedParameter[]) => {
      const g: GradMap = new Map();
      for (const p of ps) g.set(p.name, tf.tensor(f32(io.get(`grad.${p.name}`)!), p.variable.shape));
      return g;
    };
    let g = gradsOf(pa);
    oa.step(g);
    disposeGrads(g);

    // path B: checkpoint weights + torch's optimizer state
    const pb = variablesFrom(ckpt.stateDict);
    const ob = createOptimizer(pb, { opt: 'adamw', lr: 5e-2, weightDecay: 0.05 });
    ob.loadStateDict(ckpt.meta.optimizer as Map<unknown, unknown>);
    assert.equal(ob.paramGroups[0].lr, 1e-3, 'lr comes from the saved groups');

    g = gradsOf(pa);
    oa.step(g);
    disposeGrads(g);
    g = gradsOf(pb);
    ob.step(g);
    disposeGrads(g);
    for (let i = 0; i < pa.length; i++) {
      assertClose(pa[i].variable.dataSync(), pb[i].variable.dataSync(), 1e-6, pa[i].name);
    }
    const sb = await ob.stateDict();
    assert.equal(sb.state[0].step, 2);

    // a state of the wrong kind is refused with a clear error
    const sgd = createOptimizer(pb, { opt: 'sgd', lr: 0.1, weightDecay: 0.05 });
    assert.throws(() => sgd.loadStateDict(ckpt.meta.optimizer as Map<unknown, unknown>), UserError);
    const adam = createOptimizer(pb, { opt: 'adam', lr: 0.1, weightDecay: 0.05 });
    assert.throws(() => adam.loadStateDict(ckpt.meta.optimizer as Map<unknown, unknown>), /decoupled_weight_decay/);
    for (const o of [oa, ob, sgd, adam]) o.dispose();
    disposeParams(pa);
    disposeParams(pb);
  });
});

describe('optimizers against float64 references', () => {
  const groupsOf = (ps: NamedParameter[], wd: number) => paramGroupsWeightDecay(ps, wd);

  test('AdamW, 4 steps, decay on 2-D+ weights only', () => {
    checkAgainstReference(
      (ps) => new AdamW(groupsOf(ps, 0.05), { lr: 1e-2 }),
      (rp, gs) => refAdam(rp, gs, 1e-2, 0.9, 0.999, 1e-8, true),
      4, 1, 2e-5, 'adamw',
    );
  });

  test('Adam with L2 decay, 4 steps, custom betas/eps', () => {
    checkAgainstReference(
      (ps) => new Adam(groupsOf(ps, 0.1), { lr: 5e-3, betas: [0.8, 0.99], eps: 1e-6 }),
      (rp, gs) => refAdam(rp, gs, 5e-3, 0.8, 0.99, 1e-6, false),
      4, 1, 2e-5, 'adam',
    );
  });

  test('SGD nesterov and plain momentum, 4 steps with decay', () => {
    checkAgainstReference(
      (ps) => createOptimizer(ps, { opt: 'sgd', lr: 0.05, weightDecay: 1e-2, momentum: 0.9 }),
      (rp, gs) => refSgd(rp, gs, 0.05, 0.9, true),
      4, 1, 1e-5, 'sgd',
    );
    checkAgainstReference(
      (ps) => createOptimizer(ps, { opt: 'momentum', lr: 0.05, weightDecay: 1e-2, momentum: 0.9 }),
      (rp, gs) => refSgd(rp, gs, 0.05, 0.9, false),
      4, 1, 1e-5, 'momentum',
    );
  });

  test('Lamb (timm 0.6.11): global clipping active, trust ratio on decayed groups; LAMBC', () => {
    // gradient scale 1: the global norm of ~150 values is ~7 > max_grad_norm 1, so clipping is exercised
    checkAgainstReference(
      (ps) => createOptimizer(ps, { opt: 'lamb', lr: 1e-2, weightDecay: 0.05 }),
      (rp, gs) => refLamb(rp, gs, 1e-2, 0.9, 0.999, 1e-6, 1.0, false),
      3, 1, 2e-5, 'lamb',
    );
    checkAgainstReference(
      (ps) => createOptimizer(ps, { opt: 'lambc', lr: 1e-2, weightDecay: 0.05 }),
      (rp, gs) => refLamb(rp, gs, 1e-2, 0.9, 0.999, 1e-6, 1.0, true),
      3, 0.01, 2e-5, 'lambc',
    );
  });
});

describe('optimizer behaviour', () => {
  test('createOptimizer: timm grouping, defaults, names', () => {
    const ps = toyParams();
    const o = createOptimizer(ps, { opt: 'AdamW', lr: 4e-3, weightDecay: 0.05 }) as AdamW;
    assert.deepEqual(
      o.paramGroups.map((g) => [g.weightDecay, g.params.map((p) => p.name)]),
      [
        [0, ['stem.conv.bias', 'stem.norm.weight', 'head.fc.bias']],
        [0.05, ['stem.conv.weight', 'head.fc.weight']],
      ],
    );
    assert.equal(o.paramGroups[0].eps, 1e-8);
    assert.deepEqual(o.paramGroups[0].betas, [0.9, 0.999]);
    // model.no_weight_decay() names join the no-decay group
    const o2 = createOptimizer(ps, { opt: 'adamw', lr: 1, weightDecay: 0.05, noWeightDecay: ['head.fc.weight'] });
    assert.equal(o2.paramGroups[1].params.length, 1);
    // weight decay 0: one group
    const o3 = createOptimizer(ps, { opt: 'adamw', lr: 1, weightDecay: 0 });
    assert.equal(o3.paramGroups.length, 1);
    assert.equal(o3.paramGroups[0].params.length, 5);
    const sgd = createOptimizer(ps, { opt: 'sgd', lr: 0.1, weightDecay: 1e-4 }) as SGD;
    assert.equal(sgd.paramGroups[1].nesterov, true);
    assert.equal(sgd.paramGroups[1].momentum, 0.9);
    const mom = createOptimizer(ps, { opt: 'momentum', lr: 0.1 }) as SGD;
    assert.equal(mom.paramGroups[0].nesterov, false);
    const lamb = createOptimizer(ps, { opt: 'lamb', lr: 0.1, weightDecay: 0.01, eps: 1e-7 }) as Lamb;
    assert.equal(lamb.paramGroups[0].eps, 1e-7);
    assert.equal((createOptimizer(ps, { opt: 'lamb', lr: 0.1 }) as Lamb).paramGroups[0].eps, 1e-6);
    assert.throws(() => createOptimizer(ps, { opt: 'rmsprop', lr: 1 }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /rmsprop/);
      assert.match(e.message, /adamw/);
      assert.match(e.message, /lamb/);
      return true;
    });
    assert.throws(() => createOptimizer(ps, { opt: 'lookahead_adamw', lr: 1 }), UserError);
    // non-trainable variables are skipped (requires_grad = False)
    const frozen = { name: 'frozen.weight', variable: tf.variable(tf.ones([2, 2]), false) };
    const o4 = createOptimizer([...ps, frozen], { opt: 'adamw', lr: 1, weightDecay: 0.05 });
    assert.equal(o4.parameters().length, 5);
    frozen.variable.dispose();
    for (const x of [o, o2, o3, sgd, mom, lamb, o4]) x.dispose();
    disposeParams(ps);
  });

  test('the fused cpu loop and the op-by-op path give bit-identical results', () => {
    const configs: Array<[string, (ps: NamedParameter[]) => Optimizer<ParamGroup>]> = [
      ['adamw', (ps) => createOptimizer(ps, { opt: 'adamw', lr: 1e-2, weightDecay: 0.05 })],
      ['adamw b1=0.3 (other lerp branch)', (ps) => createOptimizer(ps, { opt: 'adamw', lr: 1e-2, weightDecay: 0.05, betas: [0.3, 0.9] })],
      ['adam', (ps) => createOptimizer(ps, { opt: 'adam', lr: 1e-2, weightDecay: 0.05, eps: 1e-3 })],
      ['sgd', (ps) => createOptimizer(ps, { opt: 'sgd', lr: 0.1, weightDecay: 0.05 })],
      ['momentum', (ps) => createOptimizer(ps, { opt: 'momentum', lr: 0.1, weightDecay: 0 })],
      ['sgd dampening', (ps) => new SGD([{ params: ps, weightDecay: 1e-3 }], { lr: 0.1, momentum: 0.8, dampening: 0.25 })],
    ];
    for (const [what, make] of configs) {
      const results: Float32Array[][] = [];
      for (const host of [true, false]) {
        const ps = toyParams(4);
        const o = make(ps);
        o.hostFastPath = host;
        for (let s = 0; s < 5; s++) {
          const g = toyGrads(ps, 60 + s);
          o.step(g);
          disposeGrads(g);
        }
        results.push(readParams(ps));
        o.dispose();
        disposeParams(ps);
      }
      results[0].forEach((a, j) => assert.deepEqual(a, results[1][j], `${what}: parameter ${j}`));
    }
  });

  test('a missing gradient skips the parameter entirely (no decay, no step count)', async () => {
    const ps = toyParams();
    const o = createOptimizer(ps, { opt: 'adamw', lr: 0.1, weightDecay: 0.5 });
    const before = readParams(ps);
    const grads = toyGrads(ps, 5);
    grads.get('head.fc.weight')!.dispose();
    grads.delete('head.fc.weight');
    o.step(grads);
    o.step(grads);
    disposeGrads(grads);
    const after = readParams(ps);
    const idx = ps.findIndex((p) => p.name === 'head.fc.weight');
    assert.deepEqual(after[idx], before[idx]);
    assert.notDeepEqual(after[0], before[0]);
    const sd = await o.stateDict();
    // torch numbering: no-decay group first (3 params), then stem.conv.weight (3), head.fc.weight (4)
    assert.deepEqual(sd.param_names, ['stem.conv.bias', 'stem.norm.weight', 'head.fc.bias', 'stem.conv.weight', 'head.fc.weight']);
    assert.equal(sd.state[3].step, 2);
    assert.equal(sd.state[4], undefined);
    // unknown gradient names and wrong shapes are programming errors
    assert.throws(() => o.step(new Map([['nope', tf.zeros([1])]])), /unknown parameter/);
    assert.throws(() => o.step(new Map([['head.fc.bias', tf.zeros([4])]])), /shape/);
    o.dispose();
    disposeParams(ps);
  });

  test('per-group lr: a group at lr 0 does not move; the scheduler-visible lr is per group', () => {
    const ps = toyParams();
    const o = createOptimizer(ps, { opt: 'adamw', lr: 0.1, weightDecay: 0.05 });
    o.paramGroups[0].lr = 0;
    const before = readParams(ps);
    const grads = toyGrads(ps, 7);
    o.step(grads);
    disposeGrads(grads);
    const after = readParams(ps);
    ps.forEach((p, i) => {
      const inNoDecay = o.paramGroups[0].params.includes(p);
      if (inNoDecay) assert.deepEqual(after[i], before[i], p.name);
      else assert.notDeepEqual(after[i], before[i], p.name);
    });
    assert.equal(o.meanLr, 0.05);
    o.dispose();
    disposeParams(ps);
  });

  for (const [opt, host] of (['adamw', 'adam', 'sgd', 'momentum', 'lamb'] as const).flatMap((o) => [[o, true], [o, false]] as const)) {
    if (opt === 'lamb' && host) continue; // Lamb has only the op path
    const path = host ? 'fused cpu loop' : 'tfjs ops';
    test(`${opt} (${path}): tensor count constant over steps; resume from stateDict is bit-identical`, async () => {
      const ps = toyParams();
      const o = createOptimizer(ps, { opt, lr: 0.01, weightDecay: 0.05 });
      o.hostFastPath = host;
      const grads = [0, 1, 2, 3].map((s) => toyGrads(ps, 20 + s));
      o.step(grads[0]);
      o.step(grads[1]);
      const n2 = tf.memory().numTensors;
      for (let i = 0; i < 18; i++) o.step(grads[i % 4]);
      assert.equal(tf.memory().numTensors, n2, 'numTensors after step 2 vs step 20');

      // snapshot, then continue both the original and a restored copy
      const sd = await o.stateDict();
      const copies: NamedParameter[] = ps.map((p) => ({ name: p.name, variable: tf.variable(p.variable.clone(), true) }));
      const o2 = createOptimizer(copies, { opt, lr: 0.5, weightDecay: 0.05 });
      o2.hostFastPath = host;
      // through the checkpoint form: flat tensors + JSON (as saver.ts stores them)
      const flat = flattenOptimizerState(sd);
      const meta = JSON.parse(JSON.stringify(flat.meta));
      o2.loadStateDict(unflattenOptimizerState(flat.tensors, meta));
      for (let s = 0; s < 3; s++) {
        o.step(grads[s]);
        o2.step(grads[s]);
      }
      ps.forEach((p, i) => assert.deepEqual(copies[i].variable.dataSync(), p.variable.dataSync(), p.name));
      const s1 = await o.stateDict();
      const s2 = await o2.stateDict();
      assert.deepEqual(s2, s1);
      for (const g of grads) disposeGrads(g);
      o.dispose();
      o2.dispose();
      disposeParams(ps);
      disposeParams(copies);
    });
  }

  test('loadStateDict rejects mismatched states', async () => {
    const ps = toyParams();
    const o = createOptimizer(ps, { opt: 'adamw', lr: 0.01, weightDecay: 0.05 });
    const grads = toyGrads(ps, 3);
    o.step(grads);
    disposeGrads(grads);
    const sd = await o.stateDict();
    const o2 = createOptimizer(ps.slice(0, 4), { opt: 'adamw', lr: 0.01, weightDecay: 0.05 });
    assert.throws(() => o2.loadStateDict(sd), UserError);
    const o3 = createOptimizer(ps, { opt: 'adamw', lr: 0.01, weightDecay: 0 });
    assert.throws(() => o3.loadStateDict(sd), /parameter groups/);
    const bad = structuredClone(sd);
    (bad.state[3].exp_avg as HostTensor).shape = [3, 3, 3, 4];
    const o4 = createOptimizer(ps, { opt: 'adamw', lr: 0.01, weightDecay: 0.05 });
    assert.throws(() => o4.loadStateDict(bad), /layout/);
    for (const x of [o, o2, o3, o4]) x.dispose();
    disposeParams(ps);
  });
});

// ---------------------------------------------------------------------------------------------
// schedulers

function fakeOptimizer(lrs: number[]): { paramGroups: Array<{ lr: number; initialLr?: number; lrScale?: number }> } {
  return { paramGroups: lrs.map((lr) => ({ lr })) };
}

describe('schedulers', () => {
  const recipe = {
    sched: 'cosine',
    epochs: 300,
    minLr: 1e-5,
    warmupLr: 1e-6,
    warmupEpochs: 20,
    cooldownEpochs: 10,
    lrCycleMul: 1.0,
    lrCycleDecay: 0.5,
    lrCycleLimit: 1,
    lrKDecay: 1.0,
    seed: 42,
  };

  test('MambaOut cosine recipe: reference §5.3 values, 310 epochs, warmup lr at construction', () => {
    const opt = fakeOptimizer([4e-3, 4e-3]);
    const { scheduler, numEpochs } = createScheduler(recipe, opt);
    assert.equal(numEpochs, 310);
    assert.ok(scheduler instanceof CosineLRScheduler);
    // construction: initial_lr recorded, groups at the warmup lr (epoch 0 runs at 1e-6)
    assert.deepEqual(opt.paramGroups.map((g) => [g.lr, g.initialLr]), [[1e-6, 4e-3], [1e-6, 4e-3]]);
    // spec values (given to ~5 significant digits)
    const spec: Array<[number, number]> = [
      [0, 1.0e-6], [1, 2.0095e-4], [10, 2.0005e-3], [19, 3.80005e-3], [20, 3.9564e-3], [100, 3.0025e-3],
      [150, 2.005e-3], [200, 1.0075e-3], [299, 1.0109e-5], [300, 1e-5], [309, 1e-5],
    ];
    for (const [e, want] of spec) {
      const got = scheduler.lrAt(e)[0];
      assert.ok(Math.abs(got - want) <= 5e-5 * want, `E=${e}: ${got} vs ${want}`);
      // exact closed form
      const exact =
        e < 20 ? 1e-6 + e * ((4e-3 - 1e-6) / 20) : e < 300 ? 1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + Math.cos((Math.PI * e) / 300)) : 1e-5;
      assert.ok(Math.abs(got - exact) <= 1e-15, `E=${e}: ${got} vs closed form ${exact}`);
      scheduler.step(e, 50);
      assert.deepEqual(opt.paramGroups.map((g) => g.lr), [got, got]);
    }
    assert.equal(scheduler.lrAt(0)[0], 1e-6);
    assert.equal(scheduler.lrAt(150)[0], 1e-5 + 0.5 * (4e-3 - 1e-5));
    // step_update is a no-op with t_in_epochs
    scheduler.step(5);
    const lr5 = opt.paramGroups[0].lr;
    scheduler.stepUpdate(123456);
    assert.equal(opt.paramGroups[0].lr, lr5);
  });

  test('resume keeps an existing initial_lr; lr_scale multiplies; per-group base values', () => {
    const opt = fakeOptimizer([0.5, 0.5]);
    opt.paramGroups[0].initialLr = 4e-3; // from a loaded optimizer state
    opt.paramGroups[1].initialLr = 2e-3;
    opt.paramGroups[1].lrScale = 0.5;
    const s = new CosineLRScheduler(opt, { tInitial: 300, lrMin: 1e-5, warmupT: 20, warmupLrInit: 1e-6 });
    assert.deepEqual(s.baseValues, [4e-3, 2e-3]);
    s.step(150);
    assert.equal(opt.paramGroups[0].lr, 1e-5 + 0.5 * (4e-3 - 1e-5));
    assert.equal(opt.paramGroups[1].lr, (1e-5 + 0.5 * (2e-3 - 1e-5)) * 0.5);
  });

  test('cosine cycles: decay, limit, cycle_mul, k_decay, warmup_prefix, t_in_epochs=false', () => {
    const s = new CosineLRScheduler(fakeOptimizer([1]), { tInitial: 10, lrMin: 0.1, cycleLimit: 3, cycleDecay: 0.5 });
    assert.equal(s.lrAt(0)[0], 1);
    assert.equal(s.lrAt(10)[0], 0.1 + 0.5 * (0.5 - 0.1) * 2); // second cycle starts at base*0.5
    assert.ok(Math.abs(s.lrAt(25)[0] - (0.1 + 0.5 * (0.25 - 0.1) * (1 + Math.cos(Math.PI * 0.5)))) < 1e-15);
    assert.equal(s.lrAt(30)[0], 0.1); // i = 3 >= cycle_limit
    assert.equal(s.getCycleLength(), 30);

    const m = new CosineLRScheduler(fakeOptimizer([1]), { tInitial: 10, cycleMul: 2, cycleLimit: 2, lrMin: 0 });
    // cycles of 10 and 20: t = 15 is 5 into the 20-long second cycle
    const i = Math.floor(Math.log(1 - (15 / 10) * (1 - 2)) / Math.log(2));
    assert.equal(i, 1);
    assert.ok(Math.abs(m.lrAt(15)[0] - 0.5 * (1 + Math.cos((Math.PI * 5) / 20))) < 1e-15);
    assert.equal(m.getCycleLength(), 30);

    const k = new CosineLRScheduler(fakeOptimizer([1]), { tInitial: 10, kDecay: 2 });
    assert.ok(Math.abs(k.lrAt(5)[0] - 0.5 * (1 + Math.cos((Math.PI * 25) / 100))) < 1e-15);

    const p = new CosineLRScheduler(fakeOptimizer([1]), { tInitial: 10, warmupT: 5, warmupLrInit: 0, warmupPrefix: true });
    assert.equal(p.lrAt(5)[0], 1); // the cosine starts after the warmup
    assert.equal(p.lrAt(2)[0], 0.4);

    const opt = fakeOptimizer([1]);
    const u = new CosineLRScheduler(opt, { tInitial: 100, tInEpochs: false });
    u.step(50);
    assert.equal(opt.paramGroups[0].lr, 1);
    u.stepUpdate(50);
    assert.ok(Math.abs(opt.paramGroups[0].lr - 0.5) < 1e-15);
  });

  test('step and multistep (timm semantics incl. the multistep t+1 quirk)', () => {
    const { scheduler: st, numEpochs } = createScheduler(
      { sched: 'step', epochs: 90, decayEpochs: 30, decayRate: 0.1, warmupEpochs: 3, warmupLr: 1e-4 },
      fakeOptimizer([0.1]),
    );
    assert.ok(st instanceof StepLRScheduler);
    assert.equal(numEpochs, 90);
    const vals = [0, 1, 2, 3, 29, 30, 59, 60, 89].map((e) => st.lrAt(e)[0]);
    const want = [1e-4, 1e-4 + (0.1 - 1e-4) / 3, 1e-4 + (2 * (0.1 - 1e-4)) / 3, 0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 ** 2, 0.1 * 0.1 ** 2];
    assertRel(vals, want, 1e-14, 'step');

    const { scheduler: ms, numEpochs: n2 } = createScheduler(
      { sched: 'multistep', epochs: 90, decayMilestones: [30, 60], decayRate: 0.5, warmupEpochs: 0 },
      fakeOptimizer([0.1]),
    );
    assert.ok(ms instanceof MultiStepLRScheduler);
    assert.equal(n2, 90);
    // bisect_right(milestones, t + 1): the first decay already applies at t = 29
    const mv = [0, 28, 29, 30, 58, 59, 89].map((e) => ms.lrAt(e)[0]);
    assert.deepEqual(mv, [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]);
  });

  test('tanh and poly closed forms; unknown scheduler', () => {
    const t = new TanhLRScheduler(fakeOptimizer([1]), { tInitial: 10, lrMin: 0 });
    assert.ok(Math.abs(t.lrAt(4)[0] - 0.5 * (1 - Math.tanh(-7 * 0.6 + 3 * 0.4))) < 1e-15);
    const p = new PolyLRScheduler(fakeOptimizer([1]), { tInitial: 10, lrMin: 0.1, power: 2 });
    assert.ok(Math.abs(p.lrAt(5)[0] - (0.1 + 0.9 * 0.25)) < 1e-15);
    const { numEpochs } = createScheduler({ ...recipe, sched: 'poly' }, fakeOptimizer([1]));
    assert.equal(numEpochs, 310);
    assert.throws(() => createScheduler({ ...recipe, sched: 'sgdr' }, fakeOptimizer([1])), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /cosine/);
      return true;
    });
  });

  test('noise: deterministic per (seed, t), bounded by noise_pct, only inside the range', () => {
    const mk = (seed: number) =>
      createScheduler({ ...recipe, lrNoise: [0.5, 0.9], lrNoisePct: 0.67, seed }, fakeOptimizer([4e-3])).scheduler;
    const a = mk(42);
    const b = mk(42);
    const c = mk(7);
    const clean = createScheduler(recipe, fakeOptimizer([4e-3])).scheduler;
    let differs = 0;
    for (let e = 0; e < 310; e++) {
      const v = a.lrAt(e)[0];
      assert.equal(v, b.lrAt(e)[0]);
      const base = clean.lrAt(e)[0];
      if (e < 150 || e >= 270) {
        assert.equal(v, base, `no noise at ${e}`);
      } else {
        assert.ok(Math.abs(v / base - 1) < 0.67, `noise bound at ${e}`);
        assert.notEqual(v, base);
        if (c.lrAt(e)[0] !== v) differs++;
      }
    }
    assert.ok(differs > 100, 'another seed gives other noise');
    // scalar lr_noise: from 0.8*epochs on
    const s = createScheduler({ ...recipe, lrNoise: 0.8 }, fakeOptimizer([4e-3])).scheduler;
    assert.equal(s.lrAt(239)[0], clean.lrAt(239)[0]);
    assert.notEqual(s.lrAt(240)[0], clean.lrAt(240)[0]);
  });
});

// ---------------------------------------------------------------------------------------------
// losses

function logSoftmaxRef(row: number[]): number[] {
  const m = Math.max(...row);
  const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
  return row.map((x) => x - lse);
}

describe('losses', () => {
  const Z = [
    [1, 2, 3, -1],
    [0.5, 0.5, 0.5, 0.5],
    [-2, 4, 0, 1],
  ];
  const Y = [2, 1, 0];

  test('cross-entropy, label smoothing, soft targets: hand-computed values', () => {
    const lp = Z.map(logSoftmaxRef);
    const ce = -(lp[0][2] + lp[1][1] + lp[2][0]) / 3;
    const s = 0.1;
    const ls = lp.reduce((acc, row, b) => acc + (1 - s) * -row[Y[b]] + (s * -row.reduce((a, x) => a + x, 0)) / 4, 0) / 3;
    // soft targets: a mixup-like blend of rows
    const T = [
      [0.1, 0.2, 0.6, 0.1],
      [0, 1, 0, 0],
      [0.25, 0.25, 0.25, 0.25],
    ];
    const st = lp.reduce((acc, row, b) => acc - row.reduce((a, x, c) => a + T[b][c] * x, 0), 0) / 3;
    const z = tf.tensor2d(Z);
    const got = [
      crossEntropy(z, Y).dataSync()[0],
      crossEntropy(z, tf.tensor1d(Y, 'int32')).dataSync()[0],
      labelSmoothingCrossEntropy(z, Y, s).dataSync()[0],
      softTargetCrossEntropy(z, tf.tensor2d(T)).dataSync()[0],
    ];
    assertRel(got, [ce, ce, ls, st], 1e-6, 'losses');
    // label smoothing == soft-target CE against on = 1 - s + s/C, off = s/C
    const smooth = Y.map((y) => [0, 1, 2, 3].map((c) => (c === y ? 1 - s + s / 4 : s / 4)));
    assert.ok(Math.abs(softTargetCrossEntropy(z, tf.tensor2d(smooth)).dataSync()[0] - ls) < 1e-6);
  });

  test('numerically stable for large logits; gradient of CE = (softmax - onehot)/B', () => {
    const z = tf.tensor2d([[1000, -1000, 0], [-1e4, 1e4, 3]]);
    const v = crossEntropy(z, [0, 2]).dataSync()[0];
    assert.ok(Number.isFinite(v));
    assert.ok(Math.abs(v - (0 + (1e4 - 3)) / 2) < 1e-2, `${v}`);
    const zs = tf.tensor2d(Z);
    const g = tf.grad((x: tf.Tensor) => crossEntropy(x, Y))(zs).arraySync() as number[][];
    Z.forEach((row, b) => {
      const p = logSoftmaxRef(row).map(Math.exp);
      row.forEach((_, c) => assert.ok(Math.abs(g[b][c] - (p[c] - (c === Y[b] ? 1 : 0)) / 3) < 1e-6));
    });
  });

  test('cross-entropy of the fixture eval logits equals the PyTorch loss', async () => {
    const io = await readSafetensors(fixture('micro_io.safetensors'));
    const logits = io.get('logits')!;
    const labels = io.get('labels')!;
    assert.equal(labels.dtype, 'int64');
    const y = Array.from(labels.data as BigInt64Array, Number);
    assert.deepEqual(y, [0, 3, 7, 9]);
    const loss = crossEntropy(tf.tensor(f32(logits), logits.shape), y).dataSync()[0];
    const want = f32(io.get('loss')!)[0];
    assert.ok(Math.abs(loss - want) <= 1e-6, `loss ${loss} vs torch ${want}`);
  });

  test('binary cross-entropy (timm BinaryCrossEntropy)', () => {
    const z = [[2, -1, 0], [-3, 0.5, 1]];
    const y = [0, 2];
    const s = 0.1;
    const off = s / 3;
    const on = 1 - s + off;
    let sum = 0;
    z.forEach((row, b) =>
      row.forEach((x, c) => {
        const t = c === y[b] ? on : off;
        sum += Math.max(x, 0) - x * t + Math.log1p(Math.exp(-Math.abs(x)));
      }),
    );
    const got = binaryCrossEntropy(tf.tensor2d(z), y, { smoothing: s }).dataSync()[0];
    assert.ok(Math.abs(got - sum / 6) < 1e-6);
    // threshold turns soft targets into 0/1
    const soft = tf.tensor2d([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]);
    let sum2 = 0;
    const hard = [[1, 0, 0], [0, 0, 1]];
    z.forEach((row, b) => row.forEach((x, c) => (sum2 += Math.max(x, 0) - x * hard[b][c] + Math.log1p(Math.exp(-Math.abs(x))))));
    assert.ok(Math.abs(binaryCrossEntropy(tf.tensor2d(z), soft, { targetThreshold: 0.5 }).dataSync()[0] - sum2 / 6) < 1e-6);
  });

  test('createTrainLoss follows train.py (first match wins)', () => {
    assert.equal(createTrainLoss({ mixupActive: true, smoothing: 0.1 }).name, 'SoftTargetCrossEntropy');
    assert.equal(createTrainLoss({ mixupActive: true, smoothing: 0.1 }).targets, 'soft');
    assert.equal(createTrainLoss({ mixupActive: true, bceLoss: true, smoothing: 0.1 }).name, 'BinaryCrossEntropy');
    const ls = createTrainLoss({ mixupActive: false, smoothing: 0.1 });
    assert.equal(ls.name, 'LabelSmoothingCrossEntropy');
    assert.equal(ls.targets, 'labels');
    assert.equal(createTrainLoss({ mixupActive: false, smoothing: 0.1, bceLoss: true }).name, 'BinaryCrossEntropy');
    assert.equal(createTrainLoss({ mixupActive: false, smoothing: 0 }).name, 'CrossEntropyLoss');
    assert.throws(() => createTrainLoss({ mixupActive: true, jsdLoss: true }), UserError);
    const z = tf.tensor2d(Z);
    const lsv = ls.fn(z, tf.tensor1d(Y, 'int32')).dataSync()[0];
    assert.ok(Math.abs(lsv - labelSmoothingCrossEntropy(z, Y, 0.1).dataSync()[0]) < 1e-7);
  });
});

// ---------------------------------------------------------------------------------------------
// clipping

describe('gradient clipping', () => {
  test('norm: scales by max/(total + 1e-6) only when the total exceeds max', () => {
    const grads: GradMap = new Map([
      ['a', tf.tensor1d([3, 4])],
      ['b', tf.tensor2d([[12]])],
    ]);
    const { grads: out, totalNorm } = clipGradNorm(grads, 6.5);
    assert.ok(Math.abs(totalNorm.dataSync()[0] - 13) < 1e-5);
    const c = 6.5 / (13 + 1e-6);
    assertRel(out.get('a')!.dataSync(), [3 * c, 4 * c], 1e-6, 'a');
    assertRel(out.get('b')!.dataSync(), [12 * c], 1e-6, 'b');
    // below the threshold: unchanged, bit for bit
    const { grads: same } = clipGradNorm(grads, 20);
    assert.deepEqual(same.get('a')!.dataSync(), grads.get('a')!.dataSync());
    // inputs untouched
    assert.deepEqual(Array.from(grads.get('a')!.dataSync()), [3, 4]);
    // inf norm
    const { totalNorm: inf } = clipGradNorm(grads, 1, Infinity);
    assert.equal(inf.dataSync()[0], 12);
  });

  test('value: clamps elements', () => {
    const out = clipGradValue(new Map([['a', tf.tensor1d([-3, 0.5, 2])]]), 1);
    assert.deepEqual(Array.from(out.get('a')!.dataSync()), [-1, 0.5, 1]);
  });

  test('agc: unit-wise (per output row) clipping, hand-computed; layout hint; head excluded', () => {
    // weight [2, 2]: row norms 5 and 0 -> max_norm = [5*0.1, 1e-3*0.1]
    const w = { name: 'fc.weight', variable: tf.variable(tf.tensor2d([[3, 4], [0, 0]])) };
    const b = { name: 'fc.bias', variable: tf.variable(tf.tensor1d([0.3, 0.4])) }; // norm 0.5 -> max 0.05
    const grads: GradMap = new Map([
      ['fc.weight', tf.tensor2d([[0.3, 0.4], [1, 0]])], // row norms 0.5 (>= 0.5: clipped to itself), 1 (clipped to 1e-4)
      ['fc.bias', tf.tensor1d([0.01, 0.02])], // norm 0.02236 < 0.05: kept
    ]);
    const out = adaptiveClipGrad([w, b], grads, 0.1);
    const r0 = 0.5 / 0.5;
    assertRel(out.get('fc.weight')!.dataSync(), [0.3 * r0, 0.4 * r0, 1e-4, 0], 1e-5, 'agc weight');
    assert.deepEqual(out.get('fc.bias')!.dataSync(), grads.get('fc.bias')!.dataSync());

    // the same weight stored transposed ([in, out], output axis 1) gives the transposed result
    const wt = { name: 'fc.weight', variable: tf.variable(tf.tensor2d([[3, 0], [4, 0]])) };
    const gt: GradMap = new Map([['fc.weight', tf.tensor2d([[0.3, 1], [0.4, 0]])]]);
    const outT = adaptiveClipGrad([wt], gt, 0.1, { outAxis: () => 1 });
    assertRel(outT.get('fc.weight')!.dataSync(), [0.3, 1e-4, 0.4, 0], 1e-5, 'agc transposed');
    assert.deepEqual(unitwiseNorm(tf.tensor4d(pseudo(24, 1), [2, 3, 2, 2]), 0).shape, [2, 1, 1, 1]);

    // dispatch: agc skips the last two parameters (the classifier)
    const big: GradMap = new Map([
      ['fc.weight', tf.tensor2d([[30, 40], [10, 0]])],
      ['fc.bias', tf.tensor1d([5, 5])],
    ]);
    const trunk = { name: 'trunk.weight', variable: tf.variable(tf.tensor2d([[1, 0]])) };
    big.set('trunk.weight', tf.tensor2d([[10, 0]]));
    const d = dispatchClipGrad([trunk, w, b], big, 0.1, 'agc');
    assert.deepEqual(d.get('fc.weight')!.dataSync(), big.get('fc.weight')!.dataSync());
    assertRel(d.get('trunk.weight')!.dataSync(), [0.1, 0], 1e-5, 'trunk clipped');
    assert.throws(() => dispatchClipGrad([w], big, 1, 'bogus'), UserError);
    const n = dispatchClipGrad([w, b], big, 1, 'norm');
    assert.ok(Math.abs(n.get('fc.bias')!.dataSync()[0] - 5 / Math.sqrt(900 + 1600 + 100 + 50 + 100)) < 1e-6); // trunk grad included
  });
});

// ---------------------------------------------------------------------------------------------
// EMA

describe('ModelEmaV2', () => {
  test('ema = d*ema + (1-d)*p exactly (float32), after each update; state round trip; no leaks', async () => {
    const ps = toyParams(2);
    const ema = new ModelEmaV2(ps, 0.9998);
    const d = Math.fround(0.9998);
    const od = Math.fround(1 - 0.9998);
    let expected = readParams(ps);
    const opt = createOptimizer(ps, { opt: 'sgd', lr: 0.5, weightDecay: 0 });
    let n0 = 0;
    for (let s = 0; s < 5; s++) {
      const g = toyGrads(ps, 40 + s);
      opt.step(g);
      disposeGrads(g);
      ema.update(ps);
      const model = readParams(ps);
      expected = expected.map((e, j) => e.map((x, i) => Math.fround(Math.fround(d * x) + Math.fround(od * model[j][i]))));
      ema.params.forEach((p, j) => assert.deepEqual(p.variable.dataSync(), expected[j], `${p.name} step ${s}`));
      if (s === 1) n0 = tf.memory().numTensors;
    }
    assert.equal(tf.memory().numTensors, n0);
    // the EMA is not the model
    assert.notDeepEqual(ema.params[0].variable.dataSync(), ps[0].variable.dataSync());

    const sd = await ema.stateDict();
    assert.deepEqual([...sd.keys()], ps.map((p) => p.name));
    const ema2 = new ModelEmaV2(ps, 0.9998);
    ema2.loadStateDict(sd);
    ema2.params.forEach((p, j) => assert.deepEqual(p.variable.dataSync(), expected[j]));
    ema2.set(ps);
    assert.deepEqual(ema2.params[0].variable.dataSync(), ps[0].variable.dataSync());
    assert.throws(() => ema2.loadStateDict(new Map()), UserError);
    ema.dispose();
    ema2.dispose();
    opt.dispose();
    disposeParams(ps);
  });
});

// ---------------------------------------------------------------------------------------------
// metrics

describe('metrics', () => {
  test('accuracy top-1/top-5 per timm (maxk clipped to the class count)', async () => {
    const logits = tf.tensor2d([
      [0.1, 0.5, 0.2], // top order 1, 2, 0
      [0.9, 0.0, 0.3], // 0, 2, 1
      [0.2, 0.3, 0.4], // 2, 1, 0
      [0.7, 0.8, 0.1], // 1, 0, 2
    ]);
    const targets = [1, 2, 0, 2];
    assert.deepEqual(await accuracy(logits, targets, [1, 2, 5]), [25, 50, 100]);
    assert.deepEqual(accuracySync(logits, tf.tensor1d(targets, 'int32'), [1]), [25]);
    // timm computes count*100/B in float32
    const three = tf.tensor2d([[1, 0], [1, 0], [0, 1]]);
    assert.deepEqual(accuracySync(three, [0, 1, 1], [1]), [Math.fround(200 / 3)]);
  });

  test('AverageMeter', () => {
    const m = new AverageMeter();
    m.update(2, 3);
    m.update(4);
    assert.equal(m.val, 4);
    assert.equal(m.sum, 10);
    assert.equal(m.count, 4);
    assert.equal(m.avg, 2.5);
    m.reset();
    assert.equal(m.count, 0);
  });
});

test('readBack returns the values of every tensor in order, for any count (the power-of-two padding is cut off), and disposes them', async () => {
  for (const n of [1, 2, 3, 5, 8, 13]) {
    const before = tf.memory().numTensors;
    const scalars = Array.from({ length: n }, (_, i) => tf.scalar(i + 0.5));
    assert.deepEqual([...(await readBack(scalars))], Array.from({ length: n }, (_, i) => i + 0.5), `${n} scalars`);
    const triples = Array.from({ length: n }, (_, i) => tf.tensor1d([i + 1, -i - 1, 2 * i + 2]));
    assert.deepEqual([...(await readBack(triples))], Array.from({ length: n }, (_, i) => [i + 1, -i - 1, 2 * i + 2]).flat(), `${n} triples`);
    assert.equal(tf.memory().numTensors, before, `no tensor left behind (${n})`);
  }
});
