/**
 * Class names for predictions.
 *
 * ImageNet-1k: the 1000 names of imagenet_classes.ts (our own data file; its header names the source and the
 * order: the standard ILSVRC-2012 synset order, i.e. the sorted-synset order of ImageFolder that timm and
 * torchvision use, so index i of a MambaOut head is name i here).
 *
 * Other class counts: `class_<i>`, unless a class-map file gives one name per line (the format of timm's
 * `--class-map` text files: line i names class i).
 */
import { readFileSync } from 'node:fs';
import { IMAGENET_CLASSES } from './imagenet_classes.js';
import { UserError } from '../errors.js';

export const IMAGENET_NUM_CLASSES = 1000;

/** The 1000 ImageNet-1k class names, index order. */
export function imagenetClassNames(): readonly string[] {
  return IMAGENET_CLASSES;
}

/**
 * Read a class-map text file: one class name per line, line i (0-based) naming class i. Trailing whitespace and
 * a final empty line are ignored; empty lines in the middle are an error (they would shift every later index).
 */
export function readClassMap(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(
      code === 'ENOENT' ? `class map file '${file}' does not exist` : `cannot read class map file '${file}' (${code ?? (e as Error).message})`,
    );
  }
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/).map((l) => l.trimEnd());
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  const blank = lines.findIndex((l) => l.trim() === '');
  if (blank >= 0) throw new UserError(`class map file '${file}' has an empty line at line ${blank + 1}; give one class name per line`);
  if (lines.length === 0) throw new UserError(`class map file '${file}' is empty; give one class name per line`);
  return lines.map((l) => l.trim());
}

/**
 * Names for a head of `numClasses` outputs: the class map when given (its length must match), ImageNet-1k names
 * for 1000 classes, `class_<i>` otherwise.
 */
export function resolveClassNames(numClasses: number, classMapFile?: string | null): string[] {
  if (classMapFile) {
    const names = readClassMap(classMapFile);
    if (names.length !== numClasses) {
      throw new UserError(`class map file '${classMapFile}' names ${names.length} classes but the model has ${numClasses}`);
    }
    return names;
  }
  if (numClasses === IMAGENET_NUM_CLASSES) return [...imagenetClassNames()];
  return Array.from({ length: numClasses }, (_, i) => `class_${i}`);
}
