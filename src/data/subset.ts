/**
 * Carve a small real subset out of an ImageNet-style folder (`make_tiny_imagenet --from IMAGENET_ROOT`): N classes,
 * M training and K validation images per class, in ImageFolder layout, plus `class_map.txt` listing *all* the source
 * classes in the source's order. With that map, label i is still class i of the full dataset, so weights trained on
 * the full dataset score the subset with their own indices:
 *
 *   mambaout-validate SUBSET --pretrained --class-map SUBSET/class_map.txt
 *
 * measures real top-1/top-5 of the released 1000-class weights on those classes (1000-way predictions).
 *
 * Choice of images (deterministic, no seed): classes evenly spaced over the source's sorted class list (so the subset
 * spans ImageNet's categories rather than its first N, which are all fish and birds), images evenly spaced over each
 * class folder's sorted file list. Files keep their names (ImageNet-ReaL labels match validation files by name) and
 * are copied (or hard-linked with `link`); the subset is written to a temporary folder and renamed into place, so an
 * interrupted run leaves nothing half-written.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { DEFAULT_IMAGE_EXTENSIONS, naturalSort, resolveSplit } from './folder.js';

export interface SubsetOptions {
  /** ImageNet-style root with train/ and val/ (or validation/) folders of class folders. */
  from: string;
  /** Where the subset goes (must not exist yet). */
  root: string;
  classes: number;
  trainPerClass: number;
  valPerClass: number;
  /** Hard-link instead of copying (same file system only). */
  link?: boolean;
}

export interface SubsetResult {
  root: string;
  /** The chosen class names (folder names), in index order. */
  classes: string[];
  /** Their indices in the source's class list (= the pretrained weights' indices for ImageNet). */
  indices: number[];
  /** Number of classes in the source (lines of class_map.txt). */
  sourceClasses: number;
  images: number;
  classMap: string;
}

export const CLASS_MAP_FILE = 'class_map.txt';

/** `count` indices evenly spread over [0, n): floor(i·n / count). */
export function evenlySpaced(n: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.floor((i * n) / count));
}

async function listDir(dir: string): Promise<{ dirs: string[]; files: string[] }> {
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    throw new UserError(`cannot read folder '${dir}'`);
  }
  const dirs: string[] = [];
  const files: string[] = [];
  const exts = new Set(DEFAULT_IMAGE_EXTENSIONS);
  for (const e of entries) {
    let isDir = e.isDirectory();
    let isFile = e.isFile();
    if (e.isSymbolicLink()) {
      const st = await fsp.stat(join(dir, e.name)).catch(() => null);
      isDir = Boolean(st?.isDirectory());
      isFile = Boolean(st?.isFile());
    }
    if (isDir) dirs.push(e.name);
    else if (isFile && exts.has(e.name.slice(e.name.lastIndexOf('.')).toLowerCase())) files.push(e.name);
  }
  return { dirs: naturalSort(dirs), files: naturalSort(files) };
}

function positiveInt(v: number, flag: string): void {
  if (!Number.isInteger(v) || v < 1) throw new UserError(`${flag} must be a positive whole number, got ${v}`);
}

export async function carveImagenetSubset(o: SubsetOptions): Promise<SubsetResult> {
  positiveInt(o.classes, '--classes');
  positiveInt(o.trainPerClass, '--train-per-class');
  positiveInt(o.valPerClass, '--val-per-class');
  const st = await fsp.stat(o.from).catch(() => null);
  if (!st?.isDirectory()) throw new UserError(`--from '${o.from}' is not a folder`);
  const trainDir = resolveSplit(o.from, 'train');
  const valDir = resolveSplit(o.from, 'validation');
  if (trainDir === o.from || valDir === o.from) {
    throw new UserError(`--from '${o.from}' needs a train/ and a val/ (or validation/) folder of class folders (ImageFolder layout)`);
  }
  if (await fsp.stat(o.root).catch(() => null)) throw new UserError(`'${o.root}' already exists; remove it or pick another folder for the subset`);

  const { dirs: allClasses } = await listDir(trainDir);
  if (!allClasses.length) throw new UserError(`'${trainDir}' holds no class folders`);
  if (o.classes > allClasses.length) throw new UserError(`--classes ${o.classes} but '${trainDir}' has only ${allClasses.length} classes`);
  const { dirs: valClasses } = await listDir(valDir);
  const valSet = new Set(valClasses);
  const indices = evenlySpaced(allClasses.length, o.classes);
  const chosen = indices.map((i) => allClasses[i]);

  // Plan every copy first: a missing folder or a short class fails before anything is written.
  const plan: { src: string; dst: string }[] = [];
  for (const [split, dir, per] of [['train', trainDir, o.trainPerClass], ['val', valDir, o.valPerClass]] as const) {
    for (const cls of chosen) {
      if (split === 'val' && !valSet.has(cls)) {
        throw new UserError(`'${valDir}' has no folder '${cls}': the validation images must be in class folders too (ImageNet's val: run the usual valprep.sh)`);
      }
      const { files } = await listDir(join(dir, cls));
      if (files.length < per) throw new UserError(`'${join(dir, cls)}' has ${files.length} images, fewer than the ${per} asked for`);
      for (const i of evenlySpaced(files.length, per)) plan.push({ src: join(dir, cls, files[i]), dst: join(split, cls, files[i]) });
    }
  }

  const tmp = `${o.root}.${process.pid}.tmp`;
  await fsp.rm(tmp, { recursive: true, force: true });
  try {
    for (const cls of chosen) {
      await fsp.mkdir(join(tmp, 'train', cls), { recursive: true });
      await fsp.mkdir(join(tmp, 'val', cls), { recursive: true });
    }
    for (const { src, dst } of plan) {
      if (o.link) await fsp.link(src, join(tmp, dst));
      else await fsp.copyFile(src, join(tmp, dst));
    }
    await fsp.writeFile(join(tmp, CLASS_MAP_FILE), allClasses.join('\n') + '\n');
    await fsp.rename(tmp, o.root);
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EXDEV') throw new UserError(`--link needs the subset on the same file system as '${o.from}'; drop --link to copy`);
    if (code === 'ENOSPC' || code === 'EACCES' || code === 'EROFS') throw new UserError(`cannot write the subset to '${o.root}' (${code})`);
    throw e;
  }
  return { root: o.root, classes: chosen, indices, sourceClasses: allClasses.length, images: plan.length, classMap: join(o.root, CLASS_MAP_FILE) };
}
