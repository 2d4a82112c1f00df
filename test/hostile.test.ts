/**
 * Hostile inputs (issue 15): one test per cause, each with small files the test writes itself. Every hostile input
 * must end in one one-line UserError (exit 2 in the CLIs) within 10 s, and the whole file must stay under 1 GB of
 * memory (checked at the end from the process's peak RSS). The demo's decompression bomb is in test/demo.test.ts.
 * Run: node --import tsx --test test/hostile.test.ts
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import sharp from 'sharp';
import { UserError } from '../src/errors.js';
import { CHECKPOINT_LIMITS, DEFAULT_MAX_IMAGE_PIXELS, limits, setMaxImagePixels } from '../src/limits.js';
import { SETTING_VARIABLES } from '../src/settings.js';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { readPth } from '../src/checkpoint/pth.js';
import { unpickle } from '../src/checkpoint/pickle.js';
import { readSafetensors } from '../src/checkpoint/safetensors.js';
import { readTrainCheckpoint } from '../src/checkpoint/saver.js';
import { writeError, writeFileAtomic } from '../src/checkpoint/atomic.js';
import { createModel } from '../src/models/mambaout.js';
import { expectedModel, getModelConfig, stateDictShapes } from '../src/models/registry.js';
import { decodeRGB, decodeRGBSync, DecodeError, ImageTooLargeError } from '../src/data/decode.js';
import { runBatch } from '../src/data/worker.js';
import { resolveDataConfig } from '../src/data/config.js';
import { scanImageFolder } from '../src/data/folder.js';
import { parseArgs } from '../src/cli/parse.js';
import { TRAIN_FLAGS } from '../src/cli/options.js';
import { runTraining } from '../src/train/loop.js';
import { createLogger } from '../src/log/logger.js';
import { setupDistributed } from '../src/train/ddp.js';
import { ProcessGroup } from '../src/distributed/group.js';
import { findFreePort, launch } from '../src/distributed/launcher.js';
import { PickleWriter, deflatedZeros, f32Bytes, pngBomb, pthEntries, rawZip } from './helpers/craft.js';
import { fixture } from './helpers.js';

const QUICK = { timeout: 10_000 };
const REPO = fileURLToPath(new URL('..', import.meta.url));

let tmp = '';
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'mambaout-hostile-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function writeTmp(name: string, data: Uint8Array | string): Promise<string> {
  const p = join(tmp, name);
  await writeFile(p, data);
  return p;
}

/** Rejects with ONE UserError, of one line, matching every pattern. */
async function refused(p: Promise<unknown>, ...patterns: RegExp[]): Promise<string> {
  let msg = '';
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${e instanceof Error ? e.stack : String(e)}`);
    msg = e.message;
    assert.ok(!msg.includes('\n'), `more than one line: ${msg}`);
    for (const re of patterns) assert.match(msg, re);
    return true;
  });
  return msg;
}

/** A state-dict pickle: OrderedDict name -> _rebuild_tensor_v2(storage key, ...) (float32 storages). */
function stateDictPkl(tensors: { name: string; key: string; storageNumel: number; offset?: number; size: number[]; stride: number[] }[]): Uint8Array {
  const p = new PickleWriter().proto(2);
  p.orderedDict(tensors.map((t) => [t.name, (q) => q.tensor(t.key, 'FloatStorage', t.storageNumel, t.offset ?? 0, t.size, t.stride)]));
  return p.stop().bytes();
}

// ------------------------------------------------------------------------------------------------ 1. views

describe('1. tensor views in .pth files are checked before anything is allocated', () => {
  it('a stride-0 [30000, 30000] view of a 1-float storage is refused by name (it used to take 3.6 GB)', QUICK, async () => {
    const pkl = stateDictPkl([{ name: 'stages.0.0.fc1.weight', key: '0', storageNumel: 1, size: [30000, 30000], stride: [0, 0] }]);
    const path = await writeTmp('stride0.pth', rawZip(pthEntries(pkl, { '0': f32Bytes([1]) })));
    await refused(loadCheckpoint(path), /stride0\.pth/, /'stages\.0\.0\.fc1\.weight'/, /\[30000, 30000\] view/, /3\.6 GB/);
    await refused(readPth(path), /a tensor on storage 0/);
  });

  it('[2^20, 2^20] at stride 0 is a UserError, not "Invalid typed array length"', QUICK, async () => {
    const pkl = stateDictPkl([{ name: 'w', key: '0', storageNumel: 1, size: [2 ** 20, 2 ** 20], stride: [0, 0] }]);
    const path = await writeTmp('huge.pth', rawZip(pthEntries(pkl, { '0': f32Bytes([1]) })));
    await refused(loadCheckpoint(path), /'w' is a \[1048576, 1048576\] view/);
  });

  it('a tensor larger than the model parameter of that name is refused by name; a small repeated view loads', QUICK, async () => {
    // norm.weight of mambaout_test is [32]; the file holds 4096 honest floats for it.
    const big = stateDictPkl([{ name: 'module.norm.weight', key: '0', storageNumel: 4096, size: [4096], stride: [1] }]);
    const path = await writeTmp('bigparam.pth', rawZip(pthEntries(big, { '0': f32Bytes(new Array(4096).fill(0.5)) })));
    await refused(loadCheckpoint(path, { expect: expectedModel('mambaout_test') }), /'norm\.weight' has shape \[4096\]/, /mambaout_test needs \[32\]/);
    // without the model it is an honest tensor
    assert.equal((await loadCheckpoint(path)).stateDict.get('norm.weight')?.data.length, 4096);
    // a bias saved as an expanded scalar (stride 0, 32 values) is fine: small, and exactly the model's shape
    const expanded = stateDictPkl([{ name: 'norm.bias', key: '0', storageNumel: 1, size: [32], stride: [0] }]);
    const p2 = await writeTmp('expanded.pth', rawZip(pthEntries(expanded, { '0': f32Bytes([0.25]) })));
    const t = (await loadCheckpoint(p2, { expect: expectedModel('mambaout_test') })).stateDict.get('norm.bias');
    assert.deepEqual(Array.from(t!.data as Float32Array), new Array(32).fill(0.25));
  });

  it('many full views of one storage are refused once their dense copies exceed twice the storages', QUICK, async () => {
    const n = 1 << 18; // 1 MiB of floats, viewed by 200 tensors: 200 MiB of copies
    const pkl = stateDictPkl(Array.from({ length: 200 }, (_, i) => ({ name: `t${i}`, key: '0', storageNumel: n, size: [n], stride: [1] })));
    const path = await writeTmp('manyviews.pth', rawZip(pthEntries(pkl, { '0': new Uint8Array(4 * n) })));
    await refused(loadCheckpoint(path), /at tensor 't68' its tensors add up to more than 71\.3 MB of dense copies/);
  });

  it('the model shapes the readers check are the model\'s own (mambaout_test, open class count)', () => {
    const m = createModel('mambaout_test', { noInit: true, numClasses: 7 });
    try {
      const c = getModelConfig('mambaout_test');
      const want = [...m.stateDict()].map(([k, t]) => [k, t.shape]);
      assert.deepEqual([...stateDictShapes(c.depths, c.dims, 7)], want);
      assert.deepEqual(expectedModel('mambaout_test').shapes.get('head.fc2.weight'), [-1, 128]);
    } finally {
      m.dispose();
    }
  });
});

// ------------------------------------------------------------------------------------------------ 2. zip bombs

describe('2. zip bombs: the inflated size is capped by the file and the model, and zlib stops at the declared size', () => {
  const pkl = () => stateDictPkl([{ name: 'w', key: '0', storageNumel: 4, size: [4], stride: [1] }]);

  it('a 1 MB storage entry that inflates to 1 GiB is refused before inflating (it used to take 1 GiB)', QUICK, async () => {
    const entries = pthEntries(pkl(), {});
    const GiB = 2 ** 30;
    entries.push({ name: 'ck/data/0', data: deflatedZeros(GiB), method: 8, size: GiB, crc: 0 });
    const path = await writeTmp('bomb.pth', rawZip(entries));
    await refused(loadCheckpoint(path), /zip entry 'ck\/data\/0' would inflate to 1\.1 GB/, /more than this checkpoint can need \(67\.1 MB: the 67\.1 MB floor\)/);
    // the model raises the cap (32 bytes per parameter), never to 1 GiB for mambaout_test
    await refused(loadCheckpoint(path, { expect: expectedModel('mambaout_test') }), /would inflate to 1\.1 GB/);
  });

  it('a directory that understates the size does not help: zlib stops at the declared 16 bytes', QUICK, async () => {
    const entries = pthEntries(pkl(), {});
    entries.push({ name: 'ck/data/0', data: deflatedZeros(256 << 20), method: 8, size: 16, crc: 0 });
    const path = await writeTmp('liar.pth', rawZip(entries));
    await refused(loadCheckpoint(path), /inflates to more than the 16 bytes its zip directory declares/);
  });

  it('sizes no deflate stream can reach, and stored entries that overlap, are corrupt', QUICK, async () => {
    const entries = pthEntries(pkl(), {});
    entries.push({ name: 'ck/data/0', data: deflateRawSync(new Uint8Array(16)), method: 8, size: 3_000_000_000, crc: 0 });
    await refused(loadCheckpoint(await writeTmp('ratio.pth', rawZip(entries))), /cannot inflate to the 3000000000/);
  });

  it('an honest deflated checkpoint still loads', QUICK, async () => {
    const entries = pthEntries(pkl(), {}).map((e) => (e.name === 'ck/data.pkl' ? { ...e, data: deflateRawSync(e.data), method: 8, size: e.data.length, crc: undefined } : e));
    const data = f32Bytes([1, 2, 3, 4]);
    const { crc32 } = await import('node:zlib');
    entries.push({ name: 'ck/data/0', data: deflateRawSync(data), method: 8, size: 16, crc: crc32(data) >>> 0 });
    entries[0].crc = crc32(pkl()) >>> 0;
    const sd = (await loadCheckpoint(await writeTmp('honest.pth', rawZip(entries)))).stateDict;
    assert.deepEqual(Array.from(sd.get('w')!.data as Float32Array), [1, 2, 3, 4]);
  });
});

// ------------------------------------------------------------------------------------------------ 3. pickle

describe('3. the unpickler: LONG opcodes bounded and linear, opcodes (stack, memo, objects) bounded', () => {
  function long4(n: number): Uint8Array {
    const p = new PickleWriter().proto(2).op(0x8b);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setInt32(0, n, true);
    p.raw(len);
    const body = new Uint8Array(n).fill(0x5a);
    return Buffer.concat([p.bytes(), body, new Uint8Array([0x2e])]);
  }

  it('a 1 MB LONG4 is refused at once (it used to run for ever: a BigInt shift per byte)', QUICK, () => {
    const t0 = performance.now();
    assert.throws(() => unpickle(long4(1 << 20), { label: 'long.pkl' }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /^refusing to load 'long\.pkl': its pickle holds an integer of 1048576 bytes \(LONG4\)/);
      return true;
    });
    assert.ok(performance.now() - t0 < 1000);
  });

  it('LONG1 / LONG4 values decode exactly (two\'s complement, little-endian)', () => {
    const long1 = (bytes: number[]) => unpickle(new Uint8Array([0x80, 2, 0x8a, bytes.length, ...bytes, 0x2e]), { label: 'x' });
    assert.equal(long1([]), 0);
    assert.equal(long1([0xff]), -1);
    assert.equal(long1([0x00, 0x80]), -32768);
    assert.equal(long1([0x00, 0x80, 0x00]), 32768);
    assert.equal(long1([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), 2 ** 47 - 1);
    assert.equal(long1([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00]), 2 ** 53 - 1);
    assert.equal(long1([0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00]), 2n ** 53n);
    assert.equal(long1([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), 2n ** 63n - 1n);
    assert.equal(long1([0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80]), -(2n ** 63n));
    assert.equal(unpickle(long4(CHECKPOINT_LIMITS.maxLongBytes), { label: 'x' }), BigInt('0x' + '5a'.repeat(CHECKPOINT_LIMITS.maxLongBytes)));
    const digits = '9'.repeat(5000);
    assert.throws(() => unpickle(new TextEncoder().encode(`L${digits}L\n.`), { label: 'x' }), /holds an integer of 5001 digits/);
  });

  it('8 million EMPTY_DICT opcodes are refused (they used to make 8 million Maps)', QUICK, () => {
    const n = 8_000_000;
    const bytes = new Uint8Array(n + 3).fill(0x7d);
    bytes[0] = 0x80;
    bytes[1] = 2;
    bytes[n + 2] = 0x2e;
    assert.throws(() => unpickle(bytes, { label: 'dicts.pkl' }), /its pickle runs more than 1048576 opcodes/);
  });

  it('a data.pkl over 64 MiB is refused before it is read', QUICK, async () => {
    const entries = pthEntries(new Uint8Array(0), {});
    entries[0] = { name: 'ck/data.pkl', data: deflatedZeros(80 << 20), method: 8, size: 80 << 20, crc: 0 };
    await refused(loadCheckpoint(await writeTmp('bigpkl.pth', rawZip(entries))), /its data\.pkl is 83\.9 MB/);
  });
});

// ------------------------------------------------------------------------------------------------ 4. CRC-32

describe('4. CRC-32 of every zip entry', () => {
  it('one flipped bit in a storage is refused (it used to load and change predictions)', QUICK, async () => {
    const pkl = stateDictPkl([{ name: 'w', key: '0', storageNumel: 4, size: [4], stride: [1] }]);
    const good = rawZip(pthEntries(pkl, { '0': f32Bytes([1, 2, 3, 4]) }));
    assert.equal((await loadCheckpoint(await writeTmp('good.pth', good))).stateDict.get('w')?.data[1], 2);
    const bad = new Uint8Array(good);
    const at = Buffer.from(bad).indexOf(Buffer.from(f32Bytes([1, 2, 3, 4])));
    bad[at + 6] ^= 0x01; // inside the float 2.0
    await refused(loadCheckpoint(await writeTmp('flipped.pth', bad)), /zip entry 'ck\/data\/0' is corrupt: its CRC-32 does not match/);
  });

  it('the micro fixture (torch.save) passes the check', QUICK, async () => {
    assert.equal((await loadCheckpoint(fixture('micro.pth'))).stateDict.size, 68);
  });
});

// ------------------------------------------------------------------------------------------------ 5. images

describe('5. decompression-bomb images are refused from the header', () => {
  it('a 1.2 MB PNG of 20000x20000 fails in milliseconds (it used to decode 1.2 GB)', QUICK, async () => {
    const bomb = pngBomb(20000, 20000);
    assert.ok(bomb.length < 1.3e6);
    const t0 = performance.now();
    await assert.rejects(decodeRGB(bomb, 'bomb.png'), (e: unknown) => {
      assert.ok(e instanceof ImageTooLargeError);
      assert.equal(e.width, 20000);
      assert.match(e.message, /^cannot decode image bomb\.png: it is 20000x20000 pixels \(400\.0 MP\), above the limit of 179\.0 MP/);
      assert.match(e.message, /--max-image-pixels/);
      return true;
    });
    assert.ok(performance.now() - t0 < 2000);
    const path = await writeTmp('bomb.png', bomb);
    await assert.rejects(decodeRGB(path), ImageTooLargeError);
  });

  it('the limit is 2x Pillow\'s MAX_IMAGE_PIXELS and can be raised or lowered', QUICK, async () => {
    assert.equal(DEFAULT_MAX_IMAGE_PIXELS, 178_956_970);
    const small = pngBomb(64, 48);
    assert.equal((await decodeRGB(small, 's.png')).width, 64);
    await assert.rejects(decodeRGB(small, 's.png', { maxPixels: 64 * 48 - 1 }), ImageTooLargeError);
    assert.equal((await decodeRGB(small, 's.png', { maxPixels: 64 * 48 })).height, 48);
    const before = limits.maxImagePixels;
    try {
      setMaxImagePixels(1000);
      assert.equal(process.env[SETTING_VARIABLES.maxImagePixels], '1000'); // exported for the loader's worker threads
      await assert.rejects(decodeRGB(small, 's.png'), ImageTooLargeError);
      assert.throws(() => setMaxImagePixels(-5), /--max-image-pixels must be a positive whole number of pixels, got -5/);
    } finally {
      setMaxImagePixels(before);
    }
  });

  it('plain JPEGs, decoded by the loader on its own thread (WebAssembly libjpeg), meet the same limit', QUICK, async () => {
    const jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 9, g: 99, b: 199 } } }).jpeg().toBuffer();
    const bytes = new Uint8Array(jpeg.buffer, jpeg.byteOffset, jpeg.length);
    assert.equal(decodeRGBSync(bytes, { maxPixels: 64 * 48 }, 'j.jpg')?.width, 64);
    assert.throws(() => decodeRGBSync(bytes, { maxPixels: 64 * 48 - 1 }, 'j.jpg'), (e: unknown) => {
      assert.ok(e instanceof ImageTooLargeError);
      assert.match((e as Error).message, /^cannot decode image j\.jpg: it is 64x48 pixels/);
      return true;
    });
    await assert.rejects(decodeRGB(bytes, 'j.jpg', { maxPixels: 100 }), ImageTooLargeError);
    // A worker batch skips it with the reason, as any unreadable image.
    const path = await writeTmp('j.jpg', bytes);
    const before = limits.maxImagePixels;
    try {
      setMaxImagePixels(100);
      const r = await runBatch({ id: 0, items: [{ index: 0, path, label: 0, seed: 1 }] }, { kind: 'eval', ...resolveDataConfig(getModelConfig('mambaout_test').defaultCfg, { imgSize: 32 }) });
      assert.equal(r.count, 0);
      assert.match(r.skipped[0].reason, /above the limit/);
    } finally {
      setMaxImagePixels(before);
    }
  });

  it('a JPEG over 16.8 MP is decoded at reduced scale when the caller needs only a small image', QUICK, async () => {
    const grey = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 100, b: 50 } } }).jpeg().toBuffer();
    const big = await grey(6000, 3000); // 18 MP
    const red = await decodeRGB(big, 'big.jpg', { reduceTo: 256 });
    assert.deepEqual([red.width, red.height], [1024, 512]); // shorter side = 2 x 256
    const px = Array.from(red.data.subarray(3 * 1000, 3 * 1000 + 3));
    assert.ok(Math.abs(px[0] - 200) <= 2 && Math.abs(px[1] - 100) <= 2 && Math.abs(px[2] - 50) <= 2, String(px));
    // at or below 16.8 MP, as timm: full size
    assert.equal((await decodeRGB(await grey(1000, 800), 'small.jpg', { reduceTo: 64 })).width, 1000);
  });

  it('a refused image is a DecodeError: the loaders and predict skip it with its reason, as any unreadable image', QUICK, async () => {
    const err = await decodeRGB(pngBomb(14000, 14000), 'b.png').catch((e: unknown) => e);
    assert.ok(err instanceof DecodeError);
    assert.match((err as DecodeError).reason, /^it is 14000x14000 pixels \(196\.0 MP\)/);
  });
});

// ------------------------------------------------------------------------------------------------ 7. folders

describe('7. class folders whose names are not UTF-8', () => {
  const png = () => sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).png().toBuffer();

  it('are refused by name (they used to be dropped silently: 4 classes for 5)', QUICK, async () => {
    const root = join(tmp, 'latin1', 'train');
    const img = await png();
    for (const c of ['apple', 'banana', 'cherry', 'date']) {
      mkdirSync(join(root, c), { recursive: true });
      writeFileSync(join(root, c, 'a.png'), img);
    }
    const bad = Buffer.concat([Buffer.from(root + '/caf'), Buffer.from([0xe9])]); // 'café' in latin-1
    mkdirSync(bad);
    writeFileSync(Buffer.concat([bad, Buffer.from('/a.png')]), img);
    await refused(scanImageFolder(root), /folder 'caf\\xe9' in .*latin1\/train has a name that is not valid UTF-8/, /rename it/);
  });

  it('names that merely contain U+FFFD are valid UTF-8 and used', QUICK, async () => {
    const root = join(tmp, 'fffd', 'train');
    const img = await png();
    for (const c of ['a\uFFFDb', 'plain']) {
      mkdirSync(join(root, c), { recursive: true });
      writeFileSync(join(root, c, 'x.png'), img);
    }
    assert.deepEqual((await scanImageFolder(root)).classes, ['a\uFFFDb', 'plain']);
  });
});

// ------------------------------------------------------------------------------------------------ minor

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

const quietLogger = () => createLogger({ stream: new Capture() });

describe('minor: user errors exit 2 with a sentence, temp files, the launcher', () => {
  it('safetensors: overlapping tensors and corrupt training metadata are refused', QUICK, async () => {
    const st = (header: object, data: Uint8Array) => {
      const h = Buffer.from(JSON.stringify(header));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(h.length));
      return Buffer.concat([len, h, data]);
    };
    const overlap = st({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, new Uint8Array(16));
    await refused(readSafetensors(await writeTmp('overlap.safetensors', overlap)), /tensors 'a' and 'b' overlap/);
    for (const [json, why] of [['null', /not an object/], ['[]', /not an object/], ['{"epoch":"x"}', /'epoch' is "x"/], ['{"epoch":1,"args":5}', /'args' is not an object/]] as const) {
      const f = await writeTmp('meta.safetensors', st({ __metadata__: { format: 'mambaout-train-checkpoint', json } }, new Uint8Array(0)));
      await refused(readTrainCheckpoint(f), /has corrupt checkpoint metadata/, why);
      await refused(loadCheckpoint(f), /has corrupt checkpoint metadata/);
    }
  });

  it('a full disk is a UserError naming the file; the old file stays and no temp file is left', QUICK, async (t) => {
    const e = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    assert.match(String((writeError('/x/last.safetensors', e) as Error).message), /^cannot write '\/x\/last\.safetensors': the disk is full \(ENOSPC\)/);
    const mnt = join(tmp, 'tiny');
    await mkdir(mnt);
    if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]).status !== 0) {
      t.skip('needs root to mount a 64 kB tmpfs');
      return;
    }
    try {
      const p = join(mnt, 'last.safetensors');
      await writeFileAtomic(p, 'old');
      await refused(writeFileAtomic(p, new Uint8Array(256 * 1024)), /cannot write '.*last\.safetensors': the disk is full \(ENOSPC\)/);
      assert.equal(await readFile(p, 'utf8'), 'old');
      assert.deepEqual(await readdir(mnt), ['last.safetensors']);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });

  it('temp files of atomic writes killed mid-way are removed at the next save', QUICK, async () => {
    const dir = join(tmp, 'stale');
    await mkdir(dir);
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // a pid that has exited
    const stale = [`.last.safetensors.${dead}.0badf00d.tmp`, `.checkpoint-3.safetensors.${dead}.tmp`, `.recovery-1-50.safetensors.${dead}.12345678.tmp`];
    const live = `.last.safetensors.${process.pid}.deadbeef.tmp`; // a write in flight in this process
    for (const f of [...stale, live, 'notes.tmp']) await writeFile(join(dir, f), 'partial');
    await writeFileAtomic(join(dir, 'last.safetensors'), 'new');
    assert.deepEqual((await readdir(dir)).sort(), [live, 'last.safetensors', 'notes.tmp'].sort());
  });

  it('--workers -1 and --output on a file are UserErrors before any work', QUICK, async () => {
    const out = await writeTmp('a-file', 'x');
    const parse = (argv: string[]) =>
      parseArgs({ scriptName: 't', usage: '', flags: TRAIN_FLAGS, positionals: [{ name: 'data_dir', describe: '', type: 'string' }], argv }).args;
    const ctx = { logger: quietLogger(), dist: null, stopRequested: () => false };
    await refused(runTraining(parse([tmp, '--model', 'mambaout_test', '--workers', '-1']), ctx), /^--workers must be a whole number >= 0, got -1$/);
    await refused(runTraining(parse([tmp, '--model', 'mambaout_test', '--output', out]), ctx), /^--output '.*a-file' is a file; give a folder/);
    await refused(runTraining(parse([tmp, '--model', 'mambaout_test', '--max-image-pixels', '0']), ctx), /--max-image-pixels must be a positive whole number/);
  });

  it('a rendezvous timeout and a WORLD_SIZE mismatch are UserErrors', { timeout: 30_000 }, async () => {
    const port = await findFreePort();
    const saved = { ...process.env };
    try {
      Object.assign(process.env, { RANK: '0', WORLD_SIZE: '2', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
      await refused(setupDistributed({ dist_timeout: 1 }, quietLogger()), /^rank 0 could not join the process group: rank 1 did not join the rendezvous/);
      const port2 = await findFreePort();
      process.env.MASTER_PORT = String(port2);
      const rank0 = setupDistributed({ dist_timeout: 20 }, quietLogger());
      const rank1 = ProcessGroup.init({ rank: 1, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port2, timeoutMs: 20_000 });
      const [r0] = await Promise.allSettled([rank0, rank1]);
      assert.equal(r0.status, 'rejected');
      assert.ok((r0 as PromiseRejectedResult).reason instanceof UserError);
      assert.match((r0 as PromiseRejectedResult).reason.message, /rank 1 was started with WORLD_SIZE=3 but rank 0 with WORLD_SIZE=2/);
    } finally {
      for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT']) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });

  it('the launcher names the rank that stopped answering, not the one that gave up on it', { timeout: 60_000 }, async () => {
    const helper = fileURLToPath(new URL('./helpers/dist_hang_worker.ts', import.meta.url));
    const err = new Capture();
    const res = await launch({
      nprocPerNode: 3, script: helper, nodeArgs: ['--import', 'tsx'], env: { ...process.env, HANG_RANK: '1' },
      stdout: new Capture(), stderr: err, graceMs: 500, forwardSignals: false,
    });
    assert.equal(res.failedRank, 1, `${res.message}\n${err.text}`);
    assert.match(res.message ?? '', /^rank 1 stopped answering: rank\(s\) (0, 2|2, 0) gave up waiting for it/);
    assert.notEqual(res.exitCode, 0);
  });

  it('the CLIs turn a hostile checkpoint into "error: <one sentence>" and exit 2', { timeout: 60_000 }, async () => {
    const pkl = stateDictPkl([{ name: 'head.fc2.weight', key: '0', storageNumel: 1, size: [30000, 30000], stride: [0, 0] }]);
    const ck = await writeTmp('cli_stride0.pth', rawZip(pthEntries(pkl, { '0': f32Bytes([1]) })));
    const p = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'bin/predict.ts'), fixture('photos/chelsea.jpg'), '--model', 'mambaout_test', '--checkpoint', ck], {
      cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.stdout.resume();
    const code = await new Promise<number | null>((resolve) => p.on('close', resolve));
    assert.equal(code, 2, stderr);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /^error: refusing to load '.*cli_stride0\.pth': tensor 'head\.fc2\.weight' is a \[30000, 30000\] view/);
  });
});

describe('memory', () => {
  it('this whole file stayed under 1 GB of peak memory', () => {
    const peak = process.resourceUsage().maxRSS * 1024;
    assert.ok(peak < 1e9, `peak RSS ${(peak / 1e9).toFixed(2)} GB`);
    assert.ok(existsSync(REPO));
  });
});
