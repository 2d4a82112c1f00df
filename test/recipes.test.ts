/**
 * The paper's recipes: scripts/train_mambaout_*.sh pass the MambaOut flags (global batch 4096) to
 * mambaout-distributed-train, and configs/mambaout_*.yaml resolve to the same settings through `-c`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { dir: TMP, cleanup } = tempDir('mambaout-recipes-');
process.on('exit', cleanup);
const DROP: Record<string, number> = { femto: 0.025, kobe: 0.025, tiny: 0.2, small: 0.4, base: 0.6 };

// A stand-in for the compiled launcher that prints the arguments it was given.
mkdirSync(join(TMP, 'dist', 'bin'), { recursive: true });
writeFileSync(join(TMP, 'dist', 'bin', 'distributed_train.js'), 'console.log(JSON.stringify(process.argv.slice(2)));\n');

function run(size: string, env: Record<string, string>): string[] {
  const r = spawnSync('bash', [join(ROOT, 'scripts', `train_mambaout_${size}.sh`), '--seed', '7'], { encoding: 'utf8', env: { ...process.env, CODE_PATH: TMP, DATA_PATH: '/data/imagenet', ...env } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('train_mambaout_*.sh: 8 GPUs x batch 128 x accumulation 4 = 4096, lr 4e-3, warmup 20, drop path per size', () => {
  for (const [size, dp] of Object.entries(DROP)) {
    assert.deepEqual(run(size, {}), ['8', '/data/imagenet', '--model', `mambaout_${size}`, '--opt', 'adamw', '--lr', '4e-3', '--warmup-epochs', '20', '-b', '128', '--grad-accum-steps', '4', '--drop-path', String(dp), '--seed', '7']);
  }
  // fewer GPUs keep the global batch: 2 GPUs x 4 accumulation -> 512 per GPU; 4 GPUs x 8 -> 128
  assert.equal(run('tiny', { NUM_GPU: '2' })[11], '512');
  const a = run('tiny', { NUM_GPU: '4', GRAD_ACCUM_STEPS: '8' });
  assert.deepEqual([a[0], a[11], a[13]], ['4', '128', '8']);
  const bad = spawnSync('bash', [join(ROOT, 'scripts', 'train_mambaout_tiny.sh')], { encoding: 'utf8', env: { ...process.env, CODE_PATH: TMP, NUM_GPU: '3' } });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /not divisible/);
});

test('configs/mambaout_*.yaml give the recipe through -c, and CLI flags still override', () => {
  for (const [size, dp] of Object.entries(DROP)) {
    const argv = ['/data', '-c', join(ROOT, 'configs', `mambaout_${size}.yaml`), '--seed', '3'];
    const { args, unknownConfigKeys } = parseArgs({ scriptName: 't', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }], argv });
    assert.deepEqual(unknownConfigKeys, []);
    assert.equal(args.model, `mambaout_${size}`);
    assert.equal(args.drop_path, dp);
    assert.equal(args.lr, 0.004);
    assert.equal(args.warmup_epochs, 20);
    assert.equal(args.batch_size, 128);
    assert.equal(args.grad_accum_steps, 4);
    assert.equal(args.epochs, 300);
    assert.equal(args.cooldown_epochs, 10);
    assert.equal(args.aa, 'rand-m9-mstd0.5-inc1');
    assert.equal(args.mixup, 0.8);
    assert.equal(args.cutmix, 1.0);
    assert.equal(args.seed, 3);
  }
  // flags not in the YAML keep train.py's defaults
  const { args } = parseArgs({ scriptName: 't', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }], argv: ['/d', '-c', join(ROOT, 'configs', 'mambaout_femto.yaml'), '--lr', '1e-3'] });
  assert.equal(args.lr, 0.001);
  assert.equal(args.smoothing, 0.1);
  assert.equal(args.model_ema_decay, 0.9998);
  assert.equal(args.checkpoint_hist, 10);
});

test('train.py defaults (MambaOut copy) without a config', () => {
  const { args } = parseArgs({ scriptName: 't', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }], argv: ['/d'] });
  const want: Record<string, unknown> = {
    opt: 'adamw', weight_decay: 0.05, lr: 0.05, warmup_lr: 1e-6, min_lr: 1e-5, warmup_epochs: 5, epochs: 300, cooldown_epochs: 10,
    aa: 'rand-m9-mstd0.5-inc1', reprob: 0.25, remode: 'pixel', mixup: 0.8, cutmix: 1.0, smoothing: 0.1, workers: 8, batch_size: 128,
    sched: 'cosine', train_interpolation: 'random', mixup_mode: 'batch', mixup_switch_prob: 0.5, seed: 42, log_interval: 50, eval_metric: 'top1',
    grad_accum_steps: 1, model_ema_decay: 0.9998, hflip: 0.5, clip_mode: 'norm', momentum: 0.9, train_split: 'train', val_split: 'validation',
  };
  for (const [k, v] of Object.entries(want)) assert.deepEqual(args[k], v, k);
  assert.deepEqual(args.scale, [0.08, 1.0]);
  assert.equal(args.drop_path, null);
  assert.equal(args.clip_grad, null);
});
