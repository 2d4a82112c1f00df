/**
 * Host <-> GPU transfer paths of Dawn (dawn.node, the npm `webgpu` package), measured one by one: what a gradient
 * exchange pays to get a bucket off the GPU and back (src/train/ddp.ts).
 *
 *   node --import tsx scripts/gpu_transfer_bench.ts [--sizes 1,4,16,64,128] [--reps 5] [--backend webgpu]
 *
 * Readback (GPU STORAGE buffer -> JS Float32Array):
 *   fresh        new MAP_READ|COPY_DST staging buffer per read (what a new size costs tfjs), copy, submit, mapAsync,
 *                getMappedRange().slice(0), unmap, destroy
 *   reused       one persistent staging buffer, slice(0) of the mapped range (tfjs's getBufferData once its pool
 *                holds a buffer of that size)
 *   reused-into  persistent staging buffer, copied into a persistent Float32Array (no new JS memory)
 *   chunks4      four persistent staging buffers of 1/4 each, one submit, four mapAsync, each quarter copied out as
 *                soon as it is mapped (pipelined)
 *   tfjs-data    tensor.data() of a fresh GPU tensor of that size (tfjs-backend-webgpu 4.22)
 * Each line: median ms of --reps, the part until mapAsync resolved ("map": GPU copy + Dawn's completion polling +
 * the event loop) and the part after it ("copy": getMappedRange + memcpy), and GB/s of the total.
 *
 * Upload (JS Float32Array -> persistent GPU STORAGE buffer), timed until queue.onSubmittedWorkDone resolves:
 *   writeBuffer       queue.writeBuffer of the whole array (Dawn stages it: above its 4 MiB upload ring it creates and
 *                     destroys a mapped staging buffer of the full size per call)
 *   writeBuffer-4m    the same in pieces of 4 MiB - 4 KiB (inside Dawn's ring buffers)
 *   stage-fresh       new MAP_WRITE|COPY_SRC buffer mappedAtCreation, set, unmap, copyBufferToBuffer, destroy
 *   stage-reused      persistent MAP_WRITE staging buffer re-mapped (mapAsync WRITE) after each use, set, unmap, copy
 *   tfjs-tensor       tf.tensor1d(array) uploaded by tfjs (uploadToGPU: a fresh mappedAtCreation staging buffer)
 * "cpu" = time until the JS call returned (what the main thread pays), "total" = until the GPU has the data.
 *
 * Also: latency of a 4-byte readback (submit + mapAsync round trip: Dawn's event polling, dawn.node ticks it with
 * setImmediate) and of onSubmittedWorkDone, host memcpy (Float32Array.set) into fresh and into reused memory, and
 * pwrite/pread of 4 MiB pieces to a /dev/shm file (the ring's shared-memory mailbox, src/distributed/shm.ts).
 * Output: one JSON line per measurement ({"dir","path","mb","ms","map_ms","copy_ms","gbps"}) then a table.
 */
import * as tf from '@tensorflow/tfjs-core';
import { closeSync, existsSync, openSync, readSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { webgpuDevice } from '../src/backend/webgpu.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1,4,16,64,128' },
    reps: { type: 'string', default: '5' },
    backend: { type: 'string', default: 'webgpu' },
  },
});
const sizes = values.sizes!.split(',').map(Number);
const reps = Math.max(1, Number(values.reps));

const be = await initBackend(values.backend, { training: true });
const device = webgpuDevice();
if (tf.getBackend() !== 'webgpu' || !device) {
  console.error(`gpu_transfer_bench needs the webgpu backend (got ${be.message})`);
  process.exit(2);
}
process.stderr.write(`${be.message}\n`);
const U = GPUBufferUsage;
const queue = device.queue;

function median(a: number[]): number {
  const s = [...a].sort((p, q) => p - q);
  return s[Math.floor(s.length / 2)];
}

interface Row { dir: string; path: string; mb: number; ms: number; map_ms?: number; copy_ms?: number; cpu_ms?: number; gbps: number }
const rows: Row[] = [];
function report(dir: string, path: string, bytes: number, total: number[], a?: number[], b?: number[], aKey: 'map_ms' | 'cpu_ms' = 'map_ms'): void {
  const ms = median(total);
  const row: Row = { dir, path, mb: +(bytes / 2 ** 20).toFixed(2), ms: +ms.toFixed(3), gbps: +(bytes / 1e9 / (ms / 1000)).toFixed(2) };
  if (a) row[aKey] = +median(a).toFixed(3);
  if (b) row.copy_ms = +median(b).toFixed(3);
  rows.push(row);
  console.log(JSON.stringify(row));
}

async function idle(): Promise<void> {
  await queue.onSubmittedWorkDone();
}

/** Copy src -> staging (range), submit. */
function copyOut(src: GPUBuffer, dst: GPUBuffer, bytes: number, srcOff = 0, dstOff = 0): void {
  const enc = device!.createCommandEncoder();
  enc.copyBufferToBuffer(src, srcOff, dst, dstOff, bytes);
  queue.submit([enc.finish()]);
}

// ------------------------------------------------------------------ latency
{
  const src = device.createBuffer({ size: 256, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const st = device.createBuffer({ size: 256, usage: U.MAP_READ | U.COPY_DST });
  const lat: number[] = [];
  const done: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    copyOut(src, st, 4);
    await st.mapAsync(GPUMapMode.READ);
    lat.push(performance.now() - t0);
    st.unmap();
    const t1 = performance.now();
    queue.submit([device.createCommandEncoder().finish()]);
    await queue.onSubmittedWorkDone();
    done.push(performance.now() - t1);
  }
  console.log(JSON.stringify({ dir: 'latency', readback_4b_ms: +median(lat).toFixed(3), work_done_ms: +median(done).toFixed(3) }));
  src.destroy();
  st.destroy();
}

for (const mb of sizes) {
  const bytes = Math.round(mb * 2 ** 20 / 16) * 16;
  const n = bytes / 4;
  const host = new Float32Array(n);
  for (let i = 0; i < n; i += 1024) host[i] = i;
  const src = device.createBuffer({ size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  queue.writeBuffer(src, 0, host);
  await idle();

  // host memcpy baselines
  {
    const fresh: number[] = [];
    const reused: number[] = [];
    const dst = new Float32Array(n);
    for (let r = 0; r < reps; r++) {
      let t0 = performance.now();
      const f = host.slice(0);
      fresh.push(performance.now() - t0);
      t0 = performance.now();
      dst.set(host);
      reused.push(performance.now() - t0);
      if (f[0] !== host[0]) throw new Error('copy');
    }
    report('host', 'memcpy-fresh', bytes, fresh);
    report('host', 'memcpy-reused', bytes, reused);
    // the shared-memory mailbox of the ring (src/distributed/shm.ts): pwrite / pread of 4 MiB pieces to a /dev/shm file
    if (existsSync('/dev/shm') && statfsSync('/dev/shm').bavail * statfsSync('/dev/shm').bsize > 2 * bytes) {
      const f = `/dev/shm/mambaout-transfer-bench-${process.pid}`;
      const fd = openSync(f, 'w+');
      try {
        const u8 = new Uint8Array(host.buffer, host.byteOffset, bytes);
        const back = new Uint8Array(bytes);
        const piece = 4 * 2 ** 20;
        const w: number[] = [];
        const rd: number[] = [];
        for (let r = 0; r < reps + 1; r++) {
          let t0 = performance.now();
          for (let o = 0; o < bytes; o += piece) writeSync(fd, u8, o, Math.min(piece, bytes - o), o);
          const tw = performance.now() - t0;
          t0 = performance.now();
          for (let o = 0; o < bytes; o += piece) readSync(fd, back, o, Math.min(piece, bytes - o), o);
          if (r > 0) { w.push(tw); rd.push(performance.now() - t0); } // the first pass allocates the file's pages
        }
        report('host', 'shm-pwrite', bytes, w);
        report('host', 'shm-pread', bytes, rd);
      } finally {
        closeSync(fd);
        unlinkSync(f);
      }
    }
  }

  // ---------------------------------------------------------------- readback
  const dst = new Float32Array(n);
  {
    const tot: number[] = [], map: number[] = [], cp: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const st = device.createBuffer({ size: bytes, usage: U.MAP_READ | U.COPY_DST });
      copyOut(src, st, bytes);
      await st.mapAsync(GPUMapMode.READ);
      const t1 = performance.now();
      const v = new Float32Array(st.getMappedRange().slice(0));
      st.unmap();
      st.destroy();
      const t2 = performance.now();
      tot.push(t2 - t0); map.push(t1 - t0); cp.push(t2 - t1);
      if (v[1024] !== host[1024]) throw new Error('readback mismatch');
    }
    report('readback', 'fresh', bytes, tot, map, cp);
  }
  for (const into of [false, true]) {
    const st = device.createBuffer({ size: bytes, usage: U.MAP_READ | U.COPY_DST });
    const tot: number[] = [], map: number[] = [], cp: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      const t0 = performance.now();
      copyOut(src, st, bytes);
      await st.mapAsync(GPUMapMode.READ);
      const t1 = performance.now();
      const m = new Float32Array(st.getMappedRange());
      const v = into ? (dst.set(m), dst) : m.slice(0);
      st.unmap();
      const t2 = performance.now();
      if (r > 0) { tot.push(t2 - t0); map.push(t1 - t0); cp.push(t2 - t1); } // the first use allocates
      if (v[1024] !== host[1024]) throw new Error('readback mismatch');
    }
    report('readback', into ? 'reused-into' : 'reused', bytes, tot, map, cp);
    st.destroy();
  }
  {
    const K = 4;
    const part = bytes / K;
    const sts = Array.from({ length: K }, () => device.createBuffer({ size: part, usage: U.MAP_READ | U.COPY_DST }));
    const tot: number[] = [], map: number[] = [], cp: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      const t0 = performance.now();
      const enc = device.createCommandEncoder();
      for (let k = 0; k < K; k++) enc.copyBufferToBuffer(src, k * part, sts[k], 0, part);
      queue.submit([enc.finish()]);
      let firstMap = 0;
      let copyMs = 0;
      await Promise.all(sts.map((s, k) => s.mapAsync(GPUMapMode.READ).then(() => {
        const t = performance.now();
        if (!firstMap) firstMap = t;
        dst.set(new Float32Array(s.getMappedRange()), (k * part) / 4);
        s.unmap();
        copyMs += performance.now() - t;
      })));
      const t2 = performance.now();
      if (r > 0) { tot.push(t2 - t0); map.push(firstMap - t0); cp.push(copyMs); }
      if (dst[1024] !== host[1024]) throw new Error('readback mismatch');
    }
    report('readback', 'chunks4', bytes, tot, map, cp);
    for (const s of sts) s.destroy();
  }
  {
    const base = tf.tensor1d(host);
    const tot: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      const t = tf.add(base, 0) as tf.Tensor1D; // a fresh GPU tensor (data() caches the values on the tensor)
      await idle();
      const t0 = performance.now();
      const v = (await t.data()) as Float32Array;
      if (r > 0) tot.push(performance.now() - t0);
      if (v[1024] !== host[1024]) throw new Error('readback mismatch');
      t.dispose();
    }
    report('readback', 'tfjs-data', bytes, tot);
    base.dispose();
  }

  // ---------------------------------------------------------------- upload
  const target = device.createBuffer({ size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const check = device.createBuffer({ size: 16, usage: U.MAP_READ | U.COPY_DST });
  async function verify(): Promise<void> {
    copyOut(target, check, 16, 4096, 0);
    await check.mapAsync(GPUMapMode.READ);
    const v = new Float32Array(check.getMappedRange())[0];
    check.unmap();
    if (v !== host[1024]) throw new Error(`upload mismatch ${v}`);
    queue.writeBuffer(target, 0, new Float32Array(4096)); // clear the checked element for the next path
    await idle();
  }
  const emptySubmit = (): void => queue.submit([device.createCommandEncoder().finish()]);
  {
    const tot: number[] = [], cpu: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      queue.writeBuffer(target, 0, host.buffer, host.byteOffset, bytes);
      emptySubmit();
      const t1 = performance.now();
      await idle();
      tot.push(performance.now() - t0); cpu.push(t1 - t0);
    }
    await verify();
    report('upload', 'writeBuffer', bytes, tot, cpu, undefined, 'cpu_ms');
  }
  {
    const piece = 4 * 2 ** 20 - 4096;
    const tot: number[] = [], cpu: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      for (let o = 0; o < bytes; o += piece) queue.writeBuffer(target, o, host.buffer, host.byteOffset + o, Math.min(piece, bytes - o));
      emptySubmit();
      const t1 = performance.now();
      await idle();
      tot.push(performance.now() - t0); cpu.push(t1 - t0);
    }
    await verify();
    report('upload', 'writeBuffer-4m', bytes, tot, cpu, undefined, 'cpu_ms');
  }
  {
    const tot: number[] = [], cpu: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const st = device.createBuffer({ size: bytes, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
      new Float32Array(st.getMappedRange()).set(host);
      st.unmap();
      copyOut(st, target, bytes);
      st.destroy();
      const t1 = performance.now();
      await idle();
      tot.push(performance.now() - t0); cpu.push(t1 - t0);
    }
    await verify();
    report('upload', 'stage-fresh', bytes, tot, cpu, undefined, 'cpu_ms');
  }
  {
    const st = device.createBuffer({ size: bytes, usage: U.MAP_WRITE | U.COPY_SRC, mappedAtCreation: true });
    let mapped: Promise<void> = Promise.resolve();
    const tot: number[] = [], cpu: number[] = [], wait: number[] = [];
    for (let r = 0; r < reps + 1; r++) {
      const tw = performance.now();
      await mapped;
      const t0 = performance.now();
      new Float32Array(st.getMappedRange()).set(host);
      st.unmap();
      copyOut(st, target, bytes);
      mapped = st.mapAsync(GPUMapMode.WRITE);
      const t1 = performance.now();
      await idle();
      if (r > 0) { tot.push(performance.now() - t0); cpu.push(t1 - t0); wait.push(t0 - tw); }
    }
    await mapped;
    st.unmap();
    await verify();
    report('upload', 'stage-reused', bytes, tot, cpu, undefined, 'cpu_ms');
    console.log(JSON.stringify({ dir: 'upload', path: 'stage-reused', mb: +(bytes / 2 ** 20).toFixed(2), remap_wait_ms: +median(wait).toFixed(3) }));
    st.destroy();
  }
  {
    const backend = tf.backend() as unknown as { uploadToGPU(id: object): void; submitQueue(): void; ensureCommandEncoderReady(): void };
    const tot: number[] = [], cpu: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const t = tf.tensor1d(host);
      backend.uploadToGPU(t.dataId);
      backend.ensureCommandEncoderReady();
      backend.submitQueue();
      const t1 = performance.now();
      await idle();
      tot.push(performance.now() - t0); cpu.push(t1 - t0);
      t.dispose();
    }
    report('upload', 'tfjs-tensor', bytes, tot, cpu, undefined, 'cpu_ms');
  }
  target.destroy();
  check.destroy();
  src.destroy();
}

const pad = (s: unknown, n: number): string => String(s ?? '-').padStart(n);
console.log(`\n${'dir'.padEnd(9)} ${'path'.padEnd(15)} ${pad('MB', 7)} ${pad('ms', 9)} ${pad('GB/s', 7)} ${pad('map/cpu', 9)} ${pad('copy', 8)}`);
for (const r of rows) {
  console.log(`${r.dir.padEnd(9)} ${r.path.padEnd(15)} ${pad(r.mb, 7)} ${pad(r.ms, 9)} ${pad(r.gbps, 7)} ${pad(r.map_ms ?? r.cpu_ms, 9)} ${pad(r.copy_ms, 8)}`);
}
await releaseBackend();
