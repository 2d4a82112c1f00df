/**
 * validate.py's `--real-labels` (ImageNet-ReaL, Beyer et al. 2020) and `--valid-labels`, as timm 0.6.11 applies them:
 *
 * - `--valid-labels FILE`: a text file of class indices, one per line. The logits are cut to those columns (in index
 *   order) before the loss, the ReaL bookkeeping and top-1/top-5; the folder's labels then index the kept columns
 *   (`output[:, valid_labels]` in timm).
 * - `--real-labels FILE`: the ReaL json, a list whose entry i holds the valid classes of
 *   `ILSVRC2012_val_{i+1:08d}.JPEG`. For every image (matched by file name) with a non-empty set, timm records whether
 *   any of its top-k predictions is in the set; top-1/top-5 become 100 · the mean of those records (the loss and the
 *   per-batch log lines keep the folder labels). timm also asserts that the folder holds exactly as many images as
 *   the json has entries; here a subset is allowed, and an image missing from the json is an error naming it.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { UserError } from '../errors.js';

/** ImageNet-ReaL's real.json is 50,000 entries, about 0.4 MB; anything far larger is not a labels file. */
const MAX_LABEL_FILE_BYTES = 64 * 1024 * 1024;

async function readBounded(file: string, flag: string): Promise<string> {
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new UserError(`${flag} '${file}' is not a file`);
    size = st.size;
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${flag} file '${file}' does not exist or cannot be read`);
  }
  if (size > MAX_LABEL_FILE_BYTES) throw new UserError(`${flag} file '${file}' is ${size} bytes; a labels file is far smaller (limit ${MAX_LABEL_FILE_BYTES})`);
  return readFile(file, 'utf8');
}

/** `--valid-labels`: the kept class indices, ascending (timm: `[i in set for i in range(num_classes)]`). */
export async function readValidLabels(file: string, numClasses: number): Promise<number[]> {
  const text = await readBounded(file, '--valid-labels');
  const set = new Set<number>();
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (!t) return;
    if (!/^[+-]?\d+$/.test(t)) throw new UserError(`--valid-labels file '${file}' line ${i + 1} is not a class index: '${t.slice(0, 40)}'`);
    set.add(Number(t));
  });
  const kept = Array.from({ length: numClasses }, (_, c) => c).filter((c) => set.has(c));
  if (!kept.length) throw new UserError(`--valid-labels file '${file}' names none of the model's ${numClasses} classes`);
  return kept;
}

/** Logits [n, C] cut to the given columns -> [n, cols.length]. */
export function selectColumns(logits: Float32Array, n: number, C: number, cols: readonly number[]): Float32Array {
  const k = cols.length;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) out[i * k + j] = logits[i * C + cols[j]];
  return out;
}

/** Indices of the k largest logits of a row, largest first (ties: lower index first, as torch.topk on CPU). */
function topIndices(row: Float32Array, k: number): number[] {
  const idx: number[] = [];
  for (let c = 0; c < row.length; c++) {
    let pos = idx.length;
    while (pos > 0 && row[idx[pos - 1]] < row[c]) pos--;
    if (pos < k) {
      idx.splice(pos, 0, c);
      if (idx.length > k) idx.pop();
    }
  }
  return idx;
}

/** timm RealLabelsImagenet. */
export class RealLabels {
  private readonly correct = new Map<number, boolean[]>();

  private constructor(
    private readonly labels: Map<string, number[]>,
    readonly topk: readonly number[],
  ) {
    for (const k of topk) this.correct.set(k, []);
  }

  static async load(file: string, topk: readonly number[] = [1, 5]): Promise<RealLabels> {
    const text = await readBounded(file, '--real-labels');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new UserError(`--real-labels file '${file}' is not valid JSON`);
    }
    if (!Array.isArray(json)) throw new UserError(`--real-labels file '${file}' must hold a JSON list (entry i: the classes of ILSVRC2012_val_{i+1})`);
    const labels = new Map<string, number[]>();
    json.forEach((entry, i) => {
      if (!Array.isArray(entry) || !entry.every((c) => Number.isSafeInteger(c) && c >= 0)) {
        throw new UserError(`--real-labels file '${file}' entry ${i} is not a list of class indices`);
      }
      labels.set(`ILSVRC2012_val_${String(i + 1).padStart(8, '0')}.JPEG`, entry as number[]);
    });
    return new RealLabels(labels, topk);
  }

  /** Record one batch: logits [paths.length, C] in loader order. */
  addResult(logits: Float32Array, C: number, paths: readonly string[]): void {
    const maxk = Math.min(Math.max(...this.topk), C);
    paths.forEach((p, i) => {
      const name = basename(p);
      const real = this.labels.get(name);
      if (real === undefined) throw new UserError(`image '${p}' has no entry in the --real-labels file (it names ILSVRC2012_val_00000001.JPEG ...)`);
      if (!real.length) return;
      const pred = topIndices(logits.subarray(i * C, (i + 1) * C), maxk);
      for (const k of this.topk) this.correct.get(k)!.push(pred.slice(0, k).some((c) => real.includes(c)));
    });
  }

  /** mean of the top-k records · 100, in timm's order (NaN when no image had ReaL labels, as numpy's mean of nothing). */
  accuracy(k: number): number {
    const r = this.correct.get(k) ?? [];
    return r.length ? (r.filter(Boolean).length / r.length) * 100 : NaN;
  }
}
