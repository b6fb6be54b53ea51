"""The tokenwire Python client: resumable streams over SSE, WebSocket and NDJSON.

::

    from tokenwire.client import Client

    async with Client("http://127.0.0.1:8000", transport="ws") as client:
        handle = await client.start(model="scripted", prompt="hello")
        print(await handle.text())

Layers, from the wire up (docs/client.md):

- :mod:`.wire` — framings over the project's SSE/NDJSON parsers (pure);
- :mod:`.machine` — :class:`ResumeMachine`, the sans-I/O reconnect-and-resume
  state machine shared by every transport, with :mod:`.policy` (backoff,
  circuit breaker);
- :mod:`.transport` — the one :class:`Transport` interface and its asyncio
  driver; :mod:`.http` (SSE, NDJSON) and :mod:`.ws` (multiplexed WebSocket);
- :mod:`.manager` — :class:`TransportManager`: pools, limits, health, metrics;
- :mod:`.handle`, :mod:`.client`, :mod:`.sync` — what applications hold.
"""

from tokenwire.client.buffer import EventBuffer
from tokenwire.client.client import Client
from tokenwire.client.errors import (
    AuthenticationError,
    ClientClosedError,
    ClientError,
    ConnectError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    HTTPStatusError,
    ProtocolError,
    RateLimitedError,
    ReconnectExhaustedError,
    RequestRejectedError,
    ResourceLimitError,
    ServerUnavailableError,
    StreamCancelledError,
    StreamEndedError,
    StreamFailedError,
    StreamGapError,
    StreamNotFoundError,
    TransportError,
)
from tokenwire.client.handle import StreamHandle
from tokenwire.client.http import NDJSONTransport, SSETransport
from tokenwire.client.machine import (
    Connect,
    Deliver,
    Disconnect,
    Fail,
    ResumeMachine,
    Sleep,
    StateChanged,
    TransportState,
)
from tokenwire.client.manager import TransportManager
from tokenwire.client.policy import BreakerState, CircuitBreaker, ReconnectPolicy
from tokenwire.client.sync import SyncClient, SyncStreamHandle
from tokenwire.client.transport import StateEvent, Transport
from tokenwire.client.ws import WSTransport

__all__ = [
    "AuthenticationError",
    "BreakerState",
    "CircuitBreaker",
    "Client",
    "ClientClosedError",
    "ClientError",
    "Connect",
    "ConnectError",
    "ConnectionLostError",
    "Deliver",
    "Disconnect",
    "EventBuffer",
    "Fail",
    "HTTPStatusError",
    "HeartbeatTimeoutError",
    "NDJSONTransport",
    "ProtocolError",
    "RateLimitedError",
    "ReconnectExhaustedError",
    "ReconnectPolicy",
    "RequestRejectedError",
    "ResourceLimitError",
    "ResumeMachine",
    "SSETransport",
    "ServerUnavailableError",
    "Sleep",
    "StateChanged",
    "StateEvent",
    "StreamCancelledError",
    "StreamEndedError",
    "StreamFailedError",
    "StreamGapError",
    "StreamHandle",
    "StreamNotFoundError",
    "SyncClient",
    "SyncStreamHandle",
    "Transport",
    "TransportError",
    "TransportManager",
    "TransportState",
    "WSTransport",
]
