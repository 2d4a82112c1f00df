/**
 * Start a worker thread from a module next to the caller, whether the package runs compiled (.js) or from its
 * TypeScript sources under tsx (tests, `node --import tsx`). Used by the data loader's decode workers and the
 * distributed communication worker.
 *
 * Why the eval shim: Node 20 does not pass module hooks (tsx's loader) to worker threads, so a .ts entry is started
 * by a one-line module that registers tsx inside the worker first and then imports it; an error in that import is
 * rethrown outside the promise so that it reaches the Worker's 'error' event.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** `js`: the compiled entry, e.g. `new URL('./worker.js', import.meta.url)`; without it, the .ts beside it runs. */
export function startModuleWorker(js: URL, workerData: unknown): Worker {
  if (existsSync(fileURLToPath(js))) return new Worker(js, { workerData });
  const ts = new URL(js.href.replace(/\.js$/, '.ts'));
  const api = import.meta.resolve('tsx/esm/api');
  const code =
    `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(ts.href)}); })` +
    `.catch((e) => { setImmediate(() => { throw e; }); });`;
  return new Worker(code, { eval: true, workerData });
}
