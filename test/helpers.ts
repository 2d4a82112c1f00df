/** Shared test helpers: fixture paths, tensor comparisons. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors } from '../src/checkpoint/safetensors.js';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
/** ../shared/fixtures seen from the repository root (large femto fixtures live only there). */
export const SHARED_FIXTURES = fileURLToPath(new URL('../../shared/fixtures/', import.meta.url));

export function fixture(name: string): string {
  return join(FIXTURES, name);
}

export function sharedFixture(name: string): string | null {
  const p = join(SHARED_FIXTURES, name);
  return existsSync(p) ? p : null;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** NCHW -> NHWC for a float array. */
export function nchwToNhwc(data: Float32Array, n: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let ch = 0; ch < c; ch++) out[((b * h + y) * w + x) * c + ch] = data[((b * c + ch) * h + y) * w + x];
  return out;
}

export function tempDir(prefix = 'mambaout-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The micro model's PyTorch fixture (micro_io.safetensors: input, labels, logits, loss, gradients), with the input
 * as NHWC and the labels as numbers.
 */
export async function microIo() {
  const io = await readSafetensors(fixture('micro_io.safetensors'));
  const inp = io.get('input_nchw')!;
  const [N, C, H, W] = inp.shape;
  const inputNhwc = nchwToNhwc(inp.data as Float32Array, N, C, H, W);
  const labels = Array.from(io.get('labels')!.data as BigInt64Array, Number);
  return { io, N, C, H, W, inputNhwc, labels };
}
