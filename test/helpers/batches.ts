/** Fixed uint8 batches and a loader stand-in, for the prefetch tests (test/prefetch.test.ts, test/webgpu.test.ts). */
import type { Batch, DataLoader } from '../../src/data/loader.js';
import type { Rng } from '../../src/utils/rng.js';

/** A loader stand-in that yields the given batches every epoch. */
export function fakeLoader(batches: Batch<Uint8Array>[]): DataLoader<Uint8Array> {
  return {
    batchSize: batches[0].shape[0],
    length: batches.length,
    setEpoch: () => undefined,
    async *[Symbol.asyncIterator]() {
      yield* batches;
    },
  } as unknown as DataLoader<Uint8Array>;
}

/** Random pixels with a saturated run at each end (so that mixing reaches 0 and 255), random labels. */
export function randomBatch(rng: Rng, n: number, H: number, W: number, classes: number): Batch<Uint8Array> {
  const images = new Uint8Array(n * H * W * 3);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextU32() & 255;
  images.fill(255, 0, 50);
  images.fill(0, images.length - 50);
  const labels = Int32Array.from({ length: n }, () => rng.randrange(0, classes));
  return { images, shape: [n, H, W, 3], labels, paths: [], indices: [], skipped: [] };
}
