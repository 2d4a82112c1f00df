/**
 * mambaout-distributed-train on the cpu backend: W workers with batch B equal one process with batch W·B (same data
 * order), and a worker killed mid-epoch stops the job cleanly with the last checkpoint intact and resumable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { maxAbs, maxAbsDiff, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TRAIN = join(ROOT, 'bin', 'train.ts');
const DIST = join(ROOT, 'bin', 'distributed_train.ts');
const { dir: TMP, cleanup } = tempDir('mambaout-dist-train-test-');
process.on('exit', cleanup);
const data = (await makeTinyImagenet({ root: join(TMP, 'data'), classes: 2, trainPerClass: 12, valPerClass: 3, minSide: 36, maxSide: 60, seed: 9 })).root;

const COMMON = ['--model', 'mambaout_test', '--img-size', '32', '--backend', 'cpu', '-j', '0', '--epochs', '1', '--warmup-epochs', '0', '--cooldown-epochs', '0',
  '--no-aug', '--reprob', '0', '--mixup', '0', '--cutmix', '0', '--smoothing', '0', '--opt', 'momentum', '--momentum', '0.9', '--weight-decay', '0', '--lr', '0.2',
  '--output', TMP];

function node(args: string[], timeout = 240_000) {
  return spawnSync(process.execPath, ['--import', 'tsx', ...args], { cwd: ROOT, encoding: 'utf8', timeout });
}

for (const world of [2, 3]) {
  test(`${world} workers with batch 4 give the weights of 1 process with batch ${4 * world}`, async () => {
    const single = node([TRAIN, data, ...COMMON, '-b', String(4 * world), '--experiment', `single${world}`]);
    assert.equal(single.status, 0, single.stderr);
    const dist = node([DIST, String(world), data, ...COMMON, '-b', '4', '--experiment', `dist${world}`]);
    assert.equal(dist.status, 0, dist.stderr + dist.stdout);
    assert.match(dist.stdout, new RegExp(`Training in distributed mode with multiple processes, 1 device per process\\. Process 0, total ${world}\\.`));
    assert.match(dist.stdout, new RegExp(`Total batch size: ${4 * world}`));
    const a = await readTrainCheckpoint(join(TMP, `single${world}`, 'last.safetensors'));
    const b = await readTrainCheckpoint(join(TMP, `dist${world}`, 'last.safetensors'));
    const init = (await readTrainCheckpoint(join(TMP, `single${world}`, 'last.safetensors'))).stateDict;
    let worst = 0;
    for (const [k, t] of a.stateDict) {
      const d = maxAbsDiff(t.data as Float32Array, b.stateDict.get(k)!.data as Float32Array);
      worst = Math.max(worst, d / Math.max(maxAbs(init.get(k)!.data as Float32Array), 1e-3));
    }
    assert.ok(worst < 1e-4, `weights differ (relative ${worst})`);
    // the run did train: 24 images / global batch -> several updates moved the weights away from a fresh init
    assert.equal(a.epoch, 0);
  });
}

test('a worker killed mid-epoch stops the job with a message naming the rank; the last checkpoint resumes', async () => {
  const exp = join(TMP, 'killed');
  const child = spawn(process.execPath, ['--import', 'tsx', DIST, '2', data, ...COMMON.filter((a) => a !== '--epochs' && a !== '1'), '--epochs', '50', '-b', '4', '--experiment', 'killed'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.resume();
  // wait for the first checkpoint, then kill rank 1 (the second worker process)
  const started = Date.now();
  while (!existsSync(join(exp, 'last.safetensors'))) {
    if (Date.now() - started > 180_000) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(existsSync(join(exp, 'last.safetensors')), 'first checkpoint written');
  const kids = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(child.pid)], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0]);
  assert.equal(kids.length, 2, 'two workers');
  // workers are spawned in rank order
  process.kill(Number(kids[1]), 'SIGKILL');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.notEqual(code, 0);
  assert.match(stderr, /rank 1 was killed by SIGKILL/);
  assert.doesNotMatch(stderr, /\n\s+at /);
  const last = await readTrainCheckpoint(join(exp, 'last.safetensors'));
  const resumed = node([TRAIN, data, ...COMMON.filter((a) => a !== '--epochs' && a !== '1'), '--epochs', String(last.epoch + 2), '-b', '8', '--experiment', 'killed-resumed', '--resume', join(exp, 'last.safetensors')]);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.equal((await readTrainCheckpoint(join(TMP, 'killed-resumed', 'last.safetensors'))).epoch, last.epoch + 1);
});

test('GPU isolation: workers start under unshare with the other GPUs\' device nodes covered', async () => {
  const { workerCommand, canIsolateGpus, nvidiaDeviceNodes } = await import('../src/distributed/launcher.js');
  assert.deepEqual(workerCommand(['x.js', '--a'], 0, 'none'), [process.execPath, ['x.js', '--a']]);
  const [cmd, args] = workerCommand(['x.js'], 1, 'mount');
  assert.equal(cmd, 'unshare');
  assert.deepEqual(args.slice(0, 3), ['-m', 'sh', '-c']);
  const hidden = nvidiaDeviceNodes().filter((_, i) => i !== 1);
  assert.equal(args[3], hidden.map((d) => `mount --bind /dev/null ${d} || exit 97; `).join('') + 'exec "$@"');
  assert.deepEqual(args.slice(4), ['sh', process.execPath, 'x.js']);
  // on a machine without NVIDIA device nodes there is nothing to isolate
  if (nvidiaDeviceNodes().length < 2) assert.equal(canIsolateGpus(2).ok, false);
});
