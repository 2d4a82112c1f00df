/**
 * Official release weights (`--pretrained`): cache lookup, download with a progress bar, verification.
 *
 * Cache folder: $MAMBAOUT_HOME or ~/.cache/mambaout. A file is accepted when it is a PyTorch checkpoint whose state
 * dict fits the model strictly (names and shapes); after the first successful check its size and SHA-256 are stored
 * beside it (`<name>.pth.sha256`) and later runs compare against them, so a file changed or cut short afterwards is
 * noticed.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import https from 'node:https';
import cliProgress from 'cli-progress';
import { UserError } from './errors.js';
import { settings } from './settings.js';
import { getModelConfig } from './models/registry.js';
import { writeFileAtomic } from './checkpoint/atomic.js';

export function cacheDir(): string {
  return settings.home;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Download `url` to `dest` (following redirects) with a progress bar on a TTY. */
export async function download(url: string, dest: string, opts: { interactive?: boolean; timeoutMs?: number } = {}): Promise<void> {
  const tmp = `${dest}.${process.pid}.part`;
  const get = (u: string, redirects: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = https.get(u, { headers: { 'user-agent': 'mambaout' }, timeout: opts.timeoutMs ?? 30_000 }, (res) => {
        const code = res.statusCode ?? 0;
        if (code >= 300 && code < 400 && res.headers.location) {
          res.resume();
          if (redirects > 5) return reject(new Error('too many redirects'));
          return resolve(get(new URL(res.headers.location, u).toString(), redirects + 1));
        }
        if (code !== 200) {
          res.resume();
          return reject(new Error(`HTTP ${code}`));
        }
        const total = Number(res.headers['content-length'] ?? 0);
        const bar = opts.interactive && total > 0 ? new cliProgress.SingleBar({ format: `Downloading ${basename(dest)} [{bar}] {percentage}% | {value}/{total} MB`, hideCursor: true }, cliProgress.Presets.shades_classic) : null;
        bar?.start(Math.round(total / 1e6), 0);
        let got = 0;
        const out = createWriteStream(tmp);
        res.on('data', (c: Buffer) => {
          got += c.length;
          bar?.update(Math.round(got / 1e6));
        });
        res.pipe(out);
        out.on('finish', () => {
          bar?.stop();
          if (total && got !== total) return reject(new Error(`download cut short (${got} of ${total} bytes)`));
          resolve();
        });
        out.on('error', reject);
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
    });
  try {
    await get(url, 0);
    const fh = await fsp.open(tmp, 'r');
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, dest);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

export interface PretrainedOptions {
  /** Use this local file instead of the cache (`--pretrained-path`). */
  path?: string;
  interactive?: boolean;
  log?: (msg: string) => void;
  /** Checks that the file's state dict fits the model; throws UserError otherwise. */
  verify: (file: string) => Promise<void>;
}

/** Path of verified release weights for `model`, downloading them into the cache when absent. */
export async function resolvePretrained(model: string, opts: PretrainedOptions): Promise<string> {
  const cfg = getModelConfig(model).defaultCfg;
  if (opts.path) {
    if (!existsSync(opts.path)) throw new UserError(`--pretrained-path '${opts.path}' does not exist`);
    await opts.verify(opts.path);
    return opts.path;
  }
  if (!cfg.url) throw new UserError(`${model} has no released weights; train it or pass --checkpoint`);
  const dir = cacheDir();
  const file = join(dir, basename(new URL(cfg.url).pathname));
  const sumFile = `${file}.sha256`;
  if (existsSync(file)) {
    if (existsSync(sumFile)) {
      const [want, size] = (await fsp.readFile(sumFile, 'utf8')).trim().split(/\s+/);
      const st = await fsp.stat(file);
      if (String(st.size) !== size || (await sha256File(file)) !== want) {
        throw new UserError(`cached weights '${file}' changed since they were verified (size or SHA-256 differ); delete the file to download it again`);
      }
      return file;
    }
    await opts.verify(file);
    await writeSum(file, sumFile);
    return file;
  }
  await fsp.mkdir(dir, { recursive: true });
  opts.log?.(`Downloading ${cfg.url} to ${file}`);
  try {
    await download(cfg.url, file, { interactive: opts.interactive });
  } catch (e) {
    throw new UserError(
      `could not download the ${model} weights (${(e as Error).message}); without internet, download ${cfg.url} elsewhere and put it at ${file} (or pass --pretrained-path FILE)`,
    );
  }
  try {
    await opts.verify(file);
  } catch (e) {
    await fsp.rm(file, { force: true });
    throw e;
  }
  await writeSum(file, sumFile);
  return file;
}

async function writeSum(file: string, sumFile: string): Promise<void> {
  const st = await fsp.stat(file);
  await writeFileAtomic(sumFile, `${await sha256File(file)} ${st.size}\n`);
}
