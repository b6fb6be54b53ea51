import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SSEParser } from '../src/sse.js';

// Feed `input` split at every pair of points (or just every point), collect records.
function run(chunks, { bytes = false } = {}) {
  const p = new SSEParser();
  const out = [];
  const enc = new TextEncoder();
  for (const c of chunks) out.push(...p.feed(bytes ? enc.encode(c) : c));
  p.end();
  return out;
}

function byteRun(byteChunks) {
  const p = new SSEParser();
  const out = [];
  for (const c of byteChunks) out.push(...p.feed(c));
  return out;
}

const INPUTS = {
  protocol:
    'retry: 2000\n\nevent: open\ndata: {"stream":"st_1","recovered":true}\n\nid: 42\nevent: token\ndata: {"seq":42,"kind":"token","text":" world"}\n\n: hb\n\n',
  crlf: 'id: 1\r\nevent: token\r\ndata: a\r\n\r\nid: 2\r\ndata: b\r\ndata: c\r\n\r\n',
  cr: 'id: 1\revent: token\rdata: a\r\rdata:b\r\r',
  mixed: 'data: 1\r\n\rdata: 2\n\r\ndata: 3\r\r\n',
  bom: '\uFEFFdata: first\n\n\uFEFFdata: not dispatched\n\n',
  fields: 'data\n\ndata:\ndata:  two spaces\nfoo: bar\nid: x\0y\nid: 7\nretry: 1x\nretry: 30\n:comment\nevent\ndata:no space\n\n',
  multibyte: 'data: héllo 世界 🎉\n\nid: ü\ndata: ok\n\n',
  incomplete: 'data: complete\n\ndata: cut',
};

const EXPECTED = {
  protocol: [
    { type: 'retry', retry: 2000 },
    { type: 'event', event: 'open', data: '{"stream":"st_1","recovered":true}', id: '' },
    { type: 'event', event: 'token', data: '{"seq":42,"kind":"token","text":" world"}', id: '42' },
    { type: 'comment', text: 'hb' },
  ],
  crlf: [
    { type: 'event', event: 'token', data: 'a', id: '1' },
    { type: 'event', event: 'message', data: 'b\nc', id: '2' },
  ],
  cr: [
    { type: 'event', event: 'token', data: 'a', id: '1' },
    { type: 'event', event: 'message', data: 'b', id: '1' },
  ],
  mixed: [
    { type: 'event', event: 'message', data: '1', id: '' },
    { type: 'event', event: 'message', data: '2', id: '' },
    { type: 'event', event: 'message', data: '3', id: '' },
  ],
  // Only the leading BOM is dropped: the second makes "\uFEFFdata" an unknown field, ignored.
  bom: [{ type: 'event', event: 'message', data: 'first', id: '' }],
  fields: [
    // `data` alone: an empty value; the data buffer is "\n", not empty, so it dispatches "".
    { type: 'event', event: 'message', data: '', id: '' },
    { type: 'retry', retry: 30 },
    { type: 'comment', text: 'comment' },
    { type: 'event', event: 'message', data: '\n two spaces\nno space', id: '7' },
  ],
  multibyte: [
    { type: 'event', event: 'message', data: 'héllo 世界 🎉', id: '' },
    { type: 'event', event: 'message', data: 'ok', id: 'ü' },
  ],
  incomplete: [{ type: 'event', event: 'message', data: 'complete', id: '' }],
};

for (const [name, input] of Object.entries(INPUTS)) {
  test(`SSE ${name}: one chunk gives the expected records`, () => {
    assert.deepEqual(run([input]), EXPECTED[name]);
  });

  test(`SSE ${name}: every split point (text) gives the same records`, () => {
    const whole = run([input]);
    for (let i = 0; i <= input.length; i++) {
      assert.deepEqual(run([input.slice(0, i), input.slice(i)]), whole, `split at ${i}`);
    }
    for (let i = 0; i <= input.length; i += 3) {
      for (let j = i; j <= input.length; j += 2) {
        assert.deepEqual(run([input.slice(0, i), input.slice(i, j), input.slice(j)]), whole, `split at ${i},${j}`);
      }
    }
  });

  test(`SSE ${name}: every split point (bytes) gives the same records`, () => {
    const whole = run([input]);
    const bytes = new TextEncoder().encode(input);
    for (let i = 0; i <= bytes.length; i++) {
      assert.deepEqual(byteRun([bytes.subarray(0, i), bytes.subarray(i)]), whole, `byte split at ${i}`);
    }
    // one byte at a time
    assert.deepEqual(byteRun([...bytes].map((b) => Uint8Array.of(b))), whole);
  });
}

test('SSE: a BOM split across byte chunks is dropped', () => {
  const bytes = new TextEncoder().encode('\uFEFFdata: x\n\n');
  assert.equal(bytes[0], 0xef);
  assert.deepEqual(byteRun([bytes.subarray(0, 1), bytes.subarray(1, 2), bytes.subarray(2)]), [
    { type: 'event', event: 'message', data: 'x', id: '' },
  ]);
});

test('SSE: CR at the end of a chunk and LF at the start of the next are one line break', () => {
  const p = new SSEParser();
  assert.deepEqual(p.feed('data: a\r'), []);
  assert.deepEqual(p.feed('\n\r'), [{ type: 'event', event: 'message', data: 'a', id: '' }]);
  // The CR above ended an empty line; this LF is a new, empty line: no event.
  assert.deepEqual(p.feed('\n'), []);
  assert.deepEqual(p.feed('data: b\n\n'), [{ type: 'event', event: 'message', data: 'b', id: '' }]);
});

test('SSE: id with NUL is ignored; the last event id persists across events', () => {
  const p = new SSEParser();
  const out = p.feed('id: 5\ndata: a\n\nid: bad\0\ndata: b\n\ndata: c\n\nid\ndata: d\n\n');
  assert.deepEqual(
    out.map((r) => r.id),
    ['5', '5', '5', ''],
  );
  assert.equal(p.lastEventId, '');
});

test('SSE: retry needs ASCII digits only', () => {
  const p = new SSEParser();
  assert.deepEqual(p.feed('retry: 10\nretry: -1\nretry: 1.5\nretry:7\n\n'), [
    { type: 'retry', retry: 10 },
    { type: 'retry', retry: 7 },
  ]);
});

test('SSE: an over-long line is a protocol error, not unbounded buffering', () => {
  const p = new SSEParser({ maxLineLength: 16 });
  assert.throws(() => p.feed('data: 0123456789abcdef'), /longer than 16/);
});

test('SSE: a long line fed in many pieces is found once', () => {
  const p = new SSEParser();
  const piece = 'x'.repeat(1000);
  for (let i = 0; i < 200; i++) assert.deepEqual(p.feed(i === 0 ? 'data: ' + piece : piece), []);
  const out = p.feed('\n\n');
  assert.equal(out.length, 1);
  assert.equal(out[0].data.length, 200_000);
});
