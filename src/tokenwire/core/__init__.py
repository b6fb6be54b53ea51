"""The session core every server transport runs on (docs/protocol.md, "Delivery").

- :mod:`~tokenwire.core.delivery`: ``Delivery``, the sans-I/O state machine of one
  subscription's writes (heartbeat due-times, lag policy, end of stream, catch-up
  batching and merging, delivery counts);
- :mod:`~tokenwire.core.driver`: ``drive``, the one async loop around it;
- :mod:`~tokenwire.core.encoder`: the one ``Encoder`` interface, implemented in
  :mod:`~tokenwire.core.http_encoders` (SSE, NDJSON, OpenAI chunks, the AI SDK
  stream), :mod:`~tokenwire.core.ws_encoder` and
  :mod:`~tokenwire.core.socketio_encoder`;
- :mod:`~tokenwire.core.ops` and :mod:`~tokenwire.core.session`: a multiplexed
  connection's ops, their one validation, its subscriptions and limits;
- :mod:`~tokenwire.core.shutdown`: graceful shutdown.

Each transport (``server/http_stream.py``, ``chat_sse.py``, ``ws.py``,
``socketio_app.py``, ``tokenwire.responses``) is an encoder and a thin adapter.
"""
