// Reads tokenwire's UI message stream with the AI SDK's own parser and reducer:
// parseJsonEventStream + uiMessageChunkSchema (what DefaultChatTransport uses),
// then readUIMessageStream (what useChat uses to build the message).
//
//   node read-stream.mjs <server-url> '{"body": {...}, "path": "/v1/ai-sdk/chat"}'
//   node read-stream.mjs - < recorded-stream
//
// A body makes it a POST; without one it is a GET (the resume URL); "-" reads a
// recorded stream from stdin. Prints one JSON object: status, headers, the
// chunks, their types and the final message; for a non-2xx answer, its status
// and JSON body.
import { Readable } from 'node:stream';
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';

const [url, rawOptions] = process.argv.slice(2);
const options = JSON.parse(rawOptions ?? '{}');

async function open() {
  if (url === '-') {
    return { status: 200, headers: {}, body: Readable.toWeb(process.stdin) };
  }
  const init =
    options.body === undefined
      ? { method: 'GET' }
      : {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body),
        };
  const response = await fetch(url + (options.path ?? '/v1/ai-sdk/chat'), init);
  const headers = Object.fromEntries(response.headers.entries());
  if (!response.ok || response.status === 204) {
    const text = await response.text();
    console.log(JSON.stringify({ status: response.status, headers, body: text ? JSON.parse(text) : null }));
    process.exit(0);
  }
  return { status: response.status, headers, body: response.body };
}

const response = await open();
const headers = response.headers;

const chunks = [];
const invalid = [];
const parsed = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema });
const checked = parsed.pipeThrough(
  new TransformStream({
    transform(result, controller) {
      if (!result.success) {
        invalid.push(String(result.error).slice(0, 300));
        return;
      }
      chunks.push(result.value);
      controller.enqueue(result.value);
    },
  }),
);

const errors = [];
let message;
for await (const snapshot of readUIMessageStream({
  stream: checked,
  onError: (error) => errors.push(String(error)),
})) {
  message = snapshot;
}

console.log(
  JSON.stringify({
    status: response.status,
    headers,
    chunks,
    types: chunks.map((c) => c.type),
    invalid,
    errors,
    message,
    text: (message?.parts ?? [])
      .filter((p) => p.type === 'text')
      .map((p) => p.text)
      .join(''),
  }),
);
