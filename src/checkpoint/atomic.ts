/**
 * Crash-safe file writes: write to a temporary file in the same directory, fsync it,
 * rename it over the destination, then fsync the directory so the rename itself is
 * durable. A reader therefore sees either the old file or the complete new one.
 * Renaming replaces the destination's directory entry only: hard links made earlier
 * from the old file (timm's checkpoint-N.pth.tar / model_best.pth.tar) keep the old data.
 *
 * A process killed mid-write leaves its temporary file behind; the next write into the same folder removes the
 * temporary files of processes that no longer run (names: `.<file>.<pid>.<8 hex>.tmp`, and saver.ts's
 * `.<file>.<pid>.tmp`). A full disk, a quota or a read-only file system is the user's to fix: a UserError
 * naming the file, exit 2 (the old file stays intact, the temporary one is removed).
 */
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from '../errors.js';

/** What writeFileAtomic accepts: one buffer/string, or chunks written in order. */
export type AtomicData = string | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface WriteFileAtomicOptions {
  /** file mode for a new file (default 0o666, minus the umask) */
  mode?: number;
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done);
    done += bytesWritten;
  }
}

/** Temporary sibling name used while writing `path` (starts with '.', ends with '.tmp'). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Atomically replaces (or creates) `path` with `data`. On any error the temporary file
 * is removed and the destination is left untouched.
 */
export async function writeFileAtomic(path: string, data: AtomicData, opts: WriteFileAtomicOptions = {}): Promise<void> {
  await removeStaleTemps(dirname(path));
  const tmp = tempPathFor(path);
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'wx', opts.mode ?? 0o666);
  } catch (e) {
    throw writeError(path, e);
  }
  let closed = false;
  try {
    if (typeof data === 'string') await writeAll(fh, Buffer.from(data, 'utf8'));
    else if (data instanceof Uint8Array) await writeAll(fh, data);
    else if (Symbol.asyncIterator in data) for await (const c of data as AsyncIterable<Uint8Array>) await writeAll(fh, c);
    else for (const c of data as Iterable<Uint8Array>) await writeAll(fh, c);
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(tmp, path);
  } catch (e) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw writeError(path, e);
  }
  await fsyncDir(dirname(path));
}

/** Errors of the file system that the user fixes (space, quota, permissions, a file where a folder is expected). */
const USER_WRITE_ERRORS: Record<string, string> = {
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EFBIG: 'the file is larger than this file system or the process limit (ulimit -f) allows',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOENT: 'its folder does not exist',
  ENOTDIR: 'a part of its path is a file, not a folder',
  EISDIR: 'it is a folder',
};

/** fs errors of writing `path` -> one-sentence UserErrors; anything else unchanged. */
export function writeError(path: string, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const why = code ? USER_WRITE_ERRORS[code] : undefined;
  if (!why) return e;
  return new UserError(`cannot write '${path}': ${why} (${code}); nothing already written was changed`);
}

const OUR_TEMP = /^\..+\.(\d+)(?:\.[0-9a-f]{8})?\.tmp$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Removes temporary files left in `dir` by our own atomic writes of processes that are gone (killed mid-write).
 * Temporary files of running processes (this one included) are left alone. Never throws.
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = OUR_TEMP.exec(n);
    if (!m || processAlive(Number(m[1]))) continue;
    try {
      await unlink(join(dir, n));
      removed.push(n);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/** fsync a directory (makes a rename durable); silently skipped where unsupported. */
export async function fsyncDir(dir: string): Promise<void> {
  let dh: FileHandle | undefined;
  try {
    dh = await open(dir, 'r');
    await dh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // Windows and some file systems cannot open or fsync directories
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EACCES' && code !== 'EBADF' && code !== 'ENOTSUP') {
      throw e;
    }
  } finally {
    await dh?.close().catch(() => undefined);
  }
}
