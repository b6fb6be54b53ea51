// Compiled (never run) by `npm run typecheck`: the declarations describe the
// public API as an app uses it, through the package's exports map.
import {
  TokenwireClient,
  TensorAssembler,
  SSEParser,
  NDJSONParser,
  ResumeMachine,
  StreamStore,
  TokenStreamView,
  crc32,
  backoffDelay,
  HTTPStatusError,
  StreamFailedError,
  type StreamEvent,
  type Tensor,
  type Snapshot,
} from 'tokenwire';
import { useTokenStream, useTensorStream } from 'tokenwire/react';
import { useTokenStream as useVue } from 'tokenwire/vue';
import { tokenStream } from 'tokenwire/svelte';
import { tokenwireProxy, proxyStream } from 'tokenwire/next';

async function main(signal: AbortSignal): Promise<void> {
  const client = new TokenwireClient({ baseUrl: '', transport: 'ws', backoff: { baseMs: 250, maxAttempts: 5 }, heartbeatMs: 15_000 });
  const withToken = new TokenwireClient({ token: 'tw1.x', refreshToken: async () => 'tw1.y' });
  const fresh: Promise<boolean> = withToken.http.refresh(withToken.http.token);
  void fresh;
  const h = client.start(
    { model: 'scripted', messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 },
    {
      signal,
      onToken: (text: string) => void text.length,
      onError: (err) => {
        if (err instanceof StreamFailedError) void err.code;
        if (err instanceof HTTPStatusError) void err.status;
      },
      onState: (s) => void (s === 'reconnecting'),
      onTensor: (t: Tensor) => void t.shape,
    },
  );
  const id: string = await h.ready;
  const off = h.on('gap', (g) => void g.from_seq);
  off();
  for await (const ev of h) {
    switch (ev.kind) {
      case 'token':
        void ev.text.toUpperCase();
        break;
      case 'tensor':
        void ev.tensor.array.length;
        break;
      case 'done':
        void ev.usage?.total_tokens;
        break;
      case 'gap':
        void ev.to_seq;
        break;
      default:
        void (ev satisfies StreamEvent);
    }
  }
  const result = await h.done;
  void [result.status, result.stats.ttftMs, h.text, h.stats.tokensPerSec, id];
  await h.cancel();
  h.close();
  const again = client.subscribe('st_1', { after: 41, gapPolicy: 'error', coalesceMs: 20 });
  void again.lastSeq;
  const resumed = TokenwireClient.resume('tokenwire:stream', { baseUrl: '' });
  if (resumed) void resumed.text;

  const asm = new TensorAssembler({ shared: 'auto' });
  const t = asm.push({ kind: 'tensor.end', tensor_id: 'x', checksum: null });
  if (t) void t.meta;
  const n: number = crc32('123456789');
  const d: number = backoffDelay(3, { baseMs: 100 });
  for (const rec of new SSEParser().feed('data: x\n\n')) if (rec.type === 'event') void rec.data;
  void new NDJSONParser().feed('{}\n');
  const m = new ResumeMachine({ after: 3 });
  void m.connect(0).after;
  const store = new StreamStore();
  const snap: Snapshot = store.getSnapshot();
  void [n, d, snap.text];
  void TokenStreamView;
}

function ReactUsage(): string {
  const s = useTokenStream({ baseUrl: '', request: { model: 'scripted', prompt: 'x' }, cancelOnUnmount: true });
  s.start({ model: 'm' });
  void s.cancel();
  const t = useTensorStream({ streamId: 'st_1' });
  return `${s.status}${s.text}${t.tensor?.dtype ?? ''}`;
}

function VueUsage(): void {
  const s = useVue({ streamId: () => 'st_1' });
  const text: string = s.text.value;
  void [text, s.snapshot.value.lastSeq];
}

function SvelteUsage(): void {
  const store = tokenStream({ request: { model: 'm' } });
  const unsubscribe = store.subscribe((v) => void v.text);
  store.follow('st_2');
  unsubscribe();
}

export const { GET, POST } = tokenwireProxy({ baseUrl: 'http://127.0.0.1:8000' });
export const route = (req: Request) => proxyStream('st_1', { baseUrl: 'http://x', request: req });
export { main, ReactUsage, VueUsage, SvelteUsage };
