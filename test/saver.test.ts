/**
 * CheckpointSaver (timm §8.3): last, top-N checkpoint-<epoch> by metric, model_best as a hard link of last,
 * decreasing metrics (eval loss), recovery files (current + previous kept); and the training checkpoint format.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointSaver, readTrainCheckpoint, type TrainCheckpoint } from '../src/checkpoint/saver.js';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { tempDir } from './helpers.js';

function ck(v: number): TrainCheckpoint {
  return {
    epoch: 0, arch: 'mambaout_test', version: 2, args: { lr: 0.1 },
    stateDict: new Map([['w', { dtype: 'float32', shape: [2], data: new Float32Array([v, -v]) }]]),
    stateDictEma: new Map([['w', { dtype: 'float32', shape: [2], data: new Float32Array([v / 2, -v / 2]) }]]),
    optimizer: { tensors: new Map([['0.exp_avg', { dtype: 'float32', shape: [2], data: new Float32Array([1, 2]) }]]), meta: { optimizer: 'adamw', param_groups: [] } },
    extra: { note: 'x' },
  };
}

test('keeps the best N checkpoints by top-1, links model_best to the best epoch', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const logs: string[] = [];
    const saver = new CheckpointSaver(dir, 3, false, (m) => logs.push(m));
    const metrics = [10, 30, 20, 5, 40, 25];
    for (let e = 0; e < metrics.length; e++) await saver.saveCheckpoint(e, ck(e), metrics[e]);
    const files = readdirSync(dir).sort();
    assert.deepEqual(files, ['checkpoint-1.safetensors', 'checkpoint-4.safetensors', 'checkpoint-5.safetensors', 'last.safetensors', 'model_best.safetensors']);
    assert.deepEqual(saver.checkpointFiles.map(([f, m]) => [f.split('/').pop(), m]), [['checkpoint-4.safetensors', 40], ['checkpoint-1.safetensors', 30], ['checkpoint-5.safetensors', 25]]);
    assert.equal(saver.bestEpoch, 4);
    const best = await readTrainCheckpoint(join(dir, 'model_best.safetensors'));
    assert.equal(best.epoch, 4);
    assert.equal(best.metric, 40);
    assert.deepEqual(Array.from(best.stateDict.get('w')!.data as Float32Array), [4, -4]);
    assert.equal(statSync(join(dir, 'checkpoint-5.safetensors')).ino, statSync(join(dir, 'last.safetensors')).ino, 'hard link as in timm');
    assert.ok(logs.some((l) => l.startsWith('Current checkpoints:')));
    // validate --use-ema reads the EMA weights from our format; plain reads the model weights
    assert.deepEqual(Array.from((await loadCheckpoint(join(dir, 'last.safetensors'), { useEma: true })).stateDict.get('w')!.data as Float32Array), [2.5, -2.5]);
    assert.deepEqual(Array.from((await loadCheckpoint(join(dir, 'last.safetensors'))).stateDict.get('w')!.data as Float32Array), [5, -5]);
  } finally {
    cleanup();
  }
});

test('decreasing metric (eval loss): lower is better', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const saver = new CheckpointSaver(dir, 2, true);
    for (const [e, m] of [[0, 2.0], [1, 1.5], [2, 1.8], [3, 1.2]] as const) await saver.saveCheckpoint(e, ck(e), m);
    assert.deepEqual(saver.checkpointFiles.map(([f]) => f.split('/').pop()), ['checkpoint-3.safetensors', 'checkpoint-1.safetensors']);
    assert.equal(saver.bestEpoch, 3);
  } finally {
    cleanup();
  }
});

test('recovery files: the current and the previous one are kept', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const saver = new CheckpointSaver(dir, 10, false);
    await saver.saveRecovery(0, 9, ck(1));
    await saver.saveRecovery(0, 19, ck(2));
    await saver.saveRecovery(1, 9, ck(3));
    assert.deepEqual(readdirSync(dir).sort(), ['recovery-0-19.safetensors', 'recovery-1-9.safetensors']);
    const r = await readTrainCheckpoint(join(dir, 'recovery-1-9.safetensors'));
    assert.deepEqual(r.extra, { note: 'x' });
    assert.equal(r.optimizer!.tensors.size, 1);
  } finally {
    cleanup();
  }
});
