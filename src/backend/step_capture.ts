/**
 * CapturedStep: record the Dawn calls that a piece of tfjs work makes once, then issue the same calls again without
 * tfjs, on the same buffers (CUDA graphs do this for PyTorch). The training loop (src/train/step_replay.ts),
 * DistributedDataParallel.replayGrads (src/train/ddp.ts) and scripts/bench_dist.ts's `replay` paths use it for a
 * training step's forward and backward passes. Marks (`live`) let work that must not be recorded (the exchange's
 * bucket readbacks) run at its place in every replay.
 *
 * Why: the main thread bounds a step whenever it has other work (the loader's hand-offs, the gradient exchange), and
 * ~88% of its issue time per step is JS (tfjs's engine and our kernels), not Dawn: a femto training step costs 24-26 ms
 * to issue through tfjs and 3.0-3.2 ms as a replay of its recorded calls on Dawn's null backend
 * (scripts/replay_estimate.ts), 23-33 against 6.4-7.9 ms on the H200, where the whole training loop went from 2,284 to
 * 2,468 img/s (docs/BENCHMARKS.md, GPU run 9).
 *
 * What a replay relies on (the caller's contract):
 *   - the recorded work reads only tensors that stay alive and keep their buffers: parameters updated in place (our
 *     AdamW), inputs that are the same tensors every time (or whose buffers the caller rewrites); tensors made from
 *     host values inside it are uploaded again by every replay with the same values (constants: right; a value that
 *     changes, such as a learning rate made into a tensor inside the step, would not change);
 *   - its results are tensors the caller keeps (each replay writes them again) and never disposes while replaying;
 *     read them on the host through a copy (tfjs answers a second data() of a tensor from its first read);
 *   - the buffers of its intermediates are taken out of tfjs's pool (pinned) until release(), so nothing tfjs makes
 *     between replays shares them;
 *   - uniform data (queue.writeBuffer) is replayed as recorded: work whose uniforms change from call to call (an
 *     optimizer's step count) is not captured;
 *   - host values that must change every step (drop-path and dropout masks) are made with `drawnTensor`: a replay
 *     draws them again at the same point, so the same Rng calls happen in the same order as in a live step.
 * Calls a replay cannot repeat (textures, queries, mapping: a readback inside the work) fail the capture. The hooks
 * stay on Dawn's prototypes once the first capture installed them (a null check per call).
 * The tests (bit for bit against the same steps issued through tfjs): test/webgpu.test.ts, three AdamW steps with the
 * last two replayed, and five fed a new batch each (soft targets, drop path, with and without direct uploads);
 * test/ddp_webgpu.test.ts, the data-parallel replay and the training loop's (src/train/step_replay.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { bindGroupBuffers, gpuWords } from './webgpu_hooks.js';

type Fn = (...a: unknown[]) => unknown;
type Op =
  | ['pass', GPUComputePassDescriptor | undefined]
  | ['pipe', GPUComputePipeline]
  | ['bind', number, GPUBindGroup, unknown]
  | ['dispatch', number, number | undefined, number | undefined]
  | ['end']
  | ['copy', GPUBuffer, number, GPUBuffer, number, number]
  | ['clear', GPUBuffer, number | undefined, number | undefined]
  | ['finish']
  | ['submit', number]
  | ['write', GPUBuffer, number, Uint8Array]
  | ['draw', GPUBuffer, () => Float32Array]
  | ['mark', () => void];

const orig = new Map<string, Fn>();
let recording: Op[] | null = null;
/** A call the replay cannot repeat, made while recording (the capture then fails). */
let unsupported: string | null = null;
let installed = false;

/** Calls a recording cannot contain: textures, queries, indirect dispatches, mapping (a readback inside the work). */
const UNSUPPORTED: [string, string[]][] = [
  ['GPUCommandEncoder', ['copyBufferToTexture', 'copyTextureToBuffer', 'copyTextureToTexture', 'resolveQuerySet', 'writeTimestamp', 'beginRenderPass']],
  ['GPUComputePassEncoder', ['dispatchWorkgroupsIndirect']],
  ['GPUQueue', ['writeTexture', 'copyExternalImageToTexture']],
  ['GPUBuffer', ['mapAsync']],
];

function install(): void {
  if (installed) return;
  const G = globalThis as unknown as Record<string, { prototype: Record<string, Fn> } | undefined>;
  const hook = (cls: string, name: string, rec: (a: unknown[]) => Op | null): void => {
    const proto = G[cls]?.prototype;
    if (!proto || typeof proto[name] !== 'function') throw new Error(`CapturedStep: ${cls}.${name} not found (not Dawn?)`);
    const f = proto[name];
    orig.set(`${cls}.${name}`, f);
    proto[name] = function (this: unknown, ...a: unknown[]) {
      if (recording) {
        const op = rec(a);
        if (op) recording.push(op);
      }
      return f.apply(this, a);
    };
  };
  for (const [cls, names] of UNSUPPORTED) {
    for (const n of names) {
      const proto = G[cls]?.prototype;
      if (!proto || typeof proto[n] !== 'function') continue;
      const f = proto[n];
      proto[n] = function (this: unknown, ...a: unknown[]) {
        if (recording) unsupported ??= `${cls}.${n}`;
        return f.apply(this, a);
      };
    }
  }
  hook('GPUCommandEncoder', 'beginComputePass', (a) => ['pass', a[0] as GPUComputePassDescriptor | undefined]);
  hook('GPUCommandEncoder', 'copyBufferToBuffer', (a) => ['copy', a[0] as GPUBuffer, a[1] as number, a[2] as GPUBuffer, a[3] as number, a[4] as number]);
  hook('GPUCommandEncoder', 'clearBuffer', (a) => ['clear', a[0] as GPUBuffer, a[1] as number | undefined, a[2] as number | undefined]);
  hook('GPUCommandEncoder', 'finish', () => ['finish']);
  hook('GPUComputePassEncoder', 'setPipeline', (a) => ['pipe', a[0] as GPUComputePipeline]);
  hook('GPUComputePassEncoder', 'setBindGroup', (a) => ['bind', a[0] as number, a[1] as GPUBindGroup, a[2]]);
  hook('GPUComputePassEncoder', 'dispatchWorkgroups', (a) => ['dispatch', a[0] as number, a[1] as number | undefined, a[2] as number | undefined]);
  hook('GPUComputePassEncoder', 'end', () => ['end']);
  hook('GPUQueue', 'submit', (a) => ['submit', (a[0] as unknown[]).length]);
  hook('GPUQueue', 'writeBuffer', (a) => {
    const d = a[2] as ArrayBufferView | ArrayBuffer;
    const off = (a[3] as number | undefined) ?? 0;
    const view = d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    const unit = d instanceof ArrayBuffer || d instanceof DataView ? 1 : (d as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    const size = a[4] === undefined ? view.byteLength - off * unit : (a[4] as number) * unit;
    return ['write', a[0] as GPUBuffer, a[1] as number, view.slice(off * unit, off * unit + size)];
  });
  installed = true;
}

/** Run `fn` without recording the Dawn calls it makes (work at its place in the capture that a replay does not repeat). */
function unrecorded<T>(fn: () => T): T {
  const rec = recording;
  recording = null;
  try {
    return fn();
  } finally {
    recording = rec;
  }
}

/** While capturing: makes drawnTensor's tensors (uploaded at once, the draw recorded). */
let drawMaker: ((draw: () => Float32Array, shape: number[]) => tf.Tensor) | null = null;

/**
 * A float32 tensor of host values drawn anew every step (a drop-path or dropout mask from a seeded Rng): outside a
 * capture `tf.tensor(draw(), shape)`; inside one, the same, and every replay calls `draw` again at this point and
 * writes what it returns into the tensor's buffer.
 */
export function drawnTensor(draw: () => Float32Array, shape: number[]): tf.Tensor {
  return drawMaker ? drawMaker(draw, shape) : tf.tensor(draw(), shape, 'float32');
}

interface FreeLists {
  freeBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
}

export interface CaptureBackend {
  device: GPUDevice;
  /** tfjs-backend-webgpu: each tensor's data; `resource` is its GPU buffer once uploaded. */
  tensorMap: { get(dataId: object): { resource?: unknown; values?: ArrayLike<number> | null; dtype?: string } | undefined };
  /** tfjs-backend-webgpu: a tensor made from host values (its data is uploaded when first used). */
  write(values: unknown, shape: number[], dtype: string): object;
  uploadToGPU(dataId: object): void;
  bufferManager: FreeLists;
  /** tfjs-backend-webgpu: submit what it has recorded (ends an open pass). */
  submitQueue(): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  commandEncoder: GPUCommandEncoder | null;
}

export class CapturedStep {
  /** Replays made in this process (tests check that a replay path really replayed). */
  static replays = 0;
  /** Buffers the recording uses that were free in tfjs's pool after it: taken out of the pool until release(). */
  private pinned: GPUBuffer[] = [];

  private constructor(
    private readonly backend: CaptureBackend,
    private readonly ops: readonly Op[],
    private readonly pool: FreeLists,
  ) {
    const used = new Set<GPUBuffer>();
    for (const op of ops) {
      if (op[0] === 'copy') {
        used.add(op[1]);
        used.add(op[3]);
      } else if (op[0] === 'clear' || op[0] === 'write' || op[0] === 'draw') used.add(op[1]);
      else if (op[0] === 'bind') {
        const bufs = bindGroupBuffers(op[2]);
        if (!bufs) throw new Error('CapturedStep: a bind group made before the WebGPU hooks; cannot tell its buffers');
        for (const b of bufs) used.add(b);
      }
    }
    for (const list of pool.freeBuffers.values()) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (!used.has(list[i])) continue;
        this.pinned.push(list[i]);
        list.splice(i, 1);
        pool.numFreeBuffers--;
      }
    }
  }

  /** Give the pinned buffers back to tfjs's pool (the step is not replayed again). */
  release(): void {
    for (const b of this.pinned) {
      const key = `${b.size}_${b.usage}`;
      let list = this.pool.freeBuffers.get(key);
      if (!list) this.pool.freeBuffers.set(key, (list = []));
      list.push(b);
      this.pool.numFreeBuffers++;
    }
    this.pinned = [];
  }

  get pinnedBuffers(): number {
    return this.pinned.length;
  }

  /**
   * Run `fn` now without recording what it does, and when capturing, leave a mark: a replay reaching that point submits
   * what it has issued so far, then calls `onReplay` (the data-parallel exchange's bucket readbacks: work that takes
   * the tensors of the step being replayed). Outside a capture this is just `fn()`.
   */
  static live<T>(fn: () => T, onReplay: () => void): T {
    if (!recording) return fn();
    recording.push(['mark', onReplay]);
    return unrecorded(fn);
  }

  /** Whether the current tfjs backend's work can be captured (tfjs's webgpu backend on Dawn). */
  static available(): boolean {
    return tf.getBackend() === 'webgpu' && typeof (globalThis as { GPUCommandEncoder?: unknown }).GPUCommandEncoder === 'function';
  }

  /** Run `fn` (tfjs work) once, recording every Dawn call it makes; tfjs's pending work is submitted before and after. */
  static capture<T>(backend: CaptureBackend, fn: () => T): { result: T; step: CapturedStep } {
    const got = CapturedStep.tryCapture(backend, fn);
    if (!got.step) throw new Error(`CapturedStep: the captured work called ${got.unsupported}, which a replay cannot repeat`);
    return { result: got.result, step: got.step };
  }

  /**
   * `capture`, where work a replay cannot repeat (a texture, a query, a readback) is not an error: `fn` ran live, its
   * result stands, and `step` is null with the call named in `unsupported` (callers go on without replaying).
   */
  static tryCapture<T>(backend: CaptureBackend, fn: () => T): { result: T; step: CapturedStep | null; unsupported: string | null } {
    install();
    // always a submit: tfjs frees the buffers of tensors disposed while its encoder used them only at its next submit,
    // and those must be in the pool by the time the recording pins what it uses
    const flush = (): void => {
      backend.ensureCommandEncoderReady();
      backend.endComputePassEncoder();
      backend.submitQueue();
    };
    flush();
    if (recording) throw new Error('CapturedStep.capture: already capturing');
    // Host values uploaded inside the capture: a tensor made inside it (a constant of the work) is uploaded again by
    // every replay, with the same values; one made before it and uploaded on first use (a parameter just assigned, the
    // input batch) is uploaded now and not recorded, so that a replay does not put its first values back over what
    // the GPU has written there since (the optimizer's updates). The upload itself is never recorded: a fresh buffer
    // gets its values mapped at creation, which no call shows, and tfjs may hand that buffer to another tensor later in
    // the step (mambaout_test with a soft-target loss: wrong gradients from the second replay on); a constant is
    // recorded as one write of its values instead.
    const made = new WeakSet<object>();
    const { write, uploadToGPU } = backend;
    backend.write = function (this: CaptureBackend, ...a: Parameters<CaptureBackend['write']>) {
      const id = write.apply(this, a);
      made.add(id);
      return id;
    };
    backend.uploadToGPU = function (this: CaptureBackend, dataId: object) {
      const d = this.tensorMap.get(dataId);
      const constant = made.has(dataId) && d?.resource == null && d?.values ? gpuWords(d.dtype ?? 'float32', d.values) : null;
      unrecorded(() => uploadToGPU.call(this, dataId));
      if (constant && recording) {
        const w = new Uint8Array(constant.buffer, constant.byteOffset, constant.byteLength).slice();
        recording.push(['write', bufferOf(this, { dataId } as tf.Tensor), 0, w]);
      }
    };
    // drawnTensor: uploaded now and not recorded (as a parameter), its draw recorded in its place
    drawMaker = (draw, shape) => {
      const t = tf.tensor(draw(), shape, 'float32');
      unrecorded(() => uploadToGPU.call(backend, t.dataId));
      recording?.push(['draw', bufferOf(backend, t), draw]);
      return t;
    };
    // tfjs-webgpu computes ops on small host-valued tensors (< 1,000 values) on the CPU: inside a capture that would
    // bake the first step's values (a batch's targets) into the recording; every op runs on the GPU instead
    const cpuForward = tf.env().getBool('WEBGPU_CPU_FORWARD');
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    recording = [];
    unsupported = null;
    let ops: Op[];
    let result: T;
    try {
      result = fn();
      flush();
    } finally {
      tf.env().set('WEBGPU_CPU_FORWARD', cpuForward);
      ops = recording;
      recording = null;
      drawMaker = null;
      backend.write = write;
      backend.uploadToGPU = uploadToGPU;
    }
    if (unsupported) return { result, step: null, unsupported };
    return { result, step: new CapturedStep(backend, ops, backend.bufferManager), unsupported: null };
  }

  /** How many of each call the recording holds (pass, pipe, bind, dispatch, copy, write, submit, mark, ...). */
  get calls(): Record<string, number> {
    const n: Record<string, number> = {};
    for (const o of this.ops) n[o[0]] = (n[o[0]] ?? 0) + 1;
    return n;
  }

  /**
   * Issue the recorded calls again, in their order, with the same buffers, bind groups and uniform data. `feed`: pairs
   * [captured input, this step's tensor of the same shape and dtype]: each is copied into the captured input's buffer
   * first (the next batch), on tfjs's encoder, so the caller may dispose it afterwards.
   */
  replay(feed: readonly (readonly [tf.Tensor, tf.Tensor])[] = []): void {
    CapturedStep.replays++;
    // the original Dawn methods, looked up once (this loop runs ~3 calls per dispatch)
    const beginComputePass = orig.get('GPUCommandEncoder.beginComputePass')!;
    const clearBuffer = orig.get('GPUCommandEncoder.clearBuffer')!;
    const copyBufferToBuffer = orig.get('GPUCommandEncoder.copyBufferToBuffer')!;
    const dispatchWorkgroups = orig.get('GPUComputePassEncoder.dispatchWorkgroups')!;
    const end = orig.get('GPUComputePassEncoder.end')!;
    const finish = orig.get('GPUCommandEncoder.finish')!;
    const setBindGroup = orig.get('GPUComputePassEncoder.setBindGroup')!;
    const setPipeline = orig.get('GPUComputePassEncoder.setPipeline')!;
    const submit = orig.get('GPUQueue.submit')!;
    const writeBuffer = orig.get('GPUQueue.writeBuffer')!;
    for (const [dst, src] of feed) {
      if (dst.dtype !== src.dtype || dst.shape.join() !== src.shape.join()) {
        throw new Error(`CapturedStep.replay: fed ${src.dtype} [${src.shape}] into a captured ${dst.dtype} [${dst.shape}]`);
      }
      this.backend.uploadToGPU(src.dataId);
      const from = bufferOf(this.backend, src);
      const to = bufferOf(this.backend, dst);
      this.backend.ensureCommandEncoderReady();
      this.backend.endComputePassEncoder();
      // float32, int32 and bool are 4 bytes a value on tfjs's webgpu backend
      this.backend.commandEncoder!.copyBufferToBuffer(from, 0, to, 0, 4 * src.size);
    }
    // what tfjs has recorded and not submitted yet (an optimizer's last updates, the feed) goes to the GPU first
    if (this.backend.commandEncoder) {
      this.backend.endComputePassEncoder();
      this.backend.submitQueue();
    }
    const device = this.backend.device;
    const queue = device.queue;
    let enc: GPUCommandEncoder | null = null;
    let pass: GPUComputePassEncoder | null = null;
    const finished: GPUCommandBuffer[] = [];
    // Encoder-level calls end an open pass first: in the capture, work that was not recorded (an upload through a
    // staging copy) may have ended it.
    const encoder = (): GPUCommandEncoder => {
      if (pass) {
        end.call(pass);
        pass = null;
      }
      return (enc ??= device.createCommandEncoder());
    };
    // A mark ends the open pass; if the recording went on in that pass (the live work did not end it), a new one
    // begins where the next pass-level call comes, with the same descriptor, pipeline and bind groups.
    let desc: GPUComputePassDescriptor | undefined;
    let pipeline: GPUComputePipeline | null = null;
    const bound = new Map<number, [GPUBindGroup, unknown]>();
    const setBind = (p: GPUComputePassEncoder, i: number, bg: GPUBindGroup, off: unknown): void => {
      if (off === undefined) setBindGroup.call(p, i, bg);
      else setBindGroup.call(p, i, bg, off);
    };
    const inPass = (): GPUComputePassEncoder => {
      if (!pass) {
        const p = beginComputePass.call(encoder(), desc) as GPUComputePassEncoder;
        if (pipeline) setPipeline.call(p, pipeline);
        for (const [i, [bg, off]] of bound) setBind(p, i, bg, off);
        pass = p;
      }
      return pass;
    };
    for (const op of this.ops) {
      switch (op[0]) {
        case 'pass':
          desc = op[1];
          pipeline = null;
          bound.clear();
          pass = beginComputePass.call(encoder(), desc) as GPUComputePassEncoder;
          break;
        case 'pipe':
          pipeline = op[1];
          setPipeline.call(inPass(), op[1]);
          break;
        case 'bind':
          setBind(inPass(), op[1], op[2], op[3]);
          bound.set(op[1], [op[2], op[3]]);
          break;
        case 'dispatch':
          dispatchWorkgroups.call(inPass(), op[1], op[2], op[3]);
          break;
        case 'end':
          if (pass) end.call(pass);
          pass = null;
          break;
        case 'copy':
          copyBufferToBuffer.call(encoder(), op[1], op[2], op[3], op[4], op[5]);
          break;
        case 'clear':
          clearBuffer.call(encoder(), op[1], op[2], op[3]);
          break;
        case 'finish':
          finished.push(finish.call(encoder()) as GPUCommandBuffer);
          enc = null;
          break;
        case 'submit':
          submit.call(queue, finished.splice(0, op[1]));
          break;
        case 'write':
          writeBuffer.call(queue, op[1], op[2], op[3]);
          break;
        case 'draw':
          // on the queue before what this replay submits after it; the previous replay's uses are all submitted
          writeBuffer.call(queue, op[1], 0, op[2]());
          break;
        case 'mark':
          // what was issued before the mark goes to the GPU before what the callback records (in order on the queue)
          if (pass) {
            end.call(pass);
            pass = null;
          }
          if (enc) {
            finished.push(finish.call(enc) as GPUCommandBuffer);
            enc = null;
          }
          if (finished.length) submit.call(queue, finished.splice(0));
          op[1]();
          break;
      }
    }
    if (enc || finished.length) throw new Error('CapturedStep.replay: the recording ended with work not submitted');
  }
}

/** The GPU buffer of an uploaded tensor. */
function bufferOf(backend: CaptureBackend, t: tf.Tensor): GPUBuffer {
  const r = backend.tensorMap.get(t.dataId)?.resource as GPUBuffer | undefined;
  // (a fed input the captured work never read on the GPU has none: then a replay would not see the new values)
  if (typeof r?.getMappedRange !== 'function') throw new Error(`CapturedStep: a ${t.dtype} [${t.shape}] tensor without a GPU buffer (a texture, or never read by the captured work on the GPU)`);
  return r!;
}
