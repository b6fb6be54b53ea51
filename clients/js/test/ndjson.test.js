import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NDJSONParser } from '../src/ndjson.js';
import { ProtocolError } from '../src/errors.js';

const INPUT =
  '{"kind":"open","stream":"st_1","recovered":true}\n' +
  '{"seq":1,"kind":"token","text":"Hé 世界"}\r\n' +
  '\n   \n' +
  '{"kind":"heartbeat","ts":1763700000.0}\n' +
  '{"seq":2,"kind":"done","finish_reason":"stop","usage":null}\n';

const EXPECTED = [
  { kind: 'open', stream: 'st_1', recovered: true },
  { seq: 1, kind: 'token', text: 'Hé 世界' },
  { kind: 'heartbeat', ts: 1763700000 },
  { seq: 2, kind: 'done', finish_reason: 'stop', usage: null },
];

test('NDJSON: lines become objects; CRLF and blank lines tolerated', () => {
  assert.deepEqual(new NDJSONParser().feed(INPUT), EXPECTED);
});

test('NDJSON: every split point (text and bytes) gives the same objects', () => {
  for (let i = 0; i <= INPUT.length; i++) {
    const p = new NDJSONParser();
    assert.deepEqual([...p.feed(INPUT.slice(0, i)), ...p.feed(INPUT.slice(i))], EXPECTED, `split ${i}`);
  }
  const bytes = new TextEncoder().encode(INPUT);
  for (let i = 0; i <= bytes.length; i++) {
    const p = new NDJSONParser();
    assert.deepEqual([...p.feed(bytes.subarray(0, i)), ...p.feed(bytes.subarray(i))], EXPECTED, `byte split ${i}`);
  }
});

test('NDJSON: an unterminated last line is discarded at end (a cut connection)', () => {
  const p = new NDJSONParser();
  assert.deepEqual(p.feed('{"seq":1,"kind":"token","text":"a"}\n{"seq":2,"ki'), [{ seq: 1, kind: 'token', text: 'a' }]);
  assert.equal(p.end(), 12);
  assert.deepEqual(p.feed('{"seq":3}\n'), [{ seq: 3 }]);
});

test('NDJSON: bad JSON is a ProtocolError naming the line', () => {
  assert.throws(() => new NDJSONParser().feed('{"seq":1}\nnot json\n'), (err) => err instanceof ProtocolError && /not json/.test(err.message));
});

test('NDJSON: an over-long line is a protocol error', () => {
  const p = new NDJSONParser({ maxLineLength: 8 });
  assert.throws(() => p.feed('{"a":"0123456789"'), /longer than 8/);
});
