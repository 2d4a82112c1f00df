/**
 * Host-side tensors: what checkpoint readers return and writers take.
 * Floating storages (float16, bfloat16, float64) are widened to float32 on read;
 * `dtype` keeps the name of the dtype as stored in the file.
 * Shapes and memory layout are PyTorch's (row-major, contiguous after reading).
 */
export type StoredDType =
  | 'float32' | 'float16' | 'bfloat16' | 'float64'
  | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export type HostData = Float32Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array;

export interface HostTensor {
  dtype: StoredDType;
  shape: number[];
  data: HostData;
}

/** Ordered name -> tensor map (insertion order = state-dict order). */
export type TensorMap = Map<string, HostTensor>;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Float32 view of a host tensor (converting integer storages). */
export function asFloat32(t: HostTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  const out = new Float32Array(t.data.length);
  for (let i = 0; i < t.data.length; i++) out[i] = Number(t.data[i]);
  return out;
}

/**
 * What the model a checkpoint is read for needs: lets the readers refuse, before allocating, a tensor larger than the
 * model can use, and size their limits (src/limits.ts CHECKPOINT_LIMITS). Built by models/registry.ts expectedModel.
 */
export interface ExpectedModel {
  /** model name, for messages */
  name: string;
  /** PyTorch state-dict shapes by parameter name; -1 = any size (the class dimension when not known yet) */
  shapes: ReadonlyMap<string, readonly number[]>;
  /** parameter count (with 1000 classes where the class count is open) */
  numParams: number;
}
