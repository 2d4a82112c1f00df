/**
 * safetensors reading and (atomic) writing.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   { "__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ... }
 * padded with spaces so that 8 + N is a multiple of 8, then the raw little-endian data;
 * offsets are relative to the start of the data.
 *
 * Like the reference reader (huggingface/safetensors), the header may be at most 100 MB and tensors may not
 * overlap (a hostile file could otherwise alias one range under many names).
 *
 * Supported dtypes: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL. F16/BF16/F64 are
 * widened to Float32Array on read (HostTensor.dtype keeps the stored type) and rounded
 * back (nearest even) on write.
 */
import { open } from 'node:fs/promises';
import { UserError } from '../errors.js';
import { numel, type HostTensor, type StoredDType, type TensorMap } from './types.js';
import { DTYPE_SIZE, HOST_LITTLE_ENDIAN, hostToBytes, rawToHost, rawView } from './dtype.js';
import { fileError } from './files.js';
import { writeFileAtomic } from './atomic.js';

/** A TensorMap (file order) that also carries the file's `__metadata__`. */
export type SafetensorsMap = TensorMap & { metadata: Record<string, string> };

/** huggingface/safetensors MAX_HEADER_SIZE */
const MAX_HEADER_BYTES = 100_000_000;

const FROM_ST: Record<string, StoredDType> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64',
  I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const TO_ST: Record<StoredDType, string> = {
  float32: 'F32', float16: 'F16', bfloat16: 'BF16', float64: 'F64',
  int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

/**
 * Parses safetensors bytes. Tensors are ordered by their data offset (= the order in
 * which writeSafetensors wrote the map). With `shareMemory`, tensors whose data are
 * already in host layout are views into `bytes` (each over its own byte range);
 * otherwise every tensor owns a copy.
 */
export function parseSafetensors(bytes: Uint8Array, label = 'safetensors data', shareMemory = false): SafetensorsMap {
  if (!HOST_LITTLE_ENDIAN) throw new Error('big-endian hosts are not supported');
  const bad = (why: string) => new UserError(`cannot load '${label}': not a valid safetensors file (${why})`);
  if (bytes.length < 8) throw bad('it is shorter than the 8-byte header length');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(bytes.length - 8)) throw bad('its header length exceeds the file size: truncated or not safetensors');
  if (n64 > BigInt(MAX_HEADER_BYTES)) throw bad(`its header is ${n64} bytes long, more than the ${MAX_HEADER_BYTES} the format allows`);
  const n = Number(n64);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch {
    throw bad('its header is not valid JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('its header is not a JSON object');
  const data = bytes.subarray(8 + n);
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: StoredDType; shape: number[]; begin: number; end: number; order: number }[] = [];
  let order = 0;
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof info !== 'object' || info === null || Array.isArray(info)) throw bad('__metadata__ is not an object');
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== 'string') throw bad(`metadata '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) throw bad(`entry '${name}' is not an object`);
    const dtype = typeof e.dtype === 'string' ? FROM_ST[e.dtype] : undefined;
    if (!dtype) throw new UserError(`cannot load '${label}': tensor '${name}' has dtype ${String(e.dtype)}, which is not supported`);
    const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;
    if (!Array.isArray(e.shape) || !e.shape.every(isInt)) throw bad(`tensor '${name}' has an invalid shape`);
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isInt) || offs[0] > offs[1]) {
      throw bad(`tensor '${name}' has invalid data offsets`);
    }
    const shape = e.shape as number[];
    const [begin, end] = offs as [number, number];
    if (end > data.length) throw bad(`tensor '${name}' lies beyond the end of the file: truncated`);
    if (end - begin !== numel(shape) * DTYPE_SIZE[dtype]) throw bad(`tensor '${name}' has ${end - begin} bytes for shape [${shape.join(', ')}]`);
    entries.push({ name, dtype, shape, begin, end, order: order++ });
  }
  entries.sort((a, b) => a.begin - b.begin || a.order - b.order);
  for (let i = 1; i < entries.length; i++) {
    const [p, q] = [entries[i - 1], entries[i]];
    if (q.begin < p.end) throw bad(`tensors '${p.name}' and '${q.name}' overlap (bytes ${q.begin}..${Math.min(p.end, q.end)} belong to both)`);
  }
  const map = new Map() as SafetensorsMap;
  for (const e of entries) {
    const raw = rawView(data.subarray(e.begin, e.end), e.dtype);
    // rawView copies unaligned data; such a copy is ours already
    const owned = shareMemory || raw.buffer !== bytes.buffer;
    const t: HostTensor = { dtype: e.dtype, shape: e.shape, data: rawToHost(raw, e.dtype, owned) };
    map.set(e.name, t);
  }
  map.metadata = metadata;
  return map;
}

/**
 * Reads a .safetensors file (path) or bytes. Returns the tensors in file order, with
 * the `__metadata__` strings as `.metadata`. Errors are UserErrors naming the file.
 * From a path, tensors may share the one buffer the file was read into (each its own
 * range); from bytes, every tensor is a copy (the caller's buffer is never aliased).
 */
export async function readSafetensors(src: string | Uint8Array): Promise<SafetensorsMap> {
  if (typeof src !== 'string') return parseSafetensors(src, 'safetensors data', false);
  let fh;
  try {
    fh = await open(src, 'r');
  } catch (e) {
    throw fileError(src, e);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new UserError(`'${src}' is a directory, not a safetensors file`);
    const buf = new Uint8Array(st.size);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await fh.read(buf, done, buf.length - done, done);
      if (bytesRead === 0) throw new UserError(`cannot load '${src}': the file shrank while being read`);
      done += bytesRead;
    }
    return parseSafetensors(buf, src, true);
  } finally {
    await fh.close();
  }
}

/**
 * Serializes a map to safetensors as a list of chunks (header, then each tensor's
 * bytes in map order; float32/int host arrays are passed as views, not copied).
 */
export function encodeSafetensors(map: TensorMap, metadata?: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new UserError(`safetensors metadata '${k}' must be a string`);
    }
    header.__metadata__ = metadata;
  }
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of map) {
    if (name === '__metadata__') throw new UserError(`a tensor cannot be named '__metadata__' in a safetensors file`);
    const st = TO_ST[t.dtype];
    if (!st) throw new UserError(`tensor '${name}' has dtype ${String(t.dtype)}, which safetensors writing does not support`);
    const bytes = hostToBytes(t, `tensor '${name}'`);
    header[name] = { dtype: st, shape: [...t.shape], data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    chunks.push(bytes);
  }
  let json = JSON.stringify(header);
  let hb = new TextEncoder().encode(json);
  const pad = (8 - ((8 + hb.length) % 8)) % 8;
  if (pad) {
    json += ' '.repeat(pad);
    hb = new TextEncoder().encode(json);
  }
  const head = new Uint8Array(8 + hb.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(hb.length), true);
  head.set(hb, 8);
  return [head, ...chunks];
}

/**
 * Writes `map` (in its order) and optional string metadata to `path` as safetensors,
 * atomically (temp file + fsync + rename + directory fsync).
 */
export async function writeSafetensors(path: string, map: TensorMap, metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(map, metadata));
}
