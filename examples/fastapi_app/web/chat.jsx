// useChat (@ai-sdk/react) against tokenwire's AI SDK route. tokenwire is mounted
// at /tw in app.py, so the route is /tw/v1/ai-sdk/chat.
//
// tokenwire gives each chat id a token in the first answer's
// x-tokenwire-chat-token header; later requests of the same chat (the next
// message, a resume after a reload) send it back, so no other client can read
// or continue this chat by guessing its id.
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport } from 'ai';
import { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';

const params = new URLSearchParams(location.search);
// Generation fields the route accepts beside the messages (model, max_tokens, …),
// here from the page's query string: ?model=scripted&max_tokens=40
const generation = {};
for (const key of ['model', 'max_tokens', 'temperature', 'delay_ms']) {
  if (params.has(key)) generation[key] = key === 'model' ? params.get(key) : Number(params.get(key));
}

function Chat() {
  const transport = useMemo(() => {
    let chatToken = null;
    return new DefaultChatTransport({
      api: 'tw/v1/ai-sdk/chat',
      body: generation,
      headers: () => (chatToken ? { 'x-tokenwire-chat-token': chatToken } : {}),
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        chatToken = response.headers.get('x-tokenwire-chat-token') ?? chatToken;
        return response;
      },
    });
  }, []);
  const { messages, sendMessage, status, stop, error } = useChat({ transport });
  const [input, setInput] = useState('');

  const submit = (event) => {
    event.preventDefault();
    if (!input.trim()) return;
    sendMessage({ text: input });
    setInput('');
  };

  return (
    <>
      <div id="messages">
        {messages.map((m) => (
          <div key={m.id} className={`message ${m.role}`} data-role={m.role}>
            {m.parts.map((part, i) => (part.type === 'text' ? <span key={i}>{part.text}</span> : null))}
          </div>
        ))}
      </div>
      {error ? <p id="error">{error.message}</p> : null}
      <form onSubmit={submit}>
        <input id="prompt" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Ask something" />
        {status === 'streaming' || status === 'submitted' ? (
          <button id="stop" type="button" onClick={stop}>Stop</button>
        ) : (
          <button id="send" type="submit">Send</button>
        )}
      </form>
      <p id="status" data-status={status}>{status}</p>
    </>
  );
}

createRoot(document.getElementById('root')).render(<Chat />);
