/**
 * ONNX export + onnxruntime-node engine: logits against the PyTorch fixtures (micro_io, femto_io), batch-size
 * independence, NHWC vs NCHW input, dynamic image size (cross-checked with the tfjs model), file round trip,
 * strict state-dict checking.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { buildOnnxModel, expectedStateDictShapes, onnxConfigFor, writeOnnx } from '../src/export/onnx.js';
import { OrtClassifier, nchwToNhwc, nhwcToNchw } from '../src/engine/onnxruntime.js';
import { readProtoFields, type WireValue } from '../src/export/onnx_proto.js';
import { loadCheckpoint } from '../src/checkpoint/load.js';
import { readSafetensors } from '../src/checkpoint/safetensors.js';
import type { TensorMap } from '../src/checkpoint/types.js';
import { UserError } from '../src/errors.js';
import { createModel } from '../src/models/mambaout.js';
import { initBackend } from '../src/backend/index.js';
import { fixture, maxAbsDiff, sharedFixture, tempDir } from './helpers.js';
import { VERSION } from '../src/version.js';

const MICRO = onnxConfigFor('mambaout_test');
const { stateDict: microSd } = await loadCheckpoint(fixture('micro.pth'));
const io = await readSafetensors(fixture('micro_io.safetensors'));
const inputNchw = io.get('input_nchw')!.data as Float32Array;
const [N, , H, W] = io.get('input_nchw')!.shape;
const refLogits = io.get('logits')!.data as Float32Array;
const microBytes = buildOnnxModel(MICRO, microSd);

/** The parts of a serialized ModelProto the tests look at (field numbers of onnx.proto). */
function decodeModel(bytes: Uint8Array) {
  const fields = (b: WireValue) => readProtoFields(b as Uint8Array);
  const str = (b: WireValue | undefined) => new TextDecoder().decode((b ?? new Uint8Array(0)) as Uint8Array);
  const model = readProtoFields(bytes);
  const graph = fields(model.get(7)![0]);
  const valueInfo = (v: WireValue) => {
    const vi = fields(v);
    const shape = fields(fields(fields(vi.get(2)![0]).get(1)![0]).get(2)![0]);
    const dims = (shape.get(1) ?? []).map((d) => {
      const f = fields(d);
      return f.has(2) ? str(f.get(2)![0]) : Number(f.get(1)![0]);
    });
    return { name: str(vi.get(1)![0]), dims };
  };
  return {
    opsets: (model.get(8) ?? []).map((o) => [str(fields(o).get(1)?.[0]), Number(fields(o).get(2)![0])]),
    inputs: (graph.get(11) ?? []).map(valueInfo),
    outputs: (graph.get(12) ?? []).map(valueInfo),
    initializers: (graph.get(5) ?? []).map((t) => ({ dataType: Number(fields(t).get(2)![0]), raw: fields(t).get(9)![0] as Uint8Array })),
    opTypes: (graph.get(1) ?? []).map((n) => str(fields(n).get(4)![0])),
  };
}

test('exported graph: opset, input/output names and symbolic shapes', () => {
  const m = decodeModel(microBytes);
  assert.deepEqual(m.opsets, [['', 17]]);
  assert.equal(m.inputs.length, 1);
  assert.equal(m.inputs[0].name, 'input');
  assert.deepEqual(m.inputs[0].dims, ['N', 3, 'H', 'W']);
  assert.equal(m.outputs[0].name, 'logits');
  assert.deepEqual(m.outputs[0].dims, ['N', 10]);
  // Every state-dict value is present in the initializers (fc1/fc2 are stored split and transposed).
  const initFloats = m.initializers.reduce((s, t) => s + (t.dataType === 1 ? t.raw.length / 4 : 0), 0);
  const params = [...microSd.values()].reduce((s, t) => s + t.data.length, 0);
  assert.ok(initFloats >= params, `${initFloats} initializer floats < ${params} parameters`);
});

test('micro: onnxruntime logits match PyTorch within 1e-4', async () => {
  const clf = await OrtClassifier.create(microBytes, { threads: 2 });
  try {
    const got = await clf.run(inputNchw, N, H, W);
    assert.equal(got.length, N * 10);
    const d = maxAbsDiff(got, refLogits);
    console.log(`# micro max |onnx - torch| = ${d.toExponential(2)}`);
    assert.ok(d <= 1e-4, `max abs diff ${d}`);
  } finally {
    clf.dispose();
  }
});

test('micro: opset 18 and 19 exports give the same logits; opset 20/21 graphs differ only in the Gelu op', async () => {
  // onnxruntime-node 1.16 (our dependency: the last release whose install downloads nothing) runs opsets up to 19.
  for (const v of [{ opset: 18 }, { opset: 19 }]) {
    const clf = await OrtClassifier.create(buildOnnxModel(MICRO, microSd, v), { threads: 1 });
    const d = maxAbsDiff(await clf.run(inputNchw, N, H, W), refLogits);
    clf.dispose();
    assert.ok(d <= 1e-4, `${JSON.stringify(v)}: max abs diff ${d}`);
  }
  // Newer runtimes load opset 20/21: the erf form is the opset-17 graph under a new opset; the Gelu-op form replaces
  // each erf pattern (Div, Erf, Add, Mul, Mul) by one Gelu node and keeps every other node in order.
  const base = decodeModel(microBytes).opTypes;
  const erfPattern = ['Div', 'Erf', 'Add', 'Mul', 'Mul'];
  const withGeluOp: string[] = [];
  for (let i = 0; i < base.length; i++) {
    if (erfPattern.every((t, k) => base[i + k] === t)) {
      withGeluOp.push('Gelu');
      i += erfPattern.length - 1;
    } else withGeluOp.push(base[i]);
  }
  assert.ok(withGeluOp.filter((t) => t === 'Gelu').length >= 3, 'the micro graph has GELUs in stem, blocks and head');
  for (const [v, ops] of [[{ opset: 20, gelu: 'erf' as const }, base], [{ opset: 20 }, withGeluOp], [{ opset: 21 }, withGeluOp]] as const) {
    const m = decodeModel(buildOnnxModel(MICRO, microSd, v));
    assert.deepEqual(m.opsets, [['', v.opset]]);
    assert.deepEqual(m.opTypes, ops, JSON.stringify(v));
  }
  assert.throws(() => buildOnnxModel(MICRO, microSd, { opset: 17, gelu: 'op' }), UserError);
  assert.throws(() => buildOnnxModel(MICRO, microSd, { opset: 16 }), UserError);
});

test('micro: batch-size independence (single images, chunked runs, fixed-batch export)', async () => {
  const full = await OrtClassifier.create(microBytes, { threads: 2 });
  const chunked = await OrtClassifier.create(microBytes, { threads: 2, maxBatch: 3 });
  const fixed1 = await OrtClassifier.create(buildOnnxModel(MICRO, microSd, { batch: 1, imageSize: 64 }), { threads: 2 });
  try {
    const all = await full.run(inputNchw, N, H, W);
    const per = 3 * H * W;
    for (let i = 0; i < N; i++) {
      const img = inputNchw.subarray(i * per, (i + 1) * per);
      const one = await full.run(img, 1, H, W);
      assert.ok(maxAbsDiff(one, all.subarray(i * 10, (i + 1) * 10)) <= 1e-5, `image ${i} alone differs from the batch`);
      const oneFixed = await fixed1.run(img, 1, H, W);
      assert.ok(maxAbsDiff(oneFixed, all.subarray(i * 10, (i + 1) * 10)) <= 1e-5, `image ${i}: fixed-batch export differs`);
    }
    // 4 images in chunks of 3 + 1
    assert.ok(maxAbsDiff(await chunked.run(inputNchw, N, H, W), all) <= 1e-5);
    await assert.rejects(fixed1.run(inputNchw, N, H, W), /input|dimension/i);
  } finally {
    full.dispose();
    chunked.dispose();
    fixed1.dispose();
  }
});

test('micro: NHWC input (JS transpose and NHWC-input graph) equals the NCHW path', async () => {
  const nhwc = nchwToNhwc(inputNchw, N, H, W);
  assert.deepEqual(nhwcToNchw(nhwc, N, H, W), inputNchw);
  const nchwModel = await OrtClassifier.create(microBytes, { threads: 2 });
  const nhwcModel = await OrtClassifier.create(buildOnnxModel(MICRO, microSd, { layout: 'nhwc' }), { threads: 2 });
  try {
    assert.equal(nchwModel.inputLayout, 'nchw');
    assert.equal(nhwcModel.inputLayout, 'nhwc');
    const ref = await nchwModel.run(inputNchw, N, H, W);
    // Same graph, transposed in JS: bit-identical.
    assert.deepEqual(await nchwModel.runNHWC(nhwc, N, H, W), ref);
    assert.deepEqual(await nchwModel.infer(nhwc, N, H, W), ref);
    // Graph with a Transpose at its input.
    assert.ok(maxAbsDiff(await nhwcModel.infer(nhwc, N, H, W), ref) <= 1e-6);
    assert.ok(maxAbsDiff(await nhwcModel.run(inputNchw, N, H, W), ref) <= 1e-6);
    await assert.rejects(nchwModel.infer(nhwc.subarray(1), N, H, W), RangeError);
  } finally {
    nchwModel.dispose();
    nhwcModel.dispose();
  }
});

test('micro: dynamic image size (96x64, 32x32) matches the tfjs model', async () => {
  await initBackend('cpu');
  const tfModel = createModel('mambaout_test', { noInit: true });
  tfModel.loadStateDict(microSd);
  const clf = await OrtClassifier.create(microBytes, { threads: 2 });
  try {
    for (const [n, h, w] of [[2, 96, 64], [3, 32, 32]]) {
      const x = new Float32Array(n * h * w * 3);
      for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 1.5;
      const want = tf.tidy(() => tfModel.forward(tf.tensor4d(x, [n, h, w, 3])).dataSync() as Float32Array);
      const got = await clf.infer(x, n, h, w);
      const d = maxAbsDiff(got, want);
      assert.ok(d <= 1e-4, `${n}x${h}x${w}: max abs diff onnx vs tfjs ${d}`);
    }
  } finally {
    clf.dispose();
    tfModel.dispose();
  }
});

test('micro: concurrent infer() calls are serialized and give the same logits; fromStateDict takes NHWC', async () => {
  const clf = await OrtClassifier.fromStateDict(MICRO, microSd, { threads: 2, maxBatch: 2 });
  try {
    assert.equal(clf.inputLayout, 'nhwc');
    const nhwc = nchwToNhwc(inputNchw, N, H, W);
    const per = H * W * 3;
    const outs = await Promise.all([
      clf.infer(nhwc, N, H, W),
      clf.infer(nhwc.subarray(per), N - 1, H, W),
      clf.run(inputNchw, N, H, W),
    ]);
    assert.ok(maxAbsDiff(outs[0], refLogits) <= 1e-4);
    assert.ok(maxAbsDiff(outs[1], outs[0].subarray(10)) <= 1e-5);
    assert.ok(maxAbsDiff(outs[2], outs[0]) <= 1e-6);
  } finally {
    clf.dispose();
  }
  await assert.rejects(clf.infer(new Float32Array(3 * H * W), 1, H, W), /after dispose/);
});

test('writeOnnx + load from path reproduces the logits; missing file is a UserError', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'micro.onnx');
    await writeOnnx(path, microBytes);
    assert.deepEqual(new Uint8Array(readFileSync(path)), microBytes);
    const clf = await OrtClassifier.create(path, { threads: 1, spinning: false });
    assert.ok(maxAbsDiff(await clf.run(inputNchw, N, H, W), refLogits) <= 1e-4);
    assert.match(clf.describe(), /onnxruntime-node .*1 thread/);
    clf.dispose();
    await assert.rejects(OrtClassifier.create(join(dir, 'nope.onnx')), UserError);
    await assert.rejects(OrtClassifier.create(new Uint8Array([1, 2, 3, 4])), UserError);
    await assert.rejects(writeOnnx(join(dir, 'no-such-dir', 'x.onnx'), microBytes), UserError);
  } finally {
    cleanup();
  }
});

/** A state dict for `config` with deterministic values (sin of a counter), independent of the model code. */
function syntheticStateDict(config: { depths: number[]; dims: number[]; numClasses: number }): TensorMap {
  const sd: TensorMap = new Map();
  let k = 0;
  for (const [name, shape] of expectedStateDictShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = Math.fround(Math.sin(++k * 0.731) * 0.5);
    sd.set(name, { dtype: 'float32', shape, data });
  }
  return sd;
}

test('export bytes are those of the exporter before the transposes were written straight into the model', () => {
  // sha256 (first 16 hex digits) of the bytes after producer_version (which carries the package version), recorded
  // from the exporter that built transposed copies and concatenated them (main at 89f85a6); femto's 29 MB export was
  // compared whole the same way. Different sizes put raw_data at every alignment, so both of transposedRaw's paths run.
  const wide = { depths: [1, 2], dims: [40, 72], numClasses: 37 };
  const wideSd = syntheticStateDict(wide);
  const cases: [string, Uint8Array, string][] = [
    ['micro', microBytes, '8c4c5a72d9f57dbb'],
    ['micro nhwc', buildOnnxModel(MICRO, microSd, { layout: 'nhwc' }), '53fa0fda54e07e2f'],
    ['micro opset 18', buildOnnxModel(MICRO, microSd, { opset: 18 }), '37473ac5ec559087'],
    ['micro opset 20', buildOnnxModel(MICRO, microSd, { opset: 20 }), '8b631ecd39cd4b44'],
    ['micro fixed batch and size', buildOnnxModel(MICRO, microSd, { batch: 4, imageSize: 32, graphName: 'g' }), '21404273c01cb1f9'],
    ['wide nhwc', buildOnnxModel(wide, wideSd, { layout: 'nhwc' }), '66fdb6072e60071c'],
    ['wide', buildOnnxModel(wide, wideSd), '325730186f3d660b'],
  ];
  const v = new TextEncoder().encode(VERSION);
  for (const [name, bytes, want] of cases) {
    // ir_version (field 1), producer_name 'mambaout' (2), producer_version (3)
    const head = [0x08, bytes[1], 0x12, 8, ...new TextEncoder().encode('mambaout'), 0x1a, v.length, ...v];
    assert.deepEqual([...bytes.subarray(0, head.length)], head, `${name}: model header`);
    assert.equal(createHash('sha256').update(bytes.subarray(head.length)).digest('hex').slice(0, 16), want, name);
  }
  // and each transposed initializer is the plain transpose of its block of the PyTorch weight
  const fields = (b: WireValue) => readProtoFields(b as Uint8Array);
  const str = (b: WireValue) => new TextDecoder().decode(b as Uint8Array);
  const inits = new Map<string, Float32Array>();
  for (const t of fields(readProtoFields(cases[5][1]).get(7)![0]).get(5) ?? []) {
    const f = fields(t);
    const raw = f.get(9)![0] as Uint8Array;
    inits.set(str(f.get(8)![0]), new Float32Array(raw.slice().buffer));
  }
  let checked = 0;
  for (const [name, got] of inits) {
    const m = /^(.*\.weight)(?:\[(\d+):(\d+)\]|\[:, (\d+):(\d+)\])?\.T$/.exec(name);
    if (!m) continue;
    const w = wideSd.get(m[1])!;
    const [rows, cols] = w.shape;
    const [r0, r1] = m[2] ? [+m[2], +m[3]] : [0, rows];
    const [c0, c1] = m[4] ? [+m[4], +m[5]] : [0, cols];
    const want = new Float32Array((r1 - r0) * (c1 - c0));
    for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) want[(c - c0) * (r1 - r0) + (r - r0)] = (w.data as Float32Array)[r * cols + c];
    assert.deepEqual(got, want, name);
    checked++;
  }
  assert.ok(checked >= 4 * 3, `${checked} transposed initializers checked`);
});

test('malformed state dict: missing key, wrong shape, unexpected key, wrong class count -> UserError listing them', () => {
  const copy = (): TensorMap => new Map(microSd);
  const expectError = (sd: TensorMap, patterns: RegExp[], config = MICRO) => {
    try {
      buildOnnxModel(config, sd);
    } catch (e) {
      assert.ok(e instanceof UserError, `not a UserError: ${e}`);
      for (const p of patterns) assert.match(e.message, p);
      return;
    }
    assert.fail('no error');
  };
  const missing = copy();
  missing.delete('stages.2.1.fc1.weight');
  missing.delete('head.norm.bias');
  expectError(missing, [/missing keys: .*stages\.2\.1\.fc1\.weight/, /head\.norm\.bias/]);

  const wrong = copy();
  const t = microSd.get('stages.1.0.conv.weight')!;
  wrong.set('stages.1.0.conv.weight', { dtype: 'float32', shape: [16, 1, 5, 5], data: new Float32Array(16 * 25) });
  assert.deepEqual(t.shape, [16, 1, 7, 7]);
  expectError(wrong, [/wrong shapes: stages\.1\.0\.conv\.weight is \[16,1,5,5\], expected \[16,1,7,7\]/]);

  const extra = copy();
  extra.set('stages.3.1.norm.weight', { dtype: 'float32', shape: [32], data: new Float32Array(32) });
  expectError(extra, [/unexpected keys: stages\.3\.1\.norm\.weight/]);

  expectError(copy(), [/head\.fc2\.weight is \[10,128\], expected \[1000,128\]/], { ...MICRO, numClasses: 1000 });
  assert.throws(() => buildOnnxModel({ depths: [1, 1], dims: [8], numClasses: 10 }, microSd), UserError);
  // The expected key list is the state dict's, in order.
  assert.deepEqual([...expectedStateDictShapes(MICRO).keys()], [...microSd.keys()]);
});

test('femto: onnxruntime logits match PyTorch within 2e-3', async (t) => {
  const ckpt = sharedFixture('femto_random.pth');
  const ioPath = sharedFixture('femto_io.safetensors');
  if (!ckpt || !ioPath) {
    t.skip('femto_random.pth / femto_io.safetensors not found in ../shared/fixtures');
    return;
  }
  const { stateDict } = await loadCheckpoint(ckpt);
  const fio = await readSafetensors(ioPath);
  const x = fio.get('input_nchw')!;
  const [n, , h, w] = x.shape;
  const clf = await OrtClassifier.fromStateDict(onnxConfigFor('mambaout_femto'), stateDict, { threads: 2 });
  try {
    const got = await clf.run(x.data as Float32Array, n, h, w);
    const d = maxAbsDiff(got, fio.get('logits')!.data as Float32Array);
    console.log(`# femto max |onnx - torch| = ${d.toExponential(2)}`);
    assert.equal(got.length, n * 1000);
    assert.ok(d <= 2e-3, `max abs diff ${d}`);
  } finally {
    clf.dispose();
  }
});
