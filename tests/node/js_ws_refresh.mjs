// tokenwire's JS client over WebSocket with a token that has expired: it must
// refresh through refreshToken and read the whole stream. Prints one JSON line:
// {text, seqs, refreshes, error}. Args: baseUrl streamId expiredToken freshToken|-
import WebSocket from 'ws';
import { TokenwireClient } from '../../clients/js/src/tokenwire.js';

const [baseUrl, streamId, expired, fresh] = process.argv.slice(2);
let refreshes = 0;
const client = new TokenwireClient({
  baseUrl,
  transport: 'ws',
  WebSocket,
  checkpoint: false,
  token: expired,
  refreshToken: fresh === '-' ? undefined : async () => {
    refreshes += 1;
    return fresh;
  },
  backoff: { baseMs: 50, capMs: 200, maxAttempts: 3 },
});
const out = { text: '', seqs: [], refreshes: 0, error: null };
try {
  const handle = client.subscribe(streamId);
  for await (const ev of handle) {
    out.seqs.push(ev.seq);
    if (ev.kind === 'token') out.text += ev.text;
  }
} catch (err) {
  out.error = { name: err.name, code: err.code ?? null, status: err.status ?? null };
}
out.refreshes = refreshes;
client.close?.();
console.log(JSON.stringify(out));
process.exit(0);
