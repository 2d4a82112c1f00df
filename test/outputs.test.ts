/**
 * What a user gets from a run (issue 17): train on a folder with named classes at 32 px, then predict, validate,
 * export and serve the checkpoint with nothing but --checkpoint; the ONNX export carries the same metadata; the run
 * folder holds curves.svg/png after every epoch; --log-format json lines carry the numbers as fields; summary.csv
 * prints Python floats.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { readProtoFields, type WireValue } from '../src/export/onnx_proto.js';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { readSafetensors } from '../src/checkpoint/safetensors.js';
import { modelMetaFromOnnxProps, modelMetaFromSafetensors } from '../src/checkpoint/model_meta.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { createLogger } from '../src/log/logger.js';
import { Progress } from '../src/log/progress.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { dir: TMP, cleanup } = tempDir('mambaout-outputs-test-');
process.on('exit', cleanup);
const CLASSES = ['bird', 'cat', 'dog'];
const EXP = join(TMP, 'run');
const BEST = join(EXP, 'model_best.safetensors');

let data = '';
/** JSON log records of the training run. */
const records: Record<string, unknown>[] = [];
/** curves after epoch 0, read at the first update of epoch 1 */
let curvesAfterEpoch0: { svg: string; png: Buffer } | null = null;

function cli(bin: string, args: string[], timeout = 180_000) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bin', bin), ...args], { cwd: ROOT, encoding: 'utf8', timeout });
}

async function checkImages(svgText: string, png: Buffer): Promise<void> {
  assert.match(svgText, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  const sm = await sharp(Buffer.from(svgText)).metadata();
  assert.equal(sm.format, 'svg');
  const pm = await sharp(png).metadata();
  assert.equal(pm.format, 'png');
  assert.ok(pm.width! > 600 && pm.height! > 150, `png ${pm.width}x${pm.height}`);
  const stats = await sharp(png).stats();
  assert.ok(stats.channels[0].min < 100, 'the picture has dark pixels (axes, text, lines), not a blank page');
}

before(async () => {
  // 3 named classes x 8 training images, x 4 validation images, 40-72 px
  data = (await makeTinyImagenet({ root: join(TMP, 'data'), classes: 3, trainPerClass: 8, valPerClass: 4, minSide: 40, maxSide: 72, seed: 5 })).root;
  const generated = ['n00000001_hstripes', 'n00000002_vstripes', 'n00000003_checker'];
  for (const split of ['train', 'val']) generated.forEach((g, i) => renameSync(join(data, split, g), join(data, split, CLASSES[i])));

  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) records.push(JSON.parse(line));
      cb();
    },
  });
  const logger = createLogger({ format: 'json', stream: sink });
  const args = parseArgs({
    scriptName: 'mambaout-train',
    usage: '',
    flags: TRAIN_FLAGS,
    positionals: [{ name: 'data_dir', describe: '', type: 'string' }],
    argv: [data, '--model', 'mambaout_test', '--img-size', '32', '--backend', 'cpu', '-j', '0', '-b', '8', '--epochs', '2', '--warmup-epochs', '1',
      '--cooldown-epochs', '0', '--lr', '2e-3', '--log-interval', '1', '--model-ema', '--model-ema-force-cpu', '--output', TMP, '--experiment', 'run'],
  }).args;
  const r = await runTraining(args, {
    logger,
    dist: null,
    onUpdate: async ({ epoch, update }) => {
      if (epoch === 1 && update === 1) curvesAfterEpoch0 = { svg: readFileSync(join(EXP, 'curves.svg'), 'utf8'), png: readFileSync(join(EXP, 'curves.png')) };
    },
  });
  assert.equal(r.epochsRun, 2);
});

after(() => cleanup());

test('the checkpoint records architecture, classes and their names, trained size, mean/std, interpolation and crop', async () => {
  const ck = await readTrainCheckpoint(BEST);
  const m = ck.modelMeta!;
  assert.equal(m.architecture, 'mambaout_test');
  assert.equal(m.num_classes, 3);
  assert.deepEqual(m.label_names, CLASSES);
  assert.deepEqual(m.pretrained_cfg.input_size, [3, 32, 32]);
  assert.deepEqual(m.pretrained_cfg.mean, [0.485, 0.456, 0.406]);
  assert.deepEqual(m.pretrained_cfg.std, [0.229, 0.224, 0.225]);
  assert.equal(m.pretrained_cfg.interpolation, 'bicubic');
  assert.equal(m.pretrained_cfg.crop_pct, 1);
  assert.ok(ck.stateDictEma, '--model-ema-force-cpu still tracks and saves the EMA');
});

test('curves.svg and curves.png are valid pictures after the first epoch and are redrawn after the second', async () => {
  assert.ok(curvesAfterEpoch0, 'curves existed when epoch 1 started');
  await checkImages(curvesAfterEpoch0!.svg, curvesAfterEpoch0!.png);
  const svg = readFileSync(join(EXP, 'curves.svg'), 'utf8');
  const png = readFileSync(join(EXP, 'curves.png'));
  await checkImages(svg, png);
  assert.notEqual(svg, curvesAfterEpoch0!.svg, 'the picture changed with the second epoch');
  for (const label of ['loss', 'accuracy (%)', 'learning rate', 'top-1', 'top-5', 'train', 'eval']) assert.ok(svg.includes(`>${label}<`), `'${label}' drawn`);
});

test('JSON log lines carry epoch, step, loss, lr, img/s and top-1/top-5 as fields', () => {
  const train = records.filter((r) => r.event === 'train');
  assert.equal(train.length, 6, '3 logged micro-batches x 2 epochs');
  for (const r of train) {
    for (const k of ['epoch', 'step', 'steps', 'loss', 'loss_avg', 'lr', 'img_per_sec', 'batch_time', 'data_time']) assert.equal(typeof r[k], 'number', `${k} in ${JSON.stringify(r)}`);
    assert.match(String(r.msg), /^Train: \d \[/);
    assert.equal(r.level, 30);
  }
  assert.deepEqual(train.map((r) => [r.epoch, r.step]), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
  assert.equal(train[0].lr, 1e-6, 'warmup lr in epoch 0');
  const evals = records.filter((r) => r.event === 'eval');
  assert.ok(evals.length >= 2 && evals.every((r) => typeof r.top1 === 'number' && typeof r.top5 === 'number' && typeof r.loss === 'number'));
  assert.equal(records.filter((r) => r.event === 'eval_ema').length, 0, '--model-ema-force-cpu: no EMA validation');
  const epochs = records.filter((r) => r.event === 'epoch');
  assert.deepEqual(epochs.map((r) => r.epoch), [0, 1]);
  for (const r of epochs) for (const k of ['train_loss', 'eval_loss', 'top1', 'top5', 'lr']) assert.equal(typeof r[k], 'number');
});

test('summary.csv writes Python floats (100.0, not 100)', () => {
  const rows = readFileSync(join(EXP, 'summary.csv'), 'utf8').trim().split('\n');
  assert.equal(rows[0], 'epoch,train_loss,eval_loss,eval_top1,eval_top5');
  for (const row of rows.slice(1)) {
    const cells = row.split(',');
    assert.equal(cells[4], '100.0', 'top-5 of 3 classes is 100.0');
    for (const c of cells.slice(1)) assert.match(c, /\.|e/, `'${c}' prints as a float`);
  }
});

test('predict from the checkpoint alone: the folder class names, at the trained size', () => {
  const r = cli('predict.ts', [join(data, 'val', 'cat'), '--checkpoint', BEST, '--json', '--topk', '3']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /Model mambaout_test \(3 classes\) .*input 32x32, crop_pct 1\.0, bicubic; 4 image\(s\)/);
  const preds = JSON.parse(r.stdout) as { topk: { name: string; index: number }[] }[];
  assert.equal(preds.length, 4);
  for (const p of preds) {
    assert.deepEqual(p.topk.map((t) => t.name).sort(), CLASSES);
    for (const t of p.topk) assert.equal(t.name, CLASSES[t.index]);
  }
});

test('a --model that contradicts the checkpoint is an error naming both', () => {
  const r = cli('predict.ts', [join(data, 'val', 'cat'), '--checkpoint', BEST, '--model', 'mambaout_femto']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^error: --model mambaout_femto conflicts with the checkpoint .*model_best\.safetensors, which holds a mambaout_test model/);
});

test('validate from the checkpoint alone; a folder with some of the classes is matched by name', async () => {
  const r = cli('validate.ts', [data, '--checkpoint', BEST, '-b', '4', '-j', '0']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /input_size: \(3, 32, 32\)/);
  const result = JSON.parse(r.stdout.slice(r.stdout.indexOf('--result\n') + 9));
  assert.equal(result.model, 'mambaout_test');
  assert.equal(result.img_size, 32);
  assert.equal(result.images, 12);
  assert.match(r.stdout, /"top5": 100\.0,/, 'Python float formatting in the result JSON');
  assert.match(r.stdout, /"crop_pct": 1\.0,/);

  // Only 'dog' and 'cat' (folder order: cat=0, dog=1; model order: cat=1, dog=2): matched by name, so the
  // per-image predictions are scored against the model's indices.
  const sub = join(TMP, 'sub');
  for (const c of ['cat', 'dog']) {
    spawnSync('mkdir', ['-p', join(sub, 'val')]);
    spawnSync('cp', ['-r', join(data, 'val', c), join(sub, 'val', c)]);
  }
  const rs = cli('validate.ts', [sub, '--checkpoint', BEST, '-b', '4', '-j', '0']);
  assert.equal(rs.status, 0, rs.stderr);
  assert.match(rs.stdout, /Matched the 2 class folder\(s\) to the checkpoint's class names/);
  const pr = cli('predict.ts', [join(sub, 'val'), '--checkpoint', BEST, '--json', '--topk', '1']);
  const preds = JSON.parse(pr.stdout) as { path: string; topk: { name: string }[] }[];
  const hits = preds.filter((p) => p.path.includes(`/${p.topk[0].name}/`)).length;
  const subResult = JSON.parse(rs.stdout.slice(rs.stdout.indexOf('--result\n') + 9));
  assert.equal(subResult.top1, Math.round((10000 * 100 * hits) / preds.length) / 10000);
});

test('export from the checkpoint alone: ONNX metadata_props and safetensors config read back', async () => {
  const onnx = join(TMP, 'run.onnx');
  const r = cli('export.ts', ['--checkpoint', BEST, '-o', onnx]);
  assert.equal(r.status, 0, r.stderr);
  // ModelProto.metadata_props is field 14 of onnx.proto; StringStringEntryProto: key = 1, value = 2.
  const text = (b: WireValue | undefined) => new TextDecoder().decode((b ?? new Uint8Array(0)) as Uint8Array);
  const props = (readProtoFields(readFileSync(onnx)).get(14) ?? []).map((e) => {
    const f = readProtoFields(e as Uint8Array);
    return { key: text(f.get(1)?.[0]), value: text(f.get(2)?.[0]) };
  });
  const keys = props.map((p) => p.key);
  for (const k of ['architecture', 'num_classes', 'class_names', 'input_size', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode', 'input_layout']) assert.ok(keys.includes(k), `${k} in ${keys}`);
  const fromOnnx = modelMetaFromOnnxProps(props, onnx)!;
  const ck = await readTrainCheckpoint(BEST);
  const { num_features: _nf, ...withoutFeatures } = ck.modelMeta!; // ONNX props do not carry num_features
  assert.deepEqual(fromOnnx, withoutFeatures);
  assert.equal(fromOnnx.architecture, 'mambaout_test');
  assert.deepEqual(fromOnnx.label_names, CLASSES);
  assert.deepEqual(fromOnnx.pretrained_cfg, ck.modelMeta!.pretrained_cfg);
  assert.equal(props.find((p) => p.key === 'crop_pct')!.value, '1.0');

  const st = join(TMP, 'run_weights.safetensors');
  const r2 = cli('export.ts', ['--checkpoint', BEST, '--format', 'safetensors', '-o', st]);
  assert.equal(r2.status, 0, r2.stderr);
  const map = await readSafetensors(st);
  assert.deepEqual(modelMetaFromSafetensors(map.metadata, st), ck.modelMeta);
  // ... and the exported file alone is enough for predict
  const p = cli('predict.ts', [join(data, 'val', 'bird'), '--checkpoint', st, '--topk', '1']);
  assert.equal(p.status, 0, p.stderr);
  assert.match(p.stdout, /1\. +[\d.]+%  (bird|cat|dog) \(\d\)/);
});

test('the demo serves the checkpoint alone with its class names and size', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bin', 'demo.ts'), '--checkpoint', BEST, '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /Running on local URL: (\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.on('exit', (c) => reject(new Error(`demo exited ${c}: ${err}`)));
    });
    const info = (await (await fetch(new URL('api/info', url))).json()) as Record<string, unknown>;
    assert.equal(info.model, 'mambaout_test');
    assert.equal(info.numClasses, 3);
    assert.deepEqual(info.inputSize, [3, 32, 32]);
    const f = new FormData();
    f.append('image', new Blob([new Uint8Array(readFileSync(join(data, 'val', 'dog', 'val_0000.JPEG')))], { type: 'image/jpeg' }), 'dog.jpg');
    const pred = (await (await fetch(new URL('api/predict', url), { method: 'POST', body: f })).json()) as { topk: { name: string }[] };
    assert.deepEqual(pred.topk.map((t) => t.name).sort(), CLASSES);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.on('exit', r)));
  }
});

test("the progress bar's first frame shows '-' for loss and lr, not the template", () => {
  let text = '';
  const tty = Object.assign(
    new Writable({
      write(chunk, _e, cb) {
        text += String(chunk);
        cb();
      },
    }),
    { isTTY: true, columns: 160, rows: 40, cursorTo: () => true, clearLine: () => true, moveCursor: () => true },
  );
  const logger = createLogger({ stream: tty });
  assert.ok(logger.interactive);
  const bar = new Progress(logger, 10, 'Train 0', 'loss {loss} | lr {lr}', tty);
  bar.stop();
  assert.match(text, /Train 0 .* 0\/10 .*loss - \| lr -/);
  assert.doesNotMatch(text, /\{loss\}|\{lr\}/);
  assert.ok(existsSync(EXP));
});
