/**
 * Server-side route helpers for Next.js-style handlers (a Request in, a
 * Response out, web streams): pass a tokenwire server's HTTP surface through
 * unbuffered, so the browser client can use the Next app as its baseUrl.
 *
 *   // app/api/tw/[...path]/route.js
 *   import { tokenwireProxy } from 'tokenwire/next';
 *   export const { GET, POST, DELETE } = tokenwireProxy({ baseUrl: process.env.TOKENWIRE_URL });
 *   export const dynamic = 'force-dynamic';
 *
 *   // in the browser
 *   new TokenwireClient({ baseUrl: '/api/tw' })
 *
 * The WebSocket route is not proxied (route handlers cannot upgrade). Responses
 * keep the headers a client needs to resume or authorize: X-Tokenwire-Stream, the
 * stream tokens, x-vercel-ai-ui-message-stream, Retry-After.
 */

const FORWARD_REQUEST = ['accept', 'content-type', 'last-event-id', 'authorization', 'x-tokenwire-chat-token'];
// The stream id and tokens (an OpenAI client resumes from X-Tokenwire-Stream), the
// AI SDK's protocol marker, and the 429's Retry-After.
const FORWARD_RESPONSE = [
  'content-type',
  'cache-control',
  'retry-after',
  'x-tokenwire-stream',
  'x-tokenwire-read-token',
  'x-tokenwire-control-token',
  'x-tokenwire-chat-token',
  'x-tokenwire-ignored-fields',
  'x-vercel-ai-ui-message-stream',
];

/** Stream a tokenwire stream's events (SSE or NDJSON) from `baseUrl` as this Response. */
export async function proxyStream(streamId, { baseUrl, request, format = 'sse', after, headers = {}, fetch: f = globalThis.fetch } = {}) {
  const incoming = request ? new URL(request.url) : null;
  const resume = after ?? incoming?.searchParams.get('after') ?? request?.headers.get('last-event-id') ?? null;
  const path = format === 'ndjson' ? 'ndjson' : 'events';
  let url = `${trim(baseUrl)}/v1/streams/${encodeURIComponent(streamId)}/${path}`;
  const h = { ...headers, Accept: format === 'ndjson' ? 'application/x-ndjson' : 'text/event-stream' };
  if (resume != null && resume !== '') {
    url += `?after=${encodeURIComponent(resume)}`;
    h['Last-Event-ID'] = String(resume);
  }
  const upstream = await f(url, { headers: h, signal: request?.signal, cache: 'no-store' });
  return passthrough(upstream);
}

/** Route handlers forwarding `…/v1/…` to `baseUrl`, streaming both ways. */
export function tokenwireProxy({ baseUrl, headers = {}, fetch: f = globalThis.fetch } = {}) {
  const handler = async (request) => {
    const incoming = new URL(request.url);
    const at = incoming.pathname.indexOf('/v1/');
    if (at === -1) return Response.json({ error: { code: 'not_found', message: 'not a tokenwire route' } }, { status: 404 });
    const h = { ...headers };
    for (const name of FORWARD_REQUEST) {
      const v = request.headers.get(name);
      if (v !== null) h[name] = v;
    }
    const init = { method: request.method, headers: h, signal: request.signal, cache: 'no-store' };
    if (request.method !== 'GET' && request.method !== 'HEAD') init.body = await request.text();
    const upstream = await f(`${trim(baseUrl)}${incoming.pathname.slice(at)}${incoming.search}`, init);
    return passthrough(upstream);
  };
  return { GET: handler, POST: handler, DELETE: handler };
}

function passthrough(upstream) {
  const out = new Headers();
  for (const name of FORWARD_RESPONSE) {
    const v = upstream.headers.get(name);
    if (v !== null) out.set(name, v);
  }
  const type = out.get('content-type') || '';
  if (type.startsWith('text/event-stream') || type.startsWith('application/x-ndjson')) {
    // Proxies and compression must not hold events back.
    out.set('Cache-Control', 'no-cache, no-transform');
    out.set('X-Accel-Buffering', 'no');
  }
  return new Response(upstream.body, { status: upstream.status, headers: out });
}

function trim(baseUrl) {
  if (!baseUrl) throw new TypeError('baseUrl (the tokenwire server) is required');
  return baseUrl.replace(/\/+$/, '');
}
