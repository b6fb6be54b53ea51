// The JS client's SSE and NDJSON parsers as a line-oriented service for the
// Python fuzz tests (tests/test_fuzz_js_parsers.py): each stdin line is
// {"kind": "sse" | "ndjson", "chunks": [base64, ...]}; each stdout line is
// {"records": [...]} with what the parser returned for the chunks fed in order,
// or {"error": name} when it threw.
import { createInterface } from 'node:readline';
import { SSEParser } from '../../clients/js/src/sse.js';
import { NDJSONParser } from '../../clients/js/src/ndjson.js';

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { kind, chunks } = JSON.parse(line);
  const parser = kind === 'sse' ? new SSEParser() : new NDJSONParser();
  let answer;
  try {
    const records = [];
    for (const chunk of chunks) records.push(...parser.feed(new Uint8Array(Buffer.from(chunk, 'base64'))));
    answer = { records };
  } catch (err) {
    answer = { error: err.name };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
