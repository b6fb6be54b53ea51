// Calls examples/nextjs's route handler the way Next.js does: a web Request in, a
// Response out (Node 20's fetch globals), against a real tokenwire server.
//   node --import ./resolve-tokenwire.mjs next-route.mjs <tokenwire-url>
// Prints one JSON object.
const [upstream] = process.argv.slice(2);
process.env.TOKENWIRE_URL = upstream;
const route = await import('../../examples/nextjs/app/api/tw/[...path]/route.js');
const site = 'http://localhost:3000/api/tw';

async function call(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const response = await route[method](new Request(site + path, init));
  return { status: response.status, headers: Object.fromEntries(response.headers), text: await response.text() };
}

function sseTokens(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    const lines = block.split('\n');
    const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim();
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
    if (event && data) events.push({ event, data: JSON.parse(data) });
  }
  return events;
}

const request = { model: 'scripted', prompt: 'hi', max_tokens: 12 };
const started = await call('POST', '/v1/streams', { body: request });
const id = JSON.parse(started.text).id;
const events = await call('GET', `/v1/streams/${id}/events`);
const resumed = await call('GET', `/v1/streams/${id}/events`, { headers: { 'last-event-id': '5' } });
const status = await call('GET', `/v1/streams/${id}`);
const chat = await call('POST', '/v1/ai-sdk/chat', {
  body: { id: 'next-example', messages: [{ id: 'm1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }], model: 'scripted', max_tokens: 6 },
});
const chatDeltas = chat.text
  .split('\n')
  .filter((l) => l.startsWith('data: {'))
  .map((l) => JSON.parse(l.slice(6)))
  .filter((c) => c.type === 'text-delta')
  .map((c) => c.delta)
  .join('');
const notFound = await call('GET', '/elsewhere');

const text = (list) => list.filter((e) => e.event === 'token').map((e) => e.data.text).join('');
console.log(
  JSON.stringify({
    started: { status: started.status, id },
    events: { status: events.status, headers: events.headers, text: text(sseTokens(events.text)), kinds: sseTokens(events.text).map((e) => e.event) },
    resumed: { status: resumed.status, text: text(sseTokens(resumed.text)) },
    status: { status: status.status, body: JSON.parse(status.text) },
    chat: { status: chat.status, headers: chat.headers, text: chatDeltas },
    notFound: { status: notFound.status },
  }),
);
