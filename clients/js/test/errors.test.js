import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as tw from '../src/tokenwire.js';

test('an HTTP answer and a WebSocket error frame become the same classes', () => {
  const http = tw.statusError(404, 'not_found', 'gone', { method: 'GET', url: '/v1/streams/st_x' });
  const frame = tw.codeError('not_found', 'gone', { requestId: 7, stream: 'st_x' });
  for (const err of [http, frame]) {
    assert.ok(err instanceof tw.StreamNotFoundError);
    assert.ok(err instanceof tw.HTTPStatusError);
    assert.ok(err instanceof tw.ClientError);
    assert.ok(err instanceof tw.TokenwireError);
    assert.equal(err.status, 404);
    assert.equal(err.name, 'StreamNotFoundError');
    assert.equal(err.retryable, false);
  }
  assert.equal(frame.requestId, 7);
  assert.equal(frame.stream, 'st_x');
  assert.ok(tw.codeError('token_expired', '') instanceof tw.AuthenticationError);
  assert.ok(tw.codeError('forbidden', '') instanceof tw.AuthenticationError);
  const limited = tw.codeError('too_many_subscribers', 'full');
  assert.ok(limited instanceof tw.RateLimitedError);
  assert.equal(limited.retryable, true);
  assert.ok(tw.codeError('overloaded', '') instanceof tw.ServerUnavailableError);
  assert.ok(tw.codeError('bad_request', 'no') instanceof tw.RequestRejectedError);
  assert.equal(tw.codeError('bad_request', 'no').retryable, false);
});

test('a heartbeat timeout is a retryable transport error', () => {
  const err = new tw.HeartbeatTimeoutError(2000);
  assert.ok(err instanceof tw.TransportError);
  assert.equal(err.retryable, true);
  assert.equal(err.silentMs, 2000);
});

test('the names before 0.1.0 still import, as the new classes', () => {
  assert.equal(tw.HTTPError, tw.HTTPStatusError);
  assert.equal(tw.ServerError, tw.HTTPStatusError);
  assert.equal(tw.NetworkError, tw.TransportError);
  assert.equal(tw.ConnectionError, tw.ReconnectExhaustedError);
  assert.equal(tw.HeartbeatTimeout, tw.HeartbeatTimeoutError);
  assert.equal(tw.StreamError, tw.StreamFailedError);
  assert.equal(tw.GapError, tw.StreamGapError);
});
