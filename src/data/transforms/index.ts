/**
 * The registry of per-image transforms: the loader sends a serializable spec (`{ kind: 'eval', ...DataConfig }` or
 * `{ kind: 'train', ... }`) to each worker once, and the worker looks its transform up here (getTransform).
 *
 * Adding a transform: write a `TransformDef` (./types.ts; e.g. TRAIN_TRANSFORM in ./train.ts) and add one line to
 * TRANSFORMS below; the `TransformSpec` union type follows from that table.
 */
import type { TransformDef } from './types.js';
import { EVAL_TRANSFORM } from './eval.js';
import { TRAIN_TRANSFORM } from './train.js';

export type { ImageArray, ImageDType, SampleContext, TransformDef } from './types.js';
export type { EvalTransformSpec } from './eval.js';

/** kind -> transform. Add new transforms here (one line each). */
const TRANSFORMS = {
  eval: EVAL_TRANSFORM,
  train: TRAIN_TRANSFORM,
};

type Registry = typeof TRANSFORMS;
/** Union of the specs of all registered transforms. */
export type TransformSpec = { [K in keyof Registry]: Registry[K] extends TransformDef<infer S> ? S : never }[keyof Registry];

export function getTransform(spec: TransformSpec): TransformDef<TransformSpec> {
  const def = (TRANSFORMS as Record<string, TransformDef<TransformSpec> | undefined>)[spec.kind];
  if (!def) throw new Error(`unknown transform kind '${spec.kind}'`);
  return def;
}
