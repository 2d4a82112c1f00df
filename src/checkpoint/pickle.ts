/**
 * A safe Python pickle reader (protocols 0-5) for PyTorch checkpoints.
 *
 * It NEVER executes code: every GLOBAL / STACK_GLOBAL / INST is resolved against a
 * fixed allowlist of the names that `torch.save` and timm's train.py produce
 * (OrderedDict, the tensor rebuild functions, storage types, torch dtypes,
 * argparse.Namespace, a few builtins, numpy scalars). Anything else is refused with
 * a UserError that names the global.
 *
 * How Python values are represented (the `PyValue` union):
 *   None -> null, bool -> boolean, float -> number,
 *   int -> number (bigint when outside +-2^53),
 *   str -> string, bytes / bytearray -> Uint8Array,
 *   list and tuple -> arrays (a tuple is a plain array too),
 *   dict and OrderedDict -> Map (keeps insertion order and non-string keys such as the
 *     integer parameter indices of an optimizer state dict),
 *   set / frozenset -> Set,
 *   argparse.Namespace -> a plain object whose properties are its attributes,
 *   slice -> { start, stop, step },
 *   torch tensors / Parameters -> whatever `rebuildTensor` returns (HostTensor in pth.ts),
 *   numpy scalars -> number / bigint / boolean,
 *   torch dtypes and storage classes appearing as values -> PyGlobal.
 * Attributes set on a dict by BUILD (PyTorch stores `_metadata` on state dicts that way)
 * are kept aside, see `pyAttributes`.
 *
 * Bounded work (src/limits.ts CHECKPOINT_LIMITS): at most maxPickleOps opcodes (which bounds the stack, the memo
 * and the objects made), LONG4 integers of at most maxLongBytes (decoded in linear time), text integers of at most
 * Python's 4300 digits. Each refusal is one UserError naming the file.
 */
import { UserError } from '../errors.js';
import { CHECKPOINT_LIMITS } from '../limits.js';
import type { HostTensor, StoredDType } from './types.js';

/** A Python value as produced by `unpickle` (see the module comment). */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyDict
  | Set<PyValue>
  | HostTensor
  | PyRecord
  | PyGlobal
  | NumpyDType;

/** dict / OrderedDict. */
export type PyDict = Map<PyValue, PyValue>;

/** argparse.Namespace (and slice): attribute name -> value. */
export interface PyRecord {
  [attribute: string]: PyValue;
}

/** Storage element types: a StoredDType, or 'untyped' (torch.UntypedStorage, bytes). */
export type StorageDType = StoredDType | 'untyped';

/**
 * An allowlisted global used as a plain value (e.g. `torch.FloatStorage` inside a
 * persistent id, or `torch.float16` passed to `_rebuild_tensor_v3`).
 */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    /** set for storage classes (torch.FloatStorage -> 'float32') */
    readonly storageDType?: StorageDType,
    /** set for torch dtypes (torch.float16 -> 'float16') */
    readonly torchDType?: StoredDType,
  ) {}

  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** numpy.dtype as pickled inside numpy scalars: descr like 'f8', byte order '<' '>' '|' '='. */
export class NumpyDType {
  constructor(
    public descr: string,
    public byteorder = '=',
  ) {}
}

/** What `_rebuild_tensor_v2` (and friends) ask the caller to build. */
export interface TensorRebuild {
  /** whatever `persistentLoad` returned for the storage */
  storage: PyValue;
  /** in elements */
  storageOffset: number;
  size: number[];
  stride: number[];
  /** element type given by the call itself (`_rebuild_tensor_v3`), else undefined */
  dtype?: StoredDType;
}

export interface UnpickleOptions {
  /** the file name used in error messages */
  label: string;
  /**
   * Called for BINPERSID / PERSID with the persistent id; for torch.save this is
   * the tuple ['storage', storageClass: PyGlobal, key: string, location: string, numel: number].
   */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Called by the allowlisted tensor rebuild functions. */
  rebuildTensor?: (req: TensorRebuild) => HostTensor;
}

/** Attributes set by BUILD on dicts (e.g. a state dict's `_metadata`). */
export const pyAttributes = new WeakMap<object, Map<string, PyValue>>();

/** True for a HostTensor (as opposed to the other object-like PyValues). */
export function isHostTensor(v: unknown): v is HostTensor {
  if (typeof v !== 'object' || v === null || v instanceof Map || Array.isArray(v)) return false;
  const t = v as Partial<HostTensor>;
  return typeof t.dtype === 'string' && Array.isArray(t.shape) && ArrayBuffer.isView(t.data);
}

/** True for a dict / OrderedDict. */
export function isPyDict(v: unknown): v is PyDict {
  return v instanceof Map;
}

/** True for a plain attribute record (argparse.Namespace). */
export function isPyRecord(v: unknown): v is PyRecord {
  return (
    typeof v === 'object' &&
    v !== null &&
    Object.getPrototypeOf(v) === Object.prototype &&
    !isHostTensor(v)
  );
}

// ---------------------------------------------------------------------------
// allowlist

type Callable = (args: PyValue[], u: Unpickler) => PyValue;

interface GlobalSpec {
  /** `cls(*args)` / `fn(*args)` (REDUCE, INST, OBJ) */
  call?: Callable;
  /** `cls.__new__(cls, *args)` (NEWOBJ, copyreg._reconstructor) */
  newobj?: Callable;
  storageDType?: StorageDType;
  torchDType?: StoredDType;
}

const STORAGE_TYPES: Record<string, StoredDType> = {
  DoubleStorage: 'float64',
  FloatStorage: 'float32',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

const UNSUPPORTED_STORAGE_TYPES = new Set([
  'ComplexFloatStorage', 'ComplexDoubleStorage', 'QInt8Storage', 'QUInt8Storage',
  'QInt32Storage', 'QUInt4x2Storage', 'QUInt2x4Storage',
]);

const TORCH_DTYPES: Record<string, StoredDType> = {
  float32: 'float32', float: 'float32',
  float16: 'float16', half: 'float16',
  bfloat16: 'bfloat16',
  float64: 'float64', double: 'float64',
  int64: 'int64', long: 'int64',
  int32: 'int32', int: 'int32',
  int16: 'int16', short: 'int16',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

const UNSUPPORTED_TORCH_DTYPES = new Set([
  'complex32', 'complex64', 'complex128', 'cfloat', 'cdouble', 'chalf',
  'uint16', 'uint32', 'uint64', 'float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz',
  'float8_e5m2fnuz', 'float8_e8m0fnu', 'qint8', 'quint8', 'qint32', 'quint4x2', 'quint2x4',
]);

function toInt(v: PyValue, what: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) {
    return Number(v);
  }
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new CorruptPickle(`${what} is not an integer`);
}

function toIntList(v: PyValue, what: string): number[] {
  if (!Array.isArray(v)) throw new CorruptPickle(`${what} is not a tuple`);
  return v.map((x) => toInt(x, what));
}

function rebuildTensorCall(args: PyValue[], u: Unpickler, dtype?: StoredDType): HostTensor {
  if (args.length < 4) throw new CorruptPickle('tensor rebuild called with too few arguments');
  if (!u.opts.rebuildTensor) throw new CorruptPickle('tensors are not expected in this pickle');
  return u.opts.rebuildTensor({
    storage: args[0],
    storageOffset: toInt(args[1], 'storage offset'),
    size: toIntList(args[2], 'tensor size'),
    stride: toIntList(args[3], 'tensor stride'),
    dtype,
  });
}

function expectTensor(v: PyValue): HostTensor {
  if (!isHostTensor(v)) throw new CorruptPickle('parameter data is not a tensor');
  return v;
}

/** Builds a Map from (key, value) pairs (OrderedDict(items) / dict(items)). */
function dictFromArgs(args: PyValue[]): PyDict {
  const m: PyDict = new Map();
  const items = args[0];
  if (items === undefined || items === null) return m;
  if (items instanceof Map) {
    for (const [k, v] of items) m.set(k, v);
    return m;
  }
  if (!Array.isArray(items)) throw new CorruptPickle('dict items are not a list');
  for (const pair of items) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new CorruptPickle('dict item is not a pair');
    m.set(pair[0], pair[1]);
  }
  return m;
}

function newDictLike(args: PyValue[], u: Unpickler): PyDict {
  const m = dictFromArgs(args);
  u.builders.set(m, (state) => setDictAttributes(m, state));
  return m;
}

function setDictAttributes(m: PyDict, state: PyValue): void {
  // BUILD on a dict subclass: state is the instance __dict__ (or (dict, slots))
  const d = Array.isArray(state) ? state[0] : state;
  if (d === null || d === undefined) return;
  if (!(d instanceof Map)) throw new CorruptPickle('BUILD state of a dict is not a dict');
  let attrs = pyAttributes.get(m);
  if (!attrs) pyAttributes.set(m, (attrs = new Map()));
  for (const [k, v] of d) attrs.set(String(k), v);
}

function newNamespace(_args: PyValue[], u: Unpickler): PyRecord {
  const rec: PyRecord = {};
  u.builders.set(rec, (state) => {
    const parts = Array.isArray(state) ? state : [state];
    for (const part of parts) {
      if (part === null) continue;
      if (!(part instanceof Map)) throw new CorruptPickle('Namespace state is not a dict');
      for (const [k, v] of part) {
        if (typeof k !== 'string') throw new CorruptPickle('Namespace attribute name is not a string');
        // defineProperty so that a '__proto__' attribute cannot touch the prototype
        Object.defineProperty(rec, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
    }
  });
  return rec;
}

function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) throw new CorruptPickle('latin-1 string holds a character above 255');
    out[i] = c;
  }
  return out;
}

function codecsEncode(args: PyValue[]): Uint8Array {
  const [s, enc] = args;
  if (typeof s !== 'string') throw new CorruptPickle('_codecs.encode argument is not a string');
  const e = typeof enc === 'string' ? enc.toLowerCase().replace(/[-_]/g, '') : 'utf8';
  if (e === 'latin1' || e === 'iso88591') return latin1Bytes(s);
  if (e === 'utf8') return new TextEncoder().encode(s);
  if (e === 'ascii') return latin1Bytes(s);
  throw new CorruptPickle(`_codecs.encode with unsupported encoding ${String(enc)}`);
}

function bytesArg(v: PyValue, enc?: PyValue): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return codecsEncode([v, enc ?? 'latin1']);
  throw new CorruptPickle('expected bytes');
}

/** numpy.core.multiarray.scalar(dtype, bytes) -> number / bigint / boolean. */
function numpyScalar(args: PyValue[]): PyValue {
  const [dt, raw] = args;
  if (!(dt instanceof NumpyDType)) throw new CorruptPickle('numpy scalar without a dtype');
  const bytes = bytesArg(raw ?? null);
  const m = /^([<>|=]?)([fiub])(\d+)$/.exec(dt.descr);
  if (!m) throw new UserError(`numpy scalar of dtype '${dt.descr}' is not supported in a checkpoint`);
  const kind = m[2];
  const size = Number(m[3]);
  if (bytes.length !== size) throw new CorruptPickle('numpy scalar has the wrong number of bytes');
  const order = m[1] || dt.byteorder;
  const little = order !== '>';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const key = `${kind}${size}`;
  switch (key) {
    case 'f2': return halfToNumber(view.getUint16(0, little));
    case 'f4': return view.getFloat32(0, little);
    case 'f8': return view.getFloat64(0, little);
    case 'i1': return view.getInt8(0);
    case 'i2': return view.getInt16(0, little);
    case 'i4': return view.getInt32(0, little);
    case 'i8': return narrowBigInt(view.getBigInt64(0, little));
    case 'u1': return view.getUint8(0);
    case 'u2': return view.getUint16(0, little);
    case 'u4': return view.getUint32(0, little);
    case 'u8': return narrowBigInt(view.getBigUint64(0, little));
    case 'b1': return view.getUint8(0) !== 0;
    default:
      throw new UserError(`numpy scalar of dtype '${dt.descr}' is not supported in a checkpoint`);
  }
}

function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function narrowBigInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function numpyDType(args: PyValue[], u: Unpickler): NumpyDType {
  const descr = args[0];
  if (typeof descr !== 'string') throw new CorruptPickle('numpy.dtype without a type string');
  const dt = new NumpyDType(descr);
  u.builders.set(dt, (state) => {
    // state = (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
    if (Array.isArray(state) && typeof state[1] === 'string') dt.byteorder = state[1];
  });
  return dt;
}

/** The allowlist: qualified name -> behaviour. */
const ALLOWLIST = new Map<string, GlobalSpec>();

function allow(names: string | string[], spec: GlobalSpec): void {
  for (const n of Array.isArray(names) ? names : [names]) ALLOWLIST.set(n, spec);
}

allow('collections.OrderedDict', { call: newDictLike, newobj: newDictLike });
allow('builtins.dict', { call: newDictLike, newobj: newDictLike });
allow('argparse.Namespace', { newobj: newNamespace, call: (args, u) => newNamespace(args, u) });
allow(['torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_tensor'], {
  call: (args, u) => rebuildTensorCall(args, u),
});
allow('torch._utils._rebuild_tensor_v3', {
  call: (args, u) => {
    const dt = args[6];
    if (!(dt instanceof PyGlobal) || !dt.torchDType) throw new CorruptPickle('_rebuild_tensor_v3 without a dtype');
    return rebuildTensorCall(args, u, dt.torchDType);
  },
});
allow(['torch._utils._rebuild_parameter', 'torch._utils._rebuild_parameter_with_state'], {
  call: (args) => expectTensor(args[0] ?? null),
});
allow('torch._tensor._rebuild_from_type_v2', {
  // (func, new_type, args, state): rebuild with func(*args); the subclass type and
  // its python state are irrelevant for a host tensor
  call: (args, u) => {
    const [fn, , fnArgs] = args;
    if (!(fn instanceof PyGlobal) || !Array.isArray(fnArgs)) throw new CorruptPickle('bad _rebuild_from_type_v2 call');
    return u.callGlobal(fn, fnArgs);
  },
});
allow(['torch.Tensor', 'torch.nn.parameter.Parameter', 'torch.nn.Parameter'], {});
allow('torch.Size', { call: (args) => (Array.isArray(args[0]) ? [...args[0]] : []) });
allow('torch.device', {
  call: (args) => {
    const [type, index] = args;
    if (typeof type !== 'string') throw new CorruptPickle('torch.device without a type');
    return index === undefined || index === null ? type : `${type}:${String(index)}`;
  },
});
for (const [name, dt] of Object.entries(STORAGE_TYPES)) {
  allow([`torch.${name}`, `torch.cuda.${name}`], { storageDType: dt });
}
allow(['torch.UntypedStorage', 'torch.storage.UntypedStorage', 'torch.storage._UntypedStorage'], {
  storageDType: 'untyped',
});
for (const [name, dt] of Object.entries(TORCH_DTYPES)) allow(`torch.${name}`, { torchDType: dt });
allow(['_codecs.encode'], { call: (args) => codecsEncode(args) });
allow(['builtins.set', 'builtins.frozenset'], {
  call: (args) => new Set(Array.isArray(args[0]) ? args[0] : args[0] instanceof Set ? [...args[0]] : []),
});
allow('builtins.slice', {
  call: (args) => ({ start: args[0] ?? null, stop: args[1] ?? null, step: args[2] ?? null }),
});
allow('builtins.bytearray', {
  call: (args) => (args.length === 0 ? new Uint8Array(0) : new Uint8Array(bytesArg(args[0] ?? null, args[1]))),
});
allow('builtins.bytes', {
  call: (args) => (args.length === 0 ? new Uint8Array(0) : new Uint8Array(bytesArg(args[0] ?? null, args[1]))),
});
allow('builtins.object', {});
allow('copyreg._reconstructor', {
  // copyreg._reconstructor(cls, object, None) == cls.__new__(cls)
  call: (args, u) => {
    const [cls, base, state] = args;
    if (!(cls instanceof PyGlobal) || !(base instanceof PyGlobal) || base.qualifiedName !== 'builtins.object' || state !== null) {
      throw new CorruptPickle('unsupported copyreg._reconstructor call');
    }
    return u.newObject(cls, []);
  },
});
allow(['numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar'], { call: (args) => numpyScalar(args) });
allow('numpy.dtype', { call: numpyDType, newobj: numpyDType });

/** Python 2 / renamed modules. */
const MODULE_ALIASES: Record<string, string> = {
  __builtin__: 'builtins',
  copy_reg: 'copyreg',
};

// ---------------------------------------------------------------------------
// the machine

/** Internal: structural problems; turned into one UserError naming the file. */
class CorruptPickle extends Error {}

const utf8 = new TextDecoder('utf-8');
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const latin1 = new TextDecoder('latin1');

class Unpickler {
  private pos = 0;
  private stack: PyValue[] = [];
  private marks: number[] = [];
  private memo = new Map<number, PyValue>();
  private readonly view: DataView;
  /** per-object BUILD handlers registered by the allowlisted constructors */
  readonly builders = new WeakMap<object, (state: PyValue) => void>();

  constructor(
    private readonly buf: Uint8Array,
    readonly opts: UnpickleOptions,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number): number {
    const p = this.pos;
    if (n < 0 || p + n > this.buf.length) throw new CorruptPickle('pickle data ends early');
    this.pos = p + n;
    return p;
  }

  private u8(): number {
    return this.buf[this.need(1)];
  }
  private u16(): number {
    return this.view.getUint16(this.need(2), true);
  }
  private i32(): number {
    return this.view.getInt32(this.need(4), true);
  }
  private u32(): number {
    return this.view.getUint32(this.need(4), true);
  }
  private u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptPickle('length too large');
    return Number(v);
  }
  private bytes(n: number): Uint8Array {
    const p = this.need(n);
    return this.buf.subarray(p, p + n);
  }
  private line(): string {
    const start = this.pos;
    const nl = this.buf.indexOf(0x0a, start);
    if (nl < 0) throw new CorruptPickle('pickle data ends early');
    this.pos = nl + 1;
    return latin1.decode(this.buf.subarray(start, nl));
  }

  /** A text INT / LONG line: at most Python's default 4300 digits (BigInt parsing is superlinear). */
  private intLine(): string {
    const s = this.line();
    if (s.length > CHECKPOINT_LIMITS.maxIntDigits + 2) throw this.tooBig(`holds an integer of ${s.length} digits (INT/LONG)`);
    return s;
  }

  private pop(): PyValue {
    if (this.stack.length === 0 || this.stack.length <= (this.marks[this.marks.length - 1] ?? -1)) {
      throw new CorruptPickle('stack underflow');
    }
    return this.stack.pop() as PyValue;
  }
  private top(): PyValue {
    if (this.stack.length === 0) throw new CorruptPickle('stack underflow');
    return this.stack[this.stack.length - 1];
  }
  private popMark(): PyValue[] {
    const m = this.marks.pop();
    if (m === undefined) throw new CorruptPickle('MARK missing');
    return this.stack.splice(m);
  }

  /** Resolves GLOBAL module.name against the allowlist. */
  private findGlobal(module: string, name: string): PyGlobal {
    const mod = MODULE_ALIASES[module] ?? module;
    const q = `${mod}.${name}`;
    const spec = ALLOWLIST.get(q);
    if (!spec) {
      if ((mod === 'torch' || mod === 'torch.cuda') && UNSUPPORTED_STORAGE_TYPES.has(name)) {
        throw new UserError(`cannot load '${this.opts.label}': it holds ${q} tensors, a dtype this loader does not support`);
      }
      if (mod === 'torch' && UNSUPPORTED_TORCH_DTYPES.has(name)) {
        throw new UserError(`cannot load '${this.opts.label}': it holds torch.${name} tensors, a dtype this loader does not support`);
      }
      throw new UserError(
        `refusing to load '${this.opts.label}': pickle global ${q} is not on the allowlist (a checkpoint never needs it)`,
      );
    }
    return new PyGlobal(mod, name, spec.storageDType, spec.torchDType);
  }

  private spec(g: PyGlobal): GlobalSpec {
    return ALLOWLIST.get(g.qualifiedName) ?? {};
  }

  callGlobal(fn: PyValue, args: PyValue[]): PyValue {
    if (!(fn instanceof PyGlobal)) throw new CorruptPickle('REDUCE on something that is not a global');
    const call = this.spec(fn).call;
    if (!call) throw new CorruptPickle(`${fn.qualifiedName} cannot be called`);
    return call(args, this);
  }

  newObject(cls: PyValue, args: PyValue[]): PyValue {
    if (!(cls instanceof PyGlobal)) throw new CorruptPickle('NEWOBJ on something that is not a class');
    const nw = this.spec(cls).newobj;
    if (!nw) throw new CorruptPickle(`${cls.qualifiedName} cannot be instantiated`);
    return nw(args, this);
  }

  private build(obj: PyValue, state: PyValue): void {
    const b = typeof obj === 'object' && obj !== null ? this.builders.get(obj) : undefined;
    if (b) return b(state);
    if (isHostTensor(obj)) return; // python-level tensor state (requires_grad etc.): irrelevant
    throw new CorruptPickle('BUILD on an object that takes no state');
  }

  private setItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof Map)) throw new CorruptPickle('SETITEM on something that is not a dict');
    if (items.length % 2) throw new CorruptPickle('odd number of dict items');
    for (let i = 0; i < items.length; i += 2) target.set(items[i], items[i + 1]);
  }

  private appendItems(target: PyValue, items: PyValue[]): void {
    if (Array.isArray(target)) {
      for (const it of items) target.push(it);
    } else if (target instanceof Set) {
      for (const it of items) target.add(it);
    } else {
      throw new CorruptPickle('APPEND on something that is not a list');
    }
  }

  private persistent(pid: PyValue): PyValue {
    if (!this.opts.persistentLoad) throw new CorruptPickle('persistent id in a pickle without external data');
    return this.opts.persistentLoad(pid);
  }

  private memoGet(i: number): PyValue {
    if (!this.memo.has(i)) throw new CorruptPickle(`memo entry ${i} missing`);
    return this.memo.get(i) as PyValue;
  }

  /** Two's-complement little-endian integer (LONG1 / LONG4), in time linear in its length. */
  private long(bytes: Uint8Array): number | bigint {
    const n = bytes.length;
    if (n === 0) return 0;
    if (n <= 6) {
      let v = 0;
      for (let i = n - 1; i >= 0; i--) v = v * 256 + bytes[i];
      return bytes[n - 1] & 0x80 ? v - 2 ** (8 * n) : v;
    }
    let hex = '';
    for (let i = n - 1; i >= 0; i--) hex += HEX[bytes[i]];
    let v = BigInt('0x' + hex);
    if (bytes[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return narrowBigInt(v);
  }

  private tooBig(what: string): UserError {
    return new UserError(`refusing to load '${this.opts.label}': its pickle ${what} at byte ${this.pos}, which no checkpoint needs`);
  }

  run(): PyValue {
    const st = this.stack;
    const maxOps = CHECKPOINT_LIMITS.maxPickleOps;
    for (let ops = 1; ; ops++) {
      if (ops > maxOps) throw this.tooBig(`runs more than ${maxOps} opcodes`);
      const op = this.u8();
      switch (op) {
        case 0x80: { // PROTO
          const p = this.u8();
          if (p > 5) throw new CorruptPickle(`unsupported pickle protocol ${p}`);
          break;
        }
        case 0x95: // FRAME (length only; data follows inline)
          this.u64();
          break;
        case 0x2e: // STOP
          if (st.length !== 1 || this.marks.length) throw new CorruptPickle('STOP with a malformed stack');
          return st[0];
        case 0x28: // MARK
          this.marks.push(st.length);
          break;
        case 0x30: // POP
          if (this.marks.length && st.length === this.marks[this.marks.length - 1]) this.popMark();
          else this.pop();
          break;
        case 0x31: // POP_MARK
          this.popMark();
          break;
        case 0x32: // DUP
          st.push(this.top());
          break;

        case 0x4e: st.push(null); break; // NONE
        case 0x88: st.push(true); break; // NEWTRUE
        case 0x89: st.push(false); break; // NEWFALSE

        case 0x4a: st.push(this.i32()); break; // BININT
        case 0x4b: st.push(this.u8()); break; // BININT1
        case 0x4d: st.push(this.u16()); break; // BININT2
        case 0x8a: st.push(this.long(this.bytes(this.u8()))); break; // LONG1
        case 0x8b: { // LONG4
          const n = this.i32();
          if (n < 0) throw new CorruptPickle('negative LONG4 length');
          if (n > CHECKPOINT_LIMITS.maxLongBytes) throw this.tooBig(`holds an integer of ${n} bytes (LONG4)`);
          st.push(this.long(this.bytes(n)));
          break;
        }
        case 0x49: { // INT (text)
          const s = this.intLine();
          if (s === '01') st.push(true);
          else if (s === '00') st.push(false);
          else st.push(parseIntText(s));
          break;
        }
        case 0x4c: // LONG (text)
          st.push(parseIntText(this.intLine().replace(/L$/, '')));
          break;
        case 0x47: st.push(this.view.getFloat64(this.need(8), false)); break; // BINFLOAT (big-endian)
        case 0x46: { // FLOAT (text)
          const v = Number(this.line());
          if (Number.isNaN(v)) throw new CorruptPickle('bad FLOAT');
          st.push(v);
          break;
        }

        case 0x58: st.push(utf8.decode(this.bytes(this.u32()))); break; // BINUNICODE
        case 0x8c: st.push(utf8.decode(this.bytes(this.u8()))); break; // SHORT_BINUNICODE
        case 0x8d: st.push(utf8.decode(this.bytes(this.u64()))); break; // BINUNICODE8
        case 0x56: st.push(rawUnicodeEscape(this.line())); break; // UNICODE (text)
        case 0x54: { // BINSTRING (python 2 str -> latin-1 text)
          const n = this.i32();
          if (n < 0) throw new CorruptPickle('negative BINSTRING length');
          st.push(latin1.decode(this.bytes(n)));
          break;
        }
        case 0x55: st.push(latin1.decode(this.bytes(this.u8()))); break; // SHORT_BINSTRING
        case 0x53: st.push(pyStringLiteral(this.line())); break; // STRING (text repr)
        case 0x42: st.push(new Uint8Array(this.bytes(this.u32()))); break; // BINBYTES
        case 0x43: st.push(new Uint8Array(this.bytes(this.u8()))); break; // SHORT_BINBYTES
        case 0x8e: st.push(new Uint8Array(this.bytes(this.u64()))); break; // BINBYTES8
        case 0x96: st.push(new Uint8Array(this.bytes(this.u64()))); break; // BYTEARRAY8

        case 0x5d: st.push([]); break; // EMPTY_LIST
        case 0x6c: st.push(this.popMark()); break; // LIST
        case 0x61: { // APPEND
          const v = this.pop();
          this.appendItems(this.top(), [v]);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          this.appendItems(this.top(), items);
          break;
        }
        case 0x29: st.push([]); break; // EMPTY_TUPLE
        case 0x74: st.push(this.popMark()); break; // TUPLE
        case 0x85: st.push([this.pop()]); break; // TUPLE1
        case 0x86: { // TUPLE2
          const b = this.pop();
          const a = this.pop();
          st.push([a, b]);
          break;
        }
        case 0x87: { // TUPLE3
          const c = this.pop();
          const b = this.pop();
          const a = this.pop();
          st.push([a, b, c]);
          break;
        }
        case 0x7d: st.push(new Map()); break; // EMPTY_DICT
        case 0x64: { // DICT
          const items = this.popMark();
          const m: PyDict = new Map();
          this.setItems(m, items);
          st.push(m);
          break;
        }
        case 0x73: { // SETITEM
          const v = this.pop();
          const k = this.pop();
          this.setItems(this.top(), [k, v]);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          this.setItems(this.top(), items);
          break;
        }
        case 0x8f: st.push(new Set()); break; // EMPTY_SET
        case 0x90: { // ADDITEMS
          const items = this.popMark();
          const s = this.top();
          if (!(s instanceof Set)) throw new CorruptPickle('ADDITEMS on something that is not a set');
          for (const it of items) s.add(it);
          break;
        }
        case 0x91: st.push(new Set(this.popMark())); break; // FROZENSET

        case 0x63: { // GLOBAL
          const module = this.line();
          const name = this.line();
          st.push(this.findGlobal(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') throw new CorruptPickle('STACK_GLOBAL needs two strings');
          st.push(this.findGlobal(module, name));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.pop();
          const fn = this.pop();
          if (!Array.isArray(args)) throw new CorruptPickle('REDUCE arguments are not a tuple');
          st.push(this.callGlobal(fn, args));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.pop();
          const cls = this.pop();
          if (!Array.isArray(args)) throw new CorruptPickle('NEWOBJ arguments are not a tuple');
          st.push(this.newObject(cls, args));
          break;
        }
        case 0x92: { // NEWOBJ_EX
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!Array.isArray(args)) throw new CorruptPickle('NEWOBJ_EX arguments are not a tuple');
          if (kwargs instanceof Map && kwargs.size) throw new CorruptPickle('NEWOBJ_EX with keyword arguments');
          st.push(this.newObject(cls, args));
          break;
        }
        case 0x69: { // INST
          const cls = this.findGlobal(this.line(), this.line());
          st.push(this.callGlobal(cls, this.popMark()));
          break;
        }
        case 0x6f: { // OBJ
          const items = this.popMark();
          if (!items.length) throw new CorruptPickle('OBJ without a class');
          st.push(this.callGlobal(items[0], items.slice(1)));
          break;
        }
        case 0x62: { // BUILD
          const state = this.pop();
          this.build(this.top(), state);
          break;
        }

        case 0x70: this.memo.set(parseIntStrict(this.intLine()), this.top()); break; // PUT
        case 0x71: this.memo.set(this.u8(), this.top()); break; // BINPUT
        case 0x72: this.memo.set(this.u32(), this.top()); break; // LONG_BINPUT
        case 0x94: this.memo.set(this.memo.size, this.top()); break; // MEMOIZE
        case 0x67: st.push(this.memoGet(parseIntStrict(this.intLine()))); break; // GET
        case 0x68: st.push(this.memoGet(this.u8())); break; // BINGET
        case 0x6a: st.push(this.memoGet(this.u32())); break; // LONG_BINGET

        case 0x51: st.push(this.persistent(this.pop())); break; // BINPERSID
        case 0x50: st.push(this.persistent(this.line())); break; // PERSID

        case 0x82: case 0x83: case 0x84: // EXT1/2/4
          throw new UserError(`refusing to load '${this.opts.label}': its pickle uses the copyreg extension registry (EXT opcodes), which a checkpoint never needs`);
        case 0x97: case 0x98: // NEXT_BUFFER, READONLY_BUFFER
          throw new UserError(`cannot load '${this.opts.label}': its pickle uses out-of-band buffers, which a checkpoint never needs`);
        default:
          throw new CorruptPickle(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
      }
    }
  }
}

function parseIntText(s: string): number | bigint {
  if (!/^[+-]?\d+$/.test(s.trim())) throw new CorruptPickle('bad integer');
  return narrowBigInt(BigInt(s.trim()));
}

function parseIntStrict(s: string): number {
  const v = parseIntText(s);
  if (typeof v !== 'number' || v < 0) throw new CorruptPickle('bad memo index');
  return v;
}

/** Decodes the text form of raw-unicode-escape (\uXXXX, \UXXXXXXXX). */
function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, a: string | undefined, b: string | undefined) =>
    String.fromCodePoint(parseInt((a ?? b) as string, 16)),
  );
}

/** Decodes a Python 2 str repr ('...' or "...") as used by the STRING opcode. */
function pyStringLiteral(s: string): string {
  const q = s[0];
  if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) throw new CorruptPickle('bad STRING');
  const body = s.slice(1, -1);
  const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v', '0': '\0' };
  return body.replace(/\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)/g, (_m, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    if (/^[0-7]+$/.test(e)) return String.fromCharCode(parseInt(e, 8) & 0xff);
    return simple[e] ?? `\\${e}`;
  });
}

/**
 * Unpickles `bytes` without executing code. Structural problems become one
 * UserError naming `opts.label`; a forbidden global is refused with its name.
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): PyValue {
  const u = new Unpickler(bytes, opts);
  try {
    return u.run();
  } catch (e) {
    if (e instanceof CorruptPickle) {
      throw new UserError(`cannot load '${opts.label}': its pickle data is corrupt (${e.message} at byte ${u.offset})`);
    }
    throw e;
  }
}
