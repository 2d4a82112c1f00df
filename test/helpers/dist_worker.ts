/**
 * Worker process for test/dist.test.ts. Reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from the environment,
 * runs one scenario (argv[2]) and prints one JSON line to stdout as its last line.
 *
 * Scenarios:
 *   collectives  exact sums/averages over many lengths and bucket sizes, broadcast, scalars, async queueing;
 *                reports sha256 hashes of float results so the test can compare ranks bit for bit
 *   hang         rank $HANG_RANK stops participating; the others report the error of their allreduce
 *   die          rank $DIE_RANK exits(3) right after init; the others report their error
 *   mismatch     rank 1 passes a buffer one element longer; everyone reports the error
 *   dtype        rank 1 all-reduces bf16x2 words where rank 0 all-reduces float32; everyone reports the error
 *   close        rank 0 closes the group after a barrier; rank 1 reports the error of its next allreduce
 *   join         plain init (the test starts fewer ranks than WORLD_SIZE); reports the init error
 *   pool         all-reduce on a CommPool of 2 worker threads, two channels at once, float32 and bf16x2; reports whether
 *                the results equal the group's own all-reduce of the same data, bit for bit
 */
import { createHash } from 'node:crypto';
import { ProcessGroup, isDistError } from '../../src/distributed/group.js';
import { CommPool } from '../../src/distributed/pool.js';
import { Rng } from '../../src/utils/rng.js';

const scenario = process.argv[2];
const rank = Number(process.env.RANK);
const W = Number(process.env.WORLD_SIZE);
const timeoutMs = Number(process.env.DIST_TIMEOUT_MS ?? 20000);
const initTimeoutMs = Number(process.env.DIST_INIT_TIMEOUT_MS ?? 60000);

function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ rank, ...obj }) + '\n');
}

function errInfo(e: unknown): Record<string, unknown> {
  return isDistError(e)
    ? { error: e.message, culprit: e.rank, reason: e.reason, detectedBy: e.detectedBy }
    : { error: String((e as Error)?.message ?? e), culprit: null, reason: 'other' };
}

function hash(a: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');
}

/** Integer-valued test data of rank r (|x| <= 1000, so sums of <= 4 ranks are exact in float32). */
function intData(n: number, r: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 31 + r * 17 + 5) % 2001) - 1000;
  return a;
}

async function collectives(g: ProcessGroup): Promise<void> {
  const failures: string[] = [];
  const hashes: string[] = [];
  let checks = 0;
  const expectEq = (what: string, got: unknown, want: unknown): void => {
    checks++;
    if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  };

  // Exact sums and averages for awkward lengths and bucket sizes.
  const lengths = [0, 1, 3, 7, W - 1, W, W + 1, 4 * W + 3, 1_000_003];
  const bucketsFor = (n: number): (number | undefined)[] => (n > 100_000 ? [undefined, 400_004, 4 * 65_536 * W] : [undefined, 4, 12, 28, 4 * W]);
  for (const n of lengths) {
    for (const bucketBytes of bucketsFor(n)) {
      for (const op of ['sum', 'avg'] as const) {
        const a = intData(n, rank);
        await g.allreduce(a, { op, bucketBytes });
        let bad = -1;
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let r = 0; r < W; r++) s += ((i * 31 + r * 17 + 5) % 2001) - 1000;
          const want = op === 'avg' ? Math.fround(s / W) : s;
          if (a[i] !== want) {
            bad = i;
            break;
          }
        }
        checks++;
        if (bad >= 0) failures.push(`allreduce ${op} n=${n} bucket=${bucketBytes}: wrong value at ${bad}`);
        hashes.push(hash(a));
      }
    }
  }

  // Random floats: every rank must end with the same bits; the result is close to the float64 sum.
  for (const [n, bucketBytes] of [[65_537, 4096], [1_000_003, undefined]] as const) {
    const data = (r: number): Float32Array => {
      const rng = new Rng(1000 + r);
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = rng.normal(0, 1);
      return a;
    };
    const a = data(rank);
    await g.allreduce(a, { op: 'avg', bucketBytes });
    const others = Array.from({ length: W }, (_, r) => data(r));
    let maxErr = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (const o of others) s += o[i];
      maxErr = Math.max(maxErr, Math.abs(a[i] - s / W));
    }
    checks++;
    if (!(maxErr < 1e-5)) failures.push(`random allreduce n=${n}: max error ${maxErr}`);
    // Same call again gives the same bits (deterministic).
    const b = data(rank);
    await g.allreduce(b, { op: 'avg', bucketBytes });
    expectEq(`random allreduce n=${n} repeat`, hash(b), hash(a));
    hashes.push(hash(a));
  }

  // Broadcast from every root: float32 over several buckets (10 MB > 4 MiB default bucket), odd byte lengths.
  for (let root = 0; root < W; root++) {
    const big = new Float32Array(2_500_001);
    if (rank === root) for (let i = 0; i < big.length; i++) big[i] = (i % 977) * (root + 1) + 0.25;
    else big.fill(-1);
    await g.broadcast(big, root);
    let ok = true;
    for (let i = 0; i < big.length; i++) if (big[i] !== (i % 977) * (root + 1) + 0.25) ok = false;
    expectEq(`broadcast f32 root=${root}`, ok, true);
    const small = new Uint8Array(5);
    if (rank === root) small.set([1, 2, 3, 4, root]);
    await g.broadcast(small, root);
    expectEq(`broadcast u8 root=${root}`, Array.from(small), [1, 2, 3, 4, root]);
    const empty = new Float64Array(0);
    await g.broadcast(empty, root);
  }
  const obj = await g.broadcastObject(rank === W - 1 ? { out: 'train/20240101-000000-mambaout_femto', n: [1, 2] } : undefined, W - 1);
  expectEq('broadcastObject', obj, { out: 'train/20240101-000000-mambaout_femto', n: [1, 2] });

  // Scalars (metric reduction): float64, rank order.
  const vals = [rank, rank * 0.5 + 1, -rank, 1e-3 * (rank + 1)];
  const all = Array.from({ length: W }, (_, r) => [r, r * 0.5 + 1, -r, 1e-3 * (r + 1)]);
  const red = (f: (acc: number, v: number) => number, k: number): number => all.slice(1).reduce((acc, v) => f(acc, v[k]), all[0][k]);
  expectEq('scalars sum', await g.allreduceScalars(vals, 'sum'), vals.map((_, k) => red((a, v) => a + v, k)));
  expectEq('scalars avg', await g.allreduceScalars(vals, 'avg'), vals.map((_, k) => red((a, v) => a + v, k) / W));
  expectEq('scalars max', await g.allreduceScalars(vals, 'max'), vals.map((_, k) => red(Math.max, k)));
  expectEq('scalars min', await g.allreduceScalars(vals, 'min'), vals.map((_, k) => red(Math.min, k)));
  expectEq('allgather', await g.allgatherScalars([rank, 10 * rank]), all.map((v) => [v[0], 10 * v[0]]));
  expectEq('scalars empty', await g.allreduceScalars([], 'sum'), []);

  // Several collectives queued without awaiting (gradient buckets overlapping with backward).
  const bufs = [5, 100_000, 1, 33_333].map((n) => intData(n, rank));
  const pending = bufs.map((b, i) => g.allreduceAsync(b, { op: 'sum', bucketBytes: i % 2 ? 4000 : undefined }));
  const scal = g.allreduceScalars([rank + 1], 'sum');
  const bc = new Int32Array(3);
  if (rank === 0) bc.set([7, 8, 9]);
  const pb = g.broadcast(bc, 0);
  await Promise.all([...pending, scal, pb, g.barrier()]);
  bufs.forEach((b, j) => {
    let ok = true;
    for (let i = 0; i < b.length; i++) {
      let s = 0;
      for (let r = 0; r < W; r++) s += ((i * 31 + r * 17 + 5) % 2001) - 1000;
      if (b[i] !== s) ok = false;
    }
    expectEq(`async allreduce ${j}`, ok, true);
  });
  expectEq('async scalars', await scal, [(W * (W + 1)) / 2]);
  expectEq('async broadcast', Array.from(bc), [7, 8, 9]);
  out({ checks, failures, hashes, transport: g.transport, sharedMemory: g.sharedMemory, shmBytes: g.sharedMemoryBytes });
}

async function main(): Promise<void> {
  let g: ProcessGroup;
  try {
    g = await ProcessGroup.init({
      rank,
      worldSize: W,
      masterAddr: process.env.MASTER_ADDR,
      masterPort: Number(process.env.MASTER_PORT),
      timeoutMs,
      initTimeoutMs,
      transport: (['tcp', 'unix'].includes(process.env.DIST_TRANSPORT ?? '') ? process.env.DIST_TRANSPORT : 'auto') as 'tcp' | 'unix' | 'auto',
      shmBytes: process.env.DIST_SHM_BYTES ? Number(process.env.DIST_SHM_BYTES) : undefined,
    });
  } catch (e) {
    out({ phase: 'init', ...errInfo(e) });
    return;
  }
  switch (scenario) {
    case 'collectives':
      await collectives(g);
      await g.close();
      return;
    case 'pool': {
      const pool = await CommPool.create(g, { threads: 2, masterAddr: process.env.MASTER_ADDR!, timeoutMs });
      const n = 600_001;
      const rng = new Rng(7 + rank);
      const ref = new Float32Array(n);
      for (let i = 0; i < n; i++) ref[i] = rng.random() - 0.5;
      const buf = pool.alloc(n);
      buf.set(ref);
      const cut = 250_000;
      // two channels at once, plus the main group's own all-reduce of the same data in between
      const a = pool.allreduce(buf.subarray(0, cut), 'avg', 0);
      const b = pool.allreduce(buf.subarray(cut), 'avg', 1);
      await g.allreduce(ref.subarray(0, cut), { op: 'avg' });
      await g.allreduce(ref.subarray(cut), { op: 'avg' });
      await Promise.all([a, b]);
      // bfloat16 pairs (the compressed gradient exchange) on a channel and on the group
      const words = 100_003;
      const bfRef = new Float32Array(words);
      const bits = new Uint32Array(bfRef.buffer);
      for (let i = 0; i < words; i++) bits[i] = (((rng.randrange(0, 0x3f80) + 0x3800) << 16) | (rng.randrange(0, 0x3f80) + (rank & 1 ? 0x8000 : 0))) >>> 0;
      const bfBuf = pool.alloc(words);
      bfBuf.set(bfRef);
      const c = pool.allreduce(bfBuf, 'avg', 1, 'bf16x2');
      await g.allreduce(bfRef, { op: 'avg', dtype: 'bf16x2' });
      await c;
      // through a hand-off file (src/distributed/handoff.ts): the bucket goes into the file, not into the shared array
      // (which holds NaN), and the average comes back in both
      const m = 300_007;
      const hRef = new Float32Array(m);
      for (let i = 0; i < m; i++) hRef[i] = rng.random() - 0.5;
      const hBuf = pool.alloc(m + 5).subarray(5); // at byte offset 20 of its array (and of the file)
      hBuf.fill(NaN);
      const file = pool.handoff(hBuf);
      let handoff: unknown = null;
      if (file) {
        await file.write(new Uint8Array(hRef.slice().buffer), hBuf.byteOffset);
        const d = pool.allreduce(hBuf, 'avg', 0, 'f32', file);
        await g.allreduce(hRef, { op: 'avg' });
        await d;
        const back = new Float32Array(m);
        await file.read(new Uint8Array(back.buffer), hBuf.byteOffset);
        handoff = { file: hash(back) === hash(hRef), array: hash(hBuf) === hash(hRef) };
      }
      out({ equal: hash(buf) === hash(ref), bf16Equal: hash(bfBuf) === hash(bfRef), handoff, threads: pool.threads, hash: hash(buf) + hash(bfBuf) });
      await pool.close();
      if (file && file.fd !== -1) throw new Error('pool.close() left the hand-off file open');
      await g.close();
      return;
    }
    case 'hang': {
      if (rank === Number(process.env.HANG_RANK)) {
        out({ hanging: true });
        setInterval(() => {}, 1000); // alive, but never calls the collective; the test kills us
        return;
      }
      const t0 = Date.now();
      try {
        await g.allreduce(new Float32Array(1000).fill(rank));
        out({ error: null });
      } catch (e) {
        out({ ...errInfo(e), elapsedMs: Date.now() - t0 });
      }
      return;
    }
    case 'die': {
      if (rank === Number(process.env.DIE_RANK)) process.exit(3);
      let first: Record<string, unknown> = { error: null };
      try {
        await g.allreduce(new Float32Array(300_000).fill(rank));
      } catch (e) {
        first = errInfo(e);
      }
      // A later collective fails with the same error.
      try {
        await g.barrier();
        out({ ...first, error2: null });
      } catch (e) {
        out({ ...first, error2: (e as Error).message });
      }
      return;
    }
    case 'mismatch': {
      try {
        await g.allreduce(new Float32Array(rank === 1 ? 11 : 10));
        out({ error: null });
      } catch (e) {
        out(errInfo(e));
      }
      return;
    }
    case 'dtype': {
      try {
        await g.allreduce(new Float32Array(10), { op: 'avg', dtype: rank === 1 ? 'bf16x2' : 'f32' });
        out({ error: null });
      } catch (e) {
        out(errInfo(e));
      }
      return;
    }
    case 'close': {
      await g.barrier();
      if (rank === 0) {
        await g.close();
        out({ closed: true });
        return;
      }
      await new Promise((r) => setTimeout(r, 300));
      try {
        await g.allreduce(new Float32Array(10));
        out({ error: null });
      } catch (e) {
        out(errInfo(e));
      }
      return;
    }
    case 'join':
      out({ error: null });
      await g.close();
      return;
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

await main();
