/**
 * CLI-level checks that span modules: --list-models (parameter counts), the package entry point
 * (`import * as m from 'mambaout'`), --pretrained's cache / offline behaviour, and the one parser every command
 * uses (src/cli/parse.ts) in the forms predict, demo and the launcher need.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixture, sharedFixture, tempDir } from './helpers.js';
import { parseArgs, splitLauncherArgs } from '../src/cli/parse.js';
import { PREDICT_FLAGS } from '../src/cli/predict.js';
import { DEMO_FLAGS } from '../src/cli/demo.js';
import { LAUNCHER_FLAGS } from '../src/cli/distributed_train.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { dir: TMP, cleanup } = tempDir('mambaout-cli-test-');
process.on('exit', cleanup);

function cli(bin: string, args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bin', `${bin}.ts`), ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
}

test('--list-models prints every model with its parameter count', () => {
  for (const bin of ['train', 'validate']) {
    const r = cli(bin, ['--list-models']);
    assert.equal(r.status, 0, r.stderr);
    for (const [name, m, exact] of [
      ['mambaout_femto', '7.3M', '7304536'], ['mambaout_kobe', '9.1M', '9141208'], ['mambaout_tiny', '26.5M', '26545096'],
      ['mambaout_small', '48.5M', '48488072'], ['mambaout_base', '84.8M', '84813092'],
    ]) {
      assert.match(r.stdout, new RegExp(`^${name} +${m.replace('.', '\\.')} +${exact} `, 'm'), `${bin}: ${name}`);
    }
  }
});

test("the public API is importable as the package ('mambaout')", async (t) => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'index.js'))) {
    t.skip('dist/ not built (npm ci builds it through the prepare script)');
    return;
  }
  const m = await import('mambaout');
  for (const fn of ['createModel', 'listModels', 'loadCheckpoint', 'saveSafetensors', 'readSafetensors', 'initBackend', 'loadClassifier']) {
    assert.equal(typeof (m as Record<string, unknown>)[fn], 'function', fn);
  }
  await m.initBackend('cpu');
  const model = m.createModel('mambaout_test', { noInit: true });
  model.loadStateDict((await m.loadCheckpoint(fixture('micro.pth'))).stateDict);
  assert.equal(model.namedParameters().length, 68);
  assert.equal(model.namedParameters()[0][0], 'downsample_layers.0.conv1.weight');
  model.dispose();
});

test('--pretrained offline: one sentence saying where to put the file', () => {
  const home = join(TMP, 'home-empty');
  const r = cli('predict', [fixture('photos/chelsea.jpg'), '--model', 'mambaout_femto', '--pretrained'], { MAMBAOUT_HOME: home });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /put it at .*home-empty[/\\]mambaout_femto\.pth \(or pass --pretrained-path FILE\)/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('--pretrained cache: a verified file is used, its checksum recorded, and a later change is noticed', (t) => {
  const femto = sharedFixture('femto_random.pth');
  if (!femto) {
    t.skip('../shared/fixtures/femto_random.pth not present');
    return;
  }
  const home = join(TMP, 'home');
  const file = join(home, 'mambaout_femto.pth');
  spawnSync('mkdir', ['-p', home]);
  copyFileSync(femto, file);
  const ok = cli('predict', [fixture('photos/chelsea.jpg'), '--model', 'mambaout_femto', '--pretrained', '--json'], { MAMBAOUT_HOME: home });
  assert.equal(ok.status, 0, ok.stderr);
  const [pred] = JSON.parse(ok.stdout);
  assert.equal(pred.topk.length, 5);
  assert.match(readFileSync(`${file}.sha256`, 'utf8'), /^[0-9a-f]{64} \d+\n$/);
  appendFileSync(file, Buffer.from([0]));
  const bad = cli('predict', [fixture('photos/chelsea.jpg'), '--model', 'mambaout_femto', '--pretrained'], { MAMBAOUT_HOME: home });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /changed since they were verified/);
  // a file of the wrong model is refused by the strict check
  const wrong = cli('predict', [fixture('photos/chelsea.jpg'), '--model', 'mambaout_femto', '--pretrained-path', fixture('micro.pth')]);
  assert.notEqual(wrong.status, 0);
  assert.match(wrong.stderr, /does not fit mambaout_femto/);
});

test('mambaout-export: PyTorch-named safetensors equal to the source weights; ONNX graph gives the same logits', async () => {
  const { readSafetensors } = await import('../src/checkpoint/safetensors.js');
  const { loadCheckpoint } = await import('../src/checkpoint/load.js');
  const { OrtClassifier } = await import('../src/engine/onnxruntime.js');
  const st = join(TMP, 'micro_weights.safetensors');
  const r1 = cli('export', ['--model', 'mambaout_test', '--checkpoint', fixture('micro.pth'), '--format', 'safetensors', '-o', st]);
  assert.equal(r1.status, 0, r1.stderr);
  const exported = await readSafetensors(st);
  const orig = (await loadCheckpoint(fixture('micro.pth'))).stateDict;
  assert.deepEqual([...exported.keys()], [...orig.keys()], 'same names in state-dict order');
  for (const [k, t] of orig) {
    assert.deepEqual(exported.get(k)!.shape, t.shape, k);
    assert.deepEqual(Array.from(exported.get(k)!.data as Float32Array), Array.from(t.data as Float32Array), k);
  }
  const onnx = join(TMP, 'micro.onnx');
  const r2 = cli('export', ['--model', 'mambaout_test', '--checkpoint', fixture('micro.pth'), '--format', 'onnx', '-o', onnx]);
  assert.equal(r2.status, 0, r2.stderr);
  const io = await readSafetensors(fixture('micro_io.safetensors'));
  const x = io.get('input_nchw')!;
  const ort = await OrtClassifier.create(onnx);
  const logits = await ort.run(x.data as Float32Array, x.shape[0], x.shape[2], x.shape[3]);
  ort.dispose();
  const ref = io.get('logits')!.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(logits[i] - ref[i]));
  assert.ok(worst <= 1e-4, `ONNX logits differ from PyTorch by ${worst}`);
  const bad = cli('export', ['--model', 'mambaout_femto', '--checkpoint', fixture('micro.pth'), '--format', 'onnx', '-o', onnx]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--model mambaout_femto conflicts with the checkpoint .*micro\.pth, which holds a mambaout_test model/);
});

test('predict and demo parse with the shared parser: every input collected, no -c, numbers must be finite', () => {
  const predict = (argv: string[]) =>
    parseArgs({ scriptName: 'p', usage: '', flags: PREDICT_FLAGS, positionals: [{ name: 'inputs', describe: '', type: 'string', variadic: true }], argv, config: false, parserConfig: { 'parse-positional-numbers': false, 'camel-case-expansion': false }, finiteNumbers: true }).args;
  const a = predict(['a.jpg', '--topk', '3', 'dir', '1e3', '--json']);
  assert.deepEqual(a.inputs, ['a.jpg', 'dir', '1e3']);
  assert.equal(a.topk, 3);
  assert.equal(a.json, '');
  assert.equal(a.config, undefined);
  assert.throws(() => predict(['-c', 'x.yaml']), /unknown option -c/);
  assert.throws(() => predict(['--threads', 'Infinity']), /--threads expects a number/);
  const demo = (argv: string[]) =>
    parseArgs({ scriptName: 'd', usage: '', flags: DEMO_FLAGS, positionals: [], argv, config: false, finiteNumbers: true, unexpectedHint: 'the demo takes images through its web page' });
  assert.throws(() => demo(['x.jpg']), /^UserError: unexpected argument 'x.jpg'; the demo takes images through its web page$/);
});

test('the launcher takes its own flags out wherever they stand and passes the rest on unparsed', () => {
  const { launcher, nproc, rest } = splitLauncherArgs(['2', 'data', '--nnodes=2', '-b', '64', '--node_rank', '1', '--lr', '4e-3', '--gpu-isolation', 'none'], LAUNCHER_FLAGS);
  assert.equal(nproc, 2);
  assert.deepEqual(launcher, { nnodes: '2', node_rank: '1', gpu_isolation: 'none' });
  assert.deepEqual(rest, ['data', '-b', '64', '--lr', '4e-3']);
  assert.equal(splitLauncherArgs(['data', '2'], LAUNCHER_FLAGS).nproc, null, 'NUM_GPUS only first');
  assert.throws(() => splitLauncherArgs(['--master-port'], LAUNCHER_FLAGS), /--master-port needs a value/);
});
