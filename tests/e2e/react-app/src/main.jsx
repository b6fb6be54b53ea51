// A React 19 page on tokenwire/react: useTokenStream renders the tokens as they
// arrive. The query string sets the transport and the scripted model's pacing:
//   index.html?transport=sse&max_tokens=40&delay_ms=40
import { StrictMode, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useTokenStream } from 'tokenwire/react';

const params = new URLSearchParams(location.search);
const transport = params.get('transport') ?? 'sse';
const request = {
  model: 'scripted',
  prompt: 'hello from React',
  max_tokens: Number(params.get('max_tokens') ?? 32),
  delay_ms: Number(params.get('delay_ms') ?? 20),
};

function App() {
  const { text, status, state, streamId, stats, error, start, cancel } = useTokenStream({ transport, checkpoint: false });
  const [renders, setRenders] = useState(0);
  return (
    <main>
      <button id="start" onClick={() => { setRenders((n) => n + 1); start(request); }}>Start</button>
      <button id="stop" onClick={() => cancel()} disabled={status !== 'running'}>Stop</button>
      <p id="output" data-status={status} data-state={state} data-stream={streamId ?? ''} data-starts={renders}>{text}</p>
      <p id="stats">{stats.tokens} tokens</p>
      {error ? <p id="error">{`${error.name}: ${error.message}`}</p> : null}
    </main>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
