/**
 * Progress bar (cli-progress) for epochs and evaluation, shown only on an interactive terminal in text mode.
 * Log lines printed while the bar is active are routed above it.
 */
import cliProgress from 'cli-progress';
import type { Logger } from './logger.js';

export interface ProgressPayload {
  [k: string]: string | number;
}

export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private start = 0;
  private done = 0;
  private images = 0;

  /**
   * `fields`: extra columns with `{name}` placeholders, e.g. 'loss {loss} | lr {lr}'. Until the first update()
   * brings their values they show '-' (cli-progress would print the literal `{loss}` in the first frame).
   */
  constructor(private readonly logger: Logger, total: number, label: string, fields = '', private readonly stream: NodeJS.WritableStream = process.stdout) {
    if (!logger.interactive) return;
    this.bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {value}/{total} | {rate} img/s | ETA {eta_formatted}${fields ? ' | ' + fields : ''}`,
        hideCursor: true,
        clearOnComplete: true,
        stopOnComplete: false,
        etaBuffer: 20,
        stream: stream as NodeJS.WriteStream,
      },
      cliProgress.Presets.shades_classic,
    );
    const initial: ProgressPayload = { rate: '0.0' };
    for (const m of fields.matchAll(/\{(\w+)\}/g)) initial[m[1]] = '-';
    this.bar.start(total, 0, initial);
    logger.setInterceptor((line) => {
      // cli-progress redraws on the next update; clear the current line first.
      this.stream.write('\r\x1b[K' + line + '\n');
      this.bar?.render();
    });
    this.start = performance.now();
  }

  update(steps: number, images: number, payload: ProgressPayload = {}): void {
    this.done += steps;
    this.images += images;
    if (!this.bar) return;
    const secs = (performance.now() - this.start) / 1000;
    this.bar.update(this.done, { ...payload, rate: (this.images / Math.max(secs, 1e-9)).toFixed(1) });
  }

  stop(): void {
    if (!this.bar) return;
    this.bar.stop();
    this.bar = null;
    this.logger.setInterceptor(null);
  }
}
