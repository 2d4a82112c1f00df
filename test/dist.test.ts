/**
 * src/dist: environment parsing, ring collectives (simulated in-process and over real sockets between real
 * processes), fault handling (hung rank, dead rank, mismatched buffers, early close, missing rank at the
 * rendezvous) and the launcher (environment, output, failure propagation, signal forwarding).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { readDistEnv, readNodeConfig, distModeLine, distTimeoutMs } from '../src/distributed/env.js';
import { ProcessGroup } from '../src/distributed/group.js';
import { RingAllgather, RingAllreduce, RingBroadcast, type RingCollective, type RingSend } from '../src/distributed/allreduce.js';
import { findFreePort, launch, workerEnv } from '../src/distributed/launcher.js';
import { addBf16x2, addF32, divideBf16x2, divideF32 } from '../src/distributed/float32.js';
import { addBf16x2Scalar, bf16Bits, divideBf16x2Scalar, fromBf16, packBf16, toBf16, unpackBf16 } from '../src/distributed/bf16.js';
import { UserError } from '../src/errors.js';
import { Rng } from '../src/utils/rng.js';
import { tempDir } from './helpers.js';

const helper = (name: string): string => fileURLToPath(new URL(`./helpers/${name}`, import.meta.url));
const WORKER = helper('dist_worker.ts');
const NODE_ARGS = ['--import', 'tsx'];

// ------------------------------------------------------------------------------------------------ env

describe('readDistEnv', () => {
  test('single process without variables', () => {
    const e = readDistEnv({});
    assert.deepEqual(e, { rank: 0, localRank: 0, worldSize: 1, localWorldSize: 1, nodeRank: 0, masterAddr: '', masterPort: 0, distributed: false });
    assert.equal(distModeLine(e), 'Training with a single process on 1 GPUs.');
    assert.equal(readDistEnv({}, { localRankArg: 0 }).localRank, 0);
  });

  test('torchrun variables of a 2x4 job', () => {
    const e = readDistEnv({ RANK: '6', LOCAL_RANK: '2', WORLD_SIZE: '8', LOCAL_WORLD_SIZE: '4', NODE_RANK: '1', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' });
    assert.deepEqual(e, { rank: 6, localRank: 2, worldSize: 8, localWorldSize: 4, nodeRank: 1, masterAddr: '10.0.0.1', masterPort: 29500, distributed: true });
    assert.equal(distModeLine(e), 'Training in distributed mode with multiple processes, 1 GPU per process. Process 6, total 8.');
    // Minimal set: LOCAL_* and NODE_RANK derived (single machine).
    const m = readDistEnv({ RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '1234' });
    assert.equal(m.localRank, 1);
    assert.equal(m.localWorldSize, 2);
    assert.equal(m.nodeRank, 0);
  });

  test('inconsistent values give one clear UserError', () => {
    const base = { MASTER_ADDR: 'h', MASTER_PORT: '29500' };
    const cases: [Record<string, string>, RegExp][] = [
      [{ ...base, RANK: '4', WORLD_SIZE: '4' }, /^RANK=4 is out of range for WORLD_SIZE=4 \(ranks are 0\.\.3\)\.$/],
      [{ ...base, RANK: 'x', WORLD_SIZE: '4' }, /^Environment variable RANK must be a whole number >= 0, got 'x'\.$/],
      [{ ...base, WORLD_SIZE: '0' }, /WORLD_SIZE must be a whole number >= 1/],
      [{ ...base, WORLD_SIZE: '2' }, /^WORLD_SIZE=2 is set but RANK is not/],
      [{ RANK: '1', WORLD_SIZE: '2', MASTER_PORT: '1' }, /^WORLD_SIZE=2 but MASTER_ADDR is not set/],
      [{ RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: 'h' }, /^WORLD_SIZE=2 but MASTER_PORT is not set/],
      [{ ...base, RANK: '1', WORLD_SIZE: '2', MASTER_PORT: '70000' }, /^MASTER_PORT must be a TCP port between 1 and 65535, got 70000\.$/],
      [{ ...base, RANK: '3', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2', NODE_RANK: '1', LOCAL_RANK: '0' }, /^RANK=3 does not match NODE_RANK=1 \* LOCAL_WORLD_SIZE=2 \+ LOCAL_RANK=0 = 2\.$/],
      [{ ...base, RANK: '1', WORLD_SIZE: '5', LOCAL_WORLD_SIZE: '2' }, /not a multiple of LOCAL_WORLD_SIZE=2/],
      [{ ...base, RANK: '1', WORLD_SIZE: '4', LOCAL_RANK: '2', LOCAL_WORLD_SIZE: '2' }, /^LOCAL_RANK=2 is out of range for LOCAL_WORLD_SIZE=2/],
      [{ RANK: '2' }, /^RANK=2 is set but WORLD_SIZE is not/],
    ];
    for (const [env, re] of cases) {
      assert.throws(() => readDistEnv(env), (e: unknown) => e instanceof UserError && re.test(e.message), JSON.stringify(env));
    }
    assert.equal(distTimeoutMs(30), 30_000);
    assert.equal(distTimeoutMs('1.5'), 1500);
    assert.throws(() => distTimeoutMs(0), UserError);
  });
});

// ------------------------------------------------------------------------------------------------ simulated ring

/**
 * Runs one collective per rank in-process: messages travel through per-edge FIFO queues, delivered in a
 * random interleaving, as payload *views* (so an algorithm that overwrote data before it was "read" would be
 * caught), cut into random pieces, some copied to odd addresses.
 */
function simulate(ops: RingCollective[], rng: Rng): void {
  const W = ops.length;
  const queues: { idx: number; data: Uint8Array }[][] = ops.map(() => []);
  const received = ops.map(() => 0);
  const sends: RingSend[] = ops.map((_, r) => (idx, payload) => queues[r].push({ idx, data: payload }));
  for (const r of rng.permutation(W)) ops[r].start(sends[r]);
  for (;;) {
    const ready = queues.map((q, r) => (q.length ? r : -1)).filter((r) => r >= 0);
    if (!ready.length) break;
    const from = ready[rng.randrange(0, ready.length)];
    const to = (from + 1) % W;
    const msg = queues[from].shift()!;
    assert.equal(msg.idx, received[to], 'messages arrive in index order');
    const sink = ops[to].frame(msg.idx, msg.data.length, sends[to]);
    let off = 0;
    while (off < msg.data.length) {
      const n = Math.min(msg.data.length - off, rng.randint(1, 23));
      const piece = msg.data.subarray(off, off + n);
      const shift = rng.randint(0, 3);
      const tmp = new Uint8Array(n + shift);
      tmp.set(piece, shift);
      sink.write(tmp.subarray(shift));
      off += n;
    }
    sink.end();
    if (++received[to] === ops[to].expectedFrames) ops[to].finish();
  }
  ops.forEach((op, r) => assert.equal(received[r], op.expectedFrames, `rank ${r} frames`));
}

const intVal = (i: number, r: number): number => ((i * 7 + r * 13) % 201) - 100;

test('float32 kernels (SIMD) give the same bits as scalar float32 arithmetic', () => {
  const rng = new Rng(11);
  const specials = [0, -0, 1e-45, -1e-45, 1.1754942e-38, 3.4e38, -3.4e38, Infinity, -Infinity, NaN, 0.1, 1 / 3];
  const same = (x: number, y: number): boolean => Object.is(x, y) || (Number.isNaN(x) && Number.isNaN(y));
  for (const n of [0, 1, 5, 63, 64, 67, 1000, 65_536, 65_539, 140_001]) {
    const val = (i: number): number => (i % 11 === 0 ? specials[rng.randrange(0, specials.length)] : rng.normal(0, 1) * 10 ** rng.randint(-40, 38));
    const a = Float32Array.from({ length: n }, (_, i) => val(i));
    const b = Float32Array.from({ length: n }, (_, i) => val(i + 1));
    const got = a.slice();
    addF32(got, b);
    for (let i = 0; i < n; i++) if (!same(got[i], Math.fround(a[i] + b[i]))) assert.fail(`add n=${n} [${i}]: ${a[i]} + ${b[i]} = ${got[i]}`);
    for (const w of [2, 3, 7]) {
      const q = got.slice();
      divideF32(q, w);
      for (let i = 0; i < n; i++) if (!same(q[i], Math.fround(got[i] / w))) assert.fail(`div n=${n} [${i}]: ${got[i]} / ${w} = ${q[i]}`);
    }
  }
});

test('bfloat16 pair kernels (SIMD) give the same bits as the scalar reference, and pack/unpack round to nearest even', () => {
  const rng = new Rng(12);
  // rounding: ties to even, overflow to infinity, NaN to 0x7fc0
  assert.equal(bf16Bits(0x3f808000), 0x3f80); // tie, even stays
  assert.equal(bf16Bits(0x3f818000), 0x3f82); // tie, odd rounds up
  assert.equal(bf16Bits(0x3f808001), 0x3f81);
  assert.equal(bf16Bits(0x7f7fffff), 0x7f80);
  assert.equal(bf16Bits(0x7fc00001), 0x7fc0);
  assert.equal(bf16Bits(0xff800000), 0xff80);
  for (const n of [0, 1, 2, 5, 63, 64, 67, 1000, 65_536, 65_539, 140_001]) {
    const src = Float32Array.from({ length: 2 * n + 1 }, () => rng.normal(0, 1) * 10 ** rng.randint(-38, 38));
    const a = new Float32Array(n);
    const b = new Float32Array(n);
    packBf16(src.subarray(0, 2 * n), a);
    packBf16(src.subarray(1, 2 * n + 1), b);
    const back = new Float32Array(2 * n);
    unpackBf16(a, back);
    for (let i = 0; i < 2 * n; i++) if (back[i] !== fromBf16(toBf16(src[i]))) assert.fail(`pack/unpack n=${n} [${i}]`);
    const got = a.slice();
    const want = a.slice();
    addBf16x2(got, b);
    addBf16x2Scalar(want, b);
    assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), `add n=${n}`);
    for (const w of [2, 3]) {
      const q = got.slice();
      const qw = got.slice();
      divideBf16x2(q, w);
      divideBf16x2Scalar(qw, w);
      assert.deepEqual(new Uint32Array(q.buffer), new Uint32Array(qw.buffer), `div n=${n} w=${w}`);
    }
  }
});

describe('ring collectives (in-process simulation)', () => {
  test('bf16x2 allreduce: every rank gets the same bits; with 2 ranks exactly bf16(bf16(a + b) / 2)', () => {
    const rng = new Rng(5);
    for (let W = 2; W <= 5; W++) {
      for (const n of [1, 7, 61, 1001]) {
        const vals = Array.from({ length: W }, () => Float32Array.from({ length: 2 * n }, () => rng.normal(0, 1)));
        const bufs = vals.map((v) => {
          const b = new Float32Array(n);
          packBf16(v, b);
          return b;
        });
        simulate(bufs.map((b, r) => new RingAllreduce(b, r, W, 'avg', 13, 'bf16x2')), rng);
        for (let r = 1; r < W; r++) assert.deepEqual(new Uint32Array(bufs[r].buffer), new Uint32Array(bufs[0].buffer), `W=${W} n=${n} rank ${r}`);
        if (W === 2) {
          const out = new Float32Array(2 * n);
          unpackBf16(bufs[0], out);
          const q = (x: number): number => fromBf16(toBf16(x));
          for (let i = 0; i < 2 * n; i++) assert.equal(out[i], q(q(q(vals[0][i]) + q(vals[1][i])) / 2), `[${i}]`);
        }
      }
    }
  });


  test('allreduce: exact sums/averages, uneven sizes, bucket boundaries, identical bits', () => {
    const rng = new Rng(7);
    for (let W = 2; W <= 7; W++) {
      for (const n of [0, 1, 2, 3, 5, 7, W - 1, W + 1, 2 * W, 61]) {
        for (const bucket of [1, 2, 3, 7, W, 64]) {
          for (const op of ['sum', 'avg'] as const) {
            const bufs = Array.from({ length: W }, (_, r) => Float32Array.from({ length: n }, (_, i) => intVal(i, r)));
            simulate(bufs.map((b, r) => new RingAllreduce(b, r, W, op, bucket)), rng);
            for (let i = 0; i < n; i++) {
              let s = 0;
              for (let r = 0; r < W; r++) s += intVal(i, r);
              const want = op === 'avg' ? Math.fround(s / W) : s;
              for (let r = 0; r < W; r++) if (bufs[r][i] !== want) assert.fail(`W=${W} n=${n} bucket=${bucket} ${op}: rank ${r} [${i}] = ${bufs[r][i]}, want ${want}`);
            }
          }
        }
      }
      // Random floats: all ranks bit-identical, independent of delivery order, close to the float64 sum.
      const n = 1001;
      const data = Array.from({ length: W }, (_, r) => {
        const g = new Rng(100 + r);
        return Float32Array.from({ length: n }, () => g.normal(0, 10));
      });
      const runOnce = (seed: number): Float32Array[] => {
        const bufs = data.map((d) => d.slice());
        simulate(bufs.map((b, r) => new RingAllreduce(b, r, W, 'sum', 100)), new Rng(seed));
        return bufs;
      };
      const a = runOnce(1);
      const b = runOnce(2);
      const h = (x: Float32Array): string => createHash('sha256').update(x).digest('hex');
      for (let r = 0; r < W; r++) {
        assert.equal(h(a[r]), h(a[0]), `W=${W}: rank ${r} differs from rank 0`);
        assert.equal(h(b[r]), h(a[0]), `W=${W}: result depends on delivery order`);
      }
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (const d of data) s += d[i];
        assert.ok(Math.abs(a[0][i] - s) < 1e-4 * (1 + Math.abs(s)), `W=${W} [${i}] ${a[0][i]} vs ${s}`);
      }
    }
  });

  test('broadcast and all-gather', () => {
    const rng = new Rng(3);
    for (let W = 2; W <= 5; W++) {
      for (let root = 0; root < W; root++) {
        for (const [n, bucket] of [[0, 4], [1, 4], [13, 4], [13, 5], [100, 1000]]) {
          const bufs = Array.from({ length: W }, (_, r) => Uint8Array.from({ length: n }, (_, i) => (r === root ? (i * 3 + root) & 255 : 0)));
          simulate(bufs.map((b, r) => new RingBroadcast(b, r, W, root, bucket)), rng);
          for (let r = 0; r < W; r++) assert.deepEqual(Array.from(bufs[r]), Array.from(bufs[root]), `W=${W} root=${root} n=${n}`);
        }
      }
      const ops = Array.from({ length: W }, (_, r) => new RingAllgather([r, r * r + 0.5], r, W));
      simulate(ops, rng);
      const want = Array.from({ length: W }, (_, r) => [r, r * r + 0.5]);
      for (const op of ops) {
        assert.deepEqual(op.perRank(), want);
        assert.deepEqual(op.reduce('sum'), [(W * (W - 1)) / 2, want.reduce((a, v) => a + v[1], 0)]);
        assert.deepEqual(op.reduce('max'), [W - 1, (W - 1) ** 2 + 0.5]);
        assert.deepEqual(op.reduce('min'), [0, 0.5]);
      }
    }
  });
});

// ------------------------------------------------------------------------------------------------ real processes

interface RankOut {
  /** Process id (names the rank's files, e.g. its shared-memory inbox `mambaout-dist-r<rank>-<pid>-<hex>`). */
  pid: number;
  code: number | null;
  signal: string | null;
  stderr: string;
  json: Record<string, unknown> | null;
}

/**
 * Start `ranks` (of world size W) as separate processes running dist_worker.ts <scenario>. Resolves when every
 * rank in `waitFor` (default: all) has exited; the remaining ones are then killed.
 */
async function runRanks(W: number, scenario: string, extraEnv: Record<string, string> = {}, opts: { ranks?: number[]; waitFor?: number[] } = {}): Promise<RankOut[]> {
  const port = await findFreePort();
  const ranks = opts.ranks ?? Array.from({ length: W }, (_, r) => r);
  const waitFor = new Set(opts.waitFor ?? ranks);
  const results: RankOut[] = [];
  const procs = ranks.map((r) =>
    spawn(process.execPath, [...NODE_ARGS, WORKER, scenario], {
      env: { ...process.env, RANK: String(r), WORLD_SIZE: String(W), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const safety = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), 50_000);
  await Promise.all(
    procs.map(
      (p, i) =>
        new Promise<void>((resolve) => {
          let out = '';
          let err = '';
          p.stdout!.on('data', (d) => (out += d));
          p.stderr!.on('data', (d) => (err += d));
          p.on('close', (code, signal) => {
            const lines = out.trim().split('\n').filter((l) => l.startsWith('{'));
            results[ranks[i]] = { pid: p.pid!, code, signal, stderr: err, json: lines.length ? JSON.parse(lines[lines.length - 1]) : null };
            resolve();
          });
          if (!waitFor.has(ranks[i])) {
            // not awaited: killed once the awaited ones are done
          }
        }).then(() => {
          waitFor.delete(ranks[i]);
          if (waitFor.size === 0) procs.forEach((q) => q.exitCode === null && q.signalCode === null && q.kill('SIGKILL'));
        }),
    ),
  );
  clearTimeout(safety);
  return results;
}

describe('process group over sockets', () => {
  test('world size 1 is a no-op', async () => {
    const g = await ProcessGroup.init({ rank: 0, worldSize: 1 });
    const a = Float32Array.from([1.5, -2, 3]);
    await g.allreduce(a, { op: 'avg' });
    await g.broadcast(a, 0);
    assert.deepEqual(Array.from(a), [1.5, -2, 3]);
    assert.deepEqual(await g.allreduceScalars([2, 4], 'avg'), [2, 4]);
    assert.deepEqual(await g.allgatherScalars([2]), [[2]]);
    assert.deepEqual(await g.broadcastObject({ a: 1 }), { a: 1 });
    await g.barrier();
    assert.equal(g.transport, null);
    await g.close();
    await assert.rejects(g.allreduce(a), /process group is closed/);
    await assert.rejects(ProcessGroup.init({ rank: 2, worldSize: 2 }), /rank 2 is out of range for world size 2/);
  });

  // W=2: shared memory with a 1 MiB inbox (payloads of 200-260 KB wrap around the ring buffer and wait for
  // acknowledgements; the 2 MB ones travel inline, in order with the others);
  // W=3: TCP; W=4: shared memory with the default inbox; W=2 again over plain unix sockets.
  const shm = process.platform === 'linux';
  const cases: { W: number; env: Record<string, string>; socket: string; shm: boolean }[] = [
    { W: 1, env: {}, socket: '', shm: false },
    { W: 2, env: { DIST_SHM_BYTES: String(1024 * 1024) }, socket: 'unix', shm },
    { W: 2, env: { DIST_TRANSPORT: 'unix' }, socket: 'unix', shm: false },
    { W: 3, env: { DIST_TRANSPORT: 'tcp' }, socket: 'tcp', shm: false },
    { W: 4, env: {}, socket: 'unix', shm },
  ];
  for (const c of cases) {
    const via = c.W === 1 ? '' : c.shm ? ' over shared memory' : ` over ${c.socket} sockets`;
    test(`collectives with ${c.W} process(es)${via}: exact results, bit-identical on all ranks`, async () => {
      const W = c.W;
      const res = await runRanks(W, 'collectives', c.env);
      for (let r = 0; r < W; r++) {
        const o = res[r];
        assert.equal(o.code, 0, `rank ${r} exit ${o.code} ${o.signal}\n${o.stderr}`);
        assert.ok(o.json && !o.json.error, `rank ${r}: ${JSON.stringify(o.json)}`);
        assert.deepEqual(o.json.failures, [], `rank ${r} failures`);
        assert.ok((o.json.checks as number) > 100);
        assert.deepEqual(o.json.hashes, res[0].json!.hashes, `rank ${r} results differ from rank 0's`);
        if (W > 1) {
          const want = process.platform === 'win32' ? 'tcp' : c.socket;
          assert.deepEqual(o.json.transport, { left: want, right: want });
          assert.deepEqual(o.json.sharedMemory, { left: c.shm, right: c.shm });
          if (c.shm) assert.ok((o.json.shmBytes as number) > 4e6, `rank ${r}: ${o.json.shmBytes} bytes through shared memory`);
          else assert.equal(o.json.shmBytes, 0);
        }
      }
      // Only this test's ranks: other test files run at the same time (--test-concurrency) and have live inboxes.
      const ours = res.map((o) => `-${o.pid}-`);
      const left = readdirSync('/dev/shm').filter((f) => f.startsWith('mambaout-dist-') && ours.some((p) => f.includes(p)));
      if (c.shm) assert.deepEqual(left, [], 'mailbox files are removed');
    });
  }

  for (const W of [2, 3]) {
    test(`all-reduce on worker threads (CommPool, 2 channels) equals the group's own, ${W} processes, also through a hand-off file`, async () => {
      const res = await runRanks(W, 'pool');
      for (let r = 0; r < W; r++) {
        assert.equal(res[r].code, 0, res[r].stderr);
        assert.equal(res[r].json?.equal, true, JSON.stringify(res[r].json));
        assert.equal(res[r].json?.bf16Equal, true, JSON.stringify(res[r].json));
        if (existsSync('/dev/shm')) assert.deepEqual(res[r].json?.handoff, { file: true, array: true }, JSON.stringify(res[r].json));
        assert.equal(res[r].json?.hash, res[0].json?.hash);
      }
    });
  }

  test('a hung rank makes the others fail with a timeout naming it', async () => {
    const res = await runRanks(3, 'hang', { HANG_RANK: '1', DIST_TIMEOUT_MS: '1500' }, { waitFor: [0, 2] });
    for (const r of [0, 2]) {
      const o = res[r].json!;
      // rank 2 (right of 1) times out itself; rank 0 gets rank 2's report.
      assert.match(String(o.error), /^rank 1 did not answer within 1\.5 s \(collective #\d+: allreduce \(sum\) of 1000 floats\)$/, `rank ${r}: ${o.error}`);
      assert.equal(o.culprit, 1);
      assert.equal(o.reason, 'timeout');
      assert.equal(o.detectedBy, 2);
      assert.ok((o.elapsedMs as number) >= (r === 2 ? 1450 : 900) && (o.elapsedMs as number) < 5000, `rank ${r} took ${o.elapsedMs} ms`);
    }
    assert.equal(res[1].json!.hanging, true);
  });

  test('a rank that dies makes every pending and later collective fail naming it', async () => {
    const res = await runRanks(4, 'die', { DIE_RANK: '2' });
    assert.equal(res[2].code, 3);
    for (const r of [0, 1, 3]) {
      const lines = res[r].json!;
      assert.match(String(lines.error), /^rank 2 disconnected \((connection closed|connection reset|broken pipe)\)$/, `rank ${r}: ${JSON.stringify(lines)}`);
      assert.equal(lines.culprit, 2);
      assert.match(String(lines.error2), /^rank 2 disconnected \((connection closed|connection reset|broken pipe)\)$/, `rank ${r}: ${JSON.stringify(lines)}`);
    }
  });

  test('different buffer lengths or element types, early close and a missing rank are reported', async () => {
    const [mm, cl, jn, dt] = await Promise.all([
      runRanks(2, 'mismatch'),
      runRanks(2, 'close'),
      runRanks(3, 'join', { DIST_INIT_TIMEOUT_MS: '2000' }, { ranks: [0, 1] }),
      runRanks(2, 'dtype'),
    ]);
    for (const r of [0, 1]) assert.match(String(dt[r].json!.error), /uses reduction avg( \(bf16x2\))? but this rank's uses avg( \(bf16x2\))?$/, String(dt[r].json!.error));
    for (const r of [0, 1]) {
      assert.match(String(mm[r].json!.error), /has 4[04] bytes but this rank's has 4[04]: all ranks must pass buffers of the same length/, String(mm[r].json!.error));
    }
    assert.equal(cl[0].json!.closed, true);
    assert.match(String(cl[1].json!.error), /^rank 0 (has left the process group|left the process group)/, String(cl[1].json!.error));
    assert.match(String(jn[0].json!.error), /^rank 2 did not join the rendezvous at 127\.0\.0\.1:\d+ within 2 s$/, String(jn[0].json!.error));
    assert.match(String(jn[1].json!.error), /rank 2 did not join|did not complete the rendezvous/, String(jn[1].json!.error));
  });
});

// ------------------------------------------------------------------------------------------------ launcher

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

describe('launcher', () => {
  test('worker environment and device pinning', () => {
    const id = { rank: 5, localRank: 1, worldSize: 8, localWorldSize: 4, nodeRank: 1, masterAddr: '10.1.1.1', masterPort: 29500 };
    const e = workerEnv({ PATH: '/bin' }, id);
    assert.deepEqual(
      { RANK: e.RANK, LOCAL_RANK: e.LOCAL_RANK, WORLD_SIZE: e.WORLD_SIZE, LOCAL_WORLD_SIZE: e.LOCAL_WORLD_SIZE, NODE_RANK: e.NODE_RANK, MASTER_ADDR: e.MASTER_ADDR, MASTER_PORT: e.MASTER_PORT, A: e.MAMBAOUT_WEBGPU_ADAPTER, C: e.CUDA_VISIBLE_DEVICES, PATH: e.PATH },
      { RANK: '5', LOCAL_RANK: '1', WORLD_SIZE: '8', LOCAL_WORLD_SIZE: '4', NODE_RANK: '1', MASTER_ADDR: '10.1.1.1', MASTER_PORT: '29500', A: '1', C: '1', PATH: '/bin' },
    );
    assert.equal(workerEnv({ CUDA_VISIBLE_DEVICES: '4, 5,6,7' }, id).CUDA_VISIBLE_DEVICES, '5');
    assert.equal(workerEnv({ CUDA_VISIBLE_DEVICES: 'GPU-aa,GPU-bb,GPU-cc,GPU-dd' }, id).CUDA_VISIBLE_DEVICES, 'GPU-bb');
    assert.equal(workerEnv({ CUDA_VISIBLE_DEVICES: '' }, id).CUDA_VISIBLE_DEVICES, '');
    assert.equal(workerEnv({ CUDA_VISIBLE_DEVICES: '-1' }, id).CUDA_VISIBLE_DEVICES, '-1');
    assert.throws(() => workerEnv({ CUDA_VISIBLE_DEVICES: '0,1' }, id), /^UserError: CUDA_VISIBLE_DEVICES=0,1 lists 2 device\(s\) but 4 workers per machine/);
  });

  test('spawns workers with the torchrun environment, streams output, workers can form a group', async () => {
    const tmp = tempDir('mambaout-dist-');
    try {
      const out = new Capture();
      const err = new Capture();
      const res = await launch({
        nprocPerNode: 3,
        script: helper('dist_env_worker.ts'),
        args: [tmp.dir, 'group', '--extra', 'x'],
        nodeArgs: NODE_ARGS,
        env: { ...process.env, CUDA_VISIBLE_DEVICES: '4,5,6', DIST_TEST_MARK: 'm' },
        stdout: out,
        stderr: err,
      });
      assert.equal(res.exitCode, 0, `${res.message}\n${err.text}`);
      assert.equal(res.message, null);
      assert.ok(res.masterPort > 0);
      for (let r = 0; r < 3; r++) {
        const rec = JSON.parse(readFileSync(join(tmp.dir, `rank${r}.json`), 'utf8'));
        assert.deepEqual(rec.env, {
          RANK: String(r), LOCAL_RANK: String(r), WORLD_SIZE: '3', LOCAL_WORLD_SIZE: '3', NODE_RANK: '0', MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: String(res.masterPort), MAMBAOUT_WEBGPU_ADAPTER: String(r), CUDA_VISIBLE_DEVICES: String(4 + r), DIST_TEST_MARK: 'm',
        });
        assert.deepEqual(rec.argv, ['--extra', 'x']);
        assert.equal(rec.sum, 3);
      }
      assert.equal(out.text, 'stdout from rank 0\n');
      const errLines = err.text.split('\n').filter((l) => l !== '').sort();
      assert.deepEqual(errLines, ['[rank 1] stderr from rank 1', '[rank 1] unterminated 1', '[rank 2] stderr from rank 2', '[rank 2] unterminated 2', 'stderr from rank 0'].sort());
      assert.deepEqual(res.workers.map((w) => [w.rank, w.code, w.signal]), [[0, 0, null], [1, 0, null], [2, 0, null]]);
    } finally {
      tmp.cleanup();
    }
  });

  test('a failing worker stops the others; the result names the rank and cause', async () => {
    const [a, b] = await Promise.all([
      launch({ nprocPerNode: 3, script: helper('dist_fail_worker.ts'), args: ['exit7'], nodeArgs: NODE_ARGS, env: { ...process.env, FAIL_RANK: '1' }, stdout: new Capture(), stderr: new Capture() }),
      launch({ nprocPerNode: 3, script: helper('dist_fail_worker.ts'), args: ['sigkill'], nodeArgs: NODE_ARGS, env: { ...process.env, FAIL_RANK: '2' }, stdout: new Capture(), stderr: new Capture(), graceMs: 500 }),
    ]);
    assert.equal(a.message, 'rank 1 exited with code 7');
    assert.equal(a.exitCode, 7);
    assert.equal(a.failedRank, 1);
    assert.deepEqual(a.workers.map((w) => w.signal), ['SIGTERM', null, 'SIGTERM']);
    assert.equal(b.message, 'rank 2 was killed by SIGKILL');
    assert.equal(b.exitCode, 137);
    // The others ignored SIGTERM and were killed after the grace period.
    assert.deepEqual(b.workers.map((w) => w.signal), ['SIGKILL', 'SIGKILL', 'SIGKILL']);
    await assert.rejects(launch({ nprocPerNode: 2, script: '/nonexistent/x.js' }), /^UserError: Training script not found/);
    await assert.rejects(launch({ nprocPerNode: 2, nnodes: 2, script: WORKER }), /--master-addr is required/);
  });

  test('SIGTERM to the launcher is forwarded to the workers', async () => {
    const opts = { nprocPerNode: 2, script: helper('dist_fail_worker.ts'), args: ['wait'], nodeArgs: NODE_ARGS };
    const p = spawn(process.execPath, [...NODE_ARGS, helper('dist_launch.ts'), JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    // SIGTERM once both workers have their handler in place (a worker still starting, under load, would die of the
    // signal instead of exiting 0).
    let armed = false;
    const killWhenReady = () => {
      if (armed || !out.includes('ready 0\n') || !err.includes('[rank 1] ready 1\n')) return;
      armed = true;
      setTimeout(() => p.kill('SIGTERM'), 300);
    };
    const code = await new Promise<number | null>((resolve) => {
      p.stderr!.on('data', (d) => {
        err += d;
        killWhenReady();
      });
      p.stdout!.on('data', (d) => {
        out += d;
        killWhenReady();
      });
      p.on('close', (c) => resolve(c));
    });
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, `no result: ${out}\n${err}`);
    const res = JSON.parse(line.slice(7));
    assert.equal(res.message, 'received SIGTERM; stopped all workers');
    assert.equal(res.exitCode, 143);
    assert.equal(code, 143);
    assert.deepEqual(res.workers.map((w: { code: number }) => w.code), [0, 0]);
    assert.match(err, /got SIGTERM/);
  });
});

// ------------------------------------------------------------------------------------------------ schedulers

describe('node-level environment of a launcher (torchrun, Slurm, Kubernetes PyTorchJob)', () => {
  test('flags, then PET_*, then NNODES/NODE_RANK, then WORLD_SIZE/RANK as nodes; MASTER_* from the environment', () => {
    assert.deepEqual(readNodeConfig({}, {}), { nprocPerNode: undefined, nnodes: 1, nodeRank: 0, masterAddr: undefined, masterPort: undefined, source: 'single node' });
    const slurm = { NNODES: '4', NODE_RANK: '2', MASTER_ADDR: 'node-a', MASTER_PORT: '29500', NPROC_PER_NODE: '8' };
    assert.deepEqual(readNodeConfig({}, slurm), { nprocPerNode: 8, nnodes: 4, nodeRank: 2, masterAddr: 'node-a', masterPort: 29500, source: 'NNODES/NODE_RANK' });
    // PyTorchJob without nprocPerNode: WORLD_SIZE pods, RANK = pod index
    const pod = { WORLD_SIZE: '3', RANK: '1', MASTER_ADDR: 'job-master-0', MASTER_PORT: '23456' };
    assert.deepEqual(readNodeConfig({ nprocPerNode: 2 }, pod), { nprocPerNode: 2, nnodes: 3, nodeRank: 1, masterAddr: 'job-master-0', masterPort: 23456, source: 'WORLD_SIZE/RANK (one launcher per node)' });
    // PyTorchJob with nprocPerNode: WORLD_SIZE counts processes, torchrun's PET_* variables describe the nodes
    const pet = { WORLD_SIZE: '16', RANK: '1', PET_NNODES: '2', PET_NODE_RANK: '1', PET_NPROC_PER_NODE: '8', MASTER_ADDR: 'm', MASTER_PORT: '23456' };
    assert.deepEqual(readNodeConfig({}, pet), { nprocPerNode: 8, nnodes: 2, nodeRank: 1, masterAddr: 'm', masterPort: 23456, source: 'PET_NNODES/PET_NODE_RANK' });
    assert.deepEqual(readNodeConfig({ nnodes: 1, nodeRank: 0, nprocPerNode: 4, masterPort: 1234 }, pet), { nprocPerNode: 4, nnodes: 1, nodeRank: 0, masterAddr: 'm', masterPort: 1234, source: '--nnodes/--node-rank' });
    const bad: [Record<string, string>, RegExp][] = [
      [{ PET_NNODES: '1:4', PET_NODE_RANK: '0' }, /^PET_NNODES=1:4 is an elastic range/],
      [{ NNODES: '2' }, /the job has 2 nodes but this node's rank is not set/],
      [{ NNODES: '2', NODE_RANK: '2' }, /node rank 2 is out of range for 2 node\(s\)/],
      [{ WORLD_SIZE: '2' }, /WORLD_SIZE=2 is set but RANK is not/],
      [{ NNODES: 'two', NODE_RANK: '0' }, /NNODES must be a whole number >= 1, got 'two'/],
      [{ MASTER_PORT: '70000' }, /MASTER_PORT must be a TCP port/],
    ];
    for (const [env, re] of bad) assert.throws(() => readNodeConfig({}, env), (e: unknown) => e instanceof UserError && re.test(e.message), JSON.stringify(env));
  });

  test('mambaout-distributed-train takes the node layout from the environment and says what is missing', () => {
    const bin = fileURLToPath(new URL('../bin/distributed_train.ts', import.meta.url));
    const cases: [Record<string, string>, RegExp][] = [
      [{ NNODES: '2' }, /^error: the job has 2 nodes but this node's rank is not set; give --node-rank or set NODE_RANK\.$/m],
      [{ PET_NNODES: '1:4', PET_NODE_RANK: '0' }, /^error: PET_NNODES=1:4 is an elastic range/m],
      [{ WORLD_SIZE: '2', RANK: '1' }, /^error: with more than one node give --master-addr and --master-port, or MASTER_ADDR and MASTER_PORT/m],
    ];
    for (const [env, re] of cases) {
      const r = spawnSync(process.execPath, [...NODE_ARGS, bin, '2', '/nonexistent-data'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 2, `${JSON.stringify(env)}: ${r.stderr}`);
      assert.match(r.stderr, re, JSON.stringify(env));
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  const NODE = helper('dist_node.ts');
  /** Runs the per-node launchers (one process each) and checks the 2 x 2 job they form. */
  async function checkTwoNodeJob(dir: string, results: { code: number | null; out: string; err: string }[]): Promise<void> {
    for (const r of results) assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    for (let r = 0; r < 4; r++) {
      const rec = JSON.parse(readFileSync(join(dir, `rank${r}.json`), 'utf8'));
      assert.equal(rec.env.RANK, String(r));
      assert.equal(rec.env.WORLD_SIZE, '4');
      assert.equal(rec.env.LOCAL_RANK, String(r % 2));
      assert.equal(rec.env.NODE_RANK, String(r >> 1));
      assert.equal(rec.sum, 6, `rank ${r}: all four ranks took part`);
      // ring 0 -> 1 -> 2 -> 3 -> 0: inside a node shared memory over a unix socket, between nodes TCP
      const leftSame = r % 2 === 1;
      assert.deepEqual(rec.transport, { left: leftSame ? 'unix' : 'tcp', right: leftSame ? 'tcp' : 'unix' }, `rank ${r}`);
      if (process.platform === 'linux') assert.deepEqual(rec.sharedMemory, { left: leftSame, right: !leftSame }, `rank ${r}`);
    }
  }
  function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
    return new Promise((resolve) => {
      const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout!.on('data', (d) => (out += d));
      p.stderr!.on('data', (d) => (err += d));
      const t = setTimeout(() => p.kill('SIGKILL'), 90_000);
      p.on('close', (code) => {
        clearTimeout(t);
        resolve({ code, out, err });
      });
    });
  }

  test('examples/slurm/train.sbatch: srun starts one launcher per node, which form one job over TCP', async () => {
    const tmp = tempDir('mambaout-slurm-');
    try {
      const bin = join(tmp.dir, 'bin');
      mkdirSync(bin);
      // stand-ins for srun (one task per node, per-task SLURM_NODEID) and scontrol (host list)
      writeFileSync(join(bin, 'srun'), '#!/bin/bash\nwhile [[ $# -gt 0 && $1 == --* ]]; do shift; done\npids=()\n' +
        'for ((i=0; i<SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 "$@" & pids+=($!); done\n' +
        'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc\n');
      writeFileSync(join(bin, 'scontrol'), '#!/bin/bash\n[ "$1 $2 $3" = "show hostnames nodeA,nodeB" ] || exit 9\necho 127.0.0.1\necho 127.0.0.2\n');
      chmodSync(join(bin, 'srun'), 0o755);
      chmodSync(join(bin, 'scontrol'), 0o755);
      const port = await findFreePort();
      const sbatch = fileURLToPath(new URL('../examples/slurm/train.sbatch', import.meta.url));
      const res = await run('bash', [sbatch, tmp.dir], {
        PATH: `${bin}:${process.env.PATH}`, SLURM_JOB_NODELIST: 'nodeA,nodeB', SLURM_NNODES: '2', SLURM_JOB_ID: '4242', MASTER_PORT: String(port),
        GPUS_PER_NODE: '2', LAUNCH: `${process.execPath} --import tsx ${NODE}`,
      });
      assert.match(res.err, new RegExp(`mambaout: 2 node\\(s\\) x 2 GPU\\(s\\), rendezvous at 127\\.0\\.0\\.1:${port}`));
      await checkTwoNodeJob(tmp.dir, [res]);
      assert.equal(JSON.parse(res.out.split('\n').find((l) => l.startsWith('RESULT '))!.slice(7)).source, 'NNODES/NODE_RANK');
    } finally {
      tmp.cleanup();
    }
  });

  for (const style of ['pods', 'torchrun'] as const) {
    test(`a Kubernetes PyTorchJob (${style === 'pods' ? 'WORLD_SIZE/RANK per pod' : 'PET_* variables'}): two pods form one job over TCP`, async () => {
      const tmp = tempDir('mambaout-k8s-');
      try {
        const port = await findFreePort();
        const envOf = (pod: number): Record<string, string> =>
          style === 'pods'
            ? { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), WORLD_SIZE: '2', RANK: String(pod) }
            : { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), WORLD_SIZE: '4', RANK: String(pod), PET_NNODES: '2', PET_NODE_RANK: String(pod), PET_NPROC_PER_NODE: '2' };
        const args = (): string[] => ['--import', 'tsx', NODE, tmp.dir, ...(style === 'pods' ? ['--nproc-per-node', '2'] : [])];
        const results = await Promise.all([0, 1].map((pod) => run(process.execPath, args(), envOf(pod))));
        await checkTwoNodeJob(tmp.dir, results);
      } finally {
        tmp.cleanup();
      }
    });
  }
});
