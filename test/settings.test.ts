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
    if (/process\.env(\.MAMBAOUT_|\[\s*['"`]MAMBAOUT_)/.test(src)) readers.push(f);
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
    assert.equal(settings.webgpuKernels, 'current');
    assert.deepEqual(settings.webgpuOff, []);
    assert.equal(settings.webgpuAmp, false);
    assert.deepEqual(settings.dawnFlags, []);
    assert.equal(settings.gemmRules, 'current');
    assert.equal(settings.noShrinkOnLoad, false);
    assert.equal(settings.regionDecode, 'on');
    assert.equal(settings.home, join(homedir(), '.cache', 'mambaout'));
    assert.equal(settings.maxImagePixels, undefined);
    assert.equal(settings.distTransport, 'auto');
    assert.equal(settings.distCompress, 'none');
    assert.equal(settings.distTransfer, 'auto');
    assert.equal(settings.distHandoff, 'auto');
    assert.equal(settings.distHold, 'auto');
    assert.equal(settings.distThreads, 'auto');
    assert.equal(settings.distBucketMb, 2);
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
  withEnv('webgpuKernels', ' V1 ', () => assert.equal(settings.webgpuKernels, 'v1'));
  withEnv('webgpuOff', 'gemm, adamMulti,,fused', () => assert.deepEqual(settings.webgpuOff, ['gemm', 'adamMulti', 'fused']));
  withEnv('webgpuAmp', '1', () => assert.equal(settings.webgpuAmp, true));
  withEnv('dawnFlags', ' enable-dawn-features=skip_validation  backend=vulkan ', () =>
    assert.deepEqual(settings.dawnFlags, ['enable-dawn-features=skip_validation', 'backend=vulkan']));
  withEnv('gemmRules', 'phase1', () => assert.equal(settings.gemmRules, 'phase1'));
  withEnv('noShrinkOnLoad', '1', () => assert.equal(settings.noShrinkOnLoad, true));
  withEnv('regionDecode', 'off', () => assert.equal(settings.regionDecode, 'off'));
  withEnv('distCompress', 'bf16', () => assert.equal(settings.distCompress, 'bf16'));
  withEnv('distTransfer', 'staged', () => assert.equal(settings.distTransfer, 'staged'));
  withEnv('distHandoff', 'memcpy', () => assert.equal(settings.distHandoff, 'memcpy'));
  withEnv('distHold', 'off', () => assert.equal(settings.distHold, 'off'));
  withEnv('distThreads', '0', () => assert.equal(settings.distThreads, 0));
  withEnv('distBucketMb', '0.5', () => assert.equal(settings.distBucketMb, 0.5));
  withEnv('webgpuOff', undefined, () => {
    settings.webgpuOff = ['gemm', 'gateConv'];
    assert.equal(process.env.MAMBAOUT_WEBGPU_OFF, 'gemm,gateConv');
    settings.webgpuOff = [];
    assert.equal(process.env.MAMBAOUT_WEBGPU_OFF, undefined);
  });
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
  const bad: Array<[SettingName, string, string]> = [
    ['webgpuKernels', 'v2', "MAMBAOUT_WEBGPU_KERNELS='v2' is not v1 or current"],
    ['webgpuOff', 'gemm,gemv', "MAMBAOUT_WEBGPU_OFF='gemm,gemv' names 'gemv', which is not one of fused, gemm, linearEpilogue, layerNormGelu, adamMulti, convBackpropInput, convForward, gateConv, bindGroupCache, directUpload, uniformCache, poolAffinity, gradSlots"],
    ['gemmRules', 'phase2', "MAMBAOUT_GEMM_RULES must be current or phase1, got 'phase2'."],
    ['regionDecode', 'yes', "MAMBAOUT_REGION_DECODE must be on, off or poison, got 'yes'."],
    ['distCompress', 'fp16', "MAMBAOUT_DIST_COMPRESS must be none or bf16, got 'fp16'."],
    ['distTransfer', 'fast', "MAMBAOUT_DIST_TRANSFER must be auto, staged or tfjs, got 'fast'."],
    ['distHandoff', 'file', "MAMBAOUT_DIST_HANDOFF must be auto or memcpy, got 'file'."],
    ['distHold', 'on', "MAMBAOUT_DIST_HOLD must be auto or off, got 'on'."],
    ['distThreads', '65', "MAMBAOUT_DIST_THREADS must be auto or a whole number from 0 to 64, got '65'."],
    ['distBucketMb', 'big', "MAMBAOUT_DIST_BUCKET_MB must be a number of MiB between 0 and 1024, got 'big'."],
  ];
  for (const [name, value, message] of bad) {
    withEnv(name, value, () => assert.throws(() => settings[name], (e: unknown) => e instanceof UserError && e.message === message, `${name}=${value}`));
  }
});

test('a table filled from the settings on first use reads the environment then, not at import', async () => {
  const { fromSettingsOnFirstUse } = await import('../src/settings.js');
  let made = 0;
  const t = fromSettingsOnFirstUse<{ rules: string; n: number }>(['rules', 'n'], () => (made++, { rules: settings.gemmRules, n: 1 }));
  assert.equal(made, 0);
  withEnv('gemmRules', 'phase1', () => assert.equal(t.rules, 'phase1'));
  assert.equal(made, 1);
  t.n = 5;
  assert.deepEqual({ ...t }, { rules: 'phase1', n: 5 });
  assert.equal(made, 1);
  const broken = fromSettingsOnFirstUse<{ rules: string }>(['rules'], () => ({ rules: settings.gemmRules }));
  withEnv('gemmRules', 'x', () => assert.throws(() => broken.rules, UserError));
});
