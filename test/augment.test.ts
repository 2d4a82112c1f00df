/**
 * Training augmentations: RandAugment ops (Pillow semantics), RandomResizedCrop parameters,
 * RandomErasing, Mixup/CutMix (FastCollateMixup) and the composed train transform.
 * Expected pixels are worked out by hand from the Pillow / timm formulas (comments show the
 * arithmetic); float32 effects that change a result are called out.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { Rng } from '../src/utils/rng.js';
import { UserError } from '../src/errors.js';
import type { RGBImage } from '../src/data/transforms/resize.js';
import { pyRound } from '../src/utils/pyformat.js';
import {
  adjustHue, affine, autocontrast, blend, enhanceBrightness, enhanceColor, enhanceContrast, enhanceSharpness, equalize,
  invert, posterize, rotate, smooth, solarize, solarizeAdd, toGray,
} from '../src/data/transforms/pil.js';
import * as PIL from '../src/data/transforms/pil.js';
import * as REF from './helpers/pil_reference.js';
import {
  applyOp, levelToArgs, makeAugHparams, parseRandAugment, randAugment, sampleMagnitude,
  RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, type AugHparams, type RandOpName,
} from '../src/data/transforms/randaugment.js';
import { randomResizedCrop, resizedCrop, resizedCropScaled, rrcFallback, sampleRrcParams, shrinkOnLoadScale } from '../src/data/transforms/rrc.js';
import { eraseBatch, eraseImage } from '../src/data/transforms/erasing.js';
import { Mixup, mixupTarget, randBbox } from '../src/data/mixup.js';
import {
  colorJitterRanges, parseAaSpec, trainDecodeScale, trainTransform, TRAIN_TRANSFORM, type TrainTransformSpec,
} from '../src/data/transforms/train.js';

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

/** An Rng whose random()/beta()/normal() values are scripted (randint/randrange/uniform use random()). */
class ScriptedRng extends Rng {
  constructor(private rs: number[], private betas: number[] = [], private normals: number[] = []) {
    super(0);
  }
  random(): number {
    const v = this.rs.shift();
    if (v === undefined) throw new Error('scripted random() exhausted');
    return v;
  }
  beta(): number {
    const v = this.betas.shift();
    if (v === undefined) throw new Error('scripted beta() exhausted');
    return v;
  }
  normal(mean = 0, std = 1): number {
    const v = this.normals.shift();
    if (v === undefined) throw new Error('scripted normal() exhausted');
    return mean + std * v;
  }
  get remaining(): number {
    return this.rs.length;
  }
}

function mk(width: number, height: number, pixels: number[][]): RGBImage {
  assert.equal(pixels.length, width * height);
  return { data: Uint8Array.from(pixels.flat()), width, height };
}

function pixels(img: RGBImage): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < img.data.length; i += 3) out.push([img.data[i], img.data[i + 1], img.data[i + 2]]);
  return out;
}

/** Expected image built from a hand-written source map: [sx, sy] copies that source pixel, null = fill. */
function fromMap(src: RGBImage, map: ([number, number] | null)[], fill: number[]): number[][] {
  return map.map((m) => (m === null ? fill : [...src.data.subarray((m[1] * src.width + m[0]) * 3, (m[1] * src.width + m[0]) * 3 + 3)]));
}

/** 4×4 image, pixel (x, y) = (10y + x + 1, 50 + that, 100 + that): every pixel distinct. */
function grid4(): RGBImage {
  const p: number[][] = [];
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) p.push([10 * y + x + 1, 60 + 10 * y + x + 1, 100 + 10 * y + x + 1]);
  return mk(4, 4, p);
}

const FILL = [124, 116, 104];
const HP_NEAREST: AugHparams = { translateConst: 100, translatePct: 0.45, fill: [124, 116, 104], interpolation: 'nearest' };

// ------------------------------------------------------------------------------------------------
// Pillow pixel ops
// ------------------------------------------------------------------------------------------------

describe('Pillow point ops', () => {
  test('invert, posterize, solarize, solarize-add lookup tables', () => {
    const img = mk(2, 1, [[0, 127, 128], [200, 255, 55]]);
    assert.deepEqual(pixels(invert(img)), [[255, 128, 127], [55, 0, 200]]);
    // bits 1: mask 0b1000_0000
    assert.deepEqual(pixels(posterize(img, 1)), [[0, 0, 128], [128, 128, 0]]);
    // bits 4: mask 0xF0 (127 -> 112, 200 = 0xC8 -> 0xC0, 55 = 0x37 -> 0x30)
    assert.deepEqual(pixels(posterize(img, 4)), [[0, 112, 128], [192, 240, 48]]);
    // bits 0 (PosterizeIncreasing at m = 10): all black
    assert.deepEqual(pixels(posterize(img, 0)), [[0, 0, 0], [0, 0, 0]]);
    const s = mk(5, 1, [[0, 0, 0], [25, 25, 25], [26, 26, 26], [200, 200, 200], [255, 255, 255]]);
    // threshold 26: v >= 26 -> 255 - v
    assert.deepEqual(pixels(solarize(s, 26)).map((p) => p[0]), [0, 25, 229, 55, 0]);
    // solarize add 99 below 128
    const a = mk(5, 1, [[0, 0, 0], [27, 27, 27], [127, 127, 127], [128, 128, 128], [255, 255, 255]]);
    assert.deepEqual(pixels(solarizeAdd(a, 99)).map((p) => p[0]), [99, 126, 226, 128, 255]);
    assert.deepEqual(pixels(solarizeAdd(a, 200)).map((p) => p[0]), [200, 227, 255, 128, 255]);
  });

  test('autocontrast: per-channel stretch with int() truncation', () => {
    // R {10, 40, 95}: scale 255/85 = 3, offset -30 -> 0, 90, 255
    // G constant 77: identity
    // B {0, 37, 100}: scale 2.55 -> 37·2.55 = 94.35 -> 94; 100·2.55 = 254.99999999999997 in double -> 254 (as PIL)
    const img = mk(3, 1, [[10, 77, 0], [40, 77, 37], [95, 77, 100]]);
    assert.deepEqual(pixels(autocontrast(img)), [[0, 77, 0], [90, 77, 94], [255, 77, 254]]);
  });

  test("equalize: PIL's lut rule, identity cases, clipping", () => {
    // 1020×1 image.
    // R: 510×10, 255×50, 255×200 -> step = (1020 - 255) // 255 = 3, n0 = 1:
    //    lut[10] = 1 // 3 = 0, lut[50] = (1 + 510) // 3 = 170, lut[200] = (1 + 765) // 3 = 255
    // G: 300×60, 720×61 -> step = 300 // 255 = 1: lut[60] = 0, lut[61] = 300 -> clipped to 255
    // B: 20×5, 1000×100 -> step = 20 // 255 = 0 -> identity
    const n = 1020;
    const p: number[][] = [];
    for (let i = 0; i < n; i++) p.push([i < 510 ? 10 : i < 765 ? 50 : 200, i < 300 ? 60 : 61, i < 20 ? 5 : 100]);
    const out = pixels(equalize(mk(n, 1, p)));
    assert.deepEqual(out[0], [0, 0, 5]);
    assert.deepEqual(out[400], [0, 255, 100]);
    assert.deepEqual(out[600], [170, 255, 100]);
    assert.deepEqual(out[1000], [255, 255, 100]);
    // a single value per channel: identity
    assert.deepEqual(pixels(equalize(mk(2, 1, [[7, 8, 9], [7, 8, 9]]))), [[7, 8, 9], [7, 8, 9]]);
  });
});

describe('Pillow blend and ImageEnhance', () => {
  // p0 = (100, 150, 200): L = (19595·100 + 38470·150 + 7471·200 + 32768) >> 16 = 9256968 >> 16 = 141
  // p1 = (255, 0, 0):     L = (4996725 + 32768) >> 16 = 76
  const img = mk(2, 1, [[100, 150, 200], [255, 0, 0]]);
  const up = 1.0 + 0.81; // ColorIncreasing & co at m = 9, sign +
  const down = 1.0 - 0.81; // sign - (0.18999999999999995)

  test('RGB -> L', () => {
    assert.deepEqual([...toGray(img)], [141, 76]);
  });

  test('Color', () => {
    // 141 + 0.19·(100-141, 150-141, 200-141) = 133.21, 142.71, 152.21; 76 + 0.19·(179, -76, -76) = 110.01, 61.56
    assert.deepEqual(pixels(enhanceColor(img, down)), [[133, 142, 152], [110, 61, 61]]);
    // 141 + 1.81·(-41, 9, 59) = 66.79, 157.29, 247.79; 76 + 1.81·179 = 399.99 -> 255; 76 - 137.56 -> 0
    assert.deepEqual(pixels(enhanceColor(img, up)), [[66, 157, 247], [255, 0, 0]]);
  });

  test('Contrast (mean = int(mean(L) + 0.5) = int(108.5 + 0.5) = 109)', () => {
    // 109 + 1.81·(-9, 41, 91) = 92.71, 183.21, 273.71 -> 255; 109 + 1.81·146 -> 255; 109 - 197.29 -> 0
    assert.deepEqual(pixels(enhanceContrast(img, up)), [[92, 183, 255], [255, 0, 0]]);
    // 109 + 0.19·(-9, 41, 91) = 107.29, 116.79, 126.29; 109 + 0.19·(146, -109, -109) = 136.74, 88.29
    assert.deepEqual(pixels(enhanceContrast(img, down)), [[107, 116, 126], [136, 88, 88]]);
  });

  test('Brightness: float32 blend (PIL computes in C float)', () => {
    // float(1.81) = 1.80999994; 100·1.80999994 = 180.9999943 rounds to 181.0f -> 181 (double would give 180)
    // 150·1.81 = 271.5 -> 255
    assert.deepEqual(pixels(enhanceBrightness(img, up)), [[181, 255, 255], [255, 0, 0]]);
    // float(0.19) = 0.18999999762; 100· -> 18.99999976 rounds to 19.0f -> 19 (double would give 18);
    // 150· -> 28.5f -> 28; 200· -> 38.0f -> 38; 255· -> 48.45 -> 48
    assert.deepEqual(pixels(enhanceBrightness(img, down)), [[19, 28, 38], [48, 0, 0]]);
  });

  test('hue shift through PIL HSV (torchvision adjust_hue)', () => {
    const img2 = mk(3, 1, [[255, 0, 0], [90, 90, 90], [0, 0, 255]]);
    // +1/3: H += uint8(85) -> red (H 0) becomes H 85 = green; grey has S = 0 and stays
    // blue: H = int(255·4/6) = 170; 170 + 85 = 255 -> i = 6, i % 6 = 0, f = 0 -> red
    assert.deepEqual(pixels(adjustHue(img2, 1 / 3)), [[0, 255, 0], [90, 90, 90], [255, 0, 0]]);
    // -1/3: uint8(-85) = 171 -> red becomes H 171: i = 4, f = 6/255 -> (round(255·f), 0, 255) = (6, 0, 255)
    assert.deepEqual(pixels(adjustHue(img2, -1 / 3))[0], [6, 0, 255]);
  });

  test('blend shortcuts and clipping', () => {
    const a = mk(1, 1, [[10, 20, 30]]);
    const b = mk(1, 1, [[250, 0, 30]]);
    assert.deepEqual(pixels(blend(a, b, 0)), [[10, 20, 30]]);
    assert.deepEqual(pixels(blend(a, b, 1)), [[250, 0, 30]]);
    // 10 + 0.5·240 = 130; 20 - 10 = 10
    assert.deepEqual(pixels(blend(a, b, 0.5)), [[130, 10, 30]]);
    // 10 + 2·240 = 490 -> 255; 20 - 40 -> 0; extrapolation clips
    assert.deepEqual(pixels(blend(a, b, 2)), [[255, 0, 30]]);
    assert.deepEqual(pixels(blend(a, b, -1)), [[0, 40, 30]]);
  });

  test('Sharpness: SMOOTH 3×3 kernel with rounding, border kept', () => {
    // R: centre 132, rest 0 -> smoothed centre = 5·132/13 + 0.5 = 51.27 -> 51 (the +0.5 rounding matters)
    // G: all 100 -> smoothed 100
    // B: centre 0, rest 26 -> 8·26/13 + 0.5 = 16.5 -> 16
    const p: number[][] = [];
    for (let i = 0; i < 9; i++) p.push(i === 4 ? [132, 100, 0] : [0, 100, 26]);
    const img3 = mk(3, 3, p);
    assert.deepEqual(pixels(smooth(img3))[4], [51, 100, 16]);
    const sUp = pixels(enhanceSharpness(img3, up));
    // 51 + 1.81·81 = 197.61 -> 197; 16 + 1.81·(-16) = -12.96 -> 0
    assert.deepEqual(sUp[4], [197, 100, 0]);
    const sDown = pixels(enhanceSharpness(img3, down));
    // 51 + 0.19·81 = 66.39 -> 66; 16 - 3.04 = 12.96 -> 12
    assert.deepEqual(sDown[4], [66, 100, 12]);
    for (const i of [0, 1, 2, 3, 5, 6, 7, 8]) {
      assert.deepEqual(sUp[i], [0, 100, 26]);
      assert.deepEqual(sDown[i], [0, 100, 26]);
    }
    // images smaller than 3×3 are unchanged
    const tiny = mk(2, 2, [[1, 2, 3], [200, 100, 0], [9, 9, 9], [0, 0, 0]]);
    assert.deepEqual(pixels(enhanceSharpness(tiny, up)), pixels(tiny));
  });
});

describe('Pillow affine / rotate', () => {
  test('translate (nearest): TranslateXRel at m = 9 is 0.405·width = 1.62 px', () => {
    const img = grid4();
    // source x = x + 0.5 + 1.62 -> floor: 2, 3, 4 (out), 5 (out)
    const out = affine(img, [1, 0, 0.405 * 4, 0, 1, 0], 'nearest', [124, 116, 104]);
    const map: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) map.push([2, y], [3, y], null, null);
    assert.deepEqual(pixels(out), fromMap(img, map, FILL));
    // negative: source x = x + 0.5 - 1.62 = -1.12, -0.12 (both outside), 0.88, 1.88
    const neg = affine(img, [1, 0, -0.405 * 4, 0, 1, 0], 'nearest', [124, 116, 104]);
    const nmap: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) nmap.push(null, null, [0, y], [1, y]);
    assert.deepEqual(pixels(neg), fromMap(img, nmap, FILL));
    // TranslateYRel through applyOp: source y = y + 0.5 + 1.62
    const ty = applyOp('TranslateYRel', img, [0.405], HP_NEAREST, new Rng(1));
    const ymap: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) ymap.push(y < 2 ? [x, y + 2] : null);
    assert.deepEqual(pixels(ty), fromMap(img, ymap, FILL));
  });

  test('shear (nearest, 16.16 fixed point): ShearX / ShearY at m = 9 (factor 0.27)', () => {
    const img = grid4();
    // ShearX: source x = x + 0.5 + 0.27·(y + 0.5): offsets 0.635, 0.905, 1.175, 1.445 -> shift 0, 0, 1, 1
    const sx = applyOp('ShearX', img, [0.27], HP_NEAREST, new Rng(1));
    const map: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) map.push(y < 2 ? [x, y] : x + 1 < 4 ? [x + 1, y] : null);
    assert.deepEqual(pixels(sx), fromMap(img, map, FILL));
    // -0.27: offsets 0.365, 0.095, -0.175, -0.445 -> shift 0, 0, -1, -1
    const sxn = applyOp('ShearX', img, [-0.27], HP_NEAREST, new Rng(1));
    const nmap: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) nmap.push(y < 2 ? [x, y] : x - 1 >= 0 ? [x - 1, y] : null);
    assert.deepEqual(pixels(sxn), fromMap(img, nmap, FILL));
    // ShearY: source y = 0.27·(x + 0.5) + y + 0.5 -> columns 2, 3 move up by one
    const sy = applyOp('ShearY', img, [0.27], HP_NEAREST, new Rng(1));
    const ymap: ([number, number] | null)[] = [];
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) ymap.push(x < 2 ? [x, y] : y + 1 < 4 ? [x, y + 1] : null);
    assert.deepEqual(pixels(sy), fromMap(img, ymap, FILL));
  });

  test('bilinear / bicubic sampling of a half-pixel translation', () => {
    const row = mk(4, 1, [[0, 0, 0], [100, 100, 100], [200, 200, 200], [50, 50, 50]]);
    // source x = x + 1.0: bilinear averages neighbours; x = 3 samples at 4.0 >= width -> fill
    const bl = affine(row, [1, 0, 0.5, 0, 1, 0], 'bilinear', [124, 116, 104]);
    assert.deepEqual(pixels(bl), [[50, 50, 50], [150, 150, 150], [125, 125, 125], FILL]);
    // Pillow's transform cubic (a = -1), taps clamped at the edges:
    //  x=0: taps (0, 0, 100, 200), d = .5 -> 37.5;  x=1: (0, 100, 200, 50) -> 181.25;  x=2: (100, 200, 50, 50) -> 137.5
    const bc = affine(row, [1, 0, 0.5, 0, 1, 0], 'bicubic', [124, 116, 104]);
    assert.deepEqual(pixels(bc), [[37, 37, 37], [181, 181, 181], [137, 137, 137], FILL]);
  });

  test('rotate 90 degrees counter-clockwise exactly', () => {
    const img = grid4();
    // square: transpose ROTATE_90, out[r][c] = in[c][W-1-r]
    const r90 = rotate(img, 90, 'bilinear', [124, 116, 104]);
    const map: [number, number][] = [];
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) map.push([3 - r, c]);
    assert.deepEqual(pixels(r90), fromMap(img, map, FILL));
    // 4×2 (affine path): matrix (0, -1, 3, 1, 0, -1): source = (2.5 - y, x - 0.5) -> columns 0 and 3 are fill
    const wide = mk(4, 2, [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [5, 5, 5], [6, 6, 6], [7, 7, 7], [8, 8, 8]]);
    for (const interp of ['nearest', 'bilinear', 'bicubic'] as const) {
      const w90 = rotate(wide, 90, interp, [124, 116, 104]);
      const wmap: ([number, number] | null)[] = [];
      for (let y = 0; y < 2; y++) for (let x = 0; x < 4; x++) wmap.push(x === 0 || x === 3 ? null : [2 - y, x - 1]);
      assert.deepEqual(pixels(w90), fromMap(wide, wmap, FILL), interp);
    }
    // -90 = 270 (clockwise), 360 = identity, 180 = point reflection
    const r270 = rotate(img, -90, 'nearest', [0, 0, 0]);
    const m270: [number, number][] = [];
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) m270.push([r, 3 - c]);
    assert.deepEqual(pixels(r270), fromMap(img, m270, FILL));
    assert.deepEqual(pixels(rotate(img, 360, 'bicubic', [0, 0, 0])), pixels(img));
    assert.deepEqual(pixels(rotate(wide, 180, 'nearest', [0, 0, 0])).map((p) => p[0]), [8, 7, 6, 5, 4, 3, 2, 1]);
  });

  test('rotate by 27 degrees keeps the centre pixel of an odd image and fills the corners', () => {
    const p: number[][] = [];
    for (let i = 0; i < 25; i++) p.push([i, i, i]);
    const img = mk(5, 5, p);
    const out = pixels(rotate(img, 27, 'nearest', [124, 116, 104]));
    assert.deepEqual(out[12], [12, 12, 12]);
    // corner (0,0): centre (0.5, 0.5) maps to source (2.5 + cos·(-2) - sin·... ) outside -> fill
    assert.deepEqual(out[0], FILL);
    assert.deepEqual(out[24], FILL);
  });
});

describe('Pillow ops match the straightforward reference ports byte for byte (random images and parameters)', () => {
  // test/helpers/pil_reference.ts keeps the per-pixel ports the fast loops in pil.ts replaced.
  const rng = new Rng(12345);
  /** Random image: uniform noise, saturated 0/255 noise (clipping paths) or smooth gradients (plus flat runs). */
  function randomImage(w: number, h: number): RGBImage {
    const kind = rng.randint(0, 2);
    const data = new Uint8Array(w * h * 3);
    const f = rng.uniform(0.05, 0.6);
    for (let i = 0; i < data.length; i++) {
      const x = Math.floor(i / 3) % w;
      const y = Math.floor(i / 3 / w);
      if (kind === 0) data[i] = rng.randint(0, 255);
      else if (kind === 1) data[i] = rng.random() < 0.5 ? 0 : 255;
      else data[i] = Math.max(0, Math.min(255, Math.round(128 + 127 * Math.sin(f * x + i % 3) * Math.cos(f * y))));
    }
    return { data, width: w, height: h };
  }
  const size = (): number => (rng.random() < 0.2 ? rng.randint(1, 4) : rng.randint(5, 41));
  const fill = (): [number, number, number] => [rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)];
  const same = (a: RGBImage, b: RGBImage, what: string): void => {
    assert.equal(a.width, b.width, what);
    assert.equal(a.height, b.height, what);
    assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)), what);
  };

  test('affine and rotate (nearest, bilinear, bicubic): RandAugment matrices, random matrices and output sizes', () => {
    for (let n = 0; n < 600; n++) {
      const w = size();
      const h = size();
      const img = randomImage(w, h);
      const interp = (['nearest', 'bilinear', 'bicubic'] as const)[n % 3];
      const fc = fill();
      const m = rng.uniform(-0.5, 0.5);
      const kind = rng.randint(0, 6);
      let a: number[];
      let outW = w;
      let outH = h;
      if (kind === 0) a = [1, m, 0, 0, 1, 0]; // ShearX
      else if (kind === 1) a = [1, 0, 0, m, 1, 0]; // ShearY
      else if (kind === 2) a = [1, 0, m * w, 0, 1, 0]; // TranslateXRel
      else if (kind === 3) a = [1, 0, 0, 0, 1, rng.randint(-20, 20)]; // TranslateY (integer pixels)
      else {
        a = [rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-30, 30), rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(-30, 30)];
        if (kind === 5) [a[1], a[3]] = [0, 0];
        outW = size();
        outH = size();
      }
      const what = `${interp} ${w}x${h} -> ${outW}x${outH} [${a.join(', ')}]`;
      same(PIL.affine(img, a, interp, fc, outW, outH), REF.affine(img, a, interp, fc, outW, outH), what);
      const angle = rng.random() < 0.2 ? rng.randint(-4, 4) * 90 : rng.uniform(-180, 180);
      same(PIL.rotate(img, angle, interp, fc), REF.rotate(img, angle, interp, fc), `rotate ${angle} ${interp} ${w}x${h}`);
    }
  });

  test('blend, ImageEnhance ops, SMOOTH and FLIP_LEFT_RIGHT', () => {
    for (let n = 0; n < 400; n++) {
      const w = size();
      const h = size();
      const im1 = randomImage(w, h);
      const im2 = randomImage(w, h);
      const alpha = rng.random() < 0.1 ? rng.randint(-1, 2) : rng.uniform(-1, 2.5);
      same(PIL.blend(im1, im2, alpha), REF.blend(im1, im2, alpha), `blend ${alpha}`);
      same(PIL.enhanceColor(im1, alpha), REF.enhanceColor(im1, alpha), `Color ${alpha}`);
      same(PIL.enhanceContrast(im1, alpha), REF.enhanceContrast(im1, alpha), `Contrast ${alpha}`);
      same(PIL.enhanceBrightness(im1, alpha), REF.enhanceBrightness(im1, alpha), `Brightness ${alpha}`);
      same(PIL.enhanceSharpness(im1, alpha), REF.enhanceSharpness(im1, alpha), `Sharpness ${alpha}`);
      same(PIL.smooth(im1), REF.smooth(im1), `smooth ${w}x${h}`);
      same(PIL.flipLeftRight(im1), REF.flipLeftRight(im1), `flip ${w}x${h}`);
    }
    // the word path (width a multiple of 4) at the training size, and a view at an odd byte offset (byte path)
    const big = randomImage(224, 7);
    same(PIL.flipLeftRight(big), REF.flipLeftRight(big), 'flip 224x7');
    const buf = new Uint8Array(1 + 8 * 3 * 3);
    buf.set(randomImage(8, 3).data, 1);
    const view = { data: buf.subarray(1), width: 8, height: 3 };
    same(PIL.flipLeftRight(view), REF.flipLeftRight(view), 'flip of an unaligned view');
  });
});

// ------------------------------------------------------------------------------------------------
// RandAugment
// ------------------------------------------------------------------------------------------------

describe('RandAugment', () => {
  test('parse rand-m9-mstd0.5-inc1 and rand-m7-n3-mstd0-mmax10', () => {
    const a = parseRandAugment('rand-m9-mstd0.5-inc1');
    assert.equal(a.magnitude, 9);
    assert.equal(a.numLayers, 2);
    assert.equal(a.magnitudeStd, 0.5);
    assert.equal(a.magnitudeMax, null);
    assert.equal(a.increasing, true);
    assert.deepEqual(a.ops, RAND_INCREASING_TRANSFORMS);
    assert.equal(a.ops.length, 15);
    const b = parseRandAugment('rand-m7-n3-mstd0-mmax10');
    assert.equal(b.magnitude, 7);
    assert.equal(b.numLayers, 3);
    assert.equal(b.magnitudeStd, 0);
    assert.equal(b.magnitudeMax, 10);
    assert.equal(b.increasing, false);
    assert.deepEqual(b.ops, RAND_TRANSFORMS);
    // quirks: inc0 still selects the increasing list; a token without digits is ignored; mstd > 100 = uniform
    assert.equal(parseRandAugment('rand-m9-inc0').increasing, true);
    assert.equal(parseRandAugment('rand-m9-inc').increasing, false);
    assert.equal(parseRandAugment('rand-mstd101').magnitudeStd, Infinity);
    assert.equal(parseRandAugment('rand').magnitude, 10);
    assert.throws(() => parseRandAugment('rand-m9-x3'), UserError);
    assert.throws(() => parseRandAugment('rand-m9.5'), UserError);
    assert.throws(() => parseAaSpec('augmix-m5'), UserError);
    assert.throws(() => parseAaSpec('original'), UserError);
    assert.equal(parseAaSpec(null), null);
    assert.equal(parseAaSpec(''), null);
    assert.equal(parseAaSpec('rand-m9-mstd0.5-inc1')?.magnitude, 9);
  });

  test('magnitude -> argument mapping at m = 9', () => {
    const hp = makeAugHparams(224);
    assert.deepEqual(hp.fill, [124, 116, 104]);
    assert.equal(hp.translateConst, 100);
    // random() <= 0.5 keeps the sign, > 0.5 negates
    const keep = () => new ScriptedRng([0.25]);
    const flip = () => new ScriptedRng([0.75]);
    const arg = (n: RandOpName, r: Rng) => levelToArgs(n, 9, hp, r)[0];
    assert.equal(arg('PosterizeIncreasing', keep()), 1); // 4 - int(3.6)
    assert.equal(arg('SolarizeIncreasing', keep()), 26); // 256 - int(230.4)
    assert.equal(arg('SolarizeAdd', keep()), 99); // int(99.00000000000001)
    assert.equal(arg('Posterize', keep()), 3);
    assert.equal(arg('Solarize', keep()), 230);
    assert.ok(Math.abs(arg('Color', keep()) - 1.72) < 1e-12); // 0.9·1.8 + 0.1
    for (const n of ['ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing'] as const) {
      assert.ok(Math.abs(arg(n, keep()) - 1.81) < 1e-12, n);
      assert.ok(Math.abs(arg(n, flip()) - 0.19) < 1e-12, n);
    }
    assert.ok(Math.abs(arg('Rotate', keep()) - 27) < 1e-12);
    assert.ok(Math.abs(arg('Rotate', flip()) + 27) < 1e-12);
    assert.ok(Math.abs(arg('ShearX', keep()) - 0.27) < 1e-12);
    assert.ok(Math.abs(arg('ShearY', flip()) + 0.27) < 1e-12);
    assert.ok(Math.abs(arg('TranslateXRel', keep()) - 0.405) < 1e-12);
    assert.ok(Math.abs(arg('TranslateYRel', flip()) + 0.405) < 1e-12);
    assert.ok(Math.abs(arg('TranslateX', keep()) - 90) < 1e-12);
    assert.deepEqual(levelToArgs('Equalize', 9, hp, keep()), []);
    // m = 10 extremes: posterize 0 bits, solarize everything, enhance clamps at 0.1
    assert.equal(levelToArgs('PosterizeIncreasing', 10, hp, keep())[0], 0);
    assert.equal(levelToArgs('SolarizeIncreasing', 10, hp, keep())[0], 0);
    assert.equal(levelToArgs('SolarizeAdd', 10, hp, keep())[0], 110);
    assert.equal(levelToArgs('ColorIncreasing', 10, hp, flip())[0], 0.1);
  });

  test('magnitude noise N(m, std) clipped to [0, mmax]', () => {
    const rng = new Rng(7);
    let sum = 0;
    let max = -Infinity;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const m = sampleMagnitude({ magnitude: 9, magnitudeStd: 0.5, magnitudeMax: null }, rng);
      sum += m;
      max = Math.max(max, m);
    }
    // E[min(N(9, .5), 10)] = 9 - 0.5·(φ(2) - 2·(1 - Φ(2))) ≈ 8.9958
    assert.ok(Math.abs(sum / n - 8.9958) < 0.01, `mean ${sum / n}`);
    assert.equal(max, 10);
    assert.equal(sampleMagnitude({ magnitude: 12, magnitudeStd: 0, magnitudeMax: null }, rng), 10);
    assert.equal(sampleMagnitude({ magnitude: 12, magnitudeStd: 0, magnitudeMax: 0 }, rng), 10); // mmax0 is falsy
    assert.equal(sampleMagnitude({ magnitude: 12, magnitudeStd: 0, magnitudeMax: 11 }, rng), 11);
    for (let i = 0; i < 1000; i++) {
      const u = sampleMagnitude({ magnitude: 9, magnitudeStd: Infinity, magnitudeMax: null }, rng);
      assert.ok(u >= 0 && u < 9);
    }
  });

  test('op choice, probability gate (rand > 0.5 skips) and order', () => {
    const cfg = parseRandAugment('rand-m9-n2-inc1');
    const img = grid4();
    // picks: floor(r·15) -> 2 (Invert), 5 (SolarizeIncreasing); Invert gate 0.5 (applied), Solarize gate 0.51 (skipped)
    let rng = new ScriptedRng([2.5 / 15, 5.5 / 15, 0.5, 0.51]);
    assert.deepEqual(pixels(randAugment(img, cfg, HP_NEAREST, rng)), pixels(invert(img)));
    assert.equal(rng.remaining, 0);
    // both applied: Invert then Solarize(26)
    rng = new ScriptedRng([2.5 / 15, 5.5 / 15, 0.1, 0.1]);
    assert.deepEqual(pixels(randAugment(img, cfg, HP_NEAREST, rng)), pixels(solarize(invert(img), 26)));
    // with noise: gate, normal draw, sign draw (TranslateXRel, index 13), magnitude 9 + 0.5·2 = 10 -> 0.45·4 = 1.8 px
    const noisy = parseRandAugment('rand-m9-n1-mstd0.5-inc1');
    rng = new ScriptedRng([13.5 / 15, 0.2, 0.2], [], [2]);
    const out = randAugment(img, noisy, HP_NEAREST, rng);
    assert.deepEqual(pixels(out), pixels(affine(img, [1, 0, 1.8, 0, 1, 0], 'nearest', [124, 116, 104])));
    assert.equal(rng.remaining, 0);
  });

  test("'random' interpolation draws bilinear or bicubic per geometric op call", () => {
    const hp = makeAugHparams(4);
    const row = mk(4, 1, [[0, 0, 0], [100, 100, 100], [200, 200, 200], [50, 50, 50]]);
    // TranslateX by 0.5 px (translate_const = int(4·0.45) = 1; level 5 -> 0.5): r < 0.5 -> bilinear, else bicubic
    assert.equal(hp.translateConst, 1);
    const bl = applyOp('TranslateX', row, [0.5], hp, new ScriptedRng([0.2]));
    const bc = applyOp('TranslateX', row, [0.5], hp, new ScriptedRng([0.7]));
    assert.deepEqual(pixels(bl)[1], [150, 150, 150]);
    assert.deepEqual(pixels(bc)[1], [181, 181, 181]);
  });

  test('every op of both lists runs on a random image and keeps its size', () => {
    const rng = new Rng(3);
    const data = new Uint8Array(17 * 11 * 3);
    for (let i = 0; i < data.length; i++) data[i] = rng.randint(0, 255);
    const img = { data, width: 17, height: 11 };
    const hp = makeAugHparams(11);
    for (const name of new Set([...RAND_TRANSFORMS, ...RAND_INCREASING_TRANSFORMS])) {
      for (const m of [0, 5, 9, 10]) {
        const out = applyOp(name, img, levelToArgs(name, m, hp, rng), hp, rng);
        assert.equal(out.width, 17, name);
        assert.equal(out.height, 11, name);
        assert.equal(out.data.length, data.length, name);
      }
    }
  });
});

// ------------------------------------------------------------------------------------------------
// RandomResizedCrop
// ------------------------------------------------------------------------------------------------

describe('RandomResizedCrop', () => {
  test('accepted boxes lie inside the image and respect scale / ratio (up to rounding)', () => {
    const rng = new Rng(11);
    const W = 500, H = 375, A = W * H;
    const scale: [number, number] = [0.08, 1];
    const ratio: [number, number] = [3 / 4, 4 / 3];
    let fallbacks = 0;
    const fb = rrcFallback(W, H, ratio);
    for (let i = 0; i < 5000; i++) {
      const b = sampleRrcParams(W, H, scale, ratio, rng);
      assert.ok(b.top >= 0 && b.left >= 0 && b.top + b.height <= H && b.left + b.width <= W, JSON.stringify(b));
      assert.ok(b.width >= 1 && b.height >= 1);
      if (b.top === fb.top && b.left === fb.left && b.width === fb.width && b.height === fb.height) fallbacks++;
      // w = round(sqrt(T·a)), h = round(sqrt(T/a)): w·h ≈ T ∈ [0.08 A, A], w/h ≈ a ∈ ratio
      assert.ok((b.width + 0.5) * (b.height + 0.5) >= scale[0] * A, JSON.stringify(b));
      assert.ok((b.width - 0.5) * (b.height - 0.5) <= scale[1] * A, JSON.stringify(b));
      assert.ok((b.width + 0.5) / (b.height - 0.5) >= ratio[0], JSON.stringify(b));
      assert.ok((b.width - 0.5) / (b.height + 0.5) <= ratio[1], JSON.stringify(b));
    }
    assert.ok(fallbacks < 50, `fallbacks ${fallbacks}`);
  });

  test('fallback central crops are exact', () => {
    const rng = new Rng(1);
    const never: [number, number] = [2, 3]; // target area larger than the image: every attempt fails
    const r: [number, number] = [3 / 4, 4 / 3];
    // wide 100×50: h = 50, w = round(50·4/3) = round(66.67) = 67, left = (100 - 67) // 2 = 16
    assert.deepEqual(sampleRrcParams(100, 50, never, r, rng), { top: 0, left: 16, height: 50, width: 67 });
    // tall 50×100: w = 50, h = round(50 / 0.75) = 67, top = 16
    assert.deepEqual(sampleRrcParams(50, 100, never, r, rng), { top: 16, left: 0, height: 67, width: 50 });
    // in range 60×50: whole image
    assert.deepEqual(sampleRrcParams(60, 50, never, r, rng), { top: 0, left: 0, height: 50, width: 60 });
    // half to even: w = round(3·1.5) = round(4.5) = 4 (left 3); round(3·2.5) = round(7.5) = 8 (left 0)
    assert.deepEqual(sampleRrcParams(10, 3, never, [0.5, 1.5], rng), { top: 0, left: 3, height: 3, width: 4 });
    assert.deepEqual(sampleRrcParams(9, 3, never, [0.5, 2.5], rng), { top: 0, left: 0, height: 3, width: 8 });
    // scale 1, ratio 1 on 20×10: w = h = round(√200) = 14 > 10 every time -> fallback h = 10, w = round(10·1) = 10
    assert.deepEqual(sampleRrcParams(20, 10, [1, 1], [1, 1], rng), { top: 0, left: 5, height: 10, width: 10 });
    assert.equal(pyRound(2.5), 2);
    assert.equal(pyRound(3.5), 4);
  });

  test('scripted attempt: uniform draws, rounding, inclusive randint', () => {
    // 10×10, scale (0.25, 0.25) -> target 25; log-ratio draw 0.5 of [ln .5, ln 2] = 0 -> aspect 1 -> w = h = 5
    // top = randint(0, 5) with r = 0.99 -> 5 (inclusive high), left with r = 0 -> 0
    const rng = new ScriptedRng([0.3, 0.5, 0.99, 0]);
    assert.deepEqual(sampleRrcParams(10, 10, [0.25, 0.25], [0.5, 2], rng), { top: 5, left: 0, height: 5, width: 5 });
  });

  test('crop + resize: identity size copies pixels; output size and both random filters', () => {
    const img = grid4();
    const out = resizedCrop(img, { top: 1, left: 2, height: 2, width: 2 }, [2, 2], 'bicubic');
    assert.deepEqual(pixels(out), fromMap(img, [[2, 1], [3, 1], [2, 2], [3, 2]], FILL));
    const rng = new Rng(5);
    const big = { data: new Uint8Array(40 * 30 * 3).fill(77), width: 40, height: 30 };
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const o = randomResizedCrop(big, { size: [8, 12], scale: [0.08, 1], ratio: [3 / 4, 4 / 3], interpolation: 'random' }, rng);
      assert.equal(o.width, 12);
      assert.equal(o.height, 8);
      assert.ok(o.data.every((v) => v === 77)); // a constant image stays constant under both filters
    }
    // the filter choice: one uniform draw after the box -> r < 0.5 bilinear, else bicubic
    for (const r of [0.1, 0.9]) {
      const s = new ScriptedRng([0.5, 0.5, 0.5, 0.5, r]);
      const o = randomResizedCrop(img, { size: [2, 2], scale: [0.5, 0.5], ratio: [1, 1], interpolation: 'random' }, s);
      seen.add(Array.from(o.data).join(','));
    }
    assert.equal(seen.size, 2, 'bilinear and bicubic results differ');
  });

  test('shrink-on-load: the largest of 1/8, 1/4, 1/2 that keeps the box at least the output size on both axes', () => {
    const out: [number, number] = [224, 224];
    assert.equal(shrinkOnLoadScale({ width: 447, height: 500 }, out), 1); // just under 2x on one axis
    assert.equal(shrinkOnLoadScale({ width: 448, height: 448 }, out), 2);
    assert.equal(shrinkOnLoadScale({ width: 895, height: 2000 }, out), 2);
    assert.equal(shrinkOnLoadScale({ width: 896, height: 900 }, out), 4);
    assert.equal(shrinkOnLoadScale({ width: 1792, height: 1792 }, out), 8);
    assert.equal(shrinkOnLoadScale({ width: 9000, height: 9000 }, out), 8); // libjpeg stops at 1/8
    assert.equal(shrinkOnLoadScale({ width: 100, height: 60 }, [20, 50]), 2); // output [h, w]: 100 = 2 x 50, 60 >= 2 x 20
    assert.equal(shrinkOnLoadScale({ width: 99, height: 600 }, [20, 50]), 1);
    assert.equal(shrinkOnLoadScale({ width: 100, height: 80 }, [20, 25]), 4);
  });

  test('shrink-on-load: decided from the same draws as the transform; off for no-aug and when disabled', () => {
    const spec: TrainTransformSpec = {
      imgSize: 96, scale: [0.08, 1], ratio: [3 / 4, 4 / 3], hflip: 0.5, vflip: 0, aa: null, colorJitter: null,
      interpolation: 'random', noAug: false,
    };
    const seen = new Set<number>();
    for (let seed = 0; seed < 200; seed++) {
      const box = sampleRrcParams(700, 500, spec.scale, spec.ratio, new Rng(seed));
      const s = trainDecodeScale(700, 500, spec, seed);
      assert.equal(s, shrinkOnLoadScale(box, [96, 96]));
      seen.add(s);
      assert.equal(trainDecodeScale(700, 500, { ...spec, shrinkOnLoad: false }, seed), 1);
      assert.equal(trainDecodeScale(700, 500, { ...spec, noAug: true }, seed), 1);
    }
    assert.deepEqual([...seen].sort(), [1, 2, 4], 'a 700x500 image at 96 px meets every factor up to 1/4');
  });

  test('shrink-on-load: a 1/2 decode, resampled from the scaled box, is close to the full-size result', () => {
    // A smooth image and its exact 2x2 box average stand in for a full decode and a DCT 1/2 decode.
    const W = 200, H = 160;
    const full = new Uint8Array(W * H * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) {
      full[(y * W + x) * 3 + c] = Math.round(127 + 100 * Math.sin(x / 9 + c) * Math.cos(y / 13));
    }
    const half = new Uint8Array(100 * 80 * 3);
    for (let y = 0; y < 80; y++) for (let x = 0; x < 100; x++) for (let c = 0; c < 3; c++) {
      let a = 0;
      for (let d = 0; d < 4; d++) a += full[((2 * y + (d >> 1)) * W + 2 * x + (d & 1)) * 3 + c];
      half[(y * 100 + x) * 3 + c] = Math.round(a / 4);
    }
    const box = { top: 21, left: 33, height: 120, width: 130 };
    const want = resizedCrop({ data: full, width: W, height: H }, box, [48, 48], 'bicubic');
    const got = resizedCropScaled({ data: half, width: 100, height: 80 }, box, [48, 48], 'bicubic', 2);
    assert.deepEqual([got.width, got.height], [48, 48]);
    let sum = 0;
    for (let i = 0; i < got.data.length; i++) sum += Math.abs(got.data[i] - want.data[i]);
    assert.ok(sum / got.data.length < 1.5, `mean abs difference ${sum / got.data.length}`);
    // scale 1 is exactly resizedCrop
    assert.deepEqual(resizedCropScaled({ data: full, width: W, height: H }, box, [48, 48], 'bilinear', 1).data,
      resizedCrop({ data: full, width: W, height: H }, box, [48, 48], 'bilinear').data);
  });
});

// ------------------------------------------------------------------------------------------------
// RandomErasing
// ------------------------------------------------------------------------------------------------

describe('RandomErasing', () => {
  test('statistics: fraction erased ≈ p, area within range, pixel mode ~ N(0, 1)', () => {
    const rng = new Rng(21);
    const H = 32, W = 32, C = 3, B = 64, rounds = 40;
    let erased = 0;
    let total = 0;
    let s = 0, s2 = 0, cnt = 0;
    for (let r = 0; r < rounds; r++) {
      const batch = new Float32Array(B * H * W * C).fill(Number.NaN);
      const boxes = eraseBatch(batch, B, H, W, C, { probability: 0.25, mode: 'pixel' }, rng);
      for (let i = 0; i < B; i++) {
        total++;
        if (boxes[i].length) erased++;
        for (const b of boxes[i]) {
          const frac = (b.height * b.width) / (H * W);
          // h, w are rounded: allow half a pixel on each side
          assert.ok(((b.height + 0.5) * (b.width + 0.5)) / (H * W) >= 0.02, JSON.stringify(b));
          assert.ok(((b.height - 0.5) * (b.width - 0.5)) / (H * W) <= 1 / 3, `${frac}`);
          assert.ok(b.height < H && b.width < W && b.top + b.height <= H && b.left + b.width <= W);
        }
      }
      for (const v of batch) {
        if (!Number.isNaN(v)) {
          s += v;
          s2 += v * v;
          cnt++;
        }
      }
    }
    const frac = erased / total;
    assert.ok(Math.abs(frac - 0.25) < 0.035, `erased fraction ${frac}`);
    const mean = s / cnt;
    const std = Math.sqrt(s2 / cnt - mean * mean);
    assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
    assert.ok(Math.abs(std - 1) < 0.02, `std ${std}`);
  });

  test('exact const-mode box from scripted draws', () => {
    const H = 10, W = 10, C = 2;
    const data = new Float32Array(H * W * C).fill(1);
    // gate 0.1 <= p; area fixed 0.09 -> target 9; log-aspect draw 0.5 -> 0 -> aspect 1 -> h = w = 3;
    // top = randint(0, 7) with 0.5 -> 4; left with 0.99 -> 7
    const rng = new ScriptedRng([0.1, 0.5, 0.5, 0.5, 0.99]);
    const boxes = eraseImage(data, 0, H, W, C, { probability: 0.5, mode: 'const', minArea: 0.09, maxArea: 0.09 }, rng);
    assert.deepEqual(boxes, [{ top: 4, left: 7, height: 3, width: 3 }]);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < C; c++) {
          const inBox = y >= 4 && y < 7 && x >= 7 && x < 10;
          assert.equal(data[(y * W + x) * C + c], inBox ? 0 : 1, `${y},${x},${c}`);
        }
    // h takes ·aspect (the opposite of RRC): aspect 4, target 16 -> h = 8, w = 2
    const d2 = new Float32Array(H * W).fill(1);
    const r2 = new ScriptedRng([0.0, 0.5, 0.5, 0.0, 0.0]);
    const b2 = eraseImage(d2, 0, H, W, 1, { probability: 1, mode: 'const', minArea: 0.16, maxArea: 0.16, minAspect: 4, maxAspect: 4 }, r2);
    assert.deepEqual(b2, [{ top: 0, left: 0, height: 8, width: 2 }]);
    // gate: random() > p skips
    const d3 = new Float32Array(H * W).fill(1);
    assert.deepEqual(eraseImage(d3, 0, H, W, 1, { probability: 0.25, mode: 'const' }, new ScriptedRng([0.26])), []);
    assert.ok(d3.every((v) => v === 1));
  });

  test("'rand' mode fills one value per channel; numSplits skips the clean split", () => {
    const H = 8, W = 8, C = 3, B = 4;
    const batch = new Float32Array(B * H * W * C).fill(9);
    const boxes = eraseBatch(batch, B, H, W, C, { probability: 1, mode: 'rand', numSplits: 2 }, new Rng(4));
    assert.deepEqual(boxes[0], []);
    assert.deepEqual(boxes[1], []);
    for (let i = 0; i < H * W * C * 2; i++) assert.equal(batch[i], 9);
    for (const i of [2, 3]) {
      assert.equal(boxes[i].length, 1);
      const b = boxes[i][0];
      for (let c = 0; c < C; c++) {
        const first = batch[i * H * W * C + (b.top * W + b.left) * C + c];
        assert.notEqual(first, 9);
        for (let y = b.top; y < b.top + b.height; y++)
          for (let x = b.left; x < b.left + b.width; x++) assert.equal(batch[i * H * W * C + (y * W + x) * C + c], first);
      }
    }
    assert.throws(() => eraseBatch(batch, B, H, W, C, { probability: 1, mode: 'bogus' as 'const' }, new Rng(1)), UserError);
  });
});

// ------------------------------------------------------------------------------------------------
// Mixup / CutMix
// ------------------------------------------------------------------------------------------------

describe('Mixup / CutMix (FastCollateMixup on uint8)', () => {
  test('batch mixup: rint(lam·a + (1-lam)·b) in float32, partner reversed, exact targets', () => {
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: 6, labelSmoothing: 0 });
    // images 1×1×3
    const imgs = Uint8Array.from([10, 15, 100, 0, 0, 0, 255, 255, 255, 15, 0, 200]);
    // gate 0.1 < 1, switch 0.9 >= 0.5 -> mixup, lam = 0.7
    const r = mix.apply(imgs, [5, 1, 2, 0], 4, 1, 1, 3, new ScriptedRng([0.1, 0.9], [0.7]));
    // row 0 (partner 3): 7 + 4.5 = 11.5 -> 12, 10.5 -> 10, 70 + 60 = 130
    // row 1 (partner 2): 0.3·255 = 76.5 -> 76 ; row 2 (partner 1): 178.5 -> 178
    // row 3 (partner 0): 10.5 + 3 = 13.5 -> 14, 4.5 -> 4, 140 + 30 = 170
    assert.deepEqual([...r.images], [12, 10, 130, 76, 76, 76, 178, 178, 178, 14, 4, 170]);
    assert.deepEqual([...imgs], [10, 15, 100, 0, 0, 0, 255, 255, 255, 15, 0, 200], 'input untouched');
    const f = Math.fround;
    const t = r.targets;
    // row i: lam at label i, 1 - lam at label of B-1-i
    assert.deepEqual([...t.subarray(0, 6)], [f(0.3), 0, 0, 0, 0, f(0.7)]);
    assert.deepEqual([...t.subarray(6, 12)], [0, f(0.7), f(0.3), 0, 0, 0]);
    assert.deepEqual([...t.subarray(12, 18)], [0, f(0.3), f(0.7), 0, 0, 0]);
    assert.deepEqual([...t.subarray(18, 24)], [f(0.7), 0, 0, 0, 0, f(0.3)]);
    assert.deepEqual([...r.lam], [f(0.7), f(0.7), f(0.7), f(0.7)]);
  });

  test('label smoothing folded into the targets: on = 0.9001, off = 1e-4 (C = 1000, s = 0.1)', () => {
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: 1000, labelSmoothing: 0.1 });
    mix.mixupEnabled = false; // mixup-off-epoch reached: lam = 1, no draws
    const imgs = new Uint8Array(4 * 2 * 2 * 3).map((_, i) => i);
    const rng = new ScriptedRng([]);
    const r = mix.apply(imgs, [3, 999, 0, 3], 4, 2, 2, 3, rng);
    assert.deepEqual([...r.images], [...imgs]);
    for (let i = 0; i < 4; i++) {
      const row = r.targets.subarray(i * 1000, (i + 1) * 1000);
      const label = [3, 999, 0, 3][i];
      assert.equal(row[label], Math.fround(1 - 0.1 + 0.1 / 1000));
      assert.ok(Math.abs(row[label] - 0.9001) < 1e-7);
      assert.equal(row[(label + 1) % 1000], Math.fround(1e-4));
      let s = 0;
      for (const v of row) s += v;
      assert.ok(Math.abs(s - 1) < 1e-5, `row sum ${s}`);
    }
    // exact formula for a given lam
    const t = mixupTarget([1, 2], 4, 0.25, 0.2);
    // off = 0.05, on = 0.85: row 0 = 0.25·y(1) + 0.75·y(2)
    const f = Math.fround;
    const v = (a: number, b: number) => f(f(f(a) * f(0.25)) + f(f(b) * f(0.75)));
    assert.deepEqual([...t.subarray(0, 4)], [v(0.05, 0.05), v(0.85, 0.05), v(0.05, 0.85), v(0.05, 0.05)]);
    assert.throws(() => mixupTarget([4], 4, 1, 0), UserError);
  });

  test('batch cutmix: box from rand_bbox, partner pixels, lam = 1 - area / (H·W)', () => {
    const H = 8, W = 8, C = 3, B = 4;
    const imgs = new Uint8Array(B * H * W * C);
    for (let i = 0; i < B; i++) imgs.fill(10 * (i + 1), i * H * W * C, (i + 1) * H * W * C);
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: 4, labelSmoothing: 0 });
    // gate 0.1, switch 0.2 < 0.5 -> cutmix, lam 0.75: cut = int(8·0.5) = 4; cy = randrange(0, 8) with 0 -> 0,
    // cx with 0.5 -> 4: y [0, 2) (clipped), x [2, 6) -> area 8 -> lam = 1 - 8/64 = 0.875
    const r = mix.apply(imgs, [0, 1, 2, 3], B, H, W, C, new ScriptedRng([0.1, 0.2, 0.0, 0.5], [0.75]));
    assert.deepEqual(r.boxes[0], [0, 2, 2, 6]);
    assert.equal(r.lam[0], 0.875);
    for (let i = 0; i < B; i++) {
      const partner = B - 1 - i;
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const inBox = y < 2 && x >= 2 && x < 6;
          const v = r.images[((i * H + y) * W + x) * C];
          assert.equal(v, inBox ? 10 * (partner + 1) : 10 * (i + 1));
        }
      assert.equal(r.targets[i * 4 + i], Math.fround(0.875));
      assert.equal(r.targets[i * 4 + partner], Math.fround(0.125));
    }
    // correct_lam off: lam stays the drawn 0.75 although the box was clipped
    const nc = new Mixup({ mixupAlpha: 0, cutmixAlpha: 1.0, numClasses: 4, labelSmoothing: 0, correctLam: false });
    const r2 = nc.apply(imgs, [0, 1, 2, 3], B, H, W, C, new ScriptedRng([0.1, 0.0, 0.5], [0.75]));
    assert.equal(r2.lam[0], 0.75);
  });

  test('elem mode: own lam per element, always mixing with the un-mixed partner', () => {
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 0, numClasses: 4, labelSmoothing: 0, mode: 'elem' });
    const imgs = Uint8Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]);
    // per element: gate, beta -> 0.6, 0.9, 1.0 (no mixing), 0.25
    const r = mix.apply(imgs, [0, 1, 2, 3], 4, 1, 1, 3, new ScriptedRng([0.1, 0.1, 0.1, 0.1], [0.6, 0.9, 1.0, 0.25]));
    // row 0: 0.6·(10,20,30) + 0.4·(100,110,120) = 46, 56, 66
    // row 1: 0.9·(40,50,60) + 0.1·(70,80,90) = 43, 53, 63
    // row 3: 0.25·(100,110,120) + 0.75·(10,20,30) (original row 0) = 32.5, 42.5, 52.5 -> 32, 42, 52
    assert.deepEqual([...r.images], [46, 56, 66, 43, 53, 63, 70, 80, 90, 32, 42, 52]);
    const f = Math.fround;
    assert.deepEqual([...r.lam], [f(0.6), f(0.9), 1, 0.25]);
    assert.deepEqual([...r.targets.subarray(12, 16)], [0.75, 0, 0, 0.25]);
    assert.deepEqual([...r.targets.subarray(8, 12)], [0, 0, 1, 0]);
  });

  test('pair mode: symmetric mixing / box swap, lam vector mirrored', () => {
    const H = 4, W = 4, C = 3, B = 4;
    const colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]];
    const imgs = new Uint8Array(B * H * W * C);
    for (let i = 0; i < B; i++) for (let p = 0; p < H * W; p++) imgs.set(colours[i], (i * H * W + p) * C);
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: 4, labelSmoothing: 0, mode: 'pair' });
    // pair (0,3): gate .1, switch .9 -> mixup lam .25; pair (1,2): gate .1, switch .1 -> cutmix lam .5
    // cutmix: cut = int(4·√.5) = 2; cy = randrange(0,4) with .5 -> 2, cx with .25 -> 1 -> y [1,3), x [0,2) -> lam .75
    const r = mix.apply(imgs, [0, 1, 2, 3], B, H, W, C, new ScriptedRng([0.1, 0.9, 0.1, 0.1, 0.5, 0.25], [0.25, 0.5]));
    const px = (i: number, y: number, x: number) => [...r.images.subarray(((i * H + y) * W + x) * C, ((i * H + y) * W + x) * C + 3)];
    // image 0 = .25·c0 + .75·c3 = 77.5, 87.5, 97.5 -> 78, 88, 98; image 3 = .25·c3 + .75·c0 = 32.5.. -> 32, 42, 52
    assert.deepEqual(px(0, 0, 0), [78, 88, 98]);
    assert.deepEqual(px(3, 3, 3), [32, 42, 52]);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const inBox = y >= 1 && y < 3 && x < 2;
        assert.deepEqual(px(1, y, x), inBox ? colours[2] : colours[1]);
        assert.deepEqual(px(2, y, x), inBox ? colours[1] : colours[2]);
      }
    assert.deepEqual([...r.lam], [0.25, 0.75, 0.75, 0.25]);
    assert.deepEqual([...r.targets.subarray(4, 8)], [0, 0.75, 0.25, 0]);
    assert.deepEqual([...r.targets.subarray(8, 12)], [0, 0.25, 0.75, 0]);
  });

  test('random draws: rows sum to 1, cutmix lam equals 1 - box area / (H·W), box pixels from the partner', () => {
    const H = 16, W = 16, C = 3, B = 8, K = 10;
    const rng = new Rng(99);
    const imgs = new Uint8Array(B * H * W * C);
    for (let i = 0; i < imgs.length; i++) imgs[i] = rng.randint(0, 255);
    const labels = [0, 1, 2, 3, 4, 5, 6, 7].map((v) => v % K);
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: K, labelSmoothing: 0.1 });
    let cutmixes = 0;
    for (let it = 0; it < 200; it++) {
      const r = mix.apply(imgs, labels, B, H, W, C, rng);
      for (let i = 0; i < B; i++) {
        let s = 0;
        for (let c = 0; c < K; c++) s += r.targets[i * K + c];
        assert.ok(Math.abs(s - 1) < 1e-5);
      }
      const box = r.boxes[0];
      if (box) {
        cutmixes++;
        const [yl, yh, xl, xh] = box;
        assert.equal(r.lam[0], Math.fround(1 - ((yh - yl) * (xh - xl)) / (H * W)));
        for (let i = 0; i < B; i++) {
          const j = B - 1 - i;
          for (let y = 0; y < H; y++)
            for (let x = 0; x < W; x++) {
              const src = y >= yl && y < yh && x >= xl && x < xh ? j : i;
              const o = ((y * W + x) * C);
              assert.equal(r.images[i * H * W * C + o], imgs[src * H * W * C + o]);
            }
        }
      }
    }
    assert.ok(cutmixes > 70 && cutmixes < 130, `cutmix share ${cutmixes}/200`);
    // rand_bbox geometry: sides int(S·√(1-lam)), centre clipped
    const b = randBbox(224, 224, 0.5, new ScriptedRng([0.5, 0.5]));
    // cut = int(224·0.7071) = 158, half 79, centre 112 -> [33, 191)
    assert.deepEqual(b, [33, 191, 33, 191]);
  });

  test('odd batch size is a user error', () => {
    const mix = new Mixup({ mixupAlpha: 0.8, cutmixAlpha: 1.0, numClasses: 4 });
    assert.throws(() => mix.apply(new Uint8Array(3 * 3), [0, 1, 2], 3, 1, 1, 3, new Rng(1)), UserError);
    assert.throws(() => new Mixup({ mixupAlpha: 0, cutmixAlpha: 0, numClasses: 4 }), UserError);
  });
});

// ------------------------------------------------------------------------------------------------
// The composed train transform
// ------------------------------------------------------------------------------------------------

describe('trainTransform', () => {
  const base: TrainTransformSpec = {
    imgSize: 8, scale: [1, 1], ratio: [1, 1], hflip: 0, vflip: 0, aa: null, colorJitter: null,
    interpolation: 'random', noAug: false,
  };
  const img8 = (() => {
    const p: number[][] = [];
    for (let i = 0; i < 64; i++) p.push([i, 2 * i, 255 - i]);
    return mk(8, 8, p);
  })();

  test('RRC of the whole square image is the identity; flips are exact', () => {
    assert.deepEqual(pixels(trainTransform(img8, base, new Rng(1))), pixels(img8));
    const h = pixels(trainTransform(img8, { ...base, hflip: 1 }, new Rng(1)));
    const v = pixels(trainTransform(img8, { ...base, vflip: 1 }, new Rng(1)));
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 8; x++) {
        assert.deepEqual(h[y * 8 + x], pixels(img8)[y * 8 + 7 - x]);
        assert.deepEqual(v[y * 8 + x], pixels(img8)[(7 - y) * 8 + x]);
      }
  });

  test('no-aug: resize shorter side + centre crop (bilinear for random)', () => {
    // 10×8 -> shorter side already 8: no resize; centre crop left = round((10 - 8) / 2) = 1
    const p: number[][] = [];
    for (let i = 0; i < 80; i++) p.push([i, i, i]);
    const img = mk(10, 8, p);
    const out = trainTransform(img, { ...base, noAug: true, aa: 'rand-m9-mstd0.5-inc1' }, new Rng(1));
    assert.equal(out.width, 8);
    assert.equal(out.height, 8);
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) assert.equal(out.data[(y * 8 + x) * 3], y * 10 + x + 1);
  });

  test('full default recipe: deterministic per seed, right size', () => {
    const rng = new Rng(8);
    const data = new Uint8Array(64 * 48 * 3);
    for (let i = 0; i < data.length; i++) data[i] = rng.randint(0, 255);
    const img = { data, width: 64, height: 48 };
    const spec: TrainTransformSpec = {
      imgSize: 32, scale: [0.08, 1], ratio: [3 / 4, 4 / 3], hflip: 0.5, vflip: 0, aa: 'rand-m9-mstd0.5-inc1',
      colorJitter: 0.4, interpolation: 'random', noAug: false,
    };
    const a = trainTransform(img, spec, new Rng(1234));
    const b = trainTransform(img, JSON.parse(JSON.stringify(spec)) as TrainTransformSpec, new Rng(1234));
    const c = trainTransform(img, spec, new Rng(1235));
    assert.equal(a.width, 32);
    assert.equal(a.height, 32);
    assert.deepEqual(a.data, b.data);
    assert.notDeepEqual(a.data, c.data);
    // worker-registry entry: uint8 output of imgSize, Rng seeded from the sample seed
    const kindSpec = { kind: 'train' as const, ...spec, imgSize: [24, 32] as [number, number] };
    assert.deepEqual(TRAIN_TRANSFORM.output(kindSpec), { shape: [24, 32, 3], dtype: 'uint8' });
    const buf = new Uint8Array(2 * 24 * 32 * 3);
    TRAIN_TRANSFORM.apply(img, kindSpec, { index: 0, path: 'x', seed: 77 }, buf, 24 * 32 * 3);
    assert.deepEqual(buf.subarray(24 * 32 * 3), trainTransform(img, kindSpec, new Rng(77)).data);
    assert.ok(buf.subarray(0, 24 * 32 * 3).every((v) => v === 0));
    assert.throws(() => trainTransform(img, { ...spec, aa: 'rand-m9-q1' }, new Rng(1)), UserError);
    assert.throws(() => trainTransform(img, { ...spec, interpolation: 'cubic' }, new Rng(1)), UserError);
  });

  test('ColorJitter (only without aa): ranges and effect', () => {
    assert.deepEqual(colorJitterRanges(0.4), { brightness: [0.6, 1.4], contrast: [0.6, 1.4], saturation: [0.6, 1.4], hue: null });
    assert.deepEqual(colorJitterRanges([0, 1.5, 0, 0.1]), { brightness: null, contrast: [0, 2.5], saturation: null, hue: [-0.1, 0.1] });
    assert.throws(() => colorJitterRanges([0.1, 0.2]), UserError);
    // zero jitter is the identity
    assert.deepEqual(pixels(trainTransform(img8, { ...base, colorJitter: 0 }, new Rng(3))), pixels(img8));
    // with jitter the image changes
    assert.notDeepEqual(pixels(trainTransform(img8, { ...base, colorJitter: 0.4 }, new Rng(3))), pixels(img8));
    // aa set: ColorJitter is skipped; with RandAugment m0 of the increasing list and n0 nothing happens
    assert.deepEqual(pixels(trainTransform(img8, { ...base, colorJitter: 0.4, aa: 'rand-n0' }, new Rng(3))), pixels(img8));
  });
});
