// The `token` option: sent as a bearer header (or ?token= where headers cannot
// go), and refreshed through refreshToken when the server says it expired.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Http } from '../src/http.js';
import { HTTPStatusError } from '../src/errors.js';

const json = (status, body) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
const expired = () => json(401, { error: { code: 'token_expired', message: 'the token has expired' } });

/** A fetch that accepts only `valid` as the bearer token, recording every call. */
function server(valid) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, auth: init.headers.Authorization });
    if (init.headers.Authorization !== `Bearer ${valid}`) return expired();
    return json(200, { id: 'st_a', status: 'running' });
  };
  return { calls, fetch };
}

test('a token goes as Authorization: Bearer, and as ?token= on WebSocket URLs', async () => {
  const { calls, fetch } = server('tw1.good');
  const http = new Http({ baseUrl: 'http://h:1', fetch, token: 'tw1.good' });
  assert.deepEqual(await http.status('st_a'), { id: 'st_a', status: 'running' });
  assert.equal(calls[0].auth, 'Bearer tw1.good');
  assert.equal(http.wsUrl('/v1/ws'), 'ws://h:1/v1/ws?token=tw1.good');
  assert.deepEqual(http.tokenQuery(), { token: 'tw1.good' });
  const plain = new Http({ baseUrl: 'http://h:1', fetch });
  assert.equal(plain.wsUrl('/v1/ws'), 'ws://h:1/v1/ws');
  assert.equal(plain.tokenQuery(), null);
  assert.deepEqual(await plain.headers(), {});
});

test('an expired token is refreshed once and the request sent again', async () => {
  const { calls, fetch } = server('tw1.new');
  let refreshes = 0;
  const http = new Http({
    baseUrl: 'http://h:1',
    fetch,
    token: 'tw1.old',
    refreshToken: async () => {
      refreshes += 1;
      return 'tw1.new';
    },
  });
  assert.equal((await http.status('st_a')).id, 'st_a');
  assert.deepEqual(calls.map((c) => c.auth), ['Bearer tw1.old', 'Bearer tw1.new']);
  assert.equal(refreshes, 1);
  await http.status('st_a');
  assert.equal(refreshes, 1, 'the new token is kept');
});

test('concurrent requests share one refresh', async () => {
  const { fetch } = server('tw1.new');
  let refreshes = 0;
  const http = new Http({
    fetch,
    token: 'tw1.old',
    refreshToken: () => {
      refreshes += 1;
      return new Promise((resolve) => setTimeout(() => resolve('tw1.new'), 5));
    },
  });
  await Promise.all([http.status('a'), http.status('b'), http.status('c')]);
  assert.equal(refreshes, 1);
});

test('without a callback, or when the new token is refused too, the 401 is the answer', async () => {
  const { calls, fetch } = server('tw1.never');
  const bare = new Http({ fetch, token: 'tw1.old' });
  await assert.rejects(bare.status('st_a'), (err) => err instanceof HTTPStatusError && err.status === 401 && err.code === 'token_expired');
  assert.equal(calls.length, 1);
  const looping = new Http({ fetch, token: 'tw1.old', refreshToken: () => 'tw1.other' });
  await assert.rejects(looping.status('st_a'), (err) => err.code === 'token_expired');
  assert.equal(calls.length, 3, 'one retry, no loop');
});

test('a 401 for another reason is not refreshed', async () => {
  let refreshes = 0;
  const fetch = async () => json(401, { error: { code: 'invalid_token', message: 'forged' } });
  const http = new Http({ fetch, token: 'tw1.x', refreshToken: () => (refreshes++, 'tw1.y') });
  await assert.rejects(http.status('st_a'), (err) => err.code === 'invalid_token');
  assert.equal(refreshes, 0);
});
