/**
 * GEMM tile sweep on the exact products of a MambaOut training step (WebGPU): every tile of the table
 * (src/backend/kernels/webgpu/matmul_tiles.ts) on every distinct matmul / Linear / conv-input-gradient problem, with
 * GPU time from timestamp queries and TFLOP/s, next to the v1 kernel (or tfjs's, for the conv gradient) and the tile
 * the rules pick. Re-tune GEMM_RULES from its output.
 *
 *   node --import tsx scripts/gemm_sweep.ts --models mambaout_femto,mambaout_tiny --batch 128 [--img-size 224]
 *        [--out sweep.tsv] [--max-tiles 8] [--reps 5]
 *
 * The problems are recorded from one real training step of each model (the engine's kernel calls: BatchMatMul,
 * MambaoutLinear, Conv2DBackpropInput with their shapes and attributes), so the list is the model's, not a copy.
 * stdout: one line per problem (best tile, the rules' tile, v1); --out: every (problem, tile) measurement as TSV.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { initWebGPU, releaseWebGPU } from '../src/backend/webgpu.js';
import { GEMM_TILES, setGemmTuning, setWebGPUKernelSettings } from '../src/backend/kernels/webgpu/index.js';
import { chooseTile, isLongK, tileShared, tileThreads, type GemmTile } from '../src/backend/kernels/webgpu/matmul_tiles.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { createOptimizer } from '../src/train/optim/index.js';

interface Problem {
  kernel: 'BatchMatMul' | 'MambaoutLinear' | 'Conv2DBackpropInput';
  shapes: number[][];
  attrs: Record<string, unknown>;
  /** Where it came from (first model that used it) and how often one step runs it. */
  where: string;
  count: number;
  flops: number;
  /** GEMM view for the rules: M, N, K. */
  mnk: [number, number, number];
}

function describe(p: Problem): string {
  const a = p.attrs;
  if (p.kernel === 'BatchMatMul') return `matmul [${p.shapes[0]}]${a.transposeA ? 'T' : ''} x [${p.shapes[1]}]${a.transposeB ? 'T' : ''}`;
  if (p.kernel === 'MambaoutLinear') return `linear [${p.shapes[0]}] x [${p.shapes[1]}]T${p.shapes.length > 3 ? ' +res' : ''}${a.gelu ? ' gelu' : ''}`;
  return `conv dx [${(a.inputShape as number[]).join(',')}] f[${p.shapes[1]}]`;
}

/** Record the problems of one training step. */
async function recordProblems(model: string, batch: number, size: number): Promise<Problem[]> {
  const m = createModel(getModelConfig(model).name, { seed: 0 });
  const params = m.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
  const x = tf.randomNormal([batch, size, size, 3]) as tf.Tensor4D;
  const y = tf.oneHot(tf.randomUniform([batch], 0, m.numClasses, 'int32') as tf.Tensor1D, m.numClasses);
  const found = new Map<string, Problem>();
  const engine = tf.engine() as unknown as { runKernelFunc: (...a: unknown[]) => unknown };
  const orig = engine.runKernelFunc;
  engine.runKernelFunc = function (this: unknown, ...args: unknown[]) {
    const k = args[0] as { kernelName?: string; inputs?: Record<string, tf.Tensor>; attrs?: Record<string, unknown> };
    const name = k?.kernelName;
    if (name === 'BatchMatMul' || name === 'MambaoutLinear' || name === 'Conv2DBackpropInput') {
      const ins = k.inputs!;
      const order = name === 'BatchMatMul' ? ['a', 'b'] : name === 'MambaoutLinear' ? ['x', 'weight', 'bias', 'residual'] : ['dy', 'filter'];
      const shapes = order.filter((n) => ins[n]).map((n) => ins[n].shape.slice());
      const attrs = { ...(k.attrs ?? {}) };
      const key = `${name}|${JSON.stringify(shapes)}|${JSON.stringify(attrs)}`;
      const prev = found.get(key);
      if (prev) prev.count++;
      else {
        let mnk: [number, number, number];
        let flops: number;
        if (name === 'BatchMatMul') {
          const [sa, sb] = shapes;
          const ta = !!attrs.transposeA;
          const tb = !!attrs.transposeB;
          const M = ta ? sa[sa.length - 1] : sa[sa.length - 2];
          const K = ta ? sa[sa.length - 2] : sa[sa.length - 1];
          const N = tb ? sb[sb.length - 2] : sb[sb.length - 1];
          const bt = Math.max(sa.slice(0, -2).reduce((p, q) => p * q, 1), sb.slice(0, -2).reduce((p, q) => p * q, 1));
          mnk = [M, N, K];
          flops = 2 * M * N * K * bt;
        } else if (name === 'MambaoutLinear') {
          mnk = [shapes[0][0], shapes[1][0], shapes[0][1]];
          flops = 2 * mnk[0] * mnk[1] * mnk[2];
        } else {
          const inS = attrs.inputShape as number[];
          const [kh, kw, , cout] = shapes[1];
          const s = Array.isArray(attrs.strides) ? (attrs.strides as number[])[0] : (attrs.strides as number);
          mnk = [inS[0] * inS[1] * inS[2], inS[3], Math.ceil(kh / s) * Math.ceil(kw / s) * cout];
          flops = 2 * shapes[0].slice(0, 3).reduce((p, q) => p * q, 1) * kh * kw * inS[3] * cout;
        }
        found.set(key, { kernel: name, shapes, attrs, where: model, count: 1, flops, mnk });
      }
    }
    return orig.apply(this, args);
  };
  try {
    const loss = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, m.forward(x, { training: true })) as tf.Scalar,
        params.map((p) => p.variable));
      opt.step(new Map(params.map((p) => [p.name, grads[p.variable.name]])));
      return value;
    });
    await loss.data();
    loss.dispose();
    const out = tf.tidy(() => m.forward(x));
    await out.data();
    out.dispose();
  } finally {
    engine.runKernelFunc = orig;
  }
  tf.dispose([x, y]);
  opt.dispose();
  m.dispose();
  return [...found.values()];
}

/** Deterministic GPU data without a host round trip. */
function gpuData(shape: number[], phase: number): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tidy(() => tf.sin(tf.add(tf.mul(tf.range(0, size, 1, 'float32'), 0.7548776662), phase)).reshape(shape));
}

/**
 * GPU ms of one call: median over `reps` timings of INNER back-to-back calls (timestamp queries per dispatch). Run 1
 * timed single calls with the GPU idle in between, and its figures came out ~2-3.5x the same kernels' times inside a
 * busy training step (profile), with some inversions between sizes; calls queued back to back keep the GPU busy.
 */
const INNER = 4;
async function timeProblem(p: Problem, inputs: tf.Tensor[], reps: number): Promise<number> {
  const names = p.kernel === 'BatchMatMul' ? ['a', 'b'] : p.kernel === 'MambaoutLinear' ? ['x', 'weight', 'bias', 'residual'] : ['dy', 'filter'];
  const map: tf.NamedTensorMap = {};
  inputs.forEach((t, i) => (map[names[i]] = t));
  const run = () => {
    const o = tf.engine().runKernel(p.kernel, map, p.attrs as tf.NamedAttrMap);
    tf.dispose(o as tf.Tensor | tf.Tensor[]);
  };
  run(); // compile
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    ms.push(((await tf.time(() => {
      for (let j = 0; j < INNER; j++) run();
    })).kernelMs as number) / INNER);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'mambaout_femto,mambaout_tiny' },
      batch: { type: 'string', default: '128' },
      'img-size': { type: 'string', default: '224' },
      out: { type: 'string', default: '' },
      reps: { type: 'string', default: '5' },
      'max-tiles': { type: 'string', default: '8', describe: 'tiles per problem besides the rules\' choice (closest widths first)' },
    },
  });
  tf.env().set('PROD', true);
  const r = await initWebGPU();
  if (!r.ok) throw new Error(`no webgpu: ${r.reason}`);
  const batch = Number(values.batch);
  const reps = Number(values.reps);
  const maxTiles = Number(values['max-tiles']);
  const limits = { sharedBytes: r.info.limits.maxComputeWorkgroupStorageSize, threads: r.info.limits.maxComputeInvocationsPerWorkgroup };
  const problems: Problem[] = [];
  for (const model of (values.models as string).split(',')) {
    const t0 = performance.now();
    const ps = await recordProblems(model, batch, Number(values['img-size']));
    for (const p of ps) {
      const same = problems.find((q) => describe(q) === describe(p) && JSON.stringify(q.attrs) === JSON.stringify(p.attrs));
      if (same) same.where += `,${model.replace('mambaout_', '')}`;
      else problems.push({ ...p, where: model.replace('mambaout_', '') });
    }
    console.log(`# ${model} batch ${batch}: ${ps.length} distinct GEMM problems in a step + forward (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  const tsv: string[] = ['problem\twhere\tcalls\tM\tN\tK\tvariant\tms\ttflops'];
  console.log('# problem xcalls models | v1 (or tfjs) ms | rules: tile ms TFLOP/s | best: tile ms TFLOP/s (= same)');
  let totRule = 0;
  let totBest = 0;
  let totOld = 0;
  for (const p of problems) {
    const [M, N, K] = p.mnk;
    const inputs = p.shapes.map((s, i) => gpuData(s, 0.3 + i));
    const tf_ = (ms: number) => (p.flops / (ms * 1e9)).toFixed(1);
    // Old kernel: v1 matmul (Linear: v1 matmul + add, approximated by the matmul alone) / tfjs's conv input gradient.
    const prevSettings = setWebGPUKernelSettings({ gemm: false, convBackpropInput: false });
    let oldMs = NaN;
    if (p.kernel !== 'MambaoutLinear') {
      oldMs = await timeProblem(p, inputs, reps);
      tsv.push(`${describe(p)}\t${p.where}\t${p.count}\t${M}\t${N}\t${K}\t${p.kernel === 'BatchMatMul' ? 'v1' : 'tfjs'}\t${oldMs.toFixed(4)}\t${tf_(oldMs)}`);
    }
    setWebGPUKernelSettings(prevSettings);
    const batchDims = p.kernel === 'BatchMatMul' ? Math.max(p.shapes[0].slice(0, -2).reduce((a, b) => a * b, 1), p.shapes[1].slice(0, -2).reduce((a, b) => a * b, 1)) : 1;
    const rule = chooseTile({ M, N, K, batch: batchDims, longK: p.kernel === 'BatchMatMul' && isLongK(M, N, K, batchDims) }, limits);
    // Candidates: the rules' tile plus the tiles whose width wastes least of N, then the rest.
    const fit = GEMM_TILES.filter((t) => tileShared(t) <= limits.sharedBytes && tileThreads(t) <= limits.threads);
    const waste = (t: GemmTile) => (Math.ceil(N / t.bn) * t.bn) / N + (Math.ceil(M / t.bm) * t.bm) / M;
    const cands = [rule, ...fit.filter((t) => t !== rule).sort((a, b) => waste(a) - waste(b)).slice(0, maxTiles)];
    let best = { name: '', ms: Infinity };
    let ruleMs = NaN;
    for (const t of cands) {
      setGemmTuning({ forceTile: t.name });
      let ms = NaN;
      try {
        ms = await timeProblem(p, inputs, reps);
      } catch (e) {
        console.log(`# ${describe(p)} tile ${t.name}: ${(e as Error).message.split('\n')[0]}`);
      }
      setGemmTuning({ forceTile: '' });
      tsv.push(`${describe(p)}\t${p.where}\t${p.count}\t${M}\t${N}\t${K}\t${t.name}${t === rule ? ' (rule)' : ''}\t${ms.toFixed(4)}\t${tf_(ms)}`);
      if (t === rule) ruleMs = ms;
      if (ms < best.ms) best = { name: t.name, ms };
    }
    tf.dispose(inputs);
    totRule += ruleMs * p.count;
    totBest += best.ms * p.count;
    if (!Number.isNaN(oldMs)) totOld += oldMs * p.count;
    console.log(`${describe(p)} x${p.count} ${p.where} | ${Number.isNaN(oldMs) ? '-' : oldMs.toFixed(3)} | ` +
      `${rule.name} ${ruleMs.toFixed(3)} ${tf_(ruleMs)} | ${best.name === rule.name ? '=' : `${best.name} ${best.ms.toFixed(3)} ${tf_(best.ms)}`}`);
  }
  console.log(`# per step (calls x ms, all models): rules ${totRule.toFixed(2)} ms, best tiles ${totBest.toFixed(2)} ms, old kernels ${totOld.toFixed(2)} ms (matmul + conv dx, Linear not included)`);
  if (values.out) writeFileSync(values.out as string, tsv.join('\n') + '\n');
  releaseWebGPU();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
