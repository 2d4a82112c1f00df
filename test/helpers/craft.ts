/**
 * Crafting input files byte by byte for the tests: a pickle writer (the opcodes torch.save uses), a torch.save-like
 * zip (fflate), a raw zip writer whose sizes, CRCs and methods the caller controls (hostile archives: zip bombs,
 * lying directories, flipped bits), and PNG decompression bombs made in milliseconds.
 */
import { crc32 as zcrc32, deflateRawSync } from 'node:zlib';
import { zipSync } from 'fflate';

export class PickleWriter {
  private b: number[] = [];
  op(...xs: number[]): this {
    for (const x of xs) this.b.push(x);
    return this;
  }
  raw(bytes: Uint8Array | number[]): this {
    for (const x of bytes) this.b.push(x);
    return this;
  }
  proto(p = 2): this {
    return this.op(0x80, p);
  }
  global(module: string, name: string): this {
    return this.op(0x63).raw(new TextEncoder().encode(`${module}\n${name}\n`));
  }
  str(s: string): this {
    const e = new TextEncoder().encode(s);
    const n = new Uint8Array(4);
    new DataView(n.buffer).setUint32(0, e.length, true);
    return this.op(0x58).raw(n).raw(e);
  }
  int(v: number): this {
    if (v >= 0 && v < 256) return this.op(0x4b, v);
    if (v >= 0 && v < 65536) return this.op(0x4d, v & 255, v >> 8);
    const n = new Uint8Array(4);
    new DataView(n.buffer).setInt32(0, v, true);
    return this.op(0x4a).raw(n);
  }
  float(v: number): this {
    const n = new Uint8Array(8);
    new DataView(n.buffer).setFloat64(0, v, false);
    return this.op(0x47).raw(n);
  }
  none(): this { return this.op(0x4e); }
  mark(): this { return this.op(0x28); }
  tuple(): this { return this.op(0x74); }
  emptyTuple(): this { return this.op(0x29); }
  emptyDict(): this { return this.op(0x7d); }
  setitems(): this { return this.op(0x75); }
  reduce(): this { return this.op(0x52); }
  stop(): this { return this.op(0x2e); }
  ints(xs: number[]): this {
    this.mark();
    for (const x of xs) this.int(x);
    return this.tuple();
  }
  /** _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()) */
  tensor(key: string, storageType: string, storageNumel: number, offset: number, size: number[], stride: number[]): this {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.mark().str('storage').global('torch', storageType).str(key).str('cpu').int(storageNumel).tuple().op(0x51);
    this.int(offset).ints(size).ints(stride).op(0x89);
    this.global('collections', 'OrderedDict').emptyTuple().reduce();
    return this.tuple().reduce();
  }
  /** OrderedDict with entries written by the callbacks */
  orderedDict(entries: [string, (p: this) => void][]): this {
    this.global('collections', 'OrderedDict').emptyTuple().reduce().mark();
    for (const [k, fn] of entries) {
      this.str(k);
      fn(this);
    }
    return this.setitems();
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.b);
  }
}

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

export function u16Bytes(values: number[], bigEndian = false): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => dv.setUint16(i * 2, v, !bigEndian));
  return out;
}

/** A torch.save-like zip archive. */
export function makePth(pkl: Uint8Array, storages: Record<string, Uint8Array>, opts: { level?: 0 | 6; byteorder?: string } = {}): Uint8Array {
  const files: Record<string, Uint8Array> = {
    'ck/data.pkl': pkl,
    'ck/byteorder': new TextEncoder().encode(opts.byteorder ?? 'little'),
    'ck/version': new TextEncoder().encode('3\n'),
  };
  for (const [k, v] of Object.entries(storages)) files[`ck/data/${k}`] = v;
  return zipSync(files, { level: opts.level ?? 0 });
}


/** One entry of `rawZip`: `data` is written as is (already deflated when method is 8). */
export interface RawZipEntry {
  name: string;
  data: Uint8Array;
  /** 0 stored, 8 deflate */
  method?: number;
  /** uncompressed size written in the headers (default: data.length) */
  size?: number;
  /** CRC-32 written in the headers (default: CRC-32 of `data`, right for stored entries) */
  crc?: number;
}

/** A zip archive (no zip64) with exactly the sizes, methods and CRCs given. */
export function rawZip(entries: RawZipEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = new TextEncoder().encode(e.name);
    const method = e.method ?? 0;
    const size = e.size ?? e.data.length;
    const crc = e.crc ?? (zcrc32(e.data) >>> 0);
    const lh = new Uint8Array(30 + name.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, e.data.length, true);
    lv.setUint32(22, size, true);
    lv.setUint16(26, name.length, true);
    lh.set(name, 30);
    const ch = new Uint8Array(46 + name.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, e.data.length, true);
    cv.setUint32(24, size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    ch.set(name, 46);
    chunks.push(lh, e.data);
    central.push(ch);
    offset += lh.length + e.data.length;
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  return Buffer.concat([...chunks, ...central, eocd]);
}

/**
 * A raw deflate stream of `n` zero bytes, made without compressing `n` bytes: one 1 MiB block compressed with a
 * full flush (independent of what precedes it) is repeated. About 1 KB per MiB: a real zip bomb in milliseconds.
 */
export function deflatedZeros(n: number): Uint8Array {
  const MiB = 1 << 20;
  const parts: Uint8Array[] = [];
  const block = deflateRawSync(Buffer.alloc(MiB), { finishFlush: 3 /* Z_FULL_FLUSH */ });
  for (let i = 0; i < Math.floor(n / MiB); i++) parts.push(block);
  parts.push(deflateRawSync(Buffer.alloc(n % MiB))); // the final block
  return Buffer.concat(parts);
}

/** Entries of a torch.save-like archive (folder 'ck/') as stored RawZipEntry values, to be altered by a test. */
export function pthEntries(pkl: Uint8Array, storages: Record<string, Uint8Array>): RawZipEntry[] {
  const out: RawZipEntry[] = [
    { name: 'ck/data.pkl', data: pkl },
    { name: 'ck/byteorder', data: new TextEncoder().encode('little') },
  ];
  for (const [k, v] of Object.entries(storages)) out.push({ name: `ck/data/${k}`, data: v });
  out.push({ name: 'ck/version', data: new TextEncoder().encode('3\n') });
  return out;
}

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  v.setUint32(8 + data.length, zcrc32(out.subarray(4, 8 + data.length)) >>> 0);
  return out;
}

/**
 * A valid black RGB PNG of width x height whose pixel data is one zlib stream of zeros (see deflatedZeros): about
 * 1 KB per MiB of pixels, e.g. 1.2 MB for 20000 x 20000 (1.2 GB decoded).
 */
export function pngBomb(width: number, height: number): Uint8Array {
  const raw = height * (1 + width * 3); // filter byte 0 + RGB per row
  const ihdr = new Uint8Array(13);
  const iv = new DataView(ihdr.buffer);
  iv.setUint32(0, width);
  iv.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit, truecolour, deflate, adaptive filter, no interlace
  const adler = new Uint8Array(4);
  new DataView(adler.buffer).setUint32(0, ((raw % 65521) * 65536 + 1) >>> 0); // adler32 of `raw` zeros: a = 1, b = raw
  const idat = Buffer.concat([new Uint8Array([0x78, 0x01]), deflatedZeros(raw), adler]);
  return Buffer.concat([
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', new Uint8Array(0)),
  ]);
}
