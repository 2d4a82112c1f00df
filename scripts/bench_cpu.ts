/**
 * CPU inference benchmark: images/second of a MambaOut model (default mambaout_femto, 224 px) through the ONNX
 * export on onnxruntime-node, at batch 1 and 8 with 2 threads; optionally the tfjs wasm backend for comparison.
 *
 *   node --import tsx scripts/bench_cpu.ts [--model mambaout_femto] [--size 224] [--threads 2]
 *        [--batches 1,8] [--rounds 15] [--weights file.pth] [--no-tfjs] [--save-onnx out.onnx]
 *
 * Weights: --weights, else ../shared/fixtures/femto_random.pth (seen from the repository root) for femto, else a
 * random initialisation (trunc-normal std 0.02, zero biases, LayerNorm 1/0 as in the PyTorch code; the speed does
 * not depend on the values).
 *
 * Each configuration is warmed up, then timed in `rounds` rounds of >= 16 images, the configurations taking turns
 * round by round; the median and the best round are printed (the best round is the less noisy figure on a shared
 * machine).
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import type { TensorMap } from '../src/checkpoint/types.js';
import { buildOnnxModel, expectedStateDictShapes, onnxConfigFor, writeOnnx, type OnnxModelConfig } from '../src/export/onnx.js';
import { OrtClassifier, loadOnnxRuntime } from '../src/engine/onnxruntime.js';
import { Rng } from '../src/utils/rng.js';
import { isUserError } from '../src/errors.js';

/** The repository root: the nearest folder above this file holding package.json (works from scripts/ and dist/scripts/). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** Random weights with the PyTorch init of models/mambaout.py (values do not matter for speed). */
function randomStateDict(config: OnnxModelConfig, seed = 0): TensorMap {
  const rng = new Rng(seed);
  const sd: TensorMap = new Map();
  for (const [name, shape] of expectedStateDictShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNorm = /(^|\.)norm\d?\.weight$/.test(name);
    if (isNorm) data.fill(1);
    else if (name.endsWith('.weight')) {
      for (let i = 0; i < n; i++) data[i] = Math.max(-2, Math.min(2, rng.normal(0, 0.02)));
    }
    sd.set(name, { dtype: 'float32', shape, data });
  }
  return sd;
}

interface Result {
  label: string;
  batch: number;
  median: number;
  best: number;
}

interface Case {
  label: string;
  batch: number;
  fn: () => Promise<unknown>;
}

/**
 * Time several cases round-robin: each round runs every case once over `imagesPerRound` images, so background
 * load on a shared machine hits all cases alike. Prints and returns the median and best round of each case.
 */
async function timeCases(cases: Case[], rounds: number, warmup = 3, imagesPerRound = 16): Promise<Result[]> {
  for (const c of cases) for (let i = 0; i < warmup; i++) await c.fn();
  const rates = cases.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < cases.length; k++) {
      const { batch, fn } = cases[k];
      const iters = Math.max(1, Math.ceil(imagesPerRound / batch));
      const t0 = performance.now();
      for (let i = 0; i < iters; i++) await fn();
      rates[k].push((iters * batch) / ((performance.now() - t0) / 1000));
    }
  }
  return cases.map((c, k) => {
    const sorted = [...rates[k]].sort((a, b) => a - b);
    const res = { label: c.label, batch: c.batch, median: sorted[Math.floor(sorted.length / 2)], best: sorted[sorted.length - 1] };
    const n = Math.max(1, Math.ceil(imagesPerRound / c.batch)) * c.batch;
    console.log(
      `${c.label.padEnd(46)} batch ${String(c.batch).padStart(2)}: ${res.median.toFixed(1).padStart(6)} img/s median, ` +
        `${res.best.toFixed(1).padStart(6)} best (${rounds} rounds x ${n} images)`,
    );
    return res;
  });
}

function randomImages(n: number, size: number, seed = 1): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(n * 3 * size * size);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return x;
}

/** tfjs MambaOut (src/models) on the wasm backend, batch 1. */
async function benchTfjsWasm(model: string, stateDict: TensorMap, size: number, threads: number, rounds: number): Promise<Result> {
  const [{ initBackend }, { createModel }, { getModelConfig }, tf] = await Promise.all([
    import('../src/backend/index.js'),
    import('../src/models/mambaout.js'),
    import('../src/models/registry.js'),
    import('@tensorflow/tfjs-core'),
  ]);
  await initBackend('wasm', { wasmThreads: threads });
  const m = createModel(getModelConfig(model).name, { noInit: true });
  m.loadStateDict(stateDict);
  const x = tf.tensor4d(randomImages(1, size), [1, size, size, 3]);
  const [r] = await timeCases(
    [
      {
        label: `tfjs ${tf.getBackend()} (setThreadsCount(${threads}))`,
        batch: 1,
        fn: async () => {
          const y = tf.tidy(() => m.forward(x));
          await y.data();
          y.dispose();
        },
      },
    ],
    rounds,
    1,
    4,
  );
  x.dispose();
  m.dispose();
  return r;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'mambaout_femto' },
      size: { type: 'string', default: '224' },
      threads: { type: 'string', default: '2' },
      batches: { type: 'string', default: '1,8' },
      rounds: { type: 'string', default: '15' },
      weights: { type: 'string' },
      'no-tfjs': { type: 'boolean', default: false },
      'tfjs-rounds': { type: 'string', default: '2' },
      'save-onnx': { type: 'string' },
      'tfjs-only': { type: 'boolean', default: false },
    },
  });
  const model = values.model!;
  const size = Number(values.size);
  const threads = Number(values.threads);
  const batches = values.batches!.split(',').map(Number);
  const rounds = Number(values.rounds);
  const config = onnxConfigFor(model);

  let weightsPath = values.weights ? resolve(values.weights) : null;
  if (!weightsPath && model === 'mambaout_femto') {
    const p = join(repoRoot(), '..', 'shared', 'fixtures', 'femto_random.pth');
    if (existsSync(p)) weightsPath = p;
  }
  const stateDict = weightsPath ? (await loadCheckpoint(weightsPath, { stateDictOnly: true })).stateDict : randomStateDict(config);
  if (values['tfjs-only']) {
    const r = await benchTfjsWasm(model, stateDict, size, threads, Number(values['tfjs-rounds']));
    console.log(JSON.stringify({ tfjs: r }));
    return;
  }
  const ort = await loadOnnxRuntime();
  console.log(
    `model ${model} (${size}x${size}), weights ${weightsPath ?? 'random init'}, onnxruntime-node ${ort.env.versions?.node}, ` +
      `${threads} threads, node ${process.version}`,
  );

  let t0 = performance.now();
  const bytes = buildOnnxModel(config, stateDict);
  console.log(`export: ${(performance.now() - t0).toFixed(0)} ms, ${(bytes.byteLength / 1e6).toFixed(1)} MB`);
  if (values['save-onnx']) await writeOnnx(values['save-onnx'], bytes);
  t0 = performance.now();
  const clf = await OrtClassifier.create(bytes, { threads, maxBatch: Math.max(...batches), label: model });
  console.log(`session: ${(performance.now() - t0).toFixed(0)} ms; ${clf.describe()}`);
  const clfNhwc = await OrtClassifier.create(buildOnnxModel(config, stateDict, { layout: 'nhwc' }), {
    threads,
    maxBatch: Math.max(...batches),
    label: model + ' (nhwc input)',
  });

  const cases: Case[] = [];
  for (const b of batches) {
    const x = randomImages(b, size);
    cases.push({ label: 'onnxruntime run() NCHW', batch: b, fn: () => clf.run(x, b, size, size) });
    cases.push({ label: 'onnxruntime infer() NHWC (JS transpose)', batch: b, fn: () => clf.infer(x, b, size, size) });
    cases.push({ label: 'onnxruntime infer() NHWC (Transpose in graph)', batch: b, fn: () => clfNhwc.infer(x, b, size, size) });
  }
  const results = await timeCases(cases, rounds);
  clf.dispose();
  clfNhwc.dispose();

  if (!values['no-tfjs']) {
    // tfjs wasm for comparison (batch 1 only: it is ~50x slower), in a child process so that onnxruntime's thread
    // pool and memory arena do not share the process with it.
    const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2), '--tfjs-only'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
    });
    const line = child.stdout.split('\n').find((l) => l.startsWith('{"tfjs"'));
    process.stdout.write(child.stdout.split('\n').filter((l) => l && !l.startsWith('{"tfjs"')).map((l) => l + '\n').join(''));
    if (line) results.push((JSON.parse(line) as { tfjs: Result }).tfjs);
    else console.log(`tfjs wasm comparison failed (exit ${child.status})`);
  }
  console.log(JSON.stringify({ model, size, threads, results }));
}

main().catch((e) => {
  if (isUserError(e)) {
    console.error(e.message);
    process.exit(e.exitCode);
  }
  throw e;
});
