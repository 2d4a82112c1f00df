/**
 * mambaout-train end to end on the cpu backend: gradient accumulation equivalence, resume equivalence, determinism of
 * summary.csv, crash safety of checkpoints, output folder layout, CLI errors, and a smoke run that learns.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hideBin } from 'yargs/helpers';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { createLogger } from '../src/log/logger.js';
import { createModel, type MambaOut } from '../src/models/mambaout.js';
import { maxAbsDiff, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TRAIN_BIN = join(ROOT, 'bin', 'train.ts');
const { dir: TMP, cleanup } = tempDir('mambaout-train-test-');
process.on('exit', cleanup);

// 2 classes x 16 training images, 2 x 8 validation images, 40-72 px
const data = (await makeTinyImagenet({ root: join(TMP, 'data'), classes: 2, trainPerClass: 16, valPerClass: 8, minSide: 40, maxSide: 72, seed: 3 })).root;

const silent = createLogger({ silent: true });

function argsOf(extra: string[]): Record<string, unknown> {
  const p = parseArgs({
    scriptName: 'mambaout-train',
    usage: '',
    flags: TRAIN_FLAGS,
    positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
    argv: [data, '--model', 'mambaout_test', '--img-size', '32', '--backend', 'cpu', '--workers', '0', '--log-interval', '100', ...extra],
  });
  return p.args;
}

function snapshot(model: MambaOut): Map<string, Float32Array> {
  return new Map([...model.stateDict()].map(([k, v]) => [k, v.data as Float32Array]));
}

const DETERMINISTIC = ['--no-aug', '--reprob', '0', '--mixup', '0', '--cutmix', '0', '--smoothing', '0', '--warmup-epochs', '0', '--epochs', '1', '--cooldown-epochs', '0'];

test('gradient accumulation: 2 micro-batches of 8 equal one batch of 16 (first SGD update)', async () => {
  // Plain SGD with lr 1 makes the weight change equal to the (accumulated) gradient, so gradients are compared.
  const sgd = ['--opt', 'momentum', '--momentum', '0', '--weight-decay', '0', '--lr', '1'];
  const init = createModel('mambaout_test', { seed: 42, numClasses: 2 });
  const w0 = snapshot(init);
  init.dispose();
  const after: Map<string, Float32Array>[] = [];
  for (const [b, a, exp] of [['8', '2', 'acc2'], ['16', '1', 'acc1']]) {
    let stop = false;
    await runTraining(argsOf([...DETERMINISTIC, ...sgd, '-b', b, '--grad-accum-steps', a, '--output', TMP, '--experiment', exp]), {
      logger: silent,
      dist: null,
      stopRequested: () => stop,
      onUpdate: ({ model }) => {
        if (!stop) after.push(snapshot(model));
        stop = true;
      },
    });
  }
  assert.equal(after.length, 2);
  let checked = 0;
  for (const [k, v] of after[0]) {
    const delta = v.map((x, i) => x - w0.get(k)![i]);
    const scale = Math.max(...delta.map(Math.abs));
    if (scale === 0) continue;
    const rel = maxAbsDiff(v, after[1].get(k)!) / scale;
    assert.ok(rel < 1e-4, `${k}: accumulated gradient differs by ${rel} (relative)`);
    checked++;
  }
  assert.ok(checked > 60, `${checked} parameters moved`);
  const ck = await readTrainCheckpoint(join(TMP, 'acc1', readdirSync(join(TMP, 'acc1')).find((f) => f.startsWith('recovery-'))!));
  assert.equal(ck.stateDict.size, 68);
});

test('resume: 2 epochs straight equal 1 epoch + --resume + 1 epoch (full augmentation, drop path, EMA)', async () => {
  const common = ['-b', '8', '--epochs', '2', '--warmup-epochs', '1', '--cooldown-epochs', '0', '--lr', '2e-3', '--drop-path', '0.1', '--model-ema', '--model-ema-decay', '0.9', '--output', TMP];
  const full = await runTraining(argsOf([...common, '--experiment', 'straight']), { logger: silent, dist: null });
  assert.equal(full.epochsRun, 2);
  let epochsDone = 0;
  await runTraining(argsOf([...common, '--experiment', 'part1']), {
    logger: silent,
    dist: null,
    stopRequested: () => epochsDone >= 1,
    onUpdate: ({ update }) => {
      if (update === 4) epochsDone = 1; // 32 images / batch 8 = 4 updates per epoch
    },
  });
  const part1Last = join(TMP, 'part1', 'last.safetensors');
  assert.equal((await readTrainCheckpoint(part1Last)).epoch, 0);
  const resumed = await runTraining(argsOf([...common, '--experiment', 'part2', '--resume', part1Last]), { logger: silent, dist: null });
  assert.equal(resumed.epochsRun, 1);
  const a = await readTrainCheckpoint(join(TMP, 'straight', 'last.safetensors'));
  const b = await readTrainCheckpoint(join(TMP, 'part2', 'last.safetensors'));
  assert.equal(a.epoch, 1);
  assert.equal(b.epoch, 1);
  for (const [k, v] of a.stateDict) assert.equal(maxAbsDiff(v.data as Float32Array, b.stateDict.get(k)!.data as Float32Array), 0, k);
  for (const [k, v] of a.stateDictEma!) assert.equal(maxAbsDiff(v.data as Float32Array, b.stateDictEma!.get(k)!.data as Float32Array), 0, `ema ${k}`);
  const rowsA = readFileSync(join(TMP, 'straight', 'summary.csv'), 'utf8').trim().split('\n');
  const rowsB = readFileSync(join(TMP, 'part2', 'summary.csv'), 'utf8').trim().split('\n');
  assert.equal(rowsA[0], 'epoch,train_loss,eval_loss,eval_top1,eval_top5');
  assert.equal(rowsA.length, 3);
  assert.equal(rowsB[1], rowsA[2], 'epoch 1 row identical');
  // output folder as timm: args.yaml, summary.csv, last, checkpoint-N, model_best
  const files = readdirSync(join(TMP, 'straight')).sort();
  for (const f of ['args.yaml', 'checkpoint-0.safetensors', 'checkpoint-1.safetensors', 'last.safetensors', 'model_best.safetensors', 'summary.csv']) assert.ok(files.includes(f), `${f} in ${files}`);
  const yaml = readFileSync(join(TMP, 'straight', 'args.yaml'), 'utf8');
  assert.match(yaml, /^aa: rand-m9-mstd0.5-inc1$/m);
  assert.match(yaml, /^model: mambaout_test$/m);
  assert.match(yaml, /^drop_path: 0.1$/m);
});

test('resume with the tfjs-ops batch path (the tensorflow backend\'s) is bit-exact and trains exactly like the host path', async () => {
  const common = ['-b', '8', '--epochs', '2', '--warmup-epochs', '1', '--cooldown-epochs', '0', '--lr', '2e-3', '--drop-path', '0.1', '--model-ema', '--model-ema-decay', '0.9', '--output', TMP];
  // the recipe's batch work on every batch: mixup/cutmix, pixel erasing on most images
  const work = ['--mixup', '0.8', '--cutmix', '1.0', '--reprob', '0.6'];
  const ctx = { logger: silent, dist: null, batchPath: 'ops' as const };
  const full = await runTraining(argsOf([...common, ...work, '--experiment', 'ops-straight']), ctx);
  assert.equal(full.epochsRun, 2);
  let epochsDone = 0;
  await runTraining(argsOf([...common, ...work, '--experiment', 'ops-part1']), {
    ...ctx,
    stopRequested: () => epochsDone >= 1,
    onUpdate: ({ update }) => {
      if (update === 4) epochsDone = 1;
    },
  });
  await runTraining(argsOf([...common, ...work, '--experiment', 'ops-part2', '--resume', join(TMP, 'ops-part1', 'last.safetensors')]), ctx);
  const host = await runTraining(argsOf([...common, ...work, '--experiment', 'host-straight']), { logger: silent, dist: null, batchPath: 'host' });
  assert.equal(host.epochsRun, 2);
  const a = await readTrainCheckpoint(join(TMP, 'ops-straight', 'last.safetensors'));
  const b = await readTrainCheckpoint(join(TMP, 'ops-part2', 'last.safetensors'));
  const h = await readTrainCheckpoint(join(TMP, 'host-straight', 'last.safetensors'));
  for (const [k, v] of a.stateDict) {
    assert.equal(maxAbsDiff(v.data as Float32Array, b.stateDict.get(k)!.data as Float32Array), 0, `resume ${k}`);
    assert.equal(maxAbsDiff(v.data as Float32Array, h.stateDict.get(k)!.data as Float32Array), 0, `ops vs host ${k}`);
  }
  const rows = (e: string) => readFileSync(join(TMP, e, 'summary.csv'), 'utf8').trim().split('\n');
  assert.equal(rows('ops-part2')[1], rows('ops-straight')[2], 'epoch 1 row identical after resume');
  assert.deepEqual(rows('ops-straight'), rows('host-straight'));
});

test('a diverging run stops at the next read point naming the first non-finite batch, before any checkpoint of its weights', async () => {
  // losses are read back at log points and before checkpoints (not every step): lr 1e30 breaks the weights after
  // the first update, so batch 1 is the first non-finite one; it is noticed when batch 1's recovery checkpoint is due
  const exp = 'diverge';
  await assert.rejects(
    runTraining(argsOf([...DETERMINISTIC, '-b', '8', '--lr', '1e30', '--log-interval', '3', '--recovery-interval', '2', '--output', TMP, '--experiment', exp]), { logger: silent, dist: null }),
    (e: Error) => /^loss is (NaN|-?Infinity) at epoch 0, batch 1: training diverged/.test(e.message),
  );
  assert.deepEqual(readdirSync(join(TMP, exp)).filter((f) => f.endsWith('.safetensors')), []);
});

function runCli(args: string[], opts: { env?: Record<string, string> } = {}) {
  return spawnSync(process.execPath, ['--import', 'tsx', TRAIN_BIN, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...opts.env }, timeout: 240_000 });
}

const CLI_BASE = ['--model', 'mambaout_test', '--img-size', '32', '--backend', 'cpu', '-j', '0', '-b', '8', '--warmup-epochs', '1', '--cooldown-epochs', '0', '--lr', '2e-3'];

test('the same command twice on the cpu backend writes identical summary.csv', () => {
  const out: string[] = [];
  for (const exp of ['det1', 'det2']) {
    const r = runCli([data, ...CLI_BASE, '--epochs', '1', '--output', TMP, '--experiment', exp]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Train: 0 \[   0\/4 \(  0%\)\]  Loss: /m);
    assert.match(r.stdout, /^Test: \[   1\/1\]  Time: /m);
    out.push(readFileSync(join(TMP, exp, 'summary.csv'), 'utf8'));
  }
  assert.equal(out[0], out[1]);
});

test('crash while a checkpoint is being written: the folder still loads and resumes', async () => {
  const exp = join(TMP, 'crash');
  const child = spawn(process.execPath, ['--import', 'tsx', TRAIN_BIN, data, ...CLI_BASE, '--epochs', '3', '--recovery-interval', '1', '--output', TMP, '--experiment', 'crash'], { cwd: ROOT, stdio: 'ignore' });
  // Kill it the moment a temporary checkpoint file appears after the first `last` exists: mid-write.
  const killedMidWrite = await new Promise<boolean>((resolve) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (Date.now() - started > 200_000) {
        clearInterval(poll);
        child.kill('SIGKILL');
        resolve(false);
        return;
      }
      if (!existsSync(exp)) return;
      const files = readdirSync(exp);
      if (files.includes('last.safetensors') && files.some((f) => f.endsWith('.tmp'))) {
        child.kill('SIGKILL');
        clearInterval(poll);
        resolve(true);
      }
    }, 2);
    child.on('exit', () => {
      clearInterval(poll);
      resolve(false);
    });
  });
  await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.on('exit', r)));
  assert.ok(killedMidWrite, 'the process was killed while a temporary checkpoint file existed');
  const last = await readTrainCheckpoint(join(exp, 'last.safetensors'));
  assert.ok(last.epoch >= 0);
  const r = runCli([data, ...CLI_BASE, '--epochs', '3', '--output', TMP, '--experiment', 'crash-resumed', '--resume', join(exp, 'last.safetensors')]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(TMP, 'crash-resumed', 'last.safetensors')));
  assert.equal((await readTrainCheckpoint(join(TMP, 'crash-resumed', 'last.safetensors'))).epoch, 2);
});

test('bad input: one clear sentence on stderr, non-zero exit, no stack trace', () => {
  const cases: [string[], RegExp][] = [
    [[join(TMP, 'nope'), '--model', 'mambaout_test'], /data folder '.*nope' does not exist/],
    [[data, '--model', 'resnet50'], /unknown model 'resnet50'; known models: mambaout_femto/],
    [[data, '--model', 'mambaout_test', '-b', '7', '--img-size', '32', '--backend', 'cpu', '-j', '0'], /needs an even --batch-size, got 7/],
    [[data, '--model', 'mambaout_test', '--opt', 'adafactor', '--backend', 'cpu', '-j', '0'], /optimizer 'adafactor'/i],
    [[data, '--model', 'mambaout_test', '--bogus-flag'], /Unknown argument|bogus/],
    [[data, '-c', join(TMP, 'missing.yaml')], /config file '.*missing.yaml' does not exist/],
    [[data, '--model', 'mambaout_test', '--resume', join(TMP, 'none.safetensors'), '--backend', 'cpu', '-j', '0'], /--resume checkpoint '.*none.safetensors' does not exist/],
  ];
  for (const [args, re] of cases) {
    const r = runCli(args);
    assert.notEqual(r.status, 0, `${args.join(' ')} should fail`);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace for ${args.join(' ')}: ${r.stderr}`);
  }
});

test('inert flags are accepted with a one-line notice', () => {
  const r = runCli([data, ...CLI_BASE, '--epochs', '1', '--channels-last', '--torchscript', '--output', TMP, '--experiment', 'inert']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /--channels-last has no effect in mambaout: tfjs activations are always NHWC\./);
  assert.match(r.stdout, /--torchscript has no effect in mambaout/);
});

void hideBin;

test('Ctrl-C saves a recovery checkpoint and exits cleanly; the recovery file resumes', async () => {
  const exp = join(TMP, 'sigint');
  const child = spawn(process.execPath, ['--import', 'tsx', TRAIN_BIN, data, ...CLI_BASE, '--epochs', '20', '--log-interval', '1', '--output', TMP, '--experiment', 'sigint'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const sent = new Promise<void>((resolve) => {
    child.stdout.on('data', (d) => {
      out += d;
      // after the second logged micro-batch of epoch 1 (the run is mid-epoch), press Ctrl-C
      if (/Train: 1 \[   1\//.test(out) && !child.killed) {
        child.kill('SIGINT');
        resolve();
      }
    });
  });
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  await sent;
  assert.equal(code, 130, err);
  assert.match(err, /SIGINT: finishing this step, then saving a recovery checkpoint/);
  assert.doesNotMatch(err, /\n\s+at /);
  const rec = readdirSync(exp).filter((f) => f.startsWith('recovery-1-'));
  assert.equal(rec.length, 1, `recovery file in ${readdirSync(exp)}`);
  assert.match(out, new RegExp(`Interrupted: saved recovery checkpoint .*${rec[0]}`));
  const ck = await readTrainCheckpoint(join(exp, rec[0]));
  assert.equal(ck.epoch, 1);
  // timm semantics: resuming from a recovery file continues with the next epoch
  const r = runCli([data, ...CLI_BASE, '--epochs', '3', '--output', TMP, '--experiment', 'sigint-resumed', '--resume', join(exp, rec[0])]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Train: 2 \[/m);
  assert.doesNotMatch(r.stdout, /^Train: 1 \[/m);
});

test('--initial-checkpoint loads the weights (strict) before training; with lr 0 they come out unchanged', async () => {
  const { loadCheckpoint } = await import('../src/checkpoint/load.js');
  const { fixture } = await import('./helpers.js');
  const r = await runTraining(
    argsOf([...DETERMINISTIC, '--lr', '0', '--warmup-lr', '0', '--min-lr', '0', '--weight-decay', '0', '-b', '16', '--num-classes', '10', '--initial-checkpoint', fixture('micro.pth'), '--output', TMP, '--experiment', 'initial']),
    { logger: silent, dist: null },
  );
  assert.equal(r.epochsRun, 1);
  const out = await readTrainCheckpoint(join(TMP, 'initial', 'last.safetensors'));
  const ref = (await loadCheckpoint(fixture('micro.pth'))).stateDict;
  for (const [k, t] of ref) assert.equal(maxAbsDiff(out.stateDict.get(k)!.data as Float32Array, t.data as Float32Array), 0, k);
  // a checkpoint of another shape is refused with the list of mismatches
  await assert.rejects(
    runTraining(argsOf([...DETERMINISTIC, '-b', '16', '--initial-checkpoint', fixture('micro.pth'), '--output', TMP, '--experiment', 'initial-bad']), { logger: silent, dist: null }),
    /head\.fc2\.bias \(checkpoint \[10\], model \[2\]\)/,
  );
});
