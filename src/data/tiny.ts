/**
 * A small generated ImageNet-style dataset (the built-in default of `mambaout-train` and CI's smoke run):
 * `<root>/train/<class>/*.jpg` and `<root>/val/<class>/*.jpg`, JPEGs of varied sizes and aspect ratios whose class is
 * learnable from texture and colour (stripes of one orientation, checkerboards, rings, dots), with random phase,
 * scale, colour jitter and noise so that no two images are alike.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng } from '../utils/rng.js';

export const TINY_CLASSES = ['n00000001_hstripes', 'n00000002_vstripes', 'n00000003_checker', 'n00000004_rings', 'n00000005_dots', 'n00000006_diagonal'];

export interface TinyOptions {
  root: string;
  classes?: number;
  trainPerClass?: number;
  valPerClass?: number;
  seed?: number;
  /** Side range of generated images (each side drawn independently: varied aspect ratios). */
  minSide?: number;
  maxSide?: number;
}

const BASE_HUES: [number, number, number][] = [
  [220, 60, 50], [50, 160, 220], [70, 190, 80], [230, 190, 40], [160, 80, 200], [240, 120, 170],
];

function drawImage(cls: number, w: number, h: number, rng: Rng): Uint8Array {
  const img = new Uint8Array(w * h * 3);
  const period = rng.uniform(6, 16) * Math.max(w, h) / 96;
  const phase = rng.uniform(0, 2 * Math.PI);
  const [r0, g0, b0] = BASE_HUES[cls % BASE_HUES.length];
  const jit = () => rng.uniform(-30, 30);
  const fg = [r0 + jit(), g0 + jit(), b0 + jit()];
  const bg = [rng.uniform(10, 80), rng.uniform(10, 80), rng.uniform(10, 80)];
  const cx = rng.uniform(0.3, 0.7) * w;
  const cy = rng.uniform(0.3, 0.7) * h;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let v: number;
      switch (cls % 6) {
        case 0: v = Math.sin((2 * Math.PI * y) / period + phase); break;
        case 1: v = Math.sin((2 * Math.PI * x) / period + phase); break;
        case 2: v = Math.sin((2 * Math.PI * x) / period + phase) * Math.sin((2 * Math.PI * y) / period + phase); break;
        case 3: v = Math.sin((2 * Math.PI * Math.hypot(x - cx, y - cy)) / period + phase); break;
        case 4: v = Math.cos((2 * Math.PI * x) / period) + Math.cos((2 * Math.PI * y) / period) - 1.2; break;
        default: v = Math.sin((2 * Math.PI * (x + y)) / (period * 1.4) + phase); break;
      }
      const t = v > 0 ? 1 : 0;
      const o = (y * w + x) * 3;
      for (let c = 0; c < 3; c++) {
        const val = t ? fg[c] : bg[c];
        img[o + c] = Math.max(0, Math.min(255, Math.round(val + rng.normal(0, 12))));
      }
    }
  }
  return img;
}

/** Write the dataset (idempotent: returns early when `<root>/train` already exists). Returns the root. */
export async function makeTinyImagenet(opts: TinyOptions): Promise<{ root: string; created: boolean; images: number }> {
  const root = opts.root;
  const nClasses = Math.min(opts.classes ?? 4, TINY_CLASSES.length);
  const trainPer = opts.trainPerClass ?? 48;
  const valPer = opts.valPerClass ?? 16;
  const minSide = opts.minSide ?? 64;
  const maxSide = opts.maxSide ?? 128;
  try {
    await fsp.access(join(root, 'train'));
    return { root, created: false, images: 0 };
  } catch {
    /* create it */
  }
  const rng = new Rng(opts.seed ?? 0);
  const tmp = `${root}.${process.pid}.tmp`;
  await fsp.rm(tmp, { recursive: true, force: true });
  let count = 0;
  for (const [split, per] of [['train', trainPer], ['val', valPer]] as const) {
    for (let c = 0; c < nClasses; c++) {
      const dir = join(tmp, split, TINY_CLASSES[c]);
      await fsp.mkdir(dir, { recursive: true });
      for (let i = 0; i < per; i++) {
        const w = rng.randint(minSide, maxSide);
        const h = rng.randint(minSide, maxSide);
        const data = drawImage(c, w, h, rng);
        const jpg = await sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width: w, height: h, channels: 3 } })
          .jpeg({ quality: 90 })
          .toBuffer();
        await fsp.writeFile(join(dir, `${split}_${String(i).padStart(4, '0')}.JPEG`), jpg);
        count++;
      }
    }
  }
  // Publish atomically: a crash leaves no half-written dataset under `root`.
  await fsp.mkdir(join(root, '..'), { recursive: true });
  await fsp.rm(root, { recursive: true, force: true });
  await fsp.rename(tmp, root);
  return { root, created: true, images: count };
}
