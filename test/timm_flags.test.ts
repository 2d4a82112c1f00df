/**
 * timm 0.6.11 flags one by one (issue 17): each does what timm does or is refused with a sentence. Also the default
 * model and "did you mean", --real-labels / --valid-labels in validate, make_tiny_imagenet --from on a fake
 * ImageNet-layout tree, and --resume / --initial-checkpoint from a checkpoint written by timm's train.py in PyTorch.
 */
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { UserError } from '../src/errors.js';
import { DEFAULT_MODEL, architectureOf, getModelConfig } from '../src/models/registry.js';
import { resolveArchitecture } from '../src/inference/load.js';
import { checkNoPrefetcher, checkWorkerSeeding, distBnLogLine, trainAugPlan, ttaReduce } from '../src/train/timm_flags.js';
import { createScheduler, PlateauLRScheduler } from '../src/train/scheduler.js';
import { eraseBatch } from '../src/data/transforms/erasing.js';
import { Rng } from '../src/utils/rng.js';
import { readDistEnv } from '../src/distributed/env.js';
import { runTraining } from '../src/train/loop.js';
import { trainConfig } from '../src/train/config.js';
import { argsToYaml } from '../src/train/args_yaml.js';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { readResumeCheckpoint } from '../src/train/resume.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { decodeRGB } from '../src/data/decode.js';
import { validateOne, type ValidateArgs } from '../src/inference/validate.js';
import { Predictor } from '../src/inference/predict.js';
import { createLogger } from '../src/log/logger.js';
import { fixture, maxAbsDiff, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { dir: TMP, cleanup } = tempDir('mambaout-flags-test-');
process.on('exit', cleanup);
const silent = createLogger({ silent: true });
const TIMM_CKPT = fixture('micro_timm_checkpoint.pth.tar');

function trainArgs(argv: string[]): Record<string, unknown> {
  return parseArgs({ scriptName: 'mambaout-train', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }], argv }).args;
}

function userError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof UserError && re.test(e.message));
}

test('the typed TrainConfig reads the parsed flags as train.py does and keeps the record, untouched, as timm\'s args', () => {
  const args = trainArgs(['d', '--drop-connect', '0.1', '--opt-betas', '0.8', '0.9', '0.95', '--amp', '--input-size', '3', '64', '48', '-b', '8', '--grad-accum-steps', '2']);
  const yaml = argsToYaml(args);
  const cfg = trainConfig(args);
  assert.equal(cfg.args, args);
  assert.equal(argsToYaml(args), yaml);
  assert.equal(cfg.dropPath, 0.1); // --drop-path unset: --drop-connect
  assert.deepEqual(cfg.optBetas, [0.8, 0.9]);
  assert.equal(cfg.amp, true);
  assert.deepEqual(cfg.dataOverrides, { imgSize: undefined, inputSize: [3, 64, 48], cropPct: undefined, mean: undefined, std: undefined, interpolation: undefined });
  assert.equal(cfg.batchSize, 8);
  assert.equal(cfg.gradAccumSteps, 2);
  assert.equal(cfg.numClasses, undefined);
  assert.equal(cfg.startEpoch, undefined);
  assert.equal(cfg.model, 'mambaout_femto');
  assert.equal(cfg.evalMetric, 'top1');
  const plain = trainConfig(trainArgs(['d', '--drop-path', '0.2', '--drop-connect', '0.1', '--native-amp']));
  assert.equal(plain.dropPath, 0.2);
  assert.equal(plain.amp, true);
  assert.equal(plain.optBetas, undefined);
});

describe('spellings, defaults and "did you mean"', () => {
  test('argparse spellings: -vb N, --local_rank N, --local-rank=N', () => {
    const a = trainArgs(['d', '-vb', '64', '--local_rank', '3', '-b', '8']);
    assert.equal(a.validation_batch_size, 64);
    assert.equal(a.local_rank, 3);
    assert.equal(a.batch_size, 8);
    assert.equal(trainArgs(['d', '-vb=32', '--local-rank=1']).local_rank, 1);
    // the parsed value is what the distributed set-up uses when LOCAL_RANK is not set (timm)
    const env = { WORLD_SIZE: '2', RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };
    assert.equal(readDistEnv(env, { localRankArg: 1 }).localRank, 1);
    userError(() => readDistEnv(env, { localRankArg: 0 }), /does not match/);
    assert.equal(readDistEnv({ ...env, LOCAL_RANK: '1' }, { localRankArg: 0 }).localRank, 1, 'LOCAL_RANK wins');
  });

  test('--model defaults to mambaout_femto (a stated deviation from timm); a checkpoint names its own', () => {
    assert.equal(DEFAULT_MODEL, 'mambaout_femto');
    assert.equal(trainArgs(['d']).model, 'mambaout_femto');
    assert.equal(resolveArchitecture(null, null, ''), 'mambaout_femto');
    assert.equal(resolveArchitecture(null, 'mambaout_test', 'f'), 'mambaout_test');
    assert.equal(resolveArchitecture('mambaout_test', 'mambaout_test', 'f'), 'mambaout_test');
    userError(() => resolveArchitecture('mambaout_tiny', 'mambaout_test', 'x.safetensors'), /--model mambaout_tiny conflicts with the checkpoint x\.safetensors, which holds a mambaout_test model/);
    userError(() => resolveArchitecture(null, 'resnet50', 'r.pth'), /holds a 'resnet50' model, which mambaout does not have/);
  });

  test('a bare state dict names its architecture by its shapes', async () => {
    const { stateDict } = await loadCheckpoint(fixture('micro.pth'), { stateDictOnly: true });
    assert.equal(architectureOf(stateDict), 'mambaout_test');
    stateDict.delete('stages.2.1.fc1.weight');
    assert.equal(architectureOf(stateDict), null);
  });

  test('"did you mean" for model names and flags', () => {
    userError(() => getModelConfig('mambaout_femot'), /^unknown model 'mambaout_femot' \(did you mean mambaout_femto\?\); known models: /);
    userError(() => getModelConfig('tiny'), /did you mean mambaout_tiny\?/);
    userError(() => trainArgs(['d', '--wamup-epochs', '3']), /^unknown option --wamup-epochs \(did you mean --warmup-epochs\?\)/);
    userError(() => trainArgs(['d', '--modle', 'x']), /unknown option --modle \(did you mean --model\?\)/);
    userError(() => trainArgs(['d', '--zzzzzzzz']), /^unknown option --zzzzzzzz; see --help/);
  });
});

describe('augmentation flags', () => {
  test('--no-aug keeps mixup/cutmix and resizes with the model interpolation; erasing off (timm)', () => {
    const plan = trainAugPlan({ noAug: true, mixupActive: true, trainInterpolation: 'random', modelInterpolation: 'bicubic', reprob: 0.25, resplit: false });
    assert.deepEqual(plan, { mixup: true, interpolation: 'bicubic', reprob: 0, eraseSplits: 0 });
  });

  test("--train-interpolation '' means the model's interpolation; a given one is kept", () => {
    const base = { noAug: false, mixupActive: false, modelInterpolation: 'bicubic', reprob: 0.25, resplit: false };
    assert.equal(trainAugPlan({ ...base, trainInterpolation: '' }).interpolation, 'bicubic');
    assert.equal(trainAugPlan({ ...base, trainInterpolation: 'random' }).interpolation, 'random');
    assert.equal(trainAugPlan({ ...base, trainInterpolation: 'bilinear' }).interpolation, 'bilinear');
    assert.equal(trainArgs(['d', '--train-interpolation', '']).train_interpolation, '');
  });

  test('--resplit: the first half of every batch is not erased (re_num_splits = 2)', () => {
    const plan = trainAugPlan({ noAug: false, mixupActive: true, trainInterpolation: 'random', modelInterpolation: 'bicubic', reprob: 1, resplit: true });
    assert.equal(plan.eraseSplits, 2);
    const B = 4, H = 16, W = 16;
    const x = new Float32Array(B * H * W * 3).fill(7);
    const boxes = eraseBatch(x, B, H, W, 3, { probability: 1, mode: 'const', numSplits: plan.eraseSplits }, new Rng(1));
    assert.deepEqual(boxes.map((b) => b.length), [0, 0, 1, 1]);
    const img = H * W * 3;
    assert.ok(x.subarray(0, 2 * img).every((v) => v === 7), 'clean half untouched');
    assert.ok(x.subarray(2 * img).some((v) => v === 0), 'second half erased');
  });

  test('--no-prefetcher: accepted without mixup/cutmix (same batches), refused with it', () => {
    assert.equal(checkNoPrefetcher(false, true), null);
    assert.match(checkNoPrefetcher(true, false)!, /same batches/);
    userError(() => checkNoPrefetcher(true, true), /--no-prefetcher with mixup\/cutmix is not supported/);
  });

  test("--worker-seeding: 'all' accepted, 'part' and other values refused with a sentence", async () => {
    checkWorkerSeeding('all');
    userError(() => checkWorkerSeeding('part'), /--worker-seeding part is not supported/);
    userError(() => checkWorkerSeeding('none'), /must be 'all' or 'part'/);
    await assert.rejects(runTraining(trainArgs([TMP, '--model', 'mambaout_test', '--worker-seeding', 'part']), { logger: silent, dist: null }), /--worker-seeding part/);
  });
});

describe('validation and distributed flags', () => {
  test('--tta k averages k consecutive outputs and keeps every k-th label (timm validate)', () => {
    const rows = [[1, 0, 0], [3, 2, 0], [0, 5, 1], [0, 1, 9], [4, 4, 4]];
    const logits = tf.tensor2d(rows);
    const labels = Int32Array.from([0, 1, 2, 0, 1]);
    const r = ttaReduce(logits, labels, 2);
    assert.deepEqual(r.logits.arraySync(), [[2, 1, 0], [0, 3, 5]]);
    assert.deepEqual([...r.labels], [0, 2]);
    assert.equal(ttaReduce(logits, labels, 0).logits, logits, 'k <= 1: unchanged');
    r.logits.dispose();
    logits.dispose();
  });

  test("--dist-bn: timm's log line in distributed runs with reduce/broadcast, nothing else (no BatchNorm)", () => {
    assert.equal(distBnLogLine('reduce', 2), 'Distributing BatchNorm running means and vars');
    assert.equal(distBnLogLine('broadcast', 8), 'Distributing BatchNorm running means and vars');
    assert.equal(distBnLogLine('', 8), null);
    assert.equal(distBnLogLine('reduce', 1), null);
  });

  test('--patience-epochs: the plateau schedule cuts the lr after more than `patience` epochs without improvement', () => {
    const opt = { paramGroups: [{ lr: 0.1 }, { lr: 0.1 }] };
    const { scheduler, numEpochs } = createScheduler({ sched: 'plateau', epochs: 20, warmupEpochs: 2, warmupLr: 0.01, minLr: 0.004, decayRate: 0.5, patienceEpochs: 2, evalMetric: 'top1' }, opt);
    assert.ok(scheduler instanceof PlateauLRScheduler);
    assert.equal(numEpochs, 20, 'no cooldown epochs for plateau (timm)');
    assert.equal(opt.paramGroups[0].lr, 0.01, 'warmup starts at warmup_lr');
    // top-1 after each epoch; step(epoch + 1, metric) as the training loop does
    const top1 = [10, 20, 30, 30, 30.001, 29, 31, 31, 31, 31, 31, 31, 31, 31];
    const lrs: number[] = [];
    top1.forEach((m, e) => {
      scheduler.step(e + 1, m);
      lrs.push(opt.paramGroups[0].lr);
    });
    // torch ReduceLROnPlateau(mode max, threshold 1e-4 rel, patience 2): by hand
    //  e+1: 1 warmup .055 | 2 .1 | 3 best 30 | 4 bad1 | 5 30.001 < 30.003 bad2 | 6 bad3 > 2 -> .05 | 7 best 31 | 8,9 bad | 10 bad3 -> .025
    //  11,12 bad | 13 -> .0125 | 14 bad1
    const want = [0.055, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125];
    lrs.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-12, `epoch ${i + 1}: ${v} vs ${want[i]}`));
    for (let e = 15; e < 40; e++) scheduler.step(e, 31);
    assert.equal(opt.paramGroups[1].lr, 0.004, 'floored at --min-lr');
    // loss metrics are minimised
    const o2 = { paramGroups: [{ lr: 1 }] };
    const s2 = createScheduler({ sched: 'plateau', epochs: 5, warmupEpochs: 0, minLr: 0, decayRate: 0.1, patienceEpochs: 0, evalMetric: 'loss' }, o2).scheduler;
    s2.step(1, 2.0);
    s2.step(2, 1.0);
    assert.equal(o2.paramGroups[0].lr, 1, 'a lower loss is an improvement');
    s2.step(3, 1.5);
    assert.ok(Math.abs(o2.paramGroups[0].lr - 0.1) < 1e-15);
  });
});

describe('validate --real-labels / --valid-labels and make_tiny_imagenet --from', () => {
  const SRC = join(TMP, 'imagenet');
  const SUBSET = join(TMP, 'subset');
  const WNIDS = Array.from({ length: 10 }, (_, i) => `n0${(1440764 + 1000 * i).toString().padStart(8, '0')}`);
  let ckpt = '';
  let predictor: Predictor;
  /** logits of each subset val image, by file name */
  const logitsOf = new Map<string, Float32Array>();
  const args = (over: Partial<ValidateArgs>): ValidateArgs => ({
    data: SUBSET, split: 'validation', model: null, checkpoint: ckpt, pretrained: false, pretrainedPath: '', useEma: false, batchSize: 3, workers: 0,
    imgSize: 48, inputSize: null, cropPct: null, mean: null, std: null, interpolation: '', numClasses: null, classMap: '', logFreq: 100, resultsFile: '',
    engine: 'auto', amp: false, ...over,
  });
  const argmax = (v: Float32Array, cols: number[]) => cols.reduce((b, c) => (v[c] > v[b] ? c : b), cols[0]);

  before(async () => {
    // A fake ImageNet: 10 classes in ImageFolder layout, val files named as ImageNet's (ILSVRC2012_val_%08d.JPEG)
    const gen = (await makeTinyImagenet({ root: join(TMP, 'gen'), classes: 6, trainPerClass: 3, valPerClass: 3, minSide: 40, maxSide: 60, seed: 9 })).root;
    const pool = readdirSync(join(gen, 'val')).flatMap((c) => readdirSync(join(gen, 'val', c)).map((f) => join(gen, 'val', c, f)));
    let k = 0;
    WNIDS.forEach((w, i) => {
      mkdirSync(join(SRC, 'train', w), { recursive: true });
      mkdirSync(join(SRC, 'val', w), { recursive: true });
      for (let j = 0; j < 3; j++) copyFileSync(pool[(i + j) % pool.length], join(SRC, 'train', w, `${w}_${j}.JPEG`));
      for (let j = 0; j < 3; j++) copyFileSync(pool[(2 * i + j) % pool.length], join(SRC, 'val', w, `ILSVRC2012_val_${String(++k).padStart(8, '0')}.JPEG`));
    });
    // "pretrained" 10-class weights with a large head, so predictions differ between images
    const { createModel } = await import('../src/models/mambaout.js');
    const { writeSafetensors } = await import('../src/checkpoint/safetensors.js');
    const m = createModel('mambaout_test', { numClasses: 10, seed: 3 });
    const sd = m.stateDict();
    const w = sd.get('head.fc2.weight')!.data as Float32Array;
    for (let i = 0; i < w.length; i++) w[i] *= 40;
    ckpt = join(TMP, 'ten.safetensors');
    await writeSafetensors(ckpt, sd);
    m.dispose();

    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'make_tiny_imagenet.ts'), SUBSET, '--from', SRC, '--classes', '4', '--train-per-class', '2', '--val-per-class', '2'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wrote 16 images of 4 classes \(source indices 0, 2, 5, 7\)/);

    predictor = await Predictor.create({ checkpoint: ckpt, imgSize: 48 });
    for (const c of readdirSync(join(SUBSET, 'val'))) {
      for (const f of readdirSync(join(SUBSET, 'val', c))) logitsOf.set(f, await predictor.logits([await decodeRGB(join(SUBSET, 'val', c, f))]));
    }
  });

  test('make_tiny_imagenet --from copies a real ImageFolder subset and the class map of all source classes', () => {
    assert.deepEqual(readdirSync(join(SUBSET, 'train')).sort(), [WNIDS[0], WNIDS[2], WNIDS[5], WNIDS[7]]);
    assert.deepEqual(readFileSync(join(SUBSET, 'class_map.txt'), 'utf8').trim().split('\n'), WNIDS);
    const val5 = readdirSync(join(SUBSET, 'val', WNIDS[5])).sort();
    assert.equal(val5.length, 2);
    for (const f of val5) assert.deepEqual(readFileSync(join(SUBSET, 'val', WNIDS[5], f)), readFileSync(join(SRC, 'val', WNIDS[5], f)), 'the same bytes');
    const again = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'make_tiny_imagenet.ts'), SUBSET, '--from', SRC], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(again.status, 2);
    assert.match(again.stderr, /already exists/);
  });

  test('validate SUBSET --class-map keeps the weights\' own class indices (real accuracy)', async () => {
    const res = await validateOne(args({ model: 'mambaout_test', classMap: join(SUBSET, 'class_map.txt') }), silent);
    let hits = 0;
    for (const [f, v] of logitsOf) {
      const cls = readdirSync(join(SUBSET, 'val')).find((c) => readdirSync(join(SUBSET, 'val', c)).includes(f))!;
      if (argmax(v, [...Array(10).keys()]) === WNIDS.indexOf(cls)) hits++;
    }
    assert.equal(res.images, 8);
    assert.equal(res.top1, Math.round((1e6 * hits) / 8) / 1e4);
  });

  test('--valid-labels cuts the logits to the listed classes; the folder labels index them', async () => {
    const file = join(TMP, 'valid.txt');
    writeFileSync(file, '7\n0\n5\n2\n42\n');
    const res = await validateOne(args({ validLabels: file }), silent);
    const kept = [0, 2, 5, 7];
    let hits = 0;
    const classes = readdirSync(join(SUBSET, 'val')).sort();
    for (const [f, v] of logitsOf) {
      const label = classes.findIndex((c) => readdirSync(join(SUBSET, 'val', c)).includes(f));
      if (argmax(v, kept) === kept[label]) hits++;
    }
    assert.equal(res.top1, Math.round((1e6 * hits) / 8) / 1e4);
  });

  test('--real-labels replaces top-1/top-5 with ImageNet-ReaL accuracy over the images that have labels', async () => {
    // entry i: the ReaL classes of ILSVRC2012_val_{i+1}; for our 8 files: the predicted class, a wrong one, or none
    const real: number[][] = Array.from({ length: 30 }, () => [9]);
    let hits1 = 0;
    let counted = 0;
    let i = 0;
    for (const [f, v] of [...logitsOf].sort()) {
      const idx = Number(/val_(\d+)/.exec(f)![1]) - 1;
      const top = argmax(v, [...Array(10).keys()]);
      const kind = i++ % 3;
      real[idx] = kind === 0 ? [top] : kind === 1 ? [(top + 1) % 10] : [];
      if (kind !== 2) counted++;
      if (kind === 0) hits1++;
    }
    const file = join(TMP, 'real.json');
    writeFileSync(file, JSON.stringify(real));
    const res = await validateOne(args({ model: 'mambaout_test', classMap: join(SUBSET, 'class_map.txt'), realLabels: file }), silent);
    assert.equal(res.top1, Math.round((1e6 * hits1) / counted) / 1e4);
    writeFileSync(file, JSON.stringify(real.slice(0, 2)));
    await assert.rejects(validateOne(args({ classMap: join(SUBSET, 'class_map.txt'), realLabels: file }), silent), /has no entry in the --real-labels file/);
  });
});

describe('--resume / --initial-checkpoint from a timm train.py checkpoint (PyTorch)', () => {
  let data = '';
  before(async () => {
    data = (await makeTinyImagenet({ root: join(TMP, 'rdata'), classes: 3, trainPerClass: 8, valPerClass: 2, minSide: 40, maxSide: 60, seed: 2 })).root;
  });
  const common = ['--model', 'mambaout_test', '--num-classes', '10', '--img-size', '32', '--backend', 'cpu', '-j', '0', '-b', '8', '--no-aug', '--mixup', '0', '--cutmix', '0', '--reprob', '0', '--output', TMP];

  test('reads epoch, weights, torch optimizer state and EMA', async () => {
    const r = await readResumeCheckpoint(TIMM_CKPT);
    assert.equal(r.kind, 'timm');
    assert.equal(r.epoch, 2);
    assert.equal(r.resumeEpoch, 3, 'version 2: continue with epoch + 1');
    assert.ok(r.optimizer instanceof Map);
    assert.equal(r.stateDict.size, 68);
    // the fixture's state_dict_ema shares state_dict's storages (test/checkpoint.test.ts): the after-step weights
    const ema = await loadCheckpoint(TIMM_CKPT, { useEma: true, stateDictOnly: true });
    assert.equal(ema.meta.stateDictKey, 'state_dict_ema');
    for (const [k, v] of ema.stateDict) assert.equal(maxAbsDiff(v.data as Float32Array, r.stateDictEma!.get(k)!.data as Float32Array), 0, `ema ${k}`);
  });

  test("torch's optimizer tensors are permuted to the tfjs layout of conv weights (and back they equal torch's)", async () => {
    const { createModel } = await import('../src/models/mambaout.js');
    const { createOptimizer } = await import('../src/train/optim/index.js');
    const { toTorchLayout } = await import('../src/models/layers.js');
    const { torchOptimizerToTfjsLayout } = await import('../src/train/resume.js');
    const model = createModel('mambaout_test', { numClasses: 10, noInit: true });
    const info = model.parameterInfo();
    const opt = createOptimizer(info.map((p) => ({ name: p.name, variable: p.variable })), { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
    const r = await readResumeCheckpoint(TIMM_CKPT);
    const kinds = new Map(info.map((p) => [p.name, p.kind]));
    const layout = opt.parameters().map((p) => ({ name: p.name, kind: kinds.get(p.name)!, shape: p.variable.shape }));
    opt.loadStateDict(torchOptimizerToTfjsLayout(r.optimizer as Map<unknown, unknown>, layout));
    const ours = await opt.stateDict();
    const torchState = (r.optimizer as Map<string, unknown>).get('state') as Map<number, Map<string, { data: Float32Array }>>;
    let convs = 0;
    layout.forEach((p, i) => {
      const mine = ours.state[i].exp_avg as { data: Float32Array };
      const back = toTorchLayout(p.kind, p.shape, mine.data);
      assert.equal(maxAbsDiff(back, torchState.get(i)!.get('exp_avg')!.data), 0, p.name);
      if (p.kind === 'conv' || p.kind === 'dwconv') convs++;
    });
    assert.ok(convs > 5);
    opt.dispose();
    model.dispose();
  });

  test('a run started in PyTorch continues here: next epoch, same weights, optimizer steps counted on', async () => {
    // --sched step with decay 0 makes the lr 0 from epoch 1 on: the weights must come out exactly as saved by torch,
    // while the AdamW state keeps counting from torch's step 1.
    const res = await runTraining(
      trainArgs([data, ...common, '--resume', TIMM_CKPT, '--model-ema', '--epochs', '4', '--sched', 'step', '--decay-epochs', '1', '--decay-rate', '0', '--warmup-epochs', '0', '--experiment', 'from-timm']),
      { logger: silent, dist: null },
    );
    assert.equal(res.epochsRun, 1, 'only epoch 3 of 0..3 is left');
    const out = await readTrainCheckpoint(join(TMP, 'from-timm', 'last.safetensors'));
    assert.equal(out.epoch, 3);
    const torch = await loadCheckpoint(TIMM_CKPT, { stateDictOnly: true });
    for (const [k, v] of torch.stateDict) assert.equal(maxAbsDiff(v.data as Float32Array, out.stateDict.get(k)!.data as Float32Array), 0, k);
    const meta = out.optimizer!.meta as { scalars: Record<string, { step: number }> };
    const steps = Object.values(meta.scalars).map((s) => s.step);
    assert.ok(steps.length === 68 && steps.every((s) => s === 1 + 3), `torch's step 1 + 3 updates: ${steps.slice(0, 3)}`);
    assert.ok(out.stateDictEma, 'EMA restored and saved');
  });

  test('--initial-checkpoint takes the state_dict_ema of a timm .pth.tar (use_ema=True in timm)', async () => {
    let first: Map<string, Float32Array> | null = null;
    await runTraining(trainArgs([data, ...common, '--initial-checkpoint', TIMM_CKPT, '--lr', '0', '--warmup-lr', '0', '--min-lr', '0', '--weight-decay', '0', '--epochs', '1', '--cooldown-epochs', '0', '--experiment', 'init-timm']), {
      logger: silent,
      dist: null,
      onUpdate: ({ model }) => {
        first ??= new Map([...model.stateDict()].map(([k, v]) => [k, v.data as Float32Array]));
      },
    });
    const ema = await loadCheckpoint(TIMM_CKPT, { useEma: true, stateDictOnly: true });
    for (const [k, v] of ema.stateDict) assert.equal(maxAbsDiff(v.data as Float32Array, first!.get(k)!), 0, k);
  });
});
