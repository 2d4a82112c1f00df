/**
 * Start a worker thread from a module next to the caller, whether the package runs compiled (.js) or from its
 * TypeScript sources under tsx (tests, `node --import tsx`, the npm benchmark scripts). Used by the data loader's
 * decode workers and the distributed communication worker.
 *
 * Why the eval shim: Node 20 does not pass module hooks (tsx's loader) to worker threads, so a .ts entry is started
 * by a one-line script that registers tsx inside the worker first and then loads it.
 *
 * Why tsx's require hook and not its ESM loader: tsx's ESM `register()` runs Node's module hooks on a hooks thread
 * of their own, one more V8 isolate per worker, and every import of the worker's module graph is a round trip to
 * it. Measured on the 2-core CPU box (2026-11-30, load 1.9-2.5, 4 decode workers started and one 224 px eval image
 * each, CPU of the whole process, 3 runs each): ESM loader 1.98-2.43 s, require hook 1.35-1.53 s, compiled .js
 * 1.07-1.29 s. `mambaout-validate -j 4` under tsx started its workers in ~2.2 s of CPU, a third of its start-up.
 * A module graph without top-level await behaves the same in the CommonJS form tsx compiles it to (tsx keeps
 * import.meta.url): the data loader's worker asks for it (`commonjs`); the distributed comm worker, which awaits at
 * top level, keeps the ESM loader.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

export interface ModuleWorkerOptions {
  /**
   * Under tsx, load the module through tsx's require hook instead of its ESM loader (see the header): for module
   * graphs without top-level await (the data loader's worker). Compiled .js runs as an ES module either way.
   */
  commonjs?: boolean;
}

/** `js`: the compiled entry, e.g. `new URL('./worker.js', import.meta.url)`; without it, the .ts beside it runs. */
export function startModuleWorker(js: URL, workerData: unknown, opts: ModuleWorkerOptions = {}): Worker {
  if (existsSync(fileURLToPath(js))) return new Worker(js, { workerData });
  const ts = new URL(js.href.replace(/\.js$/, '.ts'));
  // A script or a module (a worker inherits --input-type=module). An error while loading is rethrown outside the
  // promise, so that it reaches the Worker's 'error' event.
  const load = opts.commonjs
    ? `import('node:module').then((m) => { const require = m.createRequire(${JSON.stringify(fileURLToPath(ts))}); ` +
      `require(${JSON.stringify(fileURLToPath(import.meta.resolve('tsx/cjs/api')))}).register(); ` +
      `require(${JSON.stringify(fileURLToPath(ts))}); })`
    : `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(ts.href)}); })`;
  const code = `${load}.catch((e) => { setImmediate(() => { throw e; }); });`;
  return new Worker(code, { eval: true, workerData });
}
