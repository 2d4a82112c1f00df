/**
 * Data pipeline throughput: decode (sharp) + timm eval transform (Pillow-exact bicubic resize of the
 * shorter side to floor(224 / crop_pct), center crop 224, normalize; MambaOut's crop_pct is 1.0)
 * over N generated 500×375 JPEGs, in-process and through the worker-pool loader.
 *
 *   node --import tsx scripts/bench_data.ts [--n 512] [--batch 32] [--jobs 0,1,2] [--crop-pct 1.0]
 *
 * Prints the per-image cost of each stage in-process, then loader throughput (img/s) for each -j.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { decodeRGB } from '../src/data/decode.js';
import { DataLoader } from '../src/data/loader.js';
import { evalTransform, MAMBAOUT_DATA_DEFAULTS, resolveDataConfig } from '../src/data/transforms/eval.js';
import { Rng } from '../src/utils/rng.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '512' },
    batch: { type: 'string', default: '32' },
    jobs: { type: 'string', default: '0,1,2' },
    'crop-pct': { type: 'string', default: '1.0' },
    size: { type: 'string', default: '224' },
  },
});
const N = Number(values.n);
const batchSize = Number(values.batch);
const jobs = values.jobs!.split(',').map(Number);
const cfg = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: Number(values['crop-pct']), imgSize: Number(values.size) });

/** A 500×375 photo-like image: smooth colour gradients and blobs plus mild noise. */
function syntheticImage(rng: Rng, w: number, h: number): Buffer {
  const buf = Buffer.alloc(w * h * 3);
  const f = [rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05)];
  const ph = [rng.uniform(0, 6), rng.uniform(0, 6), rng.uniform(0, 6)];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        const v = 128 + 80 * Math.sin(f[c] * x + ph[c]) * Math.cos(f[(c + 1) % 3] * y) + rng.normal(0, 8);
        buf[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return buf;
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mambaout-bench-data-'));
  try {
    const rng = new Rng(0);
    const files: string[] = [];
    const distinct = Math.min(N, 64); // encode 64 distinct images, copy the rest (decode cost is the same)
    const encoded: Buffer[] = [];
    for (let i = 0; i < distinct; i++) {
      const raw = syntheticImage(rng, 500, 375);
      encoded.push(await sharp(raw, { raw: { width: 500, height: 375, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
    }
    for (let i = 0; i < N; i++) {
      const p = path.join(dir, `img_${String(i).padStart(5, '0')}.jpg`);
      await sharp(encoded[i % distinct]).toFile(p);
      files.push(p);
    }
    console.log(`${N} JPEGs 500x375 in ${dir}; eval transform ${cfg.inputSize[1]}px crop_pct ${cfg.cropPct} ${cfg.interpolation}; ${os.cpus().length} CPUs`);

    // Stage costs, in-process, after a warm-up.
    // CPU time (process.cpuUsage) is reported next to wall time: it stays meaningful on a busy machine.
    const m = Math.min(N, 128);
    for (let i = 0; i < 16; i++) evalTransform(await decodeRGB(files[i]), cfg);
    let t = performance.now();
    let c = process.cpuUsage();
    const imgs = [];
    for (let i = 0; i < m; i++) imgs.push(await decodeRGB(files[i]));
    const decodeMs = (performance.now() - t) / m;
    const decodeCpu = cpuMs(c) / m;
    t = performance.now();
    c = process.cpuUsage();
    for (const img of imgs) evalTransform(img, cfg);
    const transformMs = (performance.now() - t) / m;
    const transformCpu = cpuMs(c) / m;
    console.log(
      `in-process per image: decode ${decodeMs.toFixed(2)} ms wall / ${decodeCpu.toFixed(2)} ms cpu, ` +
        `transform ${transformMs.toFixed(2)} ms wall / ${transformCpu.toFixed(2)} ms cpu`,
    );

    const samples = files.map((p, i) => ({ path: p, label: i % 10 }));
    for (const j of jobs) {
      const loader = new DataLoader({ samples, transform: { kind: 'eval', ...cfg }, batchSize, workers: j });
      // warm-up epoch over a few batches (starts workers, JIT)
      let b = 0;
      for await (const _ of loader) if (++b >= 3) break;
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      let count = 0;
      for await (const batch of loader) count += batch.shape[0];
      const s = (performance.now() - t0) / 1000;
      const cpu = cpuMs(c0);
      await loader.close();
      console.log(
        `-j ${j}: ${count} images in ${s.toFixed(2)} s = ${(count / s).toFixed(1)} img/s ` +
          `(${(cpu / count).toFixed(2)} ms cpu per image, all threads)`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
