/**
 * mambaout-demo server: real HTTP requests against startDemoServer on a free port (micro model, 64 px).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Predictor } from '../src/inference/predict.js';
import { FifoQueue, startDemoServer, type DemoPrediction, type DemoServer } from '../src/demo/server.js';
import { fixture } from './helpers.js';
import { pngBomb } from './helpers/craft.js';

const CHELSEA = readFileSync(fixture('photos/chelsea.jpg'));
const COFFEE = readFileSync(fixture('photos/coffee.jpg'));

let predictor: Predictor;
let server: DemoServer;
let base: string;

before(async () => {
  predictor = await Predictor.create({ model: 'mambaout_test', checkpoint: fixture('micro.pth'), imgSize: 64, numClasses: 10 });
  server = await startDemoServer({ predictor, port: 0, maxUploadBytes: 1024 * 1024 });
  base = server.url;
});

after(async () => {
  await server?.close();
  predictor?.dispose();
});

function form(data: Uint8Array, name: string, field = 'image', type = 'image/jpeg'): FormData {
  const f = new FormData();
  f.append(field, new Blob([new Uint8Array(data)], { type }), name);
  return f;
}

async function post(body: FormData | Uint8Array, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const r = await fetch(new URL('api/predict', base), { method: 'POST', body: body instanceof FormData ? body : new Uint8Array(body), headers });
  const text = await r.text();
  return { status: r.status, json: JSON.parse(text) as Record<string, unknown>, headers: r.headers };
}

function checkPrediction(p: DemoPrediction, path: string): void {
  assert.deepEqual(Object.keys(p), ['path', 'topk', 'model', 'engine', 'ms']);
  assert.equal(p.path, path);
  assert.equal(p.model, 'mambaout_test');
  assert.equal(p.engine, predictor.engineName);
  assert.ok(p.ms > 0 && p.ms < 60_000);
  assert.equal(p.topk.length, 5);
  let sum = 0;
  p.topk.forEach((t, i) => {
    assert.deepEqual(Object.keys(t), ['index', 'name', 'probability']);
    assert.equal(t.name, `class_${t.index}`);
    assert.ok(t.probability >= 0 && t.probability <= 1);
    if (i) assert.ok(p.topk[i - 1].probability >= t.probability);
    sum += t.probability;
  });
  assert.ok(sum <= 1 + 1e-9);
}

test('listens on 127.0.0.1 by default, on the port it reports', () => {
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.ok(server.port > 0);
  const addr = server.app.server.address();
  assert.ok(addr && typeof addr === 'object' && addr.address === '127.0.0.1');
});

test('good image (multipart and raw body) -> 200 with the 5 top classes of the predictor', async () => {
  const expected = await predictor.classifyBuffer(CHELSEA, 'chelsea.jpg', 5);
  const a = await post(form(CHELSEA, 'chelsea.jpg'));
  assert.equal(a.status, 200);
  checkPrediction(a.json as unknown as DemoPrediction, 'chelsea.jpg');
  assert.deepEqual((a.json as unknown as DemoPrediction).topk, expected);

  const b = await post(COFFEE, { 'content-type': 'image/jpeg', 'x-filename': 'coffee.jpg' });
  assert.equal(b.status, 200);
  checkPrediction(b.json as unknown as DemoPrediction, 'coffee.jpg');
  assert.deepEqual((b.json as unknown as DemoPrediction).topk, await predictor.classifyBuffer(COFFEE, 'coffee.jpg', 5));
});

test('bad uploads -> 400/413/415 with a readable JSON message', async () => {
  const corrupt = await post(form(CHELSEA.subarray(0, 2000), 'cut.jpg'));
  assert.equal(corrupt.status, 400);
  assert.match(String(corrupt.json.error), /^'cut\.jpg' is not an image that can be read/);

  const text = await post(form(new TextEncoder().encode('hello, not an image'), 'notes.txt', 'image', 'text/plain'));
  assert.equal(text.status, 400);
  assert.match(String(text.json.error), /'notes\.txt' is not an image/);

  const noFile = await post((() => { const f = new FormData(); f.append('comment', 'hi'); return f; })());
  assert.equal(noFile.status, 400);
  assert.match(String(noFile.json.error), /no file in the form/);

  const empty = await post(new Uint8Array(0), { 'content-type': 'image/png' });
  assert.equal(empty.status, 400);

  // Over the 1 MB limit, multipart and raw: 413 (the rest of the body is read and discarded, so the client gets it).
  const big = new Uint8Array(1024 * 1024 + 5000).fill(7);
  const m = await post(form(big, 'big.jpg'));
  assert.equal(m.status, 413);
  assert.equal(m.json.error, 'the image is larger than the upload limit of 1 MB');
  const r = await post(big, { 'content-type': 'image/jpeg' });
  assert.equal(r.status, 413);
  assert.equal(r.json.error, 'the image is larger than the upload limit of 1 MB');

  const json = await post(new TextEncoder().encode('{"image": 1}'), { 'content-type': 'application/json' });
  assert.equal(json.status, 400);
  const xml = await post(new TextEncoder().encode('<a/>'), { 'content-type': 'application/xml' });
  assert.equal(xml.status, 415);
  assert.match(String(xml.json.error), /unsupported content type/);
});

test('wrong method -> 405 with Allow, unknown route -> 404, page served without external resources', async () => {
  const g = await fetch(new URL('api/predict', base));
  assert.equal(g.status, 405);
  assert.equal(g.headers.get('allow'), 'POST');
  assert.match(((await g.json()) as { error: string }).error, /GET is not allowed here; use POST/);
  const d = await fetch(new URL('api/predict', base), { method: 'DELETE' });
  assert.equal(d.status, 405);
  const nf = await fetch(new URL('api/nothing', base));
  assert.equal(nf.status, 404);
  assert.match(((await nf.json()) as { error: string }).error, /no such page/);

  const page = await fetch(base);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  const csp = page.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'sha256-/);
  const html = await page.text();
  assert.match(html, /<input id="file" type="file" accept="image\/\*"/);
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i, 'no external resource');
  assert.doesNotMatch(html, /@import|url\(\s*["']?(https?:)?\/\//i);

  const info = (await (await fetch(new URL('api/info', base))).json()) as Record<string, unknown>;
  assert.deepEqual(
    { model: info.model, numClasses: info.numClasses, inputSize: info.inputSize, topk: info.topk, maxUploadBytes: info.maxUploadBytes },
    { model: 'mambaout_test', numClasses: 10, inputSize: [3, 64, 64], topk: 5, maxUploadBytes: 1024 * 1024 },
  );
});

test('4 concurrent requests are all answered (queued, not dropped), and the server survives bad input', async () => {
  const expected = await predictor.classifyBuffer(CHELSEA, 'x', 5);
  const replies = await Promise.all([
    post(form(CHELSEA, 'a.jpg')),
    post(form(CHELSEA, 'b.jpg')),
    post(form(CHELSEA.subarray(0, 1000), 'bad.jpg')),
    post(form(CHELSEA, 'c.jpg')),
  ]);
  assert.deepEqual(replies.map((r) => r.status), [200, 200, 400, 200]);
  for (const [i, name] of [[0, 'a.jpg'], [1, 'b.jpg'], [3, 'c.jpg']] as const) {
    checkPrediction(replies[i].json as unknown as DemoPrediction, name);
    assert.deepEqual((replies[i].json as unknown as DemoPrediction).topk, expected);
  }
  const again = await post(form(COFFEE, 'after.jpg'));
  assert.equal(again.status, 200);
});

test('decompression bombs -> 413 with a sentence, from the header; memory stays flat and the server keeps serving', { timeout: 20_000 }, async () => {
  const info = (await (await fetch(new URL('api/info', base))).json()) as { maxImagePixels: number };
  assert.equal(info.maxImagePixels, 178_956_970);
  const bomb = pngBomb(15000, 15000); // 0.7 MB upload, 675 MB decoded
  assert.ok(bomb.length < 1024 * 1024);
  const rss0 = process.memoryUsage().rss;
  for (let i = 0; i < 5; i++) {
    const r = i % 2 ? await post(bomb, { 'content-type': 'image/png', 'x-filename': 'bomb.png' }) : await post(form(bomb, 'bomb.png', 'image', 'image/png'));
    assert.equal(r.status, 413);
    assert.match(String(r.json.error), /^'bomb\.png' is 15000x15000 pixels \(225\.0 MP\), more than this server decodes \(179\.0 MP, --max-image-pixels\); send a smaller image$/);
  }
  const grown = process.memoryUsage().rss - rss0;
  assert.ok(grown < 100e6, `RSS grew by ${(grown / 1e6).toFixed(0)} MB over 5 bombs`);
  const ok = await post(form(CHELSEA, 'chelsea.jpg'));
  assert.equal(ok.status, 200);
  checkPrediction(ok.json as unknown as DemoPrediction, 'chelsea.jpg');
});

test('a lower per-server pixel limit applies to every upload', async () => {
  const small = await startDemoServer({ predictor, port: 0, maxImagePixels: 1000 });
  try {
    const r = await fetch(new URL('api/predict', small.url), { method: 'POST', body: new Uint8Array(CHELSEA), headers: { 'content-type': 'image/jpeg' } });
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /more than this server decodes \(1000 pixels, --max-image-pixels\)/);
  } finally {
    await small.close();
  }
});

test('FifoQueue runs jobs one at a time, in submission order, past failures', async () => {
  const q = new FifoQueue();
  const log: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const job = (name: string, ms: number, fail = false) => async () => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    log.push(`start ${name}`);
    await new Promise((r) => setTimeout(r, ms));
    log.push(`end ${name}`);
    running--;
    if (fail) throw new Error(name);
    return name;
  };
  const results = await Promise.allSettled([q.run(job('a', 30)), q.run(job('b', 5, true)), q.run(job('c', 1))]);
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  assert.equal(maxRunning, 1);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  await q.drain();
  assert.equal(q.size, 0);
});
