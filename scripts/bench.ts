/**
 * Model benchmark: training and inference throughput of a MambaOut model on a tfjs backend.
 *
 *   npm run bench -- --model mambaout_femto --backend webgpu --batch 64 --img-size 224 [--steps 10] [--profile]
 *
 * Train step = forward (training mode) + softmax cross-entropy + backward + AdamW update (our optimizer).
 * Inference = forward in eval mode with the logits read back. Reports img/s (median over timed steps after warm-up),
 * peak tfjs memory (bytes and tensors) and, on webgpu, Dawn's buffer memory (peak live bytes during the timed steps:
 * the figure to compare with PyTorch's max_memory_allocated). `--profile` prints a per-kernel time table (top `--top`)
 * of one training step and of one inference forward (tf.profile; on webgpu it needs the timestamp-query feature).
 * Kernel selection on webgpu: MAMBAOUT_WEBGPU_KERNELS=v1 (the first kernels) or MAMBAOUT_WEBGPU_OFF=feature,...
 * (src/backend/kernels/webgpu/settings.ts); the line `kernels:` says which are on. `--amp`: what `mambaout-train --amp`
 * turns on (bf16 activation storage on webgpu, src/ops/gated_cnn_bf16.ts; no effect elsewhere, said so).
 *
 * `--breakdown` (meant for webgpu) shows where a training step's wall time goes: engine kernels and GPU dispatches
 * per step (by kernel name), time spent in each Dawn call (createBindGroup, submit, createBuffer, ...), GC time,
 * the time to issue vs. the time until the GPU is done for the whole step, forward/backward only, forward only
 * (train and eval) and the optimizer alone, and the step time for several WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE values.
 * (It found tfjs's Mean gradient building `ones(x.shape)` on the host: ~2 s of a 2.7 s femto step.)
 */
import * as tf from '@tensorflow/tfjs-core';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { describeWebGPUKernelSettings } from '../src/backend/kernels/webgpu/settings.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { isUserError } from '../src/errors.js';
import { enableMixedPrecision } from '../src/ops/fused.js';

const argv = yargs(hideBin(process.argv))
  .options({
    model: { type: 'string', default: 'mambaout_femto' },
    backend: { type: 'string', default: 'auto' },
    batch: { type: 'number', default: 32 },
    'img-size': { type: 'number', default: 224 },
    steps: { type: 'number', default: 5, describe: 'timed steps' },
    warmup: { type: 'number', default: 2 },
    train: { type: 'boolean', default: true, describe: 'measure training (--no-train to skip)' },
    infer: { type: 'boolean', default: true, describe: 'measure inference (--no-infer to skip)' },
    profile: { type: 'boolean', default: false },
    top: { type: 'number', default: 25, describe: 'rows of the --profile tables' },
    json: { type: 'boolean', default: false, describe: 'print one JSON line with the results' },
    amp: { type: 'boolean', default: false, describe: 'as mambaout-train --amp: bf16 activation storage on webgpu' },
    breakdown: { type: 'boolean', default: false, describe: 'where the wall time of a training step goes (webgpu): issue vs GPU, ops, Dawn calls, GC, submit batch sizes' },
  })
  .strict()
  .parseSync();

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const backend = await initBackend(argv.backend, { training: argv.train });
  console.log(backend.message);
  const gpu = backend.name === 'webgpu' ? await import('../src/backend/webgpu.js') : null;
  const amp = enableMixedPrecision(argv.amp);
  if (argv.amp && !amp) console.log(`--amp: no effect on the ${backend.name} backend (float32)`);
  if (gpu) console.log(`kernels: ${describeWebGPUKernelSettings()}`);
  const B = argv.batch;
  const S = argv['img-size'];
  const model = createModel(getModelConfig(argv.model).name, { seed: 0 });
  const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
  const opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
  const x = tf.randomNormal([B, S, S, 3]) as tf.Tensor4D;
  const y = tf.oneHot(tf.randomUniform([B], 0, model.numClasses, 'int32') as tf.Tensor1D, model.numClasses);
  const vars = params.map((p) => p.variable);
  const result: Record<string, unknown> = { date: new Date().toISOString().slice(0, 10), model: argv.model, backend: backend.description, batch: B, img_size: S };
  if (gpu) result.kernels = describeWebGPUKernelSettings();
  result.amp = amp;
  /** Peak Dawn buffer bytes while `fn` runs (webgpu), in GB. */
  const dawnPeak = async (fn: () => Promise<void>): Promise<number | null> => {
    if (!gpu) {
      await fn();
      return null;
    }
    gpu.resetWebGPUPeak();
    await fn();
    return +(gpu.webgpuMemory().peakBytes / 1e9).toFixed(3);
  };
  const profileTable = async (label: string, fn: () => Promise<void>): Promise<Record<string, { calls: number; ms: number }>> => {
    const info = await tf.profile(fn);
    const byKernel = new Map<string, { ms: number; calls: number }>();
    let total = 0;
    for (const k of info.kernels) {
      const t = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += t;
      e.calls += 1;
      total += t;
      byKernel.set(k.name, e);
    }
    const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms);
    console.log(`profile of ${label}: ${info.kernels.length} kernels, ${total.toFixed(1)} ms kernel time`);
    console.log('kernel'.padEnd(34) + 'calls'.padStart(6) + 'ms'.padStart(9) + '%'.padStart(6));
    for (const [name, e] of rows.slice(0, argv.top)) {
      console.log(name.slice(0, 33).padEnd(34) + String(e.calls).padStart(6) + e.ms.toFixed(2).padStart(9) + ((100 * e.ms) / Math.max(total, 1e-9)).toFixed(1).padStart(6));
    }
    return Object.fromEntries(rows.map(([n, e]) => [n, { calls: e.calls, ms: +e.ms.toFixed(3) }]));
  };

  const trainStep = async () => {
    const loss = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar, vars);
      const gm = new Map<string, tf.Tensor>();
      for (const p of params) gm.set(p.name, grads[p.variable.name]);
      opt.step(gm);
      return value;
    });
    await loss.data();
    loss.dispose();
  };
  const inferStep = async () => {
    const out = tf.tidy(() => model.forward(x));
    await out.data();
    out.dispose();
  };

  let peakBytes = 0;
  let peakTensors = 0;
  const track = () => {
    const m = tf.memory();
    peakBytes = Math.max(peakBytes, m.numBytes);
    peakTensors = Math.max(peakTensors, m.numTensors);
  };

  if (argv.train) {
    for (let i = 0; i < argv.warmup; i++) await trainStep();
    const times: number[] = [];
    const peak = await dawnPeak(async () => {
      for (let i = 0; i < argv.steps; i++) {
        const t0 = performance.now();
        await trainStep();
        times.push(performance.now() - t0);
        track();
      }
    });
    if (peak !== null) result.train_dawn_peak_gb = peak;
    const ms = median(times);
    result.train_img_s = +(B / (ms / 1000)).toFixed(2);
    result.train_ms_per_step = +ms.toFixed(1);
    console.log(`train: ${result.train_img_s} img/s (${ms.toFixed(1)} ms/step, batch ${B}, ${S}px, median of ${times.length})` +
      (peak !== null ? `, Dawn peak ${peak} GB` : ''));
    if (argv.profile) result.profile = await profileTable(`one training step (${argv.model}, batch ${B})`, trainStep);
  }
  if (argv.breakdown) result.breakdown = await breakdown({ model, params, opt, x, y, vars });
  if (argv.infer) {
    for (let i = 0; i < argv.warmup; i++) await inferStep();
    const times: number[] = [];
    const peak = await dawnPeak(async () => {
      for (let i = 0; i < argv.steps; i++) {
        const t0 = performance.now();
        await inferStep();
        times.push(performance.now() - t0);
        track();
      }
    });
    if (peak !== null && !argv.train) result.infer_dawn_peak_gb = peak;
    const ms = median(times);
    result.infer_img_s = +(B / (ms / 1000)).toFixed(2);
    result.infer_ms_per_batch = +ms.toFixed(1);
    console.log(`inference: ${result.infer_img_s} img/s (${ms.toFixed(1)} ms/batch, batch ${B}, ${S}px)` +
      (peak !== null && !argv.train ? `, Dawn peak ${peak} GB` : ''));
    if (argv.profile) result.profile_infer = await profileTable(`one inference forward (${argv.model}, batch ${B})`, inferStep);
  }
  if (gpu) {
    const bg = gpu.bindGroupCacheStats();
    result.bind_groups = bg;
    console.log(`bind groups: ${bg.hits} reused, ${bg.misses} created; Dawn buffers now ${(gpu.webgpuMemory().liveBytes / 1e9).toFixed(2)} GB`);
  }
  result.peak_mb = +(peakBytes / 2 ** 20).toFixed(1);
  result.peak_tensors = peakTensors;
  console.log(`peak tfjs memory: ${result.peak_mb} MiB in ${peakTensors} tensors`);
  if (argv.json) console.log(JSON.stringify(result));
  tf.dispose([x, y]);
  model.dispose();
  await releaseBackend();
}

main().catch((e) => {
  console.error(isUserError(e) ? `error: ${e.message}` : e);
  process.exit(1);
});

// ---------------------------------------------------------------------------------------------------------
// --breakdown: where the wall time of a training step goes.

interface BreakdownCtx {
  model: ReturnType<typeof createModel>;
  params: { name: string; variable: tf.Variable }[];
  opt: ReturnType<typeof createOptimizer>;
  x: tf.Tensor4D;
  y: tf.Tensor;
  vars: tf.Variable[];
}

type Timing = { issueMs: number; totalMs: number };

/** Submit what tfjs-webgpu has recorded and wait for the GPU (no-op on other backends). */
async function flushGpu(): Promise<void> {
  if (tf.getBackend() !== 'webgpu') return;
  const b = tf.backend() as unknown as {
    ensureCommandEncoderReady(): void; endComputePassEncoder(): void; submitQueue(): void; device: GPUDevice;
  };
  b.ensureCommandEncoderReady();
  b.endComputePassEncoder();
  b.submitQueue();
  await b.device.queue.onSubmittedWorkDone();
}

/** `issue` runs synchronously (records GPU work); the time until the GPU is done is `totalMs`. */
async function timeIt(issue: () => tf.Tensor | null, reps = 3): Promise<Timing> {
  const all: Timing[] = [];
  for (let i = 0; i < reps; i++) {
    await flushGpu();
    const t0 = performance.now();
    const out = issue();
    const t1 = performance.now();
    if (out) {
      await out.data();
      out.dispose();
    }
    await flushGpu();
    all.push({ issueMs: t1 - t0, totalMs: performance.now() - t0 });
  }
  all.sort((a, b) => a.totalMs - b.totalMs);
  const m = all[Math.floor(all.length / 2)];
  return { issueMs: +m.issueMs.toFixed(1), totalMs: +m.totalMs.toFixed(1) };
}

/** Wrap Dawn's prototypes to time every call (ms, count) while `fn` runs. */
async function instrumentDawn<T>(fn: () => Promise<T>): Promise<{ result: T; calls: Record<string, { n: number; ms: number }> }> {
  const calls: Record<string, { n: number; ms: number }> = {};
  if (tf.getBackend() !== 'webgpu') return { result: await fn(), calls };
  const dev = (tf.backend() as unknown as { device: GPUDevice }).device;
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  const targets: Array<[object, string[], string]> = [
    [Object.getPrototypeOf(dev), ['createBindGroup', 'createBuffer', 'createCommandEncoder', 'createComputePipeline', 'createShaderModule', 'createQuerySet'], 'device'],
    [Object.getPrototypeOf(dev.queue), ['submit', 'writeBuffer', 'onSubmittedWorkDone'], 'queue'],
    [Object.getPrototypeOf(enc), ['beginComputePass', 'finish', 'copyBufferToBuffer', 'resolveQuerySet'], 'encoder'],
    [Object.getPrototypeOf(pass), ['setPipeline', 'setBindGroup', 'dispatchWorkgroups', 'end'], 'pass'],
  ];
  pass.end();
  enc.finish();
  const restore: Array<() => void> = [];
  for (const [proto, names, label] of targets) {
    const rec = proto as Record<string, unknown>;
    for (const name of names) {
      const orig = rec[name] as ((...a: unknown[]) => unknown) | undefined;
      if (typeof orig !== 'function') continue;
      const key = `${label}.${name}`;
      rec[name] = function (this: unknown, ...a: unknown[]) {
        const t0 = performance.now();
        try {
          return orig.apply(this, a);
        } finally {
          const e = (calls[key] ??= { n: 0, ms: 0 });
          e.n++;
          e.ms += performance.now() - t0;
        }
      };
      restore.push(() => {
        rec[name] = orig;
      });
    }
  }
  try {
    return { result: await fn(), calls };
  } finally {
    for (const r of restore) r();
  }
}

async function breakdown(ctx: BreakdownCtx): Promise<Record<string, unknown>> {
  const { model, params, opt, x, y, vars } = ctx;
  const out: Record<string, unknown> = {};
  const fwdBwd = (withOpt: boolean) => () =>
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar, vars);
      if (withOpt) {
        const gm = new Map<string, tf.Tensor>();
        for (const p of params) gm.set(p.name, grads[p.variable.name]);
        opt.step(gm);
      }
      return value;
    });
  const forwardTrain = () => tf.tidy(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })));
  const forwardEval = () => tf.tidy(() => model.forward(x));

  // Engine kernel count and dispatch count of one step (tf.profile would submit each kernel alone; count instead).
  const engine = tf.engine() as unknown as { runKernelFunc: (...a: unknown[]) => unknown };
  const origRun = engine.runKernelFunc;
  const kernelCounts: Record<string, number> = {};
  engine.runKernelFunc = function (this: unknown, ...a: unknown[]) {
    const k = a[0] as { kernelName?: string };
    const name = k?.kernelName ?? 'customGrad/other';
    kernelCounts[name] = (kernelCounts[name] ?? 0) + 1;
    return origRun.apply(this, a);
  };
  const { calls } = await instrumentDawn(async () => {
    const l = fwdBwd(true)();
    await l.data();
    l.dispose();
    await flushGpu();
  });
  engine.runKernelFunc = origRun;
  out.engine_kernels = Object.values(kernelCounts).reduce((a, b) => a + b, 0);
  out.kernel_counts = Object.fromEntries(Object.entries(kernelCounts).sort((a, b) => b[1] - a[1]));
  out.dawn_calls = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, { n: v.n, ms: +v.ms.toFixed(1), us_per_call: +((1000 * v.ms) / v.n).toFixed(1) }]));
  console.log(`breakdown: ${out.engine_kernels} engine kernels per step, ${calls['pass.dispatchWorkgroups']?.n ?? 0} GPU dispatches`);
  for (const [k, v] of Object.entries(out.dawn_calls as Record<string, { n: number; ms: number; us_per_call: number }>)) {
    console.log(`  dawn ${k.padEnd(32)} ${String(v.n).padStart(6)} calls ${v.ms.toFixed(1).padStart(9)} ms ${v.us_per_call.toFixed(1).padStart(8)} us/call`);
  }

  // GC during a step.
  let gcMs = 0;
  const { PerformanceObserver } = await import('node:perf_hooks');
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  obs.observe({ entryTypes: ['gc'] });
  const stepT = await timeIt(fwdBwd(true), 1);
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  out.gc_ms_per_step = +gcMs.toFixed(1);

  const parts: Record<string, Timing> = {
    step: stepT,
    fwd_bwd: await timeIt(fwdBwd(false)),
    forward_train: await timeIt(forwardTrain),
    forward_eval: await timeIt(forwardEval),
  };
  // Optimizer alone on fixed gradients.
  const grads = tf.tidy(() => tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.forward(x, { training: true })) as tf.Scalar, vars).grads);
  const gm = new Map<string, tf.Tensor>();
  for (const p of params) gm.set(p.name, grads[p.variable.name]);
  await flushGpu();
  parts.optimizer = await timeIt(() => {
    opt.step(gm);
    return null;
  });
  tf.dispose(Object.values(grads));
  out.parts = parts;
  console.log(`  (gc during one step: ${out.gc_ms_per_step} ms)`);
  for (const [k, v] of Object.entries(parts)) console.log(`  ${k.padEnd(16)} issue ${v.issueMs.toFixed(1).padStart(8)} ms   done ${v.totalMs.toFixed(1).padStart(8)} ms`);

  // Submit batch size (tfjs-webgpu submits every N dispatches).
  if (tf.getBackend() === 'webgpu') {
    const prev = tf.env().getNumber('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE');
    const bySize: Record<string, Timing> = {};
    for (const n of [5, 15, 60, 250, 1000]) {
      tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', n);
      bySize[n] = await timeIt(fwdBwd(true));
      console.log(`  submit every ${String(n).padStart(4)} dispatches: step issue ${bySize[n].issueMs} ms, done ${bySize[n].totalMs} ms`);
    }
    tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', prev);
    out.submit_batch = bySize;
  }
  return out;
}
