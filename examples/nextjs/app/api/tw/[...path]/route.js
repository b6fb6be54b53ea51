// Every tokenwire HTTP route under /api/tw/…, streamed through unbuffered: a
// browser client uses the Next.js app as its server (new TokenwireClient({ baseUrl:
// '/api/tw' })), useChat posts to /api/tw/v1/ai-sdk/chat, and the headers a client
// resumes or authorizes with (X-Tokenwire-Stream, the stream tokens,
// x-vercel-ai-ui-message-stream, Retry-After) come through.
import { tokenwireProxy } from 'tokenwire/next';

export const { GET, POST, DELETE } = tokenwireProxy({
  baseUrl: process.env.TOKENWIRE_URL ?? 'http://127.0.0.1:8000',
});

// Streams are per request: never cached, never rendered at build time.
export const dynamic = 'force-dynamic';
export const runtime = 'nodejs';
