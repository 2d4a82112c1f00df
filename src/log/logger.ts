/**
 * Logging. Text format (default) prints like timm's logging setup: INFO messages bare, other levels as
 * `LEVEL: message`. JSON format (`--log-format json`) emits pino's JSON lines. Both go through pino.
 */
import { pino, type Logger as PinoLogger } from 'pino';
import type { Writable } from 'node:stream';

export type LogFormat = 'text' | 'json';

export interface Logger {
  info(msg: string, extra?: Record<string, unknown>): void;
  warn(msg: string, extra?: Record<string, unknown>): void;
  error(msg: string, extra?: Record<string, unknown>): void;
  debug(msg: string, extra?: Record<string, unknown>): void;
  /** Whether lines go to an interactive terminal (progress bars are shown only then, in text mode). */
  readonly interactive: boolean;
  readonly format: LogFormat;
  /** Hook used by the progress bar so log lines do not tear it. */
  setInterceptor(fn: ((line: string) => void) | null): void;
  readonly pino: PinoLogger;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARNING', 50: 'ERROR', 60: 'CRITICAL' };

export interface LoggerOptions {
  format?: LogFormat;
  level?: string;
  /** Output stream (default process.stdout). */
  stream?: NodeJS.WritableStream;
  /** Silence everything (non-zero ranks). */
  silent?: boolean;
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const format = opts.format ?? 'text';
  const out = opts.stream ?? process.stdout;
  let interceptor: ((line: string) => void) | null = null;
  const emit = (line: string) => {
    if (interceptor) interceptor(line);
    else out.write(line + '\n');
  };
  const textStream = {
    write(chunk: string) {
      for (const raw of chunk.split('\n')) {
        if (!raw) continue;
        let rec: { level?: number; msg?: string };
        try {
          rec = JSON.parse(raw);
        } catch {
          emit(raw);
          continue;
        }
        const lvl = rec.level ?? 30;
        emit(lvl === 30 ? (rec.msg ?? '') : `${LEVEL_NAMES[lvl] ?? 'INFO'}: ${rec.msg ?? ''}`);
      }
      return true;
    },
  };
  const jsonStream = {
    write(chunk: string) {
      for (const raw of chunk.split('\n')) if (raw) emit(raw);
      return true;
    },
  };
  const p = pino(
    { level: opts.silent ? 'silent' : (opts.level ?? 'info'), base: opts.base ?? null, timestamp: format === 'json' ? pino.stdTimeFunctions.isoTime : false },
    (format === 'json' ? jsonStream : textStream) as unknown as Writable,
  );
  const call = (fn: 'info' | 'warn' | 'error' | 'debug') => (msg: string, extra?: Record<string, unknown>) => {
    if (extra) p[fn](extra, msg);
    else p[fn](msg);
  };
  return {
    info: call('info'),
    warn: call('warn'),
    error: call('error'),
    debug: call('debug'),
    interactive: Boolean((out as NodeJS.WriteStream).isTTY) && format === 'text' && !opts.silent,
    format,
    setInterceptor(fn) {
      interceptor = fn;
    },
    pino: p,
  };
}
