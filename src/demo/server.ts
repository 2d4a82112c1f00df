/**
 * The demo web server (our take on the Gradio demo of the MambaOut repository): one page to upload an image and
 * see its top classes, one JSON endpoint that classifies an upload.
 *
 *   GET  /              the page (src/demo/page.ts)
 *   GET  /api/info      {model, engine, description, numClasses, inputSize, topk, maxUploadBytes, maxImagePixels}
 *   POST /api/predict   multipart/form-data with a file field `image` (or the first file), or the image bytes as the
 *                       raw body (Content-Type image/* or application/octet-stream)
 *                       -> 200 {path, topk: [{index, name, probability}], model, engine, ms}
 *                          (the shape of one `mambaout-predict --json` entry plus model, engine and the time in ms)
 *                       -> 400 not an image / no file, 413 over the size limit or over the pixel limit (a
 *                          decompression bomb: checked from the image header before decoding), 415 other content
 *                          types, 503 queue full; every error body is {error: "one sentence"}
 *   other methods on these routes -> 405 with an Allow header; unknown routes -> 404.
 *
 * The model is loaded once, before the server starts. Requests are served in arrival order, one classification at a
 * time (a FIFO queue): decoding and inference both run inside the queue, so memory stays bounded by one image at a
 * time plus the queued uploads. Bad input never crashes the server: every error ends in a JSON reply.
 * An image is at most `maxImagePixels` pixels (src/limits.ts; --max-image-pixels), so one decode takes at most
 * 3 bytes per pixel (537 MB at the default limit); large JPEGs are decoded at reduced scale (decode.ts).
 */
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import { DecodeError, ImageTooLargeError } from '../data/decode.js';
import { describePixels, limits } from '../limits.js';
import { UserError } from '../errors.js';
import { DEFAULT_TOPK, Predictor, checkTopK, type TopKEntry } from '../inference/predict.js';
import { DEMO_PAGE_CSP, DEMO_PAGE_HTML } from './page.js';

export const DEFAULT_DEMO_PORT = 7860;
export const DEFAULT_DEMO_HOST = '127.0.0.1';
export const DEFAULT_MAX_UPLOAD_MB = 20;
export const DEFAULT_MAX_QUEUE = 32;

export interface DemoLog {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface DemoServerOptions {
  /** A loaded predictor (Predictor.create). */
  predictor: Predictor;
  /** Dispose the predictor when the server is closed (default false: the caller owns it). */
  disposePredictorOnClose?: boolean;
  /** TCP port (default 7860; 0 picks a free one). */
  port?: number;
  /** Interface to bind (default 127.0.0.1: reachable from this machine only). */
  host?: string;
  /** Largest accepted upload in bytes (default 20 MB). */
  maxUploadBytes?: number;
  /** Largest accepted image in pixels, read from its header (default limits.maxImagePixels: --max-image-pixels). */
  maxImagePixels?: number;
  /** Classes returned per image (default 5). */
  topk?: number;
  /** Requests waiting for the model beyond this number are answered 503 (default 32). */
  maxQueue?: number;
  log?: DemoLog;
}

/** What POST /api/predict returns. */
export interface DemoPrediction {
  path: string;
  topk: TopKEntry[];
  model: string;
  engine: string;
  /** Decode + preprocessing + inference time, milliseconds (time spent waiting in the queue excluded). */
  ms: number;
}

export interface DemoServer {
  /** Base URL, e.g. http://127.0.0.1:7860/ */
  url: string;
  port: number;
  app: FastifyInstance;
  /** Stop accepting connections, wait for the requests in flight, free the predictor when owned. */
  close(): Promise<void>;
}

/** An error with an HTTP status and a one-sentence message for the client. */
class HttpError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
  }
}

/**
 * Runs async jobs one at a time, in the order they were submitted. A job's failure does not affect the next.
 */
export class FifoQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  /** Jobs submitted and not finished yet (the running one included). */
  get size(): number {
    return this.waiting;
  }

  run<T>(job: () => Promise<T>): Promise<T> {
    this.waiting++;
    const result = this.tail.then(job);
    // The chain continues whatever the job's outcome.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      this.waiting--;
    });
    return result;
  }

  /** Resolves when every job submitted so far has finished. */
  async drain(): Promise<void> {
    await this.tail;
  }
}

function fmtMB(bytes: number): string {
  const mb = bytes / (1024 * 1024);
  return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`;
}

const RAW_TYPES = /^(image\/[\w.+-]+|application\/octet-stream)$/i;

/** Build (but do not start) the fastify app. */
export async function buildDemoApp(opts: DemoServerOptions): Promise<FastifyInstance> {
  const predictor = opts.predictor;
  const maxUpload = opts.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_MB * 1024 * 1024;
  if (!Number.isFinite(maxUpload) || maxUpload <= 0) throw new UserError(`the upload limit must be a positive size, got ${maxUpload} bytes`);
  const topk = checkTopK(opts.topk ?? DEFAULT_TOPK);
  const maxQueue = opts.maxQueue ?? DEFAULT_MAX_QUEUE;
  const maxPixels = opts.maxImagePixels ?? limits.maxImagePixels;
  if (!Number.isInteger(maxPixels) || maxPixels < 1) throw new UserError(`the pixel limit must be a positive whole number, got ${maxPixels}`);
  const log = opts.log;
  const queue = new FifoQueue();
  const tooLarge = `the image is larger than the upload limit of ${fmtMB(maxUpload)}`;

  const app = Fastify({
    logger: false,
    // Raw-body uploads are checked against this limit; multipart uploads against the multipart fileSize limit.
    bodyLimit: maxUpload,
    // The page and the API are small: a slow client must not hold a connection forever.
    requestTimeout: 120_000,
  });

  await app.register(multipart, {
    limits: { fileSize: maxUpload, files: 1, fields: 20, fieldSize: 64 * 1024, parts: 40, headerPairs: 200 },
    throwFileSizeLimit: true,
  });

  // Raw image bytes as the body.
  app.addContentTypeParser(RAW_TYPES, { parseAs: 'buffer', bodyLimit: maxUpload }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: FastifyError | HttpError, _req, reply) => {
    let status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    let message = err.message;
    const code = (err as FastifyError).code;
    if (code === 'FST_FILES_LIMIT' || code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT') {
      status = 413; // multipart's own status for its count limits
      message = 'the form holds more files or fields than accepted; send one image per request';
    } else if ((status === 413 && !(err instanceof HttpError)) || code === 'FST_REQ_FILE_TOO_LARGE' || code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 413;
      message = tooLarge;
    } else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      message = `unsupported content type; send the image as a multipart form field 'image' or as the raw request body`;
    } else if (status >= 500) {
      log?.error(`demo: internal error: ${err.stack ?? err.message}`);
      message = `internal error while classifying the image: ${err.message}`;
    }
    if (!reply.sent) void reply.code(status).type('application/json; charset=utf-8').send({ error: message });
  });

  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: `no such page: ${req.method} ${req.url.split('?')[0]}` });
  });

  const methodNotAllowed = (allow: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    void reply.code(405).header('allow', allow).send({ error: `${req.method} is not allowed here; use ${allow}` });
  };
  const OTHER_METHODS = ['DELETE', 'PATCH', 'PUT', 'OPTIONS'] as const;

  app.get('/', async (_req, reply) => {
    void reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', DEMO_PAGE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(DEMO_PAGE_HTML);
  });
  app.route({ method: ['POST', ...OTHER_METHODS], url: '/', handler: methodNotAllowed('GET') });

  app.get('/api/info', async () => {
    const [c, h, w] = predictor.dataConfig.inputSize;
    return {
      model: predictor.modelName,
      engine: predictor.engineName,
      description: predictor.description,
      numClasses: predictor.numClasses,
      inputSize: [c, h, w],
      topk,
      maxUploadBytes: maxUpload,
      maxImagePixels: maxPixels,
    };
  });
  app.route({ method: ['POST', ...OTHER_METHODS], url: '/api/info', handler: methodNotAllowed('GET') });

  app.post('/api/predict', async (req, reply): Promise<DemoPrediction> => {
    const { data, name } = await readUpload(req);
    if (data.length === 0) throw new HttpError(400, 'the upload is empty; choose an image file');
    if (queue.size >= maxQueue) {
      void reply.header('retry-after', '5');
      throw new HttpError(503, `the server is busy (${queue.size} images waiting); try again in a few seconds`);
    }
    return queue.run(async () => {
      const t0 = performance.now();
      let result: TopKEntry[];
      try {
        result = await predictor.classifyBuffer(data, name, topk, maxPixels);
      } catch (e) {
        if (e instanceof ImageTooLargeError) {
          log?.warn(`demo: refused ${name}: ${e.width}x${e.height} pixels, above the limit of ${maxPixels}`);
          throw new HttpError(
            413,
            `'${name}' is ${e.width}x${e.height} pixels (${describePixels(e.width * e.height)}), more than this server decodes ` +
              `(${describePixels(maxPixels)}, --max-image-pixels); send a smaller image`,
          );
        }
        if (e instanceof DecodeError) {
          throw new HttpError(400, `'${name}' is not an image that can be read (JPEG, PNG, WebP, GIF, TIFF, AVIF...): ${e.reason}`);
        }
        throw e;
      }
      const ms = performance.now() - t0;
      log?.info(`demo: ${name} (${data.length} bytes) -> ${result[0]?.name ?? '?'} (${((result[0]?.probability ?? 0) * 100).toFixed(1)}%) in ${ms.toFixed(0)} ms`);
      return { path: name, topk: result, model: predictor.modelName, engine: predictor.engineName, ms };
    });
  });
  // GET /api/predict etc.: 405 (the browser address bar and curl without -F land here).
  app.route({ method: ['GET', 'HEAD', ...OTHER_METHODS], url: '/api/predict', handler: methodNotAllowed('POST') });

  return app;
}

/** Read the uploaded bytes: the multipart file (field `image`, else the first file) or the raw body. */
async function readUpload(req: FastifyRequest): Promise<{ data: Buffer; name: string }> {
  if (req.isMultipart()) {
    let chosen: { data: Buffer; name: string; field: string } | null = null;
    for await (const part of req.parts()) {
      if (part.type !== 'file') continue;
      // Always consume the stream (busboy needs it); toBuffer throws the 413 error when over the limit.
      const data = await part.toBuffer();
      if (!chosen || (chosen.field !== 'image' && part.fieldname === 'image')) {
        chosen = { data, name: part.filename || 'upload', field: part.fieldname };
      }
    }
    if (!chosen) throw new HttpError(400, "no file in the form; send the image in a file field named 'image'");
    return { data: chosen.data, name: chosen.name };
  }
  const body = req.body;
  if (Buffer.isBuffer(body)) {
    const hinted = req.headers['x-filename'];
    return { data: body, name: typeof hinted === 'string' && hinted ? hinted.slice(0, 200) : 'upload' };
  }
  if (body === undefined || body === null) throw new HttpError(400, "no image received; send it as a multipart form field 'image' or as the raw request body");
  throw new HttpError(400, "send the image as a multipart form field 'image' or as the raw request body (Content-Type image/*), not as JSON or text");
}

/** Start the demo server. Resolves once it listens; `url` has the actual port (useful with port 0). */
export async function startDemoServer(opts: DemoServerOptions): Promise<DemoServer> {
  const host = opts.host ?? DEFAULT_DEMO_HOST;
  const port = opts.port ?? DEFAULT_DEMO_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port must be an integer between 0 and 65535, got ${port}`);
  const app = await buildDemoApp(opts);
  try {
    await app.listen({ host, port });
  } catch (e) {
    await app.close().catch(() => undefined);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UserError(`port ${port} on ${host} is already in use; choose another with --port`);
    if (code === 'EACCES') throw new UserError(`no permission to listen on port ${port}; choose a port above 1023 with --port`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UserError(`cannot listen on host '${host}': no such local address`);
    throw e;
  }
  const addr = app.server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  const family = typeof addr === 'object' && addr ? addr.family : 'IPv4';
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  const urlHost = family === 'IPv6' && shownHost.includes(':') ? `[${shownHost}]` : shownHost;
  let closed = false;
  return {
    url: `http://${urlHost}:${actualPort}/`,
    port: actualPort,
    app,
    async close() {
      if (closed) return;
      closed = true;
      await app.close();
      if (opts.disposePredictorOnClose) opts.predictor.dispose();
    },
  };
}
