/**
 * The contract of a per-image transform (what src/data/worker.ts calls for every sample): its output shape and type,
 * an optional JPEG decode scale, and `apply`. The transforms (eval.ts, train.ts) implement it; the registry of kinds
 * is ./index.ts. Types only, so that a transform and the registry that lists it import no circle.
 */
import type { JpegScale, DecodedImage, DecodeGeometry } from '../decode.js';
import type { RGBImage, Region } from './resize.js';

export type ImageDType = 'float32' | 'uint8';
export type ImageArray = Float32Array | Uint8Array;

/** What a transform knows about the sample it is transforming. */
export interface SampleContext {
  /** dataset index */
  index: number;
  path: string;
  /**
   * A uint32 seed for this sample in this epoch, derived from (loader seed, epoch, position in the
   * epoch); random transforms seed their own `Rng` from it, so results do not depend on how many
   * workers run or which worker gets the batch.
   */
  seed: number;
}

/** A per-image transform: decoded RGB in, one H×W×3 image (float32 or uint8) out. */
export interface TransformDef<S extends { kind: string }> {
  /** Output shape [H, W, 3] and element type for this spec. */
  output(spec: S): { shape: [number, number, number]; dtype: ImageDType };
  /**
   * Optional: the JPEG decode scale (1, 2, 4, 8) this sample wants, given the file's size — shrink-on-load. `apply`
   * then gets an image with `scale`, `fullWidth`, `fullHeight` (a DecodedImage) and must honour `scale`.
   */
  decodeScale?(width: number, height: number, spec: S, ctx: SampleContext): JpegScale;
  /**
   * Optional: the part of the decoded image (`g`: its size at the decode scale, the scale, the file's size) that `apply`
   * reads for this sample, computed from the same draws `apply` will make; null: all of it. A JPEG is then decoded in
   * that region only (src/data/jpeg.ts, region decode): `apply` gets the whole-size image with those pixels equal to
   * the whole decode's and the others undefined. Must cover every pixel the output depends on (filter taps included).
   */
  decodeRegion?(g: DecodeGeometry, spec: S, ctx: SampleContext): Region | null;
  /** Transform `img` and write H·W·3 values to `out` starting at `offset`. */
  apply(img: RGBImage | DecodedImage, spec: S, ctx: SampleContext, out: ImageArray, offset: number): void;
}
