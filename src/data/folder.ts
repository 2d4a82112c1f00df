/**
 * Image-folder dataset discovery, as timm 0.6.11's `create_dataset` + `ParserImageFolder`
 * (`_search_split`, `find_images_and_targets`, `load_class_map`, `natural_key`).
 *
 *   root/<split>/<class>/.../<image>.jpg     label = name of the leaf directory holding the file
 *
 * Differences from timm, on purpose: `.webp` is accepted by default (timm 0.6.11 only takes
 * .png/.jpg/.jpeg; pass `extensions` to restrict), and symlink cycles are walked only once
 * (os.walk(followlinks=True) would recurse forever). A folder or image whose name is not valid UTF-8
 * (Python reads it through surrogateescape, Node's strings cannot hold it) is refused by name with a
 * UserError: a silently dropped class would shift every label after it.
 */
import { existsSync, statSync } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../errors.js';

export const DEFAULT_IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp'];

const TRAIN_SYNONYMS = ['train', 'training'];
const EVAL_SYNONYMS = ['val', 'valid', 'validation', 'eval', 'evaluation'];

/**
 * timm `_search_split`: `root/<split>` if it exists (anything after '[' in the split name is
 * ignored); else for train/training the first existing of root/train, root/training; for
 * val/valid/validation/eval/evaluation the first existing of root/val, root/valid,
 * root/validation, root/eval, root/evaluation; else `root` itself.
 * (timm only searches when `root` is a directory.)
 */
export function resolveSplit(root: string, split: string): string {
  if (!isDir(root)) return root;
  const name = split.split('[')[0];
  if (name && existsSync(path.join(root, name))) return path.join(root, name);
  const synonyms = TRAIN_SYNONYMS.includes(name) ? TRAIN_SYNONYMS : EVAL_SYNONYMS.includes(name) ? EVAL_SYNONYMS : [];
  for (const s of synonyms) {
    const p = path.join(root, s);
    if (existsSync(p)) return p;
  }
  return root;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// natural sort key (timm `natural_key`): lower-case, split into text / digit runs, digit runs
// compared as integers, text runs as strings (Python compares strings by code point).

type KeyPart = string | DigitRun;
interface DigitRun {
  /** digits with leading zeros removed ('' for 0) */
  digits: string;
}

/** `[int(s) if s.isdigit() else s for s in re.split(r'(\d+)', s.lower())]` */
export function naturalKey(s: string): KeyPart[] {
  const parts = s.toLowerCase().split(/(\d+)/);
  // split with a capture group alternates text, digits, text, ... starting with text
  return parts.map((p, i) => (i % 2 === 1 ? { digits: p.replace(/^0+/, '') } : p));
}

function compareCodePoints(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca !== cb) {
      // UTF-16 order equals code point order except when a surrogate (D800-DFFF) meets
      // a BMP character above it (E000-FFFF): surrogates stand for code points > FFFF.
      if (ca >= 0xd800 && cb >= 0xd800) {
        const pa = a.codePointAt(i)!;
        const pb = b.codePointAt(i)!;
        return pa < pb ? -1 : pa > pb ? 1 : 0;
      }
      return ca < cb ? -1 : 1;
    }
  }
  return a.length - b.length < 0 ? -1 : a.length > b.length ? 1 : 0;
}

function compareDigits(a: DigitRun, b: DigitRun): number {
  if (a.digits.length !== b.digits.length) return a.digits.length < b.digits.length ? -1 : 1;
  return a.digits < b.digits ? -1 : a.digits > b.digits ? 1 : 0;
}

/** Python list comparison of two natural keys. */
export function compareNaturalKeys(a: readonly KeyPart[], b: readonly KeyPart[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    const c = typeof x === 'string' ? compareCodePoints(x, y as string) : compareDigits(x, y as DigitRun);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/** Sort strings by timm's natural key (stable; keys computed once). */
export function naturalSort(items: readonly string[]): string[] {
  return sortByNaturalKey(items, (s) => s);
}

function sortByNaturalKey<T>(items: readonly T[], key: (t: T) => string): T[] {
  const keyed = items.map((item) => ({ item, k: naturalKey(key(item)) }));
  keyed.sort((p, q) => compareNaturalKeys(p.k, q.k));
  return keyed.map((e) => e.item);
}

// ---------------------------------------------------------------------------------------------

export interface Sample {
  path: string;
  label: number;
}

export interface ImageFolder {
  /** the folder that was scanned */
  root: string;
  /** class names; index = label */
  classes: string[];
  /** class name -> index */
  classToIdx: Map<string, number>;
  /** sorted by natural key of the full path */
  samples: Sample[];
}

export interface ScanOptions {
  /** `--class-map` file (.txt, one class name per line; line i -> index i). Relative paths are
   * tried as given, then relative to the scanned folder (timm's load_class_map). */
  classMap?: string;
  /** accepted extensions with the dot, matched case-insensitively (default .jpg .jpeg .png .webp) */
  extensions?: readonly string[];
}

/**
 * Walk `root` recursively (following symlinks) and list its images with labels
 * (timm `find_images_and_targets(leaf_name_only=True, sort=True)`).
 */
export async function scanImageFolder(root: string, opts: ScanOptions = {}): Promise<ImageFolder> {
  const exts = new Set((opts.extensions ?? DEFAULT_IMAGE_EXTENSIONS).map((e) => e.toLowerCase()));
  let st;
  try {
    st = await stat(root);
  } catch {
    throw new UserError(`dataset folder ${root} does not exist.`);
  }
  if (!st.isDirectory()) throw new UserError(`dataset path ${root} is not a folder.`);

  const files: { path: string; label: string }[] = [];
  const seen = new Set<string>();
  await walk(root, '', exts, files, seen);

  let classToIdx: Map<string, number>;
  let classes: string[];
  if (opts.classMap) {
    classes = await loadClassMap(opts.classMap, root);
    classToIdx = new Map();
    // {v.strip(): k for k, v in enumerate(f)}: a repeated name keeps its last index
    classes.forEach((c, i) => classToIdx.set(c, i));
  } else {
    classes = naturalSort([...new Set(files.map((f) => f.label))]);
    classToIdx = new Map(classes.map((c, i) => [c, i]));
  }

  const kept: Sample[] = [];
  for (const f of files) {
    const label = classToIdx.get(f.label);
    if (label !== undefined) kept.push({ path: f.path, label }); // not in the class map -> dropped (timm)
  }
  if (files.length === 0) {
    throw new UserError(
      `found no ${[...exts].join('/')} images under ${root}; point the data path at a folder with one sub-folder of images per class.`,
    );
  }
  if (kept.length === 0) {
    throw new UserError(`none of the ${files.length} images under ${root} belongs to a class listed in ${opts.classMap}.`);
  }
  const samples = sortByNaturalKey(kept, (s) => s.path);
  return { root, classes, classToIdx, samples };
}

async function walk(
  dir: string, label: string, exts: Set<string>, out: { path: string; label: string }[], seen: Set<string>,
): Promise<void> {
  let real: string;
  try {
    real = await realpath(dir);
  } catch {
    return;
  }
  if (seen.has(real)) return; // symlink cycle or a folder linked twice
  seen.add(real);
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    // os.walk ignores folders it cannot list (onerror=None)
    return;
  }
  if (entries.some((e) => e.name.includes('\uFFFD'))) await refuseNonUtf8(dir, exts);
  const subdirs: string[] = [];
  for (const ent of entries) {
    const p = path.join(dir, ent.name);
    let isDirectory = ent.isDirectory();
    if (ent.isSymbolicLink()) {
      // followlinks=True: a link to a folder is walked; a link to a file (or a broken link) is a file
      try {
        isDirectory = (await stat(p)).isDirectory();
      } catch {
        isDirectory = false;
      }
    }
    if (isDirectory) {
      subdirs.push(ent.name);
    } else if (exts.has(path.extname(ent.name).toLowerCase())) {
      out.push({ path: p, label });
    }
  }
  for (const d of subdirs) await walk(path.join(dir, d), d, exts, out, seen);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Whether `name` is valid UTF-8. */
function isUtf8(name: Uint8Array): boolean {
  try {
    strictUtf8.decode(name);
    return true;
  } catch {
    return false;
  }
}

/** A file name with every byte that is not part of valid UTF-8 written as \xNN (as Python's repr of surrogateescape). */
export function escapeFileName(name: Uint8Array): string {
  let out = '';
  for (let i = 0; i < name.length; ) {
    const b = name[i];
    const len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len && i + len <= name.length && isUtf8(name.subarray(i, i + len))) {
      out += strictUtf8.decode(name.subarray(i, i + len));
      i += len;
    } else {
      out += `\\x${b.toString(16).padStart(2, '0')}`;
      i++;
    }
  }
  return out;
}

/**
 * Called when a listing of `dir` holds U+FFFD (what Node puts in place of bytes that are not UTF-8): lists it again
 * as raw bytes and refuses the first sub-folder or image whose name is not UTF-8 (names that merely contain U+FFFD
 * are fine).
 */
async function refuseNonUtf8(dir: string, exts: Set<string>): Promise<void> {
  let raw;
  try {
    raw = await readdir(dir, { withFileTypes: true, encoding: 'buffer' });
  } catch {
    return;
  }
  for (const ent of raw) {
    const name = ent.name as unknown as Buffer;
    if (isUtf8(name)) continue;
    let isDirectory = ent.isDirectory();
    if (ent.isSymbolicLink()) {
      try {
        isDirectory = (await stat(Buffer.concat([Buffer.from(dir + path.sep), name]))).isDirectory();
      } catch {
        isDirectory = false;
      }
    }
    const shown = escapeFileName(name);
    const isImage = exts.has(path.extname(name.toString('latin1')).toLowerCase());
    if (!isDirectory && !isImage) continue;
    throw new UserError(
      `${isDirectory ? 'folder' : 'image'} '${shown}' in ${dir} has a name that is not valid UTF-8, which mambaout cannot ` +
        `use as ${isDirectory ? 'a class name' : 'a path'}; rename it to UTF-8 (e.g. convmv -f latin1 -t utf-8 --notest -r ${dir})`,
    );
  }
}

/** timm `load_class_map` for .txt files: line i (stripped) -> index i. Returns the names by index. */
export async function loadClassMap(file: string, root = ''): Promise<string[]> {
  let p = file;
  if (!existsSync(p) && root) p = path.join(root, file);
  const ext = path.extname(file).toLowerCase();
  if (ext !== '.txt') {
    throw new UserError(`class map ${file} is not supported: use a .txt file with one class name per line.`);
  }
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch {
    throw new UserError(`cannot read class map ${file}: no such readable file (also looked in ${root || '.'}).`);
  }
  // Python iterates a text file by lines (universal newlines); the last line may lack '\n'.
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw new UserError(`class map ${file} is empty.`);
  return lines.map((l) => l.trim());
}
