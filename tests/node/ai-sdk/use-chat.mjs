// Drives tokenwire's /v1/ai-sdk/chat the way useChat does: the AI SDK's own
// AbstractChat (the engine behind useChat in @ai-sdk/react, vue and svelte) over
// its DefaultChatTransport, with a plain in-memory ChatState instead of React's.
//
//   node use-chat.mjs <server-url> '{"chatId": "...", "text": "hello", "body": {...},
//                                    "stopAfterDeltas": 5, "resume": true}'
//
// stopAfterDeltas calls chat.stop() once that many text-delta chunks arrived (a
// client-side abort: to the server, a disconnect); resume then calls
// chat.resumeStream(), which GETs <api>/<chatId>/stream. Prints one JSON object.
import { AbstractChat, DefaultChatTransport } from 'ai';

const [url, rawOptions] = process.argv.slice(2);
const options = JSON.parse(rawOptions ?? '{}');

class MemoryChatState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (value) => structuredClone(value);
}

class NodeChat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new MemoryChatState() });
  }
}

const requests = []; // one entry per HTTP request the transport made
let chat;

class RecordingTransport extends DefaultChatTransport {
  processResponseStream(stream) {
    const request = requests[requests.length - 1];
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          request.types.push(chunk.type);
          controller.enqueue(chunk);
          if (chunk.type === 'text-delta') {
            request.deltas += 1;
            if (request.deltas === options.stopAfterDeltas && requests.length === 1) {
              chat.stop();
            }
          }
        },
      }),
    );
  }
}

// The chat token the server gave this chat id's first request goes with every later
// one (its sends and its resume): the id is this client's only with it.
let chatToken = null;

async function recordingFetch(input, init) {
  const response = await fetch(input, init);
  chatToken = response.headers.get('x-tokenwire-chat-token') ?? chatToken;
  requests.push({
    method: init?.method ?? 'GET',
    url: String(input),
    status: response.status,
    headers: Object.fromEntries(response.headers.entries()),
    requestBody: init?.body ? JSON.parse(init.body) : null,
    types: [],
    deltas: 0,
  });
  return response;
}

const finishes = [];
const data = [];
const errors = [];
chat = new NodeChat({
  id: options.chatId,
  transport: new RecordingTransport({
    api: url + '/v1/ai-sdk/chat',
    body: options.body ?? {},
    headers: () => ({
      ...(chatToken && !options.noChatToken ? { 'x-tokenwire-chat-token': chatToken } : {}),
      ...(options.headers ?? {}),
    }),
    fetch: recordingFetch,
  }),
  onFinish: ({ message, isAbort, isDisconnect, isError, finishReason }) =>
    finishes.push({ messageId: message.id, isAbort, isDisconnect, isError, finishReason }),
  onData: (part) => data.push(part),
  onError: (error) => errors.push(String(error.message ?? error)),
});

await chat.sendMessage({ text: options.text ?? 'hello' });
if (options.resume) {
  await chat.resumeStream();
}

const assistant = chat.messages.filter((m) => m.role === 'assistant');
console.log(
  JSON.stringify({
    chatId: chat.id,
    status: chat.status,
    error: chat.error ? String(chat.error.message) : null,
    messages: chat.messages,
    assistantTexts: assistant.map((m) =>
      m.parts
        .filter((p) => p.type === 'text')
        .map((p) => p.text)
        .join(''),
    ),
    requests,
    finishes,
    data,
    errors,
  }),
);
