// The UI adapters (React, Vue, Svelte, vanilla DOM) and the Next.js route helper.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import React, { act, StrictMode } from 'react';
import { renderToString } from 'react-dom/server';
import TestRenderer from 'react-test-renderer';
import { effectScope, nextTick, ref } from 'vue';
import { TokenwireClient, ManualClock, TokenStreamView } from '../src/tokenwire.js';
import { useTokenStream, useTensorStream } from '../src/react.js';
import { useTokenStream as useVueTokenStream } from '../src/vue.js';
import { tokenStream } from '../src/svelte.js';
import { proxyStream, tokenwireProxy } from '../src/next.js';
import { FakeTransport } from '../test-support/fakes.js';
import { startServer } from '../test-support/protocol-server.js';

const OPEN = { stream: 'st_1', epoch: 'e1', recovered: true, first_seq: 1, last_seq: 0, status: 'running' };
const tok = (seq, text) => ({ seq, kind: 'token', text });
const tick = () => new Promise((r) => setTimeout(r, 5));

function fakeClient() {
  const transport = new FakeTransport();
  const client = new TokenwireClient({ transport, clock: new ManualClock(), checkpoint: false });
  return { transport, client };
}

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

async function render(element) {
  let renderer;
  const original = console.error;
  console.error = (msg, ...rest) => {
    if (!String(msg).includes('react-test-renderer is deprecated')) original(msg, ...rest);
  };
  try {
    await act(async () => {
      renderer = TestRenderer.create(element);
    });
  } finally {
    console.error = original;
  }
  return renderer;
}

test('React: useTokenStream renders tokens as they arrive, once under StrictMode, and leaves on unmount', async () => {
  const { transport, client } = fakeClient();
  const seen = [];
  function Answer() {
    const s = useTokenStream({ client, streamId: 'st_1', onToken: (t) => seen.push(t) });
    return React.createElement('p', { 'data-status': s.status }, s.text);
  }
  const r = await render(React.createElement(StrictMode, null, React.createElement(Answer)));
  await act(tick);
  assert.equal(transport.connections.length, 1, 'StrictMode mount-unmount-mount keeps one stream');
  const sink = transport.last.sink;
  await act(async () => {
    sink.open(OPEN);
    sink.event(tok(1, 'Hello'));
    sink.event(tok(2, ' world'));
  });
  assert.deepEqual(r.toJSON(), { type: 'p', props: { 'data-status': 'running' }, children: ['Hello world'] });
  assert.deepEqual(seen, ['Hello', ' world']);
  await act(async () => r.unmount());
  await tick();
  assert.ok(transport.last.closed, 'unmount leaves the stream');
  assert.deepEqual(transport.cancelled, [], 'leaving is not stopping');
});

test('React: start() on demand, cancel(), and useTensorStream', async () => {
  const { transport, client } = fakeClient();
  let api;
  function Panel() {
    api = useTensorStream({ client });
    return React.createElement('p', null, `${api.status}:${api.text}`);
  }
  const r = await render(React.createElement(Panel));
  assert.deepEqual(r.toJSON().children, ['idle:']);
  assert.equal(transport.connections.length, 0);
  await act(async () => {
    api.start({ model: 'scripted', prompt: 'hi' });
  });
  await act(async () => {
    transport.last.sink.started({ id: 'st_7' });
    transport.last.sink.open(OPEN);
    transport.last.sink.event(tok(1, 'a'));
  });
  assert.deepEqual(r.toJSON().children, ['running:a']);
  await act(async () => {
    await api.cancel();
    transport.last.sink.event({ seq: 2, kind: 'cancelled', reason: 'stopped' });
  });
  assert.deepEqual(transport.cancelled, ['st_7']);
  assert.deepEqual(r.toJSON().children, ['cancelled:a']);
  assert.equal(api.tensor, null);
  await act(async () => r.unmount());
});

test('React: server rendering shows the initial snapshot and opens nothing', () => {
  const { transport, client } = fakeClient();
  function Answer() {
    const s = useTokenStream({ client, request: { model: 'm', prompt: 'p' } });
    return React.createElement('p', null, `${s.status}|${s.text}`);
  }
  assert.equal(renderToString(React.createElement(Answer)), '<p>idle|</p>');
  assert.equal(transport.connections.length, 0);
});

test('Vue: refs follow the stream; a streamId ref switches streams; scope disposal leaves', async () => {
  const { transport, client } = fakeClient();
  const id = ref('st_1');
  const scope = effectScope();
  const s = scope.run(() => useVueTokenStream({ client, streamId: id }));
  assert.equal(transport.last.target.stream, 'st_1');
  transport.last.sink.open(OPEN);
  transport.last.sink.event(tok(1, 'hi'));
  assert.equal(s.text.value, 'hi');
  assert.equal(s.status.value, 'running');
  assert.equal(s.state.value, 'connected');
  assert.equal(s.snapshot.value.lastSeq, 1);
  const first = transport.last;
  id.value = 'st_2';
  await nextTick();
  assert.ok(first.closed);
  assert.equal(transport.last.target.stream, 'st_2');
  assert.equal(s.text.value, '');
  scope.stop();
  assert.ok(transport.last.closed);
});

test('Svelte: the store contract; the stream opens with the first subscriber and is left with the last', () => {
  const { transport, client } = fakeClient();
  const store = tokenStream({ client, streamId: 'st_1' });
  assert.equal(transport.connections.length, 0, 'lazy until subscribed');
  const values = [];
  const unsubscribe = store.subscribe((v) => values.push(v));
  assert.equal(values[0].status, 'idle', 'run is called at once with the current value');
  assert.equal(transport.connections.length, 1);
  assert.equal(values[values.length - 1].state, 'connecting', 'and again when the stream opens');
  const other = store.subscribe(() => {});
  transport.last.sink.open(OPEN);
  transport.last.sink.event(tok(1, 'x'));
  assert.equal(values[values.length - 1].text, 'x');
  unsubscribe();
  assert.equal(transport.last.closed, false, 'still one subscriber');
  other();
  assert.ok(transport.last.closed);
  assert.equal(store.value.text, 'x');
});

test('TokenStreamView renders into an element and mirrors status on data attributes', () => {
  const { transport, client } = fakeClient();
  const textNode = (data) => ({
    data,
    appendData(s) {
      this.data += s;
    },
  });
  const el = {
    children: [],
    dataset: {},
    ownerDocument: { createTextNode: textNode },
    appendChild() {},
    replaceChildren(...nodes) {
      this.children = nodes;
    },
  };
  const view = new TokenStreamView(el, { client });
  view.subscribe('st_1');
  transport.last.sink.open({ ...OPEN, recovered: false, first_seq: 3 });
  transport.last.sink.event(tok(3, 'Hel'));
  transport.last.sink.event(tok(4, 'lo'));
  assert.equal(el.children[0].data, 'Hello');
  assert.equal(el.dataset.gap, 'true');
  assert.equal(el.dataset.state, 'connected');
  transport.last.sink.event({ seq: 5, kind: 'done', finish_reason: 'stop', usage: null });
  assert.equal(el.dataset.status, 'done');
  view.destroy();
});

test('Next.js helpers pass SSE through unbuffered, resumable', async () => {
  const srv = await startServer();
  try {
    const s = srv.create({});
    const res = await proxyStream(s.id, { baseUrl: srv.url, request: new Request('http://app/api?after=3') });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    assert.equal(res.headers.get('x-accel-buffering'), 'no');
    const body = await res.text();
    assert.match(body, /event: tw-open/);
    assert.doesNotMatch(body, /"seq":3,/);
    assert.match(body, /"seq":4,/);
    assert.equal(srv.requests[srv.requests.length - 1].lastEventId, '3');

    const { POST, GET } = tokenwireProxy({ baseUrl: srv.url });
    const created = await POST(new Request('http://app/api/tw/v1/streams', { method: 'POST', body: '{"model":"m"}', headers: { 'content-type': 'application/json' } }));
    assert.equal(created.status, 201);
    const { id } = await created.json();
    // The browser client, pointed at the proxy.
    const viaProxy = new TokenwireClient({
      baseUrl: 'http://app/api/tw',
      checkpoint: false,
      fetch: (url, init) => GET(new Request(url, init)),
    });
    const h = viaProxy.subscribe(id);
    for await (const _ of h);
    assert.equal(h.text, 'tok1 tok2 tok3 tok4 tok5 ');
    const missing = await GET(new Request('http://app/api/tw/v1/streams/st_nope'));
    assert.equal(missing.status, 404);
  } finally {
    await srv.close();
  }
});

test('StreamStore tracks tensor progress per chunk and the finished tensors', () => {
  const { transport, client } = fakeClient();
  const store = tokenStream({ client, streamId: 'st_1' });
  const values = [];
  const off = store.subscribe((v) => values.push(v));
  const s = transport.last.sink;
  s.open(OPEN);
  s.event({ seq: 1, kind: 'tensor.header', tensor_id: 'w', shape: [4], dtype: 'uint8', nbytes: 4, chunk_bytes: 2, chunks: 2, meta: {} });
  s.event({ seq: 2, kind: 'tensor.chunk', tensor_id: 'w', index: 0, offset: 0, data: 'AQI=' });
  assert.equal(store.value.tensorProgress.w.fraction, 0.5);
  s.event({ seq: 3, kind: 'tensor.chunk', tensor_id: 'w', index: 1, offset: 2, data: 'AwQ=' });
  s.event({ seq: 4, kind: 'tensor.end', tensor_id: 'w', checksum: null });
  assert.deepEqual([...store.value.tensors.w.array], [1, 2, 3, 4]);
  assert.equal(store.value.latestTensor, store.value.tensors.w);
  assert.deepEqual(store.value.tensorProgress, {});
  off();
});
