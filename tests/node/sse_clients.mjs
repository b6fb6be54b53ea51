// Reads one tokenwire stream over SSE with a popular node client, as a user of
// that client would, and prints what it saw as one JSON object on stdout:
//   {events: [{event, data, id}], opens, closedBy204}
// Used by tests/test_sse_clients.py through a proxy that cuts the connection.
//
//   node sse_clients.mjs eventsource|fetch-event-source|tokenwire BASE_URL STREAM_ID
import { EventSource } from 'eventsource';
import { fetchEventSource } from '@microsoft/fetch-event-source';
import { TokenwireClient } from '../../clients/js/src/tokenwire.js';

const [kind, base, stream] = process.argv.slice(2);
const url = `${base}/v1/streams/${stream}/events`;
const KINDS = ['token', 'progress', 'metrics', 'data', 'done', 'error', 'cancelled'];
const TERMINAL = ['done', 'error', 'cancelled'];

// A client that never finishes must not hang the test: it reports what it saw.
const deadline = setTimeout(() => finish({ timedOut: true }), 20_000);
const seen = { events: [], opens: 0, errors: 0 };

function finish(extra = {}) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify({ ...seen, ...extra }) + '\n');
  process.exit(0);
}

async function viaEventSource() {
  // The page-style usage: no close() on done. A 204 on the reconnect after the
  // end must stop it (readyState CLOSED) instead of reconnecting forever.
  const es = new EventSource(url);
  let ended = false;
  es.addEventListener('tw-open', () => (seen.opens += 1));
  for (const name of KINDS) {
    es.addEventListener(name, (e) => {
      if (typeof e.data !== 'string') return; // a connection error, not the server's event
      seen.events.push({ event: e.type, data: e.data, id: e.lastEventId });
      if (TERMINAL.includes(e.type)) ended = true;
    });
  }
  es.addEventListener('error', (e) => {
    if (typeof e.data !== 'string') seen.errors += 1;
  });
  const poll = setInterval(() => {
    if (ended && es.readyState === EventSource.CLOSED) {
      clearInterval(poll);
      finish({ closedBy204: true });
    }
  }, 20);
}

async function viaFetchEventSource() {
  // fetch-event-source is written for browsers: it reads `window` and `document`.
  globalThis.window = globalThis;
  globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };
  const ctrl = new AbortController();
  await fetchEventSource(url, {
    signal: ctrl.signal,
    openWhenHidden: true,
    onmessage(m) {
      if (m.event === 'tw-open') {
        seen.opens += 1;
        return;
      }
      seen.events.push({ event: m.event, data: m.data, id: m.id });
      if (TERMINAL.includes(m.event)) ctrl.abort();
    },
    onclose() {
      // The documented way to retry a response that ended before the terminal event.
      throw new Error('the response ended early');
    },
    onerror() {
      seen.errors += 1;
      // undefined: retry after the server's `retry:`
    },
  });
  finish();
}

async function viaTokenwire() {
  const client = new TokenwireClient({ baseUrl: base, transport: 'sse', checkpoint: false });
  const handle = client.subscribe(stream);
  for await (const ev of handle) {
    if (ev.kind === 'open') {
      seen.opens += 1;
      continue;
    }
    // The client's own events, reported in the SSE shape the other clients see.
    const { kind: k, ...rest } = ev;
    seen.events.push({ event: k, data: JSON.stringify({ kind: k, ...rest }), id: String(ev.seq ?? '') });
  }
  finish({ status: handle.status, error: handle.error ? String(handle.error) : null });
}

const run = { eventsource: viaEventSource, 'fetch-event-source': viaFetchEventSource, tokenwire: viaTokenwire }[kind];
if (!run) {
  process.stderr.write(`unknown client ${kind}\n`);
  process.exit(2);
}
run().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  finish({ failed: String(err) });
});
