/**
 * mambaout-validate end to end: a generated folder, a checkpoint built here, metrics recomputed by hand with the
 * tfjs model (independent of the engine and the loader), corrupt images, class-count errors, bulk mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { scanImageFolder } from '../src/data/folder.js';
import { decodeRGB } from '../src/data/decode.js';
import { resolveDataConfig } from '../src/data/config.js';
import { evalTransform } from '../src/data/transforms/eval.js';
import { createModel } from '../src/models/mambaout.js';
import { MODEL_CONFIGS } from '../src/models/registry.js';
import { writeSafetensors } from '../src/checkpoint/safetensors.js';
import { initBackend } from '../src/backend/index.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'validate.ts');
const { dir: TMP, cleanup } = tempDir('mambaout-validate-test-');
process.on('exit', cleanup);
await initBackend('cpu');

const data = (await makeTinyImagenet({ root: join(TMP, 'data'), classes: 3, trainPerClass: 1, valPerClass: 7, minSide: 40, maxSide: 90, seed: 5 })).root;
const IMG = 48;
// A checkpoint with 3 classes, random weights with a large head so that predictions vary across images.
const model = createModel('mambaout_test', { numClasses: 3, seed: 11 });
const sd = model.stateDict();
const w = sd.get('head.fc2.weight')!.data as Float32Array;
for (let i = 0; i < w.length; i++) w[i] *= 40;
model.loadStateDict(sd);
const ckpt = join(TMP, 'ckpts', 'model.safetensors');
mkdirSync(join(TMP, 'ckpts'));
await writeSafetensors(ckpt, sd);

function run(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
}

/** Metrics computed image by image, with the tfjs model, in float64. */
async function byHand(root: string) {
  const ds = await scanImageFolder(root);
  const cfg = resolveDataConfig(MODEL_CONFIGS.mambaout_test.defaultCfg, { imgSize: IMG });
  let loss = 0, top1 = 0, top5 = 0, n = 0;
  for (const s of ds.samples) {
    let img;
    try {
      img = await decodeRGB(s.path);
    } catch {
      continue;
    }
    const x = evalTransform(img, cfg);
    const logits = Array.from(tf.tidy(() => model.forward(tf.tensor4d(x, [1, IMG, IMG, 3])).dataSync()));
    const m = Math.max(...logits);
    const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
    loss += lse - logits[s.label];
    const order = logits.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).map((p) => p[1]);
    if (order[0] === s.label) top1++;
    if (order.slice(0, 5).includes(s.label)) top5++;
    n++;
  }
  return { loss: loss / n, top1: (100 * top1) / n, top5: (100 * top5) / n, n };
}

test('validate: top-1, top-5 and loss agree with a by-hand computation; results file and log lines as timm', async () => {
  const ref = await byHand(join(data, 'val'));
  assert.ok(ref.top1 > 0 && ref.top1 < 100, `the fixture should not be trivially all right or all wrong (top1 ${ref.top1})`);
  for (const engine of ['onnxruntime', 'tfjs']) {
    const out = join(TMP, `res-${engine}.json`);
    const r = run([data, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '4', '-j', '2', '--engine', engine, '--backend', 'cpu', '--results-file', out, '--log-freq', '2']);
    assert.equal(r.status, 0, r.stderr);
    const [res] = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(res.images, ref.n);
    assert.equal(res.skipped, 0);
    assert.ok(Math.abs(res.top1 - ref.top1) < 1e-3, `${engine}: top1 ${res.top1} vs ${ref.top1}`);
    assert.ok(Math.abs(res.top5 - ref.top5) < 1e-3);
    assert.ok(Math.abs(res.loss - ref.loss) < 1e-4, `${engine}: loss ${res.loss} vs ${ref.loss}`);
    assert.equal(res.top1_err, Math.round((100 - res.top1) * 1e4) / 1e4);
    assert.equal(res.img_size, IMG);
    assert.equal(res.crop_pct, 1);
    assert.equal(res.interpolation, 'bicubic');
    assert.equal(res.param_count, 0.04);
    assert.match(r.stdout, /^Test: \[   0\/6\]  Time: [\d.]+s \([\d.]+s, +[\d.]+\/s\)  Loss: +[\d.]+ \( *[\d.]+\)  Acc@1: +[\d.]+ \( *[\d.]+\)  Acc@5: /m);
    assert.match(r.stdout, /^ \* Acc@1 [\d.]+ \([\d.]+\) Acc@5 100\.000 \(0\.000\)$/m);
    assert.match(r.stdout.split('\n')[0], new RegExp(`^engine: ${engine === 'tfjs' ? 'tfjs' : 'onnxruntime'}`));
  }
});

test('validate: a corrupt image is warned about with its path, skipped and counted', async () => {
  const root = join(TMP, 'corrupt');
  mkdirSync(join(root, 'val'), { recursive: true });
  for (const c of ['n00000001_hstripes', 'n00000002_vstripes', 'n00000003_checker']) {
    mkdirSync(join(root, 'val', c));
    copyFileSync(join(data, 'val', c, 'val_0000.JPEG'), join(root, 'val', c, 'a.JPEG'));
  }
  writeFileSync(join(root, 'val', 'n00000002_vstripes', 'broken.jpg'), Buffer.from('not a jpeg at all'));
  const out = join(TMP, 'res-corrupt.csv');
  const r = run([root, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '2', '-j', '0', '--results-file', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /skipping unreadable image .*broken\.jpg/);
  const [header, row] = readFileSync(out, 'utf8').trim().split('\n');
  assert.equal(header, 'model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation,images,skipped,loss');
  const cols = Object.fromEntries(header.split(',').map((k, i) => [k, row.split(',')[i]]));
  assert.equal(cols.images, '3');
  assert.equal(cols.skipped, '1');
});

test('validate: bad input ends in one sentence and a non-zero exit', () => {
  const cases: [string[], RegExp][] = [
    [[join(TMP, 'missing'), '--model', 'mambaout_test', '--checkpoint', ckpt], /data folder '.*missing' does not exist/],
    [[data, '--model', 'mambaout_test', '--checkpoint', ckpt, '--num-classes', '5'], /has 3 classes but --num-classes is 5/],
    [[data, '--model', 'nope_model', '--checkpoint', ckpt], /unknown model 'nope_model'; known models: mambaout_femto/],
    [[data, '--model', 'mambaout_test', '--checkpoint', join(TMP, 'none.pth')], /checkpoint '.*none.pth' does not exist/],
    [[data, '--model', 'mambaout_femto', '--checkpoint', ckpt], /--model mambaout_femto conflicts with the checkpoint .*model\.safetensors, which holds a mambaout_test model/],
  ];
  for (const [args, re] of cases) {
    const r = run([...args, '--img-size', String(IMG), '-j', '0']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
  // dataset with 3 classes against a 10-class checkpoint
  const sd10 = createModel('mambaout_test', { seed: 1 });
  const f10 = join(TMP, 'ck10.safetensors');
  return writeSafetensors(f10, sd10.stateDict()).then(() => {
    sd10.dispose();
    const r = run([data, '--model', 'mambaout_test', '--checkpoint', f10, '--img-size', String(IMG), '-j', '0']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /has 3 classes but the model has 10/);
  });
});

test('validate: bulk mode over a folder of checkpoints writes results sorted by top-1', async () => {
  const dir = join(TMP, 'ckpts');
  const other = createModel('mambaout_test', { numClasses: 3, seed: 99 });
  await writeSafetensors(join(dir, 'other.safetensors'), other.stateDict());
  other.dispose();
  const out = join(TMP, 'bulk.csv');
  const r = run([data, '--model', 'mambaout_test', '--checkpoint', dir, '--img-size', String(IMG), '-b', '8', '-j', '0', '--results-file', out]);
  assert.equal(r.status, 0, r.stderr);
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0], /,checkpoint$/);
  const top1 = lines.slice(1).map((l) => Number(l.split(',')[1]));
  assert.ok(top1[0] >= top1[1]);
});

test('validate --log-format json: every log line is a pino JSON record', () => {
  const r = run([data, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '8', '-j', '0', '--log-format', 'json', '--log-freq', '1']);
  assert.equal(r.status, 0, r.stderr);
  const logLines = r.stdout.slice(0, r.stdout.indexOf('--result')).trim().split('\n');
  assert.ok(logLines.length > 5);
  for (const l of logLines) {
    const rec = JSON.parse(l);
    assert.equal(typeof rec.msg, 'string');
    assert.equal(typeof rec.level, 'number');
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT/);
  }
  assert.ok(logLines.some((l) => JSON.parse(l).msg.startsWith(' * Acc@1 ')));
});

test('validate --amp: accepted with a warning that float32 is used', () => {
  const r = run([data, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '8', '-j', '0', '--amp']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /--amp: onnxruntime runs in float32 here .*continuing in float32/);
});

test('validate: the same results whether the workers decode ahead while the engine loads (-j 4) or images are decoded in turn (-j 0); --engine auto starts no tfjs backend for onnxruntime', () => {
  const results = ['0', '1', '4'].map((j) => {
    const out = join(TMP, `res-j${j}.json`);
    // -b 8: chunks of 8, and with -j 4 the loader may run a whole batch ahead (validate.ts aheadImages)
    const r = run([data, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '8', '-j', j, '--engine', 'auto', '--backend', 'wasm', '--results-file', out]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout.split('\n')[0], /^engine: onnxruntime.*; tfjs not used \(no GPU backend: --backend wasm is not a GPU backend\)$/);
    return readFileSync(out, 'utf8');
  });
  assert.equal(results[1], results[0]);
  assert.equal(results[2], results[0]);
});

test('validate: a failure after the workers started ends in one sentence, exit 2, and leaves nothing running', async () => {
  // every image unreadable: the loader skips them all while the engine loads; a missing --real-labels file fails
  // after the loader has started (RealLabels.load runs once the engine is built)
  const root = join(TMP, 'all-corrupt');
  for (const c of ['a', 'b', 'c']) {
    mkdirSync(join(root, c), { recursive: true });
    for (let i = 0; i < 6; i++) writeFileSync(join(root, c, `x${i}.jpg`), Buffer.from('not a jpeg'));
  }
  const cases: [string[], RegExp][] = [
    [[root], /^error: no readable images in .*all-corrupt \(18 skipped\)\.?\n?$/m],
    [[data, '--real-labels', join(TMP, 'no-such-real.json')], /no-such-real\.json/],
  ];
  for (const [args, re] of cases) {
    const t0 = Date.now();
    const r = run([...args, '--model', 'mambaout_test', '--checkpoint', ckpt, '--img-size', String(IMG), '-b', '4', '-j', '4', '--engine', 'onnxruntime']);
    assert.equal(r.status, 2, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.ok(Date.now() - t0 < 60_000, 'the process ended by itself (no worker kept it alive)');
  }
});
