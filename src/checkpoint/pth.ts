/**
 * Reading PyTorch zip checkpoints (`torch.save` since torch 1.6; `.pth`, `.pth.tar`, `.pt`)
 * without executing any code, and timm-style checkpoint loading.
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
 * Deflated entries (not written by torch, but legal) are inflated with fflate.
 *
 * Object tree representation: see pickle.ts (dicts are Maps, argparse.Namespace is a plain
 * record, tensors are HostTensor with contiguous row-major data; float16/bfloat16/float64
 * widened to Float32Array with `dtype` keeping the stored name, int64 as BigInt64Array,
 * bool as Uint8Array).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { inflateSync } from 'fflate';
import { UserError } from '../errors.js';
import { numel, type HostData, type HostTensor, type StoredDType, type TensorMap } from './types.js';
import {
  isPyRecord, PyGlobal, unpickle,
  type PyRecord, type PyValue, type StorageDType, type TensorRebuild,
} from './pickle.js';
import {
  allocHost, byteSwapInPlace, DTYPE_SIZE, halfToFloatTable, HOST_LITTLE_ENDIAN,
  fileError, pickStateDict, rawToHost, rawView, stripPrefix, type RawArray, type StateDictKey,
} from './state.js';
import { readSafetensors } from './safetensors.js';
import { isTrainCheckpointMeta, splitTrainTensors } from './saver.js';

/** The unpickled content of a .pth file (usually a Map). */
export type PthObject = PyValue;

// ---------------------------------------------------------------------------
// file access helpers

async function openForRead(path: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw fileError(path, e);
  }
  const st = await fh.stat();
  if (st.isDirectory()) {
    await fh.close();
    throw new UserError(`'${path}' is a directory, not a checkpoint file`);
  }
  return { fh, size: st.size };
}

/** Reads exactly `len` bytes at `pos` into a fresh (aligned) buffer. */
async function readAt(fh: FileHandle, pos: number, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(out, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  if (done < len) throw new ShortRead();
  return out;
}

class ShortRead extends Error {}

// ---------------------------------------------------------------------------
// minimal zip reader (central directory, zip64 aware, stored + deflate)

interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

class ZipFile {
  private constructor(
    private readonly fh: FileHandle,
    private readonly fileSize: number,
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
      entries.set(name, { name, method, flags, compressedSize, size: usize, localHeaderOffset: lho });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return new ZipFile(fh, size, label, entries);
  }

  /** Reads (and inflates if needed) one entry into a fresh buffer. */
  async read(entry: ZipEntry): Promise<Uint8Array> {
    const corrupt = (why: string) => new UserError(`cannot load '${this.label}': zip entry '${entry.name}' is ${why}`);
    if (entry.flags & 1) throw corrupt('encrypted');
    if (entry.localHeaderOffset + 30 > this.fileSize) throw corrupt('beyond the end of the file (truncated?)');
    const lh = await readAt(this.fh, entry.localHeaderOffset, 30);
    const lv = new DataView(lh.buffer);
    if (lv.getUint32(0, true) !== SIG_LOCAL) throw corrupt('corrupt (bad local header)');
    const dataStart = entry.localHeaderOffset + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
    if (dataStart + entry.compressedSize > this.fileSize) throw corrupt('cut off: the file is truncated');
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) throw corrupt('corrupt (stored sizes differ)');
      return readAt(this.fh, dataStart, entry.size);
    }
    if (entry.method === 8) {
      const comp = await readAt(this.fh, dataStart, entry.compressedSize);
      let out: Uint8Array;
      try {
        out = inflateSync(comp, { out: new Uint8Array(entry.size) });
      } catch {
        throw corrupt('corrupt (deflate data is invalid)');
      }
      if (out.length !== entry.size) throw corrupt('corrupt (inflated size differs)');
      return out;
    }
    throw corrupt(`compressed with zip method ${entry.method}, which is not supported`);
  }
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
 * Throws (UserError naming `label`) when the view reaches outside the storage.
 */
export function rebuildTensor(
  storage: RawStorage,
  storageOffset: number,
  size: readonly number[],
  stride: readonly number[],
  opts: { dtype?: StoredDType; allowView?: boolean; label?: string } = {},
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

/** An opened checkpoint: the object tree with tensors whose data is not read yet. */
class PthArchive {
  private constructor(
    readonly root: PyValue,
    private readonly zip: ZipFile,
    private readonly prefix: string,
    /** storages must be byte-swapped (file order != host order) */
    private readonly swapBytes: boolean,
    private readonly pending: Pending[],
    private readonly label: string,
  ) {}

  static async open(fh: FileHandle, size: number, label: string): Promise<PthArchive> {
    const zip = await ZipFile.open(fh, size, label);
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
    const byteorder = bo ? new TextDecoder().decode(await zip.read(bo)).trim() : 'little';
    if (byteorder !== 'little' && byteorder !== 'big') {
      throw new UserError(`cannot load '${label}': unknown byte order '${byteorder}'`);
    }
    const pending: Pending[] = [];
    const root = unpickle(await zip.read(zip.entries.get(pkl) as ZipEntry), {
      label,
      persistentLoad: (pid) => {
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
          throw new UserError(`cannot load '${label}': unsupported persistent id in data.pkl`);
        }
        const [, cls, key, location, count] = pid;
        if (!(cls instanceof PyGlobal) || !cls.storageDType) {
          throw new UserError(`cannot load '${label}': persistent id names no storage type`);
        }
        if (typeof key !== 'string' || typeof count !== 'number') {
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
    return new PthArchive(root, zip, prefix, (byteorder === 'big') === HOST_LITTLE_ENDIAN, pending, label);
  }

  /**
   * Reads the storages and fills in tensor data. With `only`, just those tensors
   * (others keep empty data and must not be handed out). Each storage is read once;
   * shared storages are copied per tensor, so no two tensors alias each other.
   */
  async materialize(only?: Set<HostTensor>): Promise<void> {
    const byKey = new Map<string, Pending[]>();
    for (const p of this.pending) {
      if (only && !only.has(p.tensor)) continue;
      let list = byKey.get(p.ref.key);
      if (!list) byKey.set(p.ref.key, (list = []));
      list.push(p);
    }
    for (const [key, list] of byKey) {
      const ref = list[0].ref;
      const entry = this.zip.entries.get(`${this.prefix}data/${key}`);
      if (!entry) throw new UserError(`cannot load '${this.label}': storage ${key} is missing from the zip (truncated or corrupt file)`);
      const bytes = await this.zip.read(entry);
      const elem = ref.dtype === 'untyped' ? 1 : DTYPE_SIZE[ref.dtype];
      if (bytes.length < ref.numel * elem) {
        throw new UserError(`cannot load '${this.label}': storage ${key} holds ${bytes.length} bytes, expected ${ref.numel * elem}`);
      }
      if (this.swapBytes) byteSwapInPlace(bytes, elem === 1 ? DTYPE_SIZE[list[0].tensor.dtype] : elem);
      const storage: RawStorage = { dtype: ref.dtype, bytes: bytes.subarray(0, ref.numel * elem) };
      for (const p of list) {
        if (p.ref.dtype !== ref.dtype) throw new UserError(`cannot load '${this.label}': storage ${key} is used with two dtypes`);
        const t = rebuildTensor(storage, p.req.storageOffset, p.req.size, p.req.stride, {
          dtype: p.tensor.dtype,
          allowView: list.length === 1,
          label: this.label,
        });
        p.tensor.data = t.data;
      }
    }
  }
}

async function withPth<T>(path: string, fn: (a: PthArchive) => Promise<T>): Promise<T> {
  const { fh, size } = await openForRead(path);
  try {
    return await fn(await PthArchive.open(fh, size, path));
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

// ---------------------------------------------------------------------------
// timm-style checkpoint loading

export interface LoadCheckpointOptions {
  /**
   * Prefer `state_dict_ema` / `model_ema` when present (timm's use_ema).
   * Default false (validate.py's default); note timm's load_checkpoint defaults to
   * true, which is what train.py's --initial-checkpoint uses: pass it explicitly.
   */
  useEma?: boolean;
  /**
   * Read only the tensors of the chosen state dict (saves memory and time for inference
   * on training checkpoints). Then `meta.optimizer` and `meta.raw` are left out.
   */
  stateDictOnly?: boolean;
}

export interface CheckpointMeta {
  format: 'pth' | 'safetensors';
  /** where the state dict came from; null = the top-level object itself */
  stateDictKey: StateDictKey;
  /** a `state_dict_ema` or `model_ema` entry is present (not None) */
  hasEma: boolean;
  /** timm train.py checkpoint fields, when present */
  epoch?: number;
  arch?: string;
  /** argparse.Namespace as a plain record of its attributes */
  args?: PyRecord;
  metric?: number | null;
  version?: number;
  /** torch optimizer state_dict as unpickled (Map with 'state' and 'param_groups') */
  optimizer?: PyValue;
  /** safetensors `__metadata__` */
  metadata?: Record<string, string>;
  /** the whole unpickled object (absent with stateDictOnly and for safetensors) */
  raw?: PyValue;
}

export interface LoadedCheckpoint {
  /** in the file's order, leading `module.` stripped from keys */
  stateDict: TensorMap;
  meta: CheckpointMeta;
}

/**
 * Loads a checkpoint the way timm's load_state_dict does (reference §8.4) from
 * `.pth` / `.pth.tar` / `.pt` (PyTorch zip) or `.safetensors` (detected by content):
 * picks `state_dict_ema` / `model_ema` (only with useEma, when present and not None),
 * else `state_dict`, else `model`, else the object itself; strips a leading `module.`
 * from keys; returns the other timm fields in `meta`.
 */
export async function loadCheckpoint(path: string, opts: LoadCheckpointOptions = {}): Promise<LoadedCheckpoint> {
  const useEma = opts.useEma ?? false;
  const { fh, size } = await openForRead(path);
  let head: Uint8Array;
  try {
    head = await readAt(fh, 0, Math.min(size, 9));
  } finally {
    await fh.close();
  }
  const isZip = head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const looksSafetensors = head.length === 9 && head[8] === 0x7b /* '{' */;
  if (!isZip && (looksSafetensors || path.toLowerCase().endsWith('.safetensors'))) {
    const map = await readSafetensors(path);
    if (isTrainCheckpointMeta(map.metadata)) {
      // A mambaout training checkpoint (saver.ts): pick EMA or model weights like timm's load_state_dict.
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(map.metadata.json ?? '{}');
      } catch {
        throw new UserError(`'${path}' has corrupt checkpoint metadata`);
      }
      const ck = splitTrainTensors(map, json);
      const ema = useEma && ck.stateDictEma ? ck.stateDictEma : null;
      return {
        stateDict: stripPrefix(ema ?? ck.stateDict),
        meta: {
          format: 'safetensors', stateDictKey: ema ? 'state_dict_ema' : 'state_dict', hasEma: Boolean(ck.stateDictEma),
          epoch: ck.epoch, arch: ck.arch, args: ck.args as PyRecord, metric: ck.metric ?? null, version: ck.version, metadata: map.metadata,
        },
      };
    }
    return {
      stateDict: stripPrefix(map),
      meta: { format: 'safetensors', stateDictKey: null, hasEma: false, metadata: map.metadata },
    };
  }
  return withPth(path, async (a) => {
    const root = a.root;
    const { stateDict, key } = pickStateDict(root, useEma, path);
    if (opts.stateDictOnly) await a.materialize(new Set(stateDict.values()));
    else await a.materialize();
    const meta: CheckpointMeta = { format: 'pth', stateDictKey: key, hasEma: false };
    if (root instanceof Map) {
      const get = (k: string) => root.get(k);
      meta.hasEma = [get('state_dict_ema'), get('model_ema')].some((v) => v !== undefined && v !== null);
      const epoch = get('epoch');
      if (typeof epoch === 'number') meta.epoch = epoch;
      const arch = get('arch');
      if (typeof arch === 'string') meta.arch = arch;
      const args = get('args');
      if (isPyRecord(args)) meta.args = args;
      const metric = get('metric');
      if (typeof metric === 'number' || metric === null) meta.metric = metric;
      const version = get('version');
      if (typeof version === 'number') meta.version = version;
      if (!opts.stateDictOnly) {
        if (root.has('optimizer')) meta.optimizer = get('optimizer') as PyValue;
        meta.raw = root;
      }
    } else if (!opts.stateDictOnly) {
      meta.raw = root;
    }
    return { stateDict: stripPrefix(stateDict), meta };
  });
}
