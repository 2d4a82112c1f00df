/**
 * src/settings.ts: every MAMBAOUT_* variable is read there and nowhere else; each setting reads its variable when
 * asked, falls back to its documented default, writes the variable when assigned, and a bad value is one sentence
 * naming the variable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { settings, SETTING_VARIABLES, type SettingName } from '../src/settings.js';
import { UserError } from '../src/errors.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Files of the branches still at work when the settings module came (issue 18, part 1) that read a variable
 * directly (some only on those branches yet); part 2 switches them and empties this list. A direct read in any
 * other file fails the test below.
 */
const KNOWN_DIRECT_READS = new Set([
  'src/backend/webgpu.ts', // MAMBAOUT_WEBGPU_ADAPTER (branch webgpu)
  'src/backend/kernels/webgpu/ops.ts', // MAMBAOUT_WEBGPU_FUSED (branch webgpu, which replaces it by settings.ts below)
  'src/backend/kernels/webgpu/settings.ts', // MAMBAOUT_WEBGPU_FUSED, _KERNELS, _OFF (branch webgpu)
  'src/backend/kernels/webgpu/matmul_tiles.ts', // MAMBAOUT_GEMM_RULES (branch webgpu2)
  'src/data/transforms/train.ts', // MAMBAOUT_NO_SHRINK_ON_LOAD (branch loader)
]);

function withEnv(name: SettingName, value: string | undefined, fn: () => void): void {
  const v = SETTING_VARIABLES[name];
  const saved = process.env[v];
  if (value === undefined) delete process.env[v];
  else process.env[v] = value;
  try {
    fn();
  } finally {
    if (saved === undefined) delete process.env[v];
    else process.env[v] = saved;
  }
}

test('no file but src/settings.ts reads a MAMBAOUT_* variable from process.env', () => {
  const walk = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(`${dir}/${e.name}`) : /\.(ts|mjs)$/.test(e.name) ? [`${dir}/${e.name}`] : []);
  const files = ['src', 'bin', 'test', 'scripts'].flatMap(walk).filter((f) => f !== 'src/settings.ts' && f !== 'test/settings.test.ts');
  const readers: string[] = [];
  for (const f of files) {
    const src = readFileSync(join(ROOT, f), 'utf8');
    if (/process\.env(\.MAMBAOUT_|\[\s*['"`]MAMBAOUT_)/.test(src) && !KNOWN_DIRECT_READS.has(f)) readers.push(f);
  }
  assert.deepEqual(readers, [], 'read these through src/settings.ts');
});

test('unset or blank variables give the documented defaults', () => {
  const names = Object.keys(SETTING_VARIABLES) as SettingName[];
  const saved = names.map((n) => process.env[SETTING_VARIABLES[n]]);
  for (const n of names) delete process.env[SETTING_VARIABLES[n]];
  try {
    assert.equal(settings.backend, 'auto');
    assert.equal(settings.webgpuAdapter, undefined);
    assert.equal(settings.webgpuFused, true);
    assert.equal(settings.home, join(homedir(), '.cache', 'mambaout'));
    assert.equal(settings.maxImagePixels, undefined);
    assert.equal(settings.distTransport, 'auto');
    assert.equal(settings.distShmDir, '/dev/shm');
    assert.equal(settings.distNoSimd, false);
    assert.equal(settings.debug, false);
    assert.equal(settings.gpuTests, false);
    assert.equal(settings.installTest, false);
    assert.equal(settings.installNode, process.execPath);
    withEnv('webgpuAdapter', ' ', () => assert.equal(settings.webgpuAdapter, undefined));
    withEnv('maxImagePixels', '', () => assert.equal(settings.maxImagePixels, undefined));
    withEnv('distTransport', ' ', () => assert.equal(settings.distTransport, 'auto'));
    withEnv('home', '', () => assert.equal(settings.home, join(homedir(), '.cache', 'mambaout')));
  } finally {
    names.forEach((n, i) => {
      if (saved[i] === undefined) delete process.env[SETTING_VARIABLES[n]];
      else process.env[SETTING_VARIABLES[n]] = saved[i];
    });
  }
});

test('each setting reads its variable when asked, and assigning it writes the variable', () => {
  withEnv('webgpuAdapter', '3', () => assert.equal(settings.webgpuAdapter, 3));
  withEnv('maxImagePixels', '1000', () => assert.equal(settings.maxImagePixels, 1000));
  withEnv('distTransport', 'tcp', () => assert.equal(settings.distTransport, 'tcp'));
  withEnv('webgpuFused', '0', () => assert.equal(settings.webgpuFused, false));
  withEnv('distNoSimd', '1', () => assert.equal(settings.distNoSimd, true));
  withEnv('debug', 'yes', () => assert.equal(settings.debug, true));
  withEnv('home', '/tmp/w', () => assert.equal(settings.home, '/tmp/w'));
  withEnv('backend', 'CPU', () => assert.equal(settings.backend, 'CPU'));
  withEnv('maxImagePixels', undefined, () => {
    settings.maxImagePixels = 4096;
    assert.equal(process.env.MAMBAOUT_MAX_IMAGE_PIXELS, '4096');
    settings.maxImagePixels = undefined;
    assert.equal(process.env.MAMBAOUT_MAX_IMAGE_PIXELS, undefined);
  });
});

test('a bad value is a UserError naming the variable and the value', () => {
  withEnv('webgpuAdapter', '-1', () =>
    assert.throws(() => settings.webgpuAdapter, (e: unknown) => e instanceof UserError && e.message === "MAMBAOUT_WEBGPU_ADAPTER='-1' is not a non-negative integer"));
  withEnv('maxImagePixels', '1e3.5', () =>
    assert.throws(() => settings.maxImagePixels, (e: unknown) => e instanceof UserError && e.message === "MAMBAOUT_MAX_IMAGE_PIXELS='1e3.5' is not a positive whole number of pixels"));
  withEnv('distTransport', 'rdma', () =>
    assert.throws(() => settings.distTransport, (e: unknown) => e instanceof UserError && e.message === "MAMBAOUT_DIST_TRANSPORT must be auto, unix or tcp, got 'rdma'."));
});
