/**
 * A folder of generated JPEGs for the loop benchmarks (scripts/gpu_loop_bench.sh, bench:train, bench:validate and
 * ../shared/bench/timm_loop.py read the same files): OUT/train/cK/*.jpg and OUT/val/cK/*.jpg, sides 375-500 px
 * drawn independently (ImageNet-like sizes and aspect ratios), a smooth random colour field plus per-pixel noise
 * (files of ~60-120 kB at quality 90, like ImageNet's). Deterministic per image index. Fast: `--jobs N` splits the
 * images over N processes (sharp/libvips encodes; 8,960 images take a few seconds on 32 cores).
 *
 *   node --import tsx scripts/make_jpeg_folder.ts OUT [--train 6400] [--val 2560] [--classes 10] [--jobs 8]
 */
import { mkdir } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { Rng } from '../src/utils/rng.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    train: { type: 'string', default: '6400' },
    val: { type: 'string', default: '2560' },
    classes: { type: 'string', default: '10' },
    jobs: { type: 'string', default: '1' },
    part: { type: 'string' },
  },
});
const out = positionals[0];
if (!out) {
  console.error('usage: make_jpeg_folder.ts OUT [--train N] [--val N] [--classes K] [--jobs J]');
  process.exit(2);
}
const nTrain = Number(values.train);
const nVal = Number(values.val);
const classes = Number(values.classes);
const jobs = Math.max(1, Number(values.jobs));

if (!values.part && jobs > 1) {
  for (const split of ['train', 'val']) for (let c = 0; c < classes; c++) await mkdir(path.join(out, split, `c${c}`), { recursive: true });
  const self = fileURLToPath(import.meta.url);
  const t0 = performance.now();
  const codes = await Promise.all(
    Array.from({ length: jobs }, (_, k) =>
      new Promise<number>((resolve) => {
        const child = spawn(process.execPath, [...process.execArgv, self, out, '--train', String(nTrain), '--val', String(nVal), '--classes', String(classes), '--part', `${k}/${jobs}`], { stdio: 'inherit' });
        child.on('exit', (code) => resolve(code ?? 1));
      }),
    ),
  );
  if (codes.some((c) => c !== 0)) {
    console.error(`make_jpeg_folder: ${codes.filter((c) => c !== 0).length} of ${jobs} parts failed`);
    process.exit(1);
  }
  console.log(`make_jpeg_folder: ${nTrain} train + ${nVal} val JPEGs in ${out} (${((performance.now() - t0) / 1000).toFixed(1)} s, ${jobs} processes)`);
  process.exit(0);
}

const [k, n] = values.part ? values.part.split('/').map(Number) : [0, 1];
sharp.concurrency(1);
// one noise buffer per process, read at a random offset per image
const noiseRng = new Rng(1234 + k);
const NOISE = new Int8Array(1 << 20);
for (let i = 0; i < NOISE.length; i++) NOISE[i] = Math.round(noiseRng.normal(0, 10));

async function makeImage(split: string, i: number): Promise<void> {
  const rng = new Rng((split === 'train' ? 0 : 1_000_000) + i);
  const w = rng.randint(375, 500);
  const h = rng.randint(375, 500);
  const gw = rng.randint(3, 9);
  const gh = rng.randint(3, 9);
  const grid = Buffer.alloc(gw * gh * 3);
  for (let j = 0; j < grid.length; j++) grid[j] = rng.randint(0, 255);
  const smooth = await sharp(grid, { raw: { width: gw, height: gh, channels: 3 } }).resize(w, h, { kernel: 'cubic', fit: 'fill' }).raw().toBuffer();
  const off = rng.randint(0, NOISE.length - smooth.length - 1);
  for (let j = 0; j < smooth.length; j++) {
    const v = smooth[j] + NOISE[off + j];
    smooth[j] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  const file = path.join(out, split, `c${i % classes}`, `${split}_${String(i).padStart(5, '0')}.jpg`);
  await sharp(smooth, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toFile(file);
}

if (!values.part) for (const split of ['train', 'val']) for (let c = 0; c < classes; c++) await mkdir(path.join(out, split, `c${c}`), { recursive: true });
for (const [split, count] of [['train', nTrain], ['val', nVal]] as const) {
  for (let i = k; i < count; i += n) await makeImage(split, i);
}
