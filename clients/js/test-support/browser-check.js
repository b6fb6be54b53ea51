// Load /static/tokenwire.js in a real headless Chromium (Debian's
// /usr/bin/chromium) and stream over every transport, natively: fetch
// streaming, EventSource, WebSocket. Not part of `npm test` (it needs a
// browser); run with `npm run test:browser`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { startServer, tokenScript } from './protocol-server.js';
import { crc32Hex } from '../src/crc32.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const browser = process.env.CHROMIUM ?? '/usr/bin/chromium';

const PAGE = `<!doctype html><meta charset="utf-8"><body><p id="out"></p>
<script type="module">
import { TokenwireClient, TokenStreamView, SSETransport } from '/static/tokenwire.js';
const results = {};
async function run(name, transport, make) {
  try {
    const client = new TokenwireClient({ transport, random: () => 0, checkpoint: { key: 'k_' + name } });
    const h = make(client);
    const kinds = [];
    const tensors = [];
    h.on('tensor', (ev) => tensors.push({ dtype: ev.tensor.dtype, shared: ev.tensor.shared, values: Array.from(ev.tensor.array) }));
    for await (const ev of h) kinds.push(ev.kind + (ev.seq ?? ''));
    results[name] = { text: h.text, status: h.status, kinds, tensors, transport: client.transport.constructor.name };
    client.close();
  } catch (err) {
    results[name] = { error: String(err && err.stack || err) };
  }
}
await run('sse', 'sse', (c) => c.start({ model: 'scripted', prompt: 'x' }));
await run('ndjson', 'ndjson', (c) => c.start({ model: 'scripted', prompt: 'x' }));
await run('eventsource', 'eventsource', (c) => c.start({ model: 'scripted', prompt: 'x' }));
await run('ws', 'ws', (c) => c.start({ model: 'scripted', prompt: 'x' }));
await run('ws-tensor', 'ws', (c) => c.subscribe('st_tensor'));
await run('sse-tensor', 'sse', (c) => c.subscribe('st_tensor'));
const view = new TokenStreamView(document.getElementById('out'), { random: () => 0, checkpoint: false });
view.start({ model: 'scripted', prompt: 'x' });
await view.handle.done;
results.view = { text: document.getElementById('out').textContent, status: document.getElementById('out').dataset.status };
results.crossOriginIsolated = globalThis.crossOriginIsolated;
await fetch('/report', { method: 'POST', body: JSON.stringify(results) });
</script>`;

let report;
const reported = new Promise((resolve) => (report = resolve));
const srv = await startServer({
  cutFirstAfter: 2, // every run's first connection is cut mid-stream
  staticDir: path.resolve(here, '../src'),
  extra: async (req, res, url) => {
    if (url.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html', 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' });
      res.end(PAGE);
      return true;
    }
    if (url.pathname === '/report') {
      let body = '';
      for await (const chunk of req) body += chunk;
      res.writeHead(204).end();
      report(JSON.parse(body));
      return true;
    }
    return false;
  },
});

// A tensor stream shared by the tensor runs (binary frames on WS, base64 on SSE).
const values = new Float32Array([0.5, -1.25, 3, 1e-3, 65504, -0]);
const bytes = new Uint8Array(values.buffer);
const tensor = srv.create({}, []);
srv.streams.delete(tensor.id);
tensor.id = 'st_tensor';
srv.streams.set('st_tensor', tensor);
tensor.append({ kind: 'tensor.header', tensor_id: 't', shape: [2, 3], dtype: 'float32', strides: [12, 4], byteorder: 'little', nbytes: 24, chunk_bytes: 10, chunks: 3, meta: {} });
for (let i = 0; i < 3; i++) tensor.append({ kind: 'tensor.chunk', tensor_id: 't', index: i, offset: i * 10, data: bytes.slice(i * 10, i * 10 + 10) });
tensor.append({ kind: 'tensor.end', tensor_id: 't', checksum: `crc32:${crc32Hex(bytes)}` });
tensor.append({ kind: 'done', finish_reason: 'stop', usage: null });

const profile = mkdtempSync(path.join(os.tmpdir(), 'tw-chromium-'));
const chrome = spawn(browser, [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--user-data-dir=${profile}`,
  `${srv.url}/`,
], { stdio: ['ignore', 'ignore', 'pipe'] });
let stderr = '';
chrome.stderr.on('data', (d) => (stderr += d));

const timeout = setTimeout(() => report({ error: `no report within 30 s\n${stderr.slice(-2000)}` }), 30_000);
const results = await reported;
clearTimeout(timeout);
const exited = new Promise((resolve) => chrome.once('exit', resolve));
chrome.kill();
await exited;
await srv.close();
rmSync(profile, { recursive: true, force: true, maxRetries: 5 });

const want = 'tok1 tok2 tok3 tok4 tok5 ';
const problems = [];
for (const name of ['sse', 'ndjson', 'eventsource', 'ws']) {
  const r = results[name] ?? {};
  const opens = (r.kinds ?? []).filter((k) => k === 'open').length;
  if (r.text !== want || r.status !== 'done' || opens !== 2) problems.push(`${name}: ${JSON.stringify(r)}`);
}
for (const name of ['ws-tensor', 'sse-tensor']) {
  const r = results[name] ?? {};
  const t = (r.tensors ?? [])[0];
  if (!t || JSON.stringify(t.values) !== JSON.stringify(Array.from(values))) problems.push(`${name}: ${JSON.stringify(r)}`);
}
if (results.view?.text !== want) problems.push(`view: ${JSON.stringify(results.view)}`);
console.log(JSON.stringify(results, null, 1));
if (problems.length) {
  console.error(`FAILED\n${problems.join('\n')}`);
  process.exit(1);
}
console.log('browser check passed');
