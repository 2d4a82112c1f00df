/**
 * A user's install. Always: with onnxruntime-node missing, predict says so once with the command that fixes it and
 * still answers (tfjs). With MAMBAOUT_INSTALL_TEST=1 (CI): `npm pack`, then `npm install ./mambaout-<v>.tgz` into a
 * fresh project with no flags and no .npmrc, on the Node of MAMBAOUT_INSTALL_NODE (a node binary; default: this
 * one): exit 0 without engine/config/deprecation warnings, onnxruntime-node present without any CUDA provider and
 * used by predict, `--version` on every bin, import() and require() of the package.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixture, tempDir } from './helpers.js';
import { settings } from '../src/settings.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };
const PHOTOS = [fixture('photos/chelsea.jpg'), fixture('photos/coffee.jpg')];
const MODEL_ARGS = ['--model', 'mambaout_test', '--checkpoint', fixture('micro.pth'), '--img-size', '64', '--num-classes', '10'];

test('without onnxruntime-node, predict warns once with the install command and answers through tfjs', () => {
  const run = (extra: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', '--import', './test/helpers/hide_onnxruntime.mjs', 'bin/predict.ts', ...PHOTOS, ...MODEL_ARGS, ...extra], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, MAMBAOUT_BACKEND: 'cpu' },
    });
  const r = run(['--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).length, 2, 'both images classified');
  const notices = r.stderr.split('\n').filter((l) => l.includes('onnxruntime-node is not installed'));
  assert.equal(notices.length, 1, r.stderr);
  assert.match(notices[0], /`npm install onnxruntime-node@~1\.16\.3` installs it/);
  assert.match(notices[0], /inference runs on tfjs/);
  const forced = run(['--engine', 'onnxruntime']);
  assert.equal(forced.status, 2, forced.stderr);
  assert.match(forced.stderr, /^error: onnxruntime-node is not installed; `npm install onnxruntime-node@~1\.16\.3` installs it/m);
});

/** Environment for a user's shell: no npm_* variables of the `npm test` running us, the chosen node first on PATH. */
function userEnv(nodeBin: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD' && k !== 'NODE_OPTIONS') env[k] = v;
  env.PATH = [dirname(nodeBin), env.PATH ?? ''].join(delimiter);
  return env;
}

test('npm install of the packed tarball into a fresh project: clean, engine present and used, bins, import and require', { skip: !settings.installTest && 'set MAMBAOUT_INSTALL_TEST=1 (CI does)', timeout: 600_000 }, () => {
  const node = settings.installNode;
  const env = userEnv(node);
  const tmp = tempDir('mambaout-install-');
  try {
    const sh = (cmd: string, args: string[], opts: SpawnSyncOptions = {}) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 300_000, ...opts });
      return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
    };
    const version = sh(node, ['--version']).stdout.trim();
    const pack = sh('npm', ['pack', '--pack-destination', tmp.dir], { cwd: ROOT });
    assert.equal(pack.status, 0, pack.stderr);
    const tgz = join(tmp.dir, `mambaout-${PKG.version}.tgz`);
    assert.ok(existsSync(tgz), pack.stdout);

    const proj = join(tmp.dir, 'project');
    spawnSync('mkdir', [proj]);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', private: true }));
    const t0 = Date.now();
    const inst = sh('npm', ['install', tgz], { cwd: proj });
    console.log(`# node ${version}: npm install took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(inst.status, 0, inst.stderr);
    for (const bad of [/EBADENGINE/, /Unknown (project|user|global|env) config/, /npm warn deprecated/]) {
      assert.doesNotMatch(inst.stderr, bad, inst.stderr);
    }

    // The CPU engine is there, from the registry tarball alone: no CUDA provider was downloaded or installed.
    const ortDir = join(proj, 'node_modules/onnxruntime-node');
    const ort = JSON.parse(readFileSync(join(ortDir, 'package.json'), 'utf8')) as { version: string; scripts?: Record<string, string> };
    assert.match(ort.version, /^1\.16\./);
    assert.equal(ort.scripts?.postinstall ?? ort.scripts?.install, undefined, 'no install script');
    const files = (readdirSync(ortDir, { recursive: true }) as string[]).filter((f) => /providers_(cuda|tensorrt)/.test(f));
    assert.deepEqual(files, []);

    // Every bin answers --version; `mambaout` dispatches.
    for (const bin of Object.keys(PKG.bin)) {
      const r = sh(join(proj, 'node_modules/.bin', bin), ['--version']);
      assert.equal(r.status, 0, `${bin}: ${r.stderr}`);
      assert.equal(r.stdout, `mambaout ${PKG.version}\n`, bin);
      assert.equal(r.stderr, '', `${bin} --version printed on stderr`);
    }

    // import() and require() from the user's own code, with no warning.
    const imp = sh(node, ['--input-type=module', '-e', "const m = await import('mambaout'); console.log(typeof m.createModel, m.MODEL_NAMES.length, m.VERSION)"], { cwd: proj });
    assert.equal(imp.status, 0, imp.stderr);
    assert.equal(imp.stdout.trim(), `function 6 ${PKG.version}`);
    assert.equal(imp.stderr, '');
    const req = sh(node, ['-e', "const m = require('mambaout'); console.log(typeof m.createModel, m.MODEL_NAMES.length, m.VERSION)"], { cwd: proj });
    assert.equal(req.status, 0, req.stderr);
    assert.equal(req.stdout.trim(), `function 6 ${PKG.version}`);
    assert.equal(req.stderr, '');

    // predict runs on onnxruntime (engine auto on a CPU machine).
    const ckpt = join(proj, 'micro.pth');
    copyFileSync(fixture('micro.pth'), ckpt);
    const pred = sh(join(proj, 'node_modules/.bin/mambaout'), ['predict', PHOTOS[0], ...MODEL_ARGS.map((a) => (a === fixture('micro.pth') ? ckpt : a))], {
      cwd: proj,
      env: { ...env, MAMBAOUT_BACKEND: 'cpu' },
    });
    assert.equal(pred.status, 0, pred.stderr);
    assert.match(pred.stderr, /engine: onnxruntime-node 1\.16\./);
    assert.equal(pred.stdout.trim().split('\n').length, 6, pred.stdout);
  } finally {
    tmp.cleanup();
  }
});
