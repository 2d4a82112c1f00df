// Issue 13: what one call into Dawn costs the main thread through dawn.node (the npm `webgpu` package), on an adapter
// that runs nothing (the null backend: the frontend's validation and recording only) or on the machine's Vulkan
// adapter. A femto training step makes ~720 dispatches (setPipeline + setBindGroup + dispatchWorkgroups each), and
// the optimizer used to make 1,204 copyBufferToBuffer calls per step (src/backend/kernels/webgpu/adam_multi.ts).
//   node scripts/dawn_call_cost.mjs [null|vulkan]        (Vulkan: needs libvulkan; on the CPU box source .lavapipe/env.sh)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const dawn = require('webgpu');
Object.assign(globalThis, dawn.globals);
const backend = process.argv[2] ?? 'null';
const gpu = dawn.create([`backend=${backend}`]);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error(`no ${backend} adapter`);
  process.exit(2);
}
const device = await adapter.requestDevice();
const U = GPUBufferUsage;
const buf = device.createBuffer({ size: 1024, usage: U.STORAGE | U.COPY_DST });
const src = device.createBuffer({ size: 1024, usage: U.COPY_SRC | U.COPY_DST });
const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n@compute @workgroup_size(64) fn main() { x[0] = 1.0; }' });
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
const layout = pipeline.getBindGroupLayout(0);
const bindGroup = device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: buf } }] });

/** µs per call of `f`, best of 3 rounds of n calls. */
function perCall(n, f) {
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) f();
    best = Math.min(best, ((performance.now() - t) * 1000) / n);
  }
  return +best.toFixed(3);
}
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass();
const out = {
  backend: adapter.info?.description || backend,
  setPipeline: perCall(20000, () => pass.setPipeline(pipeline)),
  setBindGroup: perCall(20000, () => pass.setBindGroup(0, bindGroup)),
  dispatchWorkgroups: perCall(20000, () => pass.dispatchWorkgroups(1, 1, 1)),
  getBindGroupLayout: perCall(20000, () => pipeline.getBindGroupLayout(0)),
  createBindGroup: perCall(5000, () => device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: buf } }] })),
};
pass.end();
out.copyBufferToBuffer = perCall(20000, () => enc.copyBufferToBuffer(src, 0, buf, 0, 256));
enc.finish();
out.encoderPassFinishSubmit = perCall(1000, () => {
  const e = device.createCommandEncoder();
  e.beginComputePass().end();
  device.queue.submit([e.finish()]);
});
console.log(JSON.stringify({ us_per_call: out }));
process.exit(0);
