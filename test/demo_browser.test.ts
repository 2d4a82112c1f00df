/**
 * mambaout-demo in a real browser: headless Chromium (/usr/bin/chromium) driven by playwright-core opens the page,
 * uploads a photo through the file input, waits for the result list and checks it; a screenshot is saved to
 * test/.tmp/demo.png (git-ignored) for a human look.
 *
 * Without /usr/bin/chromium the test is skipped with a message, unless env CI is set (then it fails):
 * .ci/install-chromium.sh installs it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';
import { Predictor } from '../src/inference/predict.js';
import { startDemoServer, type DemoServer } from '../src/demo/server.js';
import { fixture, tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const SHOT_DIR = fileURLToPath(new URL('./.tmp/', import.meta.url));
const PHOTO = fixture('photos/chelsea.jpg');

if (!HAVE_CHROMIUM && process.env.CI) {
  test('chromium is installed', () => {
    assert.fail(`${CHROMIUM} is missing; run .ci/install-chromium.sh (CI is set, so this is not skipped)`);
  });
}

let predictor: Predictor;
let server: DemoServer;
let context: BrowserContext;
let profile: { dir: string; cleanup: () => void };

before(async () => {
  if (!HAVE_CHROMIUM) return;
  predictor = await Predictor.create({ model: 'mambaout_test', checkpoint: fixture('micro.pth'), imgSize: 64, numClasses: 10 });
  server = await startDemoServer({ predictor, port: 0 });
  profile = tempDir('mambaout-chromium-');
  context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    viewport: { width: 1100, height: 640 },
    timeout: 30_000,
  });
});

after(async () => {
  await context?.close();
  await server?.close();
  predictor?.dispose();
  profile?.cleanup();
});

test('upload a photo on the page and see five classes', { skip: HAVE_CHROMIUM ? false : `${CHROMIUM} not found; run .ci/install-chromium.sh to run this test` }, async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleErrors: string[] = [];
  const offOrigin: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:')) offOrigin.push(u);
  });

  await page.goto(server.url, { waitUntil: 'load' });
  assert.equal(await page.title(), 'MambaOut demo');
  // The info line is filled from /api/info by the page's script (proves the CSP lets the inline script run).
  await page.waitForFunction(() => /mambaout_test/.test(document.getElementById('info')?.textContent ?? ''), undefined, { timeout: 15_000 });

  await page.setInputFiles('#file', PHOTO);
  await page.waitForSelector('#results[data-state="done"] li', { timeout: 30_000 });
  const items = await page.$$eval('#results li', (lis) =>
    lis.map((li) => ({
      index: Number((li as HTMLElement).dataset.index),
      probability: Number((li as HTMLElement).dataset.probability),
      name: li.querySelector('.name')?.firstChild?.textContent ?? '',
      pct: li.querySelector('.pct')?.textContent ?? '',
    })),
  );
  assert.equal(items.length, 5);
  const expected = await predictor.classifyBuffer(await import('node:fs').then((f) => f.readFileSync(PHOTO)), 'chelsea.jpg', 5);
  assert.deepEqual(items.map((i) => i.index), expected.map((e) => e.index));
  let sum = 0;
  for (const [r, it] of items.entries()) {
    assert.ok(it.probability >= 0 && it.probability <= 1);
    if (r) assert.ok(items[r - 1].probability >= it.probability, 'list not sorted');
    assert.equal(it.name, `class_${it.index}`);
    assert.equal(it.pct, `${(it.probability * 100).toFixed(2)}%`);
    sum += it.probability;
  }
  assert.ok(sum > 0 && sum <= 1 + 1e-9, `shown probabilities sum to ${sum}`);
  const meta = await page.textContent('#meta');
  assert.match(meta ?? '', /^mambaout_test on \S+ \u2014 \d+ ms on the server, \d+ ms round trip$/);
  assert.equal(await page.isVisible('#preview'), true, 'the uploaded image is shown');
  assert.equal(await page.isVisible('#error'), false);

  // Let the bar animation finish, then keep a screenshot for humans.
  await page.waitForTimeout(500);
  mkdirSync(SHOT_DIR, { recursive: true });
  const shot = `${SHOT_DIR}demo.png`;
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 5000);

  // A file that is not an image: the server's 400 message appears on the page.
  await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image') });
  await page.waitForSelector('#error.shown', { timeout: 15_000 });
  assert.match((await page.textContent('#error')) ?? '', /'notes\.txt' is not an image that can be read/);
  assert.equal(await page.$$eval('#results li', (l) => l.length), 0);
  await page.screenshot({ path: `${SHOT_DIR}demo_error.png`, fullPage: true });

  assert.deepEqual(offOrigin, [], 'the page made no request outside its own server');
  assert.deepEqual(consoleErrors.filter((m) => !/status of 400/.test(m)), [], 'no script errors or CSP violations');
});
