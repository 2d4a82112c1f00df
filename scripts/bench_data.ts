/**
 * Data pipeline throughput and per-image CPU cost: the DataLoader (decode + per-image transform in worker threads,
 * uint8 batches) for timm's eval transform and for the MambaOut training transform, at each -j given.
 *
 *   npm run bench:data -- [--dir DIR] [--n 1024] [--batch 128] [--workers 0,1,2] [--mode eval,train] [--json FILE]
 *
 * Each timed epoch has max(n, 10 · batch · j) samples, so every worker builds several batches. Even so, the first
 * round (all workers start together) and the tail (workers finishing their last batch one by one while others idle)
 * weigh on a short epoch: "steady img/s" counts only the batches delivered between the j-th and the (total − j)-th,
 * what a training run with persistent workers sees between epoch ends, and "eff" is computed from it.
 *
 * - eval:  Resize(shorter side -> floor(224 / crop_pct), bicubic) + CenterCrop(224), crop_pct 1.0 (MambaOut), uint8
 *          (what the prefetch stage normalizes; Pillow-exact pixels);
 * - train: RandomResizedCrop(224, .08-1, 3/4-4/3, random bilinear/bicubic) + hflip .5 + rand-m9-mstd0.5-inc1, uint8.
 *
 * DIR: an image folder (searched recursively); when it does not exist, 256 generated 375-500 px JPEGs are written
 * there first (makeTinyImagenet; default DIR: <os tmpdir>/mambaout-bench-data-375-500). The sample list repeats the files up to --n (the page cache makes a repeat cost what a new file costs).
 *
 * Columns: img/s over one timed epoch after a warm-up epoch; "cpu ms/img" = process CPU time (all threads:
 * process.cpuUsage) / images; decode and transform = time inside the workers' synchronous stages per image (wall time
 * of code that does not wait, i.e. CPU time unless the OS preempts the thread); "eff" = steady img/s / (j · steady
 * img/s at -j 1). Pillow's counterpart, with its own scaling in N processes: scripts/bench_pillow.py --procs.
 * The load average is printed: on a shared machine compare CPU figures, not wall-clock ones.
 */
import { readdir } from 'node:fs/promises';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DataLoader, type LoaderStats } from '../src/data/loader.js';
import { resampleSimd } from '../src/data/transforms/resize.js';
import { makeTinyImagenet } from '../src/data/tiny.js';
import { MAMBAOUT_DATA_DEFAULTS, resolveDataConfig } from '../src/data/config.js';
import { DEFAULT_TRAIN_SPEC } from '../src/data/transforms/train.js';
import type { TransformSpec } from '../src/data/transforms/index.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    n: { type: 'string', default: '1024' },
    batch: { type: 'string', default: '128' },
    workers: { type: 'string', default: '0,1,2' },
    jobs: { type: 'string' }, // old name of --workers
    mode: { type: 'string', default: 'eval,train' },
    'crop-pct': { type: 'string', default: '1.0' },
    size: { type: 'string', default: '224' },
    json: { type: 'string' },
  },
});
const N = Number(values.n);
const batchSize = Number(values.batch);
const jobs = (values.jobs ?? values.workers!).split(',').map(Number);
const modes = values.mode!.split(',') as ('eval' | 'train')[];
const size = Number(values.size);

async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listImages(p)));
    else if (/\.(jpe?g|png|webp)$/i.test(e.name)) out.push(p);
  }
  return out.sort();
}

function specFor(mode: 'eval' | 'train'): TransformSpec {
  if (mode === 'eval') {
    const cfg = resolveDataConfig(MAMBAOUT_DATA_DEFAULTS, { cropPct: Number(values['crop-pct']), imgSize: size });
    return { kind: 'eval', ...cfg, output: 'uint8' };
  }
  return { kind: 'train', ...DEFAULT_TRAIN_SPEC, imgSize: size, scale: [0.08, 1.0], ratio: [3 / 4, 4 / 3] };
}

interface Row {
  mode: string;
  workers: number;
  images: number;
  imgPerSec: number;
  steadyImgPerSec: number;
  cpuMsPerImage: number;
  decodeMs: number | null;
  transformMs: number | null;
  efficiency: number | null;
}

async function main(): Promise<void> {
  const dir = values.dir ?? path.join(os.tmpdir(), 'mambaout-bench-data-375-500');
  if (!existsSync(dir)) {
    const r = await makeTinyImagenet({ root: dir, classes: 4, trainPerClass: 64, valPerClass: 0, minSide: 375, maxSide: 500 });
    if (r.created) console.log(`generated ${r.images} JPEGs in ${dir}`);
  }
  const files = await listImages(dir);
  if (files.length === 0) throw new Error(`no images under ${dir}`);
  const samplesFor = (j: number) =>
    Array.from({ length: Math.max(N, 10 * batchSize * j) }, (_, i) => ({ path: files[i % files.length], label: i % 10 }));
  const load = os.loadavg().map((v) => v.toFixed(1)).join(' ');
  console.log(
    `bench:data ${files.length} files, >= ${N} samples per run, from ${dir}, batch ${batchSize}, ${size} px; ` +
      `${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), load ${load}, node ${process.version}; ` +
      `JPEG decode libjpeg-turbo WASM SIMD, ` +
      `resampling ${resampleSimd() ? 'WASM SIMD' : 'JS'}`,
  );
  const rows: Row[] = [];
  for (const mode of modes) {
    const spec = specFor(mode);
    let one: number | null = null;
    for (const j of jobs) {
      const loader = new DataLoader<Uint8Array>({ samples: samplesFor(j), transform: spec, batchSize, workers: j, seed: 1 });
      // Warm-up: start the workers, JIT, page cache (a couple of batches per worker).
      let b = 0;
      for await (const _ of loader) if (++b >= Math.max(2, j)) break;
      const before = snapshot(loader);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      let count = 0;
      const arrivals: [number, number][] = []; // (time ms, images so far) after each batch
      for await (const batch of loader) {
        count += batch.shape[0];
        arrivals.push([performance.now(), count]);
        loader.recycle(batch); // as the prefetch stage does after its upload
      }
      const s = (performance.now() - t0) / 1000;
      const k = Math.max(1, j);
      const first = arrivals[Math.min(k, arrivals.length - 1) - 1];
      const last = arrivals[Math.max(arrivals.length - 1 - k, k)];
      const steady = first && last && last[0] > first[0] ? ((last[1] - first[1]) * 1000) / (last[0] - first[0]) : count / s;
      const cu = process.cpuUsage(c0);
      const st = diff(snapshot(loader), before);
      await loader.close();
      const ips = count / s;
      if (j === 1) one = steady;
      const row: Row = {
        mode,
        workers: j,
        images: count,
        imgPerSec: ips,
        steadyImgPerSec: steady,
        cpuMsPerImage: (cu.user + cu.system) / 1000 / count,
        decodeMs: st && st.images ? st.decodeMs / st.images : null,
        transformMs: st && st.images ? st.transformMs / st.images : null,
        efficiency: one && j >= 1 ? steady / (j * one) : null,
      };
      rows.push(row);
      printRow(row, rows.length === 1);
    }
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ load, cpus: os.cpus().length, rows }, null, 1));
}

function snapshot(loader: DataLoader<Uint8Array>): LoaderStats | null {
  const s = (loader as { stats?: LoaderStats }).stats;
  return s ? { ...s } : null;
}

function diff(a: LoaderStats | null, b: LoaderStats | null): LoaderStats | null {
  if (!a || !b) return null;
  return { images: a.images - b.images, decodeMs: a.decodeMs - b.decodeMs, transformMs: a.transformMs - b.transformMs };
}

function printRow(r: Row, header: boolean): void {
  const f = (v: number | null, d = 2) => (v === null ? '-' : v.toFixed(d));
  if (header) {
    console.log('| mode | -j | img/s | steady img/s | cpu ms/img | decode ms | transform ms | eff |');
    console.log('|---|---|---|---|---|---|---|---|');
  }
  console.log(
    `| ${r.mode} | ${r.workers} | ${r.imgPerSec.toFixed(1)} | ${r.steadyImgPerSec.toFixed(1)} | ${f(r.cpuMsPerImage)} | ${f(r.decodeMs)} | ` +
      `${f(r.transformMs)} | ${f(r.efficiency)} |`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
