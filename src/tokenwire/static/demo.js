/**
 * The demo page: a question-and-answer stream and a live tensor view, both on
 * the browser client served at /static/tokenwire.js.
 *
 * - Send starts a generation (POST /v1/streams, or the WebSocket `start` op);
 *   Stop is a true stop (DELETE, or the WebSocket `cancel` op).
 * - A reload resumes: the client checkpoints the stream id, last seq and text
 *   in sessionStorage, and `resume()` picks up after that seq.
 * - `/?stream=st_…` (or `/#/watch/st_…`) watches a stream from its start: the
 *   watch link shown beside a running stream.
 * - Render starts the `denoise` pipeline and paints each uint8 RGB tensor.
 */

import { TokenwireClient, TokenStreamView, readCheckpoint } from './tokenwire.js';
import { describeTensor, paintTensor } from './demo-tensor.js';

const $ = (id) => document.getElementById(id);

// sessionStorage keys: the client's checkpoints, and what the page needs beside them.
const KEY = {
  chat: 'tokenwire:demo:chat',
  chatMeta: 'tokenwire:demo:chat-meta', // {stream, prompt, model, transport}
  chatCounts: 'tokenwire:demo:chat-counts', // {stream, lastSeq, tokens, ttftMs}, saved on pagehide
  image: 'tokenwire:demo:image',
  imageMeta: 'tokenwire:demo:image-meta', // {stream, transport, seed}
  prefs: 'tokenwire:demo:prefs', // {transport, model}
};

const TRANSPORT_NAMES = { sse: 'SSE', ws: 'WebSocket', ndjson: 'NDJSON' };
const STATE_LABELS = {
  idle: 'Ready',
  connecting: 'Connecting…',
  connected: 'Live',
  reconnecting: 'Reconnecting…',
  error: 'Connection failed',
  closed: 'Closed',
};
const END_LABELS = { done: 'Done', cancelled: 'Stopped', error: 'Error', closed: 'Left' };

const query = new URLSearchParams(location.search);
// Every URL is relative to the page, so the demo works where the app is mounted
// (`host.mount('/tw', create_app())` serves it at /tw/).
const BASE_URL = new URL('.', location.href).pathname.replace(/\/+$/, '');

const session = {
  get(key) {
    try {
      const raw = sessionStorage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      sessionStorage.setItem(key, JSON.stringify(value));
    } catch {
      // private mode or quota: the page still works, it just forgets on reload
    }
  },
  remove(key) {
    try {
      sessionStorage.removeItem(key);
    } catch {
      // as above
    }
  },
};

// One client per transport: a WebSocket client multiplexes its streams on one socket.
const clients = new Map();
function clientFor(transport) {
  const name = TRANSPORT_NAMES[transport] ? transport : 'sse';
  let client = clients.get(name);
  if (!client) clients.set(name, (client = new TokenwireClient({ transport: name, checkpoint: false, baseUrl: BASE_URL })));
  return client;
}

// -- settings -----------------------------------------------------------------------

const prefs = { transport: 'sse', model: null, ...(session.get(KEY.prefs) || {}) };

function selectedTransport() {
  const checked = document.querySelector('input[name="transport"]:checked');
  return checked ? checked.value : 'sse';
}

function savePrefs() {
  session.set(KEY.prefs, { transport: selectedTransport(), model: $('model').value || null });
}

function numberField(id, fallback) {
  const value = Number($(id).value);
  return $(id).value !== '' && Number.isFinite(value) ? value : fallback;
}

function chatRequest(prompt) {
  const model = $('model').value;
  const request = { messages: [{ role: 'user', content: prompt }], max_tokens: Math.round(numberField('max-tokens', 256)) };
  if (model) request.model = model;
  const temperature = numberField('temperature', null);
  if (temperature !== null) request.temperature = temperature;
  // Only the scripted model has a token delay (it paces a deterministic stream).
  if (model === 'scripted') request.delay_ms = numberField('delay-ms', 0);
  // Real models report each token's candidates (a backend without them just omits them).
  else request.top_logprobs = TOP_LOGPROBS;
  return request;
}

function imageParams() {
  const int = (name, fallback) => {
    const v = Number(query.get(name));
    return query.has(name) && Number.isInteger(v) ? v : fallback;
  };
  return {
    width: int('image_size', 256),
    height: int('image_size', 256),
    steps: int('image_steps', 40),
    delay_ms: int('image_delay_ms', 60),
    seed: int('image_seed', Math.floor(Math.random() * 2 ** 31)),
  };
}

// -- formatting ----------------------------------------------------------------------

function formatMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  return ms < 10 ? `${ms.toFixed(1)} ms` : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function formatRate(perSec) {
  if (perSec == null || !Number.isFinite(perSec) || perSec <= 0) return '—';
  return `${perSec < 100 ? perSec.toFixed(1) : Math.round(perSec)} tok/s`;
}

function statusLabel(handle) {
  if (!handle) return 'Ready';
  if (handle.finished) return END_LABELS[handle.status] ?? handle.status;
  if (handle.status === 'pending' && handle.state === 'connecting') return 'Starting…';
  return STATE_LABELS[handle.state] ?? handle.state;
}

function setStatus(el, handle) {
  el.dataset.state = handle ? handle.state : 'idle';
  el.dataset.status = handle ? handle.status : 'idle';
  el.textContent = statusLabel(handle);
}

function setProgress(el, ev) {
  const value = typeof ev.progress === 'number' ? Math.max(0, Math.min(1, ev.progress)) : null;
  el.hidden = false;
  el.querySelector('.progress-fill').style.width = `${value === null ? 100 : value * 100}%`;
  el.querySelector('.progress-label').textContent = ev.message || ev.stage || (value === null ? '' : `${Math.round(value * 100)}%`);
  if (value === null) el.removeAttribute('aria-valuenow');
  else el.setAttribute('aria-valuenow', String(Math.round(value * 100)));
}

function resetProgress(el, label, hide) {
  el.hidden = hide;
  el.querySelector('.progress-fill').style.width = '0%';
  el.querySelector('.progress-label').textContent = label;
  el.setAttribute('aria-valuenow', '0');
}

function watchUrl(streamId) {
  return `${location.origin}${location.pathname}?stream=${encodeURIComponent(streamId)}`;
}

function showShare(link, streamId) {
  if (!streamId) {
    link.hidden = true;
    link.removeAttribute('href');
    return;
  }
  link.href = watchUrl(streamId);
  link.target = '_blank';
  link.rel = 'noopener';
  link.hidden = false;
}

// Leaving a watched stream for one's own: the URL must no longer say "watch".
function dropWatchFromUrl() {
  if (!query.has('stream') && !location.hash.startsWith('#/watch/')) return;
  query.delete('stream');
  const search = query.toString();
  history.replaceState(null, '', `${location.pathname}${search ? `?${search}` : ''}`);
}

// -- the answer ---------------------------------------------------------------------

const chat = {
  handle: null,
  info: {},
  // What the counters showed before a reload: a resumed handle counts only the
  // tokens after the saved seq, and has no time to first token of its own.
  carried: { tokens: 0, ttftMs: null },
  offs: [],
  frame: 0,
  view: new TokenStreamView($('output'), { client: clientFor('sse'), onRender: () => scheduleChatRender() }),
};

function startChat(prompt) {
  const transport = selectedTransport();
  const request = chatRequest(prompt);
  dropWatchFromUrl();
  session.remove(KEY.chat);
  session.remove(KEY.chatMeta);
  session.remove(KEY.chatCounts);
  const handle = clientFor(transport).start(request, { checkpoint: { key: KEY.chat } });
  attachChat(handle, { prompt, transport, model: request.model ?? null });
  handle.ready
    .then((id) => session.set(KEY.chatMeta, { stream: id, prompt, model: request.model ?? null, transport }))
    .catch(() => {});
}

function attachChat(handle, info) {
  for (const off of chat.offs) off();
  chat.handle = handle;
  chat.info = info;
  chat.carried = info.carried ?? { tokens: 0, ttftMs: null };
  const output = $('output');
  delete output.dataset.error;
  delete output.dataset.stream;
  chat.view.attach(handle); // leaves the previous stream, if any
  $('question').textContent = info.prompt ?? '';
  $('question').hidden = !info.prompt;
  $('watch-badge').hidden = !info.watching;
  $('notice').textContent = info.notice ?? '';
  $('notice').hidden = !info.notice;
  $('empty').hidden = true;
  resetProgress($('chat-progress'), '', true);
  showShare($('share'), null);
  $('copy-share').hidden = true;
  chat.offs = [
    handle.on('progress', (ev) => setProgress($('chat-progress'), ev)),
    handle.on('metrics', () => scheduleChatRender()),
    handle.on('token', (ev) => showCandidates(ev)),
    handle.on('end', (result) => chatEnded(handle, result)),
  ];
  handle.ready
    .then((id) => {
      if (chat.handle !== handle) return;
      output.dataset.stream = id;
      showShare($('share'), id);
      $('copy-share').hidden = false;
    })
    .catch(() => {});
  showCandidates(null);
  renderChat();
}

function chatEnded(handle, result) {
  if (chat.handle !== handle) return;
  const output = $('output');
  if (result.status === 'error') {
    const gone = result.error && result.error.status === 404;
    if (gone && chat.info.restoring) {
      // The answer shown before the reload has expired on the server: start clean.
      session.remove(KEY.chatMeta);
      resetChat();
      return;
    }
    output.dataset.error = gone ? 'This stream is no longer available on the server.' : (result.error?.message ?? 'The stream failed.');
    if (gone) {
      showShare($('share'), null);
      $('copy-share').hidden = true;
    }
  }
  renderChat();
}

function resetChat() {
  for (const off of chat.offs) off();
  chat.offs = [];
  chat.view.detach(true);
  chat.handle = null;
  chat.info = {};
  chat.carried = { tokens: 0, ttftMs: null };
  const output = $('output');
  output.replaceChildren();
  output.dataset.status = 'idle';
  delete output.dataset.stream;
  $('question').hidden = true;
  $('notice').hidden = true;
  $('watch-badge').hidden = true;
  $('empty').hidden = false;
  showShare($('share'), null);
  $('copy-share').hidden = true;
  showCandidates(null);
  renderChat();
}

function scheduleChatRender() {
  if (chat.frame) return;
  chat.frame = requestAnimationFrame(() => {
    chat.frame = 0;
    renderChat();
  });
}

function renderChat() {
  const handle = chat.handle;
  setStatus($('status'), handle);
  const running = Boolean(handle && !handle.finished);
  $('stop').disabled = !running;
  $('send').disabled = running;
  const stats = handle ? handle.stats : null;
  const server = (stats && stats.server) || {};
  const cell = (name) => $('stats').querySelector(`[data-stat="${name}"]`);
  const carried = chat.carried;
  cell('ttft').textContent = formatMs(stats ? carried.ttftMs ?? stats.ttftMs ?? server.ttft_ms : null);
  cell('tps').textContent = formatRate(stats ? stats.tokensPerSec ?? server.tokens_per_s : null);
  cell('tokens').textContent = String(server.tokens ?? carried.tokens + (stats ? stats.tokens : 0));
  cell('transport').textContent = handle ? TRANSPORT_NAMES[chat.info.transport] ?? '—' : '—';
  // Keep the newest tokens in view while streaming, unless the reader scrolled up.
  const box = $('transcript');
  if (running && box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

// -- the latest token's candidates (top_logprobs), a bar chart under the text ---------

const TOP_LOGPROBS = 5;
const candidates = { box: null, latest: null, frame: 0 };

function candidatesBox() {
  if (!candidates.box) {
    const box = document.createElement('figure');
    box.id = 'candidates';
    box.className = 'candidates';
    box.hidden = true;
    $('output').after(box);
    candidates.box = box;
  }
  return candidates.box;
}

/** Called per token event (null: clear). Drawn at most once a frame, like the stats. */
function showCandidates(ev) {
  if (ev && !(Array.isArray(ev.top_logprobs) && ev.top_logprobs.length)) return;
  candidates.latest = ev;
  if (candidates.frame) return;
  candidates.frame = requestAnimationFrame(() => {
    candidates.frame = 0;
    renderCandidates();
  });
}

function shownToken(token) {
  const text = String(token).replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/ /g, '·');
  return text || '∅';
}

function percent(logprob) {
  const p = Math.exp(logprob) * 100;
  return p >= 10 ? `${p.toFixed(0)}%` : `${p.toFixed(1)}%`;
}

function renderCandidates() {
  const box = candidatesBox();
  const ev = candidates.latest;
  if (!ev) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const caption = document.createElement('figcaption');
  caption.textContent = `Candidates for “${shownToken(ev.text)}”`;
  const chosen = document.createElement('span');
  chosen.className = 'cand-chosen-p';
  chosen.textContent = typeof ev.logprob === 'number' ? ` · chosen at ${percent(ev.logprob)}` : '';
  caption.append(chosen);
  const rows = ev.top_logprobs.map((c) => {
    const row = document.createElement('div');
    row.className = 'cand-row';
    if (c.token === ev.text) row.dataset.chosen = 'true';
    const label = document.createElement('span');
    label.className = 'cand-token';
    label.textContent = shownToken(c.token);
    const bar = document.createElement('span');
    bar.className = 'cand-bar';
    const fill = document.createElement('span');
    fill.className = 'cand-fill';
    fill.style.width = `${Math.max(1, Math.min(100, Math.exp(c.logprob) * 100))}%`;
    bar.append(fill);
    const value = document.createElement('span');
    value.className = 'cand-p';
    value.textContent = percent(c.logprob);
    row.append(label, bar, value);
    return row;
  });
  box.setAttribute('aria-label', caption.textContent);
  box.replaceChildren(caption, ...rows);
  box.hidden = false;
}

// -- the live tensor ------------------------------------------------------------------

const image = { handle: null, info: {}, offs: [], available: true };

function startImage() {
  const transport = selectedTransport();
  const params = imageParams();
  session.remove(KEY.image);
  const handle = clientFor(transport).start(
    { pipeline: 'denoise', params },
    { checkpoint: { key: KEY.image, text: false } },
  );
  attachImage(handle, { transport, seed: params.seed });
  handle.ready.then((id) => session.set(KEY.imageMeta, { stream: id, transport, seed: params.seed })).catch(() => {});
}

function attachImage(handle, info) {
  for (const off of image.offs) off();
  if (image.handle && !image.handle.finished) image.handle.close();
  image.handle = handle;
  image.info = info;
  resetProgress($('progress'), 'Starting…', false);
  showShare($('image-share'), null);
  image.offs = [
    handle.on('progress', (ev) => setProgress($('progress'), ev)),
    handle.on('tensor', (ev) => showTensor(ev.tensor)),
    handle.on('state', () => renderImage()),
    handle.on('open', () => renderImage()),
    handle.on('end', () => renderImage()),
  ];
  handle.ready
    .then((id) => {
      if (image.handle === handle) showShare($('image-share'), id);
    })
    .catch(() => {});
  renderImage();
}

function showTensor(tensor) {
  const canvas = $('tensor');
  const caption = $('tensor-caption');
  if (!paintTensor(canvas, tensor)) {
    caption.textContent = `Received a tensor that is not an image: ${describeTensor(tensor)}.`;
    return;
  }
  $('canvas-wrap').dataset.empty = 'false';
  const { step, steps } = tensor.meta || {};
  canvas.dataset.step = step ?? '';
  canvas.dataset.steps = steps ?? '';
  caption.innerHTML = `<b>${escapeHtml(tensor.tensorId)}</b> · ${escapeHtml(describeTensor(tensor))}`;
}

function renderImage() {
  const handle = image.handle;
  setStatus($('image-status'), handle);
  const button = $('render');
  const running = Boolean(handle && !handle.finished);
  button.disabled = !image.available;
  button.textContent = running ? 'Stop rendering' : handle ? 'Render another' : 'Render an image';
  button.classList.toggle('primary', !running);
  button.classList.toggle('secondary', running);
  if (handle && handle.finished && handle.status !== 'done') {
    $('progress').querySelector('.progress-label').textContent = END_LABELS[handle.status] ?? handle.status;
  }
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// -- the server -------------------------------------------------------------------------

async function loadServer() {
  const select = $('model');
  let health = null;
  try {
    const res = await fetch(`${BASE_URL}/healthz`, { cache: 'no-store' });
    if (res.ok) health = await res.json();
  } catch {
    // shown below
  }
  let models = health && Array.isArray(health.models) ? health.models : null;
  if (!models) {
    try {
      const res = await fetch(`${BASE_URL}/v1/models`, { cache: 'no-store' });
      if (res.ok) models = (await res.json()).data.map((m) => m.id);
    } catch {
      // no list: the server's default model answers
    }
  }
  const fallback = health?.default_model ?? null;
  select.replaceChildren();
  if (!models || !models.length) {
    select.append(new Option('Server default', ''));
  } else {
    for (const name of models) select.append(new Option(name === fallback ? `${name} (default)` : name, name));
    const wanted = [query.get('model'), prefs.model, fallback].find((m) => m && models.includes(m));
    select.value = wanted ?? models[0];
  }
  syncModelFields();

  const server = $('server');
  server.dataset.health = health ? 'ok' : 'down';
  $('server-label').textContent = health
    ? `Server online · ${models ? models.length : 0} model${models && models.length === 1 ? '' : 's'}`
    : 'Server unreachable';

  // The tensor view needs the denoise pipeline; older servers do not list pipelines.
  const pipelines = health && Array.isArray(health.pipelines) ? health.pipelines : null;
  image.available = pipelines === null || pipelines.includes('denoise');
  if (!image.available) {
    $('tensor-caption').textContent = 'This server has no denoise pipeline, so there is no image to stream.';
  }
  renderImage();
}

function syncModelFields() {
  $('delay-field').hidden = $('model').value !== 'scripted';
}

// -- start-up ---------------------------------------------------------------------------

function applyQuerySettings() {
  const transport = query.get('transport') ?? prefs.transport;
  const radio = document.querySelector(`input[name="transport"][value="${CSS.escape(transport ?? 'sse')}"]`);
  if (radio) radio.checked = true;
  for (const [param, id] of [
    ['max_tokens', 'max-tokens'],
    ['delay_ms', 'delay-ms'],
    ['temperature', 'temperature'],
  ]) {
    if (query.has(param)) $(id).value = query.get(param);
  }
  if (query.has('prompt')) $('prompt').value = query.get('prompt');
}

function watchedStreamId() {
  const fromQuery = query.get('stream');
  if (fromQuery) return fromQuery;
  const m = location.hash.match(/^#\/watch\/([\w-]+)$/);
  return m ? m[1] : null;
}

async function watch(streamId) {
  const client = clientFor(selectedTransport());
  let info = null;
  try {
    info = await client.status(streamId);
  } catch (err) {
    attachChat(client.subscribe(streamId, { checkpoint: false }), {
      watching: true,
      transport: selectedTransport(),
      notice: err && err.status === 404 ? null : `Watching ${streamId}.`,
    });
    return;
  }
  const options = { checkpoint: false };
  if (info.model && info.model.startsWith('pipeline:')) {
    attachImage(client.subscribe(streamId, options), { watching: true, transport: selectedTransport() });
    return;
  }
  attachChat(client.subscribe(streamId, options), {
    watching: true,
    transport: selectedTransport(),
    notice: `Following a stream from ${info.model || 'the server'} live, from its first token.`,
  });
}

/** The counters to carry over for a stream resumed after `lastSeq` (null: a replay from the start). */
function carriedCounts(streamId, lastSeq) {
  const saved = session.get(KEY.chatCounts);
  const same = saved && saved.stream === streamId;
  if (lastSeq === null) return { tokens: 0, ttftMs: same ? saved.ttftMs ?? null : null };
  if (same && saved.lastSeq === lastSeq) return { tokens: saved.tokens, ttftMs: saved.ttftMs ?? null };
  // No matching save (the tab was killed, not reloaded): before its end a chat
  // stream holds only tokens, one seq each, so the saved seq is the count.
  return { tokens: lastSeq, ttftMs: same ? saved.ttftMs ?? null : null };
}

function saveCounts() {
  const handle = chat.handle;
  if (!handle || !handle.id) return;
  const stats = handle.stats;
  session.set(KEY.chatCounts, {
    stream: handle.id,
    lastSeq: handle.lastSeq,
    tokens: chat.carried.tokens + stats.tokens,
    ttftMs: chat.carried.ttftMs ?? stats.ttftMs ?? stats.server?.ttft_ms ?? null,
  });
}

function restore() {
  const chatMeta = session.get(KEY.chatMeta);
  const chatCp = readCheckpoint(KEY.chat);
  if (chatCp) {
    // Mid-answer when the page went away: show the saved text, resume after its seq.
    const transport = chatMeta?.transport ?? selectedTransport();
    const handle = clientFor(transport).resume(KEY.chat, { checkpoint: { key: KEY.chat } });
    if (handle) {
      attachChat(handle, {
        prompt: chatMeta?.stream === chatCp.stream ? chatMeta.prompt : null,
        transport,
        notice: 'Picked up where the page left off: nothing lost, nothing repeated.',
        carried: carriedCounts(chatCp.stream, typeof chatCp.text === 'string' ? chatCp.lastSeq : 0),
      });
    }
  } else if (chatMeta && chatMeta.stream) {
    // The answer had finished: replay it (the server keeps it for a while).
    const handle = clientFor(chatMeta.transport).subscribe(chatMeta.stream, { checkpoint: false });
    attachChat(handle, {
      prompt: chatMeta.prompt,
      transport: chatMeta.transport,
      restoring: true,
      carried: carriedCounts(chatMeta.stream, null),
    });
  }

  const imageMeta = session.get(KEY.imageMeta);
  const imageCp = readCheckpoint(KEY.image);
  if (imageCp && imageMeta && imageMeta.stream === imageCp.stream) {
    // Resume after the last seq seen: the tensor that was in flight is skipped, the next step paints.
    const handle = clientFor(imageMeta.transport).subscribe(imageCp.stream, {
      after: imageCp.lastSeq,
      checkpoint: { key: KEY.image, text: false },
    });
    attachImage(handle, imageMeta);
  }
}

function wire() {
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const prompt = $('prompt').value.trim();
    if (!prompt) {
      $('prompt').focus();
      return;
    }
    if (chat.handle && !chat.handle.finished) return;
    startChat(prompt);
    $('prompt').value = '';
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => {
    if (chat.handle) chat.handle.cancel();
  });
  $('copy-share').addEventListener('click', async () => {
    const button = $('copy-share');
    try {
      await navigator.clipboard.writeText($('share').href);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed';
    }
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  });
  $('render').addEventListener('click', () => {
    if (image.handle && !image.handle.finished) image.handle.cancel();
    else startImage();
  });
  $('model').addEventListener('change', () => {
    syncModelFields();
    savePrefs();
  });
  for (const radio of document.querySelectorAll('input[name="transport"]')) radio.addEventListener('change', savePrefs);
  // Leaving the page is a leave, not a stop: flush the checkpoints so a reload resumes.
  addEventListener('pagehide', () => {
    if (chat.handle && !chat.handle.finished) chat.handle.close();
    // After close(): its checkpoint was just written with the same lastSeq.
    saveCounts();
    if (image.handle && !image.handle.finished) image.handle.close();
  });
}

applyQuerySettings();
wire();
renderChat();
renderImage();
const watched = watchedStreamId();
if (watched) watch(watched);
else restore();
loadServer();
