/**
 * The ONNX messages the exporter writes, encoded in protobuf wire format by hand.
 *
 * Why not a protobuf library: the exporter writes nine message types and reads none, and the npm `onnx-proto`
 * package pins protobufjs 6 (unmaintained, with its own postinstall script). The field numbers and types below
 * are those of onnx/onnx.proto (ONNX IR version 10; every field we write has kept its number since IR 3). Fields are
 * written in field-number order and repeated scalars packed, as protobufjs does, so the bytes equal what
 * onnx-proto 8.0.1 produced for the same model (checked for the test/femto graphs in every export variant before
 * the switch). Tensor data (raw_data) is referenced, not copied, until the one final concatenation; raw_data made on the
 * fly (the exporter's transposed Linear weights) is a RawWriter that fills its bytes of that final buffer itself, so
 * no other copy of it is ever made.
 *
 * `readProtoFields` is the matching minimal reader (field number -> raw values) that the tests use to inspect an
 * exported graph.
 */

/** onnx.TensorProto.DataType values we use. */
export const DataType = { FLOAT: 1, INT64: 7 } as const;
/** onnx.AttributeProto.AttributeType values we use. */
export const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

export interface AttributeProto {
  name: string;
  type: (typeof AttributeType)[keyof typeof AttributeType];
  f?: number;
  i?: number;
  s?: Uint8Array;
  ints?: number[];
}
export interface NodeProto {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  attribute?: AttributeProto[];
}
export interface TensorProto {
  dims: number[];
  dataType: (typeof DataType)[keyof typeof DataType];
  name: string;
  rawData: Uint8Array | RawWriter;
}
/**
 * raw_data the encoder asks for when it writes the model's bytes: `write` fills dst[offset, offset + byteLength).
 * `dst.byteOffset + offset` has any alignment (it follows the protobuf framing before it).
 */
export interface RawWriter {
  readonly byteLength: number;
  write(dst: Uint8Array, offset: number): void;
}
/** TensorShapeProto.Dimension: a fixed size or a symbolic name. */
export type Dimension = { dimValue: number } | { dimParam: string };
export interface ValueInfoProto {
  name: string;
  /** TypeProto.tensor_type: element type and shape. */
  elemType: (typeof DataType)[keyof typeof DataType];
  dims: Dimension[];
}
export interface GraphProto {
  node: NodeProto[];
  name: string;
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
}
export interface ModelProto {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  opsetImport: { domain: string; version: number }[];
  metadataProps: { key: string; value: string }[];
}

const VARINT = 0;
const LEN = 2;
const I32 = 5;
/** Byte arrays at least this long are referenced instead of copied into the small-write buffer. */
const BIG = 1024;
const utf8 = new TextEncoder();

/** Append-only protobuf writer; fork()/ldelim() bracket a length-delimited sub-message. */
class ProtoWriter {
  /** Finished pieces, in order; a fork() reserves one slot for the length it learns at ldelim(). */
  private readonly chunks: (Uint8Array | RawWriter)[] = [];
  private chunkBytes = 0;
  private readonly open: { slot: number; start: number }[] = [];
  /** Small writes (tags, varints, short strings) collect here until the next fork/ldelim/big write. */
  private buf = new Uint8Array(4096);
  private pos = 0;

  private get length(): number {
    return this.chunkBytes + this.pos;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  private push(c: Uint8Array | RawWriter): number {
    this.chunks.push(c);
    this.chunkBytes += c.byteLength;
    return this.chunks.length - 1;
  }

  private flush(): void {
    if (this.pos === 0) return;
    this.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }

  /** Unsigned varint; negative int64 values take ten bytes of two's complement, as protobuf requires. */
  varint(v: number | bigint): this {
    if (typeof v === 'number' && !Number.isInteger(v)) throw new RangeError(`protobuf varint: ${v} is not an integer`);
    this.room(10);
    if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      while (v > 127) {
        this.buf[this.pos++] = (v % 128) | 128;
        v = Math.floor(v / 128);
      }
      this.buf[this.pos++] = v;
      return this;
    }
    let x = BigInt.asUintN(64, BigInt(v));
    while (x > 127n) {
      this.buf[this.pos++] = Number(x & 127n) | 128;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
    return this;
  }

  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  float(field: number, v: number): this {
    this.tag(field, I32).room(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setFloat32(this.pos, v, true);
    this.pos += 4;
    return this;
  }

  bytes(field: number, b: Uint8Array | RawWriter): this {
    const n = b.byteLength;
    this.tag(field, LEN).varint(n);
    if (n >= BIG) {
      this.flush();
      this.push(b);
    } else {
      this.room(n);
      if (b instanceof Uint8Array) this.buf.set(b, this.pos);
      else b.write(this.buf, this.pos);
      this.pos += n;
    }
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, utf8.encode(s));
  }

  /** Packed repeated int64 (omitted when empty, as protobufjs does). */
  packedInt64(field: number, values: readonly number[]): this {
    if (!values.length) return this;
    this.tag(field, LEN).fork();
    for (const v of values) this.varint(v);
    return this.ldelim();
  }

  /** Start a length-delimited field whose content follows; close it with ldelim(). */
  fork(): this {
    this.flush();
    this.open.push({ slot: this.push(new Uint8Array(0)), start: this.length });
    return this;
  }

  ldelim(): this {
    this.flush();
    const o = this.open.pop();
    if (!o) throw new Error('protobuf writer: ldelim() without fork()');
    const len = new ProtoWriter().varint(this.length - o.start).finish();
    this.chunks[o.slot] = len;
    this.chunkBytes += len.length;
    return this;
  }

  /** A length-delimited sub-message written by `write`. */
  message(field: number, write: (w: ProtoWriter) => void): this {
    this.tag(field, LEN).fork();
    write(this);
    return this.ldelim();
  }

  finish(): Uint8Array {
    this.flush();
    if (this.open.length) throw new Error('protobuf writer: fork() without ldelim()');
    const out = new Uint8Array(this.chunkBytes);
    let o = 0;
    for (const c of this.chunks) {
      if (c instanceof Uint8Array) out.set(c, o);
      else c.write(out, o);
      o += c.byteLength;
    }
    return out;
  }
}

function writeAttribute(w: ProtoWriter, a: AttributeProto): void {
  w.string(1, a.name);
  if (a.f !== undefined) w.float(2, a.f);
  if (a.i !== undefined) w.tag(3, VARINT).varint(a.i);
  if (a.s !== undefined) w.bytes(4, a.s);
  if (a.ints !== undefined) w.packedInt64(8, a.ints);
  w.tag(20, VARINT).varint(a.type);
}

function writeNode(w: ProtoWriter, n: NodeProto): void {
  for (const s of n.input) w.string(1, s);
  for (const s of n.output) w.string(2, s);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attribute ?? []) w.message(5, (m) => writeAttribute(m, a));
}

function writeTensor(w: ProtoWriter, t: TensorProto): void {
  w.packedInt64(1, t.dims);
  w.tag(2, VARINT).varint(t.dataType);
  w.string(8, t.name);
  w.bytes(9, t.rawData);
}

function writeValueInfo(w: ProtoWriter, v: ValueInfoProto): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.tag(1, VARINT).varint(v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.dims) {
          shape.message(1, (dim) => {
            if ('dimValue' in d) dim.tag(1, VARINT).varint(d.dimValue);
            else dim.string(2, d.dimParam);
          });
        }
      });
    }),
  );
}

function writeGraph(w: ProtoWriter, g: GraphProto): void {
  for (const n of g.node) w.message(1, (m) => writeNode(m, n));
  w.string(2, g.name);
  for (const t of g.initializer) w.message(5, (m) => writeTensor(m, t));
  for (const v of g.input) w.message(11, (m) => writeValueInfo(m, v));
  for (const v of g.output) w.message(12, (m) => writeValueInfo(m, v));
}

/** Serialize a ModelProto (the bytes of a .onnx file). */
export function encodeModel(m: ModelProto): Uint8Array {
  const w = new ProtoWriter();
  w.tag(1, VARINT).varint(m.irVersion);
  w.string(2, m.producerName);
  w.string(3, m.producerVersion);
  w.message(7, (g) => writeGraph(g, m.graph));
  for (const o of m.opsetImport) {
    w.message(8, (s) => {
      s.string(1, o.domain);
      s.tag(2, VARINT).varint(o.version);
    });
  }
  for (const p of m.metadataProps) {
    w.message(14, (e) => {
      e.string(1, p.key);
      e.string(2, p.value);
    });
  }
  return w.finish();
}

/** One decoded field value: varint (bigint), fixed32/fixed64 (raw bytes) or length-delimited bytes. */
export type WireValue = bigint | Uint8Array;

/**
 * Read one protobuf message into field number -> values (in order). Sub-messages stay bytes; read them again.
 * Throws on malformed input (truncated varint or length, unknown wire type).
 */
export function readProtoFields(bytes: Uint8Array): Map<number, WireValue[]> {
  const out = new Map<number, WireValue[]>();
  let p = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (p >= bytes.length || shift > 63n) throw new Error('protobuf: truncated or overlong varint');
      const b = bytes[p++];
      v |= BigInt(b & 127) << shift;
      if (b < 128) return v;
    }
  };
  const take = (n: number): Uint8Array => {
    if (p + n > bytes.length) throw new Error('protobuf: field runs past the end of the message');
    const s = bytes.subarray(p, p + n);
    p += n;
    return s;
  };
  while (p < bytes.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    const value = wire === VARINT ? varint() : wire === LEN ? take(Number(varint())) : wire === I32 ? take(4) : wire === 1 ? take(8) : null;
    if (value === null) throw new Error(`protobuf: unsupported wire type ${wire}`);
    const list = out.get(field);
    if (list) list.push(value);
    else out.set(field, [value]);
  }
  return out;
}
