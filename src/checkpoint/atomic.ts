/**
 * Crash-safe file writes: write to a temporary file in the same directory, fsync it,
 * rename it over the destination, then fsync the directory so the rename itself is
 * durable. A reader therefore sees either the old file or the complete new one.
 * Renaming replaces the destination's directory entry only: hard links made earlier
 * from the old file (timm's checkpoint-N.pth.tar / model_best.pth.tar) keep the old data.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

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
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o666);
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
    throw e;
  }
  await fsyncDir(dirname(path));
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
