/**
 * Worker-thread side of CommPool (pool.ts): one ProcessGroup per thread, all-reducing slices of shared buffers that
 * the main thread hands over. Messages in: { id, buffer: SharedArrayBuffer, offset, length, op, dtype } | { close: true };
 * out: { ready: true } | { initError } | { id } | { id, error: { message, rank, reason } }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ProcessGroup, isDistError, type ProcessGroupOptions } from './group.js';
import { errMessage } from '../errors.js';

interface Job {
  id: number;
  buffer: SharedArrayBuffer;
  offset: number;
  length: number;
  op: 'sum' | 'avg';
  dtype?: 'f32' | 'bf16x2';
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
  group.allreduce(new Float32Array(m.buffer, m.offset, m.length), { op: m.op, dtype: m.dtype }).then(
    () => port.postMessage({ id: m.id }),
    (e: unknown) =>
      port.postMessage({ id: m.id, error: isDistError(e) ? { message: e.message, rank: e.rank, reason: e.reason } : { message: String((e as Error)?.message ?? e), rank: null, reason: 'protocol' } }),
  );
});
