/**
 * Uploading the prefetcher's batch (an int32 array of packed uint8 pixels, 19 MB for 128 images at 224 px) without
 * a new staging buffer per call.
 *
 * tfjs's uploadToGPU creates a mapped MAP_WRITE staging buffer for every tensor it uploads and destroys it after
 * the copy (tfjs-backend-webgpu 4.22 acquires staging buffers with reuse = false): for a 19 MB batch that is an
 * allocation, a first touch of every page and a destroy, on the main thread, every step. Here a few persistent
 * staging buffers take turns: one is filled while mapped, copied into the tensor's storage buffer (taken from
 * tfjs's pool as for any tensor), and mapped again (mapAsync) once the copy has been submitted. With at most 2 steps
 * in flight and one batch prepared ahead, 3 buffers are in use at most; when none is free (or the device gives none)
 * the tensor is uploaded the tfjs way.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';

/** The private parts of tfjs's WebGPUBackend used here (tfjs-backend-webgpu 4.22; see dispatch.ts). */
interface BackendInternals {
  device: GPUDevice;
  tensorMap: { get(dataId: unknown): { values?: unknown; resource?: unknown } };
  commandEncoder: GPUCommandEncoder | null;
  commandQueueOwnedIds: WeakSet<object>;
  makeTensorInfo(shape: number[], dtype: 'int32'): TensorInfo;
  uploadToGPU(dataId: unknown): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

interface Staging {
  buffer: GPUBuffer;
  size: number;
  /** mapped and not in use */
  ready: boolean;
}

const MAX_STAGING = 4;
const rings = new WeakMap<GPUDevice, Staging[]>();

/** A new int32 tensor [data.length] on tfjs's webgpu backend holding `data`. */
export function uploadInt32(backendArg: unknown, data: Int32Array): TensorInfo {
  const be = backendArg as BackendInternals;
  const info = be.makeTensorInfo([data.length], 'int32');
  const bytes = data.byteLength;
  let ring = rings.get(be.device);
  if (!ring) {
    ring = [];
    rings.set(be.device, ring);
  }
  let s = ring.find((r) => r.ready && r.size >= bytes);
  if (!s) {
    const small = ring.findIndex((r) => r.ready); // a free buffer that is too small: replace it
    if (small >= 0) {
      ring[small].buffer.destroy();
      ring.splice(small, 1);
    }
    if (ring.length < MAX_STAGING && bytes > 0) {
      s = { buffer: be.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true }), size: bytes, ready: true };
      ring.push(s);
    }
  }
  if (!s) {
    be.tensorMap.get(info.dataId).values = data.slice(); // all staging buffers busy: tfjs's own upload (of a copy: the caller may reuse `data`)
    be.uploadToGPU(info.dataId);
    return info;
  }
  be.uploadToGPU(info.dataId); // the storage buffer, from tfjs's pool
  const dst = be.tensorMap.get(info.dataId).resource as GPUBuffer;
  new Int32Array(s.buffer.getMappedRange(0, bytes)).set(data);
  s.buffer.unmap();
  s.ready = false;
  be.ensureCommandEncoderReady();
  be.endComputePassEncoder();
  be.commandEncoder!.copyBufferToBuffer(s.buffer, 0, dst, 0, bytes);
  be.commandQueueOwnedIds.add(info.dataId as object);
  be.submitQueue(); // the staging buffer can be mapped again only after the copy was submitted
  const staging = s;
  const r = ring;
  staging.buffer.mapAsync(GPUMapMode.WRITE).then(
    () => {
      staging.ready = true;
    },
    () => {
      const i = r.indexOf(staging); // device lost or buffer destroyed: forget it
      if (i >= 0) r.splice(i, 1);
    },
  );
  return info;
}
