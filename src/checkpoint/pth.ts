/**
 * Reading PyTorch zip checkpoints (`torch.save` since torch 1.6; `.pth`, `.pth.tar`, `.pt`)
 * without executing any code. Choosing the state dict inside one, timm's way, is load.ts's.
 *
 * Zip layout written by torch.save:
 *   <archive>/data.pkl        the pickled object tree (see pickle.ts)
 *   <archive>/data/<key>      raw bytes of storage <key>
 *   <archive>/byteorder       'little' or 'big' (absent in old files: little)
 *   <archive>/version, .format_version, .storage_alignment, ...   (ignored)
 * A tensor in data.pkl is `_rebuild_tensor_v2(storage, offset, size, stride, ...)`
 * where the storage is a persistent id ('storage', torch.FloatStorage, key, location, numel).
 *
 * The zip directory is read with positioned reads; each storage is read into its own
 * buffer (no whole-file copy), so peak memory stays near the size of the tensors.
 * Deflated entries (not written by torch, but legal) are inflated by zlib with a hard stop at the size the
 * directory declares, and that size must fit a budget derived from the file and the model (a deflate stream
 * can expand 1032-fold). Every entry's CRC-32 is checked, as Python's zipfile does.
 *
 * Hostile files (issue 15): before anything is allocated, every tensor view is checked against its storage
 * (a stride-0 view of a huge shape would be copied densely) and against the model's parameter shapes when
 * the caller names the model, and all dense copies together must fit a budget derived from the storages.
 * The limits are listed in src/limits.ts (CHECKPOINT_LIMITS); none of them is reached by an honest file.
 *
 * Object tree representation: see pickle.ts (dicts are Maps, argparse.Namespace is a plain
 * record, tensors are HostTensor with contiguous row-major data; float16/bfloat16/float64
 * widened to Float32Array with `dtype` keeping the stored name, int64 as BigInt64Array,
 * bool as Uint8Array).
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 as zlibCrc32, inflateRawSync } from 'node:zlib';
import { UserError } from '../errors.js';
import { CHECKPOINT_LIMITS } from '../limits.js';
import { numel, type ExpectedModel, type HostData, type HostTensor, type StoredDType } from './types.js';
import { PyGlobal, unpickle, type PyValue, type StorageDType, type TensorRebuild } from './pickle.js';
import { allocHost, byteSwapInPlace, DTYPE_SIZE, halfToFloatTable, HOST_LITTLE_ENDIAN, rawToHost, rawView, type RawArray } from './dtype.js';
import { openForRead, readAt, ShortRead } from './files.js';

/** The unpickled content of a .pth file (usually a Map). */
export type PthObject = PyValue;


// ---------------------------------------------------------------------------
// minimal zip reader (central directory, zip64 aware, stored + deflate)

interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  /** CRC-32 of the uncompressed data, from the central directory */
  crc: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

/** Deflate's largest expansion: 258 bytes from 2 bits (zlib's technical details), plus slack for headers. */
const MAX_DEFLATE_RATIO = 1032;

class ZipFile {
  /** bytes inflated so far, against `inflateLimit` */
  private inflated = 0;
  /** bytes of stored entries read so far: more than the file holds means entries overlap */
  private storedRead = 0;
  /** most bytes all deflated entries together may inflate to (set by the caller; default: see PthArchive) */
  inflateLimit = 0;
  /** why `inflateLimit` has its value (for the message) */
  inflateWhy = '';

  private constructor(
    private readonly fh: FileHandle,
    readonly fileSize: number,
    private readonly label: string,
    readonly entries: Map<string, ZipEntry>,
  ) {}

  static async open(fh: FileHandle, size: number, label: string): Promise<ZipFile> {
    const notZip = (why: string) => new UserError(`cannot load '${label}': not a PyTorch zip checkpoint (${why})`);
    const head = await readAt(fh, 0, Math.min(size, 16));
    const isPk = head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
    const tailLen = Math.min(size, 22 + 0xffff + 20);
    const tail = await readAt(fh, size - tailLen, tailLen);
    const tv = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      if (isPk) throw notZip('the zip directory at its end is missing: the file is truncated or corrupt');
      if (head[0] === 0x80 && head.length >= 4 && head[2] === 0x8a) {
        throw notZip('it is a legacy pre-1.6 torch.save file; re-save it with torch >= 1.6');
      }
      throw notZip('no zip directory found');
    }
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    if ((count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) && eocd >= 20 &&
        tv.getUint32(eocd - 20, true) === SIG_ZIP64_LOCATOR) {
      const z64 = num64(tv.getBigUint64(eocd - 20 + 8, true));
      if (z64 + 56 > size) throw notZip('its zip64 directory lies beyond the end of the file: truncated or corrupt');
      const rec = new DataView((await readAt(fh, z64, 56)).buffer);
      if (rec.getUint32(0, true) !== SIG_ZIP64_EOCD) throw notZip('its zip64 directory is corrupt');
      count = num64(rec.getBigUint64(32, true));
      cdSize = num64(rec.getBigUint64(40, true));
      cdOffset = num64(rec.getBigUint64(48, true));
    }
    if (cdOffset + cdSize > size) throw notZip('its zip directory lies beyond the end of the file: truncated or corrupt');
    const cd = await readAt(fh, cdOffset, cdSize);
    const v = new DataView(cd.buffer);
    const entries = new Map<string, ZipEntry>();
    const dec = new TextDecoder();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || v.getUint32(p, true) !== SIG_CENTRAL) throw notZip('its zip directory is corrupt');
      const flags = v.getUint16(p + 8, true);
      const method = v.getUint16(p + 10, true);
      const crc = v.getUint32(p + 16, true);
      let compressedSize = v.getUint32(p + 20, true);
      let usize = v.getUint32(p + 24, true);
      const nameLen = v.getUint16(p + 28, true);
      const extraLen = v.getUint16(p + 30, true);
      const commentLen = v.getUint16(p + 32, true);
      let lho = v.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen > cd.length) throw notZip('its zip directory is corrupt');
      const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // zip64 extended information: 8-byte values for the fields that are 0xffffffff
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = v.getUint16(e, true);
        const len = v.getUint16(e + 2, true);
        if (id === 0x0001) {
          let q = e + 4;
          const next = () => {
            if (q + 8 > e + 4 + len) throw notZip('its zip64 extra field is corrupt');
            const val = num64(v.getBigUint64(q, true));
            q += 8;
            return val;
          };
          if (usize === 0xffffffff) usize = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (lho === 0xffffffff) lho = next();
        }
        e += 4 + len;
      }
      entries.set(name, { name, method, flags, compressedSize, size: usize, localHeaderOffset: lho, crc });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return new ZipFile(fh, size, label, entries);
  }

  /**
   * Reads (and inflates if needed) one entry into a fresh buffer and checks its CRC-32. Sizes come from the central
   * directory but are trusted only as upper bounds: a stored entry must lie inside the file (and entries must not
   * overlap), a deflated one must fit the inflate budget before anything is allocated and must inflate to exactly
   * its declared size (zlib stops at that size).
   */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    const corrupt = (why: string) => new UserError(`cannot load '${this.label}': zip entry '${entry.name}' is ${why}`);
    if (entry.flags & 1) throw corrupt('encrypted');
    if (entry.localHeaderOffset + 30 > this.fileSize) throw corrupt('beyond the end of the file (truncated?)');
    const lh = await readAt(this.fh, entry.localHeaderOffset, 30);
    const lv = new DataView(lh.buffer);
    if (lv.getUint32(0, true) !== SIG_LOCAL) throw corrupt('corrupt (bad local header)');
    const dataStart = entry.localHeaderOffset + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
    if (dataStart + entry.compressedSize > this.fileSize) throw corrupt('cut off: the file is truncated');
    let out: Uint8Array;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) throw corrupt('corrupt (stored sizes differ)');
      this.storedRead += entry.size;
      if (this.storedRead > this.fileSize) throw corrupt('corrupt (zip entries overlap: more bytes read than the file holds)');
      out = await readAt(this.fh, dataStart, entry.size);
    } else if (entry.method === 8) {
      if (entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + 1024) {
        throw corrupt(`corrupt (${entry.compressedSize} compressed bytes cannot inflate to the ${entry.size} its zip directory declares)`);
      }
      if (this.inflated + entry.size > this.inflateLimit) {
        throw new UserError(
          `refusing to load '${this.label}': zip entry '${entry.name}' would inflate to ${fmtBytes(entry.size)}` +
            `${this.inflated ? ` after ${fmtBytes(this.inflated)} already inflated` : ''}, more than this checkpoint can need ` +
            `(${fmtBytes(this.inflateLimit)}: ${this.inflateWhy})`,
        );
      }
      const comp = await readAt(this.fh, dataStart, entry.compressedSize);
      try {
        out = inflateRawSync(comp, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
          throw corrupt(`corrupt (it inflates to more than the ${entry.size} bytes its zip directory declares)`);
        }
        throw corrupt('corrupt (deflate data is invalid)');
      }
      if (out.length !== entry.size) throw corrupt('corrupt (inflated size differs)');
      this.inflated += out.length;
    } else {
      throw corrupt(`compressed with zip method ${entry.method}, which is not supported`);
    }
    if (crc32(out) !== entry.crc) {
      throw corrupt('corrupt: its CRC-32 does not match (a damaged copy; Python\'s zipfile refuses it too)');
    }
    return out;
  }
}

const CRC_TABLE: Uint32Array | null = typeof zlibCrc32 === 'function' ? null : makeCrcTable();

function makeCrcTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

/** CRC-32 (zip/zlib polynomial): zlib's (Node >= 20.15), else a table loop. */
function crc32(data: Uint8Array): number {
  if (!CRC_TABLE) return zlibCrc32(data) >>> 0;
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** 3221225472 -> "3.0 GB" */
function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} bytes`;
}

function num64(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UserError('zip64 value too large');
  return Number(v);
}

// ---------------------------------------------------------------------------
// tensor rebuild

/** A storage referenced by a persistent id, before its bytes are read. */
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: StorageDType,
    readonly numel: number,
    readonly location: string,
  ) {}
}

/** Raw bytes of one storage in host byte order. */
export interface RawStorage {
  /** element type of the storage ('untyped' = bytes; then `dtype` of rebuildTensor decides) */
  dtype: StorageDType;
  bytes: Uint8Array;
}

/**
 * Builds a contiguous row-major HostTensor from a storage, a storage offset (elements),
 * a size and a stride (elements), as `torch.Tensor.set_(storage, offset, size, stride)`.
 * Non-contiguous strides are gathered; float16/bfloat16/float64 are widened to float32.
 * With `allowView`, a tensor that covers its whole storage contiguously and has a native
 * host type shares the storage's memory instead of copying it.
 * Throws (UserError naming `label`) when the view reaches outside the storage, or when it repeats storage
 * elements (more elements than the storage) beyond CHECKPOINT_LIMITS.maxRepeatedViewBytes without `allowRepeat`.
 */
export function rebuildTensor(
  storage: RawStorage,
  storageOffset: number,
  size: readonly number[],
  stride: readonly number[],
  opts: { dtype?: StoredDType; allowView?: boolean; label?: string; allowRepeat?: boolean } = {},
): HostTensor {
  const label = opts.label ?? 'tensor';
  const dtype: StoredDType | undefined = storage.dtype === 'untyped' ? opts.dtype : storage.dtype;
  if (!dtype) throw new UserError(`cannot load '${label}': a tensor on an untyped storage has no dtype`);
  if (size.length !== stride.length) throw new UserError(`cannot load '${label}': tensor size and stride have different ranks`);
  const bad = (why: string) => new UserError(`cannot load '${label}': corrupt tensor (${why})`);
  const elem = DTYPE_SIZE[dtype];
  if (storage.bytes.byteLength % elem) throw bad(`storage of ${storage.bytes.byteLength} bytes does not hold whole ${dtype} elements`);
  const raw = rawView(storage.bytes, dtype);
  const n = numel(size);
  const shape = [...size];
  if (size.some((s) => s < 0 || !Number.isInteger(s))) throw bad('negative size');
  if (n === 0) return { dtype, shape, data: allocHost(dtype, 0) };
  let last = storageOffset;
  for (let d = 0; d < size.length; d++) {
    if (stride[d] < 0) throw bad('negative stride');
    last += (size[d] - 1) * stride[d];
  }
  if (storageOffset < 0 || last >= raw.length) {
    throw bad(`it reads elements ${storageOffset}..${last} of a storage with ${raw.length}`);
  }
  if (n > raw.length && n * hostElemSize(dtype) > CHECKPOINT_LIMITS.maxRepeatedViewBytes && !opts.allowRepeat) {
    throw new UserError(
      `refusing to load '${label}': a ${fmtShape(size)} view (stride ${fmtShape(stride)}) repeats a storage of ${raw.length} value(s) to ${n}, which no checkpoint needs`,
    );
  }
  // contiguous row-major?  (dimensions of size 1 may carry any stride)
  let contiguous = true;
  for (let d = size.length - 1, expect = 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expect) contiguous = false;
    expect *= size[d];
  }
  if (contiguous) {
    const whole = storageOffset === 0 && n === raw.length;
    const sub = whole ? raw : (raw.subarray(storageOffset, storageOffset + n) as RawArray);
    return { dtype, shape, data: rawToHost(sub, dtype, whole && opts.allowView === true) };
  }
  return { dtype, shape, data: gatherStrided(raw, dtype, storageOffset, size, stride, n) };
}

/**
 * Row-major gather of a strided view: for every index (i0..ik) read
 * raw[offset + sum(i_d * stride_d)], converting to the host type.
 */
function gatherStrided(
  raw: RawArray, dtype: StoredDType, offset: number, size: readonly number[], stride: readonly number[], n: number,
): HostData {
  const out = allocHost(dtype, n);
  const rank = size.length;
  const inner = size[rank - 1];
  const innerStride = stride[rank - 1];
  const idx = new Array<number>(rank - 1).fill(0);
  const table = dtype === 'float16' ? halfToFloatTable() : null;
  const bits = dtype === 'bfloat16' ? new Uint32Array((out as Float32Array).buffer) : null;
  const src = raw as unknown as ArrayLike<number>;
  const dst = out as unknown as { [i: number]: number };
  let base = offset;
  for (let o = 0; o < n; o += inner) {
    // one row along the last dimension
    if (table) {
      const s = raw as Uint16Array;
      for (let j = 0, p = base; j < inner; j++, p += innerStride) dst[o + j] = table[s[p]];
    } else if (bits) {
      const s = raw as Uint16Array;
      for (let j = 0, p = base; j < inner; j++, p += innerStride) bits[o + j] = s[p] << 16;
    } else {
      for (let j = 0, p = base; j < inner; j++, p += innerStride) dst[o + j] = src[p];
    }
    // advance the odometer over the leading dimensions
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]++;
      base += stride[d];
      if (idx[d] < size[d]) break;
      base -= idx[d] * stride[d];
      idx[d] = 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// reading a .pth

interface Pending {
  tensor: HostTensor;
  ref: StorageRef;
  req: TensorRebuild;
}

/** Bytes per element of the host array a stored dtype is read into (floating types widen to float32). */
function hostElemSize(dtype: StoredDType): number {
  return dtype === 'float16' || dtype === 'bfloat16' || dtype === 'float64' ? 4 : DTYPE_SIZE[dtype];
}

function fmtShape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/** How a checkpoint is read: the model it is for (optional) raises the inflate budget and checks tensor shapes. */
export interface ArchiveOptions {
  expect?: ExpectedModel;
}

/** An opened checkpoint: the object tree with tensors whose data is not read yet. */
export class PthArchive {
  private constructor(
    readonly root: PyValue,
    private readonly zip: ZipFile,
    private readonly prefix: string,
    /** storages must be byte-swapped (file order != host order) */
    private readonly swapBytes: boolean,
    private readonly pending: Pending[],
    private readonly label: string,
    private readonly expect: ExpectedModel | undefined,
  ) {}

  static async open(fh: FileHandle, size: number, label: string, opts: ArchiveOptions = {}): Promise<PthArchive> {
    const zip = await ZipFile.open(fh, size, label);
    const L = CHECKPOINT_LIMITS;
    // Inflate budget: torch.save stores entries, so only re-zipped files inflate anything; 8x the file covers
    // re-zipped float data (deflate gains ~10% on weights), the model term covers zero-filled tensors.
    const byFile = L.inflateFileFactor * size;
    const byModel = opts.expect ? opts.expect.numParams * L.inflateBytesPerParam : 0;
    zip.inflateLimit = Math.max(L.inflateMinBytes, byFile, byModel);
    zip.inflateWhy =
      zip.inflateLimit === byModel ? `${L.inflateBytesPerParam} bytes per parameter of ${opts.expect!.name}`
        : zip.inflateLimit === byFile ? `${L.inflateFileFactor}x the file size` : `the ${fmtBytes(L.inflateMinBytes)} floor`;
    // the archive folder is whatever precedes '/data.pkl' (torch uses the file stem or 'archive')
    let pkl: string | undefined;
    for (const name of zip.entries.keys()) {
      if ((name === 'data.pkl' || name.endsWith('/data.pkl')) && (!pkl || name.length < pkl.length)) pkl = name;
    }
    if (!pkl) {
      throw new UserError(`cannot load '${label}': not a PyTorch checkpoint (the zip holds no data.pkl)`);
    }
    const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
    const bo = zip.entries.get(`${prefix}byteorder`);
    if (bo && bo.size > 16) throw new UserError(`cannot load '${label}': its byteorder entry is ${bo.size} bytes long (corrupt)`);
    const byteorder = bo ? new TextDecoder().decode(await zip.read(bo)).trim() : 'little';
    if (byteorder !== 'little' && byteorder !== 'big') {
      throw new UserError(`cannot load '${label}': unknown byte order '${byteorder}'`);
    }
    const pklEntry = zip.entries.get(pkl) as ZipEntry;
    if (pklEntry.size > L.maxPickleBytes) {
      throw new UserError(
        `refusing to load '${label}': its data.pkl is ${fmtBytes(pklEntry.size)}, more than a checkpoint's pickle needs (${fmtBytes(L.maxPickleBytes)}); the tensors live outside it`,
      );
    }
    const pending: Pending[] = [];
    const root = unpickle(await zip.read(pklEntry), {
      label,
      persistentLoad: (pid) => {
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
          throw new UserError(`cannot load '${label}': unsupported persistent id in data.pkl`);
        }
        const [, cls, key, location, count] = pid;
        if (!(cls instanceof PyGlobal) || !cls.storageDType) {
          throw new UserError(`cannot load '${label}': persistent id names no storage type`);
        }
        if (typeof key !== 'string' || typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
          throw new UserError(`cannot load '${label}': malformed storage reference in data.pkl`);
        }
        return new StorageRef(key, cls.storageDType, count, String(location)) as unknown as PyValue;
      },
      rebuildTensor: (req) => {
        if (!(req.storage instanceof StorageRef)) {
          throw new UserError(`cannot load '${label}': a tensor in data.pkl does not refer to a storage`);
        }
        const dtype = req.storage.dtype === 'untyped' ? req.dtype : req.storage.dtype;
        if (!dtype) throw new UserError(`cannot load '${label}': a tensor on an untyped storage has no dtype`);
        // data is filled in by materialize(); until then it is empty
        const tensor: HostTensor = { dtype, shape: [...req.size], data: new Float32Array(0) };
        pending.push({ tensor, ref: req.storage, req });
        return tensor;
      },
    });
    // swap when the file's byte order differs from the host's
    return new PthArchive(root, zip, prefix, (byteorder === 'big') === HOST_LITTLE_ENDIAN, pending, label, opts.expect);
  }

  /**
   * Reads the storages and fills in tensor data. With `only`, just those tensors
   * (others keep empty data and must not be handed out). Each storage is read once;
   * shared storages are copied per tensor, so no two tensors alias each other.
   * `names` (state-dict keys, `module.` stripped) name tensors in messages and select the model's expected shapes.
   * Every view is checked before any storage is read or any tensor allocated (see checkViews).
   */
  async materialize(only?: Set<HostTensor>, names?: ReadonlyMap<HostTensor, string>): Promise<void> {
    const byKey = new Map<string, Pending[]>();
    for (const p of this.pending) {
      if (only && !only.has(p.tensor)) continue;
      let list = byKey.get(p.ref.key);
      if (!list) byKey.set(p.ref.key, (list = []));
      list.push(p);
    }
    const entries = this.checkViews(byKey, names);
    for (const [key, list] of byKey) {
      const ref = list[0].ref;
      const bytes = await this.zip.read(entries.get(key)!);
      const elem = ref.dtype === 'untyped' ? 1 : DTYPE_SIZE[ref.dtype];
      if (this.swapBytes) byteSwapInPlace(bytes, elem === 1 ? DTYPE_SIZE[list[0].tensor.dtype] : elem);
      const storage: RawStorage = { dtype: ref.dtype, bytes: bytes.subarray(0, ref.numel * elem) };
      for (const p of list) {
        const t = rebuildTensor(storage, p.req.storageOffset, p.req.size, p.req.stride, {
          dtype: p.tensor.dtype,
          allowView: list.length === 1,
          label: this.label,
          allowRepeat: true, // checked by checkViews (with the model's shapes)
        });
        p.tensor.data = t.data;
      }
    }
  }

  /**
   * The checks that keep a hostile file from making us allocate what no model needs, all made from the pickle and the
   * zip directory before any tensor data is read:
   *  - each storage exists and its zip entry holds the bytes the pickle declares;
   *  - each view stays inside its storage (size, stride, offset);
   *  - a view with more elements than its storage (stride 0, overlapping strides: PyTorch keeps it as a view, we
   *    copy it densely) is refused unless the model has a parameter of exactly that shape or it is small;
   *  - a tensor larger than the model's parameter of that name is refused by name;
   *  - all dense copies together fit 2x the storages (as host arrays) + a slack (many views of one storage).
   * Returns the zip entry of each storage key.
   */
  private checkViews(byKey: Map<string, Pending[]>, names?: ReadonlyMap<HostTensor, string>): Map<string, ZipEntry> {
    const L = CHECKPOINT_LIMITS;
    const label = this.label;
    const entries = new Map<string, ZipEntry>();
    let storageHostBytes = 0;
    const checks: { p: Pending; hostBytes: number; name: string }[] = [];
    for (const [key, list] of byKey) {
      const ref = list[0].ref;
      const entry = this.zip.entries.get(`${this.prefix}data/${key}`);
      if (!entry) throw new UserError(`cannot load '${label}': storage ${key} is missing from the zip (truncated or corrupt file)`);
      const elem = ref.dtype === 'untyped' ? 1 : DTYPE_SIZE[ref.dtype];
      if (entry.size < ref.numel * elem) {
        throw new UserError(`cannot load '${label}': storage ${key} holds ${entry.size} bytes, expected ${ref.numel * elem}`);
      }
      entries.set(key, entry);
      storageHostBytes += ref.numel * elem * 2; // widening to float32 at most doubles (float16 -> float32)
      for (const p of list) {
        if (p.ref.dtype !== ref.dtype) throw new UserError(`cannot load '${label}': storage ${key} is used with two dtypes`);
        const name = names?.get(p.tensor);
        const what = name !== undefined ? `tensor '${name}'` : `a tensor on storage ${key}`;
        const bad = (why: string) => new UserError(`cannot load '${label}': ${what} is corrupt (${why})`);
        const { size, stride, storageOffset } = p.req;
        const dtype = p.tensor.dtype;
        if (size.length !== stride.length) throw bad('size and stride have different ranks');
        if (size.some((d) => d < 0)) throw bad('negative size');
        if (stride.some((d) => d < 0)) throw bad('negative stride');
        if (storageOffset < 0) throw bad('negative storage offset');
        const n = numel(size);
        if (n === 0) continue;
        // elements of the tensor's dtype in the storage
        const storageElems = Math.floor((ref.numel * elem) / DTYPE_SIZE[dtype]);
        let last = storageOffset;
        for (let d = 0; d < size.length; d++) last += (size[d] - 1) * stride[d];
        if (last >= storageElems) throw bad(`it reads elements ${storageOffset}..${last} of a storage with ${storageElems}`);
        const hostBytes = n * hostElemSize(dtype);
        const want = name !== undefined ? this.expect?.shapes.get(name) : undefined;
        const fixed = want !== undefined && want.every((d) => d >= 0);
        if (want && fixed && n > numel(want)) {
          throw new UserError(
            `refusing to load '${label}': ${what} has shape ${fmtShape(size)} (${n} values) but ${this.expect!.name} needs ` +
              `${fmtShape(want)} (${numel(want)}); a tensor larger than the model's parameter is never read`,
          );
        }
        if (n > storageElems && hostBytes > L.maxRepeatedViewBytes && !(fixed && want!.length === size.length && want!.every((d, i) => d === size[i]))) {
          throw new UserError(
            `refusing to load '${label}': ${what} is a ${fmtShape(size)} view (stride ${fmtShape(stride)}) of a storage of ` +
              `${storageElems} ${dtype} value(s); it repeats them to ${n} values (${fmtBytes(hostBytes)} as a dense copy), which no checkpoint needs`,
          );
        }
        checks.push({ p, hostBytes, name: what });
      }
    }
    const budget = 2 * storageHostBytes + L.denseSlackBytes;
    let total = 0;
    for (const c of checks) {
      total += c.hostBytes;
      if (total > budget) {
        throw new UserError(
          `refusing to load '${label}': at ${c.name} its tensors add up to more than ${fmtBytes(budget)} of dense copies, ` +
            `twice what its storages hold (many views of the same storage?)`,
        );
      }
    }
    return entries;
  }
}

/** Opens `path` as a PyTorch zip checkpoint, runs `fn` on it, closes it (a short read becomes a UserError). */
export async function withPth<T>(path: string, fn: (a: PthArchive) => Promise<T>, opts: ArchiveOptions = {}): Promise<T> {
  const { fh, size } = await openForRead(path);
  try {
    return await fn(await PthArchive.open(fh, size, path, opts));
  } catch (e) {
    if (e instanceof ShortRead) throw new UserError(`cannot load '${path}': the file is truncated or changed while being read`);
    throw e;
  } finally {
    await fh.close();
  }
}

/**
 * Reads a PyTorch zip checkpoint and returns its unpickled object tree with every
 * tensor loaded (representation: see the module comment and pickle.ts).
 * Errors (missing file, not a zip checkpoint, truncated, corrupt, forbidden global)
 * are UserErrors naming `path`.
 */
export async function readPth(path: string): Promise<PthObject> {
  return withPth(path, async (a) => {
    await a.materialize();
    return a.root;
  });
}
