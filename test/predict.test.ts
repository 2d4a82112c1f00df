/**
 * mambaout-predict: the classify core (src/inference/predict.ts), the labels, and the CLI (bin/predict.ts).
 *
 * Model: the micro fixture (mambaout_test, 10 classes) at 64 px for speed. The predicted classes are checked against
 * an independent computation: the tfjs MambaOut model (createModel + loadStateDict + forward) on the same
 * preprocessed input, softmax and argmax done here — while the predictor runs on its own engine (onnxruntime by
 * default on CPU).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { decodeRGB } from '../src/data/decode.js';
import { resolveDataConfig } from '../src/data/config.js';
import { evalTransform } from '../src/data/transforms/eval.js';
import { createModel } from '../src/models/mambaout.js';
import { UserError } from '../src/errors.js';
import {
  Predictor, collectImagePaths, formatPrediction, softmax, topK, type Prediction,
} from '../src/inference/predict.js';
import { imagenetClassNames, readClassMap, resolveClassNames } from '../src/inference/labels.js';
import { fixture, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MICRO = fixture('micro.pth');
const PHOTOS = [fixture('photos/chelsea.jpg'), fixture('photos/coffee.jpg')];
const IMG = 64;

let predictor: Predictor;
let tmp: { dir: string; cleanup: () => void };
let corrupt: string;
/** Reference probabilities [image][class] from the tfjs model. */
let refProbs: number[][];

before(async () => {
  tmp = tempDir('mambaout-predict-');
  corrupt = join(tmp.dir, 'truncated.jpg');
  writeFileSync(corrupt, readFileSync(PHOTOS[1]).subarray(0, 3000)); // a JPEG cut short
  predictor = await Predictor.create({ model: 'mambaout_test', checkpoint: MICRO, imgSize: IMG, numClasses: 10 });

  // Independent reference: tfjs model on the eval-transformed photos.
  const { stateDict } = await loadCheckpoint(MICRO, { stateDictOnly: true });
  const model = createModel('mambaout_test', { noInit: true, numClasses: 10 });
  model.loadStateDict(stateDict);
  const cfg = resolveDataConfig({ inputSize: [3, 224, 224], interpolation: 'bicubic', cropPct: 1.0 }, { imgSize: IMG });
  const per = IMG * IMG * 3;
  const batch = new Float32Array(PHOTOS.length * per);
  for (let i = 0; i < PHOTOS.length; i++) evalTransform(await decodeRGB(PHOTOS[i]), cfg, batch, i * per);
  const probs = tf.tidy(() => tf.softmax(model.forward(tf.tensor4d(batch, [PHOTOS.length, IMG, IMG, 3]))));
  refProbs = (await probs.array()) as number[][];
  probs.dispose();
  model.dispose();
});

after(() => {
  predictor?.dispose();
  tmp?.cleanup();
});

const argmax = (v: readonly number[]): number => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

/** Indices sorted by decreasing reference probability. */
const refOrder = (p: readonly number[]): number[] => p.map((_, i) => i).sort((a, b) => p[b] - p[a]);

function checkTopk(topk: Prediction['topk'], ref: readonly number[], k: number): void {
  assert.equal(topk.length, k);
  for (let r = 0; r < k; r++) {
    const t = topk[r];
    assert.ok(t.probability >= 0 && t.probability <= 1, `probability ${t.probability} out of [0,1]`);
    if (r > 0) assert.ok(topk[r - 1].probability >= t.probability, 'top-k not sorted');
    assert.equal(t.name, `class_${t.index}`);
    // Same probability as the tfjs reference (engines differ by float rounding only).
    assert.ok(Math.abs(t.probability - ref[t.index]) < 1e-5, `p[${t.index}] ${t.probability} vs reference ${ref[t.index]}`);
  }
  assert.equal(topk[0].index, argmax(ref), 'top-1 differs from the tfjs argmax');
  assert.deepEqual(topk.map((t) => t.index), refOrder(ref).slice(0, k));
  const sum = topk.reduce((a, t) => a + t.probability, 0);
  assert.ok(sum <= 1 + 1e-9 && sum > 0, `top-${k} sum ${sum}`);
}

test('softmax and topK', () => {
  const p = softmax([1, 2, 3]);
  const e = [Math.exp(-2), Math.exp(-1), 1];
  const z = e[0] + e[1] + e[2];
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(p[i] - e[i] / z) < 1e-15);
  // Large logits must not overflow; offset/length select one row.
  const row = softmax(new Float32Array([0, 0, 1000, 1000, 0]), 2, 2);
  assert.deepEqual([...row], [0.5, 0.5]);
  const names = ['a', 'b', 'c', 'd'];
  const t = topK([0.1, 0.4, 0.1, 0.4], 3, names);
  assert.deepEqual(t, [
    { index: 1, name: 'b', probability: 0.4 },
    { index: 3, name: 'd', probability: 0.4 },
    { index: 0, name: 'a', probability: 0.1 },
  ]);
  assert.equal(topK([0.5, 0.5], 5, ['x', 'y']).length, 2, 'k is clamped to the number of classes');
});

test('class names: ImageNet-1k from our data file, class_<i>, class map files', () => {
  const names = imagenetClassNames();
  assert.equal(names.length, 1000);
  assert.equal(names[0], 'tench, Tinca tinca');
  assert.equal(names[281], 'tabby, tabby cat');
  assert.equal(names[999], 'toilet tissue, toilet paper, bathroom tissue');
  assert.deepEqual(resolveClassNames(1000), [...names]);
  assert.deepEqual(resolveClassNames(3), ['class_0', 'class_1', 'class_2']);
  const map = join(tmp.dir, 'classes.txt');
  writeFileSync(map, 'cat\r\ndog \nbird\n\n');
  assert.deepEqual(readClassMap(map), ['cat', 'dog', 'bird']);
  assert.deepEqual(resolveClassNames(3, map), ['cat', 'dog', 'bird']);
  assert.throws(() => resolveClassNames(4, map), (e: unknown) => e instanceof UserError && /names 3 classes but the model has 4/.test(e.message));
  writeFileSync(map, 'cat\n\ndog\n');
  assert.throws(() => readClassMap(map), /empty line at line 2/);
  assert.throws(() => readClassMap(join(tmp.dir, 'nope.txt')), (e: unknown) => e instanceof UserError && /does not exist/.test(e.message));
});

test('collectImagePaths walks folders recursively, sorted, image extensions only', async () => {
  const root = join(tmp.dir, 'tree');
  mkdirSync(join(root, 'b', 'deep'), { recursive: true });
  mkdirSync(join(root, 'a'), { recursive: true });
  mkdirSync(join(root, 'empty'), { recursive: true });
  for (const f of ['b/deep/x.PNG', 'b/y.webp', 'a/z.jpeg', 'a/w.jpg', 'top.JPG', 'notes.txt', 'a/readme.md']) writeFileSync(join(root, f), '');
  const warnings: string[] = [];
  const files = await collectImagePaths([root, PHOTOS[0]], { onWarning: (m) => warnings.push(m) });
  assert.deepEqual(files, [
    join(root, 'a/w.jpg'), join(root, 'a/z.jpeg'), join(root, 'b/deep/x.PNG'), join(root, 'b/y.webp'), join(root, 'top.JPG'), PHOTOS[0],
  ]);
  assert.equal(warnings.length, 0);
  await collectImagePaths([join(root, 'empty'), PHOTOS[0]], { onWarning: (m) => warnings.push(m) });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /holds no images/);
  await assert.rejects(collectImagePaths([join(root, 'missing.jpg')]), (e: unknown) => e instanceof UserError && /'.*missing\.jpg' does not exist/.test(e.message));
  await assert.rejects(collectImagePaths([join(root, 'empty')]), (e: unknown) => e instanceof UserError && /no images found/.test(e.message));
});

test('predictor: top-k matches the independent tfjs model; corrupt images are skipped', async () => {
  assert.equal(predictor.numClasses, 10);
  assert.deepEqual(predictor.dataConfig.inputSize, [3, IMG, IMG]);
  assert.equal(predictor.dataConfig.interpolation, 'bicubic');
  assert.equal(predictor.dataConfig.cropPct, 1.0);
  const skipped: string[] = [];
  const { predictions, skipped: sk } = await predictor.predictFiles([PHOTOS[0], corrupt, PHOTOS[1]], {
    topk: 5,
    batchSize: 2, // two batches: the prefetch path is exercised
    onSkip: (s) => skipped.push(s.path),
  });
  assert.deepEqual(skipped, [corrupt]);
  assert.equal(sk.length, 1);
  // libvips' message is usually 'premature end of JPEG image', but its error buffer is process-wide and concurrent
  // decodes can leave sharp with 'Unknown error'; only require a reason.
  assert.ok(sk[0].reason.length > 0);
  assert.deepEqual(predictions.map((p) => p.path), PHOTOS);
  predictions.forEach((p, i) => checkTopk(p.topk, refProbs[i], 5));
  // The buffer path (used by the demo) gives the same answer as the file path.
  const fromBuffer = await predictor.classifyBuffer(readFileSync(PHOTOS[0]), 'chelsea.jpg', 10);
  checkTopk(fromBuffer, refProbs[0], 10);
  const total = fromBuffer.reduce((a, t) => a + t.probability, 0);
  assert.ok(Math.abs(total - 1) < 1e-6, `all 10 probabilities sum to ${total}`);
  const text = formatPrediction(predictions[0]).split('\n');
  assert.equal(text[0], PHOTOS[0]);
  assert.equal(text.length, 6);
  assert.match(text[1], /^ {3}1\. +\d+\.\d\d% {2}class_\d \(\d\)$/);
});

/** A line of a JavaScript stack trace (Dawn's native 'at operator() (...cpp:368)' warnings are not ours). */
const JS_STACK = /^\s+at .*\.[cm]?[jt]s:\d+(:\d+)?\)?$/m;

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/predict.ts', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, MAMBAOUT_DEBUG: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const MODEL_ARGS = ['--model', 'mambaout_test', '--checkpoint', MICRO, '--img-size', String(IMG), '--num-classes', '10'];

test('CLI --json: shape, values, corrupt file warned and skipped (exit 1)', () => {
  const r = runCli([PHOTOS[0], corrupt, PHOTOS[1], ...MODEL_ARGS, '--json']);
  assert.equal(r.status, 1, r.stderr);
  const out = JSON.parse(r.stdout) as Prediction[]; // stdout holds only the JSON
  assert.equal(out.length, 2);
  out.forEach((p, i) => {
    assert.deepEqual(Object.keys(p), ['path', 'topk']);
    assert.equal(p.path, PHOTOS[i]);
    for (const t of p.topk) assert.deepEqual(Object.keys(t), ['index', 'name', 'probability']);
    checkTopk(p.topk, refProbs[i], 5);
  });
  assert.match(r.stderr, /engine: /, 'the engine/backend line is logged');
  assert.match(r.stderr, new RegExp(`WARNING: skipped ${corrupt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  assert.doesNotMatch(r.stderr, JS_STACK, 'no stack trace');
});

test('CLI text output, --topk, --json FILE written', () => {
  const outFile = join(tmp.dir, 'preds.json');
  const r = runCli([...PHOTOS, ...MODEL_ARGS, '--topk', '3', '--json', outFile, '-b', '1']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2 * 4);
  assert.equal(lines[0], PHOTOS[0]);
  assert.equal(lines[4], PHOTOS[1]);
  const saved = JSON.parse(readFileSync(outFile, 'utf8')) as Prediction[];
  assert.deepEqual(saved.map((p) => p.topk.length), [3, 3]);
  saved.forEach((p, i) => {
    checkTopk(p.topk, refProbs[i], 3);
    assert.ok(lines[i * 4 + 1].endsWith(`class_${p.topk[0].index} (${p.topk[0].index})`));
  });
});

test('CLI `--json IMAGE ...` takes the image as an input, not as the output file', () => {
  const copy = join(tmp.dir, 'copy.jpg');
  copyFileSync(PHOTOS[0], copy);
  const before = readFileSync(copy);
  const r = runCli(['--json', copy, ...MODEL_ARGS]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readFileSync(copy), before, 'the image was not overwritten');
  const out = JSON.parse(r.stdout) as Prediction[];
  assert.equal(out[0].path, copy);
  checkTopk(out[0].topk, refProbs[0], 5);
});

test('CLI user errors: one sentence on stderr, exit 2, no stack trace', () => {
  const cases: [string[], RegExp][] = [
    [[join(tmp.dir, 'missing.jpg'), ...MODEL_ARGS], /^error: image or folder '.*missing\.jpg' does not exist\n$/],
    [[PHOTOS[0], '--model', 'resnet50', '--checkpoint', MICRO], /^error: unknown model 'resnet50'; known models: mambaout_femto, .*mambaout_test\n$/],
    [[PHOTOS[0], '--model', 'mambaout_test'], /^error: no weights given for mambaout_test: pass --pretrained, --pretrained-path FILE or --checkpoint FILE\n$/],
    [[PHOTOS[0], ...MODEL_ARGS, '--topk', '0'], /^error: --topk must be a positive integer, got 0\n$/],
    [[PHOTOS[0], ...MODEL_ARGS, '--bogus-flag'], /^error: unknown option --bogus-flag; see --help for the options\n$/],
  ];
  for (const [args, re] of cases) {
    const r = runCli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, JS_STACK);
    assert.equal(r.stdout, '');
  }
});
