/**
 * Worker-thread side of CommPool (pool.ts): one ProcessGroup per thread, all-reducing slices of shared buffers that
 * the main thread hands over. Messages in: { id, buffer: SharedArrayBuffer, offset, length, op, dtype, fd } | { close: true }
 * (fd >= 0: the slice's bytes are in that hand-off file at `offset`, src/distributed/handoff.ts: read them from there
 * first, write the result back there after);
 * out: { ready: true } | { initError } | { id } | { id, error: { message, rank, reason } }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ProcessGroup, isDistError, type ProcessGroupOptions } from './group.js';
import { errMessage } from '../errors.js';
import { preadFull, pwriteFull } from './shm.js';

interface Job {
  id: number;
  buffer: SharedArrayBuffer;
  offset: number;
  length: number;
  op: 'sum' | 'avg';
  dtype?: 'f32' | 'bf16x2';
  fd?: number;
}

const port = parentPort!;
let group: ProcessGroup;
try {
  group = await ProcessGroup.init(workerData as ProcessGroupOptions);
  port.postMessage({ ready: true });
} catch (e) {
  port.postMessage({ initError: errMessage(e) });
  process.exit(0);
}

port.on('message', (m: Job | { close: true }) => {
  if ('close' in m) {
    void group.close().then(() => process.exit(0));
    return;
  }
  void run(m).then(
    () => port.postMessage({ id: m.id }),
    (e: unknown) =>
      port.postMessage({ id: m.id, error: isDistError(e) ? { message: e.message, rank: e.rank, reason: e.reason } : { message: String((e as Error)?.message ?? e), rank: null, reason: 'protocol' } }),
  );
});

/** One job; its collective is called synchronously (before the next message), so each channel keeps the order. */
function run(m: Job): Promise<void> {
  const view = new Float32Array(m.buffer, m.offset, m.length);
  const fd = m.fd ?? -1;
  const bytes = new Uint8Array(m.buffer, m.offset, m.length * 4);
  try {
    if (fd >= 0) preadFull(fd, bytes, m.offset);
  } catch (e) {
    return Promise.reject(e);
  }
  return group.allreduce(view, { op: m.op, dtype: m.dtype }).then(() => {
    if (fd >= 0) pwriteFull(fd, bytes, m.offset);
  });
}
