// The Next.js route helpers pass through the headers a client needs after the
// proxy: the stream id (an OpenAI client resumes from it), the stream tokens, the
// AI SDK's protocol marker, Retry-After; and forward the chat token upstream.
import assert from 'node:assert/strict';
import test from 'node:test';

import { proxyStream, tokenwireProxy } from '../src/next.js';

function upstream(headers, seen) {
  return async (url, init) => {
    seen.push({ url, headers: init.headers });
    return new Response('data: {}\n\n', { status: 200, headers });
  };
}

test('tokenwireProxy keeps the stream and AI SDK headers', async () => {
  const seen = [];
  const headers = {
    'content-type': 'text/event-stream; charset=utf-8',
    'x-tokenwire-stream': 'st_abc',
    'x-tokenwire-read-token': 'r.1',
    'x-tokenwire-control-token': 'c.1',
    'x-vercel-ai-ui-message-stream': 'v1',
    'x-internal-secret': 'never forwarded',
  };
  const { POST } = tokenwireProxy({ baseUrl: 'http://tw:8000/', fetch: upstream(headers, seen) });
  const res = await POST(
    new Request('http://app/api/tw/v1/chat/completions', {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json', 'x-tokenwire-chat-token': 'chat.1' },
    }),
  );
  assert.equal(res.headers.get('x-tokenwire-stream'), 'st_abc');
  assert.equal(res.headers.get('x-tokenwire-read-token'), 'r.1');
  assert.equal(res.headers.get('x-tokenwire-control-token'), 'c.1');
  assert.equal(res.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
  assert.equal(res.headers.get('x-accel-buffering'), 'no');
  assert.equal(res.headers.get('x-internal-secret'), null);
  assert.equal(seen[0].url, 'http://tw:8000/v1/chat/completions');
  assert.equal(seen[0].headers['x-tokenwire-chat-token'], 'chat.1');
});

test('proxyStream keeps X-Tokenwire-Stream and Retry-After', async () => {
  const seen = [];
  const headers = { 'content-type': 'application/json', 'retry-after': '3', 'x-tokenwire-stream': 'st_x' };
  const res = await proxyStream('st_x', { baseUrl: 'http://tw', fetch: upstream(headers, seen) });
  assert.equal(res.headers.get('retry-after'), '3');
  assert.equal(res.headers.get('x-tokenwire-stream'), 'st_x');
});
