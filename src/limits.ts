/**
 * Resource limits against hostile inputs (issue 15): what a file or an upload may make us spend before we refuse it
 * with one sentence. Everything a user can raise lives in `limits`; the fixed bounds of the checkpoint readers are
 * listed here too, so that docs/ARCHITECTURE.md ("Limits on what an input can cost") has one source.
 *
 * Images: Pillow (what timm reads images with) warns above Image.MAX_IMAGE_PIXELS = 89,478,485 pixels and raises
 * DecompressionBombError above twice that. We refuse above twice that as well (178,956,970 px, e.g. 13,377 x 13,377):
 * every image timm accepts, we accept; the limit is checked from the header, before any pixel is decoded. A decoded
 * image of that size takes 537 MB (RGB, 8 bit). `--max-image-pixels N` (train, validate, predict, demo) or
 * MAMBAOUT_MAX_IMAGE_PIXELS raises or lowers it; the flag also sets the variable, so that the data loader's worker
 * threads (which copy the environment when they start) apply the same limit.
 */
import { UserError } from './errors.js';
import { settings } from './settings.js';

/** Pillow's Image.MAX_IMAGE_PIXELS (a DecompressionBombWarning above it). */
export const PILLOW_MAX_IMAGE_PIXELS = 89_478_485;
/** Default pixel limit: where Pillow raises DecompressionBombError (2 x MAX_IMAGE_PIXELS). */
export const DEFAULT_MAX_IMAGE_PIXELS = 2 * PILLOW_MAX_IMAGE_PIXELS;

/**
 * Fixed bounds of the checkpoint readers (src/checkpoint). None of them can be reached by a file that torch.save,
 * timm or mambaout wrote; they are constants, not settings.
 */
export const CHECKPOINT_LIMITS = {
  /**
   * Total bytes inflated from deflated zip entries (torch.save stores entries uncompressed; deflate appears only
   * in re-zipped files): at most max(64 MiB, 8 x the file size, 32 bytes per parameter of the model when known:
   * float64 state dict + EMA + two optimizer moments). Deflate reaches 1032:1, so the file alone bounds nothing.
   */
  inflateMinBytes: 64 * 1024 * 1024,
  inflateFileFactor: 8,
  inflateBytesPerParam: 32,
  /** data.pkl larger than this is refused (a state dict's pickle is ~100 bytes per tensor). */
  maxPickleBytes: 64 * 1024 * 1024,
  /**
   * Pickle opcodes executed; bounds the stack, the memo and the objects made (one op makes at most one object, an
   * empty dict costs ~200 bytes: 1M ops stay under ~250 MB). femto's state dict runs 6,531 ops, the micro timm
   * training checkpoint (state dict, EMA, optimizer, args) 11,563; mambaout_base's would need ~60,000.
   */
  maxPickleOps: 1 << 20,
  /** LONG4 integers longer than this are refused (Python writes LONG4 only past 255 bytes; a checkpoint has none). */
  maxLongBytes: 1024,
  /** decimal digits of a text INT/LONG (Python's default sys.int_info.default_max_str_digits). */
  maxIntDigits: 4300,
  /**
   * A tensor stored as a view that repeats storage elements (stride 0, overlapping strides) is copied densely; such a
   * view may be at most this large unless the model has a parameter of exactly its shape.
   */
  maxRepeatedViewBytes: 1024 * 1024,
  /** Dense copies of all tensors of one load: at most 2 x the storages' size (as host arrays) + this. */
  denseSlackBytes: 64 * 1024 * 1024,
} as const;

/** settings.maxImagePixels (MAMBAOUT_MAX_IMAGE_PIXELS) when set and valid; setMaxImagePixels reports a bad one. */
function envMaxPixels(): number | undefined {
  try {
    return settings.maxImagePixels;
  } catch {
    return undefined;
  }
}

/** Settings a user can change (flags / environment). */
export const limits = {
  /**
   * Images with more pixels (width x height, from the header) are refused before decoding. Starts from
   * MAMBAOUT_MAX_IMAGE_PIXELS when valid (setMaxImagePixels reports an invalid one), else the default.
   */
  maxImagePixels: envMaxPixels() ?? DEFAULT_MAX_IMAGE_PIXELS,
};

/**
 * Applies `--max-image-pixels` (undefined/null: keep MAMBAOUT_MAX_IMAGE_PIXELS or the default). Exported to the
 * environment too, so that worker threads started afterwards use it. Throws a UserError for a bad flag or variable.
 */
export function setMaxImagePixels(n: number | null | undefined, flag = '--max-image-pixels'): void {
  if (n === undefined || n === null) {
    void settings.maxImagePixels; // a bad MAMBAOUT_MAX_IMAGE_PIXELS: a UserError naming it
    return;
  }
  if (!Number.isInteger(n) || n < 1) throw new UserError(`${flag} must be a positive whole number of pixels, got ${n}`);
  limits.maxImagePixels = n;
  settings.maxImagePixels = n;
}

/** 900000000 -> "900.0 MP", 1000 -> "1000 pixels" */
export function describePixels(n: number): string {
  return n >= 1e5 ? `${(n / 1e6).toFixed(1)} MP` : `${n} pixels`;
}
