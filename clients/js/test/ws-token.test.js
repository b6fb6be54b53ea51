// The WebSocket transport refreshes an expired token: at connect (the server's
// one error frame before it closes the socket) and on a socket that outlived its
// token (the subscribe answered token_expired). A scripted fake WebSocket.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Http } from '../src/http.js';
import { WebSocketTransport } from '../src/transports/ws.js';

/** A WebSocket whose server accepts only `valid()` tokens, recording what it is sent. */
function fakeSocketClass(valid, log) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.listeners = {};
      log.sockets.push(this);
      const token = new URL(url).searchParams.get('token');
      queueMicrotask(() => {
        this.readyState = 1;
        this.emit('open', {});
        if (token !== valid()) {
          this.emit('message', { data: JSON.stringify({ type: 'error', code: 'token_expired', message: 'expired' }) });
          this.readyState = 3;
          this.emit('close', { code: 1008, reason: '' });
        }
      });
    }
    addEventListener(name, fn) {
      (this.listeners[name] ??= []).push(fn);
    }
    emit(name, e) {
      for (const fn of this.listeners[name] ?? []) fn(e);
    }
    send(text) {
      const op = JSON.parse(text);
      log.ops.push(op);
      if (op.op !== 'subscribe') return;
      if (op.token !== valid()) {
        queueMicrotask(() => this.emit('message', { data: JSON.stringify({ type: 'error', code: 'token_expired', message: 'expired', stream: op.stream }) }));
        return;
      }
      queueMicrotask(() => this.emit('message', { data: JSON.stringify({ type: 'open', stream: op.stream, epoch: 'e', recovered: true, first_seq: 1, last_seq: 0, status: 'running' }) }));
    }
    close() {
      this.readyState = 3;
    }
  };
}

function sink() {
  const seen = { opened: [], ended: [] };
  let done;
  seen.settled = new Promise((resolve) => (done = resolve));
  return {
    seen,
    open: (frame) => (seen.opened.push(frame), done()),
    end: (err) => (seen.ended.push(err), done()),
    event() {},
    heartbeat() {},
    bytes() {},
    started() {},
  };
}

test('a socket refused for an expired token is reopened with the refreshed one', async () => {
  let current = 'tw1.new';
  const log = { sockets: [], ops: [] };
  let refreshes = 0;
  const http = new Http({ baseUrl: 'http://h:1', token: 'tw1.old', refreshToken: () => (refreshes++, current) });
  const ws = new WebSocketTransport(http, { WebSocket: fakeSocketClass(() => current, log) });
  const s = sink();
  ws.connect({ stream: 'st_a', after: 2 }, s);
  await s.seen.settled;
  assert.equal(s.seen.ended.length, 0);
  assert.equal(s.seen.opened[0].stream, 'st_a');
  assert.equal(refreshes, 1);
  assert.deepEqual(log.sockets.map((w) => new URL(w.url).searchParams.get('token')), ['tw1.old', 'tw1.new']);
  assert.deepEqual(log.ops.at(-1), { op: 'subscribe', stream: 'st_a', after: 2, token: 'tw1.new' });
  // A socket that outlived its token: the subscribe is answered token_expired,
  // refreshed, and sent again on the same socket.
  current = 'tw1.newer';
  const s2 = sink();
  ws.connect({ stream: 'st_b', after: 0 }, s2);
  await s2.seen.settled;
  assert.equal(s2.seen.opened[0].stream, 'st_b');
  assert.equal(refreshes, 2);
  assert.equal(log.sockets.length, 2, 'no new socket');
  assert.deepEqual(log.ops.filter((o) => o.stream === 'st_b').map((o) => o.token), ['tw1.new', 'tw1.newer']);
});

test('a refreshed token refused too, or no callback, ends the subscription with the AuthenticationError', async () => {
  const log = { sockets: [], ops: [] };
  let refreshes = 0;
  const http = new Http({ baseUrl: 'http://h:1', token: 'tw1.old', refreshToken: () => (refreshes++, `tw1.stale${refreshes}`) });
  const ws = new WebSocketTransport(http, { WebSocket: fakeSocketClass(() => 'tw1.never', log) });
  const s = sink();
  ws.connect({ stream: 'st_a' }, s);
  await s.seen.settled;
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(s.seen.ended.length, 1);
  assert.equal(s.seen.ended[0].name, 'AuthenticationError');
  assert.equal(s.seen.ended[0].code, 'token_expired');
  assert.equal(s.seen.ended[0].retryable, false);
  assert.equal(refreshes, 1, 'one refresh, no loop');

  const bare = new WebSocketTransport(new Http({ baseUrl: 'http://h:1', token: 'tw1.old' }), {
    WebSocket: fakeSocketClass(() => 'tw1.never', { sockets: [], ops: [] }),
  });
  const s2 = sink();
  bare.connect({ stream: 'st_a' }, s2);
  await s2.seen.settled;
  assert.equal(s2.seen.ended[0].code, 'token_expired');
});
