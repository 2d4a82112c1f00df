/**
 * The demo's single web page, kept as strings so it is found the same way from src/ (tsx) and dist/ (compiled).
 *
 * Self-contained: inline CSS and JS, no external resources (no CDN, no web fonts); the favicon is a data: URL so
 * the browser does not even ask for /favicon.ico. The server sends a Content-Security-Policy that allows exactly
 * this inline script and style (by SHA-256 hash) and same-origin requests, nothing else.
 *
 * Behaviour: pick, drop or paste an image -> preview -> POST /api/predict (multipart field `image`) -> the top-k
 * classes as a list with probability bars, the model/engine and the time taken (server and round trip). Errors from
 * the server (413 too large, 400 not an image, ...) are shown in a red box. Class names are inserted with
 * textContent, never as HTML.
 */
import { createHash } from 'node:crypto';

const CSS = `
:root { color-scheme: light; --accent: #2f6fde; --bg: #f5f6f8; --card: #fff; --text: #1d2330; --muted: #5d6575; --border: #d9dde5; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; background: var(--bg); color: var(--text); }
header { padding: 18px 28px 10px; }
h1 { margin: 0; font-size: 22px; font-weight: 650; }
#info { margin-top: 4px; color: var(--muted); font-size: 13px; }
main { display: grid; grid-template-columns: minmax(280px, 1fr) minmax(300px, 1fr); gap: 20px; padding: 10px 28px 28px; max-width: 1100px; }
@media (max-width: 760px) { main { grid-template-columns: 1fr; } }
.card { background: var(--card); border: 1px solid var(--border); border-radius: 10px; padding: 16px; }
.card h2 { margin: 0 0 12px; font-size: 15px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
#drop { position: relative; display: flex; align-items: center; justify-content: center; min-height: 300px; border: 2px dashed var(--border);
  border-radius: 8px; background: #fafbfc; cursor: pointer; overflow: hidden; text-align: center; transition: border-color .15s, background .15s; }
#drop.over { border-color: var(--accent); background: #eef3fd; }
#drop:focus-within { border-color: var(--accent); }
#drop input[type=file] { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0; cursor: pointer; }
#hint { color: var(--muted); padding: 20px; pointer-events: none; }
#hint strong { color: var(--accent); }
#preview { display: none; max-width: 100%; max-height: 420px; object-fit: contain; pointer-events: none; }
#drop.has-image #preview { display: block; }
#drop.has-image #hint { display: none; }
#filename { margin-top: 8px; color: var(--muted); font-size: 13px; min-height: 1.4em; word-break: break-all; }
#status { color: var(--muted); min-height: 1.4em; }
#error { display: none; margin: 0 0 12px; padding: 10px 12px; border-radius: 6px; background: #fdecec; color: #9b1c1c; border: 1px solid #f5c2c2; }
#error.shown { display: block; }
#results { list-style: none; margin: 0; padding: 0; }
#results li { margin: 0 0 12px; }
.row { display: flex; justify-content: space-between; gap: 12px; font-size: 14px; }
.name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.name .idx { color: var(--muted); font-size: 12px; margin-left: 4px; }
.pct { font-variant-numeric: tabular-nums; color: var(--muted); flex: none; }
.bar { height: 10px; margin-top: 4px; border-radius: 5px; background: #e7eaf0; overflow: hidden; }
.bar > span { display: block; height: 100%; width: 0; border-radius: 5px; background: var(--accent); transition: width .35s ease-out; }
#results li:first-child .bar > span { background: #1f9d55; }
#meta { margin-top: 6px; color: var(--muted); font-size: 13px; min-height: 1.4em; }
footer { padding: 0 28px 20px; color: var(--muted); font-size: 12px; }
`;

const JS = `
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var drop = $('drop'), input = $('file'), preview = $('preview'), results = $('results');
  var errorBox = $('error'), statusEl = $('status'), meta = $('meta'), info = $('info'), filename = $('filename');
  var hint = $('hint'), hintDefault = document.createDocumentFragment();
  Array.prototype.slice.call(hint.childNodes).forEach(function (n) { hintDefault.appendChild(n.cloneNode(true)); });
  var maxBytes = 0, previewUrl = null, seq = 0;

  function fmtBytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1).replace(/\\.0$/, '') + ' MB';
    return n >= 1024 ? Math.round(n / 1024) + ' KB' : n + ' bytes';
  }
  function showError(msg) { errorBox.textContent = msg; errorBox.classList.add('shown'); }
  function clearError() { errorBox.textContent = ''; errorBox.classList.remove('shown'); }

  fetch('api/info').then(function (r) { return r.json(); }).then(function (d) {
    maxBytes = d.maxUploadBytes || 0;
    info.textContent = d.model + ' \\u00b7 ' + d.engine + ' \\u00b7 ' + d.numClasses + ' classes \\u00b7 input ' +
      d.inputSize[1] + '\\u00d7' + d.inputSize[2] + ' \\u00b7 uploads up to ' + fmtBytes(maxBytes);
  }).catch(function () { info.textContent = 'model information unavailable'; });

  function render(data, roundTripMs) {
    results.textContent = '';
    data.topk.forEach(function (t) {
      var li = document.createElement('li');
      li.dataset.index = String(t.index);
      li.dataset.probability = String(t.probability);
      var row = document.createElement('div'); row.className = 'row';
      var name = document.createElement('span'); name.className = 'name'; name.textContent = t.name; name.title = t.name;
      var idx = document.createElement('span'); idx.className = 'idx'; idx.textContent = '#' + t.index; name.appendChild(idx);
      var pct = document.createElement('span'); pct.className = 'pct'; pct.textContent = (t.probability * 100).toFixed(2) + '%';
      row.appendChild(name); row.appendChild(pct);
      var bar = document.createElement('div'); bar.className = 'bar';
      var fill = document.createElement('span'); bar.appendChild(fill);
      li.appendChild(row); li.appendChild(bar);
      results.appendChild(li);
      requestAnimationFrame(function () { fill.style.width = Math.max(0, Math.min(100, t.probability * 100)).toFixed(2) + '%'; });
    });
    meta.textContent = data.model + ' on ' + data.engine + ' \\u2014 ' + data.ms.toFixed(0) + ' ms on the server, ' +
      roundTripMs.toFixed(0) + ' ms round trip';
    results.dataset.state = 'done';
  }

  function classify(file) {
    if (!file) return;
    clearError();
    results.textContent = ''; meta.textContent = ''; results.dataset.state = 'busy';
    filename.textContent = (file.name || 'pasted image') + ' (' + fmtBytes(file.size) + ')';
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    drop.classList.add('has-image');
    if (maxBytes && file.size > maxBytes) {
      results.dataset.state = 'error';
      showError('This file is ' + fmtBytes(file.size) + '; the server accepts images up to ' + fmtBytes(maxBytes) + '.');
      return;
    }
    var mine = ++seq;
    statusEl.textContent = 'Classifying\\u2026';
    var form = new FormData();
    form.append('image', file, file.name || 'image');
    var t0 = performance.now();
    fetch('api/predict', { method: 'POST', body: form }).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
        if (!r.ok) throw new Error((body && body.error) || ('The server answered ' + r.status + '.'));
        if (!body || !body.topk) throw new Error('The server sent an unexpected answer.');
        return body;
      });
    }).then(function (data) {
      if (mine !== seq) return;
      statusEl.textContent = '';
      render(data, performance.now() - t0);
    }).catch(function (e) {
      if (mine !== seq) return;
      statusEl.textContent = '';
      results.dataset.state = 'error';
      showError(e && e.message ? e.message : String(e));
    });
  }

  // Not every file the server can read has a browser preview (e.g. TIFF), and non-images have none.
  preview.addEventListener('error', function () { drop.classList.remove('has-image'); hint.textContent = 'No preview for this file.'; });
  preview.addEventListener('load', function () { hint.textContent = ''; hint.appendChild(hintDefault.cloneNode(true)); });

  input.addEventListener('change', function () { if (input.files && input.files[0]) classify(input.files[0]); input.value = ''; });
  ['dragenter', 'dragover'].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add('over'); });
  });
  ['dragleave', 'dragend', 'drop'].forEach(function (ev) {
    drop.addEventListener(ev, function () { drop.classList.remove('over'); });
  });
  drop.addEventListener('drop', function (e) {
    e.preventDefault();
    var f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) classify(f);
  });
  // A file dropped outside the drop zone must not navigate away from the page.
  window.addEventListener('dragover', function (e) { e.preventDefault(); });
  window.addEventListener('drop', function (e) { e.preventDefault(); });
  document.addEventListener('paste', function (e) {
    var items = (e.clipboardData && e.clipboardData.files) || [];
    if (items.length) classify(items[0]);
  });
})();
`;

const BODY = `<header>
  <h1>MambaOut image classification</h1>
  <div id="info">loading model information&hellip;</div>
</header>
<main>
  <section class="card">
    <h2>Image</h2>
    <label id="drop" for="file">
      <input id="file" type="file" accept="image/*" aria-label="Choose an image">
      <span id="hint"><strong>Drop an image here</strong><br>or click to choose a file (you can also paste one)</span>
      <img id="preview" alt="the uploaded image">
    </label>
    <div id="filename"></div>
  </section>
  <section class="card">
    <h2>Top classes</h2>
    <div id="error" role="alert"></div>
    <div id="status" aria-live="polite"></div>
    <ol id="results" data-state="idle"></ol>
    <div id="meta"></div>
  </section>
</main>
<footer>Runs locally: images are sent only to this server and are not stored.</footer>`;

export const DEMO_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MambaOut demo</title>
<link rel="icon" href="data:,">
<style>${CSS}</style>
</head>
<body>
${BODY}
<script>${JS}</script>
</body>
</html>
`;

const sha256 = (s: string): string => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

/**
 * Content-Security-Policy for the page: only its own inline style and script (pinned by hash), images from
 * blob:/data: (the preview) and same-origin fetches.
 */
export const DEMO_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256(JS)}`,
  `style-src ${sha256(CSS)}`,
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');
