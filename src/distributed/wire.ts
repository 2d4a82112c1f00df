/**
 * Wire format of the process group's links (transport.ts):
 *
 * Framing. Every message is a 32-byte little-endian header followed by `length` payload bytes:
 *
 *   off size  field
 *    0   u8   type      FRAME.Data / Abort / Bye / Hello / Table
 *    1   u8   kind      OP_KIND of the collective the data belongs to (0 for control frames)
 *    2   u16  magic     0xD157, rejects stray connections
 *    4   u32  opSeq     sequence number of the collective on the sending rank (same on all ranks)
 *    8   u32  msgIndex  index of the message inside that collective's stream on this ring edge
 *   12   u32  length    payload bytes
 *   16   u32  aux       collective parameter (reduction op, broadcast root) - checked by the receiver
 *   20   u32  flags     FLAG_SHM: the payload is in the shared-memory mailbox of this edge, not on the socket
 *   24   f64  total     total byte size of the collective's buffer on the sender - checked by the receiver
 */

export const HEADER_BYTES = 32;
const MAGIC = 0xd157;
/** Largest payload of one frame (u32 length field; collectives split larger data into buckets). */
export const MAX_FRAME_PAYLOAD = 0x7fffffff;

export const FRAME = { Data: 1, Abort: 2, Bye: 3, Hello: 4, Table: 5, Ack: 6, ShmOk: 7 } as const;
/** Header flag: the payload of this data frame is in the edge's shared-memory mailbox (shm.ts), not on the socket. */
export const FLAG_SHM = 1;
export const OP_KIND = { AllReduce: 1, Broadcast: 2, AllGather: 3 } as const;
export const OP_KIND_NAME: Record<number, string> = { 1: 'allreduce', 2: 'broadcast', 3: 'allgather' };

export interface FrameHeader {
  type: number;
  kind: number;
  opSeq: number;
  msgIndex: number;
  length: number;
  aux: number;
  total: number;
  /** FLAG_* bits (0 when absent). */
  flags?: number;
}

export function encodeHeader(h: FrameHeader): Buffer {
  // allocUnsafeSlow: an own ArrayBuffer, so a pooled slab is not pinned by the pending write.
  const b = Buffer.allocUnsafeSlow(HEADER_BYTES);
  b.writeUInt8(h.type, 0);
  b.writeUInt8(h.kind, 1);
  b.writeUInt16LE(MAGIC, 2);
  b.writeUInt32LE(h.opSeq >>> 0, 4);
  b.writeUInt32LE(h.msgIndex >>> 0, 8);
  b.writeUInt32LE(h.length >>> 0, 12);
  b.writeUInt32LE(h.aux >>> 0, 16);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 20);
  b.writeDoubleLE(h.total, 24);
  return b;
}

/** The header at the start of `b`, or null when its magic number is not ours. */
export function decodeHeader(b: Uint8Array): FrameHeader | null {
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  if (dv.getUint16(2, true) !== MAGIC) return null;
  return {
    type: dv.getUint8(0),
    kind: dv.getUint8(1),
    opSeq: dv.getUint32(4, true),
    msgIndex: dv.getUint32(8, true),
    length: dv.getUint32(12, true),
    aux: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    total: dv.getFloat64(24, true),
  };
}

/** A peer sent something that is not a valid frame here (a stray connection, or a rank out of step). */
export class ProtocolError extends Error {}
