/**
 * Opening and reading a checkpoint file: one-sentence UserErrors for what the user can fix (missing file, a folder,
 * no permission), positioned reads of exact lengths (a short read means the file is cut or changed under us).
 * Shared by the .pth reader (pth.ts), the safetensors reader and loadCheckpoint's format sniffing (load.ts).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { UserError } from '../errors.js';

/** Maps fs errors of opening a checkpoint to one-sentence UserErrors. */
export function fileError(path: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return new UserError(`checkpoint file '${path}' does not exist`);
  if (code === 'EISDIR') return new UserError(`'${path}' is a directory, not a checkpoint file`);
  if (code === 'EACCES' || code === 'EPERM') return new UserError(`cannot read checkpoint '${path}': permission denied`);
  return e instanceof Error ? e : new Error(String(e));
}

/** Opens `path` for positioned reads, with its size; a missing file or a folder is a UserError naming it. */
export async function openForRead(path: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw fileError(path, e);
  }
  const st = await fh.stat();
  if (st.isDirectory()) {
    await fh.close();
    throw new UserError(`'${path}' is a directory, not a checkpoint file`);
  }
  return { fh, size: st.size };
}

/** Reads exactly `len` bytes at `pos` into a fresh (aligned) buffer. */
export async function readAt(fh: FileHandle, pos: number, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(out, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  if (done < len) throw new ShortRead();
  return out;
}

/** A file that ended (or shrank) before the bytes its own directory promised. */
export class ShortRead extends Error {}
